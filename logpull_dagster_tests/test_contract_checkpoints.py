"""The CheckpointStore contract (``contracts/checkpoint_store.py``), run against every store.

To add an implementation, add one entry to FACTORIES: its name, and a function of the test's
``tmp_path`` returning an opener of store instances that all share one backing storage for that test
(the same file, table or database), e.g.
``"postgres": lambda tmp: functools.partial(PostgresCheckpointStore, dsn=DSN, schema=f"t_{tmp.name}")``.
Every contract test then runs for it too; nothing else changes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster_tests.contracts.checkpoint_store import *  # noqa: F403
from logpull_dagster_tests.contracts.checkpoint_store import OpenStore
from logpull_dagster_tests.example_plugins.json_checkpoints import JsonFileCheckpointStore

FACTORIES: dict[str, Callable[[Path], OpenStore]] = {
    "sqlite": lambda tmp: functools.partial(SqliteCheckpointStore, tmp / "checkpoints.db"),
    # The example plug-in (example_plugins/json_checkpoints.py): a store in one module keeps the contract too.
    "json_file": lambda tmp: functools.partial(JsonFileCheckpointStore, tmp / "checkpoints.json"),
}


@pytest.fixture(params=list(FACTORIES))
def checkpoint_backend(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    return FACTORIES[request.param](tmp_path)
