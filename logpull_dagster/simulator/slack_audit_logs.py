"""Slack's Audit Logs API (``GET /audit/v1/logs``), as one emulated API.

What it reproduces, because a client has to get each of them right (``sources/slack.py`` cites the
contract, ``../shared/reference/apis-and-emulators.md`` A4):

* ``oldest``/``latest``: Unix seconds, integers, BOTH inclusive (an entry of second ``latest`` comes
  back); ``limit``, "optimistic", at most 9999 (anything else is "magically adjusted": clamped);
  ``cursor``. Entries come newest first; ``date_create`` is whole seconds (the shared store's
  milliseconds, truncated), so many entries share a second.
* Pages are **short mid-stream**: a request with a cursor gets, for about one page in three, fewer
  entries than ``limit`` though more follow (a pure function of the query and the cursor's position, so
  the same cursor always reads the same page). A page never splits a second: once ``limit`` is reached
  it goes on with every entry of the last entry's second, so it **exceeds ``limit``** when entries
  share that second. The first page of a query is never short (a single-page window stays one page).
* ``response_metadata.next_cursor``: standard base64 that always holds ``+`` and ``/`` and ends in
  ``=``. Sent back unencoded, the ``+`` arrives as a space (form decoding) and the padding may be lost:
  either is ``invalid_cursor``; so is a cursor of another query, a forged one, and one older than
  ``cursor_ttl`` seconds of the sim clock ("cursors expire"; set it, or None for never, on the API
  object). The last page ends the walk with ``next_cursor`` ``""``, ``null``, or no key at all
  (varied per query, as the docs allow all three); a full last page may still hand a cursor, which
  reads an empty final page.
* Success bodies carry ``"ok": true`` or no ``ok`` key at all (Grove's fixtures have none), varied
  per query. Errors are ``{"ok": false, "error": "<code>"}`` with an HTTP status (``not_authed`` /
  ``invalid_auth`` 401, ``invalid_cursor`` 400, ``ratelimited`` 429 with ``Retry-After`` seconds,
  ``fatal_error`` 5xx); a free-text message goes in ``response_metadata.messages``. ``refuse`` (set on
  the API object) answers every authenticated request with that error (``missing_scope`` 403 with
  ``needed``/``provided``, ``feature_not_enabled`` 403, ...); ``errors_as_200`` answers every such
  error with HTTP 200 instead, as Slack's Web API does, so that a client must read ``ok``.

The rest (auth order, fault rules, latency, request log, ground truth) is the shared server's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from .api import ApiContext, ApiRequest, BadRequest, EmulatedApi, Reply, json_bytes, seconds_text
from .data import Bucket, EventKind, Key, name_table
from .faults import DamageTargets, damage_item, splice

STREAM = "audit_logs"
LOGS_PATH = "/audit/v1/logs"
MAX_LIMIT = 9999
DEFAULT_LIMIT = 100  # not documented [A4]; any value will do, the client always sends limit
_DAMAGE = DamageTargets(id_key="id", name=("action",), text=("actor", "user", "email"))

# Error codes by HTTP status, for errors the shared server raises with a free-text message.
_CODES: Mapping[int, str] = {
    400: "invalid_arguments", 401: "invalid_auth", 403: "access_denied", 404: "unknown_method",
    405: "method_not_supported", 429: "ratelimited", 500: "fatal_error", 502: "fatal_error",
    503: "service_unavailable", 504: "request_timeout",
}
# The status of each error ``refuse`` may name (Slack documents none: these are plausible ones).
REFUSALS: Mapping[str, int] = {
    "not_authed": 401, "invalid_auth": 401, "token_revoked": 401, "missing_scope": 403,
    "feature_not_enabled": 403, "not_allowed_token_type": 403, "access_denied": 403,
}
_CODE = re.compile(r"^[a-z][a-z_]*$")

_CATALOG = (
    EventKind("user_login", "user", 500, lambda uq: None),
    EventKind("user_logout", "user", 200, lambda uq: None),
    EventKind("file_downloaded", "file", 150, lambda uq: None),
    EventKind("channel_created", "channel", 60, lambda uq: None),
    EventKind("app_installed", "app", 30, lambda uq: None),
    EventKind("role_change_to_admin", "user", 10, lambda uq: None),
    EventKind("user_session_reset_by_admin", "user", 20, lambda uq: None),
    EventKind("pref_sso_setting_changed", "workspace", 5, lambda uq: None),
)
_TABLE = name_table(_CATALOG)

# The cursor: a header whose base64 is "++//" (so an unencoded cursor always loses a "+"), the
# version, the query's hash, the position (time ms, unique qualifier) of the last entry sent, the sim
# second it was issued, and a MAC; 44 bytes, so its base64 ends in one "=".
_HEADER = b"\xfb\xef\xff"
_CURSOR = struct.Struct(">3sB8sqqq")
_MAC_BYTES = 8


class SlackAuditLogsApi(EmulatedApi):
    name: ClassVar[str] = "slack_audit_logs"
    auth_scheme: ClassVar[str] = "Bearer"
    pad_prefix: ClassVar[bytes] = b'{"ok":true,"entries":[],"pad":"'

    def __init__(self, ctx: ApiContext) -> None:
        super().__init__(ctx)
        self._key = hashlib.blake2b(f"slack-cursor|{ctx.seed}".encode(), digest_size=16).digest()
        #: seconds of the sim clock a cursor stays valid (None: for ever); tests move the clock past it
        self.cursor_ttl: float | None = 1800.0
        #: an error code every authenticated request gets (e.g. "missing_scope"), None: serve pages
        self.refuse: str | None = None
        #: answer every ok:false error (but 429 and 5xx) with HTTP 200, as Slack's Web API does
        self.errors_as_200 = False

    # -- routing and reading a request --------------------------------------------------------------

    def match(self, path: str) -> Mapping[str, str] | None:
        return {} if path == LOGS_PATH else None

    def has_cursor(self, request: ApiRequest) -> bool:
        return bool(request.query.get("cursor"))

    def log_fields(self, request: ApiRequest) -> dict[str, Any]:
        q = request.query
        return {"path": request.path, "oldest": q.get("oldest"), "latest": q.get("latest"),
                "limit": int(q["limit"]) if q.get("limit", "").isdigit() else q.get("limit"),
                "cursor": q.get("cursor") or None}

    def check_auth(self, request: ApiRequest) -> Reply | None:
        if self.ctx.token is None:
            return None
        header = request.authorization
        if not header:
            return self._error(401, "not_authed")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip() == self.ctx.token:
            return None
        return self._error(401, "invalid_auth")

    # -- answers ------------------------------------------------------------------------------------

    def _error(self, status: int, code: str, extra: Mapping[str, Any] | None = None,
               headers: list[tuple[str, str]] | None = None) -> Reply:
        if self.errors_as_200 and status < 429:
            status = 200
        return Reply(status, json_bytes({"ok": False, "error": code, **(extra or {})}), headers or [])

    def error(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
        """Slack's error body; a free-text message (not an error code) goes in ``response_metadata``."""
        if _CODE.match(message):
            return self._error(status, message, headers=headers)
        return self._error(status, _CODES.get(status, "fatal_error"),
                           {"response_metadata": {"messages": [f"[ERROR] {message}"]}}, headers)

    def rate_limited(self, retry_after: float | None) -> Reply:
        headers = [] if retry_after is None else [("Retry-After", seconds_text(retry_after))]
        return Reply(429, json_bytes({"ok": False, "error": "ratelimited"}), headers)

    def invalid_cursor(self, request: ApiRequest) -> Reply:
        return self._error(400, "invalid_cursor")

    def malformed(self, request: ApiRequest) -> Reply:
        return Reply(200, b'{"ok":true,"entries":"oops","response_metadata":{"next_cursor":""}}')

    def stuck_page(self, request: ApiRequest) -> Reply:
        cursor = request.query.get("cursor") or self._fresh_cursor(request)
        return Reply(200, json_bytes({"entries": [], "response_metadata": {"next_cursor": cursor}}))

    def page(self, request: ApiRequest, *, damage: str | None = None, repeat_cursor: bool = False) -> Reply:
        if self.refuse is not None:
            extra = {"needed": "auditlogs:read", "provided": "admin"} if self.refuse == "missing_scope" else {}
            return self._error(REFUSALS.get(self.refuse, 400), self.refuse, extra)
        try:
            return self._page(request, damage, repeat_cursor)
        except BadRequest as e:
            return self._error(400, e.message)

    def _page(self, request: ApiRequest, damage: str | None, repeat_cursor: bool) -> Reply:
        q = request.query
        now_ms = self.ctx.now_us() // 1000
        oldest = self._seconds(q, "oldest", 0)
        latest = self._seconds(q, "latest", now_ms // 1000)
        limit = DEFAULT_LIMIT
        if q.get("limit"):
            if not q["limit"].isdigit():
                raise BadRequest("invalid_limit")
            limit = min(max(int(q["limit"]), 1), MAX_LIMIT)  # "magically adjusted to something sensible"
        qhash = _query_hash(q)
        position = self._decode(q["cursor"], qhash) if q.get("cursor") else None
        want = limit if position is None else self._page_length(qhash, position, limit)
        scan = self.ctx.store.scan(STREAM, oldest * 1000, min(latest * 1000 + 999, now_ms), before=position,
                                   visible_at=now_ms)
        refs, more = _take(scan, want)
        items = [self.item(STREAM, b, i) for b, i in refs]
        spliced = damage_item(items, damage, _DAMAGE) if damage and items else None
        variant = qhash[0]
        meta: dict[str, Any] | None
        if repeat_cursor:
            meta = {"next_cursor": q.get("cursor") or self._fresh_cursor(request)}
        elif refs and (more or (len(refs) >= limit and variant & 8)):  # a full last page may still link on
            b, i = refs[-1]
            meta = {"next_cursor": self._encode(qhash, (b.times[i], b.uqs[i]))}
        else:  # the last page: the three ways Slack's docs allow, and no response_metadata at all
            meta = ({"next_cursor": ""}, {"next_cursor": None}, {}, None)[variant % 4]
        doc: dict[str, Any] = {} if variant & 16 else {"ok": True}
        doc["entries"] = items
        if meta is not None:
            doc["response_metadata"] = meta
        raw = json_bytes(doc)
        body = raw if spliced is None else splice(raw, spliced)
        return Reply(200, body, items=len(items))

    @staticmethod
    def _seconds(q: Mapping[str, str], key: str, default: int) -> int:
        raw = q.get(key)
        if not raw:
            return default
        if not raw.isdigit():
            raise BadRequest(f"invalid_{key}")  # an Integer: "1700000000.5" or an RFC 3339 time is refused
        return int(raw)

    @staticmethod
    def _page_length(qhash: bytes, position: Key, limit: int) -> int:
        """How many entries a page at ``position`` aims for: ``limit``, or for about one page in three
        fewer (at least one), deterministically, so a cursor always reads the same page."""
        h = hashlib.blake2b(qhash + struct.pack(">qq", *position), digest_size=8).digest()
        roll = int.from_bytes(h, "big")
        if limit < 2 or roll % 3:
            return limit
        return 1 + (roll >> 8) % (limit - 1)

    # -- cursors ------------------------------------------------------------------------------------

    def _encode(self, qhash: bytes, position: Key) -> str:
        payload = _CURSOR.pack(_HEADER, 1, qhash, position[0], position[1], self.ctx.now_us() // 10**6)
        mac = hashlib.blake2b(payload, key=self._key, digest_size=_MAC_BYTES).digest()
        return base64.b64encode(payload + mac).decode()

    def _decode(self, cursor: str, qhash: bytes) -> Key:
        try:
            raw = base64.b64decode(cursor, validate=True)  # a "+" sent unencoded arrives as " ": refused
        except (binascii.Error, ValueError):
            raise BadRequest("invalid_cursor") from None
        if len(raw) != _CURSOR.size + _MAC_BYTES:
            raise BadRequest("invalid_cursor")
        payload, mac = raw[:_CURSOR.size], raw[_CURSOR.size:]
        if mac != hashlib.blake2b(payload, key=self._key, digest_size=_MAC_BYTES).digest():
            raise BadRequest("invalid_cursor")
        header, version, their_qhash, t, uq, issued = _CURSOR.unpack(payload)
        if header != _HEADER or version != 1 or their_qhash != qhash:
            raise BadRequest("invalid_cursor")
        if self.cursor_ttl is not None and self.ctx.now_us() / 10**6 - issued > self.cursor_ttl:
            raise BadRequest("invalid_cursor")  # "cursors expire"
        return (t, uq)

    def _fresh_cursor(self, request: ApiRequest) -> str:
        """A valid cursor for the query that leads back to its first page."""
        q = request.query
        latest = q.get("latest", "")
        top = int(latest) * 1000 + 1000 if latest.isdigit() else self.ctx.now_us() // 1000 + 1
        return self._encode(_query_hash(q), (top, -(2**63)))

    # -- ground truth -------------------------------------------------------------------------------

    def item(self, stream: str, bucket: Bucket, i: int) -> dict[str, Any]:
        """An audit log entry (the fields of Grove's fixtures and slack-sdk's ``Entry``, trimmed)."""
        store = self.ctx.store
        t, uq, attrs = bucket.times[i], bucket.uqs[i], bucket.attrs[i]
        user = store.actor(attrs)
        kind = _TABLE[store.name_roll(attrs)]
        name = user.email.split("@")[0]
        actor_user = {"id": f"W{user.profile_id[:10]}", "name": name, "email": user.email, "team": "T0SIMTEAM"}
        entity_type = kind.name
        entity: dict[str, Any] = {"type": entity_type}
        if entity_type == "user":
            entity["user"] = actor_user | {"id": f"W{(uq & 0xFFFFFFFF):010d}"}
        else:
            entity[entity_type] = {"id": f"{entity_type[0].upper()}{uq & 0xFFFFFFFFFF:010X}",
                                   "name": f"{entity_type}-{uq & 0xFFFF}"}
        return {
            "id": self._uuid(stream, t, uq),
            "date_create": t // 1000,
            "action": kind.type,
            "actor": {"type": "user", "user": actor_user},
            "entity": entity,
            "context": {"location": {"type": "enterprise", "id": "E0SIMORG", "name": "Sim Org", "domain": "sim-org"},
                        "ua": "Mozilla/5.0 (X11; Linux x86_64)", "ip_address": user.ip,
                        "session_id": str(uq & 0xFFFFFFFFFFFF)},
        }

    def _uuid(self, stream: str, t: int, uq: int) -> str:
        digest = hashlib.blake2b(f"slack|{self.ctx.seed}|{stream}|{t}|{uq}".encode(), digest_size=16).digest()
        return str(uuid.UUID(bytes=digest, version=4))

    def event_id(self, stream: str, bucket: Bucket, i: int) -> tuple[str, str]:
        """``(date_create, id)``: the source's event id is ``"<date_create>/<id>"`` (sources/slack.py)."""
        t = bucket.times[i]
        return (str(t // 1000), self._uuid(stream, t, bucket.uqs[i]))


def _take(scan: Iterator[tuple[Bucket, int]], want: int) -> tuple[list[tuple[Bucket, int]], bool]:
    """``want`` entries of ``scan``, then every further entry of the last one's second (a page never
    splits a second, so it may hold more than ``want``); and whether any entry follows."""
    refs: list[tuple[Bucket, int]] = []
    for ref in scan:
        if len(refs) >= want:
            b, i = refs[-1]
            nb, ni = ref
            if nb.times[ni] // 1000 != b.times[i] // 1000:
                return refs, True
        refs.append(ref)
    return refs, False


def _query_hash(q: Mapping[str, str]) -> bytes:
    """What a cursor is bound to: the query's filters (``limit`` may change between pages)."""
    text = "|".join(q.get(k, "") for k in ("oldest", "latest", "action", "actor", "entity"))
    return hashlib.blake2b(text.encode(), digest_size=8).digest()
