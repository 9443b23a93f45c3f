"""The completeness ledger: what the checkpoint store and the landed pages say about every window.

Answers "do we have every login event for 3-5 March?" from the store alone, without exporting
anything: each due window is complete (read to its last page, delivered), in progress (with who
holds it and for how long), failed (with why), queued, or missing (due and never requested). The
same facts feed ``logpull status``, the asset checks and the runbook. No Dagster import.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from logpull_dagster import skips
from logpull_dagster.checkpoints import Checkpoint, CheckpointStore
from logpull_dagster.config import SourceBase
from logpull_dagster.landing import LandingStore
from logpull_dagster.pull import LANDED_HEAD
from logpull_dagster.windows import (
    CADENCE_STEP,
    Window,
    due_windows,
    key_for_window,
    parse_time,
    rfc3339,
    rfc3339_ms,
)

if TYPE_CHECKING:  # pandas costs half a second to import: only `logpull status` builds tables
    import pandas as pd

COLUMNS = ["window", "status", "events", "pages", "late_events", "attempts", "last_read", "delivered", "detail"]


def default_max_delay(src: SourceBase) -> dt.timedelta:
    """How far behind now the newest complete window may be: two windows plus the settle lag."""
    return 2 * CADENCE_STEP[src.cadence] + src.settle_lag


def window_rows(src: SourceBase, store: CheckpointStore, now: dt.datetime, *, start: dt.datetime | None = None,
                end: dt.datetime | None = None, queued: Collection[str] = (),
                sinks: Sequence[tuple[str, str]] = (("siem", "deliver"),)) -> pd.DataFrame:
    """One row per due window of ``src`` in ``[start, end)`` (``queued``: window starts a run will read;
    ``sinks``: ``(sink name, delivery stage)`` of every sink the stream is delivered to). A window is
    delivered when every one of them has every landed page; ``delivered`` says so per sink when there
    are several, and ``deliveries`` holds each sink's own answer."""
    pulls = {cp.window_start: cp for cp in store.list(src.name, "pull")}
    sends = {name: {cp.window_start: cp for cp in store.list(src.name, stage)} for name, stage in sinks}
    t = now.timestamp()
    rows = []
    for w in due_windows(src.cadence, src.start, now, src.settle_lag):
        if (start is not None and w.end <= start) or (end is not None and w.start >= end):
            continue
        key = rfc3339(w.start)
        cp = pulls.get(key)
        status, detail = _status(cp, key in queued, t)
        landed = cp.landed_pages if cp else 0
        deliveries = {}
        for name, by_window in sends.items():
            sent = by_window.get(key)
            delivered = sent.delivered_pages if sent else 0
            deliveries[name] = ("yes" if cp and delivered >= landed and status in ("complete", "known gap") else
                                ("no" if delivered == 0 else f"{delivered} of {landed} pages"))
            if sent is not None and sent.status == "failed" and sent.last_error and delivered < landed:
                # Why the SIEM is behind (a landed page gone, the SIEM down), beside why the pull is, if it is.
                to = "" if len(sends) == 1 else f" to {name}"
                if isinstance(sent.stats.get("missing_page"), int):
                    why = (f"delivery{to} stopped: landed page {sent.stats['missing_page']} is missing from the "
                           f"landing store; `logpull recover --source {src.name} --window "
                           f"{key_for_window(src.cadence, w)}` reads the window again")
                else:
                    why = f"delivery{to} stopped at page {delivered}: {sent.last_error[:300]}"
                detail = f"{detail}; {why}" if detail else why
        if len(deliveries) == 1 or all(v == "yes" for v in deliveries.values()):
            delivered_text = next(iter(deliveries.values())) if len(deliveries) == 1 else "yes"
        else:
            delivered_text = ", ".join(f"{name}: {v}" for name, v in deliveries.items())
        rows.append({
            "window": key_for_window(src.cadence, w),
            "start": w.start,
            "status": status,
            "events": cp.events if cp else 0,
            "pages": landed,
            "late_events": int(cp.stats.get("late_events", 0)) if cp else 0,
            "attempts": cp.attempts if cp else 0,
            "last_read": cp.stats.get("last_read_at", "") if cp else "",
            "delivered": delivered_text,
            "detail": detail,
            "deliveries": deliveries,
        })
    import pandas as pd

    return pd.DataFrame(rows, columns=["start", *COLUMNS, "deliveries"])


