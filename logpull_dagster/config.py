"""The config file: the public contract of logpull-dagster.

``LOGPULL_CONFIG`` names a YAML file; without it ``./logpull.yaml`` is used; with neither, the demo
config (one Google Workspace ``login`` source read from the bundled simulator). Every key is checked
when the file is loaded, so a typo fails ``dagster dev`` at once with the key and the fix, instead of
a window failing at 3 a.m. Relative paths are relative to the config file's folder.

Secrets are only ever *named* (``access_token: {env: GWS_ACCESS_TOKEN}``); their values are read
by Dagster at run time (``dg.EnvVar``) and never pass through this module.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from logpull_dagster.windows import is_aligned, parse_duration, parse_time

DEFAULT_CONFIG_FILE = "logpull.yaml"
DEMO_SIMULATOR_URL = "http://127.0.0.1:8765"


class ConfigError(ValueError):
    """The config file is wrong; the message names the key and what is allowed."""


def _duration(value: Any) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        return value
    return parse_duration(value)


Duration = Annotated[dt.timedelta, BeforeValidator(_duration)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnvRef(_Strict):
    """A value read from an environment variable at run time: ``{env: NAME}``."""

    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class SourceConfig(_Strict):
    """One log stream: one API account and one stream of it. Becomes ``logs/<name>`` and ``siem/<name>``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    type: Literal["google_workspace"]
    application: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    base_url: str = "https://admin.googleapis.com"
    access_token: EnvRef
    cadence: Literal["hourly", "daily"] = "hourly"
    start: dt.datetime
    settle_lag: Duration = dt.timedelta(minutes=15)
    page_size: int = Field(default=1000, ge=1, le=1000)
    time_budget: Duration = dt.timedelta(minutes=10)
    lease_ttl: Duration = dt.timedelta(seconds=60)
    # How long a run waits for a window leased by another run before failing clearly. Defaults to
    # lease_ttl, so a run that follows a killed one takes the window over once the dead lease lapses.
    lease_wait: Duration | None = None
    # In-run attempts of one window (Dagster RetryPolicy) when an attempt fails on a fault.
    retries: int = Field(default=3, ge=0, le=100)
    retry_delay: Duration = dt.timedelta(seconds=5)
    http_attempts: int = Field(default=6, ge=1, le=50)
    http_timeout: Duration = dt.timedelta(seconds=30)
    http_backoff_max: Duration = dt.timedelta(seconds=60)
    # The orchestrator: one schedule per source (see schedules.py).
    schedule: str = "*/15 * * * *"
    max_windows_per_tick: int = Field(default=24, ge=1, le=10_000)
    # Adjacent windows requested together run as one run of up to this many windows (a catch-up).
    max_windows_per_run: int = Field(default=12, ge=1, le=10_000)
    # Windows one run reads at once (range runs: catch-ups and backfills). This is the quota against the
    # API: at most (runs the pool admits) x concurrent_windows requests of this source are in flight.
    concurrent_windows: int = Field(default=4, ge=1, le=64)
    # Late events: windows whose end lies within `lookback` of now are re-read every `lookback_every`.
    lookback: Duration = dt.timedelta(0)
    lookback_every: Duration = dt.timedelta(hours=1)
    # Freshness: the newest complete window may end at most this long before now (default: two
    # windows plus settle_lag). Checked on every run and every `freshness_interval` by a sensor.
    max_delay: Duration | None = None
    freshness_interval: Duration = dt.timedelta(minutes=5)
    # How often the delivery sensor looks for windows with new landed data.
    delivery_interval: Duration = dt.timedelta(seconds=30)
    # Dagster concurrency pool (one per API account): bounds scheduled runs and backfills together.
    pool: str | None = None

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: Any) -> dt.datetime:
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                raise ValueError("must carry a timezone, e.g. 2026-11-01T00:00:00Z")
            return value
        try:
            return parse_time(str(value))
        except ValueError:
            raise ValueError("must be an RFC 3339 time such as 2026-11-01T00:00:00Z") from None

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("must be an http(s) URL such as https://admin.googleapis.com")
        return value.rstrip("/")

    @field_validator("access_token", mode="before")
    @classmethod
    def _secret_named(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("secrets are never written in the config; name an environment variable: "
                             "access_token: {env: GWS_ACCESS_TOKEN}")
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        from dagster._utils.schedules import is_valid_cron_string

        if not is_valid_cron_string(value):
            raise ValueError(f"{value!r} is not a cron string; write it like '*/15 * * * *'")
        return value

    @model_validator(mode="after")
    def _aligned(self) -> SourceConfig:
        if not is_aligned(self.cadence, self.start):
            unit = "a whole UTC hour" if self.cadence == "hourly" else "a UTC midnight"
            raise ValueError(f"start {self.start.isoformat()} must be {unit} for cadence {self.cadence}")
        if self.time_budget.total_seconds() <= 0:
            raise ValueError("time_budget must be positive")
        if self.lease_ttl.total_seconds() <= 0:
            raise ValueError("lease_ttl must be positive")
        return self

    @property
    def effective_lease_wait(self) -> dt.timedelta:
        return self.lease_ttl if self.lease_wait is None else self.lease_wait

    @property
    def effective_pool(self) -> str:
        return self.pool or f"{self.type}:{self.name}"


class SqliteCheckpointsConfig(_Strict):
    type: Literal["sqlite"]
    path: str = ".logpull/checkpoints.db"


class LocalLandingConfig(_Strict):
    type: Literal["local"]
    path: str = ".logpull/landing"


class FileSiemConfig(_Strict):
    type: Literal["file"]
    path: str = ".logpull/siem"


class LogpullConfig(_Strict):
    sources: list[SourceConfig] = Field(min_length=1)
    checkpoints: SqliteCheckpointsConfig = SqliteCheckpointsConfig(type="sqlite")
    landing: LocalLandingConfig = LocalLandingConfig(type="local")
    siem: FileSiemConfig = FileSiemConfig(type="file")
    # Folder that relative paths are resolved against (the config file's folder).
    base_dir: str = "."

    @model_validator(mode="after")
    def _unique_names(self) -> LogpullConfig:
        seen: set[str] = set()
        for s in self.sources:
            if s.name in seen:
                raise ValueError(f"two sources are named {s.name!r}; names must be unique")
            seen.add(s.name)
        return self

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    def source(self, name: str) -> SourceConfig:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)


