"""Deterministic synthetic audit events, the ground truth every emulated API serves from.

Why deterministic: a test or a benchmark must be able to say "this is exactly what a correct client
delivers for this window" without storing anything, and two simulators started with the same seed must
serve byte-identical pages. Events are therefore a pure function of (seed, stream, UTC hour bucket) and
of the generation parameters; a bucket is generated on first use and cached.

Why compact: a benchmark may page through a million-event window. A bucket keeps its events in four
``array('q')`` columns (32 bytes per event) sorted newest first; what an event looks like on the wire
(Google's item, an Okta LogEvent, ...) is decided by the emulated API that serves it, only when it is
served, from the event's time, unique qualifier, actor and weighted name roll.
"""

from __future__ import annotations

import random
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

HOUR_MS = 3_600_000
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: Sort key of an event: (epoch milliseconds, uniqueQualifier as int). The API orders by it descending.
Key = tuple[int, int]

# Layout of the 63 random "attrs" bits drawn once per event. Every field is always drawn, whatever the
# parameters, so switching late events or publish delays on or off never changes which events exist.
_LATE_BITS = 20  # bits 0..19: late roll, compared with late_fraction
_DELAY_SHIFT = 20  # bits 20..39: fraction of publish_delay
_DELAY_MASK = (1 << 20) - 1
_NAME_SHIFT = 40  # bits 40..49: weighted event-name roll (0..1023)
_ACTOR_SHIFT = 50  # bits 50..62: actor index
_N_USERS = 200
NAME_TABLE_SIZE = 1024
_GENERATOR_VERSION = "v1"  # part of every RNG seed string: bump to change every generated event
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_ms(ms: int) -> str:
    """RFC 3339 in the exact shape Google uses for ``id.time``: 3 fractional digits and ``Z``."""
    secs, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:03d}Z"


def us_from_datetime(dt: datetime) -> int:
    """Epoch microseconds of an aware datetime; naive datetimes are refused rather than guessed."""
    if dt.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return (dt - EPOCH) // timedelta(microseconds=1)


def parse_rfc3339_us(value: str) -> int:
    """Epoch microseconds of an RFC 3339 timestamp (``Z``, offsets and fractions all accepted)."""
    return us_from_datetime(datetime.fromisoformat(value))


def ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


@dataclass(frozen=True, slots=True)
class Actor:
    """One of the seeded users every stream's events are attributed to."""

    email: str
    profile_id: str
    ip: str


@dataclass(frozen=True, slots=True)
class EventKind:
    """One entry of an API's catalog of event names; ``params`` turns an event's unique qualifier into
    the API's event details (so details vary per event yet stay a pure function of it)."""

    type: str
    name: str
    weight: int
    params: Callable[[int], Any]


