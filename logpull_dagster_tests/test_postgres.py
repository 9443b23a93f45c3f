"""The PostgreSQL checkpoint store beyond the contract suite (test_contract_checkpoints.py runs that).

What only a real server shows: the DSN's secret kept out of every message, the schema created by
several processes at once, values ``text`` cannot hold, a table or database dropped under a live
store, an outage longer than the reconnect bound, and the server restarted in the middle of a real
``dagster asset materialize`` run, after which the SIEM still holds every event exactly once.
Everything talks to the session's PostgreSQL cluster (conftest ``postgres_server``) over TCP.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
import textwrap
import time
import traceback
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from logpull_dagster import plugins
from logpull_dagster.checkpoints import CheckpointStoreLost, LeaseLost
from logpull_dagster.checkpoints.postgres import (
    CheckpointStoreUnavailable,
    PostgresCheckpointsConfig,
    PostgresCheckpointStore,
    PostgresStoreError,
)
from logpull_dagster.config import parse_config
from logpull_dagster_tests.cli import materialize_cmd, run, setup_project, siem_ids, start
from logpull_dagster_tests.conftest import key, ts
from logpull_dagster_tests.servers import Gate, PostgresServer, free_port

# Slow tier (`make test-fast` leaves it out): a PostgreSQL cluster of its own, and real `dagster` CLI runs.
pytestmark = pytest.mark.slow

S, START, END = "s", "2026-11-26T10:00:00Z", "2026-11-26T11:00:00Z"
PASSWORD = "pw-Zq7x!s3cr3t-9d1"  # the test cluster trusts loopback, so any password connects


def with_password(dsn: str, port: int | None = None) -> str:
    """``dsn`` (postgresql://postgres@127.0.0.1:PORT/DB) with PASSWORD in it, optionally another port."""
    rest = dsn.split("@", 1)[1]
    if port is not None:
        rest = f"127.0.0.1:{port}/" + rest.split("/", 1)[1]
    return f"postgresql://postgres:{PASSWORD}@{rest}"


def failure_text(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """Everything a log would show of the failure: message, chained causes, traceback."""
    return "".join(traceback.format_exception(excinfo.value))


def config(env: str = "LOGPULL_PG_DSN") -> PostgresCheckpointsConfig:
    return PostgresCheckpointsConfig.model_validate({"type": "postgres", "dsn": {"env": env}})


# ---- the DSN is a secret -----------------------------------------------------------------------

@pytest.mark.parametrize("value", [None, "", "  \n"])
def test_an_unset_or_empty_dsn_variable_fails_the_open_naming_the_variable_and_the_fix(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("LOGPULL_PG_DSN", raising=False)
    else:
        monkeypatch.setenv("LOGPULL_PG_DSN", value)
    with pytest.raises(PostgresStoreError) as e:
        plugins.open_store("checkpoints", config(), tmp_path)
    message = str(e.value)
    assert "checkpoints.dsn" in message and "LOGPULL_PG_DSN" in message and "unset or empty" in message
    assert "LOGPULL_PG_DSN=postgresql://user:password@host:5432/dbname" in message  # the fix


def test_a_dsn_written_into_the_config_is_refused_with_the_way_to_name_it() -> None:
    raw = {"sources": [{"name": "gws", "type": "google_workspace", "application": "login",
                        "base_url": "https://admin.googleapis.com", "access_token": {"env": "T"},
                        "start": ts(-24)}],
           "checkpoints": {"type": "postgres", "dsn": f"postgresql://u:{PASSWORD}@db:5432/logpull"}}
    with pytest.raises(Exception) as e:
        parse_config(raw)
    assert "dsn: {env: LOGPULL_PG_DSN}" in str(e.value)
    assert PASSWORD not in str(e.value)


def test_the_password_is_never_in_where_or_in_any_error(postgres_server: PostgresServer,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    dsn = with_password(postgres_server.new_database("pw"))
    db = dsn.rsplit("/", 1)[1]
    monkeypatch.setenv("LOGPULL_PG_DSN", dsn)
    assert config().where(Path) == f"postgresql://127.0.0.1:{postgres_server.port}/{db}"
    store = plugins.open_store("checkpoints", config(), tmp_path)
    try:
        assert store.where == f"postgresql://127.0.0.1:{postgres_server.port}/{db}"
        cp = store.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)
        store.acquire(S, "pull", START, END, owner="b", ttl=10, now=200)
        with pytest.raises(LeaseLost) as lost:
            store.commit(cp, ttl=10, now=201)
        assert PASSWORD not in failure_text(lost)
    finally:
        store.close()

    closed = free_port()  # nothing listens there
    bad = {
        "server down": with_password(dsn, port=closed),
        "no such database": with_password(postgres_server.dsn("no_such_db")),
        "malformed URI": f"postgresql://postgres:{PASSWORD}%zz@127.0.0.1:{postgres_server.port}/{db}",
        "unknown keyword": f"host=127.0.0.1 port={postgres_server.port} dbname={db} password={PASSWORD} bogus=1",
    }
    for case, value in bad.items():
        with pytest.raises(PostgresStoreError) as e:
            PostgresCheckpointStore(value, connect_timeout=2)
        text = failure_text(e)
        assert PASSWORD not in text, case
        assert "checkpoints" in str(e.value), case  # names the key it is about
        assert str(closed) in text or case != "server down"


def test_an_outage_past_the_reconnect_bound_fails_the_call_and_writes_nothing(
        postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture) -> None:
    """Through a TCP gate (servers.Gate), so the cluster other tests use stays up."""
    gate = Gate(postgres_server.port)
    dsn = with_password(postgres_server.new_database("gate"), port=gate.port)
    store = PostgresCheckpointStore(dsn, reconnect_timeout=5)
    try:
        cp = store.acquire(S, "pull", START, END, owner="a", ttl=600, now=100)
        cp = store.commit(dataclasses.replace(cp, page_seq=1), ttl=600, now=101, landed_ids=[(1, b"a" * 16)])
        gate.close()
        t0 = time.monotonic()
        with caplog.at_level(logging.WARNING), pytest.raises(CheckpointStoreUnavailable) as e:
            store.commit(dataclasses.replace(cp, page_seq=2), ttl=600, now=102, landed_ids=[(2, b"b" * 16)])
        took = time.monotonic() - t0
        assert 5 <= took < 20, took  # bounded: the attempt fails instead of hanging
        assert "stayed unreachable for 5s" in str(e.value) and "nothing of this call was written" in str(e.value)
        assert "retrying on a new connection" in caplog.text  # it did try again
        assert PASSWORD not in failure_text(e) and PASSWORD not in caplog.text
        gate.open()
        back = PostgresCheckpointStore(dsn)
        try:
            assert back.get(S, "pull", START) == cp and back.count_ids(S, START) == 1
        finally:
            back.close()
        # The store itself heals too: its next call succeeds on a new connection.
        assert store.commit(dataclasses.replace(cp, page_seq=2), ttl=600, now=103).page_seq == 2
    finally:
        store.close()
        gate.close()


# ---- the schema --------------------------------------------------------------------------------

def test_many_processes_opening_a_fresh_database_at_once_create_the_schema_once(
        postgres_server: PostgresServer, tmp_path: Path) -> None:
    dsn = postgres_server.new_database("race")
    go = time.time() + 3  # every process imports first, then opens at the same instant
    script = textwrap.dedent(f"""
        import time
        from logpull_dagster.checkpoints.postgres import PostgresCheckpointStore
        time.sleep(max(0, {go!r} - time.time()))
        s = PostgresCheckpointStore({dsn!r})
        s.acquire("s", "pull", "w", "e", owner="x", ttl=1, now=time.time())
        s.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True) for _ in range(6)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, "\n".join(errors)
    with psycopg.connect(dsn) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'logpull_%'")}
        assert tables == {"logpull_checkpoints", "logpull_windows", "logpull_event_ids", "logpull_rate",
                          "logpull_meta"}
        assert conn.execute("SELECT count(*) FROM logpull_meta").fetchone() == (1,)
        assert conn.execute("SELECT attempts FROM logpull_checkpoints").fetchone() == (6,)


def test_a_cursor_text_cannot_hold_round_trips_and_an_error_text_is_kept_readable(
        postgres_server: PostgresServer) -> None:
    """An API's page token may hold NUL or a lone surrogate (json_codec reads both exactly)."""
    dsn = postgres_server.new_database("odd")
    store = PostgresCheckpointStore(dsn)
    try:
        cp = store.acquire(S, "pull", START, END, owner="a", ttl=10, now=100)
        odd = "tok\x00en/\ud800/ü/" + "x" * 10_000
        store.commit(dataclasses.replace(cp, cursor=odd, last_error="bad byte \x00 and \udfff"), ttl=10, now=101)
        got = PostgresCheckpointStore(dsn).get(S, "pull", START)
        assert got is not None and got.cursor == odd
        assert got.last_error == "bad byte \\x00 and \\udfff"
        assert store.get(S, "pull", START).heartbeat == 101
    finally:
        store.close()


def test_a_table_dropped_or_replaced_under_a_live_store_is_a_lost_store(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.new_database("drop")
    store = PostgresCheckpointStore(dsn)
    try:
        cp = store.acquire(S, "pull", START, END, owner="a", ttl=60, now=100)
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("DROP TABLE logpull_event_ids")
        with pytest.raises(CheckpointStoreLost, match="a table is gone"):
            store.commit(dataclasses.replace(cp, page_seq=1), ttl=60, now=101, landed_ids=[(1, b"a" * 16)])
        with pytest.raises(CheckpointStoreLost, match="a table is gone"):
            store.known_ids(S, START, [(1, b"a" * 16)])
        # Dropped and made again (another process opened the store on the empty database): the row
        # this run leases is gone, and the store says so instead of a plain takeover.
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute("DROP TABLE logpull_checkpoints, logpull_windows, logpull_rate, logpull_meta")
        PostgresCheckpointStore(dsn).close()
        with pytest.raises(CheckpointStoreLost, match="dropped and created again"):
            store.commit(dataclasses.replace(cp, page_seq=1), ttl=60, now=102)
        assert store.get(S, "pull", START) is None
    finally:
        store.close()


def test_a_database_dropped_under_a_live_store_is_a_lost_store_at_once(postgres_server: PostgresServer) -> None:
    dsn = postgres_server.new_database("dropdb")
    store = PostgresCheckpointStore(dsn, reconnect_timeout=60)
    try:
        cp = store.acquire(S, "pull", START, END, owner="a", ttl=60, now=100)
        with psycopg.connect(postgres_server.dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')
        t0 = time.monotonic()
        with pytest.raises(CheckpointStoreLost, match="the database was dropped"):
            store.commit(dataclasses.replace(cp, page_seq=1), ttl=60, now=101)
        assert time.monotonic() - t0 < 15  # not the whole reconnect bound: a dropped database is not coming back
    finally:
        store.close()


# ---- a real run across a server restart --------------------------------------------------------

@pytest.mark.timeout(300)
def test_a_postgres_restart_in_the_middle_of_a_run_loses_and_duplicates_nothing(
        tmp_path: Path, sim_process, servers, postgres_server: PostgresServer) -> None:  # type: ignore[no-untyped-def]
    sim_process.control("page_latency", {"seconds": 0.05})  # ~50 pages of 50 events: a few seconds of reading
    env = setup_project(tmp_path, sim_process.url, store="postgres", servers=servers, page_size=50,
                        lease_ttl="30s", concurrent_windows=1)  # page after page: it counts pages read twice
    window, log = key(10), tmp_path / "runs.log"
    cmd = materialize_cmd("logs/gws", window)
    proc = start(cmd, env, log)
    deadline = time.monotonic() + 120
    while len(sim_process.requests()) < 10:  # mid-window: some pages committed, most still to read
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the run read no pages"
        time.sleep(0.02)
    pid = postgres_server.pid
    postgres_server.restart()  # a fast shutdown: every session of the run's pool is cut
    assert postgres_server.pid != pid
    pages_at_restart = len(sim_process.requests())
    code = proc.wait(timeout=180)
    assert pages_at_restart < len(sim_process.requests()), "the run had finished before the restart"
    text = log.read_text()
    # Either the store reconnected and the run went on, or the attempt failed cleanly and was retried.
    assert code == 0 or "CheckpointStoreUnavailable" in text, text[-3000:]
    for _ in range(2):
        if code == 0:
            break
        code = run(cmd, env, log)
    assert code == 0, log.read_text()[-3000:]
    assert run(materialize_cmd("siem/gws", window), env, log) == 0, log.read_text()[-3000:]

    truth = sim_process.truth_ids("login", ts(10), ts(11))
    ids = siem_ids(tmp_path)
    assert len(truth) > 2000
    assert len(ids) == len(set(ids)), "an event reached the SIEM twice"
    assert sorted(ids) == sorted(truth), "an event is missing from the SIEM"
    pages = Counter(r["pageToken"] for r in sim_process.requests())
    reread = sum(n - 1 for n in pages.values())
    print(f"restart after {pages_at_restart} page reads; {sum(pages.values())} reads of {len(pages)} pages, "
          f"{reread} re-read; reconnect lines: {text.count('retrying on a new connection')}")
    assert reread <= 2, "the run restarted the window instead of resuming from its checkpoint"
