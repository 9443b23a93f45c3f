"""The Dagster layer: assets, in-run retries, metadata, the delivery sensor (in-process, real HTTP)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import pytest
import yaml

from logpull_dagster.config import load_config
from logpull_dagster.definitions import build_definitions
from logpull_dagster.keys import RANGE_END, RANGE_START
from logpull_dagster.simulator import Simulator

from .conftest import SIM_NOW, TOKEN, hour, key, ts

pytestmark = pytest.mark.usefixtures("token_env")

KEY10 = key(10)
W10 = (hour(10), hour(11))


def make_defs(tmp_path: Path, url: str, **overrides: Any) -> dg.Definitions:
    src = {"name": "gws", "type": "google_workspace", "application": "login", "base_url": url,
           "access_token": {"env": "LOGPULL_TEST_TOKEN"}, "start": ts(-24),
           "page_size": 50, "retry_delay": "0s", "http_backoff_max": "50ms",
           # One request at a time (page after page) unless a test says otherwise: these tests count pages
           # and attempts; test_a_busy_window_splits_* and test_subranges.py cover sub-ranges.
           "concurrent_windows": 1, **overrides}
    cfg = {"sources": [src], "checkpoints": {"type": "sqlite", "path": "state/checkpoints.db"},
           "landing": {"type": "local", "path": "state/landing"}, "siem": {"type": "file", "path": "siem"}}
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump(cfg))
    return build_definitions(load_config(tmp_path / "logpull.yaml"))


def materialize(defs: dg.Definitions, asset: str, key: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False,
                                  asset_selection=[dg.AssetKey(asset.split("/"))])


def metadata(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    [mat] = result.get_asset_materialization_events()
    return {k: v.value for k, v in mat.materialization.metadata.items()}


def siem_ids(tmp_path: Path) -> list[str]:
    return [orjson.loads(line)["event_id"] for f in sorted((tmp_path / "siem").rglob("*.jsonl"))
            for line in f.read_bytes().splitlines()]


def truth(sim: Simulator, start: dt.datetime = W10[0], end: dt.datetime = W10[1]) -> list[str]:
    return sorted("/".join(i) for i in sim.ground_truth_ids("login", start, end))


@pytest.mark.slow  # 3 to 8 s of Dagster runs
def test_a_window_is_pulled_then_delivered_with_metadata_and_no_secret_anywhere(tmp_path, sim, instance):
    defs = make_defs(tmp_path, sim.url)
    res = materialize(defs, "logs/gws", KEY10, instance)
    assert res.success
    md = metadata(res)
    n = len(truth(sim))
    assert md["events"] == md["new_events"] == md["dagster/row_count"] == n
    assert md["pages_read"] == md["pages_landed"] == md["pages_to_deliver"] == -(-(n + 1) // 50)
    assert (md["resumed_from_page"], md["attempts"], md["http_retries"], md["status"]) == (0, 1, 0, "complete")
    assert md["first_event_time"].startswith(ts(10)[:16]) and md["last_event_time"].startswith(ts(10)[:14] + "5")
    assert md["events_per_second"] > 0 and md["elapsed_seconds"] > 0
    assert sum(r.data["events"] for r in md["events_per_name"].records) == n
    assert {r.data["event_name"] for r in md["events_per_name"].records} >= {"login_success", "logout"}
    counts = [r.data["events"] for r in md["events_per_name"].records]
    assert counts == sorted(counts, reverse=True)  # the most frequent first
    logs = [e.message for e in instance.all_logs(res.run_id)]
    assert any(f"gws {key(10)} page 1: +" in m for m in logs)  # progress: the first page, then every 5 s

    out = materialize(defs, "siem/gws", KEY10, instance)
    assert out.success and metadata(out)["delivered_events"] == n
    assert sorted(siem_ids(tmp_path)) == truth(sim)

    every_event = [str(e) for run in (res, out) for e in instance.all_logs(run.run_id)]
    assert not any(TOKEN in line for line in every_event)



def test_a_busy_window_splits_into_sub_ranges_read_at_once_within_the_quota_and_says_so(tmp_path, sim, instance):
    """The default reader count (4 requests in flight): a window of ~30 pages is read as sub-ranges at once
    (subranges.py), every event lands once and is delivered once, and the metadata says how it was read."""
    sim.set_page_latency(0.02)
    defs = make_defs(tmp_path, sim.url, concurrent_windows=4, page_size=10)
    res = materialize(defs, "logs/gws", KEY10, instance)
    assert res.success
    md = metadata(res)
    n = len(truth(sim))
    assert md["events"] == md["new_events"] == n and md["status"] == "complete"
    assert md["subranges"] >= 4 and "min " in md["subrange_events_per_second"]  # one a reader at least
    in_flight = max(r["in_flight"] for r in sim.requests())
    assert 1 < in_flight <= 4  # at once, never above the quota
    out = materialize(defs, "siem/gws", KEY10, instance)
    assert out.success and sorted(siem_ids(tmp_path)) == truth(sim)


@pytest.mark.slow  # 3 to 8 s of Dagster runs
def test_a_window_needing_several_time_budgets_completes_in_one_run_reading_each_page_once(tmp_path, sim, instance):
    sim.set_page_latency(0.1)
    defs = make_defs(tmp_path, sim.url, page_size=20, time_budget="350ms")
    res = materialize(defs, "logs/gws", KEY10, instance)
    assert res.success
    md = metadata(res)
    assert md["budget_retries"] >= 3 and md["attempts"] == md["budget_retries"] + 1
    tokens = Counter(r["pageToken"] for r in sim.requests())
    assert max(tokens.values()) == 1 and len(tokens) == md["pages_read"]
    assert md["events"] == len(truth(sim))
    retries = [e for e in instance.all_logs(res.run_id)
               if e.dagster_event and e.dagster_event.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == md["budget_retries"]


@pytest.mark.slow  # 3 to 8 s of Dagster runs
def test_faults_outlasting_http_retries_are_retried_in_the_run_from_the_checkpoint(tmp_path, sim, instance):
    sim.set_faults([{"kind": "503", "count": 4, "after": 2}])
    defs = make_defs(tmp_path, sim.url, http_attempts=2, retries=2)
    res = materialize(defs, "logs/gws", KEY10, instance)
    assert res.success
    md = metadata(res)
    assert md["fault_retries"] == 2 and md["resumed_from_page"] == 3 and md["events"] == len(truth(sim))


@pytest.mark.slow  # 3 to 8 s of Dagster runs
def test_a_window_that_keeps_failing_fails_clearly_and_keeps_its_checkpoint(tmp_path, sim, instance):
    sim.set_faults([{"kind": "bad_json", "match": "token", "after": 1, "count": None}])
    defs = make_defs(tmp_path, sim.url, retries=1)
    res = materialize(defs, "logs/gws", KEY10, instance)
    assert not res.success
    [failure] = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
    text = str(failure.step_failure_data.error)
    assert f"window [{ts(10)}, {ts(11)}) of 'gws', page 3: response is not JSON" in text
    assert "Gave up after 1 retries" in text and "resumes from the same page" in text
    sim.set_faults([])
    again = materialize(defs, "logs/gws", KEY10, instance)
    assert again.success and metadata(again)["resumed_from_page"] == 3


@pytest.mark.slow  # 3 to 8 s of Dagster runs
def test_the_sensor_delivers_every_window_with_new_data_once_old_windows_included(tmp_path, instance):
    with Simulator(seed=3, events_per_hour=200, token=TOKEN, late_fraction=0.2, late_delay=2 * 3600) as sim:
        sim.set_clock(now=SIM_NOW - dt.timedelta(hours=1, minutes=30))  # 10:30: late events of 08:00 pending
        defs = make_defs(tmp_path, sim.url)
        sensor = defs.resolve_sensor_def("deliver_gws_sensor")
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING

        def tick(cursor: str | None) -> tuple[list[str], str | None]:
            with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor,
                                         resources=dict(defs.resources or {})) as ctx:
                out = sensor.evaluate_tick(ctx)
            for r in out.run_requests:  # launch them, as the daemon would
                deliver = defs.resolve_job_def("deliver_gws")
                assert deliver.execute_in_process(partition_key=r.partition_key, tags=r.tags, instance=instance).success
            spans = [r.partition_key or f"{r.tags[RANGE_START]}...{r.tags[RANGE_END]}" for r in out.run_requests]
            return spans, out.cursor

        for k in (key(9), key(8)):
            assert materialize(defs, "logs/gws", k, instance).success
        keys, cursor = tick(None)
        assert keys == [f"{key(8)}...{key(9)}"]  # adjacent windows: one range run
        assert tick(cursor)[0] == []  # the same materializations never twice

        assert materialize(defs, "logs/gws", key(8), instance).success  # nothing new published
        keys, cursor = tick(cursor)
        assert keys == []

        nine = hour(9)
        expected_nine = truth(sim, nine, nine + dt.timedelta(hours=1))
        sim.set_clock(now=SIM_NOW)  # noon: the late events of 08:00 are out now
        res = materialize(defs, "logs/gws", key(8), instance)
        assert metadata(res)["new_events"] > 0
        keys, cursor = tick(cursor)
        assert keys == [key(8)]  # an old window, delivered again for its new data only
        expected = sorted(truth(sim, nine - dt.timedelta(hours=1), nine) + expected_nine)
        ids = siem_ids(tmp_path)
        assert sorted(ids) == expected and len(ids) == len(set(ids))
        # A sensor starting over (a new daemon, `make ui` on the demo's state) walks every materialization
        # again: all of them had pages to deliver when recorded, none has now. Before: 2 runs of 0 events.
        assert tick(None)[0] == []


@pytest.mark.slow  # 3 to 8 s of Dagster runs
def test_a_range_run_reads_its_windows_concurrently_within_the_quota_and_lands_each_event_once(tmp_path, instance):
    from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
    from logpull_dagster.landing.local import LocalLandingStore
    from logpull_dagster.windows import Window, rfc3339

    with Simulator(seed=4, events_per_hour=300, token=TOKEN, page_latency=0.05) as sim:
        sim.set_clock(now=SIM_NOW)
        defs = make_defs(tmp_path, sim.url, concurrent_windows=3)
        job = defs.resolve_implicit_global_asset_job_def()
        res = job.execute_in_process(instance=instance, raise_on_error=False,
                                     asset_selection=[dg.AssetKey(["logs", "gws"])],
                                     tags={RANGE_START: key(0), RANGE_END: key(7)})
        assert res.success
        assert sorted(m.partition for m in res.get_asset_materialization_events()) == [
            key(h) for h in range(8)]
        # The API saw up to 3 requests at once from this run, never more: the quota is the setting.
        assert max(r["in_flight"] for r in sim.requests()) == 3
        store = SqliteCheckpointStore(tmp_path / "state" / "checkpoints.db")
        landing = LocalLandingStore(tmp_path / "state" / "landing")
        for h in range(8):
            w = Window(hour(h), hour(h + 1))
            cp = store.get("gws", "pull", rfc3339(w.start))
            assert cp is not None and cp.status == "complete" and not cp.reading
            pages = landing.pages("gws", w, cp.page_seq)
            ids = [orjson.loads(line)["id"] for p in pages for line in landing.read_lines(p)]
            assert sorted(ids) == truth(sim, w.start, w.end)
        store.close()
        logs = [e.message for e in instance.all_logs(res.run_id) if e.user_message]
        assert any(f"gws {key(5)} page 1: +" in m for m in logs)  # workers' progress, logged by the step


def test_a_range_run_goes_on_past_failed_windows_records_why_on_each_and_fails_naming_every_one(tmp_path, instance):
    """Before: the step failed naming the first window while four had failed, the others were not read,
    and every check of the run read "Execution failed"."""
    with Simulator(seed=4, events_per_hour=300, token=TOKEN) as sim:
        sim.set_clock(now=SIM_NOW)
        # One request at a time (no sub-ranges): the three faults meet page 2 of three windows.
        defs = make_defs(tmp_path, sim.url, concurrent_windows=1, retries=0)
        sim.set_faults([{"kind": "bad_json", "match": "token", "count": 3}])
        job = defs.resolve_implicit_global_asset_job_def()
        res = job.execute_in_process(instance=instance, raise_on_error=False,
                                     asset_selection=[dg.AssetKey(["logs", "gws"])],
                                     tags={RANGE_START: key(0), RANGE_END: key(5)})
        assert not res.success
        done = sorted(m.partition for m in res.get_asset_materialization_events())
        failed = sorted(set(key(h) for h in range(6)) - set(done))
        assert len(failed) == 3 and len(done) == 3  # the windows after the first failure were read too
        [failure] = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
        text = failure.event_specific_data.error.message
        assert "3 windows of 'gws' failed" in text and all(f"{k}: " in text for k in failed), text
        assert f"--partition-range {failed[0]}...{failed[-1]}" in text
        observed = {e.event_specific_data.asset_observation.partition: e.event_specific_data.asset_observation
                    for e in res.all_events if e.event_type_value == "ASSET_OBSERVATION"}
        assert sorted(observed) == failed
        for k, obs in observed.items():
            meta = {n: v.value for n, v in obs.metadata.items()}
            assert (meta["status"], meta["failed_at_page"]) == ("failed", 2) and "not JSON" in meta["error"]
            assert f"--partition {k}" in meta["resume"] and f"--window {k}" in meta["skip_page"]
        evaluations = {e.check_name: e for e in res.get_asset_check_evaluations()}
        assert set(evaluations) == {"window_complete", "events_inside_window", "no_duplicate_ids",
                                    "previous_window_complete", "freshness"}  # all recorded, none "execution failed"
        assert not evaluations["window_complete"].passed and evaluations["no_duplicate_ids"].passed
        assert all(k in evaluations["window_complete"].description for k in failed)


def test_a_sink_refusal_retrying_cannot_mend_fails_the_delivery_at_once_without_its_secret(tmp_path, sim,
                                                                                         instance, monkeypatch):
    """A Splunk HEC that refuses the token (403) fails the delivery on the first attempt though the sink
    allows 3 retries (the error is permanent: sinks/__init__.py), naming the token's variable; the token
    is nowhere in the checkpoint, the step's failure or the run's events."""
    from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
    from logpull_dagster.simulator.hec import HecReceiver

    token = "0f0e0d0c-0b0a-4999-8888-777766665555"  # a GUID, as Splunk makes them; not one the collector knows
    monkeypatch.setenv("HEC_TOKEN", token)
    with HecReceiver() as receiver:
        make_defs(tmp_path, sim.url)
        cfg = yaml.safe_load((tmp_path / "logpull.yaml").read_text())
        cfg["sinks"] = {"splunk": {"type": "splunk_hec", "url": receiver.url, "token": {"env": "HEC_TOKEN"},
                                   "retries": 3, "retry_delay": "0s"}}
        del cfg["siem"]
        (tmp_path / "logpull.yaml").write_text(yaml.safe_dump(cfg))
        defs = build_definitions(load_config(tmp_path / "logpull.yaml"))
        assert materialize(defs, "logs/gws", KEY10, instance).success
        res = materialize(defs, "splunk/gws", KEY10, instance)
        assert not res.success and receiver.event_requests == 1  # one attempt: no retry of a refused token
    events = [e for e in res.all_events]
    assert [e.event_type_value for e in events].count("STEP_UP_FOR_RETRY") == 0
    [failure] = [e for e in events if e.event_type_value == "STEP_FAILURE"]
    text = str(failure.step_failure_data.error)
    assert "HEC_TOKEN" in text and token not in text
    assert not [e for e in instance.all_logs(res.run_id) if token in str(e)]
    store = SqliteCheckpointStore(tmp_path / "state" / "checkpoints.db")
    try:
        row = store.get("gws", "deliver:splunk", ts(10))
        assert row.status == "failed" and "HEC_TOKEN" in row.last_error and token not in row.last_error
    finally:
        store.close()
