"""The LandingStore contract (``contracts/landing_store.py``), run against every landing store.

To add an implementation, add one entry to FACTORIES: its name, and a function of the test's
``tmp_path`` and the real servers (``conftest.Servers``, started on first use) returning an opener of
store instances that all share one backing storage for that test
(the same folder, or bucket and prefix).
Every contract test then runs for it too; nothing else changes.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster_tests.conftest import Servers
from logpull_dagster_tests.contracts.landing_store import *  # noqa: F403
from logpull_dagster_tests.contracts.landing_store import OpenLanding


def _s3(tmp: Path, servers: Servers) -> OpenLanding:
    import boto3

    from logpull_dagster.landing.s3 import S3LandingStore

    url = servers.moto.url
    bucket = f"landing-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=bucket)
    return functools.partial(S3LandingStore, bucket, prefix="landing", region="us-east-1", endpoint_url=url)


FACTORIES: dict[str, Callable[[Path, Servers], OpenLanding]] = {
    "local": lambda tmp, _: functools.partial(LocalLandingStore, tmp / "landing"),
    "s3": _s3,  # moto's S3 on 127.0.0.1 (servers.py)
}


# The stores on real servers start moto: the slow tier (`make test-fast` leaves them out).
ON_SERVERS = {"s3"}


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.slow) if name in ON_SERVERS else name
                        for name in FACTORIES])
def landing_backend(request: pytest.FixtureRequest, tmp_path: Path, servers: Servers) -> OpenLanding:
    return FACTORIES[request.param](tmp_path, servers)
