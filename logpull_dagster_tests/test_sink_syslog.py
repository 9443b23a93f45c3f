"""The syslog sink against a real receiver: Debian's rsyslogd, a private daemon per test module (and per
xdist worker) on loopback ports, plain TCP, TLS and mutual TLS (``servers.RsyslogServer``). Every event is
counted in what rsyslogd wrote, after ``sync`` (a marker message written after everything it had read).

Where a receiver must misbehave in a way rsyslogd cannot be made to (cut a connection after N bytes, close a
connection without reading it), a small TCP relay or listener in this module does it, in front of rsyslogd
or alone; each test says which.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logpull_dagster.config import ConfigError, load_config
from logpull_dagster.deliver import envelope
from logpull_dagster.json_codec import dumps
from logpull_dagster.sinks.syslog import (
    SyslogNotConfirmed,
    SyslogSink,
    SyslogSinkConfig,
    SyslogTlsRefused,
    _open,
)
from logpull_dagster.windows import UTC, Window, rfc3339
from logpull_dagster_tests.contracts.sink import SinkUnderTest
from logpull_dagster_tests.servers import RsyslogServer, free_port
from logpull_dagster_tests.tls import make_tls_files

W = Window(dt.datetime(2026, 11, 26, 10, tzinfo=UTC), dt.datetime(2026, 11, 26, 11, tzinfo=UTC))
W2 = Window(W.end, W.end + dt.timedelta(hours=1))


def open_syslog(server: RsyslogServer, transport: str = "tls", *, app_name: str | None = None,
                port: int | None = None, host: str = "127.0.0.1", **keys: Any) -> SyslogSink:
    """A sink opened as the config opens it (``_open``; paths relative to the rsyslogd folder)."""
    cfg: dict[str, Any] = {"type": "syslog", "host": host, "transport": transport,
                           "app_name": app_name or f"t{uuid.uuid4().hex[:12]}"}
    if transport in ("tls", "mtls"):
        cfg["ca_file"] = "tls/ca.pem"
    if transport == "mtls":
        cfg.update(transport="tls", client_cert="tls/client.pem", client_key="tls/client-key.pem")
    cfg["port"] = port or {"tcp": server.tcp_port, "tls": server.tls_port, "mtls": server.mtls_port}[transport]
    cfg.update(keys)
    return _open(SyslogSinkConfig.model_validate(cfg), server.dir)


def received(server: RsyslogServer, app_name: str, source: str) -> list[dict[str, str]]:
    server.sync()
    return [r for r in server.received() if r["app"] == app_name and r["msgid"] == source[:32]]


def records(server: RsyslogServer, app_name: str, source: str) -> list[bytes]:
    """The MSG of every message rsyslogd wrote for ``source`` from the sink with ``app_name``, byte for byte."""
    return [r["msg"].encode() for r in received(server, app_name, source)]


def syslog_under_test(tmp: Path) -> SinkUnderTest:
    """The contract's view (``test_contract_sinks.FACTORIES``): this process's shared rsyslogd, over TLS; one
    APP-NAME per test tells its messages apart from every other test's."""
    server = RsyslogServer.shared()
    app = f"c{uuid.uuid4().hex[:12]}"
    return SinkUnderTest(lambda: open_syslog(server, "tls", app_name=app), lambda s: records(server, app, s))


def events(prefix: str, n: int, window: Window = W, *, time_text: str = "2026-11-26T10:00:01.250Z"
           ) -> tuple[list[bytes], list[str]]:
    """``n`` SIEM records as delivery builds them (``deliver.envelope``), and their ids."""
    ids = [f"{prefix}-{i}" for i in range(n)]
    landed = [dumps({"id": i, "time": time_text, "pulled_at": "2026-11-26T12:00:00Z",
                     "event": {"id": i, "name": "login_success", "actor": "ü@example.com", "n": k}})
              for k, i in enumerate(ids)]
    return [envelope("gws", window, line) for line in landed], ids


