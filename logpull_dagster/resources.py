"""Dagster resources: the only place that touches an external system.

Each resource is a small typed ``dg.ConfigurableResource`` that opens one pure store, source or
sink (no Dagster import in those) for the duration of a run.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.sinks.file import FileSink
from logpull_dagster.sources.google_workspace import GoogleWorkspaceSource


class SqliteCheckpoints(dg.ConfigurableResource):
    """Window checkpoints and leases in one SQLite file (WAL; safe across processes on one host)."""

    path: str

    _store: SqliteCheckpointStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._store = SqliteCheckpointStore(self.path)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._store is not None:
            self._store.close()

    @property
    def store(self) -> SqliteCheckpointStore:
        if self._store is None:  # used outside a run (sensors, scripts)
            self._store = SqliteCheckpointStore(self.path)
        return self._store


class LocalLanding(dg.ConfigurableResource):
    """Landed pages as JSON Lines files under ``path``/<source>/<window>/."""

    path: str

    @property
    def store(self) -> LocalLandingStore:
        return LocalLandingStore(Path(self.path))


class FileSiem(dg.ConfigurableResource):
    """The SIEM as a folder of immutable JSON Lines batch files (for a forwarder to ship)."""

    path: str

    @property
    def sink(self) -> FileSink:
        return FileSink(Path(self.path))


class GoogleWorkspaceReports(dg.ConfigurableResource):
    """Admin SDK Reports API ``activities.list`` for one application.

    ``access_token`` comes from ``dg.EnvVar``: Dagster resolves it at run time and shows only the
    variable's name in the UI; it never reaches logs or metadata.
    """

    base_url: str
    application: str
    access_token: str
    page_size: int = 1000
    http_timeout_seconds: float = 30.0
    http_attempts: int = 6
    http_backoff_max_seconds: float = 60.0

    def open(self) -> GoogleWorkspaceSource:
        return GoogleWorkspaceSource(
            base_url=self.base_url, application=self.application, access_token=self.access_token,
            page_size=self.page_size, timeout=self.http_timeout_seconds, http_attempts=self.http_attempts,
            backoff_initial=min(0.5, self.http_backoff_max_seconds), backoff_max=self.http_backoff_max_seconds,
        )
