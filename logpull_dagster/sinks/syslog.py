"""Syslog sink: RFC 5424 messages in RFC 6587 octet-counting frames, over TLS (RFC 5425) or plain TCP.

Capabilities: none (``sinks/__init__.py``): syslog has no idempotency key, no read-back and no
acknowledgement, so this sink delivers at least once.

Guarantee: at-least-once. A batch counts as delivered once the receiver has read every byte of it and
closed its end of the connection (below); duplicates come only from (1) a batch resent because its
connection failed before that (up to one batch per failed attempt, counted in ``resent_events``) and
(2) a delivery that died between the receiver reading a batch and the delivery checkpoint (its retry
sends that batch again: up to one batch per crash).

Layout, one message per event, one connection per batch (one landed page, at most 1,000 events)::

    LEN <PRI>1 TIMESTAMP HOST APP - MSGID [logpull@32473 window_start=".." window_end=".." event_id=".."] RECORD

* PRI = ``facility`` x 8 + 6 (informational: an audit record is an account of what happened, not an
  alert; the SIEM's rules decide what is severe). Default facility 13, "log audit": ``<110>``.
* TIMESTAMP = the event's own time, the envelope's ``event_time``: as the API wrote it when that is
  already an RFC 5424 TIMESTAMP (RFC 3339, at most 6 fraction digits), otherwise converted to UTC with
  microseconds; ``-`` when it cannot be read. Never the time of sending.
* HOSTNAME = this host's FQDN (printable ASCII, at most 255), or ``-``; APP-NAME = ``app_name``;
  PROCID ``-``; MSGID = the stream name, cut to 32 printable ASCII characters.
* STRUCTURED-DATA: one element ``logpull@32473`` with the window and the event id, ``"``, ``\\`` and
  ``]`` escaped with ``\\`` (RFC 5424 6.3.3). The project has no IANA enterprise number: 32473 is the
  number RFC 5612 reserves for documentation; a registered one replaces it in ``SD_ID``.
* MSG = the envelope record, byte for byte, **without** the UTF-8 BOM. RFC 5424 asks for the BOM in
  front of a MSG sent as UTF-8, and without it MSG is MSG-ANY (octets): exactly what a JSON record
  is, a JSON document in UTF-8 (RFC 8259 forbids a BOM in front of one). Receivers keep the BOM as
  part of the message (rsyslog's ``%msg%`` starts with EF BB BF, measured here), so with it every
  record would reach the SIEM as "BOM + JSON", which JSON parsers and SIEM field extractions refuse
  or mangle, and would no longer be the record every other sink delivers. (Python's own
  ``SysLogHandler`` dropped its BOM for the same reason.)
* Framing: ``MSG-LEN SP SYSLOG-MSG``, the only framing RFC 5425 allows and the one rsyslog, syslog-ng
  and QRadar read on TCP; a record may hold any byte (no LF framing to break). Nothing is cut: the
  receiver's maximum message size (rsyslog ``maxMessageSize``, 8k by default) must hold the largest
  record (the docs).

What "confirmed" means. Syslog has no acknowledgement: a successful ``send`` only says this host's
kernel took the bytes. So each batch has a connection of its own, and after writing it the sink ends
its side (TLS ``close_notify``, then TCP FIN) and waits, bounded, for the receiver to close its own
side. A receiver reads to the end of the stream before it sees the end and closes (rsyslog, syslog-ng
and QRadar do), so its close means it read every byte of the batch. The sink then also checks that
every byte it sent was acknowledged by the receiver's TCP and that no reset came (a receiver that
closed *before* reading, e.g. at its session limit, answers the data with a reset): only then does
``write_batch`` return. What the receiver does after reading (its queue, its disk) is beyond what
syslog can tell: a receiver that crashes with read messages in memory loses them (RELP or a sink with
acknowledgements closes that gap).

Failures. A connection that fails or is reset, a write or the close that makes no progress for
``IO_TIMEOUT``, or an attempt longer than ``ATTEMPT_DEADLINE``: the whole batch is sent again on a new
connection (the receiver may have kept any prefix of it: a partial frame at the end is dropped by
rsyslog, whole frames before it are kept), after a capped back-off, up to ``ATTEMPTS`` times; then
:class:`SyslogNotConfirmed` says so, and the delivery's own retries take over from its checkpoint. A
certificate the receiver presents that ``ca_file`` does not trust fails at once
(:class:`SyslogTlsRefused`): no attempt would change it. ``fence`` is called before every send of the
batch (after the connection and handshake, before the first byte), so a delivery that lost its lease
sends nothing.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import fcntl
import os
import re
import socket
import ssl
import struct
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

import certifi
from pydantic import Field, field_validator

from logpull_dagster.config import SinkBase
from logpull_dagster.json_codec import JSONError, loads
from logpull_dagster.plugins import Plugin
from logpull_dagster.sinks import Capability, Fence, Written, to_write
from logpull_dagster.windows import Window, rfc3339

SEVERITY = 6  # informational
SD_ID = "logpull@32473"  # 32473: RFC 5612's documentation enterprise number (module docstring)
DEFAULT_PORT = {"tls": 6514, "tcp": 514}  # RFC 5425's port; 514 is the customary plain TCP syslog port
CONNECT_TIMEOUT = 10.0  # seconds to connect and finish the TLS handshake
IO_TIMEOUT = 30.0  # seconds one write, or the wait for the receiver's close, may make no progress
ATTEMPT_DEADLINE = 120.0  # seconds one attempt at a batch may take in all (a receiver trickling bytes)
ATTEMPTS = 3  # sends of one batch before write_batch fails (each failure: at most one batch twice)
BACKOFF = (0.5, 2.0)  # seconds before the 2nd and 3rd attempts
_CHUNK = 256 * 1024  # bytes handed to the socket at a time, so a failure says how far the batch got
_DRAIN = 64 * 1024  # bytes a receiver may send us before the close: more is not a syslog receiver

_TIMESTAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)")
_EVENT_TIME = b',"event_time":"'
_TCP_CLOSE = 7  # Linux's TCP_CLOSE, the first byte of struct tcp_info
_SD_ESCAPE = {ord('"'): '\\"', ord("\\"): "\\\\", ord("]"): "\\]"}


class SyslogError(RuntimeError):
    """A batch could not be handed to the syslog receiver."""


class SyslogNotConfirmed(SyslogError):
    """Every attempt at a batch failed before the receiver confirmed it (it may hold part of it, or all)."""


class SyslogTlsRefused(SyslogError):
    """The receiver's certificate is not trusted (or ours refused): retrying cannot change it."""

    permanent = True  # delivery fails the window at once (sinks/__init__.py)


