"""What the orchestrator asks for on a tick: which windows to pull now, and why. No Dagster import.

The checkpoint store is the source of truth, not Dagster's run history: a window landed by a run that
was killed is still unfinished there, whatever the event log says. On each tick:

1. every window due (``end + settle_lag <= now``) that is not complete, oldest first: never started,
   failed, left unfinished by a dead run (its lease lapsed), or a re-read interrupted mid-way;
2. then, if ``lookback`` is set, complete windows whose end lies within ``lookback`` of now and whose
   last complete read is at least ``lookback_every`` old, oldest first (late events);
3. never a window whose lease is live (a run is reading it) or that a queued run will read;
4. at most ``max_windows`` in all, so a week of downtime is caught up in bounded steps.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from logpull_dagster.checkpoints import Checkpoint
from logpull_dagster.windows import Window, due_windows, parse_time, rfc3339

Reason = Literal["new", "failed", "lapsed", "unfinished", "reread"]


@dataclass(frozen=True)
class WindowRequest:
    window: Window
    reason: Reason


def plan(
    *,
    cadence: str,
    first: dt.datetime,
    now: dt.datetime,
    settle_lag: dt.timedelta,
    lookback: dt.timedelta,
    lookback_every: dt.timedelta,
    max_windows: int,
    checkpoints: Mapping[str, Checkpoint],
    in_flight: Collection[str] = (),
) -> list[WindowRequest]:
    """The windows to request at ``now`` (see the module docstring).

    ``checkpoints`` maps a window's RFC 3339 start to its pull checkpoint; ``in_flight`` holds the
    RFC 3339 starts of windows that a queued or starting run will read.
    """
    t = now.timestamp()
    missing: list[WindowRequest] = []
    reread: list[WindowRequest] = []
    for w in due_windows(cadence, first, now, settle_lag):
        key = rfc3339(w.start)
        cp = checkpoints.get(key)
        if key in in_flight or (cp is not None and cp.lease_owner is not None and cp.lease_expires > t):
            continue
        if cp is None:
            missing.append(WindowRequest(w, "new"))
        elif cp.status == "failed":
            missing.append(WindowRequest(w, "failed"))
        elif not cp.read_once:
            missing.append(WindowRequest(w, "lapsed" if cp.lease_owner is not None else "new"))
        elif cp.reading:
            missing.append(WindowRequest(w, "unfinished"))
        elif lookback and w.end > now - lookback and _last_read(cp) <= now - lookback_every:
            reread.append(WindowRequest(w, "reread"))
    return (missing + reread)[:max_windows]


def batches(requests: list[WindowRequest], max_per_run: int) -> list[list[WindowRequest]]:
    """Group requests into runs: adjacent windows of the same kind (first reads vs re-reads), at most
    ``max_per_run`` each. One run reading many windows costs one process start instead of many, which
    is what makes a catch-up after downtime fast."""
    out: list[list[WindowRequest]] = []
    for r in requests:
        last = out[-1][-1] if out else None
        if (last is not None and len(out[-1]) < max_per_run and last.window.end == r.window.start
                and (last.reason == "reread") == (r.reason == "reread")):
            out[-1].append(r)
        else:
            out.append([r])
    return out


def _last_read(cp: Checkpoint) -> dt.datetime:
    value = cp.stats.get("last_read_at")
    if isinstance(value, str):
        return parse_time(value)
    return dt.datetime.fromtimestamp(cp.heartbeat, dt.UTC)
