"""A real HTTP server that behaves like the Google Admin SDK Reports API ``activities.list`` endpoint.

Why a real server rather than a mocked transport: the client under test must be exercised through its
actual HTTP stack (connection pool, keep-alive, timeouts, dropped connections, Retry-After), and tests
that SIGKILL workers need the API to live in another process. Every behaviour a client has to survive
(inclusive window ends, shared milliseconds, late events, flaky pages, Google's stuck-token bug) is
reproducible from a seed and switchable at runtime, in-process or over the ``/_sim/*`` admin endpoints.

Hostile behaviours are there too (a gzip bomb, a huge body, a byte-per-second trickle, bytes that are not
valid UTF-8 or JSON a strict parser accepts, an error that echoes the bearer token, a redirect), so a
client's defences are proven over real sockets rather than asserted against a mock. Every fault kind and
rule key is described in ``FAULT_DOCS`` and ``RULE_KEYS_DOC`` (``python -m logpull_dagster.simulator
--help`` prints both). With ``tls_cert``/``tls_key`` the same API is served over HTTPS.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import random
import re
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from os import PathLike
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from .data import INT64_MIN, EventStore, Key

#: Every fault kind a rule may name, in the order the documentation lists them.
FAULT_KINDS: tuple[str, ...] = (
    "429",
    "429_no_retry_after",
    "503",
    "500",
    "502",
    "504",
    "drop",
    "slow",
    "reject_token",
    "bad_json",
    "malformed",
    "no_id",
    "stuck_token",
    "repeat_token",
    "gzip_bomb",
    "big_body",
    "trickle",
    "surrogate",
    "invalid_utf8",
    "control_byte",
    "echo_auth",
    "redirect",
)

#: One line per fault kind: what a request it fires on gets back. ``--help`` prints it.
FAULT_DOCS: dict[str, str] = {
    "429": "429 RESOURCE_EXHAUSTED with Retry-After: retry_after (default 1)",
    "429_no_retry_after": "the same 429 without a Retry-After header",
    "503": "503 UNAVAILABLE; Retry-After only when retry_after is set",
    "500": "500 with a Google-style error body",
    "502": "502 with a Google-style error body",
    "504": "504 with a Google-style error body",
    "drop": "close the connection without answering",
    "slow": "sleep delay seconds (default 5), then answer the normal page",
    "reject_token": "400 'Invalid pageToken' (requests with a token only)",
    "bad_json": "200 with an HTML error page instead of JSON",
    "malformed": "200 JSON whose 'items' is a string",
    "no_id": "the normal page with the middle item's 'id' removed",
    "stuck_token": "200 without items whose nextPageToken is the token sent (Google's stuck-token bug); "
    "without a token, a fresh token that leads back to the first page",
    "repeat_token": "the normal page WITH its items, but nextPageToken is the token sent; without a token, "
    "a fresh token that leads back to the first page, so a naive client reads page 1 again, forever",
    "gzip_bomb": "200 Content-Encoding: gzip, Content-Type: application/json: a valid JSON object "
    '{"kind": ..., "pad": "AAA..."} that inflates to size bytes (default 2 GiB) from about size/1000 '
    "on the wire",
    "big_body": "200 uncompressed JSON of exactly size bytes (default 128 MiB, same padding), with a "
    "correct Content-Length, streamed; a client that hangs up early just ends it",
    "trickle": "the normal page, but the whole response (status line, headers, body) is written "
    "trickle_bytes bytes (default 1) every delay seconds (default 1)",
    "surrogate": "the normal page, but the middle item's events[0].name is the JSON text "
    '"login_\\ud800success": a lone UTF-16 surrogate escape (Python\'s json accepts it, orjson refuses it); '
    "ids are untouched",
    "invalid_utf8": "the normal page with one raw 0xFF byte inside the middle item's actor.email",
    "control_byte": "the normal page with one raw 0x01 byte inside the middle item's actor.email",
    "echo_auth": "an error of status (default 401) whose message echoes the Authorization header verbatim "
    "(empty when absent); echo_auth rules are evaluated before the token check, so they fire for a wrong "
    "or missing token too",
    "redirect": "302 to location (default http://127.0.0.2:9/elsewhere) with an empty body",
}

#: The keys of a fault rule, for ``--help``.
RULE_KEYS_DOC = """\
A fault rule is a JSON object; rules are evaluated in order and the first that fires answers the request
(echo_auth rules first, before the token check; every other rule only sees correctly authenticated
requests). The kinds that damage the middle item serve an empty page unchanged. Keys:
  kind           one of the kinds below (required)
  count          times the rule fires, null = forever (default 1)
  after          matching requests let through before it may fire (default 0)
  probability    chance to fire on each eligible request, seeded, null = always (default null)
  match          which requests count: any, token (has a pageToken), first (has none) (default any)
  retry_after    seconds for Retry-After of 429 (default 1) and 503 (default none)
  delay          seconds: slow sleeps it (default 5), trickle waits it between writes (default 1)
  size           bytes of the decoded body of gzip_bomb (default 2 GiB) and big_body (default 128 MiB)
  trickle_bytes  bytes per write of trickle (default 1)
  status         HTTP status of echo_auth: 400, 401, 403, 500 or 503 (default 401)
  location       Location header of redirect (default http://127.0.0.2:9/elsewhere)"""

_REPORTS_PATH = re.compile(r"^/admin/reports/v1/activity/users/all/applications/(?P<app>[A-Za-z0-9_]+)$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_RESULTS = 1000
_TOKEN_STRUCT = struct.Struct(">B8sqq")  # version, query hash, cursor time ms, cursor uniqueQualifier
_TOKEN_MAC_BYTES = 6
_RULE_KEYS = frozenset({
    "kind", "count", "after", "probability", "match", "retry_after", "delay",
    "size", "trickle_bytes", "status", "location",
})
_MATCHES = ("any", "token", "first")
_PRE_AUTH_KINDS = frozenset({"echo_auth"})  # evaluated before the token check, so a wrong token reaches them
_ECHO_STATUSES = (400, 401, 403, 500, 503)
_DEFAULT_DELAY = {"trickle": 1.0}  # every other kind (slow) defaults to 5 seconds
_DEFAULT_SIZE = {"gzip_bomb": 2 * 1024**3, "big_body": 128 * 1024**2}
_DEFAULT_LOCATION = "http://127.0.0.2:9/elsewhere"  # discard port on another loopback address: goes nowhere
_TLS_HANDSHAKE_TIMEOUT = 10.0
_WWW_AUTHENTICATE = ("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')

# gzip_bomb and big_body serve {"kind":...,"pad":"AAA..."}; the pad is written from one shared chunk, so
# neither ever holds its decoded size in memory. The cap keeps a cached bomb (about size/1000) small.
_PAD_PREFIX = b'{"kind":"admin#reports#activities","pad":"'
_PAD_SUFFIX = b'"}'
_PAD_CHUNK = b"A" * (1 << 20)
_MIN_PADDED_SIZE = len(_PAD_PREFIX) + len(_PAD_SUFFIX)
_MAX_PADDED_SIZE = 1 << 34

# The surrogate, invalid_utf8 and control_byte kinds serialize the page with this marker in one string,
# then swap the marker's JSON for raw bytes json.dumps would never write.
_SPLICE_MARK = "\x00logpull-simulator-splice\x00"
_SPLICE_KINDS = frozenset({"surrogate", "invalid_utf8", "control_byte"})
_SURROGATE_JSON = b'"login_\\ud800success"'

_STATUS_TEXT = {
    400: ("INVALID_ARGUMENT", "invalid", "global"),
    401: ("UNAUTHENTICATED", "required", "global"),
    403: ("PERMISSION_DENIED", "forbidden", "global"),
    404: ("NOT_FOUND", "notFound", "global"),
    405: ("METHOD_NOT_ALLOWED", "methodNotAllowed", "global"),
    429: ("RESOURCE_EXHAUSTED", "rateLimitExceeded", "usageLimits"),
    500: ("INTERNAL", "backendError", "global"),
    502: ("UNAVAILABLE", "badGateway", "global"),
    503: ("UNAVAILABLE", "backendError", "global"),
    504: ("DEADLINE_EXCEEDED", "deadlineExceeded", "global"),
}

_BAD_JSON_BODY = (
    b"<!DOCTYPE html><html lang=en><meta charset=utf-8><title>Error 502 (Server Error)!!1</title>"
    b"<p><b>502.</b> <ins>That\xe2\x80\x99s an error.</ins><p>The server encountered a temporary error "
    b"and could not complete your request.<p>Please try again in 30 seconds.</html>"
)


def us_from_datetime(dt: datetime) -> int:
    """Epoch microseconds of an aware datetime; naive datetimes are refused rather than guessed."""
    if dt.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return (dt - _EPOCH) // timedelta(microseconds=1)


def parse_rfc3339_us(value: str) -> int:
    """Epoch microseconds of an RFC 3339 timestamp (``Z``, offsets and fractions all accepted)."""
    return us_from_datetime(datetime.fromisoformat(value))


def _seconds_text(seconds: float) -> str:
    """Retry-After value: delta-seconds as an integer when whole (RFC 9110), else a plain decimal."""
    return str(int(seconds)) if float(seconds).is_integer() else str(float(seconds))


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


class SimulatorError(ValueError):
    """A control call (rules, clock, latency) with invalid arguments."""


@dataclass
class _Rule:
    """One fault rule plus its counters; counters reset whenever the rule list is replaced."""

    kind: str
    count: int | None = 1
    after: int = 0
    probability: float | None = None
    match: str = "any"
    retry_after: float | None = None
    delay: float = 5.0
    size: int | None = None
    trickle_bytes: int = 1
    status: int = 401
    location: str = _DEFAULT_LOCATION
    seen: int = 0
    fired: int = 0

    @classmethod
    def parse(cls, raw: Any) -> _Rule:
        if not isinstance(raw, dict):
            raise SimulatorError(f"fault rule must be an object, got {raw!r}")
        unknown = set(raw) - _RULE_KEYS
        if unknown:
            raise SimulatorError(f"unknown fault rule keys {sorted(unknown)}")
        kind = str(raw.get("kind"))
        if kind not in FAULT_KINDS:
            raise SimulatorError(f"unknown fault kind {raw.get('kind')!r}; expected one of {FAULT_KINDS}")
        count = raw.get("count", 1)
        after = raw.get("after", 0)
        probability = raw.get("probability")
        match = raw.get("match", "any")
        retry_after = raw.get("retry_after")
        delay = raw.get("delay", _DEFAULT_DELAY.get(kind, 5.0))
        size = raw.get("size", _DEFAULT_SIZE.get(kind))
        trickle_bytes = raw.get("trickle_bytes", 1)
        status = raw.get("status", 401)
        location = raw.get("location", _DEFAULT_LOCATION)
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            raise SimulatorError("count must be a non-negative int or null")
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise SimulatorError("after must be a non-negative int")
        if probability is not None and not (_is_number(probability) and 0.0 <= probability <= 1.0):
            raise SimulatorError("probability must be within [0, 1]")
        if match not in _MATCHES:
            raise SimulatorError(f"match must be one of {_MATCHES}")
        if retry_after is not None and not (_is_number(retry_after) and retry_after >= 0):
            raise SimulatorError("retry_after must be a non-negative number")
        if not (_is_number(delay) and delay >= 0):
            raise SimulatorError("delay must be a non-negative number")
        if size is not None and not (
            _is_int(size) and _MIN_PADDED_SIZE <= size <= _MAX_PADDED_SIZE
        ):
            raise SimulatorError(f"size must be an int within [{_MIN_PADDED_SIZE}, {_MAX_PADDED_SIZE}] (bytes)")
        if not (_is_int(trickle_bytes) and trickle_bytes >= 1):
            raise SimulatorError("trickle_bytes must be a positive int")
        if not (_is_int(status) and status in _ECHO_STATUSES):
            raise SimulatorError(f"status must be one of {_ECHO_STATUSES}")
        # http.server writes headers as Latin-1, and a CR or LF would split the reply: printable ASCII only.
        if not (isinstance(location, str) and location and all(" " <= c <= "~" for c in location)):
            raise SimulatorError("location must be a non-empty string of printable ASCII")
        return cls(kind, count, after, probability, match, retry_after, float(delay),
                   size, trickle_bytes, status, location)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "count": self.count, "after": self.after, "probability": self.probability,
            "match": self.match, "retry_after": self.retry_after, "delay": self.delay,
            "size": self.size, "trickle_bytes": self.trickle_bytes, "status": self.status,
            "location": self.location, "seen": self.seen, "fired": self.fired,
        }

    def applies_to(self, has_token: bool) -> bool:
        if self.kind == "reject_token" and not has_token:
            return False
        return self.match == "any" or (self.match == "token") == has_token


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class _Reply:
    """What the handler writes. ``parts`` (with ``length`` bytes in all) streams a body too big to hold;
    ``trickle`` = (delay, bytes per write) slows the whole response, status line included."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json; charset=UTF-8"
    items: int = 0
    parts: Iterable[bytes] | None = None
    length: int = 0
    trickle: tuple[float, int] | None = None


_DROP = object()  # sentinel reply: close the connection without answering


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> _Reply:
    """A Google-style JSON error body, the shape ``googleapiclient`` and real clients parse."""
    grpc_status, reason, domain = _STATUS_TEXT.get(status, ("UNKNOWN", "unknown", "global"))
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
            "status": grpc_status,
        }
    }
    return _Reply(status, _json_bytes(body), headers or [])


def _padded_parts(size: int) -> Iterator[bytes]:
    """The ``size`` bytes of the padded JSON object, as the prefix, shared pad chunks and the suffix."""
    full, rest = divmod(size - _MIN_PADDED_SIZE, len(_PAD_CHUNK))
    yield _PAD_PREFIX
    for _ in range(full):
        yield _PAD_CHUNK
    if rest:
        yield _PAD_CHUNK[:rest]
    yield _PAD_SUFFIX


def _gzip_padded_json(size: int) -> bytes:
    """gzip of the padded JSON object of ``size`` bytes, in milliseconds and without the decoded bytes.

    Why not just stream the chunks through ``compressobj(wbits=31)``: deflating 2 GiB takes over ten
    seconds. After a Z_FULL_FLUSH the compressor forgets its history, so the deflate output of one pad
    chunk refers to nothing outside itself and can simply be repeated; the gzip frame is then written
    here, with a CRC32 of the repeated chunks combined arithmetically instead of computed over 2 GiB."""
    full, rest = divmod(size - _MIN_PADDED_SIZE, len(_PAD_CHUNK))
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: no zlib or gzip frame
    head = deflate.compress(_PAD_PREFIX) + deflate.flush(zlib.Z_FULL_FLUSH)
    unit = deflate.compress(_PAD_CHUNK) + deflate.flush(zlib.Z_FULL_FLUSH) if full else b""
    last = _PAD_CHUNK[:rest] + _PAD_SUFFIX
    tail = deflate.compress(last) + deflate.flush(zlib.Z_FINISH)
    pad_crc = _crc32_repeat(zlib.crc32(_PAD_CHUNK), len(_PAD_CHUNK), full)
    crc = _crc32_combine(zlib.crc32(_PAD_PREFIX), pad_crc, full * len(_PAD_CHUNK))
    crc = zlib.crc32(last, crc)
    # magic, deflate, no flags, mtime 0, XFL 2 (best compression), OS 255 (unknown)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return b"".join([header, head, unit * full, tail, struct.pack("<II", crc, size & 0xFFFFFFFF)])


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32 of A+B from crc(A), crc(B) and len(B): zlib's crc32_combine, which Python does not expose.
    Appending len2 zero bytes is a linear map over GF(2); it is applied by repeated squaring."""
    if len2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # the operator for one zero bit
    even = [_gf2_times(odd, v) for v in odd]  # two zero bits
    odd = [_gf2_times(even, v) for v in even]  # four zero bits
    while True:
        even = [_gf2_times(odd, v) for v in odd]
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = [_gf2_times(even, v) for v in even]
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def _crc32_repeat(unit_crc: int, unit_len: int, n: int) -> int:
    """CRC32 of a unit repeated ``n`` times, by doubling: a few dozen combines even for 2 GiB."""
    total, power, power_len = 0, unit_crc, unit_len  # total: CRC32 of the empty string so far
    while n:
        if n & 1:
            total = _crc32_combine(total, power, power_len)
        n >>= 1
        if n:
            power = _crc32_combine(power, power, power_len)
            power_len *= 2
    return total


class _TrickleWriter:
    """Stands in for the handler's ``wfile`` during a trickle reply: sleeps ``delay`` before each write
    of at most ``step`` bytes. A client that hangs up makes a write raise OSError, which ends the reply."""

    def __init__(self, raw: Any, delay: float, step: int) -> None:
        self.raw, self.delay, self.step = raw, delay, step

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        for i in range(0, len(view), self.step):
            time.sleep(self.delay)
            self.raw.write(view[i:i + self.step])
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


class _BadRequest(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class _Server(ThreadingHTTPServer):
    """Threaded server that remembers its open connections so ``stop()`` can cut idle keep-alives;
    otherwise a pooled client connection would keep being served after the simulator was stopped."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], sim: Simulator, verbose: bool, tls: ssl.SSLContext | None = None
    ) -> None:
        self.sim = sim
        self.verbose = verbose
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)
        if tls is not None:
            # No handshake inside accept(): it would run on the serving thread, where one silent or
            # failing client would stall every other. finish_request does it on the connection's thread.
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(_TLS_HANDSHAKE_TIMEOUT)
                request.do_handshake()
                request.settimeout(None)
            except OSError:  # unknown CA, plain HTTP on the TLS port, a silent client: drop just this one
                return
        super().finish_request(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):  # already closed by the client
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive handler: every reply carries Content-Length so clients can reuse connections."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes; with Nagle on, each reply would stall ~40 ms waiting
    # for the client's delayed ACK. TCP_NODELAY keeps a page round trip around a millisecond.
    disable_nagle_algorithm = True
    server_version = "ESF"  # what Google's front end calls itself
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True  # cannot know where the next request starts
            self.send_error(400, "Bad Content-Length")
            return
        body = self.rfile.read(length) if length > 0 else b""
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        sim = self.server.sim
        try:
            m = _REPORTS_PATH.match(url.path)
            if m:
                if method != "GET":
                    reply: _Reply | object = _error(405, f"Method {method} not allowed")
                else:
                    reply = sim._handle_reports(m.group("app"), query, self.headers.get("Authorization"))
            elif url.path.startswith("/_sim/"):
                reply = sim._handle_admin(method, url.path, query, body)
            else:
                reply = _error(404, f"Not Found: {url.path}")
        except Exception:  # a simulator bug must answer 500, not hang the client
            traceback.print_exc(file=sys.stderr)
            reply = _error(500, "Internal simulator error")
        if reply is _DROP:
            self.close_connection = True
            return
        assert isinstance(reply, _Reply)
        wfile = self.wfile
        if reply.trickle is not None:
            self.wfile = _TrickleWriter(wfile, *reply.trickle)  # type: ignore[assignment]
        try:
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body) if reply.parts is None else reply.length))
            self.end_headers()
            if reply.parts is None:
                self.wfile.write(reply.body)
            else:
                for part in reply.parts:
                    self.wfile.write(part)
        except OSError:  # the client gave up (read timeout, or it stopped reading a big or slow reply)
            self.close_connection = True
        finally:
            self.wfile = wfile


def _tls_context(cert: str | PathLike[str] | None, key: str | PathLike[str] | None) -> ssl.SSLContext | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise SimulatorError("tls_cert and tls_key must be given together")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except OSError as e:  # missing file, not PEM, key not matching the certificate (ssl.SSLError is one)
        raise SimulatorError(f"cannot load TLS certificate {cert} with key {key}: {e}") from None
    return context


class Simulator:
    """Emulated Reports API with a sim clock, fault rules and a request log.

    Use ``start()``/``stop()`` or ``with Simulator(...) as sim:``; ``sim.url`` is the base URL.
    """

    def __init__(
        self,
        *,
        seed: int = 7,
        events_per_hour: int = 2000,
        token: str | None = "demo-token",
        customer_id: str = "C03demo",
        boundary_events: bool = True,
        shared_ms_events: bool = True,
        publish_delay: float = 0.0,
        late_fraction: float = 0.0,
        late_delay: float = 3 * 3600,
        page_latency: float = 0.0,
        faults: list[dict[str, Any]] | None = None,
        verbose: bool = False,
        tls_cert: str | PathLike[str] | None = None,
        tls_key: str | PathLike[str] | None = None,
    ) -> None:
        """``tls_cert`` (PEM, the chain) and ``tls_key`` (PEM) together serve HTTPS instead of HTTP;
        they are loaded here, so a bad file fails the constructor rather than the first request."""
        self._tls = _tls_context(tls_cert, tls_key)
        self.seed = seed
        self.token = token
        self.verbose = verbose
        self.store = EventStore(
            seed=seed,
            events_per_hour=events_per_hour,
            customer_id=customer_id,
            boundary_events=boundary_events,
            shared_ms_events=shared_ms_events,
            publish_delay=publish_delay,
            late_fraction=late_fraction,
            late_delay=late_delay,
        )
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._fault_rng = random.Random()
        self._fixed_now_us: int | None = None
        self._offset_us = 0
        self._page_latency = 0.0
        self._log: list[dict[str, Any]] = []
        self._seq = 0
        self._in_flight = 0
        self._token_key = f"logpull-simulator-token|{seed}".encode()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._bombs: dict[int, bytes] = {}  # size -> gzip body, so only the first bomb of a size is built
        self._bombs_lock = threading.Lock()
        self.set_page_latency(page_latency)
        self.set_faults(faults or [])

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a daemon thread; returns the base URL. Port 0 picks a free port."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server = _Server((host, port), self, self.verbose, self._tls)
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="logpull-simulator", daemon=True
        )
        thread.start()
        self._server, self._thread = server, thread
        return self.url

    def stop(self) -> None:
        """Stop accepting, cut open keep-alive connections, release the port. Idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("simulator not started")
        host, port = self._server.server_address[:2]
        return f"{'https' if self._tls is not None else 'http'}://{host}:{port}"

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulator not started")
        return int(self._server.server_address[1])

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- controls -----------------------------------------------------------------------------------

    def set_faults(self, rules: list[dict[str, Any]]) -> None:
        """Replace the fault rules; counters and the probability RNG restart, so runs are repeatable."""
        if not isinstance(rules, list):
            raise SimulatorError("rules must be a list")
        parsed = [_Rule.parse(r) for r in rules]
        with self._lock:
            self._rules = parsed
            self._fault_rng = random.Random(f"logpull-simulator|faults|{self.seed}")

    def faults(self) -> list[dict[str, Any]]:
        """The current rules with their ``seen``/``fired`` counters."""
        with self._lock:
            return [r.spec() for r in self._rules]

    def set_clock(self, now: datetime | None = None, offset: float | None = None) -> None:
        """Sim-now = (``now`` frozen, or the real UTC clock when None) + ``offset`` seconds.
        ``set_clock()`` returns to real time."""
        fixed = None if now is None else us_from_datetime(now)
        offset_us = 0 if offset is None else round(offset * 1_000_000)
        with self._lock:
            self._fixed_now_us, self._offset_us = fixed, offset_us

    def advance_clock(self, seconds: float) -> None:
        """Move sim-now forward (or back) by ``seconds``, keeping it frozen or running as it was."""
        with self._lock:
            self._offset_us += round(seconds * 1_000_000)

    def now(self) -> datetime:
        """Current sim-now as an aware UTC datetime."""
        return _EPOCH + timedelta(microseconds=self._now_us())

    def _now_us(self) -> int:
        with self._lock:
            fixed, offset = self._fixed_now_us, self._offset_us
        base = fixed if fixed is not None else time.time_ns() // 1000
        return base + offset

    def set_page_latency(self, seconds: float) -> None:
        """Sleep added to every reports request, for a realistically slow API."""
        if not _is_number(seconds) or seconds < 0:
            raise SimulatorError("page latency must be a non-negative number")
        with self._lock:
            self._page_latency = float(seconds)

    def requests(self) -> list[dict[str, Any]]:
        """Copy of the request log, oldest first: one entry per reports request (admin calls excluded)
        with n, t (unix time), in_flight (reports requests being served as this one arrived, itself
        included: the client's concurrency as the API sees it), application, startTime, endTime,
        maxResults (int when numeric), pageToken (None when absent), status (None for a dropped
        connection or a reply still pending), fault (kind or None) and items (number returned).
        Tests use it to count pages read twice."""
        with self._lock:
            return [dict(e) for e in self._log]

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    # -- ground truth -------------------------------------------------------------------------------

    def _truth_refs(
        self, application: str, start: datetime, end: datetime, include_unpublished: bool
    ) -> list[tuple[Any, int]]:
        now_us = self._now_us()
        lo = _ceil_div(us_from_datetime(start), 1000)
        hi = min(_ceil_div(us_from_datetime(end), 1000) - 1, now_us // 1000)  # half-open, nothing future
        visible_at = None if include_unpublished else now_us // 1000
        return list(self.store.scan(application, lo, hi, visible_at=visible_at))

    def ground_truth(
        self, application: str, start: datetime, end: datetime, *, include_unpublished: bool = False
    ) -> list[dict[str, Any]]:
        """What a correct client must deliver for the HALF-OPEN window [start, end): the API items
        visible at sim-now, newest first. ``include_unpublished`` adds events that already happened
        (time <= sim-now) but whose late publication is still pending."""
        refs = self._truth_refs(application, start, end, include_unpublished)
        return [self.store.item(application, b, i) for b, i in refs]

    def ground_truth_ids(
        self, application: str, start: datetime, end: datetime, *, include_unpublished: bool = False
    ) -> list[tuple[str, str, str, str]]:
        """Like ``ground_truth`` but only the ids (applicationName, customerId, time, uniqueQualifier):
        cheap enough to check a million-event benchmark window."""
        refs = self._truth_refs(application, start, end, include_unpublished)
        return [self.store.event_id(application, b, i) for b, i in refs]

    # -- page tokens --------------------------------------------------------------------------------

    @staticmethod
    def _query_hash(application: str, start_us: int, end_us: int | None) -> bytes:
        text = f"{application}|{start_us}|{'' if end_us is None else end_us}"
        return hashlib.blake2b(text.encode(), digest_size=8).digest()

    def _encode_token(self, qhash: bytes, key: Key) -> str:
        payload = _TOKEN_STRUCT.pack(1, qhash, key[0], key[1])
        mac = hashlib.blake2b(payload, key=self._token_key, digest_size=_TOKEN_MAC_BYTES).digest()
        return base64.urlsafe_b64encode(payload + mac).decode().rstrip("=")

    def _decode_token(self, token: str, qhash: bytes) -> Key:
        """The cursor of a token, or _BadRequest when it is garbage or belongs to another query."""
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise _BadRequest("Invalid pageToken") from None
        if len(raw) != _TOKEN_STRUCT.size + _TOKEN_MAC_BYTES:
            raise _BadRequest("Invalid pageToken")
        payload, mac = raw[: _TOKEN_STRUCT.size], raw[_TOKEN_STRUCT.size:]
        expected = hashlib.blake2b(payload, key=self._token_key, digest_size=_TOKEN_MAC_BYTES).digest()
        version, token_qhash, t, uq = _TOKEN_STRUCT.unpack(payload)
        if mac != expected or version != 1 or token_qhash != qhash:
            raise _BadRequest("Invalid pageToken")
        return (t, uq)

    # -- the Reports endpoint -----------------------------------------------------------------------

    def _log_open(self, application: str, query: dict[str, str]) -> dict[str, Any]:
        max_results: Any = query.get("maxResults")
        if isinstance(max_results, str) and max_results.isdigit():
            max_results = int(max_results)
        with self._lock:
            self._seq += 1
            self._in_flight += 1
            entry = {
                "n": self._seq,
                "t": time.time(),
                "in_flight": self._in_flight,
                "application": application,
                "startTime": query.get("startTime"),
                "endTime": query.get("endTime"),
                "maxResults": max_results,
                "pageToken": query.get("pageToken") or None,
                "status": None,
                "fault": None,
                "items": 0,
            }
            self._log.append(entry)
        return entry

    def _pick_fault(self, has_token: bool, *, pre_auth: bool = False) -> _Rule | None:
        """The first rule that fires, among the pre-auth kinds (echo_auth) or among all the others."""
        with self._lock:
            for rule in self._rules:
                if (rule.kind in _PRE_AUTH_KINDS) != pre_auth or not rule.applies_to(has_token):
                    continue
                rule.seen += 1
                if rule.seen <= rule.after:
                    continue
                if rule.count is not None and rule.fired >= rule.count:
                    continue
                if rule.probability is not None and self._fault_rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                return rule
        return None

    def _handle_reports(self, application: str, query: dict[str, str], authorization: str | None) -> object:
        """One ``activities.list`` request: latency, auth, faults, then the real page. The log entry is
        completed before the reply is written, so a client that has its answer sees it logged."""
        entry = self._log_open(application, query)
        try:
            with self._lock:
                latency = self._page_latency
            if latency:
                time.sleep(latency)
            reply = self._reports_reply(application, query, authorization, entry)
            with self._lock:
                if isinstance(reply, _Reply):
                    entry["status"] = reply.status
                    entry["items"] = reply.items
            return reply
        finally:
            with self._lock:
                self._in_flight -= 1

    def _reports_reply(
        self, application: str, query: dict[str, str], authorization: str | None, entry: dict[str, Any]
    ) -> object:
        page_token = query.get("pageToken") or None
        # echo_auth must be reachable with a wrong token (that is when an API is most likely to quote the
        # credential back), so its rules are asked before the token check; all other rules after it.
        echo = self._pick_fault(page_token is not None, pre_auth=True)
        if echo is not None:
            with self._lock:
                entry["fault"] = echo.kind
            headers = [_WWW_AUTHENTICATE] if echo.status == 401 else []
            return _error(echo.status, f"Request with Authorization: {authorization or ''} was refused", headers)
        if self.token is not None:
            scheme, _, value = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or value.strip() != self.token:
                return _error(
                    401,
                    "Request is missing required authentication credential. Expected OAuth 2 access token, "
                    "login cookie or other valid authentication credential.",
                    [_WWW_AUTHENTICATE],
                )
        rule = self._pick_fault(page_token is not None)
        if rule is None:
            return self._page(application, query)
        kind = rule.kind
        with self._lock:
            entry["fault"] = kind  # logged now, so a request still sleeping in "slow" already shows it
        if kind in ("429", "429_no_retry_after"):
            retry_after = rule.retry_after if rule.retry_after is not None else 1
            headers = [] if kind == "429_no_retry_after" else [("Retry-After", _seconds_text(retry_after))]
            return _error(429, "Quota exceeded for quota metric 'Queries'.", headers)
        if kind == "503":
            headers = [] if rule.retry_after is None else [("Retry-After", _seconds_text(rule.retry_after))]
            return _error(503, "The service is currently unavailable.", headers)
        if kind in ("500", "502", "504"):
            return _error(int(kind), {"500": "Internal error", "502": "Bad Gateway",
                                      "504": "Deadline exceeded"}[kind])
        if kind == "drop":
            return _DROP
        if kind == "slow":
            time.sleep(rule.delay)
            return self._page(application, query)
        if kind == "reject_token":
            return _error(400, "Invalid pageToken")
        if kind == "bad_json":
            return _Reply(200, _BAD_JSON_BODY, content_type="text/html; charset=UTF-8")
        if kind == "malformed":
            return _Reply(200, _json_bytes({"kind": "admin#reports#activities", "items": "oops"}))
        if kind in ("no_id", *_SPLICE_KINDS):
            return self._page(application, query, tamper=kind)
        if kind == "stuck_token":
            token = page_token or self._fresh_token(application, query)
            body = {"kind": "admin#reports#activities", "etag": '"stuck"', "nextPageToken": token}
            return _Reply(200, _json_bytes(body))
        if kind == "repeat_token":
            return self._page(application, query, next_token=page_token or self._fresh_token(application, query))
        if kind == "gzip_bomb":
            assert rule.size is not None  # parse() defaults it for this kind
            return _Reply(200, self._gzip_bomb(rule.size), [("Content-Encoding", "gzip")],
                          content_type="application/json")
        if kind == "big_body":
            assert rule.size is not None
            return _Reply(200, b"", parts=_padded_parts(rule.size), length=rule.size)
        if kind == "trickle":
            reply = self._page(application, query)
            reply.trickle = (rule.delay, rule.trickle_bytes)
            return reply
        if kind == "redirect":
            return _Reply(302, b"", [("Location", rule.location)], content_type="text/html; charset=UTF-8")
        raise AssertionError(f"unhandled fault kind {kind}")  # pragma: no cover

    def _gzip_bomb(self, size: int) -> bytes:
        with self._bombs_lock:  # held while building, so concurrent first requests build it once
            body = self._bombs.get(size)
            if body is None:
                body = self._bombs[size] = _gzip_padded_json(size)
            return body

    def _fresh_token(self, application: str, query: dict[str, str]) -> str:
        """A valid token for the query that leads back to its first page (for stuck_token with no token)."""
        try:
            start_us = parse_rfc3339_us(query.get("startTime", ""))
            end_us = parse_rfc3339_us(query["endTime"]) if query.get("endTime") else None
        except ValueError:
            start_us, end_us = 0, None
        top = (end_us // 1000 + 1) if end_us is not None else (self._now_us() // 1000 + 1)
        return self._encode_token(self._query_hash(application, start_us, end_us), (top, INT64_MIN))

    def _page(
        self, application: str, query: dict[str, str], *, tamper: str | None = None, next_token: str | None = None
    ) -> _Reply:
        """The page for the query; ``tamper`` (no_id or a splice kind) damages its middle item, and
        ``next_token`` replaces its nextPageToken (set even on the last page)."""
        try:
            return self._page_inner(application, query, tamper, next_token)
        except _BadRequest as e:
            return _error(400, e.message)

    def _page_inner(
        self, application: str, query: dict[str, str], tamper: str | None, next_token: str | None
    ) -> _Reply:
        now_us = self._now_us()
        start_raw = query.get("startTime")
        if not start_raw:
            raise _BadRequest("Required parameter: startTime")
        try:
            start_us = parse_rfc3339_us(start_raw)
        except ValueError:
            raise _BadRequest(f"Invalid value '{start_raw}'. Values must match the format "
                              "'yyyy-mm-ddThh:mm:ss.sssZ' (RFC 3339).") from None
        end_raw = query.get("endTime")
        end_us: int | None = None
        if end_raw:
            try:
                end_us = parse_rfc3339_us(end_raw)
            except ValueError:
                raise _BadRequest(f"Invalid value '{end_raw}' for endTime (RFC 3339 expected).") from None
        if start_us > now_us:
            raise _BadRequest("Start time must be less than or equal to the current time.")
        effective_end = end_us if end_us is not None else now_us
        if start_us >= effective_end:
            raise _BadRequest("Start time must be less than end time.")
        max_raw = query.get("maxResults")
        max_results = _MAX_RESULTS
        if max_raw is not None:
            if not re.fullmatch(r"[0-9]{1,7}", max_raw) or not 1 <= int(max_raw) <= _MAX_RESULTS:
                raise _BadRequest(f"Invalid value '{max_raw}'. Values must be within the range: [1, 1000]")
            max_results = int(max_raw)
        qhash = self._query_hash(application, start_us, end_us)
        page_token = query.get("pageToken")
        cursor = self._decode_token(page_token, qhash) if page_token else None

        lo_ms = _ceil_div(start_us, 1000)  # both ends inclusive, at millisecond resolution
        hi_ms = min(effective_end // 1000, now_us // 1000)
        now_ms = now_us // 1000
        refs = list(islice(
            self.store.scan(application, lo_ms, hi_ms, before=cursor, visible_at=now_ms), max_results + 1
        ))
        has_more = len(refs) > max_results
        refs = refs[:max_results]
        items = [self.store.item(application, b, i) for b, i in refs]
        splice = self._tamper(items, tamper) if tamper and items else None
        first = self.store.event_id(application, *refs[0]) if refs else ""
        etag_src = f"{qhash.hex()}|{cursor}|{len(items)}|{first}"
        body: dict[str, Any] = {
            "kind": "admin#reports#activities",
            "etag": f'"{hashlib.blake2b(etag_src.encode(), digest_size=15).hexdigest()}"',
        }
        if items:
            body["items"] = items
        if next_token is not None:
            body["nextPageToken"] = next_token
        elif has_more:
            b, i = refs[-1]
            body["nextPageToken"] = self._encode_token(qhash, (b.times[i], b.uqs[i]))
        raw = _json_bytes(body)
        if splice is not None:
            raw = raw.replace(_json_bytes(_SPLICE_MARK), splice, 1)
        return _Reply(200, raw, items=len(items))

    @staticmethod
    def _tamper(items: list[dict[str, Any]], kind: str) -> bytes | None:
        """Damage the middle item for ``kind``. For the splice kinds, one of its strings becomes the
        marker and the raw bytes to put in the marker's place are returned; no_id returns None."""
        item = items[len(items) // 2]
        if kind == "no_id":
            del item["id"]
            return None
        if kind == "surrogate":
            item["events"][0]["name"] = _SPLICE_MARK
            return _SURROGATE_JSON
        email = _json_bytes(item["actor"]["email"])  # quotes included; the cut falls inside them
        cut = len(email) // 2
        item["actor"]["email"] = _SPLICE_MARK
        return email[:cut] + (b"\xff" if kind == "invalid_utf8" else b"\x01") + email[cut:]

    # -- admin endpoints ----------------------------------------------------------------------------

    def _handle_admin(self, method: str, path: str, query: dict[str, str], body: bytes) -> _Reply:
        """The ``/_sim/*`` controls: no auth, no faults, no latency, not logged."""
        try:
            payload: Any = json.loads(body) if body.strip() else {}
        except ValueError:
            return _error(400, "body is not JSON")
        try:
            return self._admin(method, path, query, payload)
        except (SimulatorError, _BadRequest, ValueError, TypeError, KeyError, AttributeError) as e:
            return _error(400, str(e))

    def _admin(self, method: str, path: str, query: dict[str, str], payload: Any) -> _Reply:
        ok = _Reply(200, b'{"ok":true}')
        route = (method, path)
        if route == ("GET", "/_sim/health"):
            return ok
        if route == ("POST", "/_sim/faults"):
            self.set_faults(payload["rules"] if isinstance(payload, dict) else payload)
            return ok
        if route == ("GET", "/_sim/faults"):
            return _Reply(200, _json_bytes({"rules": self.faults()}))
        if route == ("POST", "/_sim/clock"):
            if payload.get("advance") is not None:
                self.advance_clock(float(payload["advance"]))
            else:
                now = payload.get("now")
                offset = payload.get("offset")
                self.set_clock(
                    now=datetime.fromisoformat(now) if now else None,
                    offset=float(offset) if offset is not None else None,
                )
            return _Reply(200, _json_bytes({"now": self.now().isoformat()}))
        if route == ("GET", "/_sim/clock"):
            return _Reply(200, _json_bytes({"now": self.now().isoformat()}))
        if route == ("POST", "/_sim/page_latency"):
            self.set_page_latency(payload["seconds"])
            return ok
        if route == ("GET", "/_sim/requests"):
            return _Reply(200, _json_bytes({"requests": self.requests()}))
        if route == ("DELETE", "/_sim/requests"):
            self.clear_requests()
            return ok
        if route == ("GET", "/_sim/events"):
            app = query["application"]
            start = datetime.fromisoformat(query["startTime"])
            end = datetime.fromisoformat(query["endTime"])
            unpublished = query.get("include_unpublished", "") in ("1", "true", "yes")
            if query.get("ids_only", "") in ("1", "true", "yes"):
                ids = self.ground_truth_ids(app, start, end, include_unpublished=unpublished)
                return _Reply(200, _json_bytes({"ids": ids, "count": len(ids)}))
            items = self.ground_truth(app, start, end, include_unpublished=unpublished)
            return _Reply(200, _json_bytes({"items": items, "count": len(items)}))
        return _error(404, f"Not Found: {method} {path}")
