"""The CheckpointStore contract (``logpull_dagster/checkpoints/__init__.py``), for every backend.

The implementation comes from the fixture ``checkpoint_backend``: a callable that opens one more
store instance on the test's own backing storage (the same file, table or database each time), so
that "another run" and "after a restart" are real second instances, not the same object.

Times are plain numbers (``now=100``): a store compares them with each other, never with the clock.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator

import pytest

from logpull_dagster.checkpoints import Checkpoint, CheckpointStore, LeaseHeld, LeaseLost
from logpull_dagster_tests.contracts.opening import closing_all

OpenStore = Callable[[], CheckpointStore]

S = "s"
START, END = "2026-11-26T10:00:00Z", "2026-11-26T11:00:00Z"
NEXT_START, NEXT_END = END, "2026-11-26T12:00:00Z"


@pytest.fixture
def open_checkpoints(checkpoint_backend: OpenStore) -> Iterator[OpenStore]:
    """``checkpoint_backend``, with every store it opened closed after the test."""
    yield from closing_all(checkpoint_backend)


@pytest.fixture
def checkpoints(open_checkpoints: OpenStore) -> CheckpointStore:
    return open_checkpoints()


def digest(c: str) -> bytes:
    return c.encode() * 16  # 16 bytes, the size of pull.id_digest


def test_acquire_commit_release_roundtrip(checkpoints: CheckpointStore) -> None:
    store = checkpoints
    cp = store.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)
    assert (cp.epoch, cp.attempts, cp.status, cp.lease_expires) == (1, 1, "running", 110)
    assert (cp.window_end, cp.lease_owner, cp.cursor, cp.page_seq) == (END, "a", None, 0)
    assert store.get(S, "pull", START) == cp  # acquire returns the row as now held
    cp = store.commit(dataclasses.replace(cp, cursor="tok", page_seq=3, stats={"x": [1]}), ttl=10, now=105)
    assert cp.lease_expires == 115
    got = store.get(S, "pull", START)
    assert got == cp
    done = store.release(dataclasses.replace(cp, status="complete", cursor=None), now=106)
    assert store.get(S, "pull", START) == done and done.lease_owner is None
    assert [c.window_start for c in store.list(S, "pull")] == [START]
    assert store.get(S, "deliver", START) is None  # stages are separate rows


def test_every_progress_field_a_commit_carries_comes_back(checkpoints: CheckpointStore) -> None:
    cp = checkpoints.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)
    written = dataclasses.replace(cp, cursor="c/2", page_seq=4, pages_read=5, reads=6, journaled=1, events=70,
                                  passes=2, last_error="HTTP 503 (retried)", status="failed")
    assert checkpoints.commit(written, ttl=10, now=101) == checkpoints.get(S, "pull", START)
    got = checkpoints.get(S, "pull", START)
    assert got is not None
    assert (got.cursor, got.page_seq, got.pages_read, got.reads, got.journaled, got.events, got.passes,
            got.last_error, got.status, got.heartbeat) == ("c/2", 4, 5, 6, 1, 70, 2, "HTTP 503 (retried)", "failed",
                                                          101)


def test_a_live_lease_is_exclusive_and_a_lapsed_one_is_taken_over_with_a_new_epoch(
        checkpoints: CheckpointStore) -> None:
    store = checkpoints
    a = store.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)
    with pytest.raises(LeaseHeld, match="held by run a") as held:
        store.acquire(S, "pull", START, END, owner="b", ttl=10, now=109)
    assert (held.value.owner, held.value.expires) == ("a", 110)  # who to wait for, and until when
    assert store.get(S, "pull", START) == a  # the refused acquire changed nothing, not even attempts
    again = store.acquire(S, "pull", START, END, owner="a", ttl=10, now=109)  # the holder's own retry
    assert again.epoch == 2
    b = store.acquire(S, "pull", START, END, owner="b", ttl=10, now=120)
    assert b.epoch == 3 and b.attempts == 3 and b.lease_owner == "b"
    for stale in (a, again):
        with pytest.raises(LeaseLost):
            store.commit(dataclasses.replace(stale, cursor="zombie"), ttl=10, now=121)
        with pytest.raises(LeaseLost):
            store.release(stale, now=121)
    assert store.get(S, "pull", START).cursor is None


def test_only_one_of_many_concurrent_acquirers_wins(open_checkpoints: OpenStore) -> None:
    open_checkpoints()  # the backing storage exists before they race
    stores = [open_checkpoints() for _ in range(8)]  # each its own instance, as another process would have
    wins: list[int] = []
    losses: list[int] = []
    go = threading.Barrier(len(stores))

    def contend(i: int) -> None:
        go.wait()
        try:
            stores[i].acquire(S, "pull", START, END, owner=f"run{i}", ttl=60, now=100)
            wins.append(i)
        except LeaseHeld:
            losses.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(len(stores))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(wins) == 1 and len(losses) == 7
    row = stores[0].get(S, "pull", START)
    assert row is not None and (row.lease_owner, row.epoch, row.attempts) == (f"run{wins[0]}", 1, 1)


def test_acquiring_keeps_a_complete_window_complete_and_resumes_a_failed_one(checkpoints: CheckpointStore) -> None:
    """A re-read (lookback) must not make a window read once look unread; a retry of a failed one runs."""
    for start, end, status in ((START, END, "complete"), (NEXT_START, NEXT_END, "failed")):
        cp = checkpoints.acquire(S, "pull", start, end, owner="a", ttl=10, now=100)
        checkpoints.release(dataclasses.replace(cp, status=status), now=101)
    assert checkpoints.acquire(S, "pull", START, END, owner="b", ttl=10, now=102).status == "complete"
    assert checkpoints.acquire(S, "pull", NEXT_START, NEXT_END, owner="b", ttl=10, now=102).status == "running"


def test_a_commit_renews_the_lease(checkpoints: CheckpointStore) -> None:
    cp = checkpoints.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)
    checkpoints.commit(cp, ttl=10, now=108)
    with pytest.raises(LeaseHeld) as held:  # past the first lease's expiry, within the renewed one
        checkpoints.acquire(S, "pull", START, END, owner="b", ttl=10, now=112)
    assert held.value.expires == 118
    assert checkpoints.acquire(S, "pull", START, END, owner="b", ttl=10, now=118.5).lease_owner == "b"


def _fenced_writes(store: CheckpointStore, held: Checkpoint, stale: Checkpoint) -> dict[str, Callable[[], object]]:
    """Every write that must be refused: an old epoch, the current epoch under another owner, a released lease."""
    intruder = dataclasses.replace(held, lease_owner="intruder")
    return {
        "commit with an old epoch": lambda: store.commit(dataclasses.replace(stale, cursor="zombie", page_seq=9),
                                                         ttl=10, now=121, landed_ids=[(9, digest("z"))]),
        "release with an old epoch": lambda: store.release(dataclasses.replace(stale, status="failed"), now=121),
        "commit by another owner": lambda: store.commit(dataclasses.replace(intruder, page_seq=9), ttl=10, now=121,
                                                        landed_ids=[(9, digest("z"))]),
        "release by another owner": lambda: store.release(dataclasses.replace(intruder, status="failed"), now=121),
    }


@pytest.mark.parametrize("write", ["commit with an old epoch", "release with an old epoch", "commit by another owner",
                                   "release by another owner"])
def test_a_fenced_off_write_raises_lease_lost_and_leaves_the_row_as_it_was(checkpoints: CheckpointStore,
                                                                           write: str) -> None:
    store = checkpoints
    stale = store.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)
    stale = store.commit(dataclasses.replace(stale, page_seq=1), ttl=10, now=101, landed_ids=[(5, digest("x"))])
    held = store.acquire(S, "pull", START, END, owner="b", ttl=10, now=120)  # a stalled past its lease
    held = store.commit(dataclasses.replace(held, cursor="b's", page_seq=2), ttl=10, now=120.5,
                        landed_ids=[(6, digest("y"))])
    before = store.get(S, "pull", START)
    with pytest.raises(LeaseLost):
        _fenced_writes(store, held, stale)[write]()
    assert store.get(S, "pull", START) == before
    assert store.count_ids(S, START) == 2 and store.known_ids(S, START, [(9, digest("z"))]) == set()
    assert store.commit(dataclasses.replace(held, page_seq=3), ttl=10, now=122).page_seq == 3  # the holder goes on


def test_a_released_lease_is_no_lease(checkpoints: CheckpointStore) -> None:
    cp = checkpoints.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)
    done = checkpoints.release(dataclasses.replace(cp, status="complete"), now=101)
    with pytest.raises(LeaseLost):  # the run's copy from before its release
        checkpoints.commit(dataclasses.replace(cp, page_seq=7), ttl=10, now=102)
    assert checkpoints.get(S, "pull", START) == done


def test_a_commit_is_durable_and_seen_by_another_store_on_the_same_storage(open_checkpoints: OpenStore) -> None:
    first = open_checkpoints()
    cp = first.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)
    cp = first.commit(dataclasses.replace(cp, cursor="tok", page_seq=1, events=2), ttl=10, now=101,
                      landed_ids=[(5, digest("x")), (6, digest("y"))])
    other = open_checkpoints()  # another process, still running beside the first
    assert other.get(S, "pull", START) == cp and other.count_ids(S, START) == 2
    first.close()
    reopened = open_checkpoints()  # after a restart
    assert reopened.get(S, "pull", START) == cp
    assert reopened.known_ids(S, START, [(5, digest("x")), (6, digest("y"))]) == {digest("x"), digest("y")}
    with pytest.raises(LeaseHeld):  # the lease is part of what was made durable
        reopened.acquire(S, "pull", START, END, owner="b", ttl=10, now=105)
    assert reopened.commit(dataclasses.replace(cp, page_seq=2), ttl=10, now=106).page_seq == 2  # its fence too
    assert other.get(S, "pull", START).page_seq == 2


def test_landed_ids_are_recorded_with_the_checkpoint_and_only_then(checkpoints: CheckpointStore) -> None:
    store = checkpoints
    x, y, z = (c * 16 for c in (b"x", b"y", b"z"))
    a = store.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)
    a = store.commit(dataclasses.replace(a, page_seq=1), ttl=10, now=101, landed_ids=[(5, x), (7, y)])
    assert store.known_ids(S, START, [(5, x), (6, z)]) == {x}
    assert store.known_ids(S, START, [(5, x), (7, y)]) == {x, y} and store.known_ids(S, START, []) == set()
    assert store.known_ids(S, NEXT_START, [(5, x)]) == set()  # per window
    assert store.known_ids("other", START, [(5, x)]) == set() and store.count_ids("other", START) == 0  # per source
    store.acquire(S, "pull", START, END, owner="b", ttl=10, now=200)  # a's lease lapsed: taken over
    with pytest.raises(LeaseLost):
        store.commit(dataclasses.replace(a, page_seq=2), ttl=10, now=201, landed_ids=[(6, z)])
    assert store.known_ids(S, START, [(6, z)]) == set()  # the fenced-off commit recorded nothing
    many = [(t, t.to_bytes(16, "big")) for t in range(1200, 0, -1)]  # newest first, as the API sends them
    b = store.get(S, "pull", START)
    store.commit(b, ttl=10, now=202, landed_ids=many)
    assert store.known_ids(S, START, many) == {i for _, i in many}
    assert store.count_ids(S, START) == 1202


def test_an_id_is_known_only_at_its_own_time_and_counted_once(checkpoints: CheckpointStore) -> None:
    """Ids are looked up by time range (the module docstring): the same id recorded again, by a page
    read twice, is one id."""
    cp = checkpoints.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)
    cp = checkpoints.commit(cp, ttl=10, now=101, landed_ids=[(5, digest("x")), (5, digest("w"))])
    checkpoints.commit(cp, ttl=10, now=102, landed_ids=[(5, digest("x"))])
    assert checkpoints.count_ids(S, START) == 2
    assert checkpoints.known_ids(S, START, [(5, digest("x")), (5, digest("w"))]) == {digest("x"), digest("w")}


def test_ids_of_a_page_landed_but_never_committed_are_unknown_after_a_crash(open_checkpoints: OpenStore) -> None:
    """Page 1 committed, page 2 landed, then the run died before page 2's commit: page 2 is read again."""
    page1 = [(t, t.to_bytes(16, "big")) for t in range(20, 10, -1)]
    page2 = [(t, t.to_bytes(16, "big")) for t in range(10, 0, -1)]
    dead = open_checkpoints()
    cp = dead.acquire(S, "pull", START, END, owner="dead", ttl=10, now=100)
    dead.commit(dataclasses.replace(cp, page_seq=1, events=len(page1), cursor="p2"), ttl=10, now=101,
                landed_ids=page1)
    # page 2 went to the landing store here; the process was killed before it committed (no close either)
    after = open_checkpoints()
    cp = after.get(S, "pull", START)
    assert cp is not None and (cp.page_seq, cp.events, cp.cursor) == (1, len(page1), "p2")
    assert after.known_ids(S, START, page2) == set() and after.count_ids(S, START) == len(page1)
    assert after.known_ids(S, START, page1 + page2) == {i for _, i in page1}
    retry = after.acquire(S, "pull", START, END, owner="next", ttl=10, now=112)
    after.commit(dataclasses.replace(retry, page_seq=2), ttl=10, now=113, landed_ids=page2)
    assert after.count_ids(S, START) == len(page1) + len(page2)


