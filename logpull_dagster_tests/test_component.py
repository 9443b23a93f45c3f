"""The Component door, through the real ``dg`` CLI on ``examples/dg_project`` (copied to tmp_path, so that
nothing is written into the repository): check, list, scaffold, launch one window from the simulator,
and the refusals a wrong defs.yaml meets (the logpull.yaml message, colliding components).

Every ``dg`` command costs ~6 s of imports, so the commands are few and the failing checks run two at
a time."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest
import yaml

from logpull_dagster.config import ConfigError, load_config
from logpull_dagster.simulator import Simulator

from .conftest import TOKEN

# Slow tier (`make test-fast` leaves it out): the real `dg` CLI (check defs, list defs, launch).
pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dg_project"
DG = str(Path(sys.executable).with_name("dg"))
DEFS = Path("logpull_example/defs")
INLINE = DEFS / "google_logs" / "defs.yaml"
FILE = DEFS / "google_drive" / "logpull.yaml"


def copy_project(dest: Path) -> Path:
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".logpull", "__pycache__"))
    return dest


def dg(project: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    home = project / ".dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOGPULL_", "DAGSTER_HOME"))}
    # The venv's own dg finds the project's Python there; COLUMNS keeps rich from wrapping the messages.
    env.update(DAGSTER_HOME=str(home), DAGSTER_DISABLE_TELEMETRY="1", COLUMNS="400", NO_COLOR="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", **(extra_env or {}))
    return subprocess.run([DG, *args], cwd=project, env=env, capture_output=True, text=True, timeout=120)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def logpull_message_lines(path: Path) -> list[str]:
    """The lines ``load_config`` names the wrong keys of ``path`` with, as logpull.yaml users see them."""
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return [line for line in str(err.value).splitlines() if line.startswith("  - ")]


def test_the_example_project_checks_and_lists_beside_a_scaffolded_component(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "proj")
    # The scaffolder's parameter (ScaffoldParams.source), as dg makes it an option: an Okta source.
    out = dg(project, "scaffold", "defs", "logpull_dagster.LogPullComponent", "okta-demo", "--source", "okta")
    assert out.returncode == 0, out.stdout + out.stderr
    scaffolded = yaml.safe_load((project / DEFS / "okta-demo" / "defs.yaml").read_text())
    assert scaffolded["type"] == "logpull_dagster.LogPullComponent"
    [okta] = scaffolded["attributes"]["sources"]
    assert okta["type"] == "okta" and okta["name"] == "okta_demo"
    assert okta["token"] == {"env": "LOGPULL_DEMO_TOKEN"} and "access_token" not in okta

    # Three components side by side: inline, config_file and the scaffolded one, as written.
    out = dg(project, "check", "defs")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All definitions loaded successfully" in out.stdout

    out = dg(project, "list", "defs", "--json")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout[out.stdout.index("{"):])
    assets = {a["asset_key"] for a in listed["assets"]}
    assert assets == {f"{kind}/{s}" for kind in ("logs", "siem") for s in ("gws_login", "gws_drive", "okta_demo")}
    assert {j["name"] for j in listed["jobs"]} == {f"{j}_{s}" for j in ("pull", "deliver")
                                                   for s in ("gws_login", "gws_drive", "okta_demo")}
    assert {s["name"] for s in listed["schedules"]} == {f"pull_{s}_schedule" for s in ("gws_login", "gws_drive",
                                                                                      "okta_demo")}
    assert len(listed["sensors"]) == 6
    # Each component's shared resources under its own folder's namespace: no store shared by accident.
    resources = {r["name"] for r in listed["resources"]}
    for ns in ("google_logs", "google_drive", "okta_demo"):
        assert {f"{ns}_checkpoints", f"{ns}_landing", f"{ns}_siem"} <= resources
    assert {"checkpoints", "landing", "siem"}.isdisjoint(resources)
    assert not (project / ".logpull").exists()  # loading creates nothing


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    # On the real clock: the previous hour is closed and fully published.
    with Simulator(seed=23, events_per_hour=300, token=TOKEN) as sim:
        yield sim


def test_dg_launch_pulls_one_window_from_the_simulator(tmp_path: Path, simulator: Simulator) -> None:
    project = copy_project(tmp_path / "proj")
    # The newest window that has settled (the example's settle_lag is 5m): a run started by hand for a
    # window that has not is refused, so in the first minutes of an hour this is the one before last.
    settled = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    start = settled.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
    key = start.strftime("%Y-%m-%d-%H:%M")
    out = dg(project, "launch", "--assets", "logs/gws_login", "--partition", key,
             extra_env={"LOGPULL_SIMULATOR_URL": simulator.url, "LOGPULL_DEMO_TOKEN": TOKEN})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    landing = project / ".logpull" / "google_logs" / "landing" / "gws_login"
    landed = [orjson.loads(line)["id"] for f in sorted(landing.rglob("page-*.jsonl"))
              for line in f.read_bytes().splitlines()]
    truth = sorted("/".join(i) for i in simulator.ground_truth_ids("login", start, start + dt.timedelta(hours=1)))
    assert truth and sorted(landed) == truth  # every event of the window, once
    assert (project / ".logpull" / "google_logs" / "checkpoints.db").is_file()
    assert not (project / ".logpull" / "google_drive").exists()  # the other component's state is its own
    # The token was read by the run from its environment; it is in no landed file nor in the definitions.
    assert all(TOKEN.encode() not in f.read_bytes() for f in landing.rglob("*") if f.is_file())


def test_wrong_defs_fail_dg_check_defs_with_the_logpull_message_or_name_both_components(tmp_path: Path) -> None:
    cases: dict[str, Path] = {}

    # Inline: a wrong value and a misspelt key, as logpull.yaml would be told.
    p = cases["inline"] = copy_project(tmp_path / "inline")
    edit(p / INLINE, "cadence: hourly", "cadence: weekly")
    edit(p / INLINE, "settle_lag: 5m", "setle_lag: 5m")
    # The same document as a logpull.yaml, for the message it gets from the plain door.
    raw = yaml.safe_load((p / INLINE).read_text())["attributes"]
    for store in ("checkpoints", "landing", "siem"):
        raw[store]["path"] = str(tmp_path / "plain" / store)
    raw["sources"][0]["base_url"] = "http://127.0.0.1:8765"
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "logpull.yaml").write_text(yaml.safe_dump(raw))
    inline_lines = logpull_message_lines(tmp_path / "plain" / "logpull.yaml")
    assert len(inline_lines) == 2

    # config_file: a key that does not exist, in the file the component points at.
    p = cases["config_file"] = copy_project(tmp_path / "config_file")
    edit(p / FILE, "settle_lag: 5m", "settle_lag: 5m\n    max_windows_per_tik: 4")
    file_lines = logpull_message_lines(p / FILE)

    # Two components naming one source, each with its own stores.
    p = cases["same_source"] = copy_project(tmp_path / "same_source")
    edit(p / FILE, "name: gws_drive", "name: gws_login")

    # Two components asking for different executors.
    p = cases["executors"] = copy_project(tmp_path / "executors")
    edit(p / FILE, "executor: in_process", "executor: multiprocess")

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(zip(cases, pool.map(lambda proj: dg(proj, "check", "defs"), cases.values()), strict=True))
    for name, out in results.items():
        assert out.returncode != 0, f"{name}: dg check defs passed:\n{out.stdout}{out.stderr}"
    text = {name: re.sub(r"\s+", " ", out.stdout + out.stderr) for name, out in results.items()}

    for line in inline_lines:
        assert re.sub(r"\s+", " ", line).strip() in text["inline"], (line, text["inline"][-3000:])
    assert "sources[0] (gws_login).cadence: 'weekly' is not allowed" in text["inline"]
    assert "sources[0] (gws_login).setle_lag: unknown key" in text["inline"]
    for line in file_lines:
        assert re.sub(r"\s+", " ", line).strip() in text["config_file"], (line, text["config_file"][-3000:])
    assert "sources[0] (gws_drive).max_windows_per_tik: unknown key" in text["config_file"]

    both = ("defs/google_drive", "defs/google_logs")
    assert "['gws_login'] are also used by the LogPullComponent" in text["same_source"], text["same_source"][-3000:]
    assert all(f in text["same_source"] for f in both)
    assert "set the same executor in every LogPullComponent" in text["executors"], text["executors"][-3000:]
    assert all(f in text["executors"] for f in both)