class SyslogSink:
    """At-least-once to a syslog receiver over TLS or TCP: a batch counts once the receiver read all of it
    and closed; duplicates only from a batch resent after its connection failed (``resent_events``) or
    repeated by a delivery retry after a crash, one batch per failure."""

    capabilities: frozenset[Capability] = frozenset()

    def __init__(self, host: str, port: int, *, tls: ssl.SSLContext | None, app_name: str = "logpull",
                 facility: int = 13, hostname: str | None = None, ca_file: str | None = None,
                 attempts: int = ATTEMPTS, backoff: tuple[float, ...] = BACKOFF,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.ca_file = ca_file  # for messages only
        self.pri = b"<%d>1 " % (facility * 8 + SEVERITY)
        self.app_name = _printable(app_name, 48)
        self.hostname = _printable(socket.getfqdn() if hostname is None else hostname, 255)
        self.attempts, self.backoff = max(1, attempts), backoff
        self._clock, self._sleep = clock, sleep

    def write_batch(self, source: str, window: Window, batch: int, lines: list[bytes], ids: list[str], *,
                    delivered: set[bytes] | None = None, fence: Fence | None = None) -> Written:
        keep = to_write(ids, delivered)
        if not keep:
            return Written(None, 0, len(lines))
        frames = self._frames(source, window, [lines[k] for k in keep], [ids[k] for k in keep])
        # starts[k]: where frame k begins in the batch, to tell how many frames an attempt handed over
        starts, total = [], 0
        for f in frames:
            starts.append(total)
            total += len(f)
        data = b"".join(frames)
        del frames
        resent, last = 0, ""
        for attempt in range(self.attempts):
            if attempt:
                self._sleep(self.backoff[min(attempt, len(self.backoff)) - 1] if self.backoff else 0)
            sent = 0
            try:
                sent = self._send(data, fence)
                return Written(self.location(source), len(keep), len(lines) - len(keep), resent=resent)
            except SyslogTlsRefused:
                raise
            except _Partial as e:
                sent, last = e.sent, e.why
            except (OSError, ssl.SSLError) as e:
                last = f"{type(e).__name__}: {e}"
            # Every frame whose first byte went out may be in the SIEM: the next attempt sends it again.
            resent += bisect.bisect_left(starts, sent) if sent else 0
        raise SyslogNotConfirmed(
            f"syslog receiver {self.where()}: batch {batch} of window {window} of {source!r} ({len(keep)} events) "
            f"was not confirmed after {self.attempts} attempts (last: {last}); the receiver may hold part of it "
            f"(at-least-once: those events will be sent again). Check that the receiver is up and reachable "
            f"from this host and accepts {'TLS' if self.tls else 'plain TCP'} on port {self.port}; the "
            f"delivery retries from its checkpoint")

    def _frames(self, source: str, window: Window, lines: list[bytes], ids: list[str]) -> list[bytes]:
        """The octet-counted RFC 5424 frame of each record (module docstring)."""
        head = self.pri
        mid = b" %s %s - %s " % (self.hostname, self.app_name, _printable(source, 32))
        sd_head = f'[{SD_ID} window_start="{rfc3339(window.start)}" window_end="{rfc3339(window.end)}" event_id="'
        out = []
        for line, event_id in zip(lines, ids, strict=True):
            sd = (sd_head + event_id.translate(_SD_ESCAPE) + '"]').encode("utf-8", "backslashreplace")
            msg = b"".join((head, _event_timestamp(line), mid, sd, b" ", line))
            out.append(b"%d %s" % (len(msg), msg))
        return out

    def _send(self, data: bytes, fence: Fence | None) -> int:
        """One attempt: connect, fence, write the batch, end it and wait for the receiver's close."""
        deadline = self._clock() + ATTEMPT_DEADLINE
        raw = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        sock: socket.socket = raw
        # The TCP connection itself, for the close: a TLS socket takes ``raw`` over, so keep a second handle.
        tcp = raw.dup() if self.tls is not None else raw
        sent = inflight = 0  # inflight: the chunk being written when a failure came (maybe partly out)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                try:
                    sock = self.tls.wrap_socket(raw, server_hostname=self.host)
                except ssl.SSLCertVerificationError as e:
                    raise SyslogTlsRefused(
                        f"syslog receiver {self.where()} presented a certificate that is not trusted: "
                        f"{e.verify_message or e}; ca_file ({self.ca_file or 'left out: the public CAs'}) must "
                        f"hold the CA that signed the receiver's certificate, and the certificate must name "
                        f"{self.host}") from None
            if fence is not None:
                fence()  # right before the first byte: a delivery that lost its lease sends nothing
            view = memoryview(data)
            while sent < len(data):
                sock.settimeout(_left(deadline, self._clock()))
                inflight = min(_CHUNK, len(data) - sent)
                sent += sock.send(view[sent:sent + _CHUNK])
                inflight = 0
            self._close_and_confirm(sock, tcp, deadline)
            return sent
        except (OSError, ssl.SSLError) as e:
            # A send that raised may have put part of its chunk on the wire (a TLS write is all or nothing
            # for the caller, not for the network): count it, so ``resent`` stays an upper bound.
            raise _Partial(sent + inflight, f"{type(e).__name__}: {e}" + (" (after the whole batch was written: the "
                           "receiver did not confirm it)" if sent == len(data) else "")) from e
        finally:
            for s in (sock, tcp):
                with contextlib.suppress(OSError):
                    s.close()

    def _close_and_confirm(self, sock: socket.socket, tcp: socket.socket, deadline: float) -> None:
        """End our side and wait until the receiver closed its own after reading everything (docstring)."""
        if isinstance(sock, ssl.SSLSocket):
            sock.settimeout(_left(deadline, self._clock()))
            # Our close_notify; returns on the receiver's, or ends in EOF when the receiver closes the TCP
            # connection without one (rsyslog does).
            with contextlib.suppress(ssl.SSLEOFError):
                sock.unwrap()
        # Our FIN after the last byte: nothing more is coming. ENOTCONN here: the receiver reset the
        # connection already (it closed without reading), which is a failure like any other.
        tcp.shutdown(socket.SHUT_WR)
        seen = 0
        while True:
            tcp.settimeout(_left(deadline, self._clock()))
            chunk = tcp.recv(4096)  # a reset raises ConnectionResetError: not confirmed
            if not chunk:
                break
            seen += len(chunk)
            if seen > _DRAIN:
                raise ConnectionError(f"the receiver sent more than {_DRAIN} bytes back; not a syslog receiver?")
        # The receiver's FIN came. Had it closed before reading our bytes, its TCP answers them with a
        # reset instead of acknowledging them (and Linux reads the FIN queued before that reset as an
        # end of stream): wait until every byte, our FIN included, is acknowledged, and no reset came.
        until = min(deadline, self._clock() + IO_TIMEOUT)
        while True:
            unacked = _unacked(tcp)
            if err := tcp.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):  # read once: it clears
                raise ConnectionResetError(err, f"the receiver reset the connection ({os.strerror(err)}) "
                                                "instead of reading the batch")
            if unacked == 0:
                return
            if _closed(tcp):
                raise ConnectionResetError(f"the receiver reset the connection with {unacked} bytes of the "
                                           f"batch unacknowledged")
            if self._clock() >= until:
                raise TimeoutError(f"{unacked} bytes of the batch were not acknowledged by the receiver")
            time.sleep(0.005)

    def holds(self, source: str, window: Window) -> bool:
        return False  # no read-back: syslog cannot tell

    def delivered_ids(self, source: str, window: Window) -> set[bytes]:
        return set()

    def where(self) -> str:
        return f"{'tls' if self.tls else 'tcp'}://{self.host}:{self.port}"

    def location(self, source: str) -> str:
        """The receiver, and how the stream's messages are marked (APP-NAME, MSGID)."""
        return f"syslog {self.where()} (app_name {self.app_name.decode()}, msgid {_printable(source, 32).decode()})"

    def close(self) -> None:
        pass  # one connection per batch, closed by write_batch


