"""A bundled Splunk HTTP Event Collector: a receiver implementing HEC's documented contract, for ``make demo``
and the tests.

No Splunk can be installed here, so the Splunk HEC sink is tested against this, and ``make demo`` delivers
to it as its network sink: a real HTTP(S) server on a loopback port (threaded, keep-alive), answering as
section 1 of ``../shared/reference/siem-sinks.md`` says Splunk does, with every event it indexed kept so a
test (or the demo's summary) counts them. Standard library only, as the rest of the simulator:

* ``POST <prefix>/services/collector/event`` (also ``/event/1.0`` and the bare ``/collector``):
  ``Authorization: Splunk <token>`` (none: 401 code 2; another scheme: 401 code 3; unknown: 403 code 4;
  disabled: 403 code 1; ``?token=``: 400 code 16); a body of JSON event objects written one after the
  other, ``Content-Encoding: gzip`` or not; each event checked in order (not an object or bad ``time``:
  code 6; ``index`` not allowed: 7; ``event`` missing or null: 12; ``""`` or ``{}``: 13; ``fields``
  not an object: 6, a nested value: 15), the first bad one answering 400 with its zero-based
  ``invalid-event-number``, and then nothing of the request is indexed (Splunk does not document
  whether events before it were; this receiver chooses the reading that makes a sink resend least).
* Indexer acknowledgement, for a token that has it (``ack=True``, the default): every event request
  needs a channel GUID (``X-Splunk-Request-Channel`` or ``?channel=``; none: 400 code 10, not a GUID:
  11); the answer carries ``ackId``, counting from 0 per channel. ``POST .../collector/ack`` with
  ``{"acks":[...]}`` answers ``{"acks":{"<id>":true|false}}``, and an id answered ``true`` is forgotten
  at once, so asking again answers ``false`` (read once, as Splunk does). A token without it accepts a
  channel and answers no ``ackId``; its ``/ack`` answers 400 code 14 "ACK is disabled".
* ``GET .../collector/health``: 200 code 17, no token needed.

Faults a test switches on (attributes, set under ``lock``): ``lose_acks`` (the ids of the next N
requests indexed never turn true: the events are in the index, their ack status is lost), ``ack_delay``
(seconds before an id turns true), ``busy`` (the next N event requests answer 503 code 9 and index
nothing; ``retry_after``: the Retry-After they carry), ``refuse`` (an event whose ``event`` holds these
bytes is refused with 400 code 6 and its number, as Splunk refuses a malformed one), a token's ack
switched off (``add_token(ack=False)``).

Run alone (``python -m logpull_dagster.simulator.hec --token T``) it prints ``LISTENING <url>`` and
serves ``GET /_receiver/count`` (events indexed, event requests answered): the benchmark's receiver runs
in a process of its own so that it does not share the client's interpreter lock.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import ssl
import threading
import time
import uuid
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

MAX_BODY = 256 * 2**20  # decompressed bytes one request may carry here (Splunk's default is 800 MB)
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_WS = " \t\r\n"
_decoder = json.JSONDecoder()

TEXT = {0: "Success", 1: "Token disabled", 2: "Token is required", 3: "Invalid authorization", 4: "Invalid token",
        5: "No data", 6: "Invalid data format", 7: "Incorrect index", 9: "Server is busy",
        10: "Data channel is missing", 11: "Invalid data channel", 12: "Event field is required",
        13: "Event field cannot be blank", 14: "ACK is disabled", 15: "Error in handling indexed fields",
        16: "Query string authorization is not enabled", 17: "HEC is healthy"}


@dataclass(frozen=True)
class Indexed:
    """One event as indexed: its metadata keys, and the ``event`` value byte for byte as sent."""

    token: str
    channel: str | None
    meta: dict[str, Any]  # every key of the event object but ``event`` (time, source, sourcetype, index, ...)
    event: bytes


@dataclass
class _Token:
    ack: bool = True
    disabled: bool = False


@dataclass
class _Channel:
    next_id: int = 0
    ready_at: dict[int, float | None] = field(default_factory=dict)  # ackId -> when it reads true (None: never)


class _Bad(Exception):
    def __init__(self, status: int, code: int, **extra: Any) -> None:
        self.status, self.code, self.extra = status, code, extra


class HecReceiver:
    """The receiver (module docstring). ``prefix``: a path prefix the collector sits under (a proxy's);
    ``indexes``: the indexes tokens may name (None: any); ``tls``: (cert, key) paths to serve HTTPS."""

    def __init__(self, *, prefix: str = "", indexes: list[str] | None = None,
                 tls: tuple[str, str] | None = None, port: int = 0) -> None:
        self.prefix = prefix.rstrip("/")
        self.indexes = None if indexes is None else set(indexes)
        self.lock = threading.Lock()
        self.tokens: dict[str, _Token] = {}
        self.events: list[Indexed] = []
        self.channels: dict[tuple[str, str], _Channel] = {}
        self.lose_acks = 0
        self.ack_delay = 0.0
        self.busy = 0
        self.retry_after: int | None = None
        self.refuse: bytes | None = None
        # Every event request that reached the checks after the token: (monotonic arrival, events in it,
        # body bytes after decompression, Content-Encoding).
        self.requests: list[tuple[float, int, int, str]] = []
        self.event_requests = 0  # event requests answered (any status)
        self.ack_requests = 0
        self.answers: list[tuple[str, int, int]] = []  # (path kind, HTTP status, HEC code) of every answer
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._server.daemon_threads = True
        scheme = "http"
        if tls is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self._server.socket = ctx.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_address[1]}{self.prefix}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="hec-receiver", daemon=True)
        self._thread.start()

    def __enter__(self) -> HecReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def add_token(self, token: str | None = None, *, ack: bool = True) -> str:
        """A token this collector accepts (a new GUID unless given); ``ack``: its indexer acknowledgement."""
        token = token or str(uuid.uuid4())
        with self.lock:
            self.tokens[token] = _Token(ack=ack)
        return token

    def disable_token(self, token: str) -> None:
        with self.lock:
            self.tokens[token].disabled = True

    def indexed(self, token: str | None = None) -> list[Indexed]:
        with self.lock:
            return [e for e in self.events if token is None or e.token == token]

    def records(self, token: str, source: str) -> list[bytes]:
        """The ``event`` of every event indexed under ``token`` whose HEC ``source`` is ``source``."""
        return [e.event for e in self.indexed(token) if e.meta.get("source") == source]

    # ---- the protocol ---------------------------------------------------------------------------------

    def _auth(self, headers: Any, query: dict[str, list[str]]) -> tuple[str, _Token]:
        if "token" in query:
            raise _Bad(400, 16)
        value = headers.get("Authorization")
        if not value:
            raise _Bad(401, 2)
        scheme, _, token = value.partition(" ")
        if scheme != "Splunk" or not token:  # the scheme word is case-sensitive
            raise _Bad(401, 3)
        with self.lock:
            found = self.tokens.get(token.strip())
        if found is None:
            raise _Bad(403, 4)
        if found.disabled:
            raise _Bad(403, 1)
        return token.strip(), found

    @staticmethod
    def _channel(headers: Any, query: dict[str, list[str]], required: bool) -> str | None:
        channel = headers.get("X-Splunk-Request-Channel") or (query.get("channel") or [None])[0]
        if channel is None:
            if required:
                raise _Bad(400, 10)
            return None
        if not _GUID.match(channel):
            raise _Bad(400, 11)
        return channel

    def handle_event(self, headers: Any, query: dict[str, list[str]], body: bytes) -> dict[str, Any]:
        token, tok = self._auth(headers, query)
        channel = self._channel(headers, query, required=tok.ack)
        arrived = time.monotonic()
        with self.lock:
            if self.busy > 0:
                self.busy -= 1
                raise _Bad(503, 9)
        events = self._parse(token, channel, body)
        with self.lock:
            self.requests.append((arrived, len(events), len(body), headers.get("Content-Encoding") or ""))
            if self.refuse is not None:
                for number, e in enumerate(events):
                    if self.refuse in e.event:
                        raise _Bad(400, 6, **{"invalid-event-number": number})
            self.events.extend(events)
            answer: dict[str, Any] = {"text": "Success", "code": 0}
            if tok.ack and channel is not None:
                ch = self.channels.setdefault((token, channel), _Channel())
                ack_id, ch.next_id = ch.next_id, ch.next_id + 1
                lost = self.lose_acks > 0
                self.lose_acks -= lost
                ch.ready_at[ack_id] = None if lost else time.monotonic() + self.ack_delay
                answer["ackId"] = ack_id
        return answer

    def handle_ack(self, headers: Any, query: dict[str, list[str]], body: bytes) -> dict[str, Any]:
        token, tok = self._auth(headers, query)
        if not tok.ack:
            raise _Bad(400, 14)
        channel = self._channel(headers, query, required=True)
        try:
            asked = json.loads(body)["acks"]
            if not isinstance(asked, list) or not all(isinstance(i, int) for i in asked):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise _Bad(400, 6) from None
        now = time.monotonic()
        answer: dict[str, bool] = {}
        with self.lock:
            ch = self.channels.get((token, channel or ""), _Channel())
            for ack_id in asked:
                ready = ch.ready_at.get(ack_id)
                done = ready is not None and ready <= now
                if done:
                    del ch.ready_at[ack_id]  # read once: HEC forgets an id it answered true
                answer[str(ack_id)] = done
        return {"acks": answer}

    def _parse(self, token: str, channel: str | None, body: bytes) -> list[Indexed]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(400, 6) from None
        out: list[Indexed] = []
        pos, n = 0, len(text)
        while True:
            while pos < n and text[pos] in _WS:
                pos += 1
            if pos >= n:
                break
            meta, event, pos = _object(text, pos, len(out))
            _check(meta, event, len(out), self.indexes)
            out.append(Indexed(token, channel, meta, event))
        if not out:
            raise _Bad(400, 5)
        return out


def _object(text: str, pos: int, number: int) -> tuple[dict[str, Any], bytes, int]:
    """One event object at ``pos``: its keys but ``event``, the raw bytes of ``event`` (b"" when absent)
    and the position after it. Each value is parsed once, by the standard library's own scanner."""
    bad = _Bad(400, 6, **{"invalid-event-number": number})
    if text[pos] != "{":
        raise bad
    meta: dict[str, Any] = {}
    event = b""
    pos += 1
    try:
        while True:
            while text[pos] in _WS:
                pos += 1
            if text[pos] == "}" and not meta and not event:
                return meta, event, pos + 1
            if text[pos] != '"':
                raise bad
            key, pos = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
            while text[pos] in _WS:
                pos += 1
            if text[pos] != ":":
                raise bad
            pos += 1
            while text[pos] in _WS:
                pos += 1
            value, end = _decoder.raw_decode(text, pos)
            if key == "event":
                event = text[pos:end].encode("utf-8") if value is not None else b""
                if value is None:
                    meta["event"] = None  # present but null: code 12
            else:
                meta[key] = value
            pos = end
            while text[pos] in _WS:
                pos += 1
            if text[pos] == "}":
                return meta, event, pos + 1
            if text[pos] != ",":
                raise bad
            pos += 1
    except (IndexError, ValueError):
        raise bad from None


def _check(meta: dict[str, Any], event: bytes, number: int, indexes: set[str] | None) -> None:
    where = {"invalid-event-number": number}
    if not event:
        raise _Bad(400, 12, **where)
    if event in (b'""', b"{}"):
        raise _Bad(400, 13, **where)
    t = meta.get("time")
    if t is not None:
        try:
            float(t)
        except (TypeError, ValueError):
            raise _Bad(400, 6, **where) from None
    if "index" in meta and indexes is not None and meta["index"] not in indexes:
        raise _Bad(400, 7, **where)
    if "fields" in meta:
        if not isinstance(meta["fields"], dict):
            raise _Bad(400, 6, **where)
        if any(isinstance(v, dict) for v in meta["fields"].values()):
            raise _Bad(400, 15, **where)
    meta.pop("event", None)


def _handler(receiver: HecReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as Splunk's HEC
        # Headers and body go out in two writes: without TCP_NODELAY the second waits for the client's
        # delayed ACK (40 ms on Linux), a stall of this server, not of HEC, that every request would pay.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests read the answers
            pass

        def _answer(self, status: int, body: dict[str, Any], kind: str) -> None:
            data = json.dumps(body, separators=(",", ":")).encode()
            with receiver.lock:
                receiver.answers.append((kind, status, int(body.get("code", 0))))
                retry_after = receiver.retry_after
            self.send_response(status)
            if status == 503 and retry_after is not None:
                self.send_header("Retry-After", str(retry_after))
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> bytes:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
                d = zlib.decompressobj(31)
                try:
                    out = d.decompress(raw, MAX_BODY)
                except zlib.error:
                    raise _Bad(400, 6) from None
                if d.unconsumed_tail:
                    raise _Bad(400, 6)
                return out
            return raw

        def _route(self) -> tuple[str, dict[str, list[str]]]:
            parts = urlsplit(self.path)
            path = parts.path
            if receiver.prefix and path.startswith(receiver.prefix + "/"):
                path = path[len(receiver.prefix):]
            elif receiver.prefix and not path.startswith("/_receiver"):
                return "", {}
            return path.rstrip("/"), parse_qs(parts.query)

        def do_GET(self) -> None:
            path, _ = self._route()
            if path in ("/services/collector/health", "/services/collector/health/1.0"):
                self._answer(200, {"text": TEXT[17], "code": 17}, "health")
            elif path == "/_receiver/count":
                with receiver.lock:
                    body = {"events": len(receiver.events), "event_requests": receiver.event_requests}
                self._answer(200, body, "control")
            else:
                self._answer(404, {"text": "The requested URL was not found on this server.", "code": 404}, "other")

        def do_POST(self) -> None:
            path, query = self._route()
            try:
                body = self._body()
            except _Bad as e:
                self._answer(e.status, {"text": TEXT[e.code], "code": e.code}, "event")
                return
            if path in ("/services/collector/event", "/services/collector/event/1.0", "/services/collector"):
                kind, handle = "event", receiver.handle_event
            elif path in ("/services/collector/ack", "/services/collector/ack/1.0"):
                kind, handle = "ack", receiver.handle_ack
            else:
                self._answer(404, {"text": "The requested URL was not found on this server.", "code": 404}, "other")
                return
            with receiver.lock:
                if kind == "event":
                    receiver.event_requests += 1
                else:
                    receiver.ack_requests += 1
            try:
                answer = handle(self.headers, query, body)
            except _Bad as e:
                self._answer(e.status, {"text": TEXT[e.code], "code": e.code, **e.extra}, kind)
                return
            self._answer(200, answer, kind)

    return Handler


def gzip_body(events: list[bytes]) -> bytes:
    """Events (each one JSON object) as one gzip request body, concatenated as HEC takes them."""
    return gzip.compress(b"".join(events), compresslevel=1)


def main() -> None:
    parser = argparse.ArgumentParser(description="A HEC receiver implementing the documented contract.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", action="append", default=[], help="a token with indexer acknowledgement")
    parser.add_argument("--ack-delay", type=float, default=0.0)
    args = parser.parse_args()
    receiver = HecReceiver(port=args.port)
    receiver.ack_delay = args.ack_delay
    for token in args.token:
        receiver.add_token(token)
    print(f"LISTENING {receiver.url}", flush=True)
    try:
        receiver._thread.join()
    except KeyboardInterrupt:
        receiver.stop()


if __name__ == "__main__":
    main()


_shared: HecReceiver | None = None
_shared_lock = threading.Lock()


def shared_receiver() -> HecReceiver:
    """One receiver for this process (a daemon thread), for callers with no teardown of their own (the sink
    contract's factories): each caller takes a token of its own (``add_token``), which keeps its events
    apart from every other caller's (``records(token, source)``)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = HecReceiver()
        return _shared
