"""A page slower than ``lease_ttl`` keeps its window's lease (pull.py, THE LEASE WHILE A PAGE IS SLOW):
a live run is not taken over while one request retries or waits, and a fetch stuck past
``MAX_FETCH_KEEPALIVE`` stops renewing, so a stuck process frees its window. Against the simulator,
over real HTTP, with the SQLite store."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from logpull_dagster import pull as pull_module
from logpull_dagster.checkpoints import LeaseHeld, LeaseLost
from logpull_dagster.pull import pull_window
from logpull_dagster.simulator import Simulator
from logpull_dagster.sources.google_workspace import GoogleWorkspaceSource
from logpull_dagster.windows import rfc3339

from .conftest import TOKEN
from .test_google_auth import W10, truth

# Slow tier (`make test-fast` leaves it out): each waits out leases and keepalive bounds (about 6 s).
pytestmark = pytest.mark.slow

LEASE_TTL = 2.0
SLOW = 6.0  # the second page answers after this long: three lease lifetimes


def pull_in_thread(sim: Simulator, store, landing, outcome: dict[str, Any]) -> threading.Thread:  # type: ignore[no-untyped-def]
    src = GoogleWorkspaceSource(base_url=sim.url, application="login", access_token=TOKEN, page_size=50,
                                credential="LOGPULL_TEST_TOKEN", timeout=SLOW + 5)

    def work() -> None:
        try:
            outcome["result"] = pull_window(src, W10, source_name="gws", checkpoints=store, landing=landing,
                                            owner="slow-run", lease_ttl=LEASE_TTL)
        except BaseException as e:  # handed to the test
            outcome["error"] = e
        finally:
            src.close()

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def wait_for_slow_request(sim: Simulator) -> None:
    deadline = time.monotonic() + 10
    while not any(r.get("fault") == "slow" for r in sim.requests()):
        assert time.monotonic() < deadline, "the slow page was never requested"
        time.sleep(0.01)


def second_run_takes(store) -> bool:  # type: ignore[no-untyped-def]
    """Whether another run could take the window now (it gives the lease up again at once if so)."""
    try:
        cp = store.acquire("gws", "pull", rfc3339(W10.start), rfc3339(W10.end), owner="second", ttl=0.01,
                           now=time.time())
    except LeaseHeld:
        return False
    assert cp.lease_owner == "second"
    return True


def test_a_page_slower_than_the_lease_keeps_the_window_and_the_window_completes(sim, store, landing):
    sim.set_faults([{"kind": "slow", "delay": SLOW, "after": 1}])
    outcome: dict[str, Any] = {}
    thread = pull_in_thread(sim, store, landing, outcome)
    wait_for_slow_request(sim)
    tries = []
    for _ in range(3):  # each more than a lease lifetime after the slow request went out
        time.sleep(LEASE_TTL * 0.9)
        tries.append(second_run_takes(store))
    thread.join(30)
    assert tries == [False, False, False]
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert result.complete and result.events_landed == len(truth(sim, W10)) > 100


def test_a_fetch_stuck_past_the_keepalive_bound_frees_its_window(sim, store, landing, monkeypatch):
    monkeypatch.setattr(pull_module, "MAX_FETCH_KEEPALIVE", LEASE_TTL)  # "stuck" after one lease lifetime
    sim.set_faults([{"kind": "slow", "delay": SLOW, "after": 1}])
    outcome: dict[str, Any] = {}
    thread = pull_in_thread(sim, store, landing, outcome)
    wait_for_slow_request(sim)
    time.sleep(LEASE_TTL * 2.5)  # past the bound and one more lifetime: the lease has lapsed
    taken = second_run_takes(store)
    thread.join(30)
    assert taken
    assert isinstance(outcome.get("error"), LeaseLost)  # fenced: the slow run wrote nothing after it
