"""Time windows: half-open ``[start, end)`` intervals in UTC, and the arithmetic around them.

A window is the unit of completeness. Its key is its start, written the way Dagster writes the
partition key of a time-window partition (``2026-11-26-10:00`` hourly, ``2026-11-26`` daily), so a
checkpoint row, a landed folder and a Dagster partition name the same thing with the same string.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Literal

UTC = dt.UTC
Cadence = Literal["hourly", "daily"]

CADENCE_STEP: dict[str, dt.timedelta] = {"hourly": dt.timedelta(hours=1), "daily": dt.timedelta(days=1)}
# The formats Dagster's HourlyPartitionsDefinition / DailyPartitionsDefinition use for their keys.
KEY_FORMAT: dict[str, str] = {"hourly": "%Y-%m-%d-%H:%M", "daily": "%Y-%m-%d"}


@dataclass(frozen=True, order=True)
class Window:
    """One half-open time window ``[start, end)``; both ends are aware UTC datetimes."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("window bounds must be timezone-aware")
        if not self.start < self.end:
            raise ValueError(f"window start {self.start} is not before its end {self.end}")

    def contains(self, t: dt.datetime) -> bool:
        """True when ``t`` lies in the window. The end is excluded: an event stamped exactly on a
        boundary belongs to the later window only, although APIs return it for both."""
        return self.start <= t < self.end

    @property
    def slug(self) -> str:
        """A compact, sortable, filesystem-safe name: ``20261126T1000Z``."""
        return self.start.astimezone(UTC).strftime("%Y%m%dT%H%MZ")

    def __str__(self) -> str:
        return f"[{rfc3339(self.start)}, {rfc3339(self.end)})"


def rfc3339(t: dt.datetime) -> str:
    """``2026-11-26T10:00:00Z`` (milliseconds kept only when present)."""
    t = t.astimezone(UTC)
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> dt.datetime:
    """Parse an RFC 3339 timestamp into an aware UTC datetime; raises ValueError otherwise."""
    t = dt.datetime.fromisoformat(value)
    if t.tzinfo is UTC:  # the common case ("...Z"), once per event: skip the conversion
        return t
    if t.tzinfo is None:
        raise ValueError(f"timestamp {value!r} has no timezone")
    return t.astimezone(UTC)


def epoch_us(t: dt.datetime) -> int:
    """Microseconds since the Unix epoch (exact for any time the APIs return: a float64 keeps 0.25 µs now)."""
    return round(t.timestamp() * 1_000_000)


def rfc3339_ms(t: dt.datetime) -> str:
    """``2026-11-26T10:00:02.657Z`` for a UTC datetime: the event-time format, fast (once per event)."""
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def window_for_key(cadence: str, key: str) -> Window:
    """The window whose partition key is ``key``."""
    start = dt.datetime.strptime(key, KEY_FORMAT[cadence]).replace(tzinfo=UTC)
    return Window(start, start + CADENCE_STEP[cadence])


def key_for_window(cadence: str, window: Window) -> str:
    return window.start.astimezone(UTC).strftime(KEY_FORMAT[cadence])


def is_aligned(cadence: str, t: dt.datetime) -> bool:
    """True when ``t`` is a window boundary of the cadence (a whole UTC hour or day)."""
    t = t.astimezone(UTC)
    if t.minute or t.second or t.microsecond:
        return False
    return cadence == "hourly" or t.hour == 0


def due_windows(cadence: str, first: dt.datetime, now: dt.datetime, settle_lag: dt.timedelta) -> list[Window]:
    """Every window from ``first`` whose ``end + settle_lag`` has passed at ``now``, oldest first."""
    step = CADENCE_STEP[cadence]
    out: list[Window] = []
    start = first
    while start + step + settle_lag <= now:
        out.append(Window(start, start + step))
        start += step
    return out


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# The longest duration a timedelta holds (999,999,999 days), in milliseconds.
_MAX_MS = dt.timedelta.max.days * 86_400_000


def parse_duration(value: str | int | float) -> dt.timedelta:
    """``"15m"``, ``"1h30m"``, ``"60s"``, ``"500ms"``, ``"2d"`` or a number of seconds.

    Raises ValueError for anything else, including a negative, infinite or overflowing value (never a
    raw OverflowError, so a config loader can name the key)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 15m, 1h, 60s or 2d")
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value!r} is not a duration; write it like 15m, 1h, 60s, 500ms or 2d")
        if value < 0:
            raise ValueError("a duration cannot be negative")
        try:
            return dt.timedelta(seconds=value)
        except OverflowError:
            raise ValueError(f"{value!r} seconds is too long for a duration") from None
    text = value.strip().replace(" ", "")
    if text.startswith("-"):
        raise ValueError(f"{value!r}: a duration cannot be negative; write it like 15m, 1h, 60s, 500ms or 2d")
    pos, total_ms = 0, 0  # whole milliseconds: exact, and no float to overflow
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        digits = m.group(1).lstrip("0") or "0"
        total_ms += (int(digits) if len(digits) <= 20 else _MAX_MS + 1) * _UNITS_MS[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ValueError(f"{value!r} is not a duration; write it like 15m, 1h, 60s, 500ms or 2d")
    if total_ms > _MAX_MS:
        shown = repr(value) if len(value) <= 40 else repr(value[:30]) + f" (+{len(value) - 30} characters)"
        raise ValueError(f"{shown} is too long for a duration")
    return dt.timedelta(milliseconds=total_ms)