def name_table(catalog: tuple[EventKind, ...]) -> tuple[EventKind, ...]:
    """Expand weights into a 1024-slot lookup so a weighted pick is one index, not a search."""
    total = sum(k.weight for k in catalog)
    table: list[EventKind] = []
    for k in catalog:
        table.extend([k] * (k.weight * NAME_TABLE_SIZE // total))
    while len(table) < NAME_TABLE_SIZE:
        table.append(catalog[0])
    return tuple(table)


class Bucket:
    """The events of one (stream, UTC hour), as columns sorted by (time, uniqueQualifier) descending."""

    __slots__ = ("attrs", "pubs", "times", "uqs")

    def __init__(self, rows: list[tuple[int, int, int, int]]) -> None:
        rows.sort(reverse=True)
        self.times = array("q", [r[0] for r in rows])
        self.uqs = array("q", [r[1] for r in rows])
        self.attrs = array("q", [r[2] for r in rows])
        self.pubs = array("q", [r[3] for r in rows])

    def __len__(self) -> int:
        return len(self.times)

    def first_below(self, key: Key) -> int:
        """Index of the first event whose sort key is strictly below ``key`` (binary search, list is desc)."""
        times, uqs = self.times, self.uqs
        lo, hi = 0, len(times)
        while lo < hi:
            mid = (lo + hi) // 2
            if (times[mid], uqs[mid]) < key:
                hi = mid
            else:
                lo = mid + 1
        return lo


class EventStore:
    """Generates, caches and scans the simulator's events; knows nothing about HTTP or faults."""

    def __init__(
        self,
        *,
        seed: int,
        events_per_hour: int,
        boundary_events: bool,
        shared_ms_events: bool,
        publish_delay: float,
        late_fraction: float,
        late_delay: float,
        max_cached_events: int = 3_000_000,
    ) -> None:
        if events_per_hour < 0:
            raise ValueError("events_per_hour must be >= 0")
        if not 0.0 <= late_fraction <= 1.0:
            raise ValueError("late_fraction must be within [0, 1]")
        if publish_delay < 0 or late_delay < 0:
            raise ValueError("publish_delay and late_delay must be >= 0")
        self.seed = seed
        self.events_per_hour = events_per_hour
        self.boundary_events = boundary_events
        self.shared_ms_events = shared_ms_events
        self._publish_delay_ms = round(publish_delay * 1000)
        self._late_threshold = int(late_fraction * (1 << _LATE_BITS))
        self._late_delay_ms = round(late_delay * 1000)
        self._max_cached_events = max_cached_events
        self._cache: OrderedDict[tuple[str, int], Bucket] = OrderedDict()
        self._cached_events = 0
        self._lock = threading.Lock()
        self._users = self._make_users()

    # -- generation ---------------------------------------------------------------------------------

    def _rng(self, *parts: object) -> random.Random:
        # Seeding with a str hashes it with SHA-512: stable across processes, unlike the salted hash().
        seed_text = "|".join(["logpull-simulator", _GENERATOR_VERSION, str(self.seed), *map(str, parts)])
        return random.Random(seed_text)

    def _make_users(self) -> tuple[Actor, ...]:
        rng = self._rng("users")
        users = []
        nets = ("192.0.2", "198.51.100", "203.0.113")  # documentation ranges: never a real address
        for i in range(_N_USERS):
            profile_id = str(rng.randrange(10**20, 10**21))
            if rng.random() < 0.1:
                ip = f"2001:db8::{rng.randrange(1, 0xFFFF):x}"
            else:
                ip = f"{nets[rng.randrange(len(nets))]}.{rng.randrange(1, 255)}"
            users.append(Actor(f"user{i}@example.com", profile_id, ip))
        return tuple(users)

    def _publish_ms(self, t: int, attrs: int) -> int:
        if (attrs & ((1 << _LATE_BITS) - 1)) < self._late_threshold:
            return t + self._late_delay_ms
        return t + ((attrs >> _DELAY_SHIFT) & _DELAY_MASK) * self._publish_delay_ms // _DELAY_MASK

    def _generate(self, stream: str, hour_ms: int) -> Bucket:
        """All events of one hour bucket. Three independent RNG streams, so toggling extras never moves
        the ordinary events."""
        rows: list[tuple[int, int, int, int]] = []
        seen: set[int] = set()

        def fresh_uq(getrandbits: Callable[[int], int]) -> int:
            while True:
                uq = getrandbits(64) + INT64_MIN
                if uq not in seen:
                    seen.add(uq)
                    return uq

        publish = self._publish_ms
        getrandbits = self._rng(stream, hour_ms, "main").getrandbits
        mask63 = (1 << 63) - 1
        mask64 = (1 << 64) - 1
        for _ in range(self.events_per_hour):
            bits = getrandbits(160)  # one draw: 32 bits of time offset, 63 attrs bits, 64 uq bits
            t = hour_ms + (bits >> 128) % HOUR_MS
            attrs = (bits >> 64) & mask63
            uq = (bits & mask64) + INT64_MIN
            if uq in seen:
                uq = fresh_uq(getrandbits)
            else:
                seen.add(uq)
            rows.append((t, uq, attrs, publish(t, attrs)))
        if self.boundary_events:
            # Exactly on the hour: the inclusive API returns it for both adjacent hourly windows.
            rb = self._rng(stream, hour_ms, "boundary").getrandbits
            attrs = rb(63)
            rows.append((hour_ms, fresh_uq(rb), attrs, publish(hour_ms, attrs)))
        if self.shared_ms_events:
            # Several events in one millisecond: time alone is not an id, and a page may split a group.
            rs = self._rng(stream, hour_ms, "shared")
            for _ in range(2):
                t = hour_ms + rs.randrange(1, HOUR_MS)
                for _ in range(3):
                    attrs = rs.getrandbits(63)
                    rows.append((t, fresh_uq(rs.getrandbits), attrs, publish(t, attrs)))
        return Bucket(rows)

    def bucket(self, stream: str, hour_ms: int) -> Bucket:
        """The (cached) bucket of the hour starting at ``hour_ms``; bounded by a total event count."""
        key = (stream, hour_ms)
        with self._lock:
            b = self._cache.get(key)
            if b is not None:
                self._cache.move_to_end(key)
                return b
        b = self._generate(stream, hour_ms)  # outside the lock: a duplicate generation is harmless
        with self._lock:
            if key not in self._cache:
                self._cache[key] = b
                self._cached_events += len(b)
                while self._cached_events > self._max_cached_events and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cached_events -= len(old)
        return b

    # -- queries ------------------------------------------------------------------------------------

    def scan(
        self,
        stream: str,
        lo_ms: int,
        hi_ms: int,
        *,
        before: Key | None = None,
        visible_at: int | None = None,
    ) -> Iterator[tuple[Bucket, int]]:
        """Events with lo_ms <= time <= hi_ms (both inclusive), newest first, strictly below ``before``
        when given, and published by ``visible_at`` when given. Lazy: a page stops pulling early."""
        bound: Key = (hi_ms, INT64_MAX + 1)
        if before is not None and before < bound:
            bound = before
        if bound[0] < lo_ms:
            return
        hour = bound[0] - bound[0] % HOUR_MS
        while hour + HOUR_MS > lo_ms:
            b = self.bucket(stream, hour)
            times, pubs = b.times, b.pubs
            n = len(times)
            i = b.first_below(bound)
            while i < n:
                if times[i] < lo_ms:
                    return
                if visible_at is None or pubs[i] <= visible_at:
                    yield b, i
                i += 1
            hour -= HOUR_MS

    def scan_ascending(
        self,
        stream: str,
        lo_ms: int,
        hi_ms: int,
        *,
        after: Key | None = None,
        visible_at: int | None = None,
    ) -> Iterator[tuple[Bucket, int]]:
        """``scan`` oldest first (for APIs that list in ascending order, Okta's): events with
        lo_ms <= time <= hi_ms, strictly above ``after`` when given, published by ``visible_at``."""
        bound: Key = (lo_ms, INT64_MIN - 1)  # exclusive: every event at lo_ms is above it
        if after is not None and after > bound:
            bound = after
        hour = bound[0] - bound[0] % HOUR_MS
        while hour <= hi_ms:
            b = self.bucket(stream, hour)
            times, pubs = b.times, b.pubs
            # Columns are newest first: the events above ``bound`` are those before the first at or below it.
            i = b.first_below((bound[0], bound[1] + 1)) - 1
            while i >= 0:
                if times[i] > hi_ms:
                    return
                if visible_at is None or pubs[i] <= visible_at:
                    yield b, i
                i -= 1
            hour += HOUR_MS

    def window(
        self, stream: str, start_us: int, end_us: int, *, now_us: int, include_unpublished: bool = False
    ) -> list[tuple[Bucket, int]]:
        """The ground truth of the HALF-OPEN window [start, end): what a correct client must deliver,
        newest first, nothing after ``now_us``. ``include_unpublished`` adds events that already happened
        but whose late publication is still pending."""
        lo = ceil_div(start_us, 1000)
        hi = min(ceil_div(end_us, 1000) - 1, now_us // 1000)
        visible_at = None if include_unpublished else now_us // 1000
        return list(self.scan(stream, lo, hi, visible_at=visible_at))

    # -- what an API renders an event from --------------------------------------------------------

    def actor(self, attrs: int) -> Actor:
        """The user an event with these attrs bits is attributed to."""
        return self._users[(attrs >> _ACTOR_SHIFT) % _N_USERS]

    @staticmethod
    def name_roll(attrs: int) -> int:
        """The event's weighted-name roll, an index into a ``name_table``."""
        return (attrs >> _NAME_SHIFT) & (NAME_TABLE_SIZE - 1)