def test_forget_ids_drops_every_id_of_the_window_and_only_for_the_lease_holder(open_checkpoints: OpenStore) -> None:
    """``logpull recover``: the ids of lost landed pages must be forgotten so that their events land again."""
    store = open_checkpoints()
    many = [(t, t.to_bytes(16, "big")) for t in range(700, 0, -1)]
    cp = store.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)
    cp = store.commit(cp, ttl=10, now=101, landed_ids=many[:350])
    cp = store.commit(cp, ttl=10, now=102, landed_ids=many[350:])
    other = store.acquire(S, "pull", NEXT_START, NEXT_END, owner="a", ttl=10, now=100)
    store.commit(other, ttl=10, now=101, landed_ids=many[:5])
    store.acquire(S, "pull", START, END, owner="b", ttl=10, now=200)  # a's lease lapsed: taken over
    with pytest.raises(LeaseLost):
        store.forget_ids(cp, now=201)
    assert store.count_ids(S, START) == 700  # the fenced-off call dropped nothing
    held = store.get(S, "pull", START)
    store.forget_ids(held, now=202)
    reopened = open_checkpoints()
    assert reopened.count_ids(S, START) == 0 and reopened.known_ids(S, START, many) == set()
    assert reopened.count_ids(S, NEXT_START) == 5  # other windows keep theirs
    held = reopened.commit(held, ttl=10, now=203, landed_ids=many[:3])  # and the window records ids again
    assert reopened.known_ids(S, START, many) == {i for _, i in many[:3]} and reopened.count_ids(S, START) == 3
    assert reopened.get(S, "pull", START).lease_owner == "b"  # forgetting is not releasing


