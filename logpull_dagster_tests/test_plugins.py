"""A new source type and a new checkpoint store are one module each (``example_plugins/``): registered,
they are chosen by ``type:``, checked key by key, opened by the same factories, and a window goes
through them end to end; registered by an entry point, they are found without any code change."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import orjson
import pytest
import yaml

from logpull_dagster import plugins
from logpull_dagster.config import ConfigError, load_config
from logpull_dagster.definitions import build_definitions
from logpull_dagster.keys import ResourceKeys
from logpull_dagster_tests.example_plugins import counter_api, json_checkpoints

from .conftest import key, ts

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def registered() -> Iterator[None]:
    for module in (counter_api, json_checkpoints):
        for p in module.PLUGINS:
            plugins.register(p)
    yield
    plugins.unregister("source", "counter_api")
    plugins.unregister("checkpoints", "json_file")


def write_config(folder: Path, name: str = "counter", **source: Any) -> Path:
    cfg = {
        "sources": [{"name": name, "type": "counter_api", "token": {"env": "COUNTER_TOKEN"}, "start": ts(-24),
                     "events_per_window": 25, "page_size": 10, **source}],
        "checkpoints": {"type": "json_file", "path": "state/checkpoints.json"},
        "landing": {"type": "local", "path": "state/landing"},
        "siem": {"type": "file", "path": "siem"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "logpull.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "logpull.yaml"


def test_a_registered_type_is_checked_key_by_key_like_a_built_in_one(tmp_path, registered):
    with pytest.raises(ConfigError, match=r"sources\[0\] \(counter\)\.page_sise: unknown key"):
        load_config(write_config(tmp_path, page_sise=10))
    with pytest.raises(ConfigError, match=r"sources\[0\] \(counter\)\.page_size: .*less than or equal to 1000"):
        load_config(write_config(tmp_path, page_size=5000))
    with pytest.raises(ConfigError, match=r"token: secrets are never written in the config; .*\{env: COUNTER_TOKEN\}"):
        load_config(write_config(tmp_path, token="s3cret"))
    with pytest.raises(ConfigError, match=r"\.type: 'zendesk' is not allowed; expected one of .*'counter_api'.*"
                                          r"'google_workspace'|\.type: 'zendesk' is not allowed; expected one of "
                                          r".*'google_workspace'.*'counter_api'"):
        load_config(write_config(tmp_path, type="zendesk"))


def test_an_unregistered_type_is_refused_with_the_types_known(tmp_path):
    with pytest.raises(ConfigError, match=r"sources\[0\] \(counter\)\.type: 'counter_api' is not allowed; "
                                          r"expected one of 'google_workspace'.*entry point group"):
        load_config(write_config(tmp_path))


def test_a_window_goes_through_a_new_source_and_a_new_store_end_to_end(tmp_path, registered, monkeypatch):
    monkeypatch.setenv("COUNTER_TOKEN", "counter-secret")
    config = load_config(write_config(tmp_path))
    defs = build_definitions(config)
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.instance_for_test() as instance:
        for asset in ("logs/counter", "siem/counter"):
            res = job.execute_in_process(partition_key=key(10), instance=instance, raise_on_error=False,
                                         asset_selection=[dg.AssetKey(asset.split("/"))])
            assert res.success, asset
    store = plugins.open_checkpoints(config)
    assert isinstance(store, json_checkpoints.JsonFileCheckpointStore)
    cp = store.get("counter", "pull", ts(10))
    assert cp is not None and cp.is_complete and cp.events == 25 and store.count_ids("counter", ts(10)) == 25
    sent = [orjson.loads(line) for f in sorted((tmp_path / "siem").rglob("*.jsonl"))
            for line in f.read_bytes().splitlines()]
    assert len(sent) == 25 and len({r["event_id"] for r in sent}) == 25
    assert (tmp_path / "state" / "checkpoints.json").exists()
    assert not any("counter-secret" in p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())


def test_two_configs_load_side_by_side_under_their_namespaces(tmp_path, registered):
    a = load_config(write_config(tmp_path / "a", name="counter_a"))
    b = load_config(write_config(tmp_path / "b", name="counter_b"))
    merged = dg.Definitions.merge(build_definitions(a, namespace="a_"), build_definitions(b, namespace="b_"))
    keys = set(merged.resolve_asset_graph().get_all_asset_keys())
    assert {dg.AssetKey(["logs", "counter_a"]), dg.AssetKey(["logs", "counter_b"])} <= keys
    for ns in ("a_", "b_"):
        assert ResourceKeys(ns).checkpoints in (merged.resources or {})
    merged.resolve_job_def("pull_counter_a")
    merged.resolve_schedule_def("pull_counter_b_schedule")


@pytest.mark.slow  # a fresh Python importing Dagster
def test_a_third_party_package_registers_its_types_through_an_entry_point(tmp_path):
    """A real entry point, in a dist-info folder on sys.path, as ``pip install`` would leave it."""
    dist = tmp_path / "logpull_counter-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: logpull-counter\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[logpull_dagster.plugins]\ncounter = logpull_dagster_tests.example_plugins.counter_api\n"
        "json_file = logpull_dagster_tests.example_plugins.json_checkpoints\n")
    code = ("from logpull_dagster import plugins; "
            "print(sorted(plugins.plugins('source')), sorted(plugins.plugins('checkpoints')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("['counter_api', 'github', 'google_workspace', 'msgraph', 'okta', 'rest', 'slack'] "
                                  "['dynamodb', 'json_file', 'postgres', 'sqlite']")


@pytest.mark.slow  # a fresh Python importing Dagster
def test_a_broken_entry_point_names_itself(tmp_path):
    dist = tmp_path / "broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[logpull_dagster.plugins]\nbroken = no_such_module_here\n")
    code = "from logpull_dagster import plugins; plugins.plugins('source')"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "entry point broken = no_such_module_here (group logpull_dagster.plugins) failed to load" in out.stderr
