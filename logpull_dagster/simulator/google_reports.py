"""The Google Admin SDK Reports API ``activities.list`` endpoint, as one emulated API of the simulator.

What it reproduces, because a client has to get each of them right: the URL
``/admin/reports/v1/activity/users/all/applications/<app>``; ``startTime``/``endTime``/``maxResults``/
``pageToken`` with Google's validation and error messages; items newest first; BOTH window ends
inclusive at millisecond resolution (so a half-open client must filter); several events sharing one
millisecond (so time alone is no id); opaque page tokens bound to their query (another query's token is
"Invalid pageToken"); late publication; Google's error envelope with ``WWW-Authenticate`` on a 401; and
the cursor side of the shared faults (stuck and repeated tokens, which item fields the damaging kinds
spoil). Everything around a request (auth order, fault rules, latency, request log) is the shared
server's.

It also serves Google's OAuth token endpoint (``POST /token``) for the JWT-bearer grant a service
account with domain-wide delegation makes: a service account trusted with
:meth:`GoogleReportsApi.trust_service_account` (its public key, the subjects it may act for, the
scopes its client ID is authorised for) gets an access token that the Reports API then accepts until
it expires (``token_lifetime``, real seconds). The checks and their answers are Google's: a bad
signature or unknown key is ``invalid_grant``/"Invalid JWT Signature.", a ``sub`` that is no admin
``invalid_grant``/"Invalid email or User ID", a scope not delegated ``unauthorized_client`` (401), an
assertion living more than an hour, or issued more than 5 minutes ahead of the endpoint's clock
(``token_clock``) ``invalid_grant``/"... Check your iat and exp values in the JWT claim.". The static
``token`` keeps working beside it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, ClassVar
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from . import google_iam
from .api import ApiContext, ApiRequest, BadRequest, EmulatedApi, Reply, SignedCursor, json_bytes, json_error
from .data import INT64_MIN, Bucket, EventKind, Key, ceil_div, format_ms, name_table, parse_rfc3339_us
from .faults import DamageTargets, damage_item, splice

_PATH = re.compile(r"^/admin/reports/v1/activity/users/all/applications/(?P<app>[A-Za-z0-9_]+)$")
_KIND = "admin#reports#activities"
_MAX_RESULTS = 1000
_WWW_AUTHENTICATE = ("WWW-Authenticate", 'Bearer realm="https://accounts.google.com/"')
_DAMAGE = DamageTargets(id_key="id", name=("events", 0, "name"), text=("actor", "email"))
_DEFAULT_CUSTOMER_ID = "C03demo"
_TOKEN_PATH = "/token"
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_REPORTS_SCOPE = "https://www.googleapis.com/auth/admin.reports.audit.readonly"


@dataclass
class _ServiceAccount:
    email: str
    keys: dict[str, rsa.RSAPublicKey]  # by private_key_id (the assertion's `kid`)
    subjects: frozenset[str]
    scopes: frozenset[str]


# -- the event catalogs: what goes into events[0] of an item ------------------------------------------

Params = list[dict[str, Any]] | None


def _pick(options: tuple[str, ...], v: int) -> str:
    return options[v % len(options)]


_LOGIN_TYPES = ("google_password", "google_password", "google_password", "saml", "reauth")


def _login_params(uq: int) -> Params:
    return [
        {"name": "login_type", "value": _pick(_LOGIN_TYPES, uq >> 3)},
        {"name": "is_suspicious", "boolValue": False},
    ]


def _login_failure_params(uq: int) -> Params:
    return [
        {"name": "login_type", "value": _pick(_LOGIN_TYPES, uq >> 3)},
        {"name": "login_failure_type", "value": "login_failure_invalid_password"},
        {"name": "is_suspicious", "boolValue": (uq >> 11) % 5 == 0},
    ]


def _logout_params(uq: int) -> Params:
    return [{"name": "login_type", "value": _pick(_LOGIN_TYPES, uq >> 3)}]


def _challenge_params(uq: int) -> Params:
    return [
        {"name": "login_challenge_method",
         "multiValue": [_pick(("password", "google_authenticator", "idv_preregistered_phone"), uq >> 5)]},
        {"name": "login_challenge_status",
         "value": "Challenge Passed" if (uq >> 9) % 4 else "Challenge Failed"},
    ]


def _verification_params(uq: int) -> Params:
    return [{"name": "login_type", "value": _pick(_LOGIN_TYPES, uq >> 3)}]


def _no_params(uq: int) -> Params:
    # Real items omit "parameters" for some events; clients must cope with the key being absent.
    return None


def _doc_params(uq: int) -> Params:
    return [
        {"name": "doc_id", "value": f"{uq & 0xFFFFFFFFFFFF:012x}"},
        {"name": "visibility", "value": _pick(("private", "shared_internally", "people_with_link"), uq >> 7)},
        {"name": "owner_is_team_drive", "boolValue": (uq >> 13) % 7 == 0},
    ]


def _setting_params(uq: int) -> Params:
    return [
        {"name": "setting_name", "value": _pick(("SHARING", "RETENTION", "MOBILE_POLICY"), uq >> 4)},
        {"name": "old_value", "value": "false"},
        {"name": "new_value", "value": "true"},
        {"name": "revision", "intValue": str((uq >> 8) % 1000)},
    ]


_LOGIN_CATALOG = (
    EventKind("login", "login_success", 600, _login_params),
    EventKind("login", "login_failure", 120, _login_failure_params),
    EventKind("login", "logout", 150, _logout_params),
    EventKind("login", "login_challenge", 60, _challenge_params),
    EventKind("login", "login_verification", 50, _verification_params),
    EventKind("login", "2sv_enroll", 20, _no_params),
)

_GENERIC_CATALOG = (
    EventKind("access", "view", 500, _doc_params),
    EventKind("access", "edit", 250, _doc_params),
    EventKind("access", "create", 100, _doc_params),
    EventKind("access", "delete", 50, _doc_params),
    EventKind("settings", "change_setting", 100, _setting_params),
)


_LOGIN_TABLE = name_table(_LOGIN_CATALOG)
_GENERIC_TABLE = name_table(_GENERIC_CATALOG)


class GoogleReportsApi(EmulatedApi):
    """``activities.list`` for every application (``login``, ``drive``, ``admin``, ...) of one customer."""

    name: ClassVar[str] = "google_reports"
    auth_message: ClassVar[str] = (
        "Request is missing required authentication credential. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential."
    )
    pad_prefix: ClassVar[bytes] = b'{"kind":"admin#reports#activities","pad":"'
    fault_messages: ClassVar[Mapping[int, str]] = {
        429: "Quota exceeded for quota metric 'Queries'.", 500: "Internal error", 502: "Bad Gateway",
        503: "The service is currently unavailable.", 504: "Deadline exceeded",
    }

    methods: ClassVar[frozenset[str]] = frozenset({"GET", "POST"})  # POST: the token endpoint only

    def __init__(self, ctx: ApiContext) -> None:
        super().__init__(ctx)
        self.customer_id: str = ctx.settings.get("customer_id", _DEFAULT_CUSTOMER_ID)
        self._tokens = SignedCursor(f"logpull-simulator-token|{ctx.seed}".encode(), "Invalid pageToken")
        self._etag_prefix = _hash(f"etag|{ctx.seed}|{self.customer_id}", 12)
        #: Seconds an issued access token is accepted (Google: 3599).
        self.token_lifetime = 3599.0
        #: The clock the token endpoint judges an assertion's iat/exp by: this host's, so that tests with a
        #: frozen sim clock keep their tokens. A test of a client whose clock is off points it at the sim
        #: clock (``lambda: sim.now().timestamp()``), which every answer's ``Date`` carries.
        self.token_clock: Callable[[], float] = time.time
        self._oauth_lock = threading.Lock()
        self._accounts: dict[str, _ServiceAccount] = {}
        self._issued: dict[str, float] = {}  # access token -> time.time() it expires
        self.tokens_issued = 0
        #: Keyless delegation: the metadata server, the ADC refresh grant and IAM signJwt (google_iam.py).
        self.iam = google_iam.GoogleIam(
            lambda email, pem, kid, subjects: self.trust_service_account(email, pem, kid, subjects=subjects))

    # -- the token endpoint's trust (what the Cloud console and the Admin console hold) --------------

    def trust_service_account(self, email: str, public_key_pem: bytes, key_id: str, *, subjects: Iterable[str],
                              scopes: Iterable[str] = (_REPORTS_SCOPE,)) -> None:
        """Accept assertions signed by this key of ``email`` (the service account's key, as the Cloud
        console registers it), acting for ``subjects`` (the domain's admins), for ``scopes`` (what the
        Admin console's domain-wide delegation authorises its client ID for)."""
        key = serialization.load_pem_public_key(public_key_pem)
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("a service account key is an RSA key")
        with self._oauth_lock:
            account = self._accounts.setdefault(email, _ServiceAccount(email, {}, frozenset(), frozenset()))
            account.keys[key_id] = key
            account.subjects, account.scopes = frozenset(subjects), frozenset(scopes)

    def issued_tokens(self) -> list[str]:
        """Every access token issued and not revoked (a test looks for them where they must not be)."""
        with self._oauth_lock:
            return list(self._issued)

    def revoke_tokens(self) -> None:
        """Forget every access token issued (the next request with one is a 401)."""
        with self._oauth_lock:
            self._issued.clear()

    # -- reading a request --------------------------------------------------------------------------

    def match(self, path: str) -> Mapping[str, str] | None:
        if path == _TOKEN_PATH:
            return {"endpoint": "token"}
        iam = google_iam.match(path)
        if iam is not None:
            return iam
        m = _PATH.match(path)
        return {"application": m.group("app")} if m else None

    def has_cursor(self, request: ApiRequest) -> bool:
        return bool(request.query.get("pageToken"))

    def check_auth(self, request: ApiRequest) -> Reply | None:
        if request.params.get("endpoint") in ("token", "sts", "signJwt", "metadata"):
            return None  # each checks its own credential (an assertion, a workload token, an ADC token, a header)
        scheme, _, value = (request.authorization or "").partition(" ")
        if scheme.lower() == "bearer":
            with self._oauth_lock:
                expires = self._issued.get(value.strip())
            if expires is not None and time.time() < expires:
                return None
        return super().check_auth(request)

    def log_fields(self, request: ApiRequest) -> dict[str, Any]:
        if request.params.get("endpoint") == "token":  # never the assertion: it is a credential
            form = _form(request.body)
            return {"application": None, "endpoint": "token", "grant_type": form.get("grant_type")}
        if request.params.get("endpoint") == "sts":  # never the workload's token
            return {"application": None, "endpoint": "sts", "grant_type": _form(request.body).get("grant_type")}
        if request.params.get("endpoint") in ("signJwt", "metadata"):  # never the claims or a token
            return {"application": None, **request.params}
        query = request.query
        max_results: Any = query.get("maxResults")
        if isinstance(max_results, str) and max_results.isdigit():
            max_results = int(max_results)
        fields = {
            "application": request.params["application"],
            "startTime": query.get("startTime"),
            "endTime": query.get("endTime"),
            "maxResults": max_results,
            "pageToken": query.get("pageToken") or None,
        }
        if query.get("customerId"):  # only when sent, so the log of a request without it is as it was
            fields["customerId"] = query["customerId"]
        return fields

    # -- answers ------------------------------------------------------------------------------------

    def error(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
        """Google's error envelope; a 401 always names the realm, as Google's front end does."""
        return json_error(status, message, [*(headers or []), _WWW_AUTHENTICATE] if status == 401 else headers)

    def invalid_cursor(self, request: ApiRequest) -> Reply:
        return self.error(400, "Invalid pageToken")

    def malformed(self, request: ApiRequest) -> Reply:
        return Reply(200, json_bytes({"kind": _KIND, "items": "oops"}))

    def stuck_page(self, request: ApiRequest) -> Reply:
        """Google's stuck-token bug: no items, and the token sent comes back as the next one."""
        token = request.query.get("pageToken") or self._fresh_token(request)
        body = {"kind": _KIND, "etag": '"stuck"', "nextPageToken": token}
        return Reply(200, json_bytes(body))

    def page(self, request: ApiRequest, *, damage: str | None = None, repeat_cursor: bool = False) -> Reply:
        endpoint = request.params.get("endpoint")
        if endpoint in ("token", "sts", "signJwt"):
            if request.method != "POST":
                return self.error(405, f"Method {request.method} not allowed")
            if endpoint == "token":
                return self._token(request)
            return self.iam.exchange(_form(request.body)) if endpoint == "sts" else self.iam.sign_jwt(request)
        if endpoint == "metadata":
            return self.iam.metadata(request) if request.method == "GET" else self.error(405, "Method not allowed")
        if request.method != "GET":
            return self.error(405, f"Method {request.method} not allowed")
        next_token = (request.query.get("pageToken") or self._fresh_token(request)) if repeat_cursor else None
        try:
            return self._page(request.params["application"], request.query, damage, next_token)
        except BadRequest as e:
            return self.error(400, e.message)

    def _page(
        self, application: str, query: Mapping[str, str], damage: str | None, next_token: str | None
    ) -> Reply:
        now_us = self.ctx.now_us()
        start_raw = query.get("startTime")
        if not start_raw:
            raise BadRequest("Required parameter: startTime")
        try:
            start_us = parse_rfc3339_us(start_raw)
        except ValueError:
            raise BadRequest(f"Invalid value '{start_raw}'. Values must match the format "
                             "'yyyy-mm-ddThh:mm:ss.sssZ' (RFC 3339).") from None
        end_raw = query.get("endTime")
        end_us: int | None = None
        if end_raw:
            try:
                end_us = parse_rfc3339_us(end_raw)
            except ValueError:
                raise BadRequest(f"Invalid value '{end_raw}' for endTime (RFC 3339 expected).") from None
        if start_us > now_us:
            raise BadRequest("Start time must be less than or equal to the current time.")
        effective_end = end_us if end_us is not None else now_us
        if start_us >= effective_end:
            raise BadRequest("Start time must be less than end time.")
        max_raw = query.get("maxResults")
        max_results = _MAX_RESULTS
        if max_raw is not None:
            if not re.fullmatch(r"[0-9]{1,7}", max_raw) or not 1 <= int(max_raw) <= _MAX_RESULTS:
                raise BadRequest(f"Invalid value '{max_raw}'. Values must be within the range: [1, 1000]")
            max_results = int(max_raw)
        qhash = _query_hash(application, start_us, end_us)
        page_token = query.get("pageToken")
        cursor = self._decode_token(page_token, qhash) if page_token else None

        store = self.ctx.store
        lo_ms = ceil_div(start_us, 1000)  # both ends inclusive, at millisecond resolution
        hi_ms = min(effective_end // 1000, now_us // 1000)
        now_ms = now_us // 1000
        refs = list(islice(store.scan(application, lo_ms, hi_ms, before=cursor, visible_at=now_ms),
                           max_results + 1))
        has_more = len(refs) > max_results
        refs = refs[:max_results]
        items = [self.item(application, b, i) for b, i in refs]
        spliced = damage_item(items, damage, _DAMAGE) if damage and items else None
        first = self.event_id(application, *refs[0]) if refs else ""
        etag_src = f"{qhash.hex()}|{cursor}|{len(items)}|{first}"
        body: dict[str, Any] = {
            "kind": _KIND,
            "etag": f'"{hashlib.blake2b(etag_src.encode(), digest_size=15).hexdigest()}"',
        }
        if items:
            body["items"] = items
        if next_token is not None:
            body["nextPageToken"] = next_token
        elif has_more:
            b, i = refs[-1]
            body["nextPageToken"] = self._encode_token(qhash, (b.times[i], b.uqs[i]))
        raw = json_bytes(body)
        if spliced is not None:
            raw = splice(raw, spliced)
        return Reply(200, raw, items=len(items))

    # -- the OAuth token endpoint -------------------------------------------------------------------

    def _token(self, request: ApiRequest) -> Reply:
        form = _form(request.body)
        grant = form.get("grant_type", "")
        if grant != _JWT_BEARER:
            return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")
        parts = form.get("assertion", "").split(".")
        try:
            header, claims = (json.loads(_b64(p)) for p in parts[:2])
            signature = _b64(parts[2])
        except (ValueError, IndexError):
            return _oauth_error(400, "invalid_grant", "Invalid JWT: malformed assertion.")
        if not isinstance(header, dict) or not isinstance(claims, dict) or header.get("alg") != "RS256":
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        with self._oauth_lock:
            account = self._accounts.get(str(claims.get("iss")))
            key = account.keys.get(str(header.get("kid"))) if account else None
        if account is None or key is None:
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        try:
            key.verify(signature, f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        now = self.token_clock()
        iat, exp = claims.get("iat"), claims.get("exp")
        if (not isinstance(iat, int) or not isinstance(exp, int) or exp - iat > 3600 or exp < now
                or iat > now + 300):
            return _oauth_error(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) "
                                "and in a reasonable timeframe. Check your iat and exp values in the JWT claim.")
        host = request.headers.get("Host", "")
        aud = str(claims.get("aud", ""))
        if not re.fullmatch(rf"https?://{re.escape(host)}{_TOKEN_PATH}", aud):
            return _oauth_error(400, "invalid_grant", f"Invalid JWT: Failed audience check. The right audience "
                                f"is http://{host}{_TOKEN_PATH}")
        if claims.get("sub") not in account.subjects:
            return _oauth_error(400, "invalid_grant", "Invalid email or User ID")
        asked = set(str(claims.get("scope", "")).split())
        if not asked or not asked <= account.scopes:
            return _oauth_error(401, "unauthorized_client", "Client is unauthorized to retrieve access tokens "
                                "using this method, or client not authorized for any of the scopes requested.")
        token = "ya29.sim-" + secrets.token_urlsafe(24)
        with self._oauth_lock:
            self._issued[token] = time.time() + self.token_lifetime  # checked against this host's clock
            self.tokens_issued += 1
        body = {"access_token": token, "expires_in": int(self.token_lifetime), "token_type": "Bearer"}
        return Reply(200, json_bytes(body))

    # -- page tokens --------------------------------------------------------------------------------

    def _fresh_token(self, request: ApiRequest) -> str:
        """A valid token for the query that leads back to its first page (for stuck and repeated tokens
        on a request that sent none)."""
        query = request.query
        try:
            start_us = parse_rfc3339_us(query.get("startTime", ""))
            end_us = parse_rfc3339_us(query["endTime"]) if query.get("endTime") else None
        except ValueError:
            start_us, end_us = 0, None
        top = (end_us // 1000 + 1) if end_us is not None else (self.ctx.now_us() // 1000 + 1)
        qhash = _query_hash(request.params["application"], start_us, end_us)
        return self._encode_token(qhash, (top, INT64_MIN))

    def _encode_token(self, qhash: bytes, key: Key) -> str:
        return self._tokens.encode(qhash, key)

    def _decode_token(self, token: str, qhash: bytes) -> Key:
        """The cursor of a token, or BadRequest when it is garbage or belongs to another query."""
        return self._tokens.decode(token, qhash)

    # -- items --------------------------------------------------------------------------------------

    def item(self, stream: str, bucket: Bucket, i: int) -> dict[str, Any]:
        """The ``admin#reports#activity`` item of an event; ``stream`` is the application name.
        Publish information is simulator-internal and deliberately absent."""
        store = self.ctx.store
        t, uq, attrs = bucket.times[i], bucket.uqs[i], bucket.attrs[i]
        user = store.actor(attrs)
        table = _LOGIN_TABLE if stream == "login" else _GENERIC_TABLE
        kind = table[store.name_roll(attrs)]
        event: dict[str, Any] = {"type": kind.type, "name": kind.name}
        params = kind.params(uq)
        if params is not None:
            event["parameters"] = params
        ip = user.ip if (uq >> 20) % 8 else f"203.0.113.{(uq >> 24) % 254 + 1}"
        return {
            "kind": "admin#reports#activity",
            "id": {
                "time": format_ms(t),
                "uniqueQualifier": str(uq),
                "applicationName": stream,
                "customerId": self.customer_id,
            },
            "etag": f'"{self._etag_prefix}/{_hash(f"{stream}|{t}|{uq}", 18)}"',
            "actor": {"callerType": "USER", "email": user.email, "profileId": user.profile_id},
            "ipAddress": ip,
            "events": [event],
        }

    def event_id(self, stream: str, bucket: Bucket, i: int) -> tuple[str, str, str, str]:
        """The id a client dedupes on: (applicationName, customerId, time, uniqueQualifier)."""
        return (stream, self.customer_id, format_ms(bucket.times[i]), str(bucket.uqs[i]))


def _query_hash(application: str, start_us: int, end_us: int | None) -> bytes:
    text = f"{application}|{start_us}|{'' if end_us is None else end_us}"
    return hashlib.blake2b(text.encode(), digest_size=8).digest()


def _hash(text: str, nbytes: int) -> str:
    digest = hashlib.blake2b(text.encode(), digest_size=nbytes).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _form(body: bytes) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _oauth_error(status: int, error: str, description: str) -> Reply:
    """The token endpoint's error body (RFC 6749 section 5.2, as Google sends it)."""
    return Reply(status, json_bytes({"error": error, "error_description": description}))
