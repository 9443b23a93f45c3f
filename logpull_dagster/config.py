"""The config file: the public contract of logpull-dagster.

``LOGPULL_CONFIG`` names a YAML file; without it ``./logpull.yaml`` is used; with neither, the demo
config (one Google Workspace ``login`` source read from the bundled simulator), loudly: a
``DemoConfigWarning`` on stderr once per process, and ``is_demo`` set so the assets say so in the UI
(``logpull status`` and ``logpull reset`` refuse to run on it). Every key is checked when the file is
loaded, so a typo fails ``dagster dev`` at once with the key and the fix, instead of a window failing at
3 a.m.: unknown and duplicate keys, durations that are negative, zero where zero makes no sense, or too
long, a ``start`` more than one window in the future, and paths that cannot be created or read.
Relative paths are relative to the config file's folder. Loading creates nothing.

Secrets are only ever *named* (``access_token: {env: GWS_ACCESS_TOKEN}``); their values are read from
the run's environment when an attempt opens its source (``resources.py``) and never pass through this
module.

The models here are the bases every type shares (``SourceBase``, ``StoreBase``); each type's own model
lives in its module and is registered in ``plugins.py``; ``config_model()`` joins them into tagged
unions chosen by ``type``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import ssl
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from logpull_dagster.rate import RateLimit, parse_rate_limit
from logpull_dagster.targets import LEGACY_SINK, RESERVED_SINK_NAMES, job_of
from logpull_dagster.windows import CADENCE_STEP, UTC, is_aligned, parse_duration, parse_time, rfc3339

DEFAULT_CONFIG_FILE = "logpull.yaml"
DEMO_SIMULATOR_URL = "http://127.0.0.1:8765"
# The longest duration any key takes: longer is a typo, and would overflow the date arithmetic later.
MAX_DURATION = dt.timedelta(days=3650)


class ConfigError(ValueError):
    """The config file is wrong; the message names the key and what is allowed."""


class DemoConfigWarning(UserWarning):
    """No config file was found and the built-in demo config is in use (see ``load_config``)."""


def _duration(value: Any) -> dt.timedelta:
    td = value if isinstance(value, dt.timedelta) else parse_duration(value)
    if td < dt.timedelta(0):
        raise ValueError("a duration cannot be negative")
    if td > MAX_DURATION:
        raise ValueError(f"{value!r} is longer than {MAX_DURATION.days}d, the longest duration allowed")
    return td


Duration = Annotated[dt.timedelta, BeforeValidator(_duration)]


class _Strict(BaseModel):
    # Durations serialise as seconds, which the loader reads back (resources carry their config as JSON).
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_timedelta="float")


class EnvRef(_Strict):
    """A value read from an environment variable at run time: ``{env: NAME}``."""

    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


def secret(example: str) -> Any:
    """The type of a secret key: only ever ``{env: NAME}``, the variable that holds it at run time.
    ``example``: the variable name the error message suggests, e.g. ``GWS_ACCESS_TOKEN``."""

    def named_only(value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            raise ValueError(f"secrets are never written in the config; name an environment variable: "
                             f"{info.field_name}: {{env: {example}}}")
        return value

    return Annotated[EnvRef, BeforeValidator(named_only)]


def _base_url(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("must be an http(s) URL such as https://admin.googleapis.com")
    return value.rstrip("/")


# An API's origin (and optional path prefix), without a trailing slash.
BaseUrl = Annotated[str, BeforeValidator(_base_url)]


def _rate_limit(value: Any) -> str:
    return str(parse_rate_limit(value if isinstance(value, str) else repr(value)))


# ``N/sec``, ``N/min`` or ``N/hour`` (also ``s``, ``m``, ``h``), written back in the long form.
RateLimitText = Annotated[str, BeforeValidator(_rate_limit)]


class SourceBase(_Strict):
    """What every source type shares: one API account and one stream of it, read window by window.
    Becomes ``logs/<name>`` and ``siem/<name>``. Each type (``sources/<type>.py``) subclasses this with
    ``type: Literal["<type>"]`` and the keys of its API; ``LogpullConfig.sources`` picks the model by
    ``type``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    type: str
    cadence: Literal["hourly", "daily"] = "hourly"
    start: dt.datetime
    settle_lag: Duration = dt.timedelta(minutes=15)
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
    # The most bytes one API response may decode to; a larger page fails clearly instead of exhausting memory.
    max_page_bytes: int = Field(default=64 * 2**20, ge=1024, le=2**30)
    # A PEM file of CA certificates, for an API (or proxy) behind a private CA. Checked when the config
    # loads; the resolved absolute path is `ca_path`.
    ca_file: str | None = None
    # false turns certificate checks off; every run logs a warning.
    tls_verify: StrictBool = True
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
    # Requests per second, minute or hour to the API account, e.g. "600/min", drawn by every run on every
    # machine from one budget kept in the checkpoint store (rate.py). Off by default.
    rate_limit: RateLimitText | None = None
    # The account whose budget this source draws from (default: its pool, effective_pool): sources
    # naming the same one share one budget, and must state the same rate_limit.
    rate_account: str | None = Field(default=None, max_length=200, pattern=r"^\S(.*\S)?$")
    # The sinks (names in `sinks:`, or `siem`) this stream is delivered to; default every sink.
    deliver_to: list[str] | None = None

    #: Whether this type sends its requests through the shared HTTP client, which keeps a rate_limit
    #: (its factory takes ``rate=``; see plugins.Plugin). A type that does not refuses rate_limit.
    supports_rate_limit: ClassVar[bool] = False

    # Set by LogpullConfig when it is validated (they depend on where the config came from).
    _demo: bool = PrivateAttr(default=False)
    _ca_path: Path | None = PrivateAttr(default=None)
    # The name of the source a stream was expanded from (``streams``); None: the stream is the source.
    _group: str | None = PrivateAttr(default=None)

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

    @field_validator("start")
    @classmethod
    def _start_window(cls, value: dt.datetime, info: ValidationInfo) -> dt.datetime:
        cadence = info.data.get("cadence")
        if cadence is None:  # cadence itself is wrong; that error is reported
            return value
        if not is_aligned(cadence, value):
            unit = "a whole UTC hour" if cadence == "hourly" else "a UTC midnight"
            raise ValueError(f"start {value.isoformat()} must be {unit} for cadence {cadence}")
        now = dt.datetime.now(UTC)
        step = CADENCE_STEP[cadence]
        if value - now > step:
            window = "an hour" if cadence == "hourly" else "a day"
            raise ValueError(f"{rfc3339(value)} is more than one window ({window}) after now ({rfc3339(now)}); "
                             f"start is the first window to pull, so no window would be due until then")
        return value

    @field_validator("http_timeout", "time_budget", "lease_ttl", "http_backoff_max", "lookback_every",
                     "freshness_interval", "delivery_interval", "max_delay")
    @classmethod
    def _positive(cls, value: dt.timedelta | None) -> dt.timedelta | None:
        if value is not None and value <= dt.timedelta(0):
            raise ValueError("must be longer than 0s")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _rate_supported(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not cls.supports_rate_limit:
            raise ValueError(f"type {info.data.get('type')!r} does not send its requests through the shared HTTP "
                             f"client (sources/http.py), so it cannot keep a rate budget; remove rate_limit")
        return value

    @model_validator(mode="after")
    def _rate_account_needs_a_limit(self) -> SourceBase:
        if self.rate_account is not None and self.rate_limit is None:
            raise ValueError(f"rate_account: names the budget of rate_limit, which is not set; add rate_limit "
                             f"(e.g. rate_limit: 600/min) or remove rate_account: {self.rate_account}")
        return self

    @field_validator("deliver_to")
    @classmethod
    def _deliver_to(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("an empty list delivers the stream nowhere; name at least one sink, or leave "
                             "deliver_to out to deliver to every sink")
        if value is not None and len(set(value)) != len(value):
            raise ValueError(f"{value} names a sink twice; name each sink once")
        return value

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must name a PEM file of CA certificates, or be left out")
        return value

    @field_validator("tls_verify")
    @classmethod
    def _tls_verify(cls, value: bool, info: ValidationInfo) -> bool:
        if not value and info.data.get("ca_file") is not None:
            raise ValueError("false turns certificate checks off, so ca_file would be ignored; "
                             "keep ca_file and remove tls_verify: false, or remove ca_file")
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        import dagster as dg  # the schedule's own check, through its public constructor

        try:
            dg.ScheduleDefinition(name="logpull_cron_check", cron_schedule=value, job_name="logpull_cron_check")
        except dg.DagsterInvalidDefinitionError:
            raise ValueError(f"{value!r} is not a cron string; write it like '*/15 * * * *'") from None
        return value

    @property
    def is_demo(self) -> bool:
        """True when the source comes from the built-in demo config (no config file was found)."""
        return self._demo

    @property
    def demo_notice(self) -> str:
        """A Markdown paragraph that starts the source's asset descriptions under the demo config, else ""."""
        if not self._demo:
            return ""
        return (f"**DEMO config**: no config file was found (LOGPULL_CONFIG unset, no ./logpull.yaml), so this "
                f"reads the bundled simulator at {getattr(self, 'base_url', '?')}, not a real API. Set "
                f"LOGPULL_CONFIG to your config file.\n\n")

    @property
    def stream(self) -> str:
        """What the stream is, for descriptions (e.g. ``login`` audit events); types override it."""
        return f"{self.type} audit events"

    @property
    def group(self) -> str:
        """The config source this stream belongs to: its asset group in the UI (its own name, unless it
        is one of several streams of one source)."""
        return self._group or self.name

    def streams(self) -> list[SourceBase]:
        """The plain streams this source stands for, each one ``logs/<name>``: itself, unless its type
        expands one source into several (Google Workspace ``applications:``). ``LogpullConfig`` calls it
        once, when it is validated, so everything downstream sees only streams."""
        return [self]

    def secret_refs(self) -> list[EnvRef]:
        """Every secret this source names (each ``{env: NAME}`` among its keys)."""
        return [v for v in (getattr(self, f) for f in type(self).model_fields) if isinstance(v, EnvRef)]

    @property
    def ca_path(self) -> Path | None:
        """``ca_file`` resolved against the config file's folder (absolute), or None."""
        if self.ca_file is None:
            return None
        return self._ca_path or Path(self.ca_file).expanduser().resolve()

    @property
    def effective_lease_wait(self) -> dt.timedelta:
        return self.lease_ttl if self.lease_wait is None else self.lease_wait

    @property
    def effective_pool(self) -> str:
        return self.pool or f"{self.type}:{self.name}"

    @property
    def effective_rate_account(self) -> str:
        """The account whose rate budget this source draws from: ``rate_account``, else its pool."""
        return self.rate_account or self.effective_pool

    @property
    def rate(self) -> RateLimit | None:
        """``rate_limit`` parsed, or None (no budget)."""
        return None if self.rate_limit is None else parse_rate_limit(self.rate_limit)


class StoreBase(_Strict):
    """What every ``checkpoints``, ``landing`` and ``siem`` type shares; each type (one module, see
    ``plugins.py``) subclasses it with ``type: Literal["<type>"]`` and its own keys."""

    type: str

    def problems(self, resolve: Callable[[str], Path]) -> list[tuple[str, str]]:
        """``(key, why)`` for each key that cannot work, checked when the config loads (creating nothing)."""
        return []

    def missing_state(self, resolve: Callable[[str], Path], origin: str) -> str | None:
        """Why there is no state to answer from yet (``logpull status`` on a store never written), or None;
        ``origin``: the config file, for the message."""
        return None

    def where(self, resolve: Callable[[str], Path]) -> str:
        """Where the state is, for messages."""
        return self.type


class LocalStoreBase(StoreBase):
    """A store kept at one ``path`` of this host, a file or a folder created on first use; relative to
    the config file's folder. Checked when the config loads: the path must be creatable by this user."""

    path: str
    path_kind: ClassVar[Literal["file", "folder"]] = "folder"

    def problems(self, resolve: Callable[[str], Path]) -> list[tuple[str, str]]:
        why = cannot_create(resolve(self.path), self.path_kind)
        return [("path", why)] if why else []

    def where(self, resolve: Callable[[str], Path]) -> str:
        return str(resolve(self.path))

    def resolved(self, base_dir: Path) -> Path:
        """``path``, absolute (relative paths start at ``base_dir``, the config file's folder)."""
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else (base_dir / path).resolve()


class SinkBase(StoreBase):
    """What every SIEM sink type shares (an entry of ``sinks:``, or ``siem:``): the retries and lease of
    its deliveries. Left out, a delivery takes the stream's own ``retries``, ``retry_delay``,
    ``lease_ttl`` and ``lease_wait`` (as before sinks had their own). ``kinds``: what the Dagster UI shows
    of the sink's delivery assets (its technology)."""

    retries: int | None = Field(default=None, ge=0, le=100)
    retry_delay: Duration | None = None
    lease_ttl: Duration | None = None
    lease_wait: Duration | None = None

    kinds: ClassVar[tuple[str, ...]] = ()

    @field_validator("lease_ttl")
    @classmethod
    def _positive_ttl(cls, value: dt.timedelta | None) -> dt.timedelta | None:
        if value is not None and value <= dt.timedelta(0):
            raise ValueError("must be longer than 0s")
        return value


# The stores a config gets when it names none: the embedded defaults (`siem:` only without `sinks:`).
DEFAULT_STORES = {"checkpoints": {"type": "sqlite"}, "landing": {"type": "local"}}
DEFAULT_SINK = {"type": "file"}
_SINK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class LogpullConfig(_Strict):
    """The whole config file. The field types here are the bases; ``config_model()`` narrows ``sources``,
    ``checkpoints``, ``landing`` and ``siem`` to tagged unions of the registered types (``plugins.py``)."""

    sources: list[SourceBase] = Field(min_length=1)
    checkpoints: StoreBase
    landing: StoreBase
    # The SIEM sinks, by name: each stream is delivered to those it names (deliver_to), else to all.
    # `siem:` is the sink named siem (the only one before `sinks:` existed); the default, with neither.
    siem: StoreBase | None = None
    sinks: dict[str, StoreBase] = Field(default_factory=dict)
    # Dagster's executor for the code location. in_process: steps run in the run's process (a window's
    # work is I/O bound, so a subprocess per step costs ~1.5 s a run for nothing); multiprocess: each
    # step in its own process, as step-per-pod executors do. Retries behave the same under both.
    executor: Literal["in_process", "multiprocess"] = "in_process"
    # Folder that relative paths are resolved against (the config file's folder).
    base_dir: str = "."

    _demo: bool = PrivateAttr(default=False)
    _sinks: dict[str, StoreBase] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_stores(cls, value: Any) -> Any:
        if isinstance(value, dict):
            defaults = dict(DEFAULT_STORES)
            if "siem" not in value and "sinks" not in value:
                defaults["siem"] = DEFAULT_SINK
            return {**{k: v for k, v in defaults.items() if k not in value}, **value}
        return value

    @model_validator(mode="after")
    def _unique_names(self, info: ValidationInfo) -> LogpullConfig:
        # Expanded once, here: definitions, schedules, sensors, the CLI and the Component see streams only.
        seen: dict[str, tuple[int, SourceBase]] = {}
        streams: list[SourceBase] = []
        for i, src in enumerate(self.sources):
            for s in src.streams():
                if s.name in seen:
                    j, other = seen[s.name]
                    if other.group == other.name and s.group == s.name:
                        raise ValueError(f"two sources are named {s.name!r} (sources[{j}] and sources[{i}]); "
                                         f"names must be unique")
                    raise ValueError(f"{_origin(j, other)} and {_origin(i, s)} both make a stream named {s.name!r} "
                                     f"(a source's applications become streams <name>_<application>); stream names "
                                     f"must be unique: rename one of the sources")
                seen[s.name] = (i, s)
                streams.append(s)
        object.__setattr__(self, "sources", streams)  # frozen model: set once, before anyone reads it
        _one_rate_per_account(self.sources)
        self._sinks = _named_sinks(self.siem, self.sinks)
        for i, src in enumerate(self.sources):
            for name in src.deliver_to or ():
                if name not in self._sinks:
                    raise ValueError(f"{_origin(i, src)}.deliver_to: {name!r} is not a sink of this config; its "
                                     f"sinks are {', '.join(self._sinks)} (sinks: names them; siem: is the sink "
                                     f"named siem)")
        _unique_delivery_names(self.sources, self._sinks)
        # Where the config came from, recorded on the sources too: the assets see only their source.
        self._demo = bool((info.context or {}).get("demo"))
        for s in self.sources:
            s._demo = self._demo
            s._ca_path = self.resolve(s.ca_file) if s.ca_file is not None else None
        return self

    @property
    def is_demo(self) -> bool:
        """True when this is the built-in demo config (no config file was found)."""
        return self._demo

    @property
    def all_sinks(self) -> dict[str, StoreBase]:
        """Every sink by name, in order: ``siem`` (the ``siem:`` key) first, then ``sinks:``."""
        return dict(self._sinks)

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    def source(self, name: str) -> SourceBase:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)


def _origin(i: int, stream: SourceBase) -> str:
    """Where a stream comes from, for messages: ``sources[1] (gws)`` or ``sources[1] (gws, application login)``."""
    if stream.group == stream.name:
        return f"sources[{i}] ({stream.name})"
    return f"sources[{i}] ({stream.group}, application {getattr(stream, 'application', '?')})"


def _named_sinks(siem: StoreBase | None, sinks: dict[str, StoreBase]) -> dict[str, StoreBase]:
    """``siem:`` as the sink named siem, then ``sinks:``; names checked (they name assets and jobs)."""
    if siem is not None and LEGACY_SINK in sinks:
        raise ValueError("siem: and sinks.siem are both the sink named siem; keep one of them (sinks: {siem: ...})")
    for name in sinks:
        if not _SINK_NAME.match(name):
            raise ValueError(f"sinks.{name}: a sink's name must be lowercase letters, digits and _, starting with "
                             f"a letter, at most 63 characters (it names the assets <sink>/<stream>)")
        if name in RESERVED_SINK_NAMES:
            raise ValueError(f"sinks.{name}: the name {name!r} is taken by the pull's assets ({name}/<stream>); "
                             f"name the sink otherwise")
    if siem is None and not sinks:
        raise ValueError("sinks: is empty; name at least one sink, e.g. sinks: {siem: {type: file, path: siem}}")
    return {**({LEGACY_SINK: siem} if siem is not None else {}), **sinks}


def _unique_delivery_names(streams: list[SourceBase], sinks: dict[str, StoreBase]) -> None:
    """Jobs and sensors are named after (stream, sink) pairs; refuse two pairs with one name."""
    seen: dict[str, tuple[str, str]] = {}
    for stream in streams:
        for sink in sinks:
            name = job_of(stream.name, sink)
            if name in seen and seen[name] != (stream.name, sink):
                other = seen[name]
                raise ValueError(f"the delivery of stream {stream.name!r} to sink {sink!r} and of stream {other[0]!r} "
                                 f"to sink {other[1]!r} would both be named {name}; rename the sink or the source")
            seen[name] = (stream.name, sink)


def _one_rate_per_account(sources: list[SourceBase]) -> None:
    """Sources drawing from one account's budget must agree on it: with two limits, each run would
    space its requests by its own, and the account would see neither."""
    first: dict[str, SourceBase] = {}
    for s in sources:
        account = s.effective_rate_account
        other = first.setdefault(account, s)
        if other is s:
            continue
        mine, theirs = s.rate, other.rate
        if (None if mine is None else mine.interval) != (None if theirs is None else theirs.interval):
            raise ValueError(
                f"sources {other.name!r} and {s.name!r} draw from the rate budget of account {account!r} "
                f"(rate_account, default: the pool) but state different rate_limit ({theirs or 'none'} and "
                f"{mine or 'none'}); give them the same rate_limit, or different rate_account")


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
        if isinstance(node, dict) and isinstance(item, str) and item not in node and node.get("type") == item:
            continue  # the tagged union's member name (the `type` value), not a key of the file
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
    if kind == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        return (f"{key}.type: {ctx.get('tag')!r} is not allowed; expected one of {ctx.get('expected_tags')} "
                f"(other types come from plug-in packages: entry point group logpull_dagster.plugins)")
    if kind == "union_tag_not_found":
        return f"{key}.type: required key is missing"
    if kind == "literal_error":
        return f"{key}: {err.get('input')!r} is not allowed; {msg.lower()}"
    if kind == "missing":
        return f"{key}: required key is missing"
    return f"{key}: {msg.removeprefix('Value error, ')}"


def _exists(path: Path) -> bool:
    return os.path.exists(path)  # False, not PermissionError, under a folder this user cannot read


def cannot_create(path: Path, kind: Literal["file", "folder"]) -> str | None:
    """Why ``path`` (a file or a folder the pipeline creates on first use) cannot be, or None.

    Creates nothing: walks up to the nearest existing ancestor, which must be a writable folder."""
    if _exists(path):
        if kind == "file" and os.path.isdir(path):
            return f"{path} is a folder; name the database file, e.g. {path / 'checkpoints.db'}"
        if kind == "folder" and not os.path.isdir(path):
            return f"{path} exists and is not a folder"
        return None
    ancestor = path.parent
    while not _exists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not os.path.isdir(ancestor):
        return f"{path} cannot be created: {ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{path} cannot be created: this user cannot write to {ancestor}"
    return None


def _cannot_read_ca(path: Path) -> str | None:
    if not _exists(path):
        return f"{path} does not exist (relative paths are relative to the config file's folder)"
    if not os.path.isfile(path):
        return f"{path} is not a file; name a PEM file of CA certificates"
    if not os.access(path, os.R_OK):
        return f"{path} is not readable by this user"
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError) as e:
        return f"{path} holds no PEM CA certificate ({getattr(e, 'reason', None) or e})"
    return None