def demo_config(base_url: str | None = None, state_dir: str = ".logpull") -> dict[str, Any]:
    """The config used when no file exists: a Google Workspace login stream from the simulator."""
    # Starts with the four windows `make demo` pulls, so `logpull status` on the demo state is all green
    # and the schedule under `make ui` only has the new windows to pull.
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).replace(minute=0, second=0, microsecond=0)
    start -= dt.timedelta(hours=4)
    return {
        "sources": [{
            "name": "gws_login",
            "type": "google_workspace",
            "application": "login",
            "base_url": base_url or os.environ.get("LOGPULL_SIMULATOR_URL", DEMO_SIMULATOR_URL),
            "access_token": {"env": "LOGPULL_DEMO_TOKEN"},
            "cadence": "hourly",
            "start": start.isoformat().replace("+00:00", "Z"),
            "settle_lag": "5m",
        }],
        "checkpoints": {"type": "sqlite", "path": f"{state_dir}/checkpoints.db"},
        "landing": {"type": "local", "path": f"{state_dir}/landing"},
        "siem": {"type": "file", "path": f"{state_dir}/siem"},
    }


def _describe(err: dict[str, Any], raw: Any) -> str:
    loc = err["loc"]
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(item, int):
            name = node[item].get("name") if isinstance(node, list) and isinstance(node[item], dict) else None
            parts[-1] = f"{parts[-1]}[{item}]" + (f" ({name})" if name else "") if parts else f"[{item}]"
        else:
            parts.append(str(item))
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    key = ".".join(parts) or "(top level)"
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key; check its spelling against the README's config reference"
    if kind == "literal_error":
        return f"{key}: {err.get('input')!r} is not allowed; {msg.lower()}"
    if kind == "missing":
        return f"{key}: required key is missing"
    return f"{key}: {msg.removeprefix('Value error, ')}"


def parse_config(raw: Any, *, origin: str = "config", base_dir: str = ".") -> LogpullConfig:
    """Validate a parsed YAML document; raise ConfigError naming every wrong key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping with a 'sources' list")
    try:
        return LogpullConfig.model_validate({**raw, "base_dir": base_dir})
    except ValidationError as e:
        lines = "\n".join(f"  - {_describe(err, raw)}" for err in e.errors())
        raise ConfigError(f"{origin} is invalid:\n{lines}") from None


def config_path() -> Path | None:
    """The config file in force: $LOGPULL_CONFIG, else ./logpull.yaml if it exists, else None (demo)."""
    named = os.environ.get("LOGPULL_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"LOGPULL_CONFIG names {named!r}, which is not a file")
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_config(path: Path | None = None) -> LogpullConfig:
    path = path if path is not None else config_path()
    if path is None:
        return parse_config(demo_config(), origin="the built-in demo config", base_dir=os.getcwd())
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_config(raw, origin=str(path), base_dir=str(path.resolve().parent))