def _status(cp: Checkpoint | None, queued: bool, now: float) -> tuple[str, str]:
    if cp is None:
        return ("queued", "a run is queued for it") if queued else ("missing", "due, never requested")
    if cp.lease_owner is not None and cp.lease_expires > now:
        age = now - cp.heartbeat
        return "in progress", f"run {cp.lease_owner}, last page {age:.0f}s ago, at page {cp.pages_read + 1}"
    if cp.is_complete:
        gap = skips.describe(cp.stats)
        return ("known gap", gap) if gap else ("complete", "")
    if cp.read_once:
        return "complete", f"a re-read stopped at page {cp.pages_read + 1}; the next run resumes it"
    if cp.status == "failed":
        bad = cp.stats.get("bad_page")
        hint = (f" [page {bad.get('page')} cannot be read as it is; if an operator accepts losing it: "
                f"logpull skip-page, see docs/operations.md]" if isinstance(bad, dict) else "")
        return "failed", (cp.last_error or "")[:300] + hint
    if cp.lease_owner is not None:
        pending = f", after landing {cp.journaled} page(s) it read (journaled)" if cp.journaled else ""
        return "failed", (f"run {cp.lease_owner} died at page {cp.pages_read + 1} (lease lapsed); "
                          f"resumes from there{pending}")
    return "not started", "no page read yet"


def gaps(rows: pd.DataFrame, step: dt.timedelta) -> list[tuple[dt.datetime, dt.datetime]]:
    """Maximal time ranges of windows that are not complete and delivered."""
    bad = rows[(rows["status"] != "complete") | (rows["delivered"] != "yes")]
    out: list[tuple[dt.datetime, dt.datetime]] = []
    for start in bad["start"]:
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], start + step)
        else:
            out.append((start, start + step))
    return out


def collapse(rows: pd.DataFrame) -> pd.DataFrame:
    """Runs of consecutive windows in the same plain state (complete and delivered, or missing, or
    queued) become one line; failed and in-progress windows always keep their own line, with why.

    Keeps the table readable at thousands of windows without hiding what needs attention.
    """
    foldable = rows["status"].isin(["complete", "missing", "queued", "not started"])
    state = rows["status"] + "|" + rows["delivered"] + "|" + rows["detail"]
    state = state.where(foldable, rows["window"])  # a unique state: never folded
    group = (state != state.shift()).cumsum()
    out = []
    for _, part in rows.groupby(group, sort=False):
        if len(part) > 1:
            out.append({
                "window": f"{part['window'].iloc[0]} .. {part['window'].iloc[-1]}",
                "status": f"{part['status'].iloc[0]} x{len(part)}", "events": int(part["events"].sum()),
                "pages": int(part["pages"].sum()), "late_events": int(part["late_events"].sum()),
                "attempts": int(part["attempts"].sum()), "last_read": max(part["last_read"]),
                "delivered": part["delivered"].iloc[0], "detail": part["detail"].iloc[0],
            })
        else:
            out.extend(part[COLUMNS].to_dict("records"))
    import pandas as pd

    return pd.DataFrame(out, columns=COLUMNS)


@dataclass(frozen=True)
class Freshness:
    newest_complete: Window | None
    lag: dt.timedelta | None
    max_delay: dt.timedelta

    @property
    def ok(self) -> bool:
        return self.lag is not None and self.lag <= self.max_delay


def freshness(src: SourceBase, store: CheckpointStore, now: dt.datetime,
              max_delay: dt.timedelta | None = None) -> Freshness:
    """How far behind ``now`` the end of the newest complete window is."""
    limit = max_delay or src.max_delay or default_max_delay(src)
    done = [cp for cp in store.list(src.name, "pull") if cp.read_once]
    if not done:
        return Freshness(None, None, limit)
    newest = max(done, key=lambda cp: cp.window_start)
    w = Window(parse_time(newest.window_start), parse_time(newest.window_end))
    return Freshness(w, now - w.end, limit)


@dataclass(frozen=True)
class WindowAudit:
    """What the landed pages of one window hold, checked line by line without parsing whole events."""

    window: Window
    events: int
    outside: list[str]
    distinct_ids: int

    @property
    def duplicates(self) -> int:
        """Landed events beyond the distinct ids the store recorded for the window."""
        return max(0, self.events - self.distinct_ids)




def audit_window(landing: LandingStore, store: CheckpointStore, source: str, window: Window,
                 landed_pages: int) -> WindowAudit:
    """Every landed line's time inside the window, and as many distinct ids as lines.

    Reads only the head of each line (id and time), so auditing a window costs a fraction of pulling it.
    """
    lo, hi = rfc3339_ms(window.start).encode(), rfc3339_ms(window.end).encode()  # text order is time order
    outside: list[str] = []
    n = 0
    for page in landing.pages(source, window, landed_pages):
        lines = landing.read_lines(page)
        n += len(lines)
        for line in lines:
            # The envelope's time is always the 24-character form: slice it out; the regex is the
            # fallback for anything else (which is then reported if it is not a proper envelope).
            i = line.find(b'","time":"', 7)
            if line.startswith(b'{"id":"') and i > 0 and line[i + 34:i + 35] == b'"':
                event_id, t = line[7:i], line[i + 10:i + 34]
            elif (m := LANDED_HEAD.match(line)) is not None:
                event_id, t = m.groups()
            else:
                outside.append(f"page {page.seq}: a line without the id/time envelope")
                continue
            if not lo <= t < hi:
                outside.append(event_id.decode())
    return WindowAudit(window, n, outside, store.count_ids(source, rfc3339(window.start)))
