"""A receiver implementing Elasticsearch's (and OpenSearch's) documented ``_bulk`` contract, because no
Elasticsearch or OpenSearch can be installed here (no package on PyPI or Debian runs one, and nothing can
be downloaded). It is a real HTTP server (threaded, on a free loopback port, plain or TLS) that the sink
talks to over the network, and it keeps every document it indexed, byte for byte, so tests count events.

What it implements (``shared/reference/siem-sinks.md`` section 4 and the Bulk API reference):

* ``GET /``: the cluster info. Elasticsearch mode answers version 8.x with ``X-Elastic-Product:
  Elasticsearch`` on every authenticated answer (as Elasticsearch has since 7.14); OpenSearch mode
  answers ``"distribution": "opensearch"``, version 2.x, and no such header; ``impostor`` mode answers
  like an old or unknown product (a version, no header). ``info_forbidden``: 403, as for an API key
  allowed to write but not to read cluster info.
* ``POST /_bulk`` and ``POST /<index>/_bulk``: newline-delimited JSON, an action line then (for
  ``create``/``index``) a source line; the body must end with a newline (else 400); ``Content-Type``
  ``application/x-ndjson`` or ``application/json`` (else 406); a body over ``max_content_length`` is 413;
  an ``_id`` over 512 bytes fails the whole request (400 ``action_request_validation_exception``, as
  ``BulkRequest.validate`` does). Each item gets its own result, in order, and ``errors: true`` when any
  failed: ``create`` of an ``_id`` that exists is 409 ``version_conflict_engine_exception``; ``index``
  replaces. A data stream (``data_streams``) takes only ``create`` and needs ``@timestamp`` (400
  ``document_parsing_exception`` otherwise, ``mapper_parsing_exception`` in OpenSearch mode).
* Auth: ``Authorization: ApiKey <encoded>`` or ``Basic``; anything else is 401 ``security_exception``.
* Faults to inject: per-item 429 ``es_rejected_execution_exception`` for the next N items
  (``reject_items``); per-item mapping errors for chosen event ids (``refuse_events``); whole-request
  statuses for the next N bulk requests (``fail_requests``, e.g. 503 or 429); answers lost after the
  documents were indexed (``lose_answers``: the connection closes without a response).

Documents are visible at once (as after a refresh): the tests read ``docs``; there is no search API.
"""

from __future__ import annotations

import base64
import itertools
import json
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from logpull_dagster_tests.tls import TlsFiles

Mode = Literal["elasticsearch", "opensearch", "impostor"]
MAX_ID_BYTES = 512
NEWLINE = "The bulk request must be terminated by a newline [\\n]"


@dataclass
class Request:
    """One request the receiver answered (for tests that count or measure them)."""

    method: str
    path: str
    body_bytes: int
    items: int
    status: int


