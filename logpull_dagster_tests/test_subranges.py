"""A busy window read as sub-ranges at once (subranges.py, pull._read_split), against an in-memory source:
the plan's edges, the quota, and the invariant under crashes, budgets, rejected tokens and bad pages."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import threading
import time
from collections import Counter
from typing import Any

import pytest

from logpull_dagster import skips, subranges
from logpull_dagster.checkpoints.lease import acquire
from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.pull import BudgetExhausted, PullFailed, Readers
from logpull_dagster.sources import BadPage, Page, TokenRejected
from logpull_dagster.windows import Window, rfc3339

from .fakes import FakeSource, W, make_events
from .test_pull import Clock, Crash, CrashingStore, expected_ids, landed_ids, pull

SECOND = dt.timedelta(seconds=1)


# ---- the plan ------------------------------------------------------------------------------------------

def test_a_dense_first_page_splits_the_whole_window_into_sub_ranges_on_whole_seconds_that_tile_it():
    first = W.start + dt.timedelta(minutes=10, milliseconds=250)
    plan = subranges.plan(W, SECOND, first, first + dt.timedelta(seconds=36), readers=4)
    # 3600 s at 36 s a page: ~100 pages, 4 a sub-range, at most 4 sub-ranges per reader.
    assert len(plan) == 4 * subranges.SUBRANGES_PER_READER
    assert plan[0].start == W.start and plan[-1].end == W.end
    assert all(a.end == b.start for a, b in itertools.pairwise(plan))  # no gap, no overlap
    assert all(w.start.microsecond == 0 and w.end.microsecond == 0 for w in plan)


def test_a_quiet_window_or_a_single_reader_reads_page_after_page():
    assert subranges.plan(W, SECOND, W.start, W.end - dt.timedelta(minutes=30), readers=8) == []  # ~2 pages
    assert subranges.plan(W, SECOND, W.start, W.start + dt.timedelta(seconds=5), readers=1) == []
    # Every event of the page in one millisecond: a second's worth of time is the finest split.
    one_ms = subranges.plan(W, SECOND, W.start, W.start, readers=8)
    assert len(one_ms) == 8 * subranges.SUBRANGES_PER_READER and all(w.end - w.start >= SECOND for w in one_ms)
    tiny = Window(W.start, W.start + dt.timedelta(seconds=3))  # three seconds cannot make more than three
    assert len(subranges.plan(tiny, SECOND, tiny.start, tiny.start, readers=8)) == 3


# ---- reading --------------------------------------------------------------------------------------------

class RangeSource(FakeSource):
    """A FakeSource that takes any whole-second range, records (range, cursor) per request, and takes
    ``latency`` seconds a request, counting the requests in flight."""

    def __init__(self, events: list[Any], latency: float = 0.0, **kw: Any) -> None:
        super().__init__(events, range_step=SECOND, **kw)
        self.latency, self.requests = latency, []
        self._lock = threading.Lock()
        self.in_flight = self.peak = 0

    def fetch_page(self, window: Window, cursor: str | None, deadline: float | None = None) -> Page:
        with self._lock:
            self.requests.append((window, cursor))
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            if self.latency:
                time.sleep(self.latency)
            return super().fetch_page(window, cursor, deadline)
        finally:
            with self._lock:
                self.in_flight -= 1

    def rereads(self) -> int:
        """Requests asked again for the same range and cursor."""
        return sum(n - 1 for n in Counter(self.requests).values())


def split_of(store: SqliteCheckpointStore) -> dict[str, Any] | None:
    cp = store.get("s", "pull", rfc3339(W.start))
    assert cp is not None
    return cp.stats.get("split")


def test_a_busy_window_is_read_as_sub_ranges_at_once_within_the_quota_and_lands_every_event_once(store, landing):
    events = make_events(W, 600)
    src = RangeSource(events, latency=0.01)
    readers = Readers(4)
    res = pull(src, store, landing, readers=readers)
    ids = landed_ids(landing, store)
    assert sorted(ids) == expected_ids(events) and len(ids) == len(set(ids))
    assert res.complete and res.checkpoint.events == len(expected_ids(events))
    split = split_of(store)
    assert split is not None and split["subranges"] > 4 and sum(split["pages"]) >= 60
    assert len(split["events_per_second"]) == split["subranges"]
    # Several requests at once, never more than the quota. (Not always exactly 4 at the API: a reader keeps
    # its slot until its page is journaled, so under load some slots are journaling, not fetching.)
    assert 1 < src.peak <= readers.peak <= 4
    assert "subranges" not in res.checkpoint.stats  # the pass is over: no sub-range state left behind
    assert res.checkpoint.journaled == 0 and not list(landing.root.rglob("read-*"))


def test_one_reader_or_a_source_without_ranges_reads_page_after_page(store, landing, tmp_path):
    events = make_events(W, 300)
    src = RangeSource(events)
    pull(src, store, landing, readers=Readers(1))
    assert split_of(store) is None and src.peak == 1 and src.rereads() == 0
    assert {w for w, _ in src.requests} == {W}

    other = SqliteCheckpointStore(tmp_path / "o.db")
    plain = FakeSource(events)  # no range_step: the API takes the window only as a whole
    pull(plain, other, LocalLandingStore(tmp_path / "o"), readers=Readers(8))
    cp = other.get("s", "pull", rfc3339(W.start))
    assert cp is not None and cp.is_complete and "split" not in cp.stats and len(plain.calls) == 31


def test_a_pass_that_splits_and_a_later_quiet_pass_each_show_their_own_split(store, landing):
    events = make_events(W, 400)
    src = RangeSource(events)
    pull(src, store, landing, readers=Readers(4))
    assert split_of(store) is not None
    src.events = events[:5]  # the API now holds few events: one page, no split
    pull(src, store, landing, readers=Readers(4))
    assert split_of(store) is None


@pytest.mark.parametrize("crash_at", [3, 4, 5, 6, 9, 14, 21, 30, 47, 60])
def test_a_crash_at_any_commit_of_a_split_pass_loses_and_duplicates_nothing(tmp_path, crash_at):
    """Journal commits of several sub-ranges and the lander's commits interleave by timing: whatever the
    crash leaves, the next run lands the pending reads, resumes every sub-range from its cursor, and asks
    again for at most the requests that were in flight (one per reader)."""
    events = make_events(W, 400)
    store = SqliteCheckpointStore(tmp_path / "c.db")
    landing = LocalLandingStore(tmp_path / "landing")
    src = RangeSource(events, latency=0.002)
    clock = Clock()
    with pytest.raises(Crash):
        pull(src, CrashingStore(store, crash_at), landing, owner="dead", clock=clock, lease_ttl=30,
             readers=Readers(4))
    before = store.get("s", "pull", rfc3339(W.start))
    assert before is not None and before.lease_owner == "dead"
    asked = len(src.requests)
    clock.t += 31
    res = pull(src, store, landing, owner="next", clock=clock, readers=Readers(4))
    ids = landed_ids(landing, store)
    assert sorted(ids) == expected_ids(events) and len(ids) == len(set(ids))
    assert res.complete and res.checkpoint.journaled == 0
    # Resumed, not restarted: every sub-range the dead run had begun goes on from its own cursor.
    if subranges.load(before.stats):
        resumed = {(s.window, s.cursor) for s in subranges.load(before.stats) or [] if s.cursor and not s.fetched}
        assert resumed <= set(src.requests[asked:])
        assert (W, None) not in src.requests[asked:]  # the window was not read from its first page again
    assert src.rereads() <= 4


def test_a_spent_budget_mid_split_resumes_every_sub_range_where_it_stopped(store, landing):
    events = make_events(W, 500)
    src = RangeSource(events, latency=0.003)
    attempts = 0
    while True:
        attempts += 1
        try:
            res = pull(src, store, landing, readers=Readers(4), time_budget=0.05)
            break
        except BudgetExhausted as e:
            assert e.progress
            assert attempts < 100
    assert attempts > 2 and res.complete
    ids = landed_ids(landing, store)
    assert sorted(ids) == expected_ids(events) and len(ids) == len(set(ids))
    assert src.rereads() == 0  # a budget stops between pages: nothing is asked twice
    assert split_of(store) is not None


def test_a_rejected_token_restarts_only_its_sub_range(store, landing):
    events = make_events(W, 400)
    src = RangeSource(events)
    rejected: list[tuple[Window, str | None]] = []

    def reject_once(cursor: str | None, call: int) -> None:
        # The first sub-range (not the first page of the window) to ask for its third page is refused once.
        if cursor is not None and cursor.endswith(":20") and not rejected and src.requests[-1][0] != W:
            rejected.append(src.requests[-1])
            raise TokenRejected("Invalid pageToken")

    src.fault = reject_once
    res = pull(src, store, landing, readers=Readers(4))
    assert rejected and res.token_restarts == 1 and res.checkpoint.stats["token_restarts"] == 1
    sub_start = rejected[0][0]
    assert src.requests.count((sub_start, None)) == 2  # that sub-range started again from its first page
    assert src.requests.count((W, None)) == 1  # the window did not: only the sub-range
    ids = landed_ids(landing, store)
    assert sorted(ids) == expected_ids(events) and len(ids) == len(set(ids))


class BadOnce(RangeSource):
    """Serves a page that fails validation for one sub-range's second page, until told otherwise."""

    def __init__(self, events: list[Any]) -> None:
        super().__init__(events)
        self.bad_range: dt.datetime | None = None
        self.broken = True

    def fetch_page(self, window: Window, cursor: str | None, deadline: float | None = None) -> Page:
        page = super().fetch_page(window, cursor, deadline)
        if self.broken and cursor == "0:10" and window.start != W.start and self.bad_range in (None, window.start):
            self.bad_range = window.start
            raise BadPage("an item has no id", body=page.body, next_cursor=page.next_cursor)
        return page


