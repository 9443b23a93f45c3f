"""The orchestrator's plan at fixed instants, from checkpoint rows (no Dagster)."""

import dataclasses
import datetime as dt

from logpull_dagster.checkpoints import Checkpoint
from logpull_dagster.orchestration import batches, plan
from logpull_dagster.windows import UTC, rfc3339

H = dt.timedelta(hours=1)
DAY = dt.datetime(2026, 11, 26, tzinfo=UTC)


def cp(hour: int, **kw) -> Checkpoint:  # type: ignore[no-untyped-def]
    start = DAY + hour * H
    return Checkpoint(source="s", stage="pull", window_start=rfc3339(start), window_end=rfc3339(start + H), **kw)


def run(now: dt.datetime, rows=(), lookback=dt.timedelta(0), every=H, max_windows=24, in_flight=()):  # type: ignore[no-untyped-def]
    reqs = plan(cadence="hourly", first=DAY, now=now, settle_lag=dt.timedelta(minutes=15), lookback=lookback,
                lookback_every=every, max_windows=max_windows,
                checkpoints={c.window_start: c for c in rows}, in_flight=in_flight)
    return [(r.window.start.hour, r.reason) for r in reqs]


def test_only_settled_windows_oldest_first():
    assert run(DAY + 3 * H + dt.timedelta(minutes=14)) == [(0, "new"), (1, "new")]
    assert run(DAY + 3 * H + dt.timedelta(minutes=15)) == [(0, "new"), (1, "new"), (2, "new")]


def test_catch_up_is_bounded_per_tick():
    assert run(DAY + 23 * H, max_windows=5) == [(h, "new") for h in range(5)]


def test_complete_windows_are_left_alone_and_unfinished_ones_come_back():
    now = DAY + 6 * H
    t = now.timestamp()
    rows = [
        cp(0, status="complete", passes=1),
        cp(1, status="failed", cursor="tok"),
        cp(2, status="running", lease_owner="dead", lease_expires=t - 1),  # its run died: lease lapsed
        cp(3, status="running", lease_owner="alive", lease_expires=t + 30),  # being read right now
        cp(4, status="complete", cursor="tok", passes=1),  # a re-read stopped half-way
    ]
    assert run(now, rows) == [(1, "failed"), (2, "lapsed"), (4, "unfinished")]
    assert run(now, rows, in_flight={rfc3339(DAY + H)}) == [(2, "lapsed"), (4, "unfinished")]


def test_lookback_rereads_recent_complete_windows_at_the_given_spacing():
    now = DAY + 8 * H + dt.timedelta(minutes=15)
    read = {h: DAY + (h + 1) * H + dt.timedelta(minutes=15) for h in range(8)}  # each read once when due
    rows = [cp(h, status="complete", passes=1, stats={"last_read_at": rfc3339(read[h])}) for h in range(8)]
    got = run(now, rows, lookback=dt.timedelta(hours=3), every=H)
    # ends within 3 h of 08:15 are 06:00, 07:00, 08:00 -> windows 5, 6, 7; window 7 was read at 08:15: too soon
    assert got == [(5, "reread"), (6, "reread")]
    rows[5] = dataclasses.replace(rows[5], stats={"last_read_at": rfc3339(now - dt.timedelta(minutes=30))})
    assert run(now, rows, lookback=dt.timedelta(hours=3), every=H) == [(6, "reread")]
    assert run(now, rows) == []  # no lookback: a complete window is never read again


def test_missing_windows_go_before_rereads():
    now = DAY + 4 * H
    rows = [cp(h, status="complete", passes=1, stats={"last_read_at": rfc3339(DAY)}) for h in (0, 1)]
    assert run(now, rows, lookback=dt.timedelta(hours=10), max_windows=2) == [(2, "new"), (0, "reread")]


def test_adjacent_windows_of_one_kind_share_a_run_up_to_the_bound():
    now = DAY + 10 * H
    rows = [cp(3, status="complete", passes=1, stats={"last_read_at": rfc3339(DAY)}),
            cp(4, status="complete", passes=1, stats={"last_read_at": rfc3339(DAY)}),
            cp(6, status="failed")]
    reqs = plan(cadence="hourly", first=DAY, now=now, settle_lag=dt.timedelta(0), lookback=dt.timedelta(hours=12),
                lookback_every=H, max_windows=24, checkpoints={c.window_start: c for c in rows})
    runs = [[(r.window.start.hour, r.reason) for r in b] for b in batches(reqs, max_per_run=3)]
    assert runs == [
        [(0, "new"), (1, "new"), (2, "new")],  # at most 3 a run
        [(5, "new"), (6, "failed"), (7, "new")],  # first reads of any kind go together
        [(8, "new"), (9, "new")],
        [(3, "reread"), (4, "reread")],  # re-reads run apart (they read complete windows)
    ]
