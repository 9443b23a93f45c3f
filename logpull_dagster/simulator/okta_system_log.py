"""Okta's System Log API (``GET /api/v1/logs``) and its org token endpoint, as one emulated API.

What it reproduces, because a client has to get each of them right (``sources/okta.py`` cites Okta's
documentation for each):

* ``since``/``until`` (ISO 8601), ``limit`` (1..1000, default 100), ``sortOrder`` (ASCENDING, the
  default, or DESCENDING) and ``after``; a bounded request filters by ``published`` with BOTH ends
  inclusive at millisecond resolution (an event stamped on ``until`` comes back), in ``published``
  order; several events may share a millisecond; a late event is invisible until it is published
  (the shared store's late events: a bounded request read too early misses it).
* Pagination only through ``Link`` headers: ``rel="self"`` always, ``rel="next"`` an absolute URL
  (on the request's own Host, or on ``link_base`` when a test sets it) whose ``after`` is opaque
  (MAC'd, bound to its query: another query's, or a forged one, is a 400). A full page always has a
  next link, even when nothing follows (Okta cannot know), so the pass can end on an empty page; an
  empty page links to itself.
* ``X-Rate-Limit-Limit``/``-Remaining``/``-Reset`` on every answer of the logs endpoint (a per-minute
  budget of ``rate_limit`` requests, counted, never enforced: throttling is the fault switch's 429,
  which carries the reset epoch and no Retry-After, as Okta's does, ``E0000047``). The reset epoch is
  on the sim clock, the clock of the ``Date`` header (the shared server's), as a client computes
  reset minus Date.
* Auth: ``SSWS <token>`` (the shared token) or ``Bearer <access token>`` issued by ``POST
  /oauth2/v1/token``: the client-credentials grant with ``private_key_jwt``. The assertion's signature
  is checked against the public key a test registered (``register_client``: RSA for RS256, EC for ES256
  or ES384, by the header's ``alg``; a key of the other type fails as an invalid signature), and ``iss`` = ``sub`` =
  client id, ``aud`` = this endpoint's URL, ``iat``/``exp`` (at most an hour), a ``jti`` never seen
  before and scopes the client was granted.
* Okta's error body (``errorCode``, ``errorSummary``, ``errorLink``, ``errorId``, ``errorCauses``).

The rest (auth order, fault rules, latency, request log, ground truth) is the shared server's.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from itertools import islice
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlencode

from .api import ApiContext, ApiRequest, BadRequest, EmulatedApi, Reply, SignedCursor, json_bytes
from .data import Bucket, EventKind, Key, ceil_div, format_ms, name_table, parse_rfc3339_us
from .faults import DamageTargets, damage_item, splice

STREAM = "system_log"
LOGS_PATH = "/api/v1/logs"
TOKEN_PATH = "/oauth2/v1/token"
_MAX_LIMIT = 1000
_DEFAULT_LIMIT = 100
_DAMAGE = DamageTargets(id_key="uuid", name=("eventType",), text=("actor", "alternateId"))
_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

_ERROR_CODES: Mapping[int, str] = {
    400: "E0000001", 401: "E0000011", 403: "E0000006", 404: "E0000007", 405: "E0000022", 429: "E0000047",
    500: "E0000009", 502: "E0000009", 503: "E0000009", 504: "E0000009",
}

_CATALOG = (
    EventKind("user.session.start", "User login to Okta", 500, lambda uq: "SUCCESS" if uq % 9 else "FAILURE"),
    EventKind("user.session.end", "User logout from Okta", 200, lambda uq: "SUCCESS"),
    EventKind("user.authentication.sso", "User single sign on to app", 200, lambda uq: "SUCCESS"),
    EventKind("user.mfa.factor.activate", "Activate factor for user", 50, lambda uq: "SUCCESS"),
    EventKind("policy.evaluate_sign_on", "Evaluation of sign-on policy", 74, lambda uq: "ALLOW"),
)
_TABLE = name_table(_CATALOG)


class OktaSystemLogApi(EmulatedApi):
    """``/api/v1/logs`` of one org (stream ``system_log``), and ``/oauth2/v1/token``."""

    name: ClassVar[str] = "okta_system_log"
    methods: ClassVar[frozenset[str]] = frozenset({"GET", "POST"})
    auth_scheme: ClassVar[str] = "SSWS"
    auth_message: ClassVar[str] = "Invalid token provided"
    pad_prefix: ClassVar[bytes] = b'{"errorCode":"pad","pad":"'
    fault_messages: ClassVar[Mapping[int, str]] = {
        429: "API call exceeded rate limit due to too many requests.", 500: "Internal Server Error",
        502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
    }

    def __init__(self, ctx: ApiContext) -> None:
        super().__init__(ctx)
        self.scheme: str = ctx.settings.get("scheme", "http")
        self._afters = SignedCursor(f"logpull-simulator-okta-after|{ctx.seed}".encode(), "Invalid parameter: after")
        self._lock = threading.Lock()
        #: ``scheme://host:port`` next links point at instead of the request's own Host (origin tests).
        self.link_base: str | None = None
        self._varied = 0  # answers of the repeat_token_varying fault so far
        #: requests per minute ``X-Rate-Limit-Limit`` announces; ``-Remaining`` counts down from it.
        self.rate_limit = 1200
        self._minute = 0
        self._used = 0
        #: the ``X-Rate-Limit-Reset`` epoch second (sim clock) of the last 429 sent (tests compare waits with it).
        self.last_reset: int | None = None
        #: seconds an access token lives (``expires_in``)
        self.token_lifetime = 3600
        self._clients: dict[str, tuple[str, frozenset[str]]] = {}
        self._tokens: dict[str, float] = {}  # access token -> expiry (time.time)
        self._jtis: set[str] = set()
        self.tokens_issued = 0

    # -- OAuth clients ------------------------------------------------------------------------------

    def register_client(self, client_id: str, public_key_pem: str,
                        scopes: tuple[str, ...] = ("okta.logs.read",)) -> None:
        """An API Services app with ``private_key_jwt``: its public key (PEM) and the scopes granted."""
        with self._lock:
            self._clients[client_id] = (public_key_pem, frozenset(scopes))

    def revoke_tokens(self) -> None:
        """Every access token issued so far stops working (their next request is a 401)."""
        with self._lock:
            self._tokens.clear()

    # -- reading a request --------------------------------------------------------------------------

    def match(self, path: str) -> Mapping[str, str] | None:
        if path == LOGS_PATH:
            return {"endpoint": "logs"}
        if path == TOKEN_PATH:
            return {"endpoint": "token"}
        return None

    def has_cursor(self, request: ApiRequest) -> bool:
        return bool(request.query.get("after"))

    def log_fields(self, request: ApiRequest) -> dict[str, Any]:
        q = request.query
        return {"path": request.path, "since": q.get("since"), "until": q.get("until"),
                "limit": int(q["limit"]) if q.get("limit", "").isdigit() else q.get("limit"),
                "after": q.get("after") or None}

    def check_auth(self, request: ApiRequest) -> Reply | None:
        if request.params.get("endpoint") == "token":
            return None  # the client authenticates with its assertion, checked by the grant
        scheme, _, value = (request.authorization or "").partition(" ")
        if scheme.lower() == "bearer":
            with self._lock:
                expiry = self._tokens.get(value.strip())
            if expiry is not None and time.time() < expiry:
                return None
            return self.error(401, self.auth_message)
        return super().check_auth(request)

    # -- answers ------------------------------------------------------------------------------------

    def error(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
        code = _ERROR_CODES.get(status, f"E{status:07d}")
        body = {"errorCode": code, "errorSummary": message, "errorLink": code,
                "errorId": f"oae{secrets.token_hex(8)}", "errorCauses": []}
        return Reply(status, json_bytes(body), headers or [])

    def rate_limited(self, retry_after: float | None) -> Reply:
        """Okta's 429: no Retry-After; the reset epoch (``retry_after`` seconds from now, or the end of
        the minute when None) and remaining 0."""
        now = time.time()
        until = retry_after if retry_after is not None else (int(now) // 60 + 1) * 60 - now
        reset = self._reset_epoch(until)
        self.last_reset = reset
        headers = [("X-Rate-Limit-Limit", str(self.rate_limit)), ("X-Rate-Limit-Remaining", "0"),
                   ("X-Rate-Limit-Reset", str(reset))]
        return self.error(429, self.fault_messages[429], headers)

    def invalid_cursor(self, request: ApiRequest) -> Reply:
        return self._bad_after()

    def malformed(self, request: ApiRequest) -> Reply:
        return Reply(200, b'{"items":"oops"}', self._rate_headers())

    def stuck_page(self, request: ApiRequest) -> Reply:
        after = request.query.get("after") or self._fresh_after(request)
        return Reply(200, b"[]", [*self._links(request, after), *self._rate_headers()])

    def page(self, request: ApiRequest, *, damage: str | None = None, repeat_cursor: bool | str = False) -> Reply:
        if request.params.get("endpoint") == "token":
            return self._token(request)
        if request.method != "GET":
            return self.error(405, f"Method {request.method} not allowed")
        try:
            return self._page(request, damage, repeat_cursor)
        except BadRequest as e:
            return self.error(400, e.message)

    def _page(self, request: ApiRequest, damage: str | None, repeat_cursor: bool | str) -> Reply:
        q = request.query
        now_us = self.ctx.now_us()
        since_us, until_us = self._time(q, "since", now_us - 7 * 86400 * 10**6), self._time(q, "until", now_us)
        if since_us > until_us:
            raise BadRequest("Invalid parameter: since must be before until")
        limit = _DEFAULT_LIMIT
        if q.get("limit") is not None:
            raw = q["limit"]
            if not raw.isdigit() or not 1 <= int(raw) <= _MAX_LIMIT:
                raise BadRequest(f"Invalid parameter: limit must be between 1 and {_MAX_LIMIT}")
            limit = int(raw)
        order = q.get("sortOrder", "ASCENDING")
        if order not in ("ASCENDING", "DESCENDING"):
            raise BadRequest("Invalid parameter: sortOrder must be ASCENDING or DESCENDING")
        qhash = _query_hash(q.get("since", ""), q.get("until", ""), order)
        after = self._decode_after(q["after"], qhash) if q.get("after") else None
        lo, hi, now_ms = ceil_div(since_us, 1000), min(until_us // 1000, now_us // 1000), now_us // 1000
        store = self.ctx.store
        if order == "ASCENDING":
            scan = store.scan_ascending(STREAM, lo, hi, after=after, visible_at=now_ms)
        else:
            scan = store.scan(STREAM, lo, hi, before=after, visible_at=now_ms)
        refs = list(islice(scan, limit))
        items = [self.item(STREAM, b, i) for b, i in refs]
        spliced = damage_item(items, damage, _DAMAGE) if damage and items else None
        if repeat_cursor:
            nxt: str | None = q.get("after") or self._fresh_after(request)
        elif not refs:
            nxt = q.get("after") or None  # an empty page links to itself (polling's "always a next link")
        elif len(refs) == limit:  # full: there may be more, and Okta links on without looking
            b, i = refs[-1]
            nxt = self._encode_after(qhash, (b.times[i], b.uqs[i]))
        else:
            nxt = None
        raw_body = json_bytes(items)
        body = raw_body if spliced is None else splice(raw_body, spliced)
        vary = None
        if repeat_cursor == "varying":
            with self._lock:
                self._varied += 1
                vary = self._varied
        return Reply(200, body, [*self._links(request, nxt, vary), *self._rate_headers()], items=len(items))

    @staticmethod
    def _time(q: Mapping[str, str], key: str, default: int) -> int:
        if not q.get(key):
            return default
        try:
            return parse_rfc3339_us(q[key])
        except ValueError:
            raise BadRequest(f"Invalid parameter: {key} is not a valid ISO 8601 date-time") from None

    # -- headers ------------------------------------------------------------------------------------

    def _origin(self, request: ApiRequest) -> str:
        return self.link_base or f"{self.scheme}://{request.headers.get('Host', '127.0.0.1')}"

    def _links(self, request: ApiRequest, after: str | None, vary: int | None = None) -> list[tuple[str, str]]:
        base = f"{self._origin(request)}{LOGS_PATH}"
        own = {k: v for k, v in request.query.items()}
        out = [("Link", f'<{base}?{urlencode(own)}>; rel="self"')]
        if after is not None:
            query = {k: v for k, v in own.items() if k not in ("after", "n")}
            extra = {} if vary is None else {"n": str(vary)}  # the repeat_token_varying fault
            out.append(("Link", f'<{base}?{urlencode({**query, "after": after, **extra})}>; rel="next"'))
        return out

    def _rate_headers(self) -> list[tuple[str, str]]:
        now = time.time()
        minute = int(now) // 60
        with self._lock:
            if minute != self._minute:
                self._minute, self._used = minute, 0
            self._used += 1
            remaining = max(0, self.rate_limit - self._used)
        return [("X-Rate-Limit-Limit", str(self.rate_limit)), ("X-Rate-Limit-Remaining", str(remaining)),
                ("X-Rate-Limit-Reset", str(self._reset_epoch((minute + 1) * 60 - now)))]

    def _reset_epoch(self, seconds: float) -> int:
        """The epoch second, on the sim clock, ``seconds`` from now. The minute is counted in real time
        (a frozen sim clock must not freeze the budget), but the reset is stated on the clock the
        ``Date`` header carries, as Okta's are: clients count the wait as reset minus Date."""
        return math.ceil(self.ctx.now_us() / 1_000_000 + seconds)

    # -- after cursors ------------------------------------------------------------------------------

    def _bad_after(self) -> Reply:
        return self.error(400, "Invalid parameter: after")

    def _fresh_after(self, request: ApiRequest) -> str:
        """A valid ``after`` for the query that leads back to its first page."""
        q = request.query
        now_us = self.ctx.now_us()
        try:
            since = self._time(q, "since", now_us - 7 * 86400 * 10**6)
            until = self._time(q, "until", now_us)
        except BadRequest:
            since, until = 0, now_us
        order = q.get("sortOrder", "ASCENDING")
        start: Key = (ceil_div(since, 1000), -(2**63)) if order == "ASCENDING" else (until // 1000 + 1, -(2**63))
        return self._encode_after(_query_hash(q.get("since", ""), q.get("until", ""), order), start)

    def _encode_after(self, qhash: bytes, key: Key) -> str:
        return f"{key[0]}_{self._afters.encode(qhash, key)}"

    def _decode_after(self, after: str, qhash: bytes) -> Key:
        t, uq = self._afters.decode(after.partition("_")[2], qhash)
        if uq == -(2**63):  # a fresh cursor "before the first event": nothing at t is excluded
            return (t, uq - 1)
        return (t, uq)

    # -- the token endpoint -------------------------------------------------------------------------

    def _oauth_error(self, status: int, error: str, description: str) -> Reply:
        return Reply(status, json_bytes({"error": error, "error_description": description}))

    def _token(self, request: ApiRequest) -> Reply:
        from google.auth import jwt  # the verifier Google's libraries use; installed with the project

        if request.method != "POST":
            return self.error(405, f"Method {request.method} not allowed")
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        if form.get("grant_type") != "client_credentials":
            return self._oauth_error(400, "unsupported_grant_type",
                                     "The authorization grant type is not supported by the authorization server.")
        assertion = form.get("client_assertion")
        if form.get("client_assertion_type") != _ASSERTION_TYPE or not assertion:
            return self._oauth_error(401, "invalid_client", "Client authentication failed: this app requires "
                                     "private_key_jwt (client_assertion and client_assertion_type).")
        try:
            claimed = jwt.decode(assertion, verify=False)
        except Exception:
            return self._oauth_error(400, "invalid_client", "The client_assertion token is malformed.")
        client_id = form.get("client_id") or claimed.get("iss")
        with self._lock:
            client = self._clients.get(str(client_id))
        if client is None:
            return self._oauth_error(401, "invalid_client", "The client_id is not found.")
        public_key, granted = client
        audience = f"{self._origin(request)}{TOKEN_PATH}"
        try:
            claims = jwt.decode(assertion, certs=public_key, audience=audience)
        except Exception as e:
            text = str(e)
            reason = "audience" if "audience" in text.lower() else "expired" if "expired" in text.lower() else ""
            described = {"audience": f"The audience claim for client_assertion must be the endpoint invoked "
                                     f"for the request ({audience}).",
                         "expired": "The client_assertion token is expired."}.get(
                reason, "The client_assertion signature is invalid.")
            return self._oauth_error(401, "invalid_client", described)
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            return self._oauth_error(401, "invalid_client",
                                     "The client_assertion token's iss and sub must both be the client_id.")
        if int(claims["exp"]) - int(claims["iat"]) > 3600:
            return self._oauth_error(401, "invalid_client",
                                     "The client_assertion token has an expiration too far in the future.")
        jti = claims.get("jti")
        with self._lock:
            if not jti or jti in self._jtis:
                return self._oauth_error(401, "invalid_client", "The client_assertion token has already been used "
                                         "(jti), or has no jti.")
            self._jtis.add(str(jti))
        scopes = form.get("scope", "").split()
        if not scopes:
            return self._oauth_error(400, "invalid_scope", "The authorization server requires a scope.")
        refused = [s for s in scopes if s not in granted]
        if refused:
            return self._oauth_error(400, "invalid_scope",
                                     f"The following scopes are not allowed: {' '.join(refused)}.")
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.time() + self.token_lifetime
            self.tokens_issued += 1
        return Reply(200, json_bytes({"token_type": "Bearer", "expires_in": self.token_lifetime,
                                      "access_token": token, "scope": " ".join(scopes)}))

    # -- ground truth -------------------------------------------------------------------------------

    def item(self, stream: str, bucket: Bucket, i: int) -> dict[str, Any]:
        """A LogEvent (trimmed to the fields a SIEM keys on)."""
        store = self.ctx.store
        t, uq, attrs = bucket.times[i], bucket.uqs[i], bucket.attrs[i]
        user = store.actor(attrs)
        kind = _TABLE[store.name_roll(attrs)]
        return {
            "uuid": self._uuid(stream, t, uq),
            "published": format_ms(t),
            "eventType": kind.type,
            "version": "0",
            "severity": "INFO",
            "displayMessage": kind.name,
            "actor": {"id": f"00u{user.profile_id[:17]}", "type": "User", "alternateId": user.email,
                      "displayName": user.email.split("@")[0]},
            "client": {"ipAddress": user.ip},
            "outcome": {"result": kind.params(uq), "reason": None},
            "transaction": {"type": "WEB", "id": f"X{uq & 0xFFFFFFFFFFFF:012x}"},
        }

    def _uuid(self, stream: str, t: int, uq: int) -> str:
        digest = hashlib.blake2b(f"{self.ctx.seed}|{stream}|{t}|{uq}".encode(), digest_size=16).digest()
        return str(uuid.UUID(bytes=digest, version=4))

    def event_id(self, stream: str, bucket: Bucket, i: int) -> tuple[str]:
        return (self._uuid(stream, bucket.times[i], bucket.uqs[i]),)


def _query_hash(since: str, until: str, order: str) -> bytes:
    """What an ``after`` is bound to: the query's own text (a next link repeats it unchanged)."""
    return hashlib.blake2b(f"{since}|{until}|{order}".encode(), digest_size=8).digest()
