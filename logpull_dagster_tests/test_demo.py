"""`make demo`, the README's first command: three sources side by side against the bundled simulator.

Google Workspace login and admin through a service account (the simulator's token endpoint trusts the
demo's own key), Okta with an API token and GitHub's enterprise audit log with a token; every window
complete and delivered exactly to both sinks (the
file sink ``siem`` and ``splunk``, the Splunk HEC sink at the bundled HEC receiver the demo runs), one
table per source, and each stream its own asset in one group per source.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys

import dagster as dg
import orjson
import pytest

from logpull_dagster.config import load_config
from logpull_dagster.definitions import build_definitions

# Slow tier (`make test-fast` leaves it out): `make demo` in a process of its own.
pytestmark = pytest.mark.slow


@pytest.mark.timeout(300)
def test_make_demo_pulls_google_okta_and_github_and_delivers_every_event_to_a_folder_and_splunk_hec(tmp_path,
                                                                                                   monkeypatch):
    state = tmp_path / "demo"
    env = {**os.environ, "LOGPULL_DEMO_DIR": str(state), "LOGPULL_DEMO_WINDOWS": "2"}  # make demo reads 4
    for name in ("LOGPULL_CONFIG", "DAGSTER_HOME"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-m", "logpull_dagster.demo"], env=env, capture_output=True, text=True,
                         timeout=280, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "\nsource gws\n" in out.stdout and "\nsource okta\n" in out.stdout and "\nsource github\n" in out.stdout
    # The closing hint runs from the working directory as printed: the venv's logpull, not one on PATH.
    hint = re.search(r"the ledger of these windows:  LOGPULL_CONFIG=\S+ (\S+) status$", out.stdout, re.M)
    assert hint is not None and os.access(tmp_path / hint.group(1), os.X_OK), out.stdout[-1500:]

    delivered = int(re.search(r"(\d+) events delivered to the SIEM folder", out.stdout).group(1))  # type: ignore[union-attr]
    ids = {s: [orjson.loads(line)["event_id"] for f in sorted((state / "siem" / s).glob("*.jsonl"))
               for line in f.read_bytes().splitlines()] for s in ("gws_login", "gws_admin", "okta", "github")}
    assert all(ids.values()), {s: len(v) for s, v in ids.items()}
    assert sum(len(v) for v in ids.values()) == delivered
    assert all(len(v) == len(set(v)) for v in ids.values())

    # Every event of every window in the file sink is indexed once at the HEC receiver (it ran in the demo's
    # process, so its own count, printed, is the witness), every ack read; the table has a column per sink.
    assert re.search(r"^\s*stream\s+window\s+events\s.*\ssiem\s+splunk\s", out.stdout, re.M), out.stdout[-3000:]
    assert f"{delivered} events delivered to Splunk HEC (splunk)" in out.stdout
    hec = re.search(r"the HEC receiver indexed (\d+) events, each event of every window once; (\d+) of (\d+) acks "
                    r"read \(every one\)", out.stdout)
    assert hec is not None, out.stdout[-3000:]
    assert int(hec.group(1)) == delivered and hec.group(2) == hec.group(3) and int(hec.group(3)) > 0
    for stream, events in ids.items():  # per window: the splunk column equals the events pulled and the siem column
        rows = [line.split() for line in out.stdout.splitlines() if line.split()[:1] == [stream]]
        assert len(rows) == 2 and all(r[2] == r[7] == r[8] for r in rows), rows
        assert sum(int(r[8]) for r in rows) == len(events)

    key = state / "service-account.json"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = (state / "logpull.yaml").read_text()
    assert "service_account" in text and "access_token" not in text and "PRIVATE KEY" not in text
    config = load_config(state / "logpull.yaml")
    assert list(config.all_sinks) == ["siem", "splunk"] and config.siem is None
    assert config.all_sinks["siem"].type == "file" and config.all_sinks["splunk"].type == "splunk_hec"
    assert "demo-hec-token" not in text  # the token is read from LOGPULL_DEMO_HEC_TOKEN

    # In the UI: each stream its own asset, one group per source.
    # The environment `make ui` runs dagster dev in (what prepare returns): resources read their secrets there.
    for name, value in (("LOGPULL_DEMO_HEC_TOKEN", "demo-hec-token"), ("LOGPULL_DEMO_TOKEN", "demo-token"),
                        ("LOGPULL_DEMO_SA_FILE", str(key))):
        monkeypatch.setenv(name, value)
    defs = build_definitions(config)
    groups = {f"{kind}/{s}": defs.resolve_assets_def(k).group_names_by_key[k]
              for s in ("gws_login", "gws_admin", "okta", "github") for kind in ("logs", "siem", "splunk")
              for k in [dg.AssetKey([kind, s])]}
    streams = {"gws_login": "gws", "gws_admin": "gws", "okta": "okta", "github": "github"}
    assert groups == {f"{kind}/{s}": group for s, group in streams.items() for kind in ("logs", "siem", "splunk")}

    # `make ui` then starts the daemon on the demo's DAGSTER_HOME: its delivery sensors begin with no cursor
    # and walk every materialization the demo made. Before: one delivery run of 0 events per window.
    with dg.DagsterInstance.from_config(str(state / "dagster_home")) as instance:
        for sensor_name in (f"deliver_{s}{to}_sensor" for s in ("gws_login", "gws_admin", "okta", "github")
                            for to in ("", "_to_splunk")):
            sensor = defs.resolve_sensor_def(sensor_name)
            with dg.build_sensor_context(instance=instance, definitions=defs, cursor=None,
                                         resources=dict(defs.resources or {})) as ctx:
                tick = sensor.evaluate_tick(ctx)
            assert tick.run_requests == [] and tick.cursor is not None, sensor_name  # it saw them, nothing to do
