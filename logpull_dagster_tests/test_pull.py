"""The pull loop against an in-memory source: the invariant, without Dagster or HTTP."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

import orjson
import pytest

from logpull_dagster.checkpoints import LeaseHeld, LeaseLost
from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.pull import BudgetExhausted, PullFailed, pull_window
from logpull_dagster.sources import BadPage, Event
from logpull_dagster.windows import rfc3339

from .fakes import FakeSource, W, make_events


class Crash(BaseException):
    """Stands for SIGKILL: nothing after it runs in the dead process."""


class CrashingStore:
    """Proxies a store; the ``crash_at``-th commit dies, and so does every later call (the process is gone)."""

    def __init__(self, inner: SqliteCheckpointStore, crash_at: int) -> None:
        self.inner, self.crash_at, self.commits, self.dead = inner, crash_at, 0, False

    def __getattr__(self, name: str) -> Any:
        if self.dead:
            raise Crash()
        return getattr(self.inner, name)

    def commit(self, cp, **kw):  # type: ignore[no-untyped-def]
        self.commits += 1
        if self.dead or self.commits == self.crash_at:
            self.dead = True
            raise Crash()
        return self.inner.commit(cp, **kw)


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def landed_ids(landing: LocalLandingStore, store: SqliteCheckpointStore, source: str = "s") -> list[str]:
    cp = store.get(source, "pull", rfc3339(W.start))
    assert cp is not None
    return [orjson.loads(line)["id"] for p in landing.pages(source, W, cp.page_seq) for line in landing.read_lines(p)]


def expected_ids(events: list[Event]) -> list[str]:
    return sorted(e.id for e in events if W.contains(e.time))


def pull(src: FakeSource, store: Any, landing: LocalLandingStore, owner: str = "run-1", **kw: Any):  # type: ignore[no-untyped-def]
    kw.setdefault("lease_ttl", 60.0)
    return pull_window(src, W, source_name="s", checkpoints=store, landing=landing, owner=owner, **kw)


def test_a_window_lands_every_event_inside_it_once(store, landing):
    events = make_events(W, 95)
    res = pull(FakeSource(events), store, landing)
    ids = landed_ids(landing, store)
    assert sorted(ids) == expected_ids(events) and len(ids) == len(set(ids)) == 96
    assert "at-start" in ids and "at-end" not in ids  # the end boundary belongs to the next window
    assert res.complete and res.outside_window_dropped == 1
    cp = res.checkpoint
    assert (cp.status, cp.cursor, cp.passes, cp.events, cp.lease_owner) == ("complete", None, 1, 96, None)
    assert sum(cp.stats["names"].values()) == 96


@pytest.mark.parametrize("crash_at", [1, 2, 3, 4, 5, 9, 10, 17, 18, 19, 20])
def test_a_crash_at_any_commit_loses_and_duplicates_nothing_and_rereads_at_most_one_page(store, landing, crash_at):
    """Commits alternate between journaling a read (cursor moves on) and landing it (ids, page seq)."""
    events = make_events(W, 95)
    src = FakeSource(events)
    clock = Clock()
    with pytest.raises(Crash):
        pull(src, CrashingStore(store, crash_at), landing, owner="dead", clock=clock, lease_ttl=30)
    crashed_calls = list(src.calls)
    before = store.get("s", "pull", rfc3339(W.start))
    assert before is not None and before.lease_owner == "dead"  # the dead run never released
    clock.t += 31  # its lease lapses
    res = pull(src, store, landing, owner="next", clock=clock)
    ids = landed_ids(landing, store)
    assert sorted(ids) == expected_ids(events) and len(ids) == len(set(ids))
    # The new run lands the journaled reads without asking the API, then resumes from the committed token.
    if before.cursor is None and before.journaled:  # the journal held the last page: nothing left to read
        assert len(src.calls) == len(crashed_calls) and res.complete
    else:
        assert src.calls[len(crashed_calls)] == before.cursor
    assert res.resumed_from_page == (before.pages_read + 1 if before.cursor else None)
    reread = sum(n - 1 for n in Counter(src.calls).values())
    assert reread <= 1
    assert res.checkpoint.journaled == 0 and not list(landing.root.rglob("read-*"))


@pytest.mark.parametrize("cursor_in", ["body", "header"])
def test_a_crash_after_journaling_lands_the_page_from_the_journal_without_reading_it_again(store, landing,
                                                                                          cursor_in):
    """Also for an API whose next cursor is only in a response header: the journal keeps it."""
    events = make_events(W, 95)
    src = FakeSource(events, cursor_in=cursor_in)
    clock = Clock()
    # Journal and landing commits interleave by timing: find a crash that left a read pending.
    for crash_at in (4, 5, 6):
        store_dir = landing.root.parent / f"c{crash_at}"
        st = SqliteCheckpointStore(store_dir / "c.db")
        land = LocalLandingStore(store_dir / "landing")
        src = FakeSource(events, cursor_in=cursor_in)
        with pytest.raises(Crash):
            pull(src, CrashingStore(st, crash_at), land, owner="dead", clock=clock, lease_ttl=30)
        before = st.get("s", "pull", rfc3339(W.start))
        assert before is not None
        if before.journaled:
            break
    else:
        pytest.fail("no crash left a journaled read pending")
    assert list(land.root.rglob("read-*"))  # the journal holds the page's response, untouched
    calls = len(src.calls)
    clock.t += 31
    res = pull(src, st, land, owner="next", clock=clock)
    assert src.calls[calls] == before.cursor  # the pending read was not asked for again
    # Only the read in flight at the crash (after the journaled one) can have been asked for twice.
    assert {c for c, n in Counter(src.calls).items() if n > 1} <= {before.cursor}
    assert sorted(landed_ids(land, st)) == expected_ids(events) and res.checkpoint.journaled == 0


def test_budget_stops_between_pages_and_the_retry_resumes_from_the_token(store, landing):
    events = make_events(W, 95)
    src = FakeSource(events)
    ticks = iter(range(10_000))
    attempts = 0
    while True:
        attempts += 1
        try:
            res = pull(src, store, landing, time_budget=2.5, monotonic=lambda: float(next(ticks)))
            break
        except BudgetExhausted as e:
            assert e.result.checkpoint.lease_owner is None
            assert "the retry resumes from there" in str(e)
    assert attempts > 2 and res.complete
    assert len(src.calls) == len(set(src.calls)) == 10  # every page read exactly once
    assert sorted(landed_ids(landing, store)) == expected_ids(events)


def test_a_rejected_token_restarts_the_window_and_dedupe_keeps_it_exact(store, landing):
    events = make_events(W, 95)
    src = FakeSource(events)

    def expire_tokens(cursor: str | None, call_no: int) -> None:
        if call_no == 4:
            src.token_epoch = 1  # every token handed out so far is now rejected

    src.fault = expire_tokens
    res = pull(src, store, landing)
    assert res.token_restarts == 1 and res.duplicates_dropped == 29  # 3 pages read twice, less at-end
    assert src.calls[4] is None  # restarted from page one
    ids = landed_ids(landing, store)
    assert sorted(ids) == expected_ids(events) and len(ids) == len(set(ids))
    assert res.checkpoint.stats["token_restarts"] == 1


@pytest.mark.parametrize("with_items", [True, False], ids=["with items", "no items"])
def test_a_token_the_api_repeats_fails_the_window_at_once_without_advancing(store, landing, with_items):
    events = make_events(W, 95)
    src = FakeSource(events)
    real = src.fetch_page

    def stuck(window, cursor, deadline=None):  # type: ignore[no-untyped-def]
        page = real(window, cursor)
        if len(src.calls) == 3:  # page 3 answers with the token it was sent
            return dataclasses.replace(page, items=page.items if with_items else [], next_cursor=cursor)
        return page

    src.fetch_page = stuck  # type: ignore[method-assign]
    with pytest.raises(PullFailed, match=r"page 3: the API's next page token is the one it gave for page 3") as e:
        pull(src, store, landing)
    assert e.value.permanent and len(src.calls) == 3  # not read again and again
    cp = store.get("s", "pull", rfc3339(W.start))
    assert cp is not None and (cp.status, cp.pages_read, cp.page_seq, cp.cursor) == ("failed", 2, 2, "0:20")
    assert "it is looping" in (cp.last_error or "")


def test_a_cycle_of_tokens_is_caught_even_across_budget_retries(store, landing):
    """Page 6 points back at page 3's token: a cycle of 4 pages that one attempt (2 pages) cannot see."""
    events = make_events(W, 95)
    src = FakeSource(events)
    real = src.fetch_page
    clock = [0.0]

    def looping(window, cursor, deadline=None):  # type: ignore[no-untyped-def]
        clock[0] += 1.0  # each page takes a second of the budget
        page = real(window, cursor)
        return dataclasses.replace(page, next_cursor="0:20") if cursor == "0:50" else page

    src.fetch_page = looping  # type: ignore[method-assign]
    budgets = 0
    with pytest.raises(PullFailed, match=r"page 6: the API's next page token is the one it gave for page 3") as e:
        for _ in range(10):
            try:
                pull(src, store, landing, time_budget=2.0, monotonic=lambda: clock[0])
            except BudgetExhausted as b:
                assert b.progress
                budgets += 1
    assert e.value.permanent and budgets == 2 and len(src.calls) == 6
    cp = store.get("s", "pull", rfc3339(W.start))
    assert "pass_cursors" not in cp.stats  # kept only between the attempts of a budget retry


