"""Retries do not depend on the executor: the same bounds and counts under ``in_process`` and
``multiprocess`` (a process per step attempt, as step-per-pod executors do), through the real
``dagster asset materialize`` CLI, with ``executor:`` set in the config file.

Before the counts moved into the checkpoint row, ``retries: 1`` against an always-bad page under the
multiprocess executor retried for ever ("Retry 1 of 1", 29 times in 90 s): every new process started
from an empty module-level tally.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore

from .cli import materialize_cmd, run, setup_project
from .conftest import hour, key, ts

# Slow tier (`make test-fast` leaves it out): real `dagster` CLI runs under both executors.
pytestmark = pytest.mark.slow

KEY = key(10)
EXECUTORS = ["in_process", "multiprocess"]


def last_metadata(env: dict[str, str]) -> dict[str, Any]:
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        found = instance.fetch_materializations(dg.AssetKey(["logs", "gws"]), limit=1).records
    [record] = found
    assert record.asset_materialization is not None
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def step_events(env: dict[str, str], kind: str) -> int:
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        [run_record] = instance.get_run_records(limit=1)
        return sum(1 for e in instance.all_logs(run_record.dagster_run.run_id)
                   if e.dagster_event and e.dagster_event.event_type_value == kind)


def ran_under(executor: str, log: Path) -> bool:
    text = log.read_text()
    return ("using multiprocess executor" in text) == (executor == "multiprocess")


def truth(sim: Any) -> int:
    return len(sim.ground_truth_ids("login", hour(10), hour(11)))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_fault_retries_are_bounded_under_every_executor(tmp_path: Path, sim: Any, executor: str) -> None:
    sim.set_faults([{"kind": "bad_json", "match": "token", "after": 1, "count": None}])
    env = setup_project(tmp_path, sim.url, page_size=50, retries=1, executor=executor, concurrent_windows=1)
    log = tmp_path / "run.log"
    assert run(materialize_cmd("logs/gws", KEY), env, log, timeout=200) != 0
    text = log.read_text()
    assert ran_under(executor, log)
    assert text.count("Retry 1 of 1") == 1, text[-3000:]
    assert "Gave up after 1 retries" in text
    assert step_events(env, "STEP_UP_FOR_RETRY") == 1
    store = SqliteCheckpointStore(tmp_path / "state" / "checkpoints.db")
    cp = store.get("gws", "pull", ts(10))
    store.close()
    assert cp is not None and cp.status == "failed" and cp.pages_read == 2  # the checkpoint is kept
    assert cp.stats["run"]["faults"] == 2 and cp.stats["run"]["attempts"] == 2


@pytest.mark.timeout(240)
@pytest.mark.parametrize("executor", EXECUTORS)
def test_fault_and_budget_retries_resume_and_count_the_same_under_every_executor(
        tmp_path: Path, sim: Any, executor: str) -> None:
    sim.set_page_latency(0.1)
    sim.set_faults([{"kind": "503", "count": 4, "after": 2}])
    env = setup_project(tmp_path, sim.url, page_size=20, time_budget="1s", http_attempts=2, retries=2,
                        concurrent_windows=1, executor=executor)  # page after page: it counts each page read
    assert run(materialize_cmd("logs/gws", KEY), env, tmp_path / "run.log", timeout=200) == 0
    assert ran_under(executor, tmp_path / "run.log")
    md = last_metadata(env)
    assert md["events"] == truth(sim) and md["status"] == "complete"
    assert md["fault_retries"] == 2 and md["budget_retries"] >= 1
    assert md["attempts"] == md["fault_retries"] + md["budget_retries"] + 1
    assert step_events(env, "STEP_UP_FOR_RETRY") == md["fault_retries"] + md["budget_retries"]
    # Every retry resumed from its checkpoint: no page token was sent twice but for the faulted ones.
    sent = Counter(r["pageToken"] for r in sim.requests() if r.get("status") == 200)
    assert max(sent.values()) == 1 and len(sent) == md["pages_read"]