def _path_problems(cfg: LogpullConfig) -> list[str]:
    """Every key of the config that cannot be used (paths that cannot be created or read), as ``key: why``."""
    out = []
    stores: list[tuple[str, StoreBase]] = [("checkpoints", cfg.checkpoints), ("landing", cfg.landing)]
    stores += [(LEGACY_SINK if cfg.siem is sink else f"sinks.{name}", sink) for name, sink in cfg.all_sinks.items()]
    for where, store in stores:
        out += [f"{where}.{key}: {why}" for key, why in store.problems(cfg.resolve)]
    for i, src in enumerate(cfg.sources):
        if src.ca_path is not None and (why := _cannot_read_ca(src.ca_path)):
            out.append(f"sources[{i}] ({src.name}).ca_file: {why}")
    return out


_models: tuple[int, type[LogpullConfig]] | None = None


def config_model() -> type[LogpullConfig]:
    """``LogpullConfig`` with ``sources``, ``checkpoints``, ``landing``, ``siem`` and ``sinks`` as tagged unions
    of the registered types (``plugins.py``): ``type`` picks the model, whose own keys are then checked."""
    global _models
    from logpull_dagster import plugins

    generation = plugins.generation()
    if _models is not None and _models[0] == generation:
        return _models[1]

    def union(kind: plugins.Kind) -> Any:
        models = tuple(p.config for p in plugins.plugins(kind).values())
        return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 (a runtime tuple)

    sink = union("siem")
    model = create_model(
        "LogpullConfig", __base__=LogpullConfig,
        sources=(list[union("source")], Field(min_length=1)),  # type: ignore[valid-type]
        checkpoints=(union("checkpoints"), ...), landing=(union("landing"), ...),
        siem=(Optional[sink], None), sinks=(dict[str, sink], Field(default_factory=dict)),  # type: ignore[valid-type]  # noqa: UP045
    )
    _models = (generation, model)
    return model


