"""One request budget per API account (``rate_limit``), shared by every run and machine (``rate.py``).

The arithmetic and the gate alone; the HTTP client and the pull loop against the simulator over real
HTTP; then several real ``dagster asset materialize`` processes on one account, where the simulator's
request log (each request's arrival time) must never hold more requests in a second than the budget
allows, and the SIEM must still hold every event exactly once.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import orjson
import pytest

from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.config import load_config
from logpull_dagster.deliver import deliver_window
from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.plugins import open_checkpoints, open_landing, open_sink
from logpull_dagster.pull import BudgetExhausted, pull_window
from logpull_dagster.rate import RateGate, RateLimit, RateWaitPastDeadline, next_slot, parse_rate_limit
from logpull_dagster.simulator import Simulator
from logpull_dagster.sources.google_workspace import GoogleWorkspaceSource
from logpull_dagster.windows import Window, rfc3339

from .cli import materialize_cmd, setup_project, siem_ids, start
from .conftest import TOKEN, hour, key, ts
from .servers import max_in_span

W10 = Window(hour(10), hour(11))


# ---- the arithmetic and the gate, without HTTP ------------------------------------------------------

def test_a_rate_limit_is_an_interval_between_slots():
    assert parse_rate_limit("600/min") == RateLimit(600, 60.0) and parse_rate_limit("600/min").interval == 0.1
    assert parse_rate_limit(" 5 / s ").interval == 0.2 and parse_rate_limit("7200/h").interval == 0.5
    assert str(parse_rate_limit("10/m")) == "10/min" and str(parse_rate_limit("3/hour")) == "3/hour"
    for bad in ("600", "600/day", "ten/min", "1.5/s", "0/s", "", "/min"):
        with pytest.raises(ValueError, match=r"rate_limit: (600|1)/min"):
            parse_rate_limit(bad)


def test_the_next_slot_is_one_interval_on_or_now_whichever_is_later():
    assert next_slot(None, interval=0.5, now=100) == 100
    assert next_slot(100, interval=0.5, now=100) == 100.5
    assert next_slot(100, interval=0.5, now=100.2) == 100.5
    assert next_slot(100, interval=0.5, now=300) == 300  # idle time is not banked as a burst
    assert max_in_span([0, 0.5, 1.0, 1.5], 1.0) == 2 and max_in_span([0, 0.1, 0.2, 5], 1.0) == 3


class FakeTime:
    """A wall clock and a monotonic clock that move only when the gate sleeps."""

    def __init__(self) -> None:
        self.wall, self.mono, self.slept = 1_000_000.0, 50.0, []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.wall += seconds
        self.mono += seconds


def gate(store: SqliteCheckpointStore, clock: FakeTime, limit: str, account: str = "acct") -> RateGate:
    return RateGate(store, account, parse_rate_limit(limit), clock=lambda: clock.wall,
                    monotonic=lambda: clock.mono, sleep=clock.sleep)


def test_a_gate_waits_for_its_slot_and_counts_the_wait(store):
    clock = FakeTime()
    a, b = gate(store, clock, "2/s"), gate(store, clock, "2/s")  # two attempts on one account
    assert a.wait() == 0 and clock.slept == []  # the account's first slot is now
    assert b.wait() == 0.5 and a.wait() == 0.5 and clock.slept == [0.5, 0.5]
    assert (a.waited, b.waited) == (0.5, 0.5)
    clock.wall += 10  # an idle account: the next request goes at once
    assert b.wait() == 0 and b.waited == 0.5
    other = gate(store, clock, "2/s", account="another")
    assert other.wait() == 0  # accounts are apart


def test_a_slot_past_the_deadline_raises_at_once_and_sleeps_nothing(store):
    clock = FakeTime()
    g = gate(store, clock, "1/min")
    g.wait(deadline=clock.mono + 5)
    with pytest.raises(RateWaitPastDeadline, match=r"rate account 'acct' is 60.0s away, past the attempt's time "
                                                   r"budget \(5.0s left\)"):
        g.wait(deadline=clock.mono + 5)
    assert clock.slept == [] and g.waited == 0
    assert g.wait(deadline=clock.mono + 121) == 120  # the refused slot is lost: the account is under-used



def test_a_store_without_a_rate_budget_is_named_with_the_fix():
    class OldStore:  # a third-party store written before CheckpointStore.reserve existed
        pass

    with pytest.raises(TypeError, match=r"OldStore has none: use checkpoints type sqlite, postgres or dynamodb, "
                                        r"or remove rate_limit"):
        RateGate(OldStore(), "acct", parse_rate_limit("1/s"))  # type: ignore[arg-type]


# ---- the HTTP client and the pull loop, over real HTTP ---------------------------------------------------

class CountingStore:
    """A store that counts the slots reserved."""

    def __init__(self, inner: SqliteCheckpointStore) -> None:
        self.inner, self.reserved = inner, 0

    def reserve(self, account: str, *, interval: float, now: float) -> float:
        self.reserved += 1
        return self.inner.reserve(account, interval=interval, now=now)


def gws(sim: Simulator, rate: RateGate | None, page_size: int = 1000) -> GoogleWorkspaceSource:
    return GoogleWorkspaceSource(base_url=sim.url, application="login", access_token=TOKEN, page_size=page_size,
                                 backoff_initial=0.01, backoff_max=0.02, timeout=10, rate=rate)


def test_every_request_takes_a_slot_first_tries_and_retries_alike(sim, store):
    counting = CountingStore(store)
    g = RateGate(counting, "acct", parse_rate_limit("5/s"))
    sim.set_faults([{"kind": "503", "count": 2}])
    source = gws(sim, g)
    try:
        page = source.fetch_page(W10, None)
    finally:
        source.close()
    assert page.http_retries == 2
    assert counting.reserved == len(sim.requests()) == 3
    # Retries back off 10-20 ms, the budget spaces them 200 ms: the requests arrive that far apart. (Not
    # ``g.waited``: on a loaded machine the requests themselves take part of each 200 ms, and the gate less.)
    arrivals = [r["t"] for r in sim.requests()]
    assert all(b - a >= 0.18 for a, b in itertools.pairwise(arrivals)), arrivals
    assert g.waited > 0


def test_a_slot_past_the_time_budget_ends_the_attempt_like_a_spent_budget_and_the_retry_resumes(
        sim, store, tmp_path):
    landing = LocalLandingStore(tmp_path / "landing")
    truth = sorted("/".join(map(str, i)) for i in sim.ground_truth_ids("login", W10.start, W10.end))
    assert len(truth) > 100
    slow = RateGate(store, "acct", parse_rate_limit("1/min"))  # page 2's slot is a minute away
    source = gws(sim, slow, page_size=100)
    with pytest.raises(BudgetExhausted) as spent:
        pull_window(source, W10, source_name="s", checkpoints=store, landing=landing, owner="run1",
                    lease_ttl=30, time_budget=5, rate=slow)
    source.close()
    assert spent.value.progress and slow.waited == 0  # it read page 1, and did not sleep towards page 2
    cp = store.get("s", "pull", rfc3339(W10.start))
    tally = cp.stats["run"]
    assert cp.cursor is not None and cp.pages_read == 1 and cp.lease_owner is None  # checkpoint kept
    assert (tally["budget_retries"], tally["faults"]) == (1, 0)  # a spent budget, not a fault
    assert len(sim.requests()) == 1  # page 2 was never sent

    fast = RateGate(store, "another", parse_rate_limit("10/s"))
    source = gws(sim, fast, page_size=100)
    try:
        result = pull_window(source, W10, source_name="s", checkpoints=store, landing=landing, owner="run1",
                             lease_ttl=30, time_budget=60, rate=fast)
    finally:
        source.close()
    assert result.complete and result.resumed_from_page == 2
    pages = [r["pageToken"] for r in sim.requests()]
    assert len(pages) == len(set(pages)) == len(truth) // 100 + 1  # every page read once
    got = sorted(orjson.loads(line)["id"] for p in landing.pages("s", W10, result.checkpoint.page_seq)
                 for line in landing.read_lines(p))
    assert got == truth
    # the window's row carries the wait for its metadata (assets._pull_metadata: rate_wait_seconds)
    assert result.rate_wait == fast.waited > 0
    assert store.get("s", "pull", rfc3339(W10.start)).stats["run"]["rate_wait"] == round(fast.waited, 3)


# ---- several real runs on one account ----------------------------------------------------------------

RATE = 300  # per minute: 5 a second, one every 200 ms
HOURS = (9, 10)  # settled windows of DAY (the sim clock stands at noon)
KEYS = [key(h) for h in HOURS]


@pytest.mark.slow  # real `dagster` CLI runs
@pytest.mark.timeout(180)
def test_concurrent_runs_on_different_windows_share_one_budget_and_stay_exact(tmp_path, sim_process):
    # One request at a time in each run (no sub-ranges, subranges.py): the overlap measured is the runs'.
    env = setup_project(tmp_path, sim_process.url, page_size=150, rate_limit=f"{RATE}/min", lease_ttl="30s",
                        concurrent_windows=1)
    began = time.time()
    procs = [start(materialize_cmd("logs/gws", k), env, tmp_path / f"pull-{i}.log") for i, k in enumerate(KEYS)]
    codes = [p.wait(timeout=150) for p in procs]
    logs = "\n".join((tmp_path / f"pull-{i}.log").read_text()[-2000:] for i in range(len(KEYS)))
    assert codes == [0] * len(KEYS), logs

    requests: list[dict[str, Any]] = sim_process.requests()
    times = [r["t"] for r in requests]
    print(f"{len(times)} requests from {min(times) - began:.1f}s to {max(times) - began:.1f}s after the runs "
          f"started, the runs ended at {time.time() - began:.1f}s; at most {max_in_span(times, 1.0)} in a second")
    per_second = RATE / 60
    # The API's view: no second of arrivals holds more than the budget allows (+1: a span that starts on
    # a slot also holds the slot one second later).
    assert max_in_span(times, 1.0) <= per_second + 1, max_in_span(times, 1.0)
    # The runs did overlap (else this shows nothing): each window's requests began before another's ended.
    spans = {}
    for r in requests:
        first, last = spans.get(r["startTime"], (r["t"], r["t"]))
        spans[r["startTime"]] = (min(first, r["t"]), max(last, r["t"]))
    assert len(spans) == len(KEYS)
    ordered = sorted(spans.values())
    assert all(a[1] > b[0] for a, b in itertools.pairwise(ordered)), ordered
    # ...and it was the budget that held them back: the windows' rows record their waits.
    store = SqliteCheckpointStore(tmp_path / "state" / "checkpoints.db")
    try:
        waits = [store.get("gws", "pull", ts(h)).stats["run"]["rate_wait"] for h in HOURS]
    finally:
        store.close()
    assert sum(waits) > 0, waits

    # Delivery is not what this test is about: the delivery loop itself, in this process (a CLI run
    # costs seconds of startup), with the stores the runs used.
    cfg = load_config(tmp_path / "logpull.yaml")
    checkpoints, landing, sink = open_checkpoints(cfg), open_landing(cfg), open_sink(cfg)
    try:
        for h in HOURS:
            deliver_window(Window(hour(h), hour(h + 1)), source_name="gws", checkpoints=checkpoints,
                           landing=landing, sink=sink, owner="test", lease_ttl=30)
    finally:
        for opened in (checkpoints, landing, sink):
            opened.close()
    truth = sim_process.truth_ids("login", ts(HOURS[0]), ts(HOURS[-1] + 1))
    ids = siem_ids(tmp_path)
    assert len(truth) > 4000
    assert len(ids) == len(set(ids)), "an event reached the SIEM twice"
    assert sorted(ids) == sorted(truth), "an event is missing from the SIEM"
    pages = [(r["startTime"], r["pageToken"]) for r in requests]
    assert len(pages) == len(set(pages))  # no page read twice