def test_list_returns_the_rows_of_one_source_and_stage(checkpoints: CheckpointStore) -> None:
    rows = {}
    for source, stage, start, end in ((S, "pull", START, END), (S, "pull", NEXT_START, NEXT_END),
                                      (S, "deliver", START, END), ("other", "pull", START, END)):
        cp = checkpoints.acquire(source, stage, start, end, owner="a", ttl=10, now=100)
        rows[source, stage, start] = checkpoints.release(dataclasses.replace(cp, page_seq=len(rows)), now=101)
    # Callers key the list by window (nothing relies on its order)
    assert sorted(checkpoints.list(S, "pull"), key=lambda c: c.window_start) == [
        rows[S, "pull", START], rows[S, "pull", NEXT_START]]
    assert checkpoints.list(S, "deliver") == [rows[S, "deliver", START]]
    assert checkpoints.list("other", "pull") == [rows["other", "pull", START]]
    assert checkpoints.list("other", "deliver") == [] and checkpoints.list("nobody", "pull") == []


# Event names, which the API's users choose, end up in stats as keys: lone surrogates included (a Google
# Workspace page can carry one, and json_codec reads it exactly), so every store must keep them.
ODD_STATS = {
    "names": {"login_success": 3, "Anmeldung_fehlgeschlagen_ü": 1, "ログイン": 2, "🔐 sign-in": 1,
              'quote " and \\ backslash': 1, "tab\tnew\nline\rcr": 1, "nul\x00byte": 1, "\x01\x1f\x7f": 1,
              "": 1, " ": 1, "\u2028\u2029\ufeff": 1, "\U0010ffff": 1, "x" * 5000: 1,
              "lone \ud800 surrogate": 1, "\udfff": 1},
    "big": 2**63 + 1,
    "negative": -(2**63),
    "float": 0.1,
    "flags": [True, False, None],
    "nested": {"a": {"b": {"c": []}}, "empty": {}},
    "first_event_time": "2026-11-26T10:00:00.000Z",
}


