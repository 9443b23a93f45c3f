"""Issue 19, case 3, through the real ``dagster`` CLI: this host's clock says the hour is over, the API's
does not. The simulator runs in its own process; its clock is the API's (every answer's ``Date``).

Before the fix, a host clock 25 minutes fast read the current hour as finished: the API served the
events it had so far, the window was marked complete, and the rest of the hour was never delivered.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from logpull_dagster.assets import CLOCK_SKEW_WARN
from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.windows import rfc3339

from .cli import materialize_cmd, run, setup_project, siem_ids
from .test_status import top_of_this_hour

# Slow tier (`make test-fast` leaves it out): real `dagster` CLI runs.
pytestmark = pytest.mark.slow


def materializations(env: dict[str, str], asset: str, partition: str) -> list[dict[str, Any]]:
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset.split("/")), asset_partitions=[partition]),
            limit=10).records
    return [{k: v.value for k, v in r.asset_materialization.metadata.items()}
            for r in records if r.asset_materialization is not None]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("source", ["gws", "okta"])
def test_an_hour_the_api_s_clock_has_not_finished_is_not_completed_until_it_has(tmp_path: Path, sim_process,
                                                                                source: str) -> None:
    t = top_of_this_hour()
    window_start, window_end = t - dt.timedelta(hours=1), t
    start, end = rfc3339(window_start), rfc3339(window_end)
    partition = window_start.strftime("%Y-%m-%d-%H:%M")
    # This host's clock: the hour [t - 1h, t) is over, and with settle_lag 0s it is due. The API's clock
    # (running) is ten minutes before its end: what a host clock ten minutes fast looks like from here.
    sim_process.control("clock", {"offset": (t - dt.timedelta(minutes=10)).timestamp() - time.time()})
    env = setup_project(tmp_path, sim_process.url, source=source, page_size=200, settle_lag="0s")
    log = tmp_path / "runs.log"

    assert run(materialize_cmd(f"logs/{source}", partition), env, log) != 0
    text = log.read_text()
    assert "has not settled by the API's clock" in text and "Nothing of the page was landed or checkpointed" in text
    store = SqliteCheckpointStore(tmp_path / "state" / "checkpoints.db")
    try:
        cp = store.get(source, "pull", start)
    finally:
        store.close()
    assert cp is not None and (cp.status, cp.cursor, cp.events, cp.page_seq, cp.passes) == ("failed", None, 0, 0, 0)
    assert "API's clock" in (cp.last_error or "")
    assert [p for p in (tmp_path / "state" / "landing").rglob("*") if p.is_file()] == []
    assert materializations(env, f"logs/{source}", partition) == []
    served = sim_process.okta_requests() if source == "okta" else sim_process.requests()
    assert [r["status"] for r in served] == [200]  # the first page was served, and refused

    # The API's clock past the hour's end (frozen two minutes ahead of this host's, past the warning's
    # bound): the same window is read, completely, and delivered once.
    api_now = float(int(time.time() + 120))
    sim_process.control("clock", {"now": dt.datetime.fromtimestamp(api_now, dt.UTC).isoformat()})
    before = time.time()
    second = tmp_path / "second.log"
    assert run(materialize_cmd(f"logs/{source}", partition), env, second) == 0, second.read_text()[-3000:]
    after = time.time()
    warned = re.search(r"the API's clock \(its Date header\) is (\d+) s ahead of this host's; .* Sync this host's "
                       r"clock \(NTP\)", second.read_text())
    assert warned and CLOCK_SKEW_WARN < int(warned[1]) <= 120
    assert run(materialize_cmd(f"siem/{source}", partition), env, log) == 0, log.read_text()[-3000:]

    truth = sim_process.okta_truth_ids(start, end) if source == "okta" else sim_process.truth_ids("login", start, end)
    ids = siem_ids(tmp_path)
    assert len(truth) > 1000
    assert len(ids) == len(set(ids)), "an event reached the SIEM twice"
    assert sorted(ids) == sorted(truth), "an event is missing from the SIEM"
    [md] = materializations(env, f"logs/{source}", partition)
    assert md["status"] == "complete" and md["events"] == len(truth)
    # The API's clock (frozen) minus this host's when it answered: about +2 minutes.
    assert api_now - after - 0.1 <= md["api_clock_skew_seconds"] <= api_now - before + 0.1
