"""The LandingStore contract (``contracts/landing_store.py``), run against every landing store.

To add an implementation, add one entry to FACTORIES: its name, and a function of the test's
``tmp_path`` returning an opener of store instances that all share one backing storage for that test
(the same folder, or bucket and prefix), e.g.
``"s3": lambda tmp: functools.partial(S3LandingStore, bucket=BUCKET, prefix=f"contract/{tmp.name}")``.
Every contract test then runs for it too; nothing else changes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster_tests.contracts.landing_store import *  # noqa: F403
from logpull_dagster_tests.contracts.landing_store import OpenLanding

FACTORIES: dict[str, Callable[[Path], OpenLanding]] = {
    "local": lambda tmp: functools.partial(LocalLandingStore, tmp / "landing"),
}


@pytest.fixture(params=list(FACTORIES))
def landing_backend(request: pytest.FixtureRequest, tmp_path: Path) -> OpenLanding:
    return FACTORIES[request.param](tmp_path)