def test_stats_round_trip_exactly(open_checkpoints: OpenStore) -> None:
    store = open_checkpoints()
    cp = store.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)
    store.commit(dataclasses.replace(cp, stats=ODD_STATS), ttl=10, now=101)
    assert store.get(S, "pull", START).stats == ODD_STATS
    assert open_checkpoints().get(S, "pull", START).stats == ODD_STATS  # as written, not as cached
    done = store.release(dataclasses.replace(store.get(S, "pull", START), stats={}), now=102)
    assert store.get(S, "pull", START).stats == {} == done.stats


@pytest.mark.parametrize(("cursor", "journaled", "status", "reading", "complete", "read_once"), [
    (None, 0, "complete", False, True, True),
    ("tok", 0, "complete", True, False, True),  # a re-read under way
    (None, 2, "complete", True, False, True),  # the pass's last page journaled, not landed yet
    ("tok", 0, "running", True, False, False),
    (None, 0, "running", False, False, False),
    (None, 1, "failed", True, False, False),
])
def test_reading_complete_and_read_once_come_back_from_the_store(
        checkpoints: CheckpointStore, cursor: str | None, journaled: int, status: str, reading: bool,
        complete: bool, read_once: bool) -> None:
    cp = checkpoints.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)
    checkpoints.commit(dataclasses.replace(cp, cursor=cursor, journaled=journaled, reads=journaled, status=status),
                       ttl=10, now=101)
    got = checkpoints.get(S, "pull", START)
    assert got is not None and (got.reading, got.is_complete, got.read_once) == (reading, complete, read_once)


