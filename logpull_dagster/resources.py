"""Dagster resources: the only place that touches an external system.

Four resource classes, typed against the protocols, not against one backend: each carries the part of
the config it opens (as JSON, so the Dagster UI shows it) and opens it through ``plugins.py``, the same
factory the sensors, the schedules and the ``logpull`` CLI use. A new backend is a plug-in, never a new
resource class.

Secrets: the config only names them (``{env: NAME}``) and so do these resources (``secret_envs``); the
values are read from the run's environment when a source is opened for an attempt, which is when
``dg.EnvVar`` would resolve them, so no value is ever part of the definitions, the UI or the event log.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field, PrivateAttr

from logpull_dagster import plugins
from logpull_dagster.checkpoints import CheckpointStore
from logpull_dagster.config import SourceBase, StoreBase
from logpull_dagster.landing import LandingStore
from logpull_dagster.rate import RateGate
from logpull_dagster.redact import Redactor, env_secret
from logpull_dagster.sinks import Sink
from logpull_dagster.sources import LogSource


class LogSourceResource(dg.ConfigurableResource):
    """The API of one configured source (any registered type), opened once per attempt."""

    source: str = Field(description="The source's name (logs/<source>).")
    type: str = Field(description="The source type (`type:` in the config).")
    settings: str = Field(description="The source's config as JSON; secrets appear only as {env: NAME}.")
    secret_envs: list[str] = Field(default_factory=list,
                                   description="Every secret the config names: masked in every message.")

    @cached_property
    def config(self) -> SourceBase:
        return plugins.plugin("source", self.type).config.model_validate_json(self.settings)  # type: ignore[no-any-return]

    @property
    def tls_verify(self) -> bool:
        return self.config.tls_verify

    def open(self, rate: RateGate | None = None) -> LogSource:
        """A source for one attempt, drawing from ``rate`` (see ``rate_gate``) before every request;
        raises InvalidSecret if a credential is unset or cannot be sent."""
        return plugins.open_source(self.config, env_secret, rate=rate)

    def rate_gate(self, store: CheckpointStore) -> RateGate | None:
        """The source's share of its account's request budget, kept in ``store`` (the run's checkpoint
        store, so every run and machine draws from one budget); None without ``rate_limit``. One per
        attempt at a window: ``waited`` is that attempt's."""
        limit = self.config.rate
        return None if limit is None else RateGate(store, self.config.effective_rate_account, limit)

    def redactor(self) -> Redactor:
        """Masks every secret the config names (``secret_envs``) in any text."""
        return Redactor([os.environ.get(n) for n in self.secret_envs])


class _StoreResource(dg.ConfigurableResource):
    type: str = Field(description="The store type (`type:` in the config).")
    settings: str = Field(description="The store's config as JSON.")
    base_dir: str = Field(description="The config file's folder: relative paths are relative to it.")

    _kind: Literal["checkpoints", "landing", "siem"]
    _opened: Any = PrivateAttr(default=None)

    @classmethod
    def of(cls, cfg: StoreBase, base_dir: str | Path) -> Any:
        return cls(type=cfg.type, settings=cfg.model_dump_json(), base_dir=str(base_dir))

    def _open(self) -> Any:
        if self._opened is None:  # also used outside a run (sensors, schedules)
            cfg = plugins.plugin(self._kind, self.type).config.model_validate_json(self.settings)
            self._opened = plugins.open_store(self._kind, cfg, self.base_dir)
        return self._opened

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._opened is not None:
            self._opened.close()
            self._opened = None


class CheckpointsResource(_StoreResource):
    """Window checkpoints and leases (``checkpoints:`` of the config; see ``checkpoints/__init__.py``)."""

    _kind = "checkpoints"

    @property
    def store(self) -> CheckpointStore:
        return self._open()  # type: ignore[no-any-return]


class LandingResource(_StoreResource):
    """Landed pages and the read journal (``landing:`` of the config; see ``landing/__init__.py``)."""

    _kind = "landing"

    @property
    def store(self) -> LandingStore:
        return self._open()  # type: ignore[no-any-return]


class SiemResource(_StoreResource):
    """One SIEM sink (``siem:``, or an entry of ``sinks:``; see ``sinks/__init__.py``), shared by every
    stream delivered to it."""

    _kind = "siem"

    @property
    def sink(self) -> Sink:
        return self._open()  # type: ignore[no-any-return]
