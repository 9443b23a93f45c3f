"""One request budget per API account, shared by every run and machine: ``rate_limit: 600/min``.

APIs cap requests per account and minute (Okta per endpoint, GitHub's audit log, Google's per-project
quota), whatever number of runs, windows and machines read them. Concurrency (``pool``,
``concurrent_windows``) does not bound that: fast pages at 4 windows x 4 runs go far past any quota.
So every request of a source with a ``rate_limit`` first *reserves a slot* of its account's budget in
the checkpoint store the run already holds (``CheckpointStore.reserve``), then waits until the slot:

    slot = max(previous slot + interval, now)        interval = 1 / rate

This is GCRA with no burst: the slots of one account are at least ``interval`` apart, whichever
process took them, so from all runs together the API never sees more than one request per
``interval`` (any span of ``d`` seconds holds at most ``d / interval + 1`` requests). It costs one
atomic statement per request in a store every backend already has, with the same meaning on SQLite,
PostgreSQL and DynamoDB, and it needs no background thread, no per-request rows to expire and no
lock held while waiting. A slot reserved and not used (the run died, or gave up because the slot lay
past its time budget) is simply lost: the account is then under-used, never over-used.

Slots are wall-clock times (``time.time``), because they are compared between machines; their
clocks' skew (NTP: milliseconds) can bring two slots that much closer than ``interval``.

Nothing here imports Dagster: ``assets.py`` makes a :class:`RateGate` per attempt at a window, and the
HTTP client (``sources/http.py``) calls it before every request it sends.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from logpull_dagster.sources import SourceUnavailable

UNITS = {"sec": 1.0, "s": 1.0, "min": 60.0, "m": 60.0, "hour": 3600.0, "h": 3600.0}
_FORM = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")
# One request a second is 86,400 a day; more than this a second is no limit an API states.
MAX_PER_SECOND = 100_000


@dataclass(frozen=True)
class RateLimit:
    """``count`` requests per ``per`` seconds: ``600/min`` is ``RateLimit(600, 60.0)``."""

    count: int
    per: float

    @property
    def interval(self) -> float:
        """Seconds between two slots of the budget."""
        return self.per / self.count

    def __str__(self) -> str:
        unit = {1.0: "sec", 60.0: "min", 3600.0: "hour"}[self.per]
        return f"{self.count}/{unit}"


def parse_rate_limit(text: str) -> RateLimit:
    """``"600/min"`` -> ``RateLimit(600, 60.0)``; raises ValueError naming the form it takes."""
    m = _FORM.match(text) if isinstance(text, str) else None
    if m is None or m.group(2) not in UNITS:
        raise ValueError(f"{text!r} is not a rate; write it as requests per sec, min or hour, "
                         f"e.g. rate_limit: 600/min (units: {', '.join(UNITS)})")
    count, per = int(m.group(1)), UNITS[m.group(2)]
    if count < 1:
        raise ValueError(f"{text!r} allows no request at all; write at least 1, e.g. rate_limit: 1/min")
    if count / per > MAX_PER_SECOND:
        raise ValueError(f"{text!r} is more than {MAX_PER_SECOND:,} requests a second; that is no API's limit")
    return RateLimit(count, per)


def next_slot(previous: float | None, *, interval: float, now: float) -> float:
    """The slot ``reserve`` hands out after ``previous`` (None: the account's first): the stores' arithmetic."""
    return now if previous is None else max(previous + interval, now)


class RateWaitPastDeadline(SourceUnavailable):
    """The request's slot lies past what the attempt may wait (its time budget): stop the attempt as an
    exhausted budget does, checkpoint kept; the retry resumes the window and reserves a new slot."""

    def __init__(self, account: str, wait: float, left: float) -> None:
        self.account, self.wait, self.left = account, wait, left
        super().__init__(f"the next request slot of rate account {account!r} is {wait:.1f}s away, past the "
                         f"attempt's time budget ({left:.1f}s left)")


class Reserves(Protocol):
    """The part of ``CheckpointStore`` a gate needs."""

    def reserve(self, account: str, *, interval: float, now: float) -> float: ...


class RateGate:
    """The rate budget of one account, as one attempt at one window draws from it.

    ``wait(deadline)`` reserves a slot and sleeps until it; ``waited`` is the seconds this gate has
    slept, for the window's metadata. One gate may be called from several threads.
    """

    def __init__(self, store: Reserves, account: str, limit: RateLimit, *,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not callable(getattr(store, "reserve", None)):
            # A third-party checkpoint store written before the budget existed: say so, not AttributeError.
            raise TypeError(f"rate_limit needs a checkpoint store that keeps a shared rate budget "
                            f"(CheckpointStore.reserve); {type(store).__name__} has none: use checkpoints type "
                            f"sqlite, postgres or dynamodb, or remove rate_limit from the source")
        self.store, self.account, self.limit = store, account, limit
        self._clock, self._monotonic, self._sleep = clock, monotonic, sleep
        self._lock = threading.Lock()
        self._waited = 0.0

    @property
    def waited(self) -> float:
        with self._lock:
            return self._waited

    def wait(self, deadline: float | None = None) -> float:
        """Reserve the next slot and sleep until it; return the seconds slept. ``deadline``
        (time.monotonic) bounds the wait: a slot past it raises RateWaitPastDeadline at once, sleeping
        nothing (the slot is lost, which only under-uses the account)."""
        slot = self.store.reserve(self.account, interval=self.limit.interval, now=self._clock())
        wait = slot - self._clock()
        if wait <= 0:
            return 0.0
        if deadline is not None and self._monotonic() + wait > deadline:
            raise RateWaitPastDeadline(self.account, wait, max(0.0, deadline - self._monotonic()))
        self._sleep(wait)
        with self._lock:
            self._waited += wait
        return wait


__all__ = ["RateGate", "RateLimit", "RateWaitPastDeadline", "next_slot", "parse_rate_limit"]