class _Partial(Exception):
    """An attempt that failed after handing ``sent`` bytes of the batch to the network."""

    def __init__(self, sent: int, why: str) -> None:
        super().__init__(why)
        self.sent, self.why = sent, why


def _left(deadline: float, now: float) -> float:
    """The socket timeout for the next operation: IO_TIMEOUT, less once the attempt's deadline nears."""
    left = deadline - now
    if left <= 0:
        raise TimeoutError(f"the attempt took longer than {ATTEMPT_DEADLINE:g}s")
    return min(IO_TIMEOUT, left)


def _unacked(sock: socket.socket) -> int:
    """Bytes sent on ``sock`` and not yet acknowledged by the peer (Linux ``SIOCOUTQ``; 0 elsewhere)."""
    outq = getattr(termios, "TIOCOUTQ", None)
    if outq is None:
        return 0
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), outq, b"\0\0\0\0"))[0])
    except OSError:
        return 0


def _closed(sock: socket.socket) -> bool:
    """Whether ``sock``'s TCP connection is gone (Linux ``TCP_INFO`` state CLOSE: reset); False elsewhere."""
    if not hasattr(socket, "TCP_INFO"):
        return False
    try:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == _TCP_CLOSE
    except OSError:
        return True


def _printable(text: str, limit: int) -> bytes:
    """``text`` as an RFC 5424 header field: printable US-ASCII without spaces (others become ``_``), at
    most ``limit`` characters, ``-`` when empty."""
    out = "".join(c if "\x21" <= c <= "\x7e" else "_" for c in text)[:limit]
    return out.encode("ascii") if out else b"-"


