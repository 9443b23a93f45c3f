"""The orchestrator schedule through Dagster, at fixed instants, and late events end to end."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from pathlib import Path

import dagster as dg
import pytest

from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.keys import RANGE_END, RANGE_START
from logpull_dagster.simulator import Simulator
from logpull_dagster.windows import rfc3339

from .conftest import DAY, TOKEN, key, ts
from .test_assets import make_defs, siem_ids

# Slow tier (`make test-fast` leaves it out): schedule ticks over many windows, lookback re-reads (5 to 30 s each).
pytestmark = [pytest.mark.usefixtures("token_env"), pytest.mark.slow]

H = dt.timedelta(hours=1)


class Orchestrator:
    """Plays the daemon: schedule ticks at chosen instants, runs what they request, then delivery."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
        self.defs, self.instance = defs, instance
        self.schedule = defs.resolve_schedule_def("pull_gws_schedule")
        self.sensor = defs.resolve_sensor_def("deliver_gws_sensor")
        self.cursor: str | None = None

    def requests(self, at: dt.datetime) -> list[dg.RunRequest]:
        with dg.build_schedule_context(instance=self.instance, scheduled_execution_time=at,
                                       repository_def=self.defs.get_repository_def(),
                                       resources=dict(self.defs.resources or {})) as ctx:
            return list(self.schedule.evaluate_tick(ctx).run_requests or [])

    def tick(self, at: dt.datetime) -> list[str]:
        reqs = self.requests(at)
        pull = self.defs.resolve_job_def("pull_gws")
        for r in reqs:
            assert pull.execute_in_process(partition_key=r.partition_key, instance=self.instance, tags=r.tags,
                                           run_config=r.run_config).success
        with dg.build_sensor_context(instance=self.instance, definitions=self.defs, cursor=self.cursor,
                                     resources=dict(self.defs.resources or {})) as ctx:
            out = self.sensor.evaluate_tick(ctx)
        self.cursor = out.cursor
        deliver = self.defs.resolve_job_def("deliver_gws")
        for r in out.run_requests:
            res = deliver.execute_in_process(partition_key=r.partition_key, tags=r.tags, instance=self.instance)
            assert res.success
        return [label(r) for r in reqs]


def label(r: dg.RunRequest) -> str:
    """``key:reason`` for a one-window run, ``first...last:reason`` for a range run."""
    keys = r.partition_key or f"{r.tags[RANGE_START]}...{r.tags[RANGE_END]}"
    return f"{keys}:{r.tags['logpull/reason']}"


