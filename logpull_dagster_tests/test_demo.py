"""`make demo`, the README's first command: two sources side by side against the bundled simulator.

Google Workspace login and admin through a service account (the simulator's token endpoint trusts the
demo's own key) and Okta with an API token; every window complete and delivered exactly, one table per
source, and each stream its own asset in one group per source.
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
def test_make_demo_pulls_google_through_a_service_account_and_okta_and_delivers_every_event(tmp_path):
    state = tmp_path / "demo"
    env = {**os.environ, "LOGPULL_DEMO_DIR": str(state)}
    for name in ("LOGPULL_CONFIG", "DAGSTER_HOME"):
        env.pop(name, None)
    out = subprocess.run([sys.executable, "-m", "logpull_dagster.demo"], env=env, capture_output=True, text=True,
                         timeout=280, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "\nsource gws\n" in out.stdout and "\nsource okta\n" in out.stdout

    delivered = int(re.search(r"(\d+) events delivered to the SIEM folder", out.stdout).group(1))  # type: ignore[union-attr]
    ids = {s: [orjson.loads(line)["event_id"] for f in sorted((state / "siem" / s).glob("*.jsonl"))
               for line in f.read_bytes().splitlines()] for s in ("gws_login", "gws_admin", "okta")}
    assert all(ids.values()), {s: len(v) for s, v in ids.items()}
    assert sum(len(v) for v in ids.values()) == delivered
    assert all(len(v) == len(set(v)) for v in ids.values())

    key = state / "service-account.json"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    text = (state / "logpull.yaml").read_text()
    assert "service_account" in text and "access_token" not in text and "PRIVATE KEY" not in text

    # In the UI: each stream its own asset, one group per source.
    defs = build_definitions(load_config(state / "logpull.yaml"))
    groups = {f"{kind}/{s}": defs.resolve_assets_def(k).group_names_by_key[k]
              for s in ("gws_login", "gws_admin", "okta") for kind in ("logs", "siem")
              for k in [dg.AssetKey([kind, s])]}
    assert groups == {"logs/gws_login": "gws", "siem/gws_login": "gws", "logs/gws_admin": "gws",
                      "siem/gws_admin": "gws", "logs/okta": "okta", "siem/okta": "okta"}

    # `make ui` then starts the daemon on the demo's DAGSTER_HOME: its delivery sensors begin with no cursor
    # and walk every materialization the demo made. Before: one delivery run of 0 events per window.
    with dg.DagsterInstance.from_config(str(state / "dagster_home")) as instance:
        for stream in ("gws_login", "gws_admin", "okta"):
            sensor = defs.resolve_sensor_def(f"deliver_{stream}_sensor")
            with dg.build_sensor_context(instance=instance, definitions=defs, cursor=None,
                                         resources=dict(defs.resources or {})) as ctx:
                tick = sensor.evaluate_tick(ctx)
            assert tick.run_requests == [] and tick.cursor is not None, stream  # it saw them, and has nothing to do
