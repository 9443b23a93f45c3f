"""Range backfills through the real CLI: killed mid-way, then rerun."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time

import dagster as dg
import pytest

from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.deliver import deliver_window
from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.sinks.file import FileSink
from logpull_dagster.windows import Window, rfc3339

from .cli import DAGSTER, run, setup_project, siem_ids, start
from .conftest import DAY, key
from .test_kill import wait_for

# Slow tier (`make test-fast` leaves it out): real `dagster` CLI runs (backfills, SIGKILLs).
pytestmark = pytest.mark.slow

H = dt.timedelta(hours=1)
WINDOWS = [Window(DAY + i * H, DAY + (i + 1) * H) for i in range(8)]
RANGE = f"{key(0)}...{key(7)}"


def backfill_cmd(*extra: str) -> list[str]:
    return [DAGSTER, "asset", "materialize", "-m", "logpull_dagster", "--select", "logs/gws",
            "--partition-range", RANGE, *extra]


@pytest.mark.timeout(300)
def test_a_range_backfill_killed_midway_keeps_its_complete_windows_and_the_rerun_resumes(tmp_path, sim_process):
    sim_process.control("page_latency", {"seconds": 0.04})
    # One window at a time, so that "killed inside window 4" means windows 1-3 are complete (the
    # concurrent range run is tested in test_assets; the invariant is per window either way).
    env = setup_project(tmp_path, sim_process.url, page_size=250, lease_ttl="2s", concurrent_windows=1)
    log = tmp_path / "backfill.log"
    fourth = rfc3339(WINDOWS[3].start)

    proc = start(backfill_cmd(), env, log)
    # Kill it inside the 4th window, after two of its pages.
    wait_for(lambda: proc.poll() is not None
             or sum(r["startTime"] == fourth for r in sim_process.requests()) >= 2)
    assert proc.poll() is None, f"the backfill ended before the kill:\n{log.read_text()[-2000:]}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(sim_process.requests())

    home = env["DAGSTER_HOME"]
    with dg.DagsterInstance.from_config(home) as instance:
        done = instance.get_materialized_partitions(dg.AssetKey(["logs", "gws"]))
    assert done == {key(0), key(1), key(2)}  # what the UI shows

    t0 = time.monotonic()
    assert run(backfill_cmd(), env, log) == 0, log.read_text()[-3000:]
    rerun_seconds = time.monotonic() - t0
    rerun = sim_process.requests()[killed_at:]
    assert not any(r["startTime"] in {rfc3339(w.start) for w in WINDOWS[:3]} for r in rerun)  # not read again
    first = next(r for r in rerun if r["startTime"] == fourth)
    assert first["pageToken"] is not None  # window 4 resumed from its token, not from page one
    with dg.DagsterInstance.from_config(home) as instance:
        assert len(instance.get_materialized_partitions(dg.AssetKey(["logs", "gws"]))) == 8

    # Rerunning a finished range reads nothing; --config reread: true reads it all again, landing nothing new.
    before = len(sim_process.requests())
    assert run(backfill_cmd(), env, log) == 0
    assert len(sim_process.requests()) == before
    reread = '{"ops": {"logs__gws": {"config": {"reread": true}}}}'
    assert run(backfill_cmd("--config-json", reread), env, log) == 0
    assert {r["startTime"] for r in sim_process.requests()[before:]} == {rfc3339(w.start) for w in WINDOWS}

    store = SqliteCheckpointStore(tmp_path / "state" / "checkpoints.db")
    landing = LocalLandingStore(tmp_path / "state" / "landing")
    for w in WINDOWS:
        assert store.get("gws", "pull", rfc3339(w.start)).status == "complete"
        deliver_window(w, source_name="gws", checkpoints=store, landing=landing, sink=FileSink(tmp_path / "siem"),
                       owner="test", lease_ttl=60)
    store.close()
    truth = [i for w in WINDOWS for i in sim_process.truth_ids("login", rfc3339(w.start), rfc3339(w.end))]
    ids = siem_ids(tmp_path)
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(truth)
    print(f"range of 8 windows, killed in window 4: the rerun finished in {rerun_seconds:.1f}s")


@pytest.mark.timeout(300)
def test_a_concurrent_range_run_killed_twice_delivers_every_event_once_rereading_only_pages_in_flight(
        tmp_path, sim_process):
    import random
    from collections import Counter

    sim_process.control("page_latency", {"seconds": 0.03})
    env = setup_project(tmp_path, sim_process.url, page_size=100, lease_ttl="1s", concurrent_windows=4)
    log = tmp_path / "backfill.log"
    seed = int(os.environ.get("LOGPULL_KILL_SEED", time.time_ns() % 10_000))
    print(f"kill seed {seed} (LOGPULL_KILL_SEED={seed} replays it)")
    rng = random.Random(seed)
    kills = 0
    for _ in range(2):
        proc = start(backfill_cmd(), env, log)
        target = len(sim_process.requests()) + rng.randint(5, 40)
        wait_for(lambda p=proc, t=target: p.poll() is not None or len(sim_process.requests()) >= t)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
        time.sleep(1.1)  # the dead run's leases lapse
    assert run(backfill_cmd(), env, log) == 0, log.read_text()[-3000:]

    # Each kill interrupts at most one page per request in flight (4 at once, windows and sub-ranges
    # together): no more is read twice.
    reads = Counter((r["startTime"], r["endTime"], r["pageToken"]) for r in sim_process.requests())
    assert kills and sum(n - 1 for n in reads.values()) <= 4 * kills, f"seed {seed}"
    store = SqliteCheckpointStore(tmp_path / "state" / "checkpoints.db")
    landing = LocalLandingStore(tmp_path / "state" / "landing")
    for w in WINDOWS:
        cp = store.get("gws", "pull", rfc3339(w.start))
        assert cp.status == "complete" and not cp.reading
        deliver_window(w, source_name="gws", checkpoints=store, landing=landing, sink=FileSink(tmp_path / "siem"),
                       owner="test", lease_ttl=60)
    store.close()
    assert not list((tmp_path / "state" / "landing").rglob("read-*"))  # the journal is empty at rest
    truth = [i for w in WINDOWS for i in sim_process.truth_ids("login", rfc3339(w.start), rfc3339(w.end))]
    ids = siem_ids(tmp_path)
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(truth)
