"""``SourceBase``: what every source type's config shares (one API account, one stream of it, read
window by window). Each type's own model subclasses it in its module (``sources/<type>.py``)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, PrivateAttr, StrictBool, ValidationInfo, field_validator, model_validator

from logpull_dagster.config.fields import (
    Duration,
    EnvRef,
    RateLimitText,
    Strict,
    bounded,
    check_ca_file,
    check_proxy,
    check_tls_verify,
    secret_refs_of,
)
from logpull_dagster.rate import RateLimit, parse_rate_limit
from logpull_dagster.windows import CADENCE_STEP, UTC, is_aligned, parse_time, rfc3339

# No audit log API this tool reads holds an event from before 2000 (the oldest, Google's Reports API,
# dates from the 2010s); an earlier start is a typo, and `0001-01-01` would make the partitions and
# `logpull status` walk millions of windows (the code location did not even load).
START_FLOOR = dt.datetime(2000, 1, 1, tzinfo=UTC)

# The keys naming a file, relative to the config file's folder; checked readable when the config loads.
FILE_KEYS = ("ca_file", "client_cert", "client_key")

# The documented range of each duration key: (shortest, longest, why not shorter, why not longer).
# Longer than MAX_DURATION is refused for every duration key (fields.py).
DURATION_RANGES: dict[str, tuple[dt.timedelta, dt.timedelta, str, str]] = {
    "lease_ttl": (dt.timedelta(seconds=1), dt.timedelta(hours=1),
                  "a live run renews its lease every lease_ttl/3, a checkpoint store write each time",
                  "a run that dies keeps its windows from every rerun until its lease lapses"),
    "http_timeout": (dt.timedelta(seconds=1), dt.timedelta(minutes=10),
                     "a TLS handshake with a distant API alone can take longer",
                     "a server that never answers would hold the window (and its lease) that long per try"),
    "time_budget": (dt.timedelta(milliseconds=100), dt.timedelta(hours=24),
                    "shorter than one page's round trip: every attempt would end after its first page",
                    "an attempt reading for over a day is stuck; more windows (or max_windows_per_run) "
                    "split a backlog instead"),
    # 0 is allowed: fail at once when the window is held (tests, and operators who rerun by hand).
    "lease_wait": (dt.timedelta(0), dt.timedelta(hours=1),
                   "", "a dead holder's lease lapses within lease_ttl (at most 1h), so a longer wait only parks "
                       "a run (and its slot of the pool) behind a live one"),
    # 0 is allowed: an in-run retry at once (the delay doubles from there, so 0 stays 0).
    "retry_delay": (dt.timedelta(0), dt.timedelta(hours=1),
                    "", "the first of retries doubling delays; past an hour the window is better left to the "
                        "schedule's next request than held by a sleeping run"),
    # Milliseconds are allowed (the tests' fast back-off); a server's Retry-After is obeyed up to 5 minutes
    # regardless (http.RETRY_AFTER_MAX).
    "http_backoff_max": (dt.timedelta(milliseconds=10), dt.timedelta(minutes=10),
                         "shorter, the retries of one request come back to back at an API that is failing",
                         "one request would wait that long between tries, holding the window and its lease; a "
                         "run that gives up is resumed from its checkpoint by the next one"),
}


class SourceBase(Strict):
    """What every source type shares: one API account and one stream of it, read window by window.
    Becomes ``logs/<name>`` and ``siem/<name>``. Each type (``sources/<type>.py``) subclasses this with
    ``type: Literal["<type>"]`` and the keys of its API; ``LogpullConfig.sources`` picks the model by
    ``type``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    type: str
    cadence: Literal["hourly", "daily"] = "hourly"
    # The first window: a whole UTC hour (midnight for daily), not before 2000 (START_FLOOR), at most one
    # window after now; before the API's `retention` it loads with a warning.
    start: dt.datetime
    settle_lag: Duration = dt.timedelta(minutes=15)
    # Reading budget of one attempt, 100ms .. 24h (DURATION_RANGES, with the reasons).
    time_budget: Duration = dt.timedelta(minutes=10)
    # How long a dead holder keeps a window, 1s .. 1h (DURATION_RANGES).
    lease_ttl: Duration = dt.timedelta(seconds=60)
    # How long a run waits for a window leased by another run before failing clearly, 0s .. 1h. Defaults
    # to lease_ttl, so a run that follows a killed one takes the window over once the dead lease lapses.
    lease_wait: Duration | None = None
    # In-run attempts of one window (Dagster RetryPolicy) when an attempt fails on a fault.
    retries: int = Field(default=3, ge=0, le=100)
    # The first delay between those attempts, 0s .. 1h (DURATION_RANGES).
    retry_delay: Duration = dt.timedelta(seconds=5)
    http_attempts: int = Field(default=6, ge=1, le=50)
    # One total deadline per request, 1s .. 10m (DURATION_RANGES).
    http_timeout: Duration = dt.timedelta(seconds=30)
    # The cap of one request's exponential back-off, 10ms .. 10m (DURATION_RANGES).
    http_backoff_max: Duration = dt.timedelta(seconds=60)
    # The most bytes one API response may decode to; a larger page fails clearly instead of exhausting memory.
    max_page_bytes: int = Field(default=64 * 2**20, ge=1024, le=2**30)
    # A PEM file of CA certificates, for an API (or proxy) behind a private CA. Checked when the config
    # loads; the resolved absolute path is `ca_path`.
    ca_file: str | None = None
    # false turns certificate checks off; every run logs a warning.
    tls_verify: StrictBool = True
    # Mutual TLS: a PEM client certificate (its chain) and its unencrypted private key, both or neither,
    # resolved and checked like ca_file (the resolved paths: `path_of`).
    client_cert: str | None = None
    client_key: str | None = None
    # An http:// or https:// forward proxy every request of this source goes through (API, OAuth token
    # endpoint, Google signJwt); without it, none (the environment's HTTP(S)_PROXY as before). No user
    # info: proxy credentials are not supported (a URL is printed in logs and errors).
    proxy: str | None = None
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

    #: How far back the type's API keeps events: a duration before now, or the first time it has any
    #: (a fixed date); None: unknown (``rest``). A ``start`` before it loads with a warning (the config
    #: loader's, at load time): those windows read back nothing, or fewer events than happened.
    retention: ClassVar[dt.timedelta | dt.datetime | None] = None

    #: Whether this type sends its requests through the shared HTTP client, which keeps a rate_limit
    #: (its factory takes ``rate=``; see plugins.Plugin). A type that does not refuses rate_limit.
    supports_rate_limit: ClassVar[bool] = False

    # Set by LogpullConfig when it is validated (they depend on where the config came from).
    _demo: bool = PrivateAttr(default=False)
    # The file keys (FILE_KEYS) resolved against the config file's folder, by key.
    _paths: dict[str, Path] = PrivateAttr(default_factory=dict)
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
        if value < START_FLOOR:
            written = value.isoformat().replace("+00:00", "Z")  # rfc3339 (strftime) drops year 1's zeros
            raise ValueError(f"{written} is before {rfc3339(START_FLOOR)}: no audit log API keeps events that "
                             f"old, and every window from start to now becomes a partition to pull; set start to "
                             f"the first window to pull, within what the API keeps (Okta 90 days, Google 180)")
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

    @field_validator(*DURATION_RANGES)
    @classmethod
    def _in_range(cls, value: dt.timedelta | None, info: ValidationInfo) -> dt.timedelta | None:
        return None if value is None else bounded(value, *DURATION_RANGES[str(info.field_name)])

    def retention_floor(self, now: dt.datetime) -> dt.datetime | None:
        """The oldest time the API still keeps events from, seen at ``now``; None when unknown."""
        kept = type(self).retention
        return now - kept if isinstance(kept, dt.timedelta) else kept

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
        return check_ca_file(value)

    @field_validator("tls_verify")
    @classmethod
    def _tls_verify(cls, value: bool, info: ValidationInfo) -> bool:
        return check_tls_verify(value, info)

    @field_validator("client_cert", "client_key")
    @classmethod
    def _client_file(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must name a PEM file, or be left out")
        return value

    @model_validator(mode="after")
    def _client_cert_and_key(self) -> SourceBase:
        if (self.client_cert is None) != (self.client_key is None):
            missing = "client_key" if self.client_key is None else "client_cert"
            raise ValueError(f"{missing}: mutual TLS needs both client_cert and client_key (PEM files); set both, "
                             f"or neither")
        return self

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        return None if value is None else check_proxy(value)

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
        """Every secret this source names (each ``{env: NAME}`` among its keys, nested ones included)."""
        return secret_refs_of(self)

    def path_of(self, key: str) -> Path | None:
        """File key ``key`` (one of FILE_KEYS) resolved against the config file's folder (absolute), or None."""
        value = getattr(self, key)
        if value is None:
            return None
        return self._paths.get(key) or Path(value).expanduser().resolve()

    @property
    def ca_path(self) -> Path | None:
        """``ca_file`` resolved against the config file's folder (absolute), or None."""
        return self.path_of("ca_file")

    def client_options(self) -> dict[str, Any]:
        """The shared HTTP client's keyword arguments every source takes from its config (timeouts, retries,
        back-off, body bound, TLS trust and client certificate, proxy), in seconds: one place, not a copy per
        source type."""
        backoff_max = self.http_backoff_max.total_seconds()
        cert, key = self.path_of("client_cert"), self.path_of("client_key")
        return {"timeout": self.http_timeout.total_seconds(), "http_attempts": self.http_attempts,
                "backoff_initial": min(0.5, backoff_max), "backoff_max": backoff_max,
                "max_page_bytes": self.max_page_bytes, "ca_file": str(self.ca_path) if self.ca_path else None,
                "tls_verify": self.tls_verify, "client_cert": (str(cert), str(key)) if cert and key else None,
                "proxy": self.proxy}

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
