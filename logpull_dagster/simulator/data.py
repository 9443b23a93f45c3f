"""Deterministic synthetic Google Workspace audit events for the Reports API simulator.

Why deterministic: a test or a benchmark must be able to say "this is exactly what a correct client
delivers for this window" without storing anything, and two simulators started with the same seed must
serve byte-identical pages. Events are therefore a pure function of (seed, application, UTC hour bucket)
and of the generation parameters; a bucket is generated on first use and cached.

Why compact: a benchmark may page through a million-event window. A bucket keeps its events in four
``array('q')`` columns (32 bytes per event) sorted newest first, and the API item dict is only built when
an event is actually served.
"""

from __future__ import annotations

import base64
import hashlib
import random
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
_NAME_TABLE_SIZE = 1024
_GENERATOR_VERSION = "v1"  # part of every RNG seed string: bump to change every generated event


def format_ms(ms: int) -> str:
    """RFC 3339 in the exact shape Google uses for ``id.time``: 3 fractional digits and ``Z``."""
    secs, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:03d}Z"


@dataclass(frozen=True, slots=True)
class _User:
    email: str
    profile_id: str
    ip: str


Params = list[dict[str, Any]] | None


@dataclass(frozen=True, slots=True)
class _EventKind:
    """One entry of an application's catalog: what goes into ``events[0]`` of an item."""

    type: str
    name: str
    weight: int
    params: Callable[[int], Params]


def _pick(options: tuple[str, ...], v: int) -> str:
    return options[v % len(options)]


_LOGIN_TYPES = ("google_password", "google_password", "google_password", "saml", "reauth")


def _login_params(uq: int) -> Params:
    return [
        {"name": "login_type", "value": _pick(_LOGIN_TYPES, uq >> 3)},
        {"name": "is_suspicious", "boolValue": False},
    ]


def _login_failure_params(uq: int) -> Params:
    return [
        {"name": "login_type", "value": _pick(_LOGIN_TYPES, uq >> 3)},
        {"name": "login_failure_type", "value": "login_failure_invalid_password"},
        {"name": "is_suspicious", "boolValue": (uq >> 11) % 5 == 0},
    ]


def _logout_params(uq: int) -> Params:
    return [{"name": "login_type", "value": _pick(_LOGIN_TYPES, uq >> 3)}]


def _challenge_params(uq: int) -> Params:
    return [
        {"name": "login_challenge_method",
         "multiValue": [_pick(("password", "google_authenticator", "idv_preregistered_phone"), uq >> 5)]},
        {"name": "login_challenge_status",
         "value": "Challenge Passed" if (uq >> 9) % 4 else "Challenge Failed"},
    ]


def _verification_params(uq: int) -> Params:
    return [{"name": "login_type", "value": _pick(_LOGIN_TYPES, uq >> 3)}]


def _no_params(uq: int) -> Params:
    # Real items omit "parameters" for some events; clients must cope with the key being absent.
    return None


def _doc_params(uq: int) -> Params:
    return [
        {"name": "doc_id", "value": f"{uq & 0xFFFFFFFFFFFF:012x}"},
        {"name": "visibility", "value": _pick(("private", "shared_internally", "people_with_link"), uq >> 7)},
        {"name": "owner_is_team_drive", "boolValue": (uq >> 13) % 7 == 0},
    ]


def _setting_params(uq: int) -> Params:
    return [
        {"name": "setting_name", "value": _pick(("SHARING", "RETENTION", "MOBILE_POLICY"), uq >> 4)},
        {"name": "old_value", "value": "false"},
        {"name": "new_value", "value": "true"},
        {"name": "revision", "intValue": str((uq >> 8) % 1000)},
    ]


_LOGIN_CATALOG = (
    _EventKind("login", "login_success", 600, _login_params),
    _EventKind("login", "login_failure", 120, _login_failure_params),
    _EventKind("login", "logout", 150, _logout_params),
    _EventKind("login", "login_challenge", 60, _challenge_params),
    _EventKind("login", "login_verification", 50, _verification_params),
    _EventKind("login", "2sv_enroll", 20, _no_params),
)

_GENERIC_CATALOG = (
    _EventKind("access", "view", 500, _doc_params),
    _EventKind("access", "edit", 250, _doc_params),
    _EventKind("access", "create", 100, _doc_params),
    _EventKind("access", "delete", 50, _doc_params),
    _EventKind("settings", "change_setting", 100, _setting_params),
)