def parse_config(raw: Any, *, origin: str = "config", base_dir: str = ".", demo: bool = False) -> LogpullConfig:
    """Validate a parsed YAML document; raise ConfigError naming every wrong key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping with a 'sources' list")
    try:
        cfg = config_model().model_validate({**raw, "base_dir": base_dir}, context={"demo": demo})
    except ValidationError as e:
        lines = "\n".join(f"  - {_describe(err, raw)}" for err in e.errors())
        raise ConfigError(f"{origin} is invalid:\n{lines}") from None
    problems = _path_problems(cfg)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{origin} is invalid:\n{lines}")
    return cfg


class _DuplicateKey(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (PyYAML keeps the last one
    silently, so the earlier setting would be ignored without a word). Merge keys (``<<``) may still
    be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class says so
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                raise _DuplicateKey(f"line {line}: the key {key!r} is written twice in one mapping (first on "
                                    f"line {first}); YAML would silently keep only the last one, so remove one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


_demo_warned = False


def _warn_demo(cfg: LogpullConfig) -> None:
    """Say once per process, on stderr, that the demo config is in use."""
    global _demo_warned
    if _demo_warned:
        return
    _demo_warned = True
    warnings.warn(DemoConfigWarning(
        f"logpull: no config file (LOGPULL_CONFIG unset, no ./logpull.yaml in {os.getcwd()}): using the built-in "
        f"DEMO config, reading the bundled simulator at {getattr(cfg.sources[0], 'base_url', '?')} and keeping "
        f"its state in {cfg.checkpoints.where(cfg.resolve)}; set LOGPULL_CONFIG to your config file"), stacklevel=3)


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
    """The config in ``path``, else the file in force (``config_path``), else the demo config, with a
    ``DemoConfigWarning`` (once per process) and ``is_demo`` set."""
    path = path if path is not None else config_path()
    if path is None:
        cfg = parse_config(demo_config(), origin="the built-in demo config", base_dir=os.getcwd(), demo=True)
        _warn_demo(cfg)
        return cfg
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_config(raw, origin=str(path), base_dir=str(path.resolve().parent))
