"""The CheckpointStore contract (``contracts/checkpoint_store.py``), run against every store.

To add an implementation, add one entry to FACTORIES: its name, and a function of the test's
``tmp_path`` and the real servers (``conftest.Servers``, started on first use) returning an opener of
store instances that all share one backing storage for that test
(the same file, table or database).
Every contract test then runs for it too; nothing else changes.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster_tests.conftest import Servers
from logpull_dagster_tests.contracts.checkpoint_store import *  # noqa: F403
from logpull_dagster_tests.contracts.checkpoint_store import OpenStore
from logpull_dagster_tests.example_plugins.json_checkpoints import JsonFileCheckpointStore


def _dynamodb(tmp: Path, servers: Servers) -> OpenStore:
    from logpull_dagster.checkpoints.dynamodb import DynamoDbCheckpointStore

    return functools.partial(DynamoDbCheckpointStore, f"cp_{uuid.uuid4().hex[:12]}", region="us-east-1",
                             endpoint_url=servers.moto.url, create_table=True)


def _postgres(tmp: Path, servers: Servers) -> OpenStore:
    from logpull_dagster.checkpoints.postgres import PostgresCheckpointStore

    return functools.partial(PostgresCheckpointStore, servers.postgres.new_database("cp"))


FACTORIES: dict[str, Callable[[Path, Servers], OpenStore]] = {
    "sqlite": lambda tmp, _: functools.partial(SqliteCheckpointStore, tmp / "checkpoints.db"),
    # The example plug-in (example_plugins/json_checkpoints.py): a store in one module keeps the contract too.
    "json_file": lambda tmp, _: functools.partial(JsonFileCheckpointStore, tmp / "checkpoints.json"),
    # Real servers on 127.0.0.1 (servers.py): moto's DynamoDB, and a PostgreSQL cluster of the session.
    "dynamodb": _dynamodb,
    "postgres": _postgres,
}


# The stores on real servers start moto or PostgreSQL: the slow tier (`make test-fast` leaves them out).
ON_SERVERS = {"dynamodb", "postgres"}


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.slow) if name in ON_SERVERS else name
                        for name in FACTORIES])
def checkpoint_backend(request: pytest.FixtureRequest, tmp_path: Path, servers: Servers) -> OpenStore:
    return FACTORIES[request.param](tmp_path, servers)
