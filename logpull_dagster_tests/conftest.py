from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.landing.local import LocalLandingStore

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteCheckpointStore]:
    s = SqliteCheckpointStore(tmp_path / "checkpoints.db")
    yield s
    s.close()


@pytest.fixture
def landing(tmp_path: Path) -> LocalLandingStore:
    return LocalLandingStore(tmp_path / "landing")