@dataclass
class BulkReceiver:
    """An Elasticsearch (or OpenSearch) ``_bulk`` endpoint on a loopback port; see the module docstring.

    ``api_key``: the encoded key expected after ``ApiKey``; ``basic``: (username, password). One of them,
    or neither to accept any request (the contract suite)."""

    api_key: str | None = None
    basic: tuple[str, str] | None = None
    mode: Mode = "elasticsearch"
    data_streams: frozenset[str] = frozenset()
    tls: TlsFiles | None = None
    max_content_length: int = 100 * 2**20
    info_forbidden: bool = False
    bulk_forbidden: bool = False

    docs: dict[str, dict[str, bytes]] = field(default_factory=dict)  # index -> _id -> source line
    requests: list[Request] = field(default_factory=list)
    _reject_items: int = 0
    _refuse: set[str] = field(default_factory=set)
    _fail: list[int] = field(default_factory=list)
    _lose: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: Iterator[int] = field(default_factory=itertools.count)
    _server: ThreadingHTTPServer | None = None

    # ---- control ---------------------------------------------------------------------------------------

    def start(self) -> BulkReceiver:
        receiver = self

        class Handler(_Handler):
            owner = receiver

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.tls.cert, self.tls.key)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> BulkReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the receiver first"
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def reject_items(self, n: int) -> None:
        """The next ``n`` create/index items are rejected with a per-item 429 (a full write queue)."""
        with self._lock:
            self._reject_items += n

    def refuse_events(self, *event_ids: str) -> None:
        """Documents whose ``event_id`` is one of these fail to map (per-item 400), every time."""
        with self._lock:
            self._refuse.update(event_ids)

    def fail_requests(self, *statuses: int) -> None:
        """The next bulk requests answer these statuses, whole, one each (e.g. 503, 429)."""
        with self._lock:
            self._fail.extend(statuses)

    def lose_answers(self, n: int) -> None:
        """The next ``n`` bulk requests are carried out, and then the connection closes unanswered."""
        with self._lock:
            self._lose += n

    def sources(self, index: str) -> list[bytes]:
        """Every document of ``index``, its source line byte for byte."""
        with self._lock:
            return list(self.docs.get(index, {}).values())

    # ---- the contract ----------------------------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        if self.api_key is None and self.basic is None:
            return True
        if header is None:
            return False
        scheme, _, value = header.partition(" ")
        if self.api_key is not None and scheme == "ApiKey":
            return value == self.api_key
        if self.basic is not None and scheme == "Basic":
            try:
                return base64.b64decode(value, validate=True).decode() == f"{self.basic[0]}:{self.basic[1]}"
            except ValueError:
                return False
        return False

    def info(self) -> dict[str, Any]:
        if self.mode == "opensearch":
            return {"name": "receiver", "cluster_name": "receiver", "cluster_uuid": "r",
                    "version": {"distribution": "opensearch", "number": "2.17.1", "build_type": "tar",
                                "lucene_version": "9.11.1", "minimum_wire_compatibility_version": "7.10.0",
                                "minimum_index_compatibility_version": "7.0.0"},
                    "tagline": "The OpenSearch Project: https://opensearch.org/"}
        number = "8.15.3" if self.mode == "elasticsearch" else "6.8.23"
        return {"name": "receiver", "cluster_name": "receiver", "cluster_uuid": "r",
                "version": {"number": number, "build_flavor": "default", "build_type": "docker",
                            "lucene_version": "9.11.1", "minimum_wire_compatibility_version": "7.17.0",
                            "minimum_index_compatibility_version": "7.0.0"},
                "tagline": "You Know, for Search"}

    def bulk(self, path_index: str | None, body: bytes) -> tuple[int, dict[str, Any] | None]:
        """Carry out one bulk body: (status, answer); answer None means "close without answering"."""
        with self._lock:
            if self._fail:
                status = self._fail.pop(0)
                kind = "es_rejected_execution_exception" if status == 429 else "unavailable_shards_exception"
                return status, _error(status, kind, f"injected {status}")
        if not body.endswith(b"\n"):
            return 400, _error(400, "illegal_argument_exception", NEWLINE)
        lines = body.split(b"\n")[:-1]
        ops: list[tuple[str, str, str | None, bytes | None]] = []
        k = 0
        while k < len(lines):
            if not lines[k].strip():
                k += 1
                continue
            try:
                action = json.loads(lines[k])
                ((op, meta),) = action.items()
            except (ValueError, AttributeError):
                return 400, _error(400, "illegal_argument_exception", f"Malformed action/metadata line [{k + 1}]")
            if op not in ("create", "index"):
                return 400, _error(400, "illegal_argument_exception", f"this receiver does not implement [{op}]")
            index = meta.get("_index", path_index)
            if index is None:
                return 400, _error(400, "action_request_validation_exception",
                                   "Validation Failed: 1: index is missing;")
            doc_id = meta.get("_id")
            if doc_id is not None and len(doc_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
                size = len(doc_id.encode("utf-8", "surrogatepass"))
                return 400, _error(400, "action_request_validation_exception",
                                   f"Validation Failed: 1: id [{doc_id}] is too long, must be no longer than 512 "
                                   f"bytes but was: {size};")
            if k + 1 >= len(lines):
                return 400, _error(400, "illegal_argument_exception", NEWLINE)
            ops.append((op, index, doc_id, lines[k + 1]))
            k += 2
        items = [self._item(*op) for op in ops]
        with self._lock:
            lose = self._lose > 0
            self._lose -= lose
        if lose:
            return 200, None
        errors = any(next(iter(i.values()))["status"] >= 300 for i in items)
        return 200, {"took": 1, "errors": errors, "items": items}

    def _item(self, op: str, index: str, doc_id: str | None, source: bytes | None) -> dict[str, Any]:
        parse = "mapper_parsing_exception" if self.mode == "opensearch" else "document_parsing_exception"

        def failed(status: int, kind: str, reason: str) -> dict[str, Any]:
            return {op: {"_index": index, "_id": doc_id, "status": status, "error": {"type": kind, "reason": reason}}}

        try:
            doc = json.loads(source or b"")
        except ValueError:
            return failed(400, parse, "[1:1] failed to parse: not a JSON object")
        if not isinstance(doc, dict):
            return failed(400, parse, "[1:1] failed to parse: not a JSON object")
        with self._lock:
            if self._reject_items > 0:
                self._reject_items -= 1
                return failed(429, "es_rejected_execution_exception",
                              "rejected execution of primary operation [coordinating_and_primary_bytes=0, "
                              "max_coordinating_and_primary_bytes=0] (injected)")
            if index in self.data_streams:
                if op != "create":
                    return failed(400, "illegal_argument_exception",
                                  "only write ops with an op_type of create are allowed in data streams")
                if "@timestamp" not in doc:
                    return failed(400, parse,
                                  "[1:2] failed to parse: data stream timestamp field [@timestamp] is missing")
            if doc.get("event_id") in self._refuse:
                return failed(400, parse, f"[1:200] failed to parse field [event.size] of type [long] in document "
                                          f"with id '{doc_id}'. Preview of field's value: 'big'")
            docs = self.docs.setdefault(index, {})
            doc_id = doc_id if doc_id is not None else f"auto-{next(self._seq)}"
            if op == "create" and doc_id in docs:
                return failed(409, "version_conflict_engine_exception",
                              f"[{doc_id}]: version conflict, document already exists (current version [1])")
            result = "updated" if doc_id in docs else "created"
            docs[doc_id] = source or b""
            seq = next(self._seq)
        return {op: {"_index": index, "_id": doc_id, "_version": 1, "result": result,
                     "_shards": {"total": 2, "successful": 1, "failed": 0}, "_seq_no": seq, "_primary_term": 1,
                     "status": 201 if result == "created" else 200}}


def _error(status: int, kind: str, reason: str) -> dict[str, Any]:
    return {"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
            "status": status}


class _Handler(BaseHTTPRequestHandler):
    owner: BulkReceiver
    protocol_version = "HTTP/1.1"  # keep-alive, as a cluster; every answer has a Content-Length

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: dict[str, Any] | None, method: str, size: int = 0, items: int = 0) -> None:
        rx = self.owner
        with rx._lock:
            rx.requests.append(Request(method, self.path, size, items, status))
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if rx.mode == "elasticsearch" and status != 401:
            self.send_header("X-Elastic-Product", "Elasticsearch")
        if status == 401:
            self.send_header("WWW-Authenticate", 'ApiKey, Basic realm="security", charset="UTF-8"')
        if status in (429, 503):
            self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        rx = self.owner
        self._body()
        if not rx.authorized(self.headers.get("Authorization")):
            self._answer(401, _error(401, "security_exception", "unable to authenticate with provided credentials"),
                         "GET")
        elif self.path != "/":
            self._answer(404, _error(404, "resource_not_found_exception", f"no handler for [{self.path}]"), "GET")
        elif rx.info_forbidden:
            self._answer(403, _error(403, "security_exception", "action [cluster:monitor/main] is unauthorized for "
                                                                "API key id [r] of user [logpull]"), "GET")
        else:
            self._answer(200, rx.info(), "GET")

    def do_POST(self) -> None:
        rx = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        if length > rx.max_content_length:
            self.close_connection = True
            self._answer(413, None, "POST", length)
            return
        body = self._body()
        path = self.path.split("?", 1)[0]
        if not rx.authorized(self.headers.get("Authorization")):
            self._answer(401, _error(401, "security_exception", "unable to authenticate with provided credentials"),
                         "POST", len(body))
            return
        if path == "/_bulk":
            index = None
        elif path.endswith("/_bulk") and path.count("/") == 2:
            index = urllib.parse.unquote(path[1:-len("/_bulk")])
        else:
            self._answer(404, _error(404, "resource_not_found_exception", f"no handler for [{path}]"), "POST",
                         len(body))
            return
        kind = (self.headers.get("Content-Type") or "").split(";", 1)[0].strip()
        if kind not in ("application/x-ndjson", "application/json"):
            self._answer(406, _error(406, "media_type_header_exception", f"Content-Type header [{kind}] is not "
                                                                         f"supported"), "POST", len(body))
            return
        if rx.bulk_forbidden:
            self._answer(403, _error(403, "security_exception", f"action [indices:data/write/bulk[s]] is unauthorized "
                                                                f"for API key id [r] on indices [{index}]"),
                         "POST", len(body))
            return
        status, answer = rx.bulk(index, body)
        if answer is None:  # the documents were indexed; the answer is lost on the way back
            with rx._lock:
                rx.requests.append(Request("POST", self.path, len(body), body.count(b"\n") // 2, 0))
            self.close_connection = True
            return
        self._answer(status, answer, "POST", len(body), len(answer.get("items", [])))