def _name_table(catalog: tuple[_EventKind, ...]) -> tuple[_EventKind, ...]:
    """Expand weights into a 1024-slot lookup so a weighted pick is one index, not a search."""
    total = sum(k.weight for k in catalog)
    table: list[_EventKind] = []
    for k in catalog:
        table.extend([k] * (k.weight * _NAME_TABLE_SIZE // total))
    while len(table) < _NAME_TABLE_SIZE:
        table.append(catalog[0])
    return tuple(table)


_LOGIN_TABLE = _name_table(_LOGIN_CATALOG)
_GENERIC_TABLE = _name_table(_GENERIC_CATALOG)


class Bucket:
    """The events of one (application, UTC hour), as columns sorted by (time, uniqueQualifier) descending."""

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
        customer_id: str,
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
        self.customer_id = customer_id
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
        self._etag_prefix = self._hash(f"etag|{seed}|{customer_id}", 12)

    # -- generation ---------------------------------------------------------------------------------

    def _rng(self, *parts: object) -> random.Random:
        # Seeding with a str hashes it with SHA-512: stable across processes, unlike the salted hash().
        seed_text = "|".join(["logpull-simulator", _GENERATOR_VERSION, str(self.seed), *map(str, parts)])
        return random.Random(seed_text)

    @staticmethod
    def _hash(text: str, nbytes: int) -> str:
        digest = hashlib.blake2b(text.encode(), digest_size=nbytes).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def _make_users(self) -> tuple[_User, ...]:
        rng = self._rng("users")
        users = []
        nets = ("192.0.2", "198.51.100", "203.0.113")  # documentation ranges: never a real address
        for i in range(_N_USERS):
            profile_id = str(rng.randrange(10**20, 10**21))
            if rng.random() < 0.1:
                ip = f"2001:db8::{rng.randrange(1, 0xFFFF):x}"
            else:
                ip = f"{nets[rng.randrange(len(nets))]}.{rng.randrange(1, 255)}"
            users.append(_User(f"user{i}@example.com", profile_id, ip))
        return tuple(users)

    def _publish_ms(self, t: int, attrs: int) -> int:
        if (attrs & ((1 << _LATE_BITS) - 1)) < self._late_threshold:
            return t + self._late_delay_ms
        return t + ((attrs >> _DELAY_SHIFT) & _DELAY_MASK) * self._publish_delay_ms // _DELAY_MASK

    def _generate(self, application: str, hour_ms: int) -> Bucket:
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
        getrandbits = self._rng(application, hour_ms, "main").getrandbits
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
            rb = self._rng(application, hour_ms, "boundary").getrandbits
            attrs = rb(63)
            rows.append((hour_ms, fresh_uq(rb), attrs, publish(hour_ms, attrs)))
        if self.shared_ms_events:
            # Several events in one millisecond: time alone is not an id, and a page may split a group.
            rs = self._rng(application, hour_ms, "shared")
            for _ in range(2):
                t = hour_ms + rs.randrange(1, HOUR_MS)
                for _ in range(3):
                    attrs = rs.getrandbits(63)
                    rows.append((t, fresh_uq(rs.getrandbits), attrs, publish(t, attrs)))
        return Bucket(rows)

    def bucket(self, application: str, hour_ms: int) -> Bucket:
        """The (cached) bucket of the hour starting at ``hour_ms``; bounded by a total event count."""
        key = (application, hour_ms)
        with self._lock:
            b = self._cache.get(key)
            if b is not None:
                self._cache.move_to_end(key)
                return b
        b = self._generate(application, hour_ms)  # outside the lock: a duplicate generation is harmless
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
        application: str,
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
            b = self.bucket(application, hour)
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

    def item(self, application: str, b: Bucket, i: int) -> dict[str, Any]:
        """The API item for event ``i`` of bucket ``b``: a fresh dict each time, so callers may mutate it.
        Publish information is simulator-internal and deliberately absent."""
        t, uq, attrs = b.times[i], b.uqs[i], b.attrs[i]
        user = self._users[(attrs >> _ACTOR_SHIFT) % _N_USERS]
        table = _LOGIN_TABLE if application == "login" else _GENERIC_TABLE
        kind = table[(attrs >> _NAME_SHIFT) & (_NAME_TABLE_SIZE - 1)]
        event: dict[str, Any] = {"type": kind.type, "name": kind.name}
        params = kind.params(uq)
        if params is not None:
            event["parameters"] = params
        ip = user.ip if (uq >> 20) % 8 else f"203.0.113.{(uq >> 24) % 254 + 1}"
        return {
            "kind": "admin#reports#activity",
            "id": {
                "time": format_ms(t),
                "uniqueQualifier": str(uq),
                "applicationName": application,
                "customerId": self.customer_id,
            },
            "etag": f'"{self._etag_prefix}/{self._hash(f"{application}|{t}|{uq}", 18)}"',
            "actor": {"callerType": "USER", "email": user.email, "profileId": user.profile_id},
            "ipAddress": ip,
            "events": [event],
        }

    def event_id(self, application: str, b: Bucket, i: int) -> tuple[str, str, str, str]:
        """The id a client dedupes on: (applicationName, customerId, time, uniqueQualifier)."""
        return (application, self.customer_id, format_ms(b.times[i]), str(b.uqs[i]))
