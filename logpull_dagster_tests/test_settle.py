"""A window is read only once this host's clock and the API's have both passed its end + settle_lag.

The pull loop against the in-memory source, with both clocks and the waits injected: a host clock
``Clock``, the API's clock derived from it (``api``: its ``Date``, whole seconds), and a ``sleep``
that moves them both, so no test waits or depends on the real time.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pytest

from logpull_dagster.pull import SETTLE_WAIT_MAX, PullFailed, WindowNotSettled, pull_window
from logpull_dagster.windows import rfc3339

from .fakes import FakeSource, W, make_events
from .test_pull import expected_ids, landed_ids

END = W.end.timestamp()


class Clock:
    """This host's clock; ``sleep`` advances it (and so the API's, which runs at the same rate)."""

    def __init__(self, t: float) -> None:
        self.t = t
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


def api(clock: Clock, skew: float) -> Any:
    """The API's ``Date``: this host's clock + ``skew``, truncated to whole seconds as HTTP dates are."""
    return lambda: float(math.floor(clock() + skew))


def pull(src: FakeSource, store: Any, landing: Any, clock: Clock, **kw: Any):  # type: ignore[no-untyped-def]
    kw.setdefault("settle_lag", 0.0)
    return pull_window(src, W, source_name="s", checkpoints=store, landing=landing, owner="run-1", lease_ttl=60.0,
                       clock=clock, monotonic=clock, sleep=clock.sleep, **kw)


def files(landing: Any) -> list[Path]:
    return [p for p in Path(landing.root).rglob("*") if p.is_file()]


def test_a_first_page_answered_before_the_window_settled_by_the_api_s_clock_is_not_landed(store, landing):
    """Issue 19, case 3: the host clock 25 minutes fast says the hour is over; the API's Date says not."""
    clock = Clock(END + 20 * 60)  # this host: 5 minutes past the window's end + settle_lag (15 min)
    src = FakeSource(make_events(W, 95), server_clock=api(clock, -25 * 60))  # the API: 20 minutes before it
    with pytest.raises(WindowNotSettled) as e:
        pull(src, store, landing, clock, settle_lag=15 * 60.0)
    text = str(e.value)
    assert e.value.permanent and isinstance(e.value, PullFailed)
    assert "has not settled by the API's clock" in text and "this host's clock said" in text
    assert "1,500.0 s behind this host's" in text  # the skew
    assert f"due at {rfc3339(W.end.replace(minute=15))} by the API's clock" in text and "1,200 s after" in text
    assert "Nothing of the page was landed or checkpointed" in text and "NTP" in text
    assert "requests the window again" in text
    assert src.calls == [None] and clock.slept == []  # 20 minutes is no wait: fail at once
    cp = store.get("s", "pull", rfc3339(W.start))
    assert (cp.status, cp.cursor, cp.pages_read, cp.reads, cp.journaled, cp.page_seq, cp.events, cp.passes) == \
        ("failed", None, 0, 0, 0, 0, 0, 0)
    assert "api's clock" in (cp.last_error or "").lower() and cp.lease_owner is None
    assert files(landing) == []  # not journaled, not landed

    clock.t += 20 * 60  # both clocks past the window's end + settle_lag: the next run reads it
    res = pull(src, store, landing, clock, settle_lag=15 * 60.0)
    assert res.complete and sorted(landed_ids(landing, store)) == expected_ids(src.events)
    assert res.checkpoint.stats["api_clock_skew_s"] == -1500.0 and res.api_clock_skew == -1500.0


def test_a_shortfall_of_seconds_is_waited_out_and_the_first_page_read_again(store, landing):
    clock = Clock(END + 3.0)
    src = FakeSource(make_events(W, 95), server_clock=api(clock, -28.5))  # Date: 26 s before the end
    res = pull(src, store, landing, clock)
    assert clock.slept == [26.0] and res.settle_wait == 26.0
    assert src.calls[:2] == [None, None] and src.calls.count(None) == 2  # the refused first page, asked again
    assert res.complete and res.pages_read == 10 and sorted(landed_ids(landing, store)) == expected_ids(src.events)


