"""Lost landed pages and stale deliveries through the real CLIs (`dagster asset materialize`, `logpull`),
against the bundled simulator, local folders, and S3 on moto's server.

Issue 19, as it was reproduced: with one landed page deleted (a file, or an S3 object, as a lifecycle rule
on the landing bucket does), delivery exited 0 and `logpull status` said "complete and delivered" while
that page's events never reached the SIEM; with the landing bucket deleted and made again, windows failed
on every rerun and the runbook's reset + re-read + deliver reported them complete with their events
missing; a delivery stalled on S3 past its lease, taken over and finished by another machine, then wrote
its batch again for a forwarder that had shipped and deleted the first copy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import orjson
import pytest
import yaml

from logpull_dagster.windows import rfc3339

from .cli import logpull, materialize_cmd, run, setup_project, siem_ids, start
from .conftest import hour, key, ts
from .servers import AWS_ENV, Gate, SimProcess
from .test_s3_landing import keys, new_bucket

# Slow tier (`make test-fast` leaves it out): real `dagster` CLI runs, S3 on moto.
pytestmark = pytest.mark.slow


def window_status(env: dict[str, str], first: int, last: int) -> tuple[int, dict[str, dict[str, Any]]]:
    """`logpull status --json` over windows ``first..last`` (hours of DAY): its exit code and rows by window."""
    res = logpull(["status", "--json", "--from", ts(first), "--to", ts(last + 1)], env)
    assert res.returncode in (0, 1), res.stderr
    [src] = orjson.loads(res.stdout)["sources"]
    return res.returncode, {w["window"]: w for w in src["windows"]}


def truth(sim: SimProcess, first: int, last: int) -> list[str]:
    return sorted(i for h in range(first, last + 1) for i in sim.truth_ids("login", ts(h), ts(h + 1)))


def exact(tmp_path: Path, expected: list[str], shipped: list[str] = ()) -> None:  # type: ignore[assignment]
    ids = [*shipped, *siem_ids(tmp_path)]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} events reached the SIEM twice"
    assert sorted(ids) == expected, f"{len(set(expected) - set(ids))} events never reached the SIEM"


@pytest.mark.timeout(300)
def test_a_deleted_landed_page_is_a_gap_until_logpull_recover_and_a_re_read_deliver_it(tmp_path, sim_process):
    env = setup_project(tmp_path, sim_process.url, page_size=400)
    log = tmp_path / "runs.log"
    assert run(materialize_cmd("logs/gws", key(10)), env, log) == 0, log.read_text()[-3000:]
    folder = tmp_path / "state" / "landing" / "gws" / hour(10).strftime("%Y%m%dT%H%MZ")
    pages = sorted(folder.glob("page-*.jsonl"))
    assert len(pages) >= 5
    pages[2].unlink()  # someone cleaned up the landing folder too eagerly

    assert run(materialize_cmd("siem/gws", key(10)), env, log) != 0
    assert f"landed page 2 (of {len(pages)}) is missing from {folder}" in log.read_text()
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:  # and on the partition, in the UI
        [obs] = instance.fetch_observations(dg.AssetKey(["siem", "gws"]), limit=5).records
    meta = {k: v.value for k, v in obs.asset_observation.metadata.items()}
    assert (obs.partition_key, meta["status"], meta["missing_page"]) == (key(10), "failed", 2)
    assert f"logpull recover --source gws --window {key(10)}" in meta["recover"]
    code, rows = window_status(env, 10, 10)
    assert code == 1 and rows[key(10)]["delivered"] == f"2 of {len(pages)} pages"
    assert f"landed page 2 is missing from the landing store; `logpull recover --source gws --window {key(10)}`" \
        in rows[key(10)]["detail"]

    res = logpull(["recover", "--source", "gws", "--window", key(10)], env)
    assert res.returncode == 0, res.stderr
    assert f"gws {key(10)}: recovered: landed page(s) 2 of {len(pages)} (1 not delivered yet)" in res.stdout
    assert f"--select logs/gws --partition {key(10)}" in res.stdout
    code, rows = window_status(env, 10, 10)
    assert code == 1 and rows[key(10)]["status"] == "failed" and "recovered by" in rows[key(10)]["detail"]

    assert run(materialize_cmd("logs/gws", key(10)), env, log) == 0, log.read_text()[-3000:]
    assert run(materialize_cmd("siem/gws", key(10)), env, log) == 0, log.read_text()[-3000:]
    code, rows = window_status(env, 10, 10)
    assert code == 0 and (rows[key(10)]["status"], rows[key(10)]["delivered"]) == ("complete", "yes")
    exact(tmp_path, truth(sim_process, 10, 10))


@pytest.mark.timeout(300)
def test_a_landing_bucket_deleted_and_made_again_is_recovered_window_by_window(tmp_path, sim_process, servers):
    bucket = new_bucket(servers.moto.url)
    env = {**setup_project(tmp_path, sim_process.url, page_size=400), **AWS_ENV}
    cfg_file = tmp_path / "logpull.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg["landing"] = {"type": "s3", "bucket": bucket, "prefix": "landing", "region": "us-east-1",
                      "endpoint_url": servers.moto.url}
    cfg_file.write_text(yaml.safe_dump(cfg))
    log = tmp_path / "runs.log"
    span = ["--partition-range", f"{key(8)}...{key(10)}"]
    assert run([*materialize_cmd("logs/gws", key(8))[:-2], *span], env, log) == 0, log.read_text()[-3000:]
    assert run(materialize_cmd("siem/gws", key(8)), env, log) == 0  # 08:00 reached the SIEM before the loss
    s3 = boto3.client("s3", endpoint_url=servers.moto.url, region_name="us-east-1")
    landed = keys(servers.moto.url, bucket)
    assert len(landed) >= 15
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in landed]})
    s3.delete_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=bucket)  # made again, empty: a Terraform re-apply, a wrong cleanup script

    assert run([*materialize_cmd("siem/gws", key(9))[:-2], "--partition-range", f"{key(9)}...{key(10)}"],
               env, log) != 0
    where = f"s3://{bucket}/landing/gws/{hour(9).strftime('%Y%m%dT%H%MZ')}/"
    assert "landed page 0 (of " in log.read_text() and where in log.read_text()
    code, rows = window_status(env, 8, 10)
    assert code == 1 and rows[key(8)]["delivered"] == "yes"
    assert all(rows[key(h)]["delivered"] == "no" and "landed page 0 is missing" in rows[key(h)]["detail"]
               for h in (9, 10))

    res = logpull(["recover", "--source", "gws", "--from", ts(8), "--to", ts(11)], env)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert f"gws {key(8)}: landed page(s) 0-" in out and "every one of them was delivered already" in out
    assert f"gws {key(9)}: recovered" in out and f"gws {key(10)}: recovered" in out
    assert f"--partition-range {key(9)}...{key(10)}" in out

    range_cmd = ["--partition-range", f"{key(9)}...{key(10)}"]
    assert run([*materialize_cmd("logs/gws", key(9))[:-2], *range_cmd], env, log) == 0, log.read_text()[-3000:]
    assert run([*materialize_cmd("siem/gws", key(9))[:-2], *range_cmd], env, log) == 0, log.read_text()[-3000:]
    code, rows = window_status(env, 8, 10)
    assert code == 0, rows
    exact(tmp_path, truth(sim_process, 8, 10))


@pytest.mark.timeout(300)
def test_a_delivery_stalled_on_s3_past_its_lease_writes_nothing_after_another_machine_delivered(
        tmp_path, sim_process, servers):
    """Two machines share the checkpoint database and the SIEM folder; machine A reaches S3 through a path
    that stalls. A takes the window's delivery and stalls listing its pages; its lease lapses; machine B
    delivers the whole window; the forwarder ships B's files and deletes them; then A's S3 answers."""
    bucket = new_bucket(servers.moto.url)
    gate = Gate(servers.moto.port)
    shared = {"checkpoints": {"type": "sqlite", "path": str(tmp_path / "state" / "checkpoints.db")},
              "siem": {"type": "file", "path": str(tmp_path / "siem")}}
    envs = {}
    for machine, endpoint in (("a", gate.url), ("b", servers.moto.url)):
        folder = tmp_path / machine
        folder.mkdir()
        env = setup_project(folder, sim_process.url, page_size=400, lease_ttl="3s")
        cfg = yaml.safe_load((folder / "logpull.yaml").read_text())
        cfg.update(shared, landing={"type": "s3", "bucket": bucket, "prefix": "landing", "region": "us-east-1",
                                    "endpoint_url": endpoint})
        (folder / "logpull.yaml").write_text(yaml.safe_dump(cfg))
        envs[machine] = {**env, **AWS_ENV}
    log = tmp_path / "runs.log"
    try:
        assert run(materialize_cmd("logs/gws", key(10)), envs["b"], log) == 0, log.read_text()[-3000:]
        gate.pause()
        a = start(materialize_cmd("siem/gws", key(10)), envs["a"], tmp_path / "a.log")
        db = tmp_path / "state" / "checkpoints.db"
        deadline = time.monotonic() + 60
        while not _holds_delivery(db, rfc3339(hour(10))):
            assert a.poll() is None and time.monotonic() < deadline, (tmp_path / "a.log").read_text()[-3000:]
            time.sleep(0.05)
        # B waits for A's lease to lapse (lease_ttl 3 s), takes the window over and delivers all of it.
        assert run(materialize_cmd("siem/gws", key(10)), envs["b"], log) == 0, log.read_text()[-3000:]
        shipped = []
        for f in sorted((tmp_path / "siem").rglob("*.jsonl")):  # the forwarder ships, then deletes
            shipped += [orjson.loads(line)["event_id"] for line in f.read_bytes().splitlines()]
            f.unlink()
        assert shipped
        gate.resume()
        assert a.wait(timeout=120) != 0
    finally:
        gate.close()
    a_log = (tmp_path / "a.log").read_text()
    assert "was taken over by another run" in a_log, a_log[-3000:]
    exact(tmp_path, truth(sim_process, 10, 10), shipped)
    assert not list((tmp_path / "siem" / "gws").glob("*.jsonl"))  # A made nothing visible


def _holds_delivery(db: Path, window_start: str) -> bool:
    import sqlite3

    if not db.exists():
        return False
    conn = sqlite3.connect(db, timeout=5)
    try:
        row = conn.execute("SELECT lease_owner FROM checkpoints WHERE stage='deliver' AND window_start=?",
                           (window_start,)).fetchone()
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()
    return row is not None and row[0] is not None