def test_each_stage_reads_its_own_progress(checkpoints: CheckpointStore) -> None:
    pulled = checkpoints.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)
    pulled = checkpoints.commit(dataclasses.replace(pulled, page_seq=3, events=30), ttl=10, now=101)
    sent = checkpoints.acquire(S, "deliver", START, END, owner="d", ttl=10, now=100)  # its own lease
    sent = checkpoints.commit(dataclasses.replace(sent, page_seq=2, events=20), ttl=10, now=101)
    pull_row, deliver_row = checkpoints.get(S, "pull", START), checkpoints.get(S, "deliver", START)
    assert (pull_row.landed_pages, pull_row.landed_events) == (3, 30)
    assert (deliver_row.delivered_pages, deliver_row.delivered_events) == (2, 20)
    with pytest.raises(ValueError, match="a pull checkpoint has no deliver progress"):
        _ = pull_row.delivered_pages
    with pytest.raises(ValueError, match="a deliver checkpoint has no pull progress"):
        _ = deliver_row.landed_events


# ---- reserve: the shared rate budget (rate.py) ----------------------------------------------------
# Intervals and times are exact binary fractions, so every backend (REAL, double precision, DynamoDB's
# decimal numbers) gives back exactly the slot the arithmetic says.

def test_reserve_hands_out_now_first_then_slots_one_interval_apart(checkpoints: CheckpointStore) -> None:
    assert checkpoints.reserve("acct", interval=0.25, now=100) == 100  # an account never seen: now
    assert [checkpoints.reserve("acct", interval=0.25, now=100) for _ in range(3)] == [100.25, 100.5, 100.75]
    # a caller whose clock has moved on, but not past the next slot, still gets the next slot
    assert checkpoints.reserve("acct", interval=0.25, now=100.9) == 101