def test_a_bad_page_lands_nothing_and_the_next_attempt_resumes_at_it(store, landing):
    events = make_events(W, 95)

    def bad_third(cursor: str | None, call_no: int) -> None:
        if call_no == 3:
            raise BadPage("item 4 has no 'id' object")

    src = FakeSource(events, fault=bad_third)
    with pytest.raises(PullFailed, match=r"window \[2026-11-26T10:00:00Z, 2026-11-26T11:00:00Z\) of 's', page 3"):
        pull(src, store, landing)
    assert len(landed_ids(landing, store)) == 19  # two pages, less the end-boundary event
    res = pull(src, store, landing)
    assert res.resumed_from_page == 3 and src.calls[3] == "0:20"
    assert sorted(landed_ids(landing, store)) == expected_ids(events)


def test_a_live_lease_keeps_a_second_run_out(store, landing):
    clock = Clock()
    store.acquire("s", "pull", rfc3339(W.start), rfc3339(W.end), owner="holder", ttl=60, now=clock())
    src = FakeSource(make_events(W, 30))
    with pytest.raises(LeaseHeld, match="held by run holder"):
        pull(src, store, landing, owner="second", clock=clock, lease_wait=5)
    assert src.calls == [] and landing.pages("s", W, 100) == []


def test_a_stalled_run_cannot_write_after_its_window_was_taken_over(store, landing):
    clock = Clock()
    events = make_events(W, 95)
    zombie = store.acquire("s", "pull", rfc3339(W.start), rfc3339(W.end), owner="zombie", ttl=10, now=clock())
    clock.t += 11
    pull(FakeSource(events), store, landing, owner="fresh", clock=clock)
    # The zombie wakes up, lands its stale page 0 and tries to checkpoint.
    stale = orjson.dumps({"id": "stale", "time": "x", "pulled_at": "x", "event": {}})
    landing.put_page("s", W, 0, zombie.epoch, [stale])
    with pytest.raises(LeaseLost):
        store.commit(dataclasses.replace(zombie, events=999), ttl=10, now=clock())
    ids = landed_ids(landing, store)
    assert "stale" not in ids and sorted(ids) == expected_ids(events)


