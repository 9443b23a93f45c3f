"""Asset checks on logs/<source>: what they say when a window is fine, when there is a gap, when
landed data is wrong, and when the source has stalled."""

from __future__ import annotations

import dagster as dg
import orjson
import pytest

from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.ledger import audit_window
from logpull_dagster.pull import id_digest
from logpull_dagster.windows import Window, rfc3339

from .conftest import hour, key, ms, ts
from .test_assets import make_defs, materialize

pytestmark = pytest.mark.usefixtures("token_env")


def checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def test_a_window_after_a_gap_fails_the_gap_check_naming_the_window_and_the_command(tmp_path, sim, instance):
    defs = make_defs(tmp_path, sim.url, start=ts(8))
    res = materialize(defs, "logs/gws", key(10), instance)
    assert res.success  # checks are not blocking: the data landed, the gap is reported
    got = checks(res)
    assert set(got) == {"window_complete", "events_inside_window", "no_duplicate_ids",
                        "previous_window_complete", "freshness"}
    assert got["window_complete"].passed and got["events_inside_window"].passed and got["no_duplicate_ids"].passed
    assert got["events_inside_window"].metadata["events_checked"].value > 0
    gap = got["previous_window_complete"]
    assert not gap.passed
    assert f"gap before {key(10)}" in gap.description and "never read" in gap.description
    assert f"dagster asset materialize -m logpull_dagster --select logs/gws --partition {key(9)}" in (
        gap.description)
    assert f"newest complete window {key(10)} ended" in got["freshness"].description

    assert materialize(defs, "logs/gws", key(9), instance).success
    again = checks(materialize(defs, "logs/gws", key(10), instance))
    assert again["previous_window_complete"].passed


def test_a_range_run_reports_every_unfinished_window_in_one_result(tmp_path, sim, instance):
    sim.set_faults([{"kind": "bad_json", "match": "token", "count": None}])
    defs = make_defs(tmp_path, sim.url, start=ts(8), retries=0)
    job = defs.resolve_job_def("pull_gws")
    res = job.execute_in_process(instance=instance, raise_on_error=False, tags={
        "dagster/asset_partition_range_start": key(8),
        "dagster/asset_partition_range_end": key(9)})
    assert not res.success  # the first window fails for good: no check results from a failed step
    sim.set_faults([])
    res = job.execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": key(8),
        "dagster/asset_partition_range_end": key(9)})
    got = checks(res)
    assert got["window_complete"].passed and got["window_complete"].metadata["windows"].value == 2
    assert got["previous_window_complete"].passed  # 08:00 is the source's first window


def test_the_audit_finds_events_outside_their_window_and_duplicate_ids(tmp_path, store):
    w = Window(hour(10), hour(11))
    land = LocalLandingStore(tmp_path)
    line = lambda i, t: orjson.dumps({"id": i, "time": t, "pulled_at": t, "event": {"id": {"time": t}}})  # noqa: E731
    cp = store.acquire("s", "pull", rfc3339(w.start), rfc3339(w.end), owner="t", ttl=60, now=0)
    land.put_page("s", w, 0, 1, [line("a", ms(10)), line("b", ms(11))])
    cp = store.commit(cp, ttl=60, now=1, landed_ids=[(1, id_digest("a")), (2, id_digest("b"))])
    land.put_page("s", w, 1, 1, [line("a", ms(10))])  # "a" again: the store knows it once
    store.commit(cp, ttl=60, now=2, landed_ids=[(1, id_digest("a"))])
    audit = audit_window(land, store, "s", w, 2)
    assert (audit.events, audit.outside, audit.duplicates) == (3, ["b"], 1)
    clean = audit_window(land, store, "s", w, 1)
    assert (clean.events, clean.outside, clean.duplicates) == (2, ["b"], 0)
    # Not the 24-character time form, or not an envelope at all: read by the slower path, still judged.
    land.put_page("s", w, 2, 1, [line("c", ts(12)), b'{"event": {}}'])
    odd = audit_window(land, store, "s", w, 3)
    assert odd.outside == ["b", "c", "page 2: a line without the id/time envelope"]


def test_the_freshness_sensor_records_a_stalled_source_without_any_run(tmp_path, sim, instance):
    defs = make_defs(tmp_path, sim.url, start=ts(8), max_delay="1h")
    assert materialize(defs, "logs/gws", key(8), instance).success
    sensor = defs.resolve_sensor_def("freshness_gws_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.build_sensor_context(instance=instance, definitions=defs,
                                 resources=dict(defs.resources or {})) as ctx:
        out = sensor.evaluate_tick(ctx)
    [evaluation] = out.asset_events
    assert evaluation.check_name == "freshness" and evaluation.asset_key == dg.AssetKey(["logs", "gws"])
    assert not evaluation.passed  # the newest complete window ended long before now
    assert f"newest complete window {key(8)} ended" in evaluation.description