def test_reserve_gives_now_once_now_is_past_the_next_slot(checkpoints: CheckpointStore) -> None:
    checkpoints.reserve("acct", interval=0.5, now=100)
    assert checkpoints.reserve("acct", interval=0.5, now=200) == 200  # the budget does not bank idle time
    assert checkpoints.reserve("acct", interval=0.5, now=150) == 200.5  # a machine whose clock is behind


def test_reserve_keeps_each_account_apart(checkpoints: CheckpointStore) -> None:
    assert checkpoints.reserve("okta:prod", interval=1, now=100) == 100
    assert checkpoints.reserve("github", interval=1, now=100) == 100
    assert checkpoints.reserve("okta:prod", interval=1, now=100) == 101
    assert checkpoints.reserve("github", interval=2, now=100) == 102  # each account's own interval
    assert checkpoints.reserve("okta:prod", interval=1, now=100) == 102


def test_reserve_concurrently_from_two_stores_and_many_threads_gives_distinct_slots_an_interval_apart(
        open_checkpoints: OpenStore) -> None:
    open_checkpoints()  # the backing storage exists before they race
    stores = [open_checkpoints(), open_checkpoints()]  # two processes, each with several threads
    per_thread, threads_per_store, interval = 8, 4, 0.25
    drawn: list[list[float]] = [[] for _ in range(len(stores) * threads_per_store)]
    go = threading.Barrier(len(drawn))

    def draw(i: int) -> None:
        store = stores[i % len(stores)]
        go.wait()
        drawn[i].extend(store.reserve("acct", interval=interval, now=100) for _ in range(per_thread))

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(len(drawn))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(mine == sorted(mine) and len(mine) == per_thread for mine in drawn)  # each caller moves forward
    n = len(drawn) * per_thread
    slots = sorted(slot for mine in drawn for slot in mine)
    assert slots == [100 + interval * k for k in range(n)]  # none lost, none shared, none closer
    assert stores[0].reserve("acct", interval=interval, now=100) == 100 + interval * n


def test_reserve_survives_reopening_the_store(open_checkpoints: OpenStore) -> None:
    first = open_checkpoints()
    assert [first.reserve("acct", interval=0.5, now=100) for _ in range(2)] == [100, 100.5]
    other = open_checkpoints()  # another process, beside the first
    assert other.reserve("acct", interval=0.5, now=100) == 101
    first.close()
    reopened = open_checkpoints()  # after a restart
    assert reopened.reserve("acct", interval=0.5, now=100) == 101.5
    cp = reopened.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)  # and the windows are untouched
    assert cp.epoch == 1 and reopened.list(S, "pull") == [cp]


# Exported by ``import *`` from the test_contract_*.py module: the tests and fixtures, nothing else,
# computed so that a test added here needs no second edit.
__all__ = [*sorted(n for n in list(globals()) if n.startswith("test_")), "checkpoints", "open_checkpoints"]
