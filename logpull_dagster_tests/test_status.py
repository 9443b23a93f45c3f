"""`logpull status` and `logpull reset`: the ledger an auditor and an on-call engineer read."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml

from logpull_dagster.checkpoints import Checkpoint
from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.cli import main
from logpull_dagster.windows import UTC, rfc3339

H = dt.timedelta(hours=1)


def hkey(t: dt.datetime) -> str:
    """The hourly partition key of the window starting at ``t``."""
    return t.strftime("%Y-%m-%d-%H:%M")


def top_of_this_hour() -> dt.datetime:
    """The current hour, waiting out its last seconds: the windows due must not change mid-test."""
    now = dt.datetime.now(UTC)
    if now.minute == 59 and now.second >= 45:
        time.sleep(61 - now.second)
    return dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def write_config(tmp_path: Path, start: dt.datetime) -> SqliteCheckpointStore:
    cfg = {"sources": [{"name": "gws", "type": "google_workspace", "application": "login",
                        "access_token": {"env": "X"}, "start": rfc3339(start), "settle_lag": "0s"}],
           "checkpoints": {"type": "sqlite", "path": "c.db"}}
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump(cfg))
    return SqliteCheckpointStore(tmp_path / "c.db")


def put(store: SqliteCheckpointStore, start: dt.datetime, *, delivered: bool = True, **changes) -> Checkpoint:  # type: ignore[no-untyped-def]
    """Write a pull checkpoint (and a delivery one) as runs would have left it."""
    now = time.time()
    cp = store.acquire("gws", "pull", rfc3339(start), rfc3339(start + H), owner="setup", ttl=60, now=now)
    fields = {"status": "complete", "events": 100, "page_seq": 2, "passes": 1,
              "stats": {"last_read_at": rfc3339(start + 2 * H)}, **changes}
    cp = store.commit(dataclasses.replace(cp, **{k: v for k, v in fields.items() if k not in ("lease_owner",
                                                                                             "lease_expires")}),
                      ttl=60, now=now)
    if "lease_owner" in changes:  # leave it held as a running (or dead) run would
        db = sqlite3.connect(store.path)
        with db:
            db.execute("UPDATE checkpoints SET lease_owner=?, lease_expires=? WHERE window_start=?",
                       (changes["lease_owner"], changes["lease_expires"], rfc3339(start)))
        db.close()
    else:
        store.release(cp, now=now)
    if delivered:
        d = store.acquire("gws", "deliver", rfc3339(start), rfc3339(start + H), owner="setup", ttl=60, now=now)
        store.release(dataclasses.replace(d, status="complete", page_seq=cp.page_seq, events=cp.events), now=now)
    return cp


@pytest.fixture
def ledger(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """Eight hourly windows, the last ending at the top of this hour: 0-2 fine, 3 undelivered, 4 failed, 5 being read,
    6 left by a dead run, 7 never requested."""
    monkeypatch.setenv("LOGPULL_CONFIG", str(tmp_path / "logpull.yaml"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    first = top_of_this_hour() - 8 * H
    store = write_config(tmp_path, first)
    for i in range(3):
        put(store, first + i * H)
    put(store, first + 3 * H, delivered=False)
    put(store, first + 4 * H, status="failed", cursor="tok", last_error="PullFailed: page 3: HTTP 503")
    put(store, first + 5 * H, status="running", cursor="tok", lease_owner="run-abc", lease_expires=time.time() + 50)
    put(store, first + 6 * H, status="running", cursor="tok", reads=3, journaled=1, lease_owner="run-dead",
        lease_expires=time.time() - 5)
    store.close()
    return first


def test_status_names_every_window_that_is_not_complete_and_delivered(ledger, capsys):
    assert main(["status", "--json"]) == 1
    doc = orjson.loads(capsys.readouterr().out)
    src = doc["sources"][0]
    by = {w["window"]: w for w in src["windows"]}
    status = [w["status"] for w in src["windows"]]
    assert status == ["complete"] * 4 + ["failed", "in progress", "failed", "missing"]
    assert [w["delivered"] for w in src["windows"]][:4] == ["yes", "yes", "yes", "no"]
    key = lambda i: (ledger + i * H).strftime("%Y-%m-%d-%H:%M")  # noqa: E731
    assert "HTTP 503" in by[key(4)]["detail"]
    assert "run-abc" in by[key(5)]["detail"] and "page 1" in by[key(5)]["detail"]
    assert "run-dead died" in by[key(6)]["detail"] and "lease lapsed" in by[key(6)]["detail"]
    assert "after landing 1 page(s) it read (journaled)" in by[key(6)]["detail"]
    assert by[key(7)]["detail"] == "due, never requested"
    assert (src["due_windows"], src["complete_and_delivered"]) == (8, 3)
    assert src["gaps"] == [[rfc3339(ledger + 3 * H), rfc3339(ledger + 8 * H)]]
    assert doc["ok"] is False


def test_status_in_a_clean_range_exits_zero_and_prints_a_summary(ledger, capsys):
    assert main(["status", "--from", rfc3339(ledger), "--to", rfc3339(ledger + 3 * H)]) == 0
    out = capsys.readouterr().out
    assert "gws: 3 of 3 due windows complete and delivered, 0 gaps" in out
    assert main(["status"]) == 1
    out = capsys.readouterr().out
    assert f"gws: 3 of 8 due windows complete and delivered, 1 gap: {rfc3339(ledger + 3 * H)} .. " in out


def test_reset_refuses_while_a_run_holds_the_window_and_otherwise_restarts_it_from_page_one(ledger, capsys, tmp_path):
    held = (ledger + 5 * H).strftime("%Y-%m-%d-%H:%M")
    assert main(["reset", "--source", "gws", "--window", held]) == 1
    assert "refused" in capsys.readouterr().err
    dead = (ledger + 6 * H).strftime("%Y-%m-%d-%H:%M")
    assert main(["reset", "--source", "gws", "--window", dead]) == 0
    assert f"--partition {dead}" in capsys.readouterr().out
    store = SqliteCheckpointStore(tmp_path / "c.db")
    cp = store.get("gws", "pull", rfc3339(ledger + 6 * H))
    store.close()
    assert (cp.cursor, cp.pages_read, cp.status, cp.lease_owner, cp.events) == (None, 0, "failed", None, 100)
    assert "reset by an operator" in cp.last_error
    assert main(["reset", "--source", "nope", "--window", dead]) == 2
    assert main(["reset", "--source", "gws", "--window", "yesterday"]) == 2


def test_five_thousand_windows_fold_into_a_readable_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOGPULL_CONFIG", str(tmp_path / "logpull.yaml"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    first = top_of_this_hour() - 5001 * H
    store = write_config(tmp_path, first)
    put(store, first)  # creates the schema; the rest in bulk, as thousands of runs would have
    rows = []
    for i in range(1, 5000):
        if i == 2500:
            continue  # one hole in the middle
        s, e = rfc3339(first + i * H), rfc3339(first + (i + 1) * H)
        for stage in ("pull", "deliver"):
            rows.append(("gws", stage, s, e, "complete", 2, 0, 100, 1, 1, 1, 0, 0,
                         orjson.dumps({"last_read_at": e}).decode()))
    db = sqlite3.connect(tmp_path / "c.db")
    columns = ("source, stage, window_start, window_end, status, page_seq, pages_read, events, passes, attempts, "
               "epoch, lease_expires, heartbeat, stats")
    with db:
        db.executemany(f"INSERT INTO checkpoints ({columns}) VALUES ({','.join('?' * 14)})", rows)
    db.close()
    store.close()
    started = time.perf_counter()
    assert main(["status"]) == 1
    elapsed = time.perf_counter() - started
    out = capsys.readouterr().out.splitlines()
    assert len(out) < 12, out  # header, 3 folded runs + the missing one, summary, freshness
    assert any("complete x2499" in line for line in out) and any("missing" in line for line in out)
    assert any("4999 of 5001 due windows complete and delivered, 2 gaps" in line for line in out)
    print(f"status over 5,001 windows: {elapsed:.2f}s")


@pytest.mark.slow  # the real `logpull` console script
def test_the_console_script_is_installed(ledger, tmp_path):
    exe = Path(sys.executable).with_name("logpull")
    res = subprocess.run([str(exe), "status", "--json"], capture_output=True, text=True,
                         env={"LOGPULL_CONFIG": str(tmp_path / "logpull.yaml"), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 1 and orjson.loads(res.stdout)["ok"] is False
