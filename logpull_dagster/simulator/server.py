"""The simulator's shared HTTP server: one real server in front of every emulated API.

Why a real server rather than a mocked transport: the client under test must be exercised through its
actual HTTP stack (connection pool, keep-alive, timeouts, dropped connections, Retry-After), and tests
that SIGKILL workers need the API to live in another process. Every behaviour a client has to survive
is reproducible from a seed and switchable at runtime, in-process or over the ``/_sim/*`` control
endpoints.

What lives here is what every API shares: the threaded HTTP/1.1 server (optionally TLS), routing a
request to the first registered API whose ``match`` takes its path (``registry.EMULATED_APIS``), the
order of a request (latency, echo_auth, auth check, other fault rules, the page), the request log, the
sim clock and the control endpoints. What an API's requests and answers look like is in its own module
(``google_reports.py``); the fault rules and faulty bodies are in ``faults.py``; the events in
``data.py``. With ``tls_cert``/``tls_key`` the same APIs are served over HTTPS.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import socket
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from os import PathLike
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from .api import DROP, ApiContext, ApiFactory, ApiRequest, BadRequest, EmulatedApi, Reply, SimulatorError
from .api import json_bytes as _json_bytes
from .api import json_error as _error
from .data import EPOCH, Bucket, EventStore, parse_rfc3339_us, us_from_datetime
from .faults import FAULT_DOCS, FAULT_KINDS, RULE_KEYS_DOC, FaultSwitch, TrickleWriter, is_number
from .faults import padded_size_floor as _padded_size_floor
from .registry import EMULATED_APIS

# Re-exported: these were defined here before the simulator was split into one module per concern.
__all__ = [
    "FAULT_DOCS", "FAULT_KINDS", "RULE_KEYS_DOC", "Simulator", "SimulatorError", "parse_rfc3339_us",
    "us_from_datetime",
]

_TLS_HANDSHAKE_TIMEOUT = 10.0


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

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that died mid-request (the kill tests SIGKILL workers) is not the simulator's error.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

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
    # What Google's front end calls itself, for every API alike: no client reads it, and one value keeps
    # the control endpoints' replies identical whichever APIs are registered.
    server_version = "ESF"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` of every answer, on the sim clock: a real API's ``Date`` and the clock it publishes
        events by are one clock, and clients compare the two (a window is due only once the API's clock
        has passed its end)."""
        if timestamp is None:
            timestamp = self.server.sim.now().timestamp()
        return email.utils.formatdate(timestamp, usegmt=True)

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
            routed = sim._route(url.path)
            if routed is not None:
                api, params = routed
                if method not in api.methods:
                    reply: Reply | object = api.error(405, f"Method {method} not allowed")
                else:
                    reply = sim._serve(api, ApiRequest(method, url.path, params, query, self.headers, body))
            elif url.path.startswith("/_sim/"):
                reply = sim._handle_admin(method, url.path, query, body)
            else:
                reply = _error(404, f"Not Found: {url.path}")
        except Exception:  # a simulator bug must answer 500, not hang the client
            traceback.print_exc(file=sys.stderr)
            reply = _error(500, "Internal simulator error")
        if reply is DROP:
            self.close_connection = True
            return
        assert isinstance(reply, Reply)
        wfile = self.wfile
        if reply.trickle is not None:
            self.wfile = TrickleWriter(wfile, *reply.trickle)  # type: ignore[assignment]
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
    """The registered emulated APIs (today the Reports API) on one server, with a sim clock, fault rules
    and a request log shared by all of them.

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
        apis: Sequence[ApiFactory] | None = None,
    ) -> None:
        """``tls_cert`` (PEM, the chain) and ``tls_key`` (PEM) together serve HTTPS instead of HTTP;
        they are loaded here, so a bad file fails the constructor rather than the first request.
        ``apis`` replaces ``registry.EMULATED_APIS`` (tests that host an extra API); ``customer_id``
        is handed to the APIs that know the setting (Google's)."""
        self._tls = _tls_context(tls_cert, tls_key)
        self.seed = seed
        self.verbose = verbose
        self.store = EventStore(
            seed=seed,
            events_per_hour=events_per_hour,
            boundary_events=boundary_events,
            shared_ms_events=shared_ms_events,
            publish_delay=publish_delay,
            late_fraction=late_fraction,
            late_delay=late_delay,
        )
        self._lock = threading.Lock()
        self._fixed_now_us: int | None = None
        self._offset_us = 0
        self._page_latency = 0.0
        self._log: list[dict[str, Any]] = []
        self._seq = 0
        self._in_flight = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        # ``scheme``: for APIs whose next links are absolute URLs (Okta's), built from the request's Host.
        self._ctx = ApiContext(seed, token, self.store, self._now_us,
                               {"customer_id": customer_id, "scheme": "https" if self._tls is not None else "http"})
        self._apis: tuple[EmulatedApi, ...] = tuple(
            factory(self._ctx) for factory in (EMULATED_APIS if apis is None else apis)
        )
        names = [api.name for api in self._apis]
        if len(set(names)) != len(names):
            raise SimulatorError(f"emulated API names must be unique, got {names}")
        # Rules are parsed before it is known which API they will fire on: a padded body must fit them all.
        floor = max((_padded_size_floor(api.pad_prefix) for api in self._apis),
                    default=_padded_size_floor(EmulatedApi.pad_prefix))
        self._faults = FaultSwitch(seed, min_padded_size=floor)
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

    @property
    def token(self) -> str | None:
        """The bearer token every API requires (None: no auth)."""
        return self._ctx.token

    @property
    def apis(self) -> tuple[EmulatedApi, ...]:
        """The hosted APIs, in routing order."""
        return self._apis

    def set_faults(self, rules: list[dict[str, Any]]) -> None:
        """Replace the fault rules, shared by every API; counters and the probability RNG restart, so runs
        are repeatable."""
        self._faults.set(rules)

    def faults(self) -> list[dict[str, Any]]:
        """The current rules with their ``seen``/``fired`` counters."""
        return self._faults.specs()

    def set_clock(self, now: datetime | None = None, offset: float | None = None) -> None:
        """Sim-now = (``now`` frozen, or the real UTC clock when None) + ``offset`` seconds.
        ``set_clock()`` returns to real time. Sim-now is the API's clock: what it has published, and
        the ``Date`` header of every answer."""
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
        return EPOCH + timedelta(microseconds=self._now_us())

    def _now_us(self) -> int:
        with self._lock:
            fixed, offset = self._fixed_now_us, self._offset_us
        base = fixed if fixed is not None else time.time_ns() // 1000
        return base + offset

    def set_page_latency(self, seconds: float) -> None:
        """Sleep added to every API request, for a realistically slow API."""
        if not is_number(seconds) or seconds < 0:
            raise SimulatorError("page latency must be a non-negative number")
        with self._lock:
            self._page_latency = float(seconds)

    def requests(self) -> list[dict[str, Any]]:
        """Copy of the request log, oldest first: one entry per API request (admin calls excluded)
        with n, t (unix time), in_flight (API requests being served as this one arrived, itself
        included: the client's concurrency as the API sees it), the API's own columns (Google's:
        application, startTime, endTime, maxResults (int when numeric), pageToken (None when absent)),
        status (None for a dropped connection or a reply still pending), fault (kind or None) and items
        (number returned). Tests use it to count pages read twice."""
        with self._lock:
            return [dict(e) for e in self._log]

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    # -- ground truth -------------------------------------------------------------------------------

    def _api_named(self, name: str | None) -> EmulatedApi:
        if name is None and self._apis:
            return self._apis[0]
        for api in self._apis:
            if api.name == name:
                return api
        raise SimulatorError(f"no emulated API named {name!r}; hosted: {[a.name for a in self._apis]}")

    def _truth_refs(
        self, application: str, start: datetime, end: datetime, include_unpublished: bool
    ) -> list[tuple[Bucket, int]]:
        return self.store.window(application, us_from_datetime(start), us_from_datetime(end),
                                 now_us=self._now_us(), include_unpublished=include_unpublished)

    def ground_truth(
        self, application: str, start: datetime, end: datetime, *, include_unpublished: bool = False,
        api: str | None = None,
    ) -> list[dict[str, Any]]:
        """What a correct client must deliver for the HALF-OPEN window [start, end): the API items
        visible at sim-now, newest first. ``include_unpublished`` adds events that already happened
        (time <= sim-now) but whose late publication is still pending. ``api`` names the emulated API
        whose item shape to use (default: the first registered, Google's, where ``application`` is the
        Reports application name)."""
        emulated = self._api_named(api)
        refs = self._truth_refs(application, start, end, include_unpublished)
        return [emulated.item(application, b, i) for b, i in refs]

    def ground_truth_ids(
        self, application: str, start: datetime, end: datetime, *, include_unpublished: bool = False,
        api: str | None = None,
    ) -> list[tuple[str, ...]]:
        """Like ``ground_truth`` but only the ids (Google's: applicationName, customerId, time,
        uniqueQualifier): cheap enough to check a million-event benchmark window."""
        emulated = self._api_named(api)
        refs = self._truth_refs(application, start, end, include_unpublished)
        return [emulated.event_id(application, b, i) for b, i in refs]

    # -- serving an API request ---------------------------------------------------------------------

    def _route(self, path: str) -> tuple[EmulatedApi, Mapping[str, str]] | None:
        """The first API that takes ``path``, with the parameters it captured."""
        for api in self._apis:
            params = api.match(path)
            if params is not None:
                return api, params
        return None

    def _log_open(self, api: EmulatedApi, request: ApiRequest) -> dict[str, Any]:
        fields = api.log_fields(request)
        with self._lock:
            self._seq += 1
            self._in_flight += 1
            entry = {
                "n": self._seq,
                "t": time.time(),
                "in_flight": self._in_flight,
                **fields,
                "status": None,
                "fault": None,
                "items": 0,
            }
            self._log.append(entry)
        return entry

    def _serve(self, api: EmulatedApi, request: ApiRequest) -> Reply | object:
        """One API request: latency, auth, faults, then the real page. The log entry is completed before
        the reply is written, so a client that has its answer sees it logged."""
        entry = self._log_open(api, request)
        try:
            with self._lock:
                latency = self._page_latency
            if latency:
                time.sleep(latency)
            reply = self._answer(api, request, entry)
            with self._lock:
                if isinstance(reply, Reply):
                    entry["status"] = reply.status
                    entry["items"] = reply.items
            return reply
        finally:
            with self._lock:
                self._in_flight -= 1

    def _answer(self, api: EmulatedApi, request: ApiRequest, entry: dict[str, Any]) -> Reply | object:
        has_cursor = api.has_cursor(request)
        # echo_auth must be reachable with a wrong token (that is when an API is most likely to quote the
        # credential back), so its rules are asked before the token check; all other rules after it.
        rule = self._faults.pick(has_cursor, pre_auth=True)
        if rule is None:
            denied = api.check_auth(request)
            if denied is not None:
                return denied
            rule = self._faults.pick(has_cursor)
            if rule is None:
                return api.page(request)
        with self._lock:
            entry["fault"] = rule.kind  # logged now, so a request still sleeping in "slow" already shows it
        return self._faults.reply(rule, api, request)

    # -- admin endpoints ----------------------------------------------------------------------------

    def _handle_admin(self, method: str, path: str, query: dict[str, str], body: bytes) -> Reply:
        """The ``/_sim/*`` controls: no auth, no faults, no latency, not logged."""
        try:
            payload: Any = json.loads(body) if body.strip() else {}
        except ValueError:
            return _error(400, "body is not JSON")
        try:
            return self._admin(method, path, query, payload)
        except (SimulatorError, BadRequest, ValueError, TypeError, KeyError, AttributeError) as e:
            return _error(400, str(e))

    def _admin(self, method: str, path: str, query: dict[str, str], payload: Any) -> Reply:
        ok = Reply(200, b'{"ok":true}')
        route = (method, path)
        if route == ("GET", "/_sim/health"):
            return ok
        if route == ("POST", "/_sim/faults"):
            self.set_faults(payload["rules"] if isinstance(payload, dict) else payload)
            return ok
        if route == ("GET", "/_sim/faults"):
            return Reply(200, _json_bytes({"rules": self.faults()}))
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
            return Reply(200, _json_bytes({"now": self.now().isoformat()}))
        if route == ("GET", "/_sim/clock"):
            return Reply(200, _json_bytes({"now": self.now().isoformat()}))
        if route == ("POST", "/_sim/page_latency"):
            self.set_page_latency(payload["seconds"])
            return ok
        if route == ("POST", "/_sim/okta/clients"):  # an Okta API Services app (private_key_jwt), for a test
            okta = self._api_named("okta_system_log")
            okta.register_client(payload["client_id"], payload["public_key"])  # type: ignore[attr-defined]
            if payload.get("token_lifetime") is not None:
                okta.token_lifetime = int(payload["token_lifetime"])  # type: ignore[attr-defined]
            return ok
        if route == ("POST", "/_sim/msgraph/clients"):  # a Graph app registration (secret or certificate), a test's
            self._api_named("msgraph").admin(payload)  # type: ignore[attr-defined]
            return ok
        if route == ("GET", "/_sim/requests"):
            return Reply(200, _json_bytes({"requests": self.requests()}))
        if route == ("DELETE", "/_sim/requests"):
            self.clear_requests()
            return ok
        if route == ("GET", "/_sim/events"):
            app = query["application"]
            start = datetime.fromisoformat(query["startTime"])
            end = datetime.fromisoformat(query["endTime"])
            unpublished = query.get("include_unpublished", "") in ("1", "true", "yes")
            api = query.get("api") or None
            if query.get("ids_only", "") in ("1", "true", "yes"):
                ids = self.ground_truth_ids(app, start, end, include_unpublished=unpublished, api=api)
                return Reply(200, _json_bytes({"ids": ids, "count": len(ids)}))
            items = self.ground_truth(app, start, end, include_unpublished=unpublished, api=api)
            return Reply(200, _json_bytes({"items": items, "count": len(items)}))
        return _error(404, f"Not Found: {method} {path}")
