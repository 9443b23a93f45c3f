"""Live: `dagster-daemon run` alone keeps a source complete, no manual step.

The daemon runs in its own process group against a temporary DAGSTER_HOME and a simulator on the real
clock; the schedule (every minute here) pulls the settled windows and the delivery sensor (every 5 s)
ships them. The SIEM folder must end exact.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType

from logpull_dagster.windows import UTC, parse_time, rfc3339

from .cli import DAGSTER, setup_project, siem_ids
from .conftest import TOKEN
from .servers import SimProcess

# Slow tier (`make test-fast` leaves it out): the real dagster-daemon, on the wall clock.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def live_sim() -> Iterator[SimProcess]:
    p = SimProcess("--seed", "9", "--events-per-hour", "400", token=TOKEN)  # real clock
    yield p
    p.stop()


@pytest.mark.timeout(240)
def test_the_daemon_alone_pulls_and_delivers_every_settled_window(tmp_path, live_sim):
    now = dt.datetime.now(UTC)
    first = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=2)
    windows = [(first, first + dt.timedelta(hours=1)), (first + dt.timedelta(hours=1), first + dt.timedelta(hours=2))]
    env = setup_project(tmp_path, live_sim.url, start=rfc3339(first), settle_lag="0s", schedule="* * * * *",
                        delivery_interval="5s", page_size=100)
    daemon = subprocess.Popen(
        [str(Path(DAGSTER).with_name("dagster-daemon")), "run", "-w", str(ROOT / "workspace.yaml")],
        env=env, cwd=ROOT, stdout=open(tmp_path / "daemon.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True,
    )
    try:
        truth = sorted(i for s, e in windows for i in live_sim.truth_ids("login", rfc3339(s), rfc3339(e)))
        deadline = time.monotonic() + 200
        ids: list[str] = []
        while time.monotonic() < deadline:
            ids = siem_ids(tmp_path)
            if len(ids) >= len(truth):
                break
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            time.sleep(2)
        time.sleep(6)  # one more sensor interval: nothing more may arrive
        # (if the hour turned meanwhile, the schedule also pulls the next window: keep to these two)
        ids = [i for i in siem_ids(tmp_path) if parse_time(i.split("/")[2]) < windows[-1][1]]
        assert len(ids) == len(set(ids)), "an event reached the SIEM twice"
        assert sorted(ids) == truth, f"SIEM has {len(ids)} of {len(truth)}:\n" + (
            (tmp_path / "daemon.log").read_text()[-3000:])
        # The freshness sensor recorded its check with no run at all.
        with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            records = instance.get_event_records(
                dg.EventRecordsFilter(event_type=DagsterEventType.ASSET_CHECK_EVALUATION), limit=200)
        assert any(r.event_log_entry.run_id == "" and
                   r.event_log_entry.dagster_event.event_specific_data.check_name == "freshness" for r in records)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait()
