"""PostgreSQL checkpoint store: shared by every process and machine that can reach one database.

``checkpoints: {type: postgres, dsn: {env: LOGPULL_PG_DSN}}``. The DSN (``postgresql://user:password@
host:5432/dbname?sslmode=require``, or libpq's ``key=value`` form) holds a password, so the config only
names the variable that holds it; the store reads it when it is opened, and nothing it logs, raises
or returns shows the password: messages name the database as ``postgresql://host:port/dbname``.

Guarantees (the contract of ``checkpoints/__init__.py``):

* ``acquire`` is one transaction: the row is inserted if missing, then locked (``SELECT ... FOR
  UPDATE``), so of many processes acquiring one window at once exactly one bumps the epoch.
* ``commit`` and ``release`` are one transaction each: an ``UPDATE`` conditional on the caller's
  ``(epoch, lease_owner)``, and in the same transaction the page's ``(time_us, id digest)`` rows
  (``ON CONFLICT DO NOTHING``). No row updated: :class:`LeaseLost`, nothing written.
* Durable before they return: every session runs with ``synchronous_commit = on``, whatever the
  server's default.
* ``reserve`` is one statement (``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``), atomic across
  every process using the database.
* A server restart or failover mid-run: a statement that fails because the connection broke is run
  again on a fresh connection, for up to ``reconnect_timeout``; past that it raises
  :class:`CheckpointStoreUnavailable` and nothing has advanced (the attempt fails; its retry resumes
  from the last commit). Retrying a write is safe, see ``_retried``.
* The tables dropped (or dropped and created again), or the database dropped, while a run uses them:
  :class:`CheckpointStoreLost` from the next call, never a silent write into storage nobody reads.

Schema (created on first open if missing, under a transaction-scoped advisory lock because several
processes open the store at once; the role then needs CREATE on the schema, or the tables made
beforehand by someone who has it, and SELECT, INSERT, UPDATE on them)::

    logpull_checkpoints (source, stage, window_start) PRIMARY KEY, the Checkpoint's fields:
        cursor bytea (UTF-8, lone surrogates kept: an API token may hold NUL or one, text cannot),
        integers bigint, lease_expires and heartbeat double precision (floats round-trip exactly),
        stats text (json_codec: NUL and lone surrogates are escaped, so text holds them)
    logpull_windows (id identity PRIMARY KEY, source, window_start UNIQUE): a small key per window
    logpull_event_ids (window_id, time_us, id bytea) PRIMARY KEY: one row per landed event
    logpull_rate (account PRIMARY KEY, next_slot double precision): the last slot handed out
    logpull_meta (instance): one random id per creation of the schema, to tell "replaced" from "taken over"

All tables sit in the DSN's schema (``search_path``; add ``options=-csearch_path%3Dlogpull`` to the
DSN for a schema of their own). The database must use UTF-8 (event names in stats are Unicode).

No Dagster import.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
import time
import uuid
import zlib
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Literal, TypeVar

import psycopg
import psycopg.conninfo
from psycopg_pool import ConnectionPool, PoolTimeout
from pydantic import Field

from logpull_dagster import json_codec
from logpull_dagster.checkpoints import (
    Checkpoint,
    CheckpointStoreError,
    CheckpointStoreLost,
    LeaseHeld,
    LeaseLost,
    Stage,
)
from logpull_dagster.checkpoints import CheckpointStoreUnavailable as _Unavailable
from logpull_dagster.config import Duration, StoreBase, secret
from logpull_dagster.plugins import Plugin

T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]

DSN_ENV = "LOGPULL_PG_DSN"
_COLUMNS = [f.name for f in dataclasses.fields(Checkpoint)]
_MUTABLE = [c for c in _COLUMNS if c not in ("source", "stage", "window_start", "window_end", "epoch", "lease_owner")]
_TABLES = ("logpull_checkpoints", "logpull_windows", "logpull_event_ids", "logpull_rate", "logpull_meta")
# pg_advisory_xact_lock takes a bigint; any constant of ours that other software is unlikely to use.
_SCHEMA_LOCK = zlib.crc32(b"logpull_dagster.checkpoints.postgres schema")
_DDL = (
    """CREATE TABLE IF NOT EXISTS logpull_checkpoints (
        source        text             NOT NULL,
        stage         text             NOT NULL,
        window_start  text             NOT NULL,
        window_end    text             NOT NULL,
        status        text             NOT NULL,
        cursor        bytea,
        page_seq      bigint           NOT NULL,
        pages_read    bigint           NOT NULL,
        reads         bigint           NOT NULL,
        journaled     bigint           NOT NULL,
        events        bigint           NOT NULL,
        passes        bigint           NOT NULL,
        attempts      bigint           NOT NULL,
        epoch         bigint           NOT NULL,
        lease_owner   text,
        lease_expires double precision NOT NULL,
        heartbeat     double precision NOT NULL,
        last_error    text,
        stats         text             NOT NULL,
        PRIMARY KEY (source, stage, window_start))""",
    """CREATE TABLE IF NOT EXISTS logpull_windows (
        id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        source        text NOT NULL,
        window_start  text NOT NULL,
        UNIQUE (source, window_start))""",
    # Keyed by time first, as in the SQLite store: a page's events arrive in time order, so its inserts
    # touch neighbouring index pages and "landed already?" is one range scan over the page's time span.
    """CREATE TABLE IF NOT EXISTS logpull_event_ids (
        window_id     bigint NOT NULL,
        time_us       bigint NOT NULL,
        id            bytea  NOT NULL,
        PRIMARY KEY (window_id, time_us, id))""",
    """CREATE TABLE IF NOT EXISTS logpull_rate (
        account       text PRIMARY KEY,
        next_slot     double precision NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS logpull_meta (
        instance      text PRIMARY KEY)""",
)
# SQLSTATEs that mean "this connection, or this server, is gone for now", not "this statement is wrong":
# class 08 (connection exceptions), 57P01-57P03 (shutdown, crash, still starting), and 25006 (a
# read-only transaction: after a failover the old primary answers as a standby until DNS moves).
_TRANSIENT = ("08", "57P01", "57P02", "57P03", "25006")
_GONE = "3D000"  # invalid_catalog_name: the database does not exist (dropped)
_POOL_WAIT = 2.0  # seconds a call waits for a pooled connection before it probes the server itself

log = logging.getLogger(__name__)


class PostgresStoreError(CheckpointStoreError):
    """The PostgreSQL checkpoint store cannot be opened or used; the message names the fix, never the password."""


class CheckpointStoreUnavailable(PostgresStoreError, _Unavailable):
    """The server stayed unreachable past ``reconnect_timeout``; nothing was written by the failed call."""


def describe(dsn: str) -> str:
    """``postgresql://host:port/dbname`` of ``dsn``: what messages call the database (no user, no password)."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "postgresql://(a DSN libpq cannot parse)"
    host = str(parts.get("host") or parts.get("hostaddr") or "localhost")
    port = str(parts.get("port") or "5432")
    db = str(parts.get("dbname") or parts.get("user") or "postgres")
    return f"postgresql://{host}:{port}/{db}"


def _redactor(dsn: str) -> Callable[[str], str]:
    """Masks the DSN's password in ``text`` (libpq's messages can quote a malformed part of the DSN)."""
    secrets: set[str] = set()
    try:
        password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
        if password:
            secrets.add(str(password))
    except psycopg.Error:
        pass
    # Also when libpq cannot parse the DSN, and in its percent-encoded spelling.
    for m in re.finditer(r"://[^:/@\s]*:([^@\s]+)@", dsn):
        secrets.add(m.group(1))
    for m in re.finditer(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn):
        secrets.update({m.group(1), m.group(1).strip("'")})
    ordered = sorted((s for s in secrets if s), key=len, reverse=True)

    def redact(text: str) -> str:
        for s in ordered:
            text = text.replace(s, "***")
        return text

    return redact


def _transient(e: BaseException, conn: Conn | None) -> bool:
    if not isinstance(e, psycopg.OperationalError):
        return False
    if conn is not None and (conn.broken or conn.closed):
        return True
    state = e.sqlstate or ""
    return state.startswith(_TRANSIENT[0]) or state in _TRANSIENT[1:]


class _Transient(Exception):
    """A connection failure inside a call, carried out of the pool's context to the retry loop."""

    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__(why)


class PostgresCheckpointStore:
    """CheckpointStore on one PostgreSQL database, through a pool of connections shared by the run's threads.

    ``pool_size``: connections at most (a run uses one per thread touching the store at once: a
    window's reader and lander, times ``concurrent_windows``; more threads wait their turn).
    ``connect_timeout``, ``statement_timeout``: seconds, so a hung server or a lock never stalls a run
    forever. ``reconnect_timeout``: how long a call keeps retrying on fresh connections while the server
    is unreachable (a restart takes seconds; a failover of a managed database up to a minute or two).
    """

    def __init__(self, dsn: str, *, pool_size: int = 4, connect_timeout: float = 10.0,
                 statement_timeout: float = 30.0, reconnect_timeout: float = 60.0) -> None:
        self._dsn = dsn
        self.where = describe(dsn)
        self._redact = _redactor(dsn)
        self._reconnect_timeout = reconnect_timeout
        self._connect_timeout = connect_timeout
        try:
            given = psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.Error as e:
            raise PostgresStoreError(
                f"checkpoints.dsn: the value of {DSN_ENV} (or the variable the config names) is not a PostgreSQL "
                f"DSN libpq can read ({self._say(e)}); write it as postgresql://user:password@host:5432/"
                f"dbname") from None
        # Defaults for what the DSN leaves unset: the DSN's own settings win.
        defaults: dict[str, Any] = {"connect_timeout": max(1, round(connect_timeout)), "application_name": "logpull",
                                    # a server that vanished without closing the socket is noticed too
                                    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
                                    "keepalives_count": 3}
        self._kwargs = {k: v for k, v in defaults.items() if k not in given}
        self._session = (f"SET statement_timeout = {int(statement_timeout * 1000)}; "
                         "SET synchronous_commit = on; SET idle_in_transaction_session_timeout = "
                         f"{int(max(statement_timeout, 1) * 2000)}")
        self._instance = self._prepare()
        self._pool = ConnectionPool(
            dsn, kwargs={**self._kwargs, "autocommit": True}, min_size=1, max_size=max(1, pool_size),
            open=False, check=ConnectionPool.check_connection, configure=self._configure,
            timeout=connect_timeout, reconnect_timeout=max(reconnect_timeout, connect_timeout),
            name=f"logpull-checkpoints {self.where}",
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout:
            self._pool.close()
            raise PostgresStoreError(f"checkpoints: could not connect to {self.where} within {connect_timeout:g}s "
                                     f"(the connection that created the schema worked a moment ago)") from None

    # ---- connections ------------------------------------------------------------------------------

    def _configure(self, conn: Conn) -> None:
        conn.execute(self._session)

    def _connect_once(self) -> Conn:
        """A connection outside the pool, for the schema and for diagnosis (errors redacted)."""
        try:
            conn = psycopg.connect(self._dsn, **self._kwargs, autocommit=True)
        except psycopg.Error as e:
            if e.sqlstate == _GONE or re.search(r'database "[^"]*" does not exist', str(e)):
                raise _Lost(f"the database was dropped: {self._say(e)}") from None
            raise _Unreachable(self._say(e)) from None
        try:
            conn.execute(self._session)
        except psycopg.Error as e:  # the server went away again right after accepting us
            conn.close()
            raise _Unreachable(self._say(e)) from None
        return conn

    def _prepare(self) -> str:
        """Create the tables if missing; return the schema's instance id."""
        try:
            conn = self._connect_once()
        except (_Lost, _Unreachable) as e:
            raise PostgresStoreError(
                f"checkpoints: cannot connect to {self.where}: {e}. Check the host, port, database and "
                f"credentials in checkpoints.dsn (the variable it names), and that the server is up") from None
        with conn:
            enc = conn.execute("SHOW server_encoding").fetchone()
            if enc is None or enc[0].upper() not in ("UTF8", "UTF-8"):
                raise PostgresStoreError(
                    f"checkpoints: the database {self.where} uses encoding {enc[0] if enc else '?'}; event names "
                    f"in checkpoint stats are Unicode, so it must be UTF8: CREATE DATABASE ... ENCODING 'UTF8'")
            try:
                if not self._tables_exist(conn):
                    with conn.transaction():
                        # Two processes creating a table at once can both pass IF NOT EXISTS and one then
                        # fails on the catalog's unique index: the lock makes them take turns.
                        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                        for ddl in _DDL:
                            conn.execute(ddl)
                        conn.execute("INSERT INTO logpull_meta (instance) SELECT %s WHERE NOT EXISTS "
                                     "(SELECT 1 FROM logpull_meta)", (uuid.uuid4().hex,))
                row = conn.execute("SELECT instance FROM logpull_meta LIMIT 1").fetchone()
            except psycopg.errors.InsufficientPrivilege as e:
                raise PostgresStoreError(
                    f"checkpoints: the role in checkpoints.dsn may not create or use the tables in {self.where} "
                    f"({self._say(e)}); grant it CREATE on the schema for the first run, or create "
                    f"the tables beforehand, and SELECT, INSERT, UPDATE on them") from None
        if row is None:
            raise PostgresStoreError(f"checkpoints: the table logpull_meta in {self.where} is empty; another "
                                     f"program deleted its row: drop the logpull_* tables to start afresh")
        return str(row[0])

    @staticmethod
    def _tables_exist(conn: Conn) -> bool:
        row = conn.execute("SELECT " + ", ".join(f"to_regclass('{t}') IS NOT NULL" for t in _TABLES)).fetchone()
        return row is not None and all(row)

    def _retried(self, what: str, fn: Callable[[Conn, bool], T]) -> T:
        """Run ``fn(conn, retrying)`` in a pooled connection; again on a fresh one if the connection broke.

        Why running a call again is safe: ``commit`` is conditional on the same (epoch, owner), so a
        commit whose first try did reach the database matches again and writes the same values, and
        its ids are inserted with ON CONFLICT DO NOTHING; ``release`` on a retry also accepts the row it
        released itself (same epoch, no owner, its own heartbeat); a retried ``acquire`` of a window
        it did take is the holder's own retry (one more epoch and attempt, still its lease); a retried
        ``reserve`` loses one slot, which only makes the budget more conservative; reads are reads.
        """
        deadline = time.monotonic() + self._reconnect_timeout
        tries = 0
        while True:
            down = False
            try:
                if tries == 0:
                    # A short wait for a pooled connection: while the server is down the pool only
                    # reconnects in the background, with its own growing delays.
                    with self._pool.connection(timeout=min(_POOL_WAIT, self._connect_timeout)) as conn:
                        return self._call(fn, conn, retrying=False)
                # Retries run on a connection of their own, so they do not wait for the pool's delays;
                # opening it also tells "down" (retry) from "dropped" (stop at once).
                with self._connect_once() as conn:
                    return self._call(fn, conn, retrying=True)
            except _Lost as lost:
                raise self._lost(str(lost)) from None
            except _Unreachable as unreachable:
                why, down = str(unreachable), True
            except _Transient as e:
                why = e.why
            except PoolTimeout:
                why = f"no pooled connection within {min(_POOL_WAIT, self._connect_timeout):g}s"
            tries += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckpointStoreUnavailable(
                    f"checkpoints: {what} failed: {self.where} stayed unreachable for {self._reconnect_timeout:g}s "
                    f"({why}); nothing of this call was written, so the next attempt resumes from the last "
                    f"checkpoint once the server is back (checkpoints.reconnect_timeout sets how long to wait)")
            log.warning("checkpoints: %s on %s failed (%s); retrying on a new connection (try %d, up to %gs)",
                        what, self.where, why, tries, self._reconnect_timeout)
            if down:
                time.sleep(min(0.1 * 2 ** (tries - 1), 2.0, max(left, 0.0)))

    def _call(self, fn: Callable[[Conn, bool], T], conn: Conn, *, retrying: bool) -> T:
        """``fn`` on ``conn``, its psycopg errors sorted: a table gone, the connection gone, or raised as they are."""
        try:
            return fn(conn, retrying)
        except psycopg.errors.UndefinedTable as e:
            raise self._lost(f"a table is gone ({self._say(e)})") from None
        except psycopg.Error as e:
            if _transient(e, conn):
                raise _Transient(self._say(e) or type(e).__name__) from None
            raise

    def _say(self, e: BaseException) -> str:
        """``e``'s message on one line, the password masked."""
        return " ".join(self._redact(str(e)).split())

    def _lost(self, why: str) -> CheckpointStoreLost:
        return CheckpointStoreLost(self.where, why)

    def close(self) -> None:
        self._pool.close(timeout=5)

    # ---- rows --------------------------------------------------------------------------------------

    def _row(self, row: tuple[Any, ...] | None) -> Checkpoint | None:
        if row is None:
            return None
        values = dict(zip(_COLUMNS, row, strict=True))
        values["stats"] = json_codec.loads(values["stats"].encode())
        if values["cursor"] is not None:
            values["cursor"] = bytes(values["cursor"]).decode("utf-8", "surrogatepass")
        return Checkpoint(**values)

    @staticmethod
    def _value(cp: Checkpoint, column: str) -> Any:
        value = getattr(cp, column)
        if column == "stats":
            # Stats hold event names, which the API's users choose: json_codec keeps lone surrogates and
            # big integers exactly, and escapes NUL, so the text column can hold it.
            return json_codec.dumps(value).decode()
        if column == "cursor" and value is not None:
            return value.encode("utf-8", "surrogatepass")
        if column == "last_error" and value is not None:
            # A message for people: text cannot hold NUL or a lone surrogate, so those are spelled out.
            return value.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()
        return value

    _SELECT = f"SELECT {', '.join(_COLUMNS)} FROM logpull_checkpoints"

    def get(self, source: str, stage: Stage, window_start: str) -> Checkpoint | None:
        def read(conn: Conn, _: bool) -> Checkpoint | None:
            return self._row(conn.execute(f"{self._SELECT} WHERE source=%s AND stage=%s AND window_start=%s",
                                          (source, stage, window_start)).fetchone())

        return self._retried("get", read)

    def list(self, source: str, stage: Stage) -> list[Checkpoint]:
        def read(conn: Conn, _: bool) -> list[Checkpoint]:
            rows = conn.execute(f"{self._SELECT} WHERE source=%s AND stage=%s ORDER BY window_start",
                                (source, stage)).fetchall()
            return [cp for cp in map(self._row, rows) if cp is not None]

        return self._retried("list", read)

    def acquire(self, source: str, stage: Stage, window_start: str, window_end: str, *,
                owner: str, ttl: float, now: float) -> Checkpoint:
        fresh = Checkpoint(source=source, stage=stage, window_start=window_start, window_end=window_end)

        def take(conn: Conn, _: bool) -> Checkpoint:
            with conn.transaction():
                conn.execute(f"INSERT INTO logpull_checkpoints ({', '.join(_COLUMNS)}) VALUES "
                             f"({', '.join(['%s'] * len(_COLUMNS))}) ON CONFLICT DO NOTHING",
                             [self._value(fresh, c) for c in _COLUMNS])
                cp = self._row(conn.execute(f"{self._SELECT} WHERE source=%s AND stage=%s AND window_start=%s "
                                            "FOR UPDATE", (source, stage, window_start)).fetchone())
                if cp is None:  # inserted a moment ago in this transaction: only a concurrent DELETE undoes that
                    raise self._lost("the window's row vanished while it was being taken")
                if cp.lease_owner is not None and cp.lease_owner != owner and cp.lease_expires > now:
                    raise LeaseHeld(source, stage, window_start, cp.lease_owner, cp.lease_expires)
                held = dataclasses.replace(
                    cp, epoch=cp.epoch + 1, attempts=cp.attempts + 1, lease_owner=owner, lease_expires=now + ttl,
                    heartbeat=now, status="running" if cp.status != "complete" else "complete",
                )
                conn.execute(
                    "UPDATE logpull_checkpoints SET epoch=%s, attempts=%s, lease_owner=%s, lease_expires=%s, "
                    "heartbeat=%s, status=%s WHERE source=%s AND stage=%s AND window_start=%s",
                    (held.epoch, held.attempts, owner, held.lease_expires, now, held.status, source, stage,
                     window_start))
                return held

        return self._retried("acquire", take)

    def commit(self, cp: Checkpoint, *, ttl: float, now: float,
               landed_ids: Collection[tuple[int, bytes]] = ()) -> Checkpoint:
        new = dataclasses.replace(cp, lease_expires=now + ttl, heartbeat=now)
        self._write("commit", new, owner=cp.lease_owner, ids=landed_ids)
        return new

    def release(self, cp: Checkpoint, *, now: float) -> Checkpoint:
        new = dataclasses.replace(cp, lease_owner=None, lease_expires=0.0, heartbeat=now)
        self._write("release", new, owner=cp.lease_owner)
        return new

    def _write(self, what: str, cp: Checkpoint, *, owner: str | None,
               ids: Collection[tuple[int, bytes]] = ()) -> None:
        values = {c: self._value(cp, c) for c in _MUTABLE}
        sets = ", ".join(f"{c}=%({c})s" for c in _MUTABLE) + ", lease_owner=%(new_owner)s"
        key = {"source": cp.source, "stage": cp.stage, "window_start": cp.window_start}
        ordered = sorted(ids)
        times, digests = [t for t, _ in ordered], [i for _, i in ordered]

        def write(conn: Conn, retrying: bool) -> None:
            # On a retry of a release whose first try reached the database, the row has no owner any
            # more but still this epoch and this release's own heartbeat: that is this write, done.
            own = ("(lease_owner=%(owner)s OR (lease_owner IS NULL AND heartbeat=%(heartbeat)s))"
                   if retrying and cp.lease_owner is None else "lease_owner=%(owner)s")
            with conn.transaction():
                cur = conn.execute(
                    f"UPDATE logpull_checkpoints SET {sets} WHERE source=%(source)s AND stage=%(stage)s "
                    f"AND window_start=%(window_start)s AND epoch=%(epoch)s AND {own}",
                    {**values, **key, "new_owner": cp.lease_owner, "epoch": cp.epoch, "owner": owner})
                if cur.rowcount != 1:
                    raise self._fenced(conn, cp)
                if ordered:
                    conn.execute(
                        "INSERT INTO logpull_windows (source, window_start) SELECT %(source)s, %(window_start)s "
                        "WHERE NOT EXISTS (SELECT 1 FROM logpull_windows WHERE source=%(source)s "
                        "AND window_start=%(window_start)s) ON CONFLICT DO NOTHING", key)
                    conn.execute(
                        "INSERT INTO logpull_event_ids (window_id, time_us, id) SELECT w.id, u.t, u.i "
                        "FROM logpull_windows w, unnest(%(times)s::bigint[], %(ids)s::bytea[]) AS u(t, i) "
                        "WHERE w.source=%(source)s AND w.window_start=%(window_start)s ON CONFLICT DO NOTHING",
                        {**key, "times": times, "ids": digests})

        self._retried(what, write)

    def _fenced(self, conn: Conn, cp: Checkpoint) -> LeaseLost:
        """Why no row matched: taken over (LeaseLost), or the row or the whole schema replaced (lost)."""
        row = conn.execute("SELECT (SELECT instance FROM logpull_meta LIMIT 1), EXISTS (SELECT 1 FROM "
                           "logpull_checkpoints WHERE source=%s AND stage=%s AND window_start=%s)",
                           (cp.source, cp.stage, cp.window_start)).fetchone()
        if row is None or row[0] != self._instance:
            return self._lost("its tables were dropped and created again")
        if not row[1]:
            return self._lost(f"the row of {cp.stage} of window {cp.window_start} of source {cp.source!r} was deleted")
        return LeaseLost(
            f"{cp.stage} of window {cp.window_start} of source {cp.source!r} was taken over by another "
            f"run (this run's lease epoch {cp.epoch} is no longer current); stopping without writing")

    def forget_ids(self, cp: Checkpoint, *, now: float) -> None:
        key = {"source": cp.source, "stage": cp.stage, "window_start": cp.window_start, "epoch": cp.epoch,
               "owner": cp.lease_owner}

        def forget(conn: Conn, _: bool) -> None:  # run again after a broken connection: deleting twice is one delete
            with conn.transaction():
                held = conn.execute(
                    "SELECT 1 FROM logpull_checkpoints WHERE source=%(source)s AND stage=%(stage)s AND "
                    "window_start=%(window_start)s AND epoch=%(epoch)s AND lease_owner=%(owner)s FOR UPDATE",
                    key).fetchone()
                if held is None:
                    raise self._fenced(conn, cp)
                conn.execute("DELETE FROM logpull_event_ids e USING logpull_windows w WHERE w.id = e.window_id "
                             "AND w.source=%(source)s AND w.window_start=%(window_start)s", key)

        self._retried("forget_ids", forget)

    # ---- ids and the rate budget -------------------------------------------------------------------

    def known_ids(self, source: str, window_start: str, events: Collection[tuple[int, bytes]]) -> set[bytes]:
        if not events:
            return set()
        times = [t for t, _ in events]

        def read(conn: Conn, _: bool) -> set[bytes]:
            rows = conn.execute(
                "SELECT e.id FROM logpull_event_ids e JOIN logpull_windows w ON w.id = e.window_id "
                "WHERE w.source=%s AND w.window_start=%s AND e.time_us BETWEEN %s AND %s",
                (source, window_start, min(times), max(times))).fetchall()
            return {bytes(r[0]) for r in rows}

        return self._retried("known_ids", read) & {i for _, i in events}

    def count_ids(self, source: str, window_start: str) -> int:
        def read(conn: Conn, _: bool) -> int:
            row = conn.execute("SELECT count(*) FROM logpull_event_ids e JOIN logpull_windows w ON w.id = "
                               "e.window_id WHERE w.source=%s AND w.window_start=%s",
                               (source, window_start)).fetchone()
            return int(row[0]) if row else 0

        return self._retried("count_ids", read)

    def reserve(self, account: str, *, interval: float, now: float) -> float:
        def take(conn: Conn, _: bool) -> float:
            # The arithmetic of rate.next_slot, done by the database so that it is atomic across machines.
            row = conn.execute(
                "INSERT INTO logpull_rate AS r (account, next_slot) VALUES (%(a)s, %(now)s) "
                "ON CONFLICT (account) DO UPDATE SET next_slot = GREATEST(r.next_slot + %(i)s, %(now)s) "
                "RETURNING next_slot", {"a": account, "now": float(now), "i": float(interval)}).fetchone()
            if row is None:
                raise self._lost("the rate row vanished as it was written")
            return float(row[0])

        return self._retried("reserve", take)


class _Lost(Exception):
    pass


class _Unreachable(Exception):
    pass


class PostgresCheckpointsConfig(StoreBase):
    """``checkpoints: {type: postgres, dsn: {env: LOGPULL_PG_DSN}}``: one PostgreSQL database, shared by
    every machine that runs windows. The DSN holds a password, so only its variable is named here."""

    type: Literal["postgres"]
    dsn: secret(DSN_ENV)  # type: ignore[valid-type]
    pool_size: int = Field(default=4, ge=1, le=100)
    reconnect_timeout: Duration = dt.timedelta(seconds=60)

    def where(self, resolve: Callable[[str], Path]) -> str:
        value = os.environ.get(self.dsn.env)
        return describe(value) if value else f"PostgreSQL (the DSN in {self.dsn.env}, unset here)"


def _open(cfg: PostgresCheckpointsConfig, base_dir: Path) -> PostgresCheckpointStore:
    dsn = (os.environ.get(cfg.dsn.env) or "").strip()
    if not dsn:
        raise PostgresStoreError(
            f"checkpoints.dsn names the environment variable {cfg.dsn.env}, which is unset or empty in this "
            f"process; set it where the run executes to the database's DSN, e.g. "
            f"{cfg.dsn.env}=postgresql://user:password@host:5432/dbname")
    return PostgresCheckpointStore(dsn, pool_size=cfg.pool_size,
                                   reconnect_timeout=cfg.reconnect_timeout.total_seconds())


PLUGINS = [Plugin("checkpoints", "postgres", PostgresCheckpointsConfig, _open)]
