"""Partition health in the real Dagster UI: dagster-webserver + headless Chromium (Debian's package).

A DAGSTER_HOME holds two complete windows, one failed, one known gap (an operator skipped a page)
and two missing; the test reads the numbers through the webserver's GraphQL API and checks that the
asset's partitions, events and checks pages show the same truth as ``logpull status``: the known gap
is never green, each window that is not complete says why on its partition, and no check reads
"Execution failed" after a failed run. Screenshots go to test-artifacts/.

The windows are the six hours before this one, so the asset has six partitions on any day: the
partitions list is virtualised, and with a fixed start the window to click scrolled out of view as
the calendar moved on (issue 9).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest

from logpull_dagster.windows import rfc3339

from .cli import DAGSTER, setup_project
from .conftest import TOKEN
from .servers import SimProcess
from .test_status import top_of_this_hour

# Slow tier (`make test-fast` leaves it out): dagster-webserver and Chromium.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
H = dt.timedelta(hours=1)

PARTITION_STATS = """query($path: [String!]!) { assetNodes(assetKeys: [{path: $path}]) {
  partitionStats { numMaterialized numFailed numMaterializing numPartitions }
  assetChecksOrError { ... on AssetChecks { checks { name
    executionForLatestMaterialization { status evaluation { success } } } } } } }"""


def dismiss_community_dialog(page) -> None:  # type: ignore[no-untyped-def]
    """Dagster's UI greets a new browser profile with a "join the community" dialog; skip it."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.first.wait_for(timeout=8_000)
    except Exception:
        return
    skip.first.click()
    skip.first.wait_for(state="hidden", timeout=10_000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def first() -> dt.datetime:
    """The source's first window: six hours before the current one (the sim's clock is this hour's top)."""
    return top_of_this_hour() - 6 * H


def key(first: dt.datetime, i: int) -> str:
    return (first + i * H).strftime("%Y-%m-%d-%H:%M")


@pytest.fixture
def webserver(tmp_path: Path, sim_process: SimProcess, first: dt.datetime,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, dict[str, str]]]:
    sim_process.control("clock", {"now": (first + 6 * H).isoformat()})
    env = setup_project(tmp_path, sim_process.url, start=rfc3339(first), retries=0, page_size=500, settle_lag="0s")
    # populate() runs in this process (load_config, DagsterInstance.get) and reads these; monkeypatch puts
    # them back after the test, so no later test of this worker inherits a deleted config or home.
    for k in ("LOGPULL_CONFIG", "DAGSTER_HOME", "LOGPULL_TEST_TOKEN"):
        monkeypatch.setenv(k, env[k])
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(DAGSTER).with_name("dagster-webserver")), "-h", "127.0.0.1", "-p", str(port),
         "-w", str(ROOT / "workspace.yaml")],
        env=env, cwd=ROOT, stdout=open(tmp_path / "webserver.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{base}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "webserver.log").read_text()
            time.sleep(0.5)
        yield base, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


CHECKS = ("window_complete", "events_inside_window", "no_duplicate_ids", "previous_window_complete", "freshness")


def latest_checks(instance: dg.DagsterInstance) -> dict[str, Any]:
    """The latest execution record of each check of logs/gws."""
    out = {}
    for name in CHECKS:
        [record] = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(["logs", "gws"]), name), limit=1)
        out[name] = record
    return out


def populate(sim_process: SimProcess, first: dt.datetime) -> None:
    """In the DAGSTER_HOME: windows 2 and 3 complete; 4 failed (the API sends a page that is not JSON,
    every time); 5 failed on an unreadable page an operator then skipped (a known gap); 0 and 1 missing."""
    from logpull_dagster.cli import main as logpull
    from logpull_dagster.config import load_config
    from logpull_dagster.definitions import build_definitions

    defs = build_definitions(load_config())
    job = defs.resolve_job_def("pull_gws")
    with dg.DagsterInstance.get() as instance:
        for i in (2, 3):
            assert job.execute_in_process(partition_key=key(first, i), instance=instance).success
        sim_process.control("faults", {"rules": [{"kind": "bad_json", "match": "token", "count": None}]})
        res = job.execute_in_process(partition_key=key(first, 4), instance=instance, raise_on_error=False)
        assert not res.success
        # Before: every check read "Execution failed" after a failed step; now each says what it found.
        checks = latest_checks(instance)
        assert all(r.status.value in ("SUCCEEDED", "FAILED") and r.run_id == res.run_id for r in checks.values()), \
            {n: r.status for n, r in checks.items()}
        assert checks["window_complete"].status.value == "FAILED"
        assert checks["no_duplicate_ids"].status.value == "SUCCEEDED"
        sim_process.control("faults", {"rules": [{"kind": "invalid_utf8", "match": "token", "count": 1}]})
        assert not job.execute_in_process(partition_key=key(first, 5), instance=instance,
                                          raise_on_error=False).success
        assert logpull(["skip-page", "--source", "gws", "--window", key(first, 5), "--reason",
                        "INC-4711: vendor confirms a corrupt export"]) == 0
        res = job.execute_in_process(partition_key=key(first, 5), instance=instance, raise_on_error=False)
        assert res.success  # it reads on past the skipped page, to the end of the window
        assert not res.get_asset_materialization_events()  # a known gap is never materialized (never green)
        window_complete = latest_checks(instance)["window_complete"]
        evaluation = window_complete.event.dagster_event.event_specific_data
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
        assert "known gaps" in evaluation.description and "INC-4711" in evaluation.description


