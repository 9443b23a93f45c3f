"""Several sinks per stream (issue 20): a (stream, sink) pair is one delivery target with its own asset,
checkpoint, job, sensor, retries and lease, so a second sink is config only, and one sink being down
never holds another back.

The second sink here is a type added the way any sink type is added: one module
(``example_plugins/spool_sink.py``) and one registry line (its entry point, ``cli.plugin_path``). It is
found through the entry point by the real ``dagster`` CLI, as a pip-installed plug-in would be.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import pytest
import yaml

from logpull_dagster import plugins
from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore

from .cli import logpull, materialize_cmd, run, setup_project, siem_ids
from .conftest import key, ts
from .example_plugins import spool_sink

pytestmark = pytest.mark.slow  # the real dagster and logpull CLIs



@pytest.fixture(autouse=True)
def spool_in_this_process() -> Iterator[None]:
    """The CLIs find the spool type by its entry point; this process (which builds the definitions to look
    at them) registers it the way the entry point does."""
    for p in spool_sink.PLUGINS:
        plugins.register(p)
    yield
    plugins.unregister("siem", "spool")


def with_sinks(tmp_path: Path, env: dict[str, str], spool: dict[str, Any], **source: Any) -> None:
    """The config of ``setup_project`` with ``sinks:``: the file sink as ``siem`` and a ``spool`` sink."""
    path = tmp_path / "logpull.yaml"
    cfg = yaml.safe_load(path.read_text())
    siem = cfg.pop("siem") if "siem" in cfg else cfg["sinks"]["siem"]
    cfg["sinks"] = {"siem": siem, "spool": {"type": "spool", "path": "spool", **spool}}
    cfg["sources"][0].update(source)
    path.write_text(yaml.safe_dump(cfg))


def spool_ids(tmp_path: Path) -> list[str]:
    return [orjson.loads(line)["event_id"] for f in sorted((tmp_path / "spool").rglob("*.jsonl"))
            for line in f.read_bytes().splitlines()]


def status(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    res = logpull(["status", "--json", "--from", ts(10), "--to", ts(11)], env)
    [window] = orjson.loads(res.stdout)["sources"][0]["windows"]
    return res.returncode, window


@pytest.mark.timeout(300)
def test_a_second_sink_is_config_only_and_one_sink_down_never_holds_the_other_back(tmp_path, sim_process):
    """The spool sink joins a running deployment (after the window was pulled), is down, then back: it
    gets the window from the landing store, without the API being read again (replay by backfill)."""
    env = setup_project(tmp_path, sim_process.url, page_size=500)
    log = tmp_path / "runs.log"
    assert run(materialize_cmd("logs/gws", key(10)), env, log) == 0, log.read_text()[-3000:]
    reads = len(sim_process.requests())
    with_sinks(tmp_path, env, {"fail": True, "retries": 0})  # the spool joins, down, and not retried

    # Both deliveries are in the code location: their assets, jobs and sensors, named per pair.
    from logpull_dagster.config import load_config
    from logpull_dagster.definitions import build_definitions

    defs = build_definitions(load_config(tmp_path / "logpull.yaml"))
    for asset, kinds in (("siem/gws", {"jsonl"}), ("spool/gws", {"spool"})):
        asset_key = dg.AssetKey(asset.split("/"))
        spec = defs.resolve_assets_def(asset_key).specs_by_key[asset_key]
        assert {k.removeprefix("dagster/kind/") for k in spec.tags if k.startswith("dagster/kind/")} == kinds
    assert {defs.resolve_job_def(j).name for j in ("deliver_gws", "deliver_gws_to_spool")}
    assert {defs.resolve_sensor_def(s).name for s in ("deliver_gws_sensor", "deliver_gws_to_spool_sensor")}

    assert run(materialize_cmd("spool/gws", key(10)), env, log) != 0  # down throughout
    assert "the spool at" in log.read_text() and "is down (fail: true)" in log.read_text()
    assert run(materialize_cmd("siem/gws", key(10)), env, log) == 0, log.read_text()[-3000:]
    truth = sorted(sim_process.truth_ids("login", ts(10), ts(11)))
    ids = siem_ids(tmp_path)
    assert sorted(ids) == truth and len(ids) == len(set(ids)) and spool_ids(tmp_path) == []

    store = SqliteCheckpointStore(tmp_path / "state" / "checkpoints.db")  # two delivery checkpoints
    try:
        file_row, spool_row = (store.get("gws", stage, ts(10)) for stage in ("deliver", "deliver:spool"))
        assert file_row.is_complete and file_row.delivered_events == len(truth)
        assert (spool_row.status, spool_row.delivered_pages) == ("failed", 0) and "is down" in spool_row.last_error
    finally:
        store.close()
    code, window = status(env)
    assert code == 1 and window["deliveries"] == {"siem": "yes", "spool": "no"}
    assert window["delivered"] == "siem: yes, spool: no" and "delivery to spool stopped at page 0" in window["detail"]

    with_sinks(tmp_path, env, {"fail": False})  # the spool is back
    assert run(materialize_cmd("spool/gws", key(10)), env, log) == 0, log.read_text()[-3000:]
    spooled = spool_ids(tmp_path)
    assert sorted(spooled) == truth and len(spooled) == len(set(spooled))
    assert len(sim_process.requests()) == reads  # from the landing store: the API was not read again
    assert sorted(siem_ids(tmp_path)) == truth  # the file sink was not touched again
    code, window = status(env)
    assert code == 0 and window["delivered"] == "yes"


def test_deliver_to_names_the_sinks_of_a_stream(tmp_path, sim_process):
    env = setup_project(tmp_path, sim_process.url)
    with_sinks(tmp_path, env, {}, deliver_to=["spool"])
    from logpull_dagster.config import load_config
    from logpull_dagster.definitions import build_definitions

    defs = build_definitions(load_config(tmp_path / "logpull.yaml"))
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"logs/gws", "spool/gws"}