def test_a_bad_page_in_a_sub_range_fails_the_window_without_moving_that_sub_range_and_a_skip_moves_only_it(
        store, landing):
    events = make_events(W, 400)
    src = BadOnce(events)
    with pytest.raises(PullFailed, match=r"sub-range .* page 2: an item has no id"):
        pull(src, store, landing, readers=Readers(4))
    cp = store.get("s", "pull", rfc3339(W.start))
    assert cp is not None and cp.status == "failed" and not cp.is_complete
    subs = subranges.load(cp.stats)
    assert subs is not None
    bad = cp.stats["bad_page"]
    i = bad["subrange"]
    assert subs[i].start == src.bad_range and subs[i].cursor == "0:10" and not subs[i].fetched
    # Still stopped at it, though the other sub-ranges read on (the window's page count moved past it):
    # `logpull skip-page` may skip it.
    assert skips.stands_at(cp) and bad["page"] != cp.pages_read + 1
    # The operator skips it: the sub-range reads on from the page after it; the window completes.
    held = acquire(store, "s", "pull", W, owner="ops", lease_ttl=60, lease_wait=0)
    skipped = skips.skip(held, reason="test", by="ops", now=time.time())
    moved = subranges.load(skipped.stats)
    assert moved is not None and moved[i].cursor == "0:20"
    assert [s for j, s in enumerate(moved) if j != i] == [s for j, s in enumerate(subs) if j != i]
    store.release(skipped, now=time.time())
    res = pull(src, store, landing, readers=Readers(4))
    assert res.complete
    # Exactly the ten events of the skipped page are missing (their second sub-range page), no others.
    ids = landed_ids(landing, store)
    assert len(ids) == len(set(ids)) and len(set(expected_ids(events)) - set(ids)) == 10


def test_a_sub_range_whose_api_repeats_a_token_fails_as_looping(store, landing):
    events = make_events(W, 400)

    class Looping(RangeSource):
        def fetch_page(self, window: Window, cursor: str | None, deadline: float | None = None) -> Page:
            page = super().fetch_page(window, cursor, deadline)
            if window.start != W.start and cursor == "0:20":
                return dataclasses.replace(page, next_cursor="0:10")  # back to an earlier page
            return page

    with pytest.raises(PullFailed, match="looping"):
        pull(Looping(events), store, landing, readers=Readers(4))