@pytest.fixture(scope="module")
def rsyslog() -> Iterator[RsyslogServer]:
    server = RsyslogServer().start()
    yield server
    server.close()


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["tcp", "tls", "mtls"])
def test_every_event_of_every_batch_reaches_rsyslog_once(rsyslog: RsyslogServer, transport: str) -> None:
    app = f"t{uuid.uuid4().hex[:12]}"
    sink = open_syslog(rsyslog, transport, app_name=app)
    sent: list[bytes] = []
    t0 = time.perf_counter()
    for b, (window, n) in enumerate([(W, 1000), (W, 1000), (W, 537), (W2, 1000)]):
        lines, ids = events(f"{transport}{b}", n, window)
        written = sink.write_batch("gws", window, b, lines, ids)
        assert (written.events, written.already, written.resent, written.conflict) == (n, 0, 0, False)
        sent += lines
    elapsed = time.perf_counter() - t0
    got = records(rsyslog, app, "gws")
    assert len(got) == len(sent) == 3537 and Counter(got) == Counter(sent)  # every one, once, byte for byte
    print(f"{transport}: {len(sent)} events in {elapsed:.3f}s ({len(sent) / elapsed:,.0f} events/s)")


@pytest.mark.slow
def test_each_message_is_rfc_5424_with_the_event_time_the_stream_and_the_window(rsyslog: RsyslogServer) -> None:
    app = f"t{uuid.uuid4().hex[:12]}"
    sink = open_syslog(rsyslog, "tcp", app_name=app, facility=4)
    source = "a_stream_name_longer_than_thirty_two_characters"
    odd_ids = ['quote"d', "back\\slash", "brack]et", "üñí"]
    times = {"2026-11-26T10:00:01.250Z": "2026-11-26T10:00:01.250Z",  # already RFC 5424: as is
             "2026-11-26T11:00:01.123+01:00": "2026-11-26T11:00:01.123+01:00",
             "2026-11-26T10:00:01.123456789Z": "2026-11-26T10:00:01.123456Z",  # > 6 digits: converted to UTC
             "2026-11-26 10:00:01+00:00": "2026-11-26T10:00:01.000000Z",
             "not a time": "-"}
    lines, ids = [], []
    for k, (text, _) in enumerate(times.items()):
        landed = dumps({"id": odd_ids[k % 4], "time": text, "pulled_at": "2026-11-26T12:00:00Z", "event": {"k": k}})
        lines.append(envelope(source, W, landed))
        ids.append(odd_ids[k % 4])
    sink.write_batch(source, W, 0, lines, ids)
    got = received(rsyslog, app, source[:32])
    assert len(got) == len(lines)
    head = re.compile(r"<(\d+)>1 (\S+) (\S+) (\S+) (\S+) (\S+) (\[.*?(?<!\\)\]) (.*)", re.S)
    for r, line, event_id, want_time in zip(got, lines, ids, times.values(), strict=True):
        m = head.fullmatch(r["raw"])
        assert m, r["raw"]
        pri, ts, host, app_name, procid, msgid, sd, msg = m.groups()
        assert int(pri) == 4 * 8 + 6 and ts == want_time and host == sink.hostname.decode() and host
        assert (app_name, procid, msgid, r["msgid"]) == (app, "-", source[:32], source[:32])
        escaped = event_id.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
        assert sd == (f'[logpull@32473 window_start="{rfc3339(W.start)}" window_end="{rfc3339(W.end)}" '
                      f'event_id="{escaped}"]') == r["sd"]
        assert msg.encode() == line == r["msg"].encode() and not msg.startswith("\ufeff")  # no BOM


@pytest.mark.slow
def test_a_certificate_the_ca_file_does_not_trust_fails_at_once_and_sends_nothing(
        rsyslog: RsyslogServer, tmp_path: Path) -> None:
    other = make_tls_files(tmp_path / "other")  # another CA, that never signed rsyslogd's certificate
    app = f"t{uuid.uuid4().hex[:12]}"
    sink = open_syslog(rsyslog, "tls", app_name=app, ca_file=str(other.ca))
    t0 = time.monotonic()
    with pytest.raises(SyslogTlsRefused, match=r"not trusted: .*ca_file \(.*other/ca.pem\) must hold the CA"):
        sink.write_batch("gws", W, 0, *events("x", 10))
    assert time.monotonic() - t0 < 2  # no attempt after the first: no back-off slept
    # The right CA but another name than the certificate's (127.0.0.1): the host name is checked too.
    by_name = open_syslog(rsyslog, "tls", app_name=app, host="localhost")
    with pytest.raises(SyslogTlsRefused, match=r"must name localhost"):
        by_name.write_batch("gws", W, 0, *events("y", 10))
    assert received(rsyslog, app, "gws") == []


