"""`logpull status` over every built-in source type and every state backend, and its exit codes.

Before: the text output read ``src.application``, which only Google Workspace has, so any config with an
Okta source crashed (`'OktaConfig' object has no attribute 'application'`) and exited 1, the "gaps" code;
a checkpoint store that could not be reached printed a traceback and exited 1 too. Now: 0 complete, 1
gaps, 2 usage/config error or a store that cannot be used (one line naming it), 3 a bug.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from logpull_dagster.checkpoints import CheckpointStore
from logpull_dagster.cli import main
from logpull_dagster.config import load_config
from logpull_dagster.plugins import open_checkpoints
from logpull_dagster.windows import rfc3339

from .cli import STORES
from .servers import free_port
from .test_status import top_of_this_hour

H = dt.timedelta(hours=1)
SOURCES = [
    {"name": "gws", "type": "google_workspace", "application": "login", "access_token": {"env": "X"}},
    {"name": "okta", "type": "okta", "base_url": "https://acme.okta.com", "token": {"env": "X"}},
]


def put(store: CheckpointStore, source: str, start: dt.datetime, *, delivered: bool = True, hold: bool = False,
        **fields: Any) -> None:
    """A window as runs would have left it: its pull row (``hold``: still leased, a run reading it) and,
    with ``delivered``, a delivery row that covers every landed page."""
    now = time.time()
    cp = store.acquire(source, "pull", rfc3339(start), rfc3339(start + H), owner="run-abc", ttl=600, now=now)
    values = {"status": "complete", "events": 100, "page_seq": 2, "passes": 1,
              "stats": {"last_read_at": rfc3339(start + H)}, **fields}
    cp = store.commit(dataclasses.replace(cp, **values), ttl=600, now=now)
    if not hold:
        store.release(cp, now=now)
    if delivered:
        d = store.acquire(source, "deliver", rfc3339(start), rfc3339(start + H), owner="d", ttl=60, now=now)
        store.release(dataclasses.replace(d, status="complete", page_seq=cp.page_seq, events=cp.events), now=now)


def write_config(tmp_path: Path, first: dt.datetime, stores: dict[str, Any]) -> Path:
    cfg = {"sources": [{**s, "start": rfc3339(first), "settle_lag": "0s"} for s in SOURCES],
           "checkpoints": stores["checkpoints"], "landing": {"type": "local", "path": "landing"}}
    path = tmp_path / "logpull.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow),  # every built-in store
                                   pytest.param("dynamodb", marks=pytest.mark.slow)])  # (slow: PostgreSQL, moto)
def test_status_answers_for_every_source_type_on_every_store(store, tmp_path, servers, monkeypatch, capsys):
    stores, env = STORES[store](tmp_path, servers)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    first = top_of_this_hour() - 4 * H
    path = write_config(tmp_path, first, stores)
    monkeypatch.setenv("LOGPULL_CONFIG", str(path))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    if store == "sqlite":
        (tmp_path / "state").mkdir(exist_ok=True)
    cp_store = open_checkpoints(load_config(path))
    try:
        for name in ("gws", "okta"):
            put(cp_store, name, first)  # complete and delivered
            put(cp_store, name, first + H, delivered=False)  # complete, not delivered yet
            put(cp_store, name, first + 2 * H, status="failed", cursor="c", last_error="PullFailed: page 3: HTTP 503")
            put(cp_store, name, first + 3 * H, status="running", cursor="c", hold=True, delivered=False)
    finally:
        cp_store.close()

    assert main(["status"]) == 1
    text = capsys.readouterr().out
    assert "gws: Google Workspace `login` audit events (google_workspace), hourly windows" in text
    assert "okta: Okta System Log of acme.okta.com (okta), hourly windows" in text
    for name in ("gws", "okta"):
        assert f"{name}: 1 of 4 due windows complete and delivered, 1 gap: {rfc3339(first + H)} .. " \
               f"{rfc3339(first + 4 * H)}" in text
    assert "HTTP 503" in text and "run run-abc" in text

    assert main(["status", "--all", "--source", "okta"]) == 1
    # The four windows' keys (they may span two dates: this test runs at any hour).
    keys = tuple((first + i * H).strftime("%Y-%m-%d-%H:%M") for i in range(4))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(keys)]
    assert [line.split()[1] for line in lines] == ["complete", "complete", "failed", "in"]  # "in progress"

    assert main(["status", "--json"]) == 1
    doc = orjson.loads(capsys.readouterr().out)
    assert [(s["name"], s["due_windows"], s["complete_and_delivered"]) for s in doc["sources"]] == \
           [("gws", 4, 1), ("okta", 4, 1)]
    assert main(["status", "--to", rfc3339(first + H)]) == 0
    capsys.readouterr()


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("logpull")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", **env})


@pytest.mark.slow  # the real `logpull` console script
@pytest.mark.parametrize("store", ["postgres", "dynamodb"])
def test_a_store_that_cannot_be_reached_exits_2_with_one_line_naming_it(store, tmp_path):
    port = free_port()  # nothing listens there
    if store == "postgres":
        stores = {"checkpoints": {"type": "postgres", "dsn": {"env": "PG_DSN"}}}
        env = {"PG_DSN": f"postgresql://logpull:secret-pw@127.0.0.1:{port}/cp?connect_timeout=2"}
        where = f"127.0.0.1:{port}/cp"
    else:
        stores = {"checkpoints": {"type": "dynamodb", "table": "logpull_cp", "region": "us-east-1",
                                  "endpoint_url": f"http://127.0.0.1:{port}"}}
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        where = f"http://127.0.0.1:{port}"
    path = write_config(tmp_path, top_of_this_hour() - 4 * H, stores)
    res = run_cli(["status"], {**env, "LOGPULL_CONFIG": str(path)})
    assert res.returncode == 2, res.stderr
    assert res.stdout == "" and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert res.stderr.startswith("logpull status: cannot use the checkpoint store: ") and where in res.stderr
    assert "Traceback" not in res.stderr and "secret-pw" not in res.stderr


@pytest.mark.slow  # the real `logpull` console script
def test_a_sqlite_file_that_is_not_a_database_exits_2_naming_it(tmp_path):
    path = write_config(tmp_path, top_of_this_hour() - 4 * H,
                        {"checkpoints": {"type": "sqlite", "path": "c.db"}})
    (tmp_path / "c.db").write_bytes(b"this is not a database, it was overwritten by mistake\n" * 100)
    res = run_cli(["status"], {"LOGPULL_CONFIG": str(path)})
    assert res.returncode == 2 and str(tmp_path / "c.db") in res.stderr and "Traceback" not in res.stderr


def test_an_internal_error_exits_3_and_says_it_is_a_bug(tmp_path, monkeypatch, capsys):
    path = write_config(tmp_path, top_of_this_hour() - 4 * H, {"checkpoints": {"type": "sqlite", "path": "c.db"}})
    monkeypatch.setenv("LOGPULL_CONFIG", str(path))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    cp_store = open_checkpoints(load_config(path))
    cp_store.close()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("a bug in the ledger")

    monkeypatch.setattr("logpull_dagster.cli.window_rows", broken)  # stands in for any bug in the command
    assert main(["status"]) == 3
    err = capsys.readouterr().err
    assert "internal error (ZeroDivisionError: a bug in the ledger)" in err and "LOGPULL_DEBUG=1" in err
    monkeypatch.setenv("LOGPULL_DEBUG", "1")
    assert main(["status"]) == 3
    assert "Traceback" in capsys.readouterr().err
