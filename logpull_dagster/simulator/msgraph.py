"""Microsoft Graph audit logs (``/v1.0/auditLogs/{directoryAudits,signIns,provisioning}``) and the
Microsoft identity platform token endpoint (``/{tenant}/oauth2/v2.0/token``), as one emulated API.

What it reproduces, because a client has to get each of them right (``sources/msgraph.py`` cites the
documentation for each; ``../shared/reference/apis-and-emulators.md`` A5):

* Streams ``directory_audits`` (time ``activityDateTime``), ``sign_ins`` (``createdDateTime``) and
  ``provisioning`` (``activityDateTime``), newest first, ``$top`` 1..1000 (default 1000).
* ``$filter``: clauses ``<time field> <op> <literal>`` joined by ``and``, ``op`` one of ``eq ge gt le lt``,
  the literal an *unquoted* DateTimeOffset with up to 7 fractional digits; a quoted literal (an
  ``Edm.String``), another field or anything else is a 400. Comparisons are exact to the 100 ns tick.
* Times with 7 fractional digits (``2026-11-26T10:00:02.6570123Z``); the digits below the millisecond are
  a function of the millisecond, so events sharing a millisecond share their whole timestamp; an event
  exactly on the hour has none (``2026-11-26T11:00:00Z``), so ``lt B`` leaves it to the next window.
* ``@odata.context`` and ``@odata.nextLink``: an absolute URL (on the request's Host, or ``link_base``)
  whose path is lower-cased (``/v1.0/auditLogs/directoryaudits``, as in Graph's own doc example) and whose
  ``$skiptoken`` is opaque, MAC'd and bound to its query: a forged one, or another query's, is a 400
  "Invalid Skip Token". Pages **shorter than ``$top`` arrive mid-stream** (a few items fewer, as Graph
  does): only a missing nextLink ends the listing.
* Throttling (the fault switch's 429) as Graph's ``TooManyRequests`` with ``Retry-After`` as given,
  fractional included (``2.128``).
* Auth: ``Bearer <access token>`` issued by the token endpoint (client credentials: the shared token as
  any client's ``client_secret``, or a client registered with ``register_client``: its own secret or
  certificate, checked from the ``client_assertion``'s signature and ``x5t``/``x5t#S256`` header, with
  ``aud`` = the token URL, ``iss`` = ``sub`` = client id, ``nbf``/``exp``, a fresh ``jti``); scope must end
  in ``/.default``. Tokens live ``token_lifetime`` seconds (real time); an expired one is Graph's 401
  ``InvalidAuthenticationToken`` "Lifetime validation failed, the token is expired." with its
  ``WWW-Authenticate`` header. Tokens are signed, not stored: any simulator instance accepts any other's
  (``login_url`` may point at another one, as login.microsoftonline.com is another host than Graph).
  Token errors carry ``AADSTSnnnn`` codes (7000215, 700016, 90002, 1002012, 700027).

The rest (auth order, fault rules, latency, request log, ground truth) is the shared server's.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import json
import re
import secrets
import ssl
import threading
import time
import uuid
from collections.abc import Mapping
from itertools import islice
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote

from .api import ApiContext, ApiRequest, BadRequest, EmulatedApi, Reply, SignedCursor, json_bytes
from .data import HOUR_MS, Bucket
from .faults import DamageTargets, damage_item, splice

#: stream -> (path segment as the docs spell it, time field)
STREAMS: Mapping[str, tuple[str, str]] = {
    "directory_audits": ("directoryAudits", "activityDateTime"),
    "sign_ins": ("signIns", "createdDateTime"),
    "provisioning": ("provisioning", "activityDateTime"),
}
_BY_SEGMENT = {seg.lower(): stream for stream, (seg, _) in STREAMS.items()}
_LIST = re.compile(r"^/v1\.0/auditlogs/([a-z]+)$", re.IGNORECASE)
_TOKEN = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
_MAX_TOP = 1000
_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# One signing key for every instance: a token from one simulator (a login host) is good on another.
_TOKEN_KEY = b"logpull-simulator-msgraph-access-token"
_TICKS = 10_000  # 100 ns ticks per millisecond
_WWW_AUTH = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
             'client_id="00000003-0000-0000-c000-000000000000"')
_CODES: Mapping[int, str] = {
    400: "BadRequest", 401: "InvalidAuthenticationToken", 403: "Authorization_RequestDenied", 404: "ResourceNotFound",
    405: "MethodNotAllowed", 429: "TooManyRequests", 500: "InternalServerError", 502: "BadGateway",
    503: "ServiceUnavailable", 504: "GatewayTimeout",
}
_DAMAGE: Mapping[str, DamageTargets] = {
    "directory_audits": DamageTargets("id", ("activityDisplayName",), ("initiatedBy", "user", "userPrincipalName")),
    "sign_ins": DamageTargets("id", ("appDisplayName",), ("userPrincipalName",)),
    "provisioning": DamageTargets("id", ("provisioningAction",), ("initiatedBy", "displayName")),
}
_LITERAL = re.compile(r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)(?::(\d\d)(?:\.(\d{1,7}))?)?(Z|[+-]\d\d:\d\d)$")
_CLAUSE = re.compile(r"^\s*(\w+)\s+(eq|ge|gt|le|lt)\s+(\S+)\s*$", re.IGNORECASE)
_AUDIT_ACTIVITIES = ("Add user", "Update user", "Add member to group", "Reset password (self-service)",
                     "Consent to application", "Add service principal", "Delete user", "Update policy")
_APPS = ("Microsoft Teams", "Office 365 Exchange Online", "Azure Portal", "Microsoft Graph PowerShell")
_ACTIONS = ("create", "update", "delete", "disable", "other")


def sub_ms(t_ms: int) -> int:
    """The ticks below the millisecond of every event at ``t_ms``: none exactly on the hour (so an event on
    a window's edge is at the edge), else a function of the millisecond (events sharing it share them)."""
    if t_ms % HOUR_MS == 0:
        return 0
    return int.from_bytes(hashlib.blake2b(t_ms.to_bytes(8, "big", signed=True), digest_size=4).digest()) % _TICKS


def format_ticks(ticks: int) -> str:
    """``2026-11-26T10:00:02.6570123Z``; whole seconds without a fraction, as Graph writes them."""
    secs, frac = divmod(ticks, 10_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{text}.{frac:07d}Z" if frac else f"{text}Z"


def parse_literal(text: str) -> int:
    """Epoch ticks (100 ns) of an unquoted OData DateTimeOffset literal; BadRequest otherwise."""
    if text[:1] in ("'", '"'):
        raise BadRequest("Invalid filter clause: The types 'Edm.DateTimeOffset' and 'Edm.String' are not "
                         "compatible.")
    m = _LITERAL.match(text)
    if m is None:
        raise BadRequest(f"Invalid filter clause: '{text}' is not a valid DateTimeOffset literal.")
    y, mo, d, hh, mi, ss, frac, zone = m.groups()
    secs = calendar.timegm((int(y), int(mo), int(d), int(hh), int(mi), int(ss or 0), 0, 0, 0))
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        secs -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return secs * 10_000_000 + int((frac or "").ljust(7, "0"))


def parse_filter(text: str, field: str) -> tuple[int, int]:
    """The inclusive tick range ``[lo, hi]`` a ``$filter`` of ``field`` comparisons selects."""
    lo, hi = -(2**62), 2**62
    if not text.strip():
        raise BadRequest("Invalid filter clause: empty.")
    for clause in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        m = _CLAUSE.match(clause)
        if m is None:
            raise BadRequest(f"Invalid filter clause: '{clause}'.")
        name, op, value = m.group(1), m.group(2).lower(), m.group(3)
        if name != field:
            raise BadRequest(f"Invalid filter clause: property '{name}' does not support filtering here; "
                             f"filter on '{field}'.")
        t = parse_literal(value)
        if op in ("ge", "eq"):
            lo = max(lo, t)
        if op == "gt":
            lo = max(lo, t + 1)
        if op in ("le", "eq"):
            hi = min(hi, t)
        if op == "lt":
            hi = min(hi, t - 1)
    return lo, hi


class MsGraphApi(EmulatedApi):
    """Graph's ``auditLogs`` listings of one tenant, and the identity platform's token endpoint."""

    name: ClassVar[str] = "msgraph"
    methods: ClassVar[frozenset[str]] = frozenset({"GET", "POST"})
    auth_message: ClassVar[str] = "Access token validation failure. Invalid audience."
    pad_prefix: ClassVar[bytes] = b'{"value":[],"pad":"'
    fault_messages: ClassVar[Mapping[int, str]] = {
        429: "Too many requests.", 500: "Internal server error.", 502: "Bad gateway.",
        503: "The service is temporarily unavailable.", 504: "Gateway timeout.",
    }

    def __init__(self, ctx: ApiContext) -> None:
        super().__init__(ctx)
        self.scheme: str = ctx.settings.get("scheme", "http")
        self._skiptokens = SignedCursor(f"logpull-simulator-msgraph-skiptoken|{ctx.seed}".encode(),
                                        "Invalid Skip Token")
        self._lock = threading.Lock()
        #: ``scheme://host:port`` nextLinks point at instead of the request's own Host (origin tests).
        self.link_base: str | None = None
        #: seconds an access token lives (``expires_in``); Graph's is 3599
        self.token_lifetime = 3599
        #: serve pages a few items short of ``$top`` mid-stream, as Graph does
        self.short_pages = True
        self._clients: dict[tuple[str, str], tuple[str | None, str | None]] = {}
        self._unknown_tenants: set[str] = set()
        self._revoked_before = 0.0
        self._jtis: set[str] = set()
        self.tokens_issued = 0

    # -- controls -----------------------------------------------------------------------------------

    def register_client(self, tenant_id: str, client_id: str, *, secret: str | None = None,
                        certificate: str | None = None) -> None:
        """An app registration of ``tenant_id``: its own secret, or a certificate (PEM) it signs assertions
        with. Unregistered clients authenticate with the shared token as their secret."""
        with self._lock:
            self._clients[(tenant_id.lower(), client_id.lower())] = (secret, certificate)

    def forget_tenant(self, tenant_id: str) -> None:
        """The tenant no longer exists: its token requests get AADSTS90002."""
        with self._lock:
            self._unknown_tenants.add(tenant_id.lower())

    def revoke_tokens(self) -> None:
        """Every access token issued so far stops working (Graph answers it 401)."""
        with self._lock:
            self._revoked_before = time.time()

    def admin(self, payload: Mapping[str, Any]) -> None:
        """``POST /_sim/msgraph/clients``: register a client and/or set the token lifetime."""
        if payload.get("client_id"):
            self.register_client(str(payload["tenant_id"]), str(payload["client_id"]),
                                 secret=payload.get("secret"), certificate=payload.get("certificate"))
        if payload.get("token_lifetime") is not None:
            self.token_lifetime = int(payload["token_lifetime"])
        if payload.get("revoke_tokens"):
            self.revoke_tokens()
        if payload.get("unknown_tenant"):
            self.forget_tenant(str(payload["unknown_tenant"]))

    # -- reading a request --------------------------------------------------------------------------

    def match(self, path: str) -> Mapping[str, str] | None:
        m = _LIST.match(path)
        if m is not None and m.group(1).lower() in _BY_SEGMENT:
            return {"endpoint": "list", "stream": _BY_SEGMENT[m.group(1).lower()]}
        m = _TOKEN.match(path)
        if m is not None:
            return {"endpoint": "token", "tenant": m.group(1)}
        return None

    def has_cursor(self, request: ApiRequest) -> bool:
        return bool(request.query.get("$skiptoken"))

    def log_fields(self, request: ApiRequest) -> dict[str, Any]:
        q = request.query
        return {"path": request.path, "stream": request.params.get("stream"), "filter": q.get("$filter"),
                "top": int(q["$top"]) if q.get("$top", "").isdigit() else q.get("$top"),
                "skiptoken": q.get("$skiptoken") or None}

    def check_auth(self, request: ApiRequest) -> Reply | None:
        if request.params.get("endpoint") == "token":
            return None  # the client authenticates in the form, checked by the grant
        scheme, _, value = (request.authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return self.error(401, "Access token is empty.", [("WWW-Authenticate", _WWW_AUTH)])
        claims = _verify_token(value.strip())
        if claims is None:
            return self.error(401, "Access token validation failure. Invalid audience.",
                              [("WWW-Authenticate", _WWW_AUTH)])
        with self._lock:
            revoked = claims["iat"] < self._revoked_before
        if revoked or time.time() >= claims["exp"]:
            return self.error(401, "Lifetime validation failed, the token is expired.",
                              [("WWW-Authenticate", _WWW_AUTH)])
        return None

    # -- answers ------------------------------------------------------------------------------------

    def error(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
        body = {"error": {"code": _CODES.get(status, "UnknownError"), "message": message,
                          "innerError": {"date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
                                         "request-id": str(uuid.uuid4()), "client-request-id": str(uuid.uuid4())}}}
        return Reply(status, json_bytes(body), headers or [])

    def invalid_cursor(self, request: ApiRequest) -> Reply:
        return self.error(400, "Invalid Skip Token")

    def malformed(self, request: ApiRequest) -> Reply:
        return Reply(200, b'{"value":"oops"}')

    def stuck_page(self, request: ApiRequest) -> Reply:
        stream = request.params.get("stream", "directory_audits")
        token = request.query.get("$skiptoken") or self._fresh_token(request)
        body = {"@odata.context": self._context(request, stream), "value": [],
                "@odata.nextLink": self._next_link(request, stream, token)}
        return Reply(200, json_bytes(body))

    def page(self, request: ApiRequest, *, damage: str | None = None, repeat_cursor: bool = False) -> Reply:
        if request.params.get("endpoint") == "token":
            return self._token(request)
        if request.method != "GET":
            return self.error(405, f"Method {request.method} not allowed")
        try:
            return self._page(request, damage, repeat_cursor)
        except BadRequest as e:
            return self.error(400, e.message)

    def _query(self, request: ApiRequest) -> tuple[str, int, int, int, bytes]:
        """(stream, lo tick, hi tick, top, query hash) of a listing request; BadRequest when invalid."""
        stream = request.params["stream"]
        q = request.query
        top = _MAX_TOP
        if q.get("$top") is not None:
            if not q["$top"].isdigit() or not 1 <= int(q["$top"]) <= _MAX_TOP:
                raise BadRequest(f"Invalid page size specified: '{q['$top']}'. Must be between 1 and {_MAX_TOP}.")
            top = int(q["$top"])
        flt = q.get("$filter")
        lo, hi = parse_filter(flt, STREAMS[stream][1]) if flt is not None else (-(2**62), 2**62)
        qhash = hashlib.blake2b(f"{stream}|{flt}|{top}".encode(), digest_size=8).digest()
        return stream, lo, hi, top, qhash

    def _page(self, request: ApiRequest, damage: str | None, repeat_cursor: bool) -> Reply:
        stream, lo, hi, top, qhash = self._query(request)
        sent = request.query.get("$skiptoken")
        before = self._skiptokens.decode(sent, qhash) if sent else None
        now_us = self.ctx.now_us()
        now_ticks = now_us * 10
        hi = min(hi, now_ticks)
        lo_ms, hi_ms = -((-lo) // _TICKS) - 1, hi // _TICKS  # ms that may hold a matching tick, a margin included
        if hi < lo:
            refs: list[tuple[Bucket, int]] = []
        else:
            scan = self.ctx.store.scan(stream, max(lo_ms, 0), hi_ms, before=before, visible_at=now_us // 1000)
            matching = ((b, i) for b, i in scan if lo <= b.times[i] * _TICKS + sub_ms(b.times[i]) <= hi)
            refs = list(islice(matching, top + 1))
        more = len(refs) > top
        refs = refs[:top]
        if more and self.short_pages and sent:
            # Graph's short pages mid-stream (941 of 1000): a few fewer, the skiptoken after the last served.
            short = int.from_bytes(hashlib.blake2b(sent.encode(), digest_size=2).digest()) % max(1, top // 10)
            refs = refs[: max(1, top - short)]
        items = [self.item(stream, b, i) for b, i in refs]
        spliced = damage_item(items, damage, _DAMAGE[stream]) if damage and items else None
        token: str | None
        if repeat_cursor:
            token = sent or self._fresh_token(request)
        elif more:
            b, i = refs[-1]
            token = self._skiptokens.encode(qhash, (b.times[i], b.uqs[i]))
        else:
            token = None
        doc: dict[str, Any] = {"@odata.context": self._context(request, stream), "value": items}
        if token is not None:
            doc["@odata.nextLink"] = self._next_link(request, stream, token)
        raw_body = json_bytes(doc)
        body = raw_body if spliced is None else splice(raw_body, spliced)
        return Reply(200, body, items=len(items))

    # -- links --------------------------------------------------------------------------------------

    def _origin(self, request: ApiRequest) -> str:
        return self.link_base or f"{self.scheme}://{request.headers.get('Host', '127.0.0.1')}"

    def _context(self, request: ApiRequest, stream: str) -> str:
        return f"{self._origin(request)}/v1.0/$metadata#auditLogs/{STREAMS[stream][0]}"

    def _next_link(self, request: ApiRequest, stream: str, token: str) -> str:
        """The nextLink: the query repeated, the path lower-cased (as in Graph's doc example)."""
        q = request.query
        parts = [f"$filter={quote(q['$filter'], safe='')}"] if q.get("$filter") is not None else []
        if q.get("$top") is not None:
            parts.append(f"$top={q['$top']}")
        parts.append(f"$skiptoken={token}")
        return f"{self._origin(request)}/v1.0/auditlogs/{STREAMS[stream][0].lower()}?{'&'.join(parts)}"

    def _fresh_token(self, request: ApiRequest) -> str:
        """A valid skiptoken of the request's query that leads back to its first page."""
        try:
            *_, qhash = self._query(request)
        except BadRequest:
            qhash = b"\0" * 8
        return self._skiptokens.encode(qhash, (2**62, 2**62))

    # -- the token endpoint -------------------------------------------------------------------------

    def _oauth_error(self, status: int, error: str, code: int, description: str) -> Reply:
        trace = str(uuid.uuid4())
        return Reply(status, json_bytes({
            "error": error, "error_description": f"AADSTS{code}: {description} Trace ID: {trace}",
            "error_codes": [code], "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
            "trace_id": trace, "correlation_id": str(uuid.uuid4()),
        }))

    def _token(self, request: ApiRequest) -> Reply:
        if request.method != "POST":
            return self.error(405, f"Method {request.method} not allowed")
        tenant = request.params["tenant"]
        form = dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        with self._lock:
            unknown = tenant.lower() in self._unknown_tenants
        if unknown:
            return self._oauth_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            return self._oauth_error(400, "unsupported_grant_type", 70003,
                                     "The app requested an unsupported grant type.")
        client_id = form.get("client_id", "")
        scope = form.get("scope", "")
        if not scope.endswith("/.default") or " " in scope:
            return self._oauth_error(400, "invalid_scope", 1002012,
                                     f"The provided value for scope {scope} is not valid. Client credential flows "
                                     f"must have a scope value with /.default suffixed to the resource identifier "
                                     f"(application ID URI).")
        with self._lock:
            registered = self._clients.get((tenant.lower(), client_id.lower()))
        secret, certificate = registered if registered is not None else (self.ctx.token, None)
        audience = f"{self._origin(request)}{request.path}"
        if form.get("client_assertion") is not None:
            refused = self._check_assertion(form, client_id, certificate, audience)
            if refused is not None:
                return refused
        elif "client_secret" in form:
            if certificate is not None and secret is None:
                return self._oauth_error(401, "invalid_client", 7000215, "Invalid client secret provided.")
            if secret is not None and not hmac.compare_digest(form["client_secret"].encode(), secret.encode()):
                return self._oauth_error(401, "invalid_client", 7000215,
                                         f"Invalid client secret provided. Ensure the secret being sent in the "
                                         f"request is the client secret value, not the client secret ID, for a "
                                         f"secret added to app '{client_id}'.")
        else:
            return self._oauth_error(401, "invalid_client", 7000218,
                                     "The request body must contain the following parameter: 'client_assertion' "
                                     "or 'client_secret'.")
        now = time.time()
        with self._lock:
            self.tokens_issued += 1
            lifetime = self.token_lifetime
        token = _sign_token({"tid": tenant, "appid": client_id, "iat": now, "exp": now + lifetime,
                             "n": secrets.token_hex(4)})
        return Reply(200, json_bytes({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                                      "access_token": token}))

    def _check_assertion(self, form: Mapping[str, str], client_id: str, certificate: str | None,
                         audience: str) -> Reply | None:
        from google.auth import jwt  # the verifier Google's libraries use; installed with the project

        if form.get("client_assertion_type") != _ASSERTION_TYPE:
            return self._oauth_error(400, "invalid_request", 50027, "Invalid client_assertion_type.")
        if certificate is None:
            return self._oauth_error(401, "invalid_client", 700027,
                                     "Client assertion failed signature validation: no certificate is registered "
                                     f"for app '{client_id}'.")
        assertion = form["client_assertion"]
        try:
            header = json.loads(base64.urlsafe_b64decode(assertion.split(".")[0] + "=="))
            der = ssl.PEM_cert_to_DER_cert(certificate)
        except Exception:
            return self._oauth_error(400, "invalid_request", 50027, "Invalid JWT token: the token is malformed.")
        x5t = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).decode().rstrip("=")  # SHA-1: x5t, RFC 7515
        x5t_s256 = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
        if header.get("x5t") != x5t and header.get("x5t#S256") != x5t_s256:
            return self._oauth_error(401, "invalid_client", 700027,
                                     f"Client assertion failed signature validation. The key was not found "
                                     f"(x5t {header.get('x5t')!r}).")
        try:
            claims = jwt.decode(assertion, certs=certificate, audience=audience)
        except Exception as e:
            if "expired" in str(e).lower() or "early" in str(e).lower():
                return self._oauth_error(401, "invalid_client", 700024,
                                         "Client assertion is not within its valid time range.")
            if "audience" in str(e).lower():
                return self._oauth_error(401, "invalid_client", 700021,
                                         f"Client assertion audience claim does not match Realm issuer "
                                         f"({audience}).")
            return self._oauth_error(401, "invalid_client", 700027, "Client assertion failed signature validation.")
        if claims.get("iss") != client_id or claims.get("sub") != client_id:
            return self._oauth_error(401, "invalid_client", 700023,
                                     "Client assertion contains an invalid issuer or subject.")
        nbf = claims.get("nbf")
        if nbf is not None and float(nbf) > time.time() + 300:
            return self._oauth_error(401, "invalid_client", 700024,
                                     "Client assertion is not within its valid time range.")
        jti = str(claims.get("jti") or "")
        with self._lock:
            if not jti or jti in self._jtis:
                return self._oauth_error(401, "invalid_client", 700025, "Client assertion jti is missing or was "
                                         "already used.")
            self._jtis.add(jti)
        return None

    # -- ground truth -------------------------------------------------------------------------------

    def _id(self, stream: str, t: int, uq: int) -> str:
        digest = hashlib.blake2b(f"{self.ctx.seed}|msgraph|{stream}|{t}|{uq}".encode(), digest_size=16).digest()
        guid = str(uuid.UUID(bytes=digest))
        if stream == "directory_audits":
            return f"Directory_{guid.upper()[:8]}_{digest.hex()[:5].upper()}_{uq & 0xFFFFFFFF}"
        if stream == "provisioning":
            return f"{digest.hex()[:8]}-{uq & 0xFFFFFFFFFFFF:012x}"
        return guid

    def item(self, stream: str, bucket: Bucket, i: int) -> dict[str, Any]:
        store = self.ctx.store
        t, uq, attrs = bucket.times[i], bucket.uqs[i], bucket.attrs[i]
        when = format_ticks(t * _TICKS + sub_ms(t))
        user = store.actor(attrs)
        roll = store.name_roll(attrs)
        ident = self._id(stream, t, uq)
        correlation = str(uuid.UUID(bytes=hashlib.blake2b(ident.encode(), digest_size=16).digest()))
        user_id = str(uuid.UUID(bytes=hashlib.blake2b(user.email.encode(), digest_size=16).digest()))
        if stream == "sign_ins":
            failed = roll % 11 == 0
            return {"id": ident, "createdDateTime": when, "userDisplayName": user.email.split("@")[0],
                    "userPrincipalName": user.email, "userId": user_id,
                    "appDisplayName": _APPS[roll % len(_APPS)], "ipAddress": user.ip, "clientAppUsed": "Browser",
                    "correlationId": correlation, "conditionalAccessStatus": "notApplied",
                    "isInteractive": True, "riskLevelDuringSignIn": "none",
                    "status": {"errorCode": 50126 if failed else 0,
                               "failureReason": "Invalid username or password." if failed else None}}
        if stream == "provisioning":
            return {"id": ident, "activityDateTime": when, "tenantId": "00000000-0000-0000-0000-000000000000",
                    "jobId": "aws.0b1e4a2d6f3c4b5a", "cycleId": correlation, "changeId": correlation,
                    "provisioningAction": _ACTIONS[roll % len(_ACTIONS)],
                    "provisioningStatusInfo": {"status": "success", "errorInformation": None},
                    "initiatedBy": {"id": user_id, "displayName": user.email, "initiatorType": "user"},
                    "sourceIdentity": {"id": user_id, "displayName": user.email, "identityType": "User"}}
        return {"id": ident, "category": "UserManagement", "correlationId": correlation, "result": "success",
                "resultReason": "", "activityDisplayName": _AUDIT_ACTIVITIES[roll % len(_AUDIT_ACTIVITIES)],
                "activityDateTime": when, "loggedByService": "Core Directory", "operationType": "Update",
                "initiatedBy": {"app": None, "user": {"id": user_id, "displayName": None,
                                                      "userPrincipalName": user.email, "ipAddress": user.ip}},
                "targetResources": [{"id": user_id, "type": "User", "userPrincipalName": user.email,
                                     "modifiedProperties": []}],
                "additionalDetails": []}

    def event_id(self, stream: str, bucket: Bucket, i: int) -> tuple[str]:
        return (self._id(stream, bucket.times[i], bucket.uqs[i]),)


def _sign_token(claims: Mapping[str, Any]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(claims, separators=(",", ":")).encode()).decode().rstrip("=")
    mac = hmac.new(_TOKEN_KEY, payload.encode(), hashlib.sha256).hexdigest()[:32]
    return f"eyJ0eXAiOiJKV1QifQ.{payload}.{mac}"


def _verify_token(token: str) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    mac = hmac.new(_TOKEN_KEY, parts[1].encode(), hashlib.sha256).hexdigest()[:32]
    if not hmac.compare_digest(mac, parts[2]):
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


__all__ = ["STREAMS", "MsGraphApi", "format_ticks", "parse_filter", "parse_literal", "sub_ms"]
