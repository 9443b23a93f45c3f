"""Dagster resources: the only place that touches an external system.

Each resource is a small typed ``dg.ConfigurableResource`` that opens one pure store, source or
sink (no Dagster import in those) for the duration of a run.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field, PrivateAttr

from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.redact import Redactor, clean_secret
from logpull_dagster.sinks.file import FileSink
from logpull_dagster.sources.google_workspace import GoogleWorkspaceSource
from logpull_dagster.sources.http import DEFAULT_MAX_BYTES


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
    variable's name (``access_token_env``) in the UI; it never reaches logs or metadata. Surrounding
    whitespace is stripped (secrets mounted from files end with a newline); any other character a
    header cannot hold fails the window naming the variable.
    """

    base_url: str
    application: str
    access_token: str
    access_token_env: str = "the access token variable"
    page_size: int = 1000
    http_timeout_seconds: float = 30.0
    http_attempts: int = 6
    http_backoff_max_seconds: float = 60.0
    max_page_bytes: int = DEFAULT_MAX_BYTES
    ca_file: str | None = None
    tls_verify: bool = True
    secret_envs: list[str] = Field(default_factory=list)

    def open(self) -> GoogleWorkspaceSource:
        """A source for one attempt; raises InvalidSecret if the credential cannot be sent."""
        return GoogleWorkspaceSource(
            base_url=self.base_url, application=self.application,
            access_token=clean_secret(self.access_token_env, self.access_token),
            page_size=self.page_size, timeout=self.http_timeout_seconds, http_attempts=self.http_attempts,
            backoff_initial=min(0.5, self.http_backoff_max_seconds), backoff_max=self.http_backoff_max_seconds,
            max_page_bytes=self.max_page_bytes, credential=self.access_token_env, ca_file=self.ca_file,
            tls_verify=self.tls_verify,
        )

    def redactor(self) -> Redactor:
        """Masks this resource's credential and every secret the config names (``secret_envs``) in any text."""
        return Redactor([self.access_token, *(os.environ.get(n) for n in self.secret_envs)])