def test_a_shortfall_past_the_wait_bound_or_the_time_budget_fails_without_waiting(store, landing):
    clock = Clock(END + 3.0)
    src = FakeSource(make_events(W, 30), server_clock=api(clock, -(SETTLE_WAIT_MAX + 10)))
    with pytest.raises(WindowNotSettled):
        pull(src, store, landing, clock)
    src = FakeSource(make_events(W, 30), server_clock=api(clock, -20.0))
    with pytest.raises(WindowNotSettled):
        pull(src, store, landing, clock, time_budget=10.0)  # a 17 s wait does not fit a 10 s budget
    assert clock.slept == [] and files(landing) == []


def test_this_host_s_clock_is_asked_before_any_request(store, landing):
    clock = Clock(END + 60 - 3600)  # an hour before the window's end + settle_lag (1 min)
    src = FakeSource(make_events(W, 30), server_clock=api(clock, 0.0))
    with pytest.raises(WindowNotSettled) as e:
        pull(src, store, landing, clock, settle_lag=60.0)
    assert "has not settled by this host's clock" in str(e.value) and "Nothing was read" in str(e.value)
    assert f"due at {rfc3339(W.end.replace(minute=1))}" in str(e.value)
    assert src.calls == [] and clock.slept == [] and files(landing) == []
    clock.t = END + 60 - 12.5  # near enough: waited out, then read
    res = pull(src, store, landing, clock, settle_lag=60.0)
    assert clock.slept == [12.5] and res.complete


def test_only_the_first_page_of_a_pass_is_held_to_the_api_s_clock(store, landing):
    """Later pages are served later than the first: a Date that goes back (another front end, a clock
    stepped back) does not refuse a pass already shown to be settled."""
    clock = Clock(END + 10.0)
    dates = iter([END + 1.0] + [END - 3600.0] * 100)
    src = FakeSource(make_events(W, 95), server_clock=lambda: next(dates))
    res = pull(src, store, landing, clock)
    assert res.complete and clock.slept == [] and src.calls.count(None) == 1


def test_the_skew_is_recorded_without_settle_lag_and_not_without_a_date(store, landing, tmp_path):
    clock = Clock(END + 7200.0)
    res = pull(FakeSource(make_events(W, 30), server_clock=api(clock, 42.25)), store, landing, clock,
               settle_lag=None)  # a direct caller: no settle check, the skew is still known
    assert res.checkpoint.stats["api_clock_skew_s"] == 42.0 and res.api_clock_skew == 42.0
    from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
    other = SqliteCheckpointStore(tmp_path / "other.db")
    try:
        res = pull(FakeSource(make_events(W, 30)), other, landing, clock)
        assert res.complete and "api_clock_skew_s" not in res.checkpoint.stats and res.api_clock_skew is None
    finally:
        other.close()


def test_the_lease_is_kept_while_waiting_for_the_window_to_settle(store, landing):
    """The wait runs under the lease keeper, as a slow page does: a short lease_ttl does not lapse in it."""
    offset = END + 5.0 - time.time()  # this host: 5 s past the window's end, in real time

    def host() -> float:
        return time.time() + offset

    held: list[bool] = []

    def sleep(seconds: float) -> None:
        time.sleep(seconds)  # really wait: the keeper thread must renew the lease meanwhile
        cp = store.get("s", "pull", rfc3339(W.start))
        held.append(cp.lease_owner == "run-1" and cp.lease_expires > host())

    src = FakeSource(make_events(W, 30), server_clock=lambda: float(math.floor(host() - 5.5)))  # ~1 s short
    res = pull_window(src, W, source_name="s", checkpoints=store, landing=landing, owner="run-1", lease_ttl=0.3,
                      clock=host, sleep=sleep, settle_lag=0.0)
    assert res.complete and held == [True] and 0 < res.settle_wait <= 1.0