def _event_timestamp(line: bytes) -> bytes:
    """The record's ``event_time`` as an RFC 5424 TIMESTAMP (module docstring), or ``-``."""
    i = line.find(_EVENT_TIME)
    if i != -1:  # deliver.envelope's layout: no parsing of the record on the normal path
        start = i + len(_EVENT_TIME)
        raw = line[start:line.find(b'"', start)]
    else:
        try:
            value = loads(line).get("event_time")
        except (JSONError, AttributeError):
            return b"-"
        raw = value.encode("utf-8", "replace") if isinstance(value, str) else b""
    if _TIMESTAMP.fullmatch(raw):
        return raw
    try:
        t = dt.datetime.fromisoformat(raw.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        return b"-"
    if t.tzinfo is None:  # a time without an offset cannot be placed: say so rather than guess
        return b"-"
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode("ascii")


class SyslogSinkConfig(SinkBase):
    """``{type: syslog, host: ..., port: 6514, transport: tls, ...}``: RFC 5424 over TLS or TCP
    (``sinks/syslog.py``). ``port`` defaults to 6514 for tls and 514 for tcp; ``ca_file`` (the CA that
    signed the receiver's certificate; the public CAs when left out) and ``client_cert``/``client_key``
    (mutual TLS) are paths relative to the config file's folder."""

    type: Literal["syslog"]
    host: str
    port: int | None = Field(default=None, ge=1, le=65535)
    transport: Literal["tls", "tcp"] = "tls"
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    app_name: str = "logpull"
    facility: int = Field(default=13, ge=0, le=23)

    kinds: ClassVar[tuple[str, ...]] = ("syslog",)

    @field_validator("transport", mode="before")
    @classmethod
    def _no_udp(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() == "udp":
            raise ValueError("udp is refused: it loses events silently (no connection, no error when the "
                             "receiver is down or drops datagrams, nothing to confirm a batch); use tls "
                             "(port 6514) or tcp")
        return value

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        # one colon: host:port (an IPv6 address has several)
        if not value.strip() or any(c.isspace() for c in value) or "/" in value or value.count(":") == 1:
            raise ValueError(f"{value!r} is not a host name or address; write the receiver's name alone, e.g. "
                             f"siem.example.com (no scheme, no port: the port is `port`)")
        return value

    @field_validator("app_name")
    @classmethod
    def _app_name(cls, value: str) -> str:
        if not 1 <= len(value) <= 48 or not all("\x21" <= c <= "\x7e" for c in value):
            raise ValueError("must be 1 to 48 printable ASCII characters without spaces (RFC 5424 APP-NAME)")
        return value

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORT[self.transport]

    def problems(self, resolve: Callable[[str], Path]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        keys = {k: getattr(self, k) for k in ("ca_file", "client_cert", "client_key")}
        if self.transport == "tcp":
            return [(k, "applies only to transport: tls; use transport: tls, or remove it")
                    for k, v in keys.items() if v is not None]
        for key, value in keys.items():
            if value is not None and (why := _cannot_read(resolve(value))):
                out.append((key, why))
        if out:
            return out
        if (self.client_cert is None) != (self.client_key is None):
            missing = "client_key" if self.client_key is None else "client_cert"
            return [(missing, "mutual TLS needs both client_cert and client_key; set both, or neither")]
        try:
            _tls_context(resolve(self.ca_file) if self.ca_file else None,
                         resolve(self.client_cert) if self.client_cert else None,
                         resolve(self.client_key) if self.client_key else None)
        except _BadFile as e:
            out.append((e.key, e.why))
        return out

    def where(self, resolve: Callable[[str], Path]) -> str:
        return f"{self.transport}://{self.host}:{self.effective_port}"


class _BadFile(Exception):
    def __init__(self, key: str, why: str) -> None:
        super().__init__(f"{key}: {why}")
        self.key, self.why = key, why


def _cannot_read(path: Path) -> str | None:
    if not path.is_file():
        return f"{path} is not a file (relative paths are relative to the config file's folder)"
    try:
        with open(path, "rb"):
            return None
    except OSError as e:
        return f"{path} cannot be read: {e.strerror or e}"


def _tls_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """Verify the receiver (its certificate chain to ``ca``, or to the public CAs, and its host name)."""
    try:  # with ca_file, only its CAs: the receiver's own CA, not any public one
        ctx = ssl.create_default_context(cafile=str(ca) if ca else certifi.where())
    except (ssl.SSLError, OSError) as e:
        raise _BadFile("ca_file", f"{ca} holds no PEM CA certificate ({getattr(e, 'reason', None) or e})") from None
    if cert is not None and key is not None:
        try:
            ctx.load_cert_chain(str(cert), str(key))
        except (ssl.SSLError, OSError) as e:
            raise _BadFile("client_cert", f"{cert} and {key} are not a PEM certificate and its unencrypted "
                                          f"private key ({getattr(e, 'reason', None) or e})") from None
    return ctx


def _resolve(base_dir: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def _open(cfg: SyslogSinkConfig, base_dir: Path) -> SyslogSink:
    tls = None
    if cfg.transport == "tls":
        try:
            tls = _tls_context(_resolve(base_dir, cfg.ca_file), _resolve(base_dir, cfg.client_cert),
                               _resolve(base_dir, cfg.client_key))
        except _BadFile as e:
            raise SyslogError(str(e)) from None
    return SyslogSink(cfg.host, cfg.effective_port, tls=tls, app_name=cfg.app_name, facility=cfg.facility,
                      ca_file=str(_resolve(base_dir, cfg.ca_file)) if cfg.ca_file else None)


PLUGINS = [Plugin("siem", "syslog", SyslogSinkConfig, _open)]