@pytest.mark.timeout(300)
def test_the_ui_shows_materialized_and_failed_partitions_and_the_checks(webserver, sim_process, first):
    from playwright.sync_api import sync_playwright

    base, _ = webserver
    populate(sim_process, first)

    data = httpx.post(f"{base}/graphql", json={"query": PARTITION_STATS, "variables": {"path": ["logs", "gws"]}},
                      timeout=30).json()["data"]["assetNodes"][0]
    stats = data["partitionStats"]
    # The known gap (window 5) is not green: only windows 2 and 3 are materialized; 4 failed; 5, like 0
    # and 1, has no materialization (before: 5 was materialized with status complete, and green).
    assert (stats["numMaterialized"], stats["numFailed"], stats["numPartitions"]) == (2, 1, 6)
    checks = {c["name"]: c for c in data["assetChecksOrError"]["checks"]}
    assert {"window_complete", "previous_window_complete", "freshness"} <= set(checks)

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        page.goto(f"{base}/assets/logs/gws?view=partitions", wait_until="networkidle", timeout=90_000)
        page.get_by_text("Materialized (2)").first.wait_for(timeout=60_000)
        text = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "partitions.png"), full_page=True)
        assert "Failed (1)" in text and "Materialized (2)" in text and "Missing (3)" in text
        # One complete window: its metadata (counts, pages, resumed-from page, events per name).
        dismiss_community_dialog(page)
        page.get_by_text(key(first, 3), exact=True).first.click()
        page.get_by_text("resumed_from_page").first.wait_for(timeout=60_000)
        window_text = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "partition-metadata.png"), full_page=True)
        for name in ("events_per_name", "pages_read", "http_retries", "first_event_time", "landing"):
            assert name in window_text
        # The failed window: its partition lists its events, and the latest says why and what to run.
        page.get_by_text(key(first, 4), exact=True).first.click()
        page.get_by_text("View all historical events").first.wait_for(timeout=60_000)
        page.goto(f"{base}/assets/logs/gws?view=events&partition={key(first, 4)}", wait_until="networkidle",
                  timeout=90_000)
        page.get_by_text("failed_at_page").first.wait_for(timeout=60_000)
        failed_text = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "failed-window.png"), full_page=True)
        assert "response is not JSON" in failed_text and f"--partition {key(first, 4)}" in failed_text
        assert "logpull skip-page --source gws" in failed_text and "unreadable_page" in failed_text
        # The known gap: never green, and its partition says which page an operator skipped, who, why.
        page.goto(f"{base}/assets/logs/gws?view=events&partition={key(first, 5)}", wait_until="networkidle",
                  timeout=90_000)
        page.get_by_text("skipped_pages").first.wait_for(timeout=60_000)
        gap_text = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "known-gap-window.png"), full_page=True)
        assert "known gap" in gap_text and "INC-4711: vendor confirms a corrupt export" in gap_text
        page.goto(f"{base}/assets/logs/gws?view=checks", wait_until="networkidle", timeout=90_000)
        page.get_by_text("previous_window_complete").first.wait_for(timeout=60_000)
        checks_text = page.inner_text("body")
        page.screenshot(path=str(ARTIFACTS / "checks.png"), full_page=True)
        # The source's resource page: its config key by key (typed resources), the secret by its variable.
        page.goto(f"{base}/locations/logpull/resources/gws_api", wait_until="networkidle", timeout=90_000)
        page.get_by_text("settle_lag").first.wait_for(timeout=60_000)
        resource_text = page.inner_text("body")
        (ARTIFACTS / "source-resource.txt").write_text(resource_text)
        page.screenshot(path=str(ARTIFACTS / "source-resource.png"), full_page=True)
        browser.close()
    for field in ("base_url", "page_size", "settle_lag", "lease_ttl", "access_token"):
        assert field in resource_text, field
    assert re.search(r"`page_size:` of the config\s+Int\s+500\s", resource_text)  # each key, with its value
    assert re.search(r"LOGPULL_TEST_TOKEN\s+Env var", resource_text)  # the secret, by its variable
    assert TOKEN not in resource_text and "settings" not in resource_text
    for name in CHECKS:
        assert name in checks_text
    assert "Execution failed" not in checks_text