def test_rereading_a_complete_window_lands_only_late_events(store, landing):
    events = make_events(W, 50)
    src = FakeSource(events)
    pull(src, store, landing)
    late = [Event(f"late{i}", W.start.replace(minute=30, second=i), {"late": i}, ("late",)) for i in range(5)]
    src.events = sorted(events + late, key=lambda e: (e.time, e.id), reverse=True)
    res = pull(src, store, landing, owner="run-2")
    assert res.events_landed == 5 and res.duplicates_dropped == 51
    assert res.checkpoint.passes == 2 and res.checkpoint.events == 56
    assert sorted(landed_ids(landing, store)) == expected_ids(events + late)
    again = pull(src, store, landing, owner="run-3")
    assert again.events_landed == 0 and again.pages_landed == 0


def test_a_pending_read_left_by_a_token_restart_is_landed_and_the_pass_restarts_from_page_one(store, landing):
    """A crash right after a rejected token reset the cursor, while the page before it was still landing."""
    events = make_events(W, 95)
    src = FakeSource(events)
    page = src.fetch_page(W, "0:10")  # page 2, read and journaled, not landed
    cp = store.acquire("s", "pull", rfc3339(W.start), rfc3339(W.end), owner="dead", ttl=10, now=0)
    landing.put_read("s", W, 0, cp.epoch, page.body)
    store.commit(dataclasses.replace(cp, cursor=None, pages_read=0, reads=1, journaled=1), ttl=10, now=1)
    src.calls.clear()
    res = pull(src, store, landing, owner="next")
    assert src.calls[0] is None and res.complete  # the pending read landed, then the pass began again
    assert sorted(landed_ids(landing, store)) == expected_ids(events)
    assert res.checkpoint.journaled == 0 and res.checkpoint.reads == 11


def test_a_credential_the_source_fetched_itself_is_masked_in_every_error_text(store, landing):
    """An OAuth access token lives in no environment variable: the source's secrets() names it."""
    fetched = "ya29.fetched-at-run-time-7f3a"

    class TokenSource(FakeSource):
        def secrets(self) -> tuple[str, ...]:
            return (fetched,)

    def fault(cursor: str | None, call: int) -> None:
        if call == 2:
            raise RuntimeError(f"the API echoed our token {fetched} back")

    with pytest.raises(PullFailed) as e:
        pull(TokenSource(make_events(W, 30), fault=fault), store, landing)
    cp = store.get("s", "pull", rfc3339(W.start))
    assert fetched not in str(e.value) and fetched not in (cp.last_error or "")
    assert "the API echoed our token [REDACTED] back" in (cp.last_error or "")
