"""Real servers on 127.0.0.1, shared by the tests and the benchmarks: the bundled API simulator, and for the
production backends moto (DynamoDB, S3) and PostgreSQL.

Each is a process of its own, started here on a free port and stopped by its pid, so a test can stop
and restart it mid-run the way an outage would. Nothing is patched: boto3 and psycopg talk to them over
TCP exactly as they talk to AWS or a managed PostgreSQL.

This module is the one place the benchmarks (``benchmarks/``) take anything from the tests' package: it
imports neither pytest nor a test module, so a benchmark script runs without the test suite's fixtures.

PostgreSQL comes from Debian's packages (``.ci/run`` installs ``postgresql`` when it is missing), and so
does rsyslog, the syslog sink's receiver (``make rsyslog``). A missing installation fails the tests that
need it with the command that fixes it, never a skip.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import httpx

# moto needs some credentials to sign with; these are moto's documented test values, no secret.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(ok, what: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not ok():
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            proc.kill()
            raise RuntimeError(f"{what} did not start:\n{tail}")
        time.sleep(0.05)


class SimProcess:
    """The bundled simulator in its own process (``python -m logpull_dagster.simulator``): it outlives the
    workers a test kills, and the client a benchmark measures gets a core of its own.

    ``args``: the simulator's command line (``--seed``, ``--events-per-hour``, ...; see its ``--help``);
    ``token``: the bearer token it requires; ``timeout``: of the control client (``http``).
    """

    def __init__(self, *args: str, token: str, timeout: float = 10) -> None:
        # stderr into a file, not a pipe nobody reads: a long run's tracebacks (clients killed
        # mid-answer) would fill a pipe and stall the simulator.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logpull_dagster.simulator", "--port", "0", "--token", token, *args],
            stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        )
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("LISTENING "):
            self.proc.kill()
            self.proc.wait()
            self._stderr.seek(0)
            err = self._stderr.read().decode(errors="replace")
            self._stderr.close()
            raise RuntimeError(f"simulator did not start: {line!r} {err}")
        self.url = line.split()[1]
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    def control(self, path: str, body: dict[str, Any]) -> None:
        self.http.post(f"/_sim/{path}", json=body).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        """The request log: every request the simulator answered, with its arrival time ``t``."""
        return self.http.get("/_sim/requests").json()["requests"]

    def truth_ids(self, application: str, start: str, end: str) -> list[str]:
        items = self.http.get("/_sim/events", params={"application": application, "startTime": start,
                                                      "endTime": end}).json()["items"]
        return ["/".join(str(i["id"][k]) for k in ("applicationName", "customerId", "time", "uniqueQualifier"))
                for i in items]

    def gws_truth_ids(self, start: str, end: str) -> list[str]:
        """The event id of every Google Workspace ``login`` event of ``[start, end)``."""
        return self.truth_ids("login", start, end)

    def gws_requests(self) -> list[dict[str, Any]]:
        """The request log's entries for the Reports API (its ``pageToken`` column is the cursor sent)."""
        return [r for r in self.requests() if r.get("application") == "login" and not r.get("endpoint")]

    def okta_truth_ids(self, start: str, end: str) -> list[str]:
        """The ``uuid`` of every Okta System Log event of ``[start, end)`` (the emulated Okta API's truth)."""
        ids = self.http.get("/_sim/events", params={"application": "system_log", "api": "okta_system_log",
                                                    "startTime": start, "endTime": end, "ids_only": "1"}).json()["ids"]
        return [i[0] for i in ids]

    def okta_requests(self) -> list[dict[str, Any]]:
        """The request log's entries for Okta's ``/api/v1/logs`` (its ``after`` column is the cursor sent)."""
        return [r for r in self.requests() if r.get("path") == "/api/v1/logs"]

    def github_truth_ids(self, start: str, end: str) -> list[str]:
        """The ``@timestamp/_document_id`` of every GitHub audit-log event of ``[start, end)`` (the emulated
        GitHub API's truth, the source's event ids)."""
        ids = self.http.get("/_sim/events", params={"application": "audit_log", "api": "github_audit_log",
                                                    "startTime": start, "endTime": end, "ids_only": "1"}).json()["ids"]
        return ["/".join(i) for i in ids]

    def github_requests(self) -> list[dict[str, Any]]:
        """The request log's entries for the GitHub audit log (its ``after`` column is the cursor sent)."""
        return [r for r in self.requests() if str(r.get("path", "")).endswith("/audit-log")]

    def slack_truth_ids(self, start: str, end: str) -> list[str]:
        """The event id (``<date_create>/<id>``, sources/slack.py) of every Slack audit log entry of
        ``[start, end)`` (the emulated Slack API's truth)."""
        ids = self.http.get("/_sim/events", params={"application": "audit_logs", "api": "slack_audit_logs",
                                                    "startTime": start, "endTime": end, "ids_only": "1"}).json()["ids"]
        return ["/".join(i) for i in ids]

    def slack_requests(self) -> list[dict[str, Any]]:
        """The request log's entries for Slack's ``/audit/v1/logs`` (its ``cursor`` column is the cursor sent)."""
        return [r for r in self.requests() if r.get("path") == "/audit/v1/logs"]

    # ``okta_rest`` (``type: rest``, cli.SOURCES) reads the same emulated Okta API: the same truth and log.
    def okta_rest_truth_ids(self, start: str, end: str) -> list[str]:
        return self.okta_truth_ids(start, end)

    def okta_rest_requests(self) -> list[dict[str, Any]]:
        return self.okta_requests()

    def msgraph_truth_ids(self, start: str, end: str, stream: str = "directory_audits") -> list[str]:
        """The ``id`` of every Graph audit-log item of ``stream`` in ``[start, end)`` (the emulated Graph's truth)."""
        ids = self.http.get("/_sim/events", params={"application": stream, "api": "msgraph",
                                                    "startTime": start, "endTime": end, "ids_only": "1"}).json()["ids"]
        return [i[0] for i in ids]

    def msgraph_requests(self) -> list[dict[str, Any]]:
        """The request log's entries for Graph's ``auditLogs`` listings, not its token endpoint (their
        ``skiptoken`` column is the cursor sent; a nextLink's path is lower-cased, so compare it so)."""
        return [r for r in self.requests() if str(r.get("path", "")).lower().startswith("/v1.0/auditlogs/")]

    def stop(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def max_in_span(times: Sequence[float], span: float) -> int:
    """The most of ``times`` inside any half-open span ``[t, t + span)`` (spans start at a request: the
    densest span always does). Applied to the request log's arrival times, it is the API's own view of a
    rate limit: the rate tests assert on it, ``benchmarks/bench_rate.py`` reports it."""
    times = sorted(times)
    most, j = 0, 0
    for i, t in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < t + span:
            j += 1
        most = max(most, j - i)
    return most


# moto_server checks a ConditionExpression and then writes without a lock, so two concurrent conditional
# writes can both succeed (measured: 8 racing acquires had more than one winner in 14 of 15 rounds);
# DynamoDB applies one item's writes one at a time. moto's own app, served one request at a time (and
# so HTTP/1.0, one connection at a time), behaves like DynamoDB there.
_MOTO_SERIAL = ("import sys\nfrom werkzeug.serving import run_simple\n"
                "from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app\n"
                "run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app), "
                "threaded=False, use_reloader=False)\n")


class MotoServer:
    """moto's server (DynamoDB and S3 in one process) on a free loopback port, one request at a time.

    ``stop()`` then ``start()`` is an outage with the same port; moto keeps its state in memory, so a
    restart also empties it: tests of an outage that must keep data put a :class:`Gate` in front instead.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        log = self.workdir / f"moto-{self.port}.log"
        self.proc = subprocess.Popen([sys.executable, "-c", _MOTO_SERIAL, "127.0.0.1", str(self.port)],
                                     stdout=open(log, "ab"),  # noqa: SIM115
                                     stderr=subprocess.STDOUT, env={**os.environ, **AWS_ENV})

        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/moto-api/", timeout=1).status_code < 500
            except httpx.HTTPError:
                return False

        _wait(up, "moto_server", self.proc, log)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def reset(self) -> None:
        """Forget every table and bucket (moto's own reset endpoint)."""
        httpx.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise RuntimeError("PostgreSQL is not installed; the postgres tests need Debian's server: "
                       "run 'sudo apt-get install -y --no-install-recommends postgresql' (.ci/run does this)")


class PostgresServer:
    """A PostgreSQL cluster of its own in a temporary folder, on a free loopback port (trust auth).

    initdb refuses to run as root, so as root the cluster belongs to the ``postgres`` user Debian's
    package creates; otherwise to the current user.
    """

    def __init__(self) -> None:
        self.bin = _pg_bin()
        # In the system temp folder, not pytest's: pytest's folders are private to root, and the
        # server runs as ``postgres``.
        self.dir = Path(tempfile.mkdtemp(prefix="logpull-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.log = self.dir / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._sh(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                 "--no-sync")

    def _sh(self, *cmd: str) -> None:
        done = subprocess.run([*self._as, *cmd], capture_output=True, text=True, cwd=self.dir)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")

    def start(self) -> PostgresServer:
        # fsync stays on (the default): commit latency measured here is what a real server pays.
        self._sh(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                 "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c max_connections=200",
                 "start")
        return self

    @property
    def pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(RuntimeError, FileNotFoundError):
            self._sh(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; its DSN."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class Gate:
    """A TCP forwarder in front of a server, to cut it off and bring it back with its state intact.

    ``close()`` is an outage as a client sees it: the port refuses new connections and every open one
    is reset. ``open()`` listens again on the same port. ``pause()`` is a stall: new connections are
    accepted but not connected upstream, and no byte goes through, until ``resume()``.
    """

    def __init__(self, target_port: int) -> None:
        import threading

        self._flowing = threading.Event()
        self._flowing.set()
        self.target = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.open()

    def open(self) -> None:
        import threading

        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def close(self) -> None:
        self._flowing.set()  # threads held by a pause see their sockets closed and end
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for c in conns:
            with contextlib.suppress(OSError):
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.close()

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(client)
            threading.Thread(target=self._connect, args=(client, listener), daemon=True).start()

    def _connect(self, client: socket.socket, listener: socket.socket) -> None:
        import threading

        # A paused gate connects nothing upstream: a server that serves one connection at a time (moto's,
        # here) goes on serving others while this client waits for its answer.
        self._flowing.wait()
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            if self._listener is not listener:
                client.close()
                upstream.close()
                return
            self._conns.append(upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def pause(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def _rsyslogd() -> str:
    found = shutil.which("rsyslogd") or next(iter(glob.glob("/usr/sbin/rsyslogd")), None)
    if found is None or not glob.glob("/usr/lib/*/rsyslog/lmnsd_gtls.so") + glob.glob("/usr/lib/rsyslog/lmnsd_gtls.so"):
        raise RuntimeError("rsyslog (with its GnuTLS driver) is not installed; the syslog sink tests need Debian's "
                           "rsyslog and rsyslog-gnutls: run 'make rsyslog' (as root, or 'sudo apt-get install -y "
                           "rsyslog rsyslog-gnutls') and retry")
    return found


# rsyslogd's configuration: plain TCP, TLS (anonymous client) and mutual TLS (client certificate checked against
# the CA) on loopback, every message received written as one JSON object per line (its APP-NAME, MSGID,
# STRUCTURED-DATA, MSG and the whole message as received). One main-queue worker and direct actions: the file
# holds messages in the order they were read, which is what ``sync`` relies on.
_RSYSLOG_CONF = """\
global(workDirectory="{dir}" maxMessageSize="256k"
       DefaultNetstreamDriverCAFile="{ca}" DefaultNetstreamDriverCertFile="{cert}"
       DefaultNetstreamDriverKeyFile="{key}")
main_queue(queue.workerThreads="1")
module(load="imtcp")
template(name="record" type="string"
         string="{{\\"app\\":\\"%app-name:::json%\\",\\"msgid\\":\\"%msgid:::json%\\",\\"sd\\":\\"%structured-data:::json%\\",\\"msg\\":\\"%msg:::json%\\",\\"raw\\":\\"%rawmsg:::json%\\"}}\\n")
ruleset(name="received") {{
  action(type="omfile" file="{out}" template="record")
}}
input(type="imtcp" address="127.0.0.1" port="{tcp}" listenPortFileName="{dir}/tcp.port" ruleset="received")
input(type="imtcp" address="127.0.0.1" port="{tls}" listenPortFileName="{dir}/tls.port" ruleset="received"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{mtls}" listenPortFileName="{dir}/mtls.port" ruleset="received"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
*.* action(type="omfile" file="{dir}/rsyslogd.log")
"""


class RsyslogServer:
    """A private rsyslogd (Debian's, with its GnuTLS driver) in a temporary folder: its own config, pid file
    and work directory, listening on free loopback ports (``tcp_port``; ``tls_port`` and ``mtls_port``, TLS
    with a certificate for 127.0.0.1 signed by ``tls.ca``, the latter requiring a client certificate signed by
    it too: ``client``). Every message it receives is written to ``out`` as a JSON object per line:
    :meth:`received` reads them. No root needed; several may run at once (each xdist worker its own).

    The ports are chosen by rsyslogd itself (port 0, ``listenPortFileName``), so two daemons starting at
    once cannot race for one; ``stop()`` then ``start()`` is an outage and a restart on the same ports.
    """

    def __init__(self) -> None:
        from logpull_dagster_tests.tls import make_mutual_tls_files

        self.bin = _rsyslogd()
        # The system temp folder: short paths, and readable whoever runs rsyslogd.
        self.dir = Path(tempfile.mkdtemp(prefix="logpull-rsyslog-"))
        self.tls, self.client = make_mutual_tls_files(self.dir / "tls")
        self.out = self.dir / "received.jsonl"
        self.conf = self.dir / "rsyslog.conf"
        self.pidfile = self.dir / "rsyslogd.pid"
        self.log = self.dir / "stderr.log"
        self.tcp_port = self.tls_port = self.mtls_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RsyslogServer:
        ports = {"tcp": self.tcp_port, "tls": self.tls_port, "mtls": self.mtls_port}
        for name in ports:
            (self.dir / f"{name}.port").unlink(missing_ok=True)
        self.conf.write_text(_RSYSLOG_CONF.format(dir=self.dir, ca=self.tls.ca, cert=self.tls.cert, key=self.tls.key,
                                                  out=self.out, **ports))
        # -n: in the foreground, so the pid is Popen's; -i: its own pid file, never the system's.
        self.proc = subprocess.Popen([self.bin, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115

        def up() -> bool:
            for name, port in ports.items():
                if port:  # a restart on the ports of the first start (rsyslogd writes no port file then)
                    if not _accepts(port):
                        return False
                    continue
                path = self.dir / f"{name}.port"
                text = path.read_text() if path.exists() else ""
                if not text.strip():
                    return False
                ports[name] = int(text)
            return True

        _wait(up, f"rsyslogd ({self.conf})", self.proc, self.log)
        self.tcp_port, self.tls_port, self.mtls_port = ports["tcp"], ports["tls"], ports["mtls"]
        return self

    def stop(self) -> None:
        """SIGTERM by pid: rsyslogd writes what it has queued, then exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def received(self) -> list[dict[str, str]]:
        """Every message rsyslogd has written so far (call :meth:`sync` first to include all it has read)."""
        data = self.out.read_bytes() if self.out.exists() else b""
        return [json.loads(line) for line in data.split(b"\n")[:-1]]  # a last line being written: not yet

    def sync(self, timeout: float = 20) -> None:
        """Return once rsyslogd has written every message it read before this call: a marker message, sent on
        a connection of its own after those, appears in ``out`` after them (one queue worker, in order)."""
        marker = uuid.uuid4().hex
        msg = f"<110>1 - - logpull-sync - {marker} - sync".encode()
        with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=timeout) as s:
            s.sendall(b"%d %s" % (len(msg), msg))
            s.shutdown(socket.SHUT_WR)
            s.recv(1)  # rsyslogd closes once it has read the marker
        deadline = time.monotonic() + timeout
        needle = f'"msgid":"{marker}"'.encode()
        while not (self.out.exists() and needle in self.out.read_bytes()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"rsyslogd wrote no marker within {timeout}s; its log: {self.dir / 'rsyslogd.log'}")
            time.sleep(0.01)

    _shared: ClassVar[RsyslogServer | None] = None

    @classmethod
    def shared(cls) -> RsyslogServer:
        """One daemon for this process (an xdist worker), started on first use and stopped at exit: for
        tests that tell their messages apart by APP-NAME and never stop it."""
        if cls._shared is None:
            cls._shared = cls().start()
            atexit.register(cls._shared.close)
        return cls._shared


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False