def test_schedule_requests_due_windows_oldest_first_bounded_and_reads_the_checkpoint_store(tmp_path, sim, instance):
    defs = make_defs(tmp_path, sim.url, start=ts(0), settle_lag="15m", max_windows_per_tick=3,
                     schedule="15 * * * *")
    orch = Orchestrator(defs, instance)
    schedule = defs.resolve_schedule_def("pull_gws_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING and schedule.cron_schedule == "15 * * * *"

    # Adjacent windows go as one range run (a catch-up), bounded per tick and per run.
    assert orch.tick(DAY + 5 * H + dt.timedelta(minutes=15)) == [f"{key(0)}...{key(2)}:new"]
    done = instance.get_materialized_partitions(dg.AssetKey(["logs", "gws"]))
    assert done == {key(0), key(1), key(2)}
    # next tick: the rest; the completed windows are not asked for again
    assert orch.tick(DAY + 6 * H + dt.timedelta(minutes=15)) == [f"{key(3)}...{key(5)}:new"]
    assert orch.requests(DAY + 6 * H + dt.timedelta(minutes=20)) == []

    # A window landed by a run that then died: Dagster says materialized, the checkpoint says unfinished.
    store = SqliteCheckpointStore(tmp_path / "state" / "checkpoints.db")
    row = store.get("gws", "pull", ts(4))
    now = DAY + 7 * H + dt.timedelta(minutes=15)
    held = store.acquire("gws", "pull", row.window_start, row.window_end, owner="killed-run", ttl=60,
                         now=now.timestamp() - 3600)
    store.commit(dataclasses.replace(held, status="running", cursor="tok"), ttl=60, now=now.timestamp() - 3600)
    store.close()
    assert [label(r) for r in orch.requests(now)] == [f"{key(4)}:lapsed", f"{key(6)}:new"]


def restamp_reads(tmp_path: Path, at: dt.datetime) -> None:
    """The runs of a simulated tick stamp last_read_at with the real clock; move it to the tick's instant."""
    db = sqlite3.connect(tmp_path / "state" / "checkpoints.db")
    with db:
        db.execute("UPDATE checkpoints SET stats = json_set(stats, '$.last_read_at', ?) "
                   "WHERE stage = 'pull' AND json_extract(stats, '$.last_read_at') > ?", (rfc3339(at), rfc3339(at)))
    db.close()


@pytest.mark.parametrize("lookback", ["6h", "0s"])
def test_late_events_reach_the_siem_exactly_once_with_lookback_and_are_missed_without(tmp_path, instance, lookback):
    day = DAY
    with Simulator(seed=21, events_per_hour=120, token=TOKEN, late_fraction=0.1, late_delay=2 * 3600) as sim:
        defs = make_defs(tmp_path, sim.url, start=ts(0), settle_lag="15m", lookback=lookback,
                         lookback_every="1h", schedule="15 * * * *")
        orch = Orchestrator(defs, instance)
        final = day + 10 * H + dt.timedelta(minutes=15)
        t = day + 2 * H + dt.timedelta(minutes=15)
        while t <= final:
            sim.set_clock(now=t)
            orch.tick(t)
            restamp_reads(tmp_path, t)
            t += H
        truth = sorted("/".join(i) for i in sim.ground_truth_ids("login", day, day + 10 * H))
        ids = siem_ids(tmp_path)
        assert len(ids) == len(set(ids)), "an event reached the SIEM twice"
        store = SqliteCheckpointStore(tmp_path / "state" / "checkpoints.db")
        rows = {cp.window_start: cp for cp in store.list("gws", "pull")}
        store.close()
        assert len(rows) == 10 and all(cp.status == "complete" for cp in rows.values())
        late = sum(cp.stats.get("late_events", 0) for cp in rows.values())
        if lookback == "6h":
            assert sorted(ids) == truth
            assert late > 0 and sum(cp.events for cp in rows.values()) == len(truth)
            assert sum(cp.passes > 1 for cp in rows.values()) == 9  # all but the window first read at the end
        else:
            missing = set(truth) - set(ids)
            assert missing and late == 0
            # The ledger says which windows were read only once: every window missing events is one of them.
            windows_missing = {i.split("/")[2][:13] for i in missing}
            read_once = {cp.window_start[:13] for cp in rows.values() if cp.passes == 1}
            assert windows_missing <= read_once


def test_a_window_a_queued_or_live_run_will_read_is_not_requested_twice(tmp_path, sim, instance):
    from dagster._core.storage.dagster_run import DagsterRun

    defs = make_defs(tmp_path, sim.url, start=ts(0), settle_lag="0s")
    orch = Orchestrator(defs, instance)
    at = DAY + 3 * H
    for k, status in ((key(0), dg.DagsterRunStatus.NOT_STARTED),
                      (key(1), dg.DagsterRunStatus.STARTED)):  # started, no lease yet
        instance.add_run(DagsterRun(job_name="pull_gws", run_id=f"run-{k[-5:-3]}", status=status,
                                    tags={"dagster/partition": k}))
    assert [label(r) for r in orch.requests(at)] == [f"{key(2)}:new"]
    # A range run counts for every window of its range.
    instance.add_run(DagsterRun(job_name="pull_gws", run_id="range", status=dg.DagsterRunStatus.NOT_STARTED,
                                tags={RANGE_START: key(2), RANGE_END: key(4)}))
    assert [label(r) for r in orch.requests(DAY + 6 * H)] == [f"{key(5)}:new"]