@pytest.mark.slow
def test_mutual_tls_without_a_client_certificate_is_refused_by_the_receiver(rsyslog: RsyslogServer) -> None:
    app = f"t{uuid.uuid4().hex[:12]}"
    sink = open_syslog(rsyslog, "tls", app_name=app, port=rsyslog.mtls_port)
    sink.backoff = (0.0,)
    with pytest.raises(SyslogNotConfirmed, match=r"not confirmed after 3 attempts"):
        sink.write_batch("gws", W, 0, *events("x", 10))
    assert received(rsyslog, app, "gws") == []


class CutRelay:
    """A TCP relay in front of rsyslogd whose first connection is cut after ``cut_after`` bytes from the client:
    those bytes go on to rsyslogd, then the relay ends that upstream connection (rsyslogd keeps the whole frames
    it read and drops the partial last one) and resets the client. Later connections are relayed whole, with
    each side's end (FIN) passed on, so the sink's wait for the receiver's close sees rsyslogd's."""

    def __init__(self, target: int, cut_after: int) -> None:
        self.target, self.cut_after = target, cut_after
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            limit = self.cut_after if self.connections == 1 else None
            threading.Thread(target=self._pipe, args=(client, upstream, limit), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        passed = 0
        try:
            while data := src.recv(65536):
                if limit is not None and passed + len(data) >= limit:
                    dst.sendall(data[:limit - passed])
                    dst.close()  # rsyslogd sees the end of the stream after exactly `limit` bytes
                    src.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    src.close()  # the sink sees a reset
                    return
                dst.sendall(data)
                passed += len(data)
            dst.shutdown(socket.SHUT_WR)  # pass the end on
        except OSError:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self.listener.close()


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_a_connection_cut_mid_batch_resends_the_whole_batch(rsyslog: RsyslogServer, transport: str) -> None:
    """Nothing lost; the duplicates are the whole frames rsyslogd read before the cut, fewer than one batch,
    and counted (``resent``) as the events that may be there twice."""
    lines, ids = events(f"cut-{transport}", 1000)
    assert sum(map(len, lines)) > 250_000  # the cut falls inside the batch
    relay = CutRelay(rsyslog.tcp_port if transport == "tcp" else rsyslog.tls_port, cut_after=100_000)
    app = f"t{uuid.uuid4().hex[:12]}"
    try:
        sink = open_syslog(rsyslog, transport, app_name=app, port=relay.port)
        sink.backoff = (0.0,)
        written = sink.write_batch("gws", W, 0, lines, ids)
    finally:
        relay.close()
    assert relay.connections == 2 and written.events == 1000
    got = Counter(records(rsyslog, app, "gws"))
    assert set(got) == set(lines)  # nothing lost
    twice = [line for line, n in got.items() if n > 1]
    # resent: every event whose frame this host had handed to the network when the cut came (an upper bound)
    assert max(got.values()) == 2 and 0 < len(twice) < len(lines) and len(twice) <= written.resent <= len(lines)
    # the duplicates are a prefix of the batch: what went through before the cut
    assert set(twice) == set(lines[:len(twice)])


@pytest.mark.slow
def test_a_receiver_that_is_down_fails_clearly_after_bounded_attempts_then_delivers_once_back() -> None:
    server = RsyslogServer().start()
    try:
        app = f"t{uuid.uuid4().hex[:12]}"
        sink = open_syslog(server, "tls", app_name=app)
        sink.backoff = (0.1, 0.1)
        lines, ids = events("down", 500)
        server.stop()
        t0 = time.monotonic()
        with pytest.raises(SyslogNotConfirmed, match=rf"tls://127.0.0.1:{server.tls_port}: batch 3 of window .* "
                                                     r"\(500 events\) was not confirmed after 3 attempts .*"
                                                     r"ConnectionRefusedError"):
            sink.write_batch("gws", W, 3, lines, ids)
        assert time.monotonic() - t0 < 5
        server.start()  # the same ports
        assert sink.write_batch("gws", W, 3, lines, ids).events == 500
        assert Counter(records(server, app, "gws")) == Counter(lines)
    finally:
        server.close()


def test_a_receiver_that_closes_without_reading_is_not_taken_as_confirmed() -> None:
    """A listener that accepts and closes at once, as a receiver at its session limit does: the sink's bytes
    meet a closed socket. Its FIN arrives first, so the sink reads an end of stream just as from a receiver
    that read everything; only the reset its data drew tells them apart (seen by the sink's half-close, or
    after the end of stream as SO_ERROR / unacknowledged bytes: with both checks removed this test fails)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = 0

    def serve() -> None:
        nonlocal accepted
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted += 1
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        sink = SyslogSink("127.0.0.1", listener.getsockname()[1], tls=None, backoff=(0.0,))
        for n in (1, 1000):
            with pytest.raises(SyslogNotConfirmed, match="not confirmed after 3 attempts"):
                sink.write_batch("gws", W, 0, *events(f"closed{n}", n))
    finally:
        listener.close()
    assert accepted == 6


@pytest.mark.slow
def test_the_fence_runs_before_every_send_of_the_batch(
        rsyslog: RsyslogServer) -> None:
    lines, ids = events("fence", 1000)
    relay = CutRelay(rsyslog.tcp_port, cut_after=100_000)
    app = f"t{uuid.uuid4().hex[:12]}"
    seen: list[int] = []
    try:
        sink = open_syslog(rsyslog, "tcp", app_name=app, port=relay.port)
        sink.backoff = (0.0,)
        sink.write_batch("gws", W, 0, lines, ids, fence=lambda: seen.append(1))
    finally:
        relay.close()
    assert len(seen) == 2 and relay.connections == 2  # each send fenced, the resend too


def write_config(tmp_path: Path, sink: str) -> Path:
    path = tmp_path / "logpull.yaml"
    path.write_text(f"""\
sources:
  - {{name: gws, type: google_workspace, application: login, access_token: {{env: GWS_ACCESS_TOKEN}},
     start: "2026-11-01T00:00:00Z"}}
checkpoints: {{type: sqlite, path: state/checkpoints.db}}
landing: {{type: local, path: landing}}
sinks:
  qradar: {sink}
""")
    return path


@pytest.mark.parametrize(("sink", "message"), [
    ("{type: syslog, host: siem.example.com, transport: udp}",
     r"sinks\.qradar\.transport: udp is refused: it loses events silently .*use tls \(port 6514\) or tcp"),
    ("{type: syslog, host: siem.example.com, transport: relp}", r"sinks\.qradar\.transport: 'relp' is not allowed"),
    ("{type: syslog, host: siem.example.com, ca_file: nowhere.pem}",
     r"sinks\.qradar\.ca_file: .*nowhere.pem is not a file \(relative paths are relative to the config"),
    ("{type: syslog, host: siem.example.com, transport: tcp, ca_file: ca.pem}",
     r"sinks\.qradar\.ca_file: applies only to transport: tls"),
    ("{type: syslog, host: siem.example.com, client_cert: ca.pem}",
     r"sinks\.qradar\.client_key: mutual TLS needs both client_cert and client_key"),
    ("{type: syslog, host: 'syslog://siem.example.com:6514'}", r"sinks\.qradar\.host: .*\(no scheme, no port"),
    ("{type: syslog, host: 'siem.example.com:6514'}", r"sinks\.qradar\.host: .*\(no scheme, no port"),
    ("{type: syslog, host: siem.example.com, app_name: 'log pull'}", r"sinks\.qradar\.app_name: must be 1 to 48"),
    ("{type: syslog, host: siem.example.com, facility: 24}", r"sinks\.qradar\.facility: .*less than or equal to 23"),
    ("{type: syslog, host: siem.example.com, port: 0}", r"sinks\.qradar\.port: .*greater than or equal to 1"),
])
def test_a_wrong_key_is_refused_at_load_naming_it(tmp_path: Path, sink: str, message: str) -> None:
    make_tls_files(tmp_path)  # a real ca.pem beside the config
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, sink))


def test_the_documented_keys_load_with_their_defaults(tmp_path: Path) -> None:
    make_tls_files(tmp_path)
    cfg = load_config(write_config(tmp_path, "{type: syslog, host: siem.example.com, ca_file: ca.pem}"))
    sink = cfg.sinks["qradar"]
    assert isinstance(sink, SyslogSinkConfig)
    assert (sink.transport, sink.effective_port, sink.app_name, sink.facility) == ("tls", 6514, "logpull", 13)
    assert sink.where(cfg.resolve) == "tls://siem.example.com:6514" and sink.kinds == ("syslog",)
    tcp = load_config(write_config(tmp_path, "{type: syslog, host: siem.example.com, transport: tcp}"))
    assert tcp.sinks["qradar"].effective_port == 514  # type: ignore[union-attr]


def test_nothing_listening_fails_clearly(tmp_path: Path) -> None:
    sink = SyslogSink("127.0.0.1", free_port(), tls=None, backoff=(0.0,))
    with pytest.raises(SyslogNotConfirmed, match=r"ConnectionRefusedError.*receiver is up and reachable"):
        sink.write_batch("gws", W, 0, *events("none", 3))
