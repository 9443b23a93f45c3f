"""GitHub's audit-log API (``GET /enterprises/{enterprise}/audit-log``, ``GET /orgs/{org}/audit-log``).

What it reproduces, because a client has to get each of them right (``sources/github.py`` cites
GitHub's documentation for each; ``../shared/reference/apis-and-emulators.md`` A3):

* ``phrase`` in the audit-log search syntax, parsed for ``created:`` qualifiers only: ``>=D``, ``>D``,
  ``<D``, ``<=D`` and ``D1..D2`` (both ends inclusive), ``D`` a day (``YYYY-MM-DD``, the whole day) or
  a second (``YYYY-MM-DDTHH:MM:SSZ`` or ``+HH:MM``; ``<=``/``>`` take the whole second, as a day is
  taken whole). Anything else (a millisecond form, a bare ``00:00`` left by a ``+`` sent unencoded and
  read as a space, another qualifier) is a 422, so a client that encodes the phrase wrongly fails loudly.
* ``include`` = ``web`` (the default) | ``git`` | ``all``: git events (``git.clone``/``fetch``/``push``)
  only with ``git`` or ``all``; they carry ``@timestamp`` but no ``created_at``, and some no ``actor``.
* ``order`` = ``desc`` (the default, newest first) | ``asc``; ``per_page`` default 30, at most 100.
* Pagination by ``Link`` only: ``rel="next"`` (``after=<cursor>&before=``), ``rel="first"`` and, past
  the first page, ``rel="prev"``. The links use the **numeric** entity path
  (``/enterprises/13827/audit-log``, ``/organizations/80307827/audit-log``), not the slug asked for, on
  the request's own Host (or ``link_base``). A full page always links on (the API does not look
  ahead), so a walk can end on an empty page, and an empty page asked with a cursor links to itself.
  ``after`` is opaque, MAC'd and bound to its query (phrase, include, order): a forged one, or
  another query's, is a 422.
* ``@timestamp``/``created_at`` are epoch milliseconds; ``_document_id`` the event's id; several
  events share a millisecond, and one is stamped exactly on every hour (the shared store's).
* Throttling (the fault switch's 429 kinds) answers ``throttle_status`` (429 by default; a test sets
  403, GitHub's usual answer) with ``x-ratelimit-*`` headers: with a Retry-After when the rule gives one
  (a secondary limit), else ``throttle_hint``: ``"reset"`` (``x-ratelimit-remaining: 0`` and the reset
  epoch, the primary limit) or ``"none"`` (a secondary limit with no hint at all: the client must wait
  at least a minute). The reset is on the sim clock, the clock of ``Date``.
* Auth: ``Authorization: Bearer <token>`` or ``token <token>``; errors as GitHub's
  ``{"message", "documentation_url", "status"}``.

The rest (auth order, fault rules, latency, request log, ground truth) is the shared server's. One
stream (``audit_log``) is served under every enterprise and org path.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import math
import re
import threading
import time
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any, ClassVar
from urllib.parse import urlencode

from .api import ApiContext, ApiRequest, BadRequest, EmulatedApi, Reply, SignedCursor, json_bytes
from .data import Bucket, EventKind, Key, name_table
from .faults import DamageTargets, damage_item, splice

STREAM = "audit_log"
API_NAME = "github_audit_log"
DOCS = "https://docs.github.com/rest/enterprise-admin/audit-log"
_MAX_PER_PAGE = 100
_DEFAULT_PER_PAGE = 30
_PATH = re.compile(r"^(?P<prefix>(?:/api/v3)?)/(?P<kind>enterprises|orgs|organizations)/(?P<entity>[^/]+)/audit-log$")
_DAMAGE = DamageTargets(id_key="_document_id", name=("action",), text=("org",))
_NOT_PARSED = "Validation Failed: the phrase could not be parsed"

# Web events, and git events (no created_at; some without actor), weighted.
_CATALOG = (
    EventKind("team.add_member", "web", 300, lambda uq: {"team": "acme/security"}),
    EventKind("repo.create", "web", 150, lambda uq: {"visibility": "private" if uq % 3 else "public"}),
    EventKind("org.update_member", "web", 150, lambda uq: {"permission": "admin" if uq % 5 == 0 else "read"}),
    EventKind("protected_branch.update", "web", 100, lambda uq: {"branch": "main"}),
    EventKind("git.clone", "git", 150, lambda uq: {}),
    EventKind("git.fetch", "git", 100, lambda uq: {}),
    EventKind("git.push", "git", 74, lambda uq: {}),
)
_TABLE = name_table(_CATALOG)
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SECOND = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:Z|[+-]\d{2}:\d{2})$")


def entity_id(kind: str, entity: str) -> str:
    """The numeric id the links of an entity use (a number stays itself)."""
    if entity.isdigit():
        return entity
    n = int.from_bytes(hashlib.blake2b(f"{kind}|{entity}".encode(), digest_size=4).digest(), "big")
    return str(10_000 + n % 90_000) if kind == "enterprises" else str(10_000_000 + n % 90_000_000)


def _instant(text: str) -> tuple[int, int]:
    """(first ms, ms after the last) of a ``created:`` value: a whole day or a whole second."""
    if _DAY.match(text):
        start = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
        ms = int(start.timestamp()) * 1000
        return ms, ms + 86_400_000
    if _SECOND.match(text):
        ms = int(dt.datetime.fromisoformat(text).timestamp()) * 1000
        return ms, ms + 1000
    raise BadRequest(f"{_NOT_PARSED}: {text!r} is not a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM:SSZ)")


def parse_phrase(phrase: str) -> tuple[int, int]:
    """``[lo, hi)`` in epoch ms of the ``created:`` qualifiers of ``phrase`` (ANDed); 422 for the rest."""
    lo, hi = -(2**62), 2**62
    for term in phrase.split():
        if term == "AND":
            continue
        if not term.startswith("created:"):
            raise BadRequest(f"{_NOT_PARSED}: {term!r}")
        value = term[len("created:"):]
        if ".." in value:
            a, _, b = value.partition("..")
            if a != "*":
                lo = max(lo, _instant(a)[0])
            if b != "*":
                hi = min(hi, _instant(b)[1])
            continue
        for op in (">=", "<=", ">", "<"):
            if value.startswith(op):
                first, after = _instant(value[len(op):])
                if op == ">=":
                    lo = max(lo, first)
                elif op == ">":
                    lo = max(lo, after)
                elif op == "<":
                    hi = min(hi, first)
                else:
                    hi = min(hi, after)
                break
        else:
            first, after = _instant(value)
            lo, hi = max(lo, first), min(hi, after)
    return lo, hi


class GitHubAuditLogApi(EmulatedApi):
    """The enterprise and org audit-log endpoints (stream ``audit_log``)."""

    name: ClassVar[str] = API_NAME
    auth_message: ClassVar[str] = "Bad credentials"
    pad_prefix: ClassVar[bytes] = b'{"message":"pad","pad":"'
    fault_messages: ClassVar[Mapping[int, str]] = {
        429: "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        500: "Server Error", 502: "Server Error", 503: "Service Unavailable", 504: "Gateway Timeout",
    }

    def __init__(self, ctx: ApiContext) -> None:
        super().__init__(ctx)
        self.scheme: str = ctx.settings.get("scheme", "http")
        self._afters = SignedCursor(f"logpull-simulator-github-after|{ctx.seed}".encode(),
                                    "Validation Failed: the after cursor is not valid for this query")
        self._lock = threading.Lock()
        #: ``scheme://host:port`` links point at instead of the request's own Host (origin tests).
        self.link_base: str | None = None
        #: the status of a throttled answer: 429 or 403 (GitHub: "typically a 403 or 429")
        self.throttle_status = 429
        #: without a Retry-After: "reset" (remaining 0 and the reset epoch) or "none" (no hint at all)
        self.throttle_hint = "reset"
        #: seconds from now to the reset epoch of a "reset" throttle
        self.reset_in = 1.0
        #: the reset epoch second (sim clock) of the last throttled answer
        self.last_reset: int | None = None
        #: the audit log's budget per hour that ``x-ratelimit-limit`` announces (counted, never enforced)
        self.rate_limit = 1750
        self._hour = 0
        self._used = 0

    # -- reading a request --------------------------------------------------------------------------

    def match(self, path: str) -> Mapping[str, str] | None:
        m = _PATH.match(path)
        if m is None:
            return None
        kind = "orgs" if m["kind"] == "organizations" else m["kind"]
        if m["kind"] == "organizations" and not m["entity"].isdigit():
            return None  # the numeric path takes only numbers, as GitHub's
        return {"prefix": m["prefix"], "kind": kind, "entity": m["entity"]}

    def has_cursor(self, request: ApiRequest) -> bool:
        return bool(request.query.get("after"))

    def log_fields(self, request: ApiRequest) -> dict[str, Any]:
        q = request.query
        return {"path": request.path, "phrase": q.get("phrase"), "include": q.get("include"),
                "order": q.get("order"), "per_page": q.get("per_page"), "after": q.get("after") or None}

    def check_auth(self, request: ApiRequest) -> Reply | None:
        if self.ctx.token is None:
            return None
        scheme, _, value = (request.authorization or "").partition(" ")
        if scheme.lower() in ("bearer", "token") and value.strip() == self.ctx.token:
            return None
        return self.error(401, self.auth_message)

    # -- answers ------------------------------------------------------------------------------------

    def error(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
        return Reply(status, json_bytes({"message": message, "documentation_url": DOCS, "status": str(status)}),
                     headers or [])

    def rate_limited(self, retry_after: float | None) -> Reply:
        """GitHub's throttled answer, ``throttle_status``: a secondary limit with Retry-After, or without
        one the primary limit (remaining 0 and the reset epoch) or a secondary limit with no hint."""
        status = self.throttle_status
        headers = [("x-ratelimit-limit", str(self.rate_limit)), ("x-ratelimit-resource", "audit_log")]
        if retry_after is not None:
            headers += [("retry-after", str(math.ceil(retry_after))), ("x-ratelimit-remaining", "100"),
                        ("x-ratelimit-reset", str(self._reset_epoch(3600)))]
            message = self.fault_messages[429]
        elif self.throttle_hint == "reset":
            self.last_reset = reset = self._reset_epoch(self.reset_in)
            headers += [("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", str(reset))]
            message = "API rate limit exceeded for user ID 1."
        else:
            headers += [("x-ratelimit-remaining", "100"), ("x-ratelimit-reset", str(self._reset_epoch(3600)))]
            message = self.fault_messages[429]
        return self.error(status, message, headers)

    def invalid_cursor(self, request: ApiRequest) -> Reply:
        return self.error(422, "Validation Failed: the after cursor is not valid for this query")

    def malformed(self, request: ApiRequest) -> Reply:
        return Reply(200, b'{"items":"oops"}', self._rate_headers())

    def stuck_page(self, request: ApiRequest) -> Reply:
        after = request.query.get("after") or self._fresh_after(request)
        return Reply(200, b"[]", [*self._links(request, after), *self._rate_headers()])

    def page(self, request: ApiRequest, *, damage: str | None = None, repeat_cursor: bool = False) -> Reply:
        try:
            return self._page(request, damage, repeat_cursor)
        except BadRequest as e:
            return self.error(422, e.message)

    def _query(self, q: Mapping[str, str]) -> tuple[int, int, str, str, int]:
        lo, hi = parse_phrase(q.get("phrase", ""))
        include = q.get("include") or "web"
        if include not in ("web", "git", "all"):
            raise BadRequest("Validation Failed: include must be one of web, git, all")
        order = q.get("order") or "desc"
        if order not in ("asc", "desc"):
            raise BadRequest("Validation Failed: order must be asc or desc")
        per_page = _DEFAULT_PER_PAGE
        if q.get("per_page"):
            if not q["per_page"].isdigit() or int(q["per_page"]) < 1:
                raise BadRequest("Validation Failed: per_page must be a positive integer")
            per_page = min(int(q["per_page"]), _MAX_PER_PAGE)  # GitHub caps it, silently
        if q.get("before"):
            raise BadRequest("Validation Failed: this simulator pages forward only (before)")
        return lo, hi, include, order, per_page

    def _page(self, request: ApiRequest, damage: str | None, repeat_cursor: bool) -> Reply:
        q = request.query
        lo, hi, include, order, per_page = self._query(q)
        qhash = _query_hash(q.get("phrase", ""), include, order)
        after = self._afters.decode(q["after"], qhash) if q.get("after") else None
        now_ms = self.ctx.now_us() // 1000
        lo = max(lo, now_ms - 90 * 86_400_000)  # without a created: bound, the past three months only
        refs = list(islice(self._scan(lo, min(hi, now_ms + 1), include, order, after, now_ms), per_page))
        items = [self.item(STREAM, b, i) for b, i in refs]
        spliced = damage_item(items, damage, _DAMAGE) if damage and items else None
        if repeat_cursor:
            nxt: str | None = q.get("after") or self._fresh_after(request)
        elif not refs:
            nxt = q.get("after") or None  # an empty page asked with a cursor links to itself
        elif len(refs) == per_page:  # full: there may be more, and the API links on without looking
            b, i = refs[-1]
            nxt = self._afters.encode(qhash, (b.times[i], b.uqs[i]))
        else:
            nxt = None
        raw_body = json_bytes(items)
        body = raw_body if spliced is None else splice(raw_body, spliced)
        return Reply(200, body, [*self._links(request, nxt), *self._rate_headers()], items=len(items))

    def _scan(self, lo: int, hi: int, include: str, order: str, after: Key | None,
              now_ms: int) -> Iterator[tuple[Bucket, int]]:
        """Events with ``lo <= time < hi`` of the kinds ``include`` names, in ``order``, past ``after``."""
        if hi <= lo:
            return
        store = self.ctx.store
        if order == "asc":
            scan = store.scan_ascending(STREAM, lo, hi - 1, after=after, visible_at=now_ms)
        else:
            scan = store.scan(STREAM, lo, hi - 1, before=after, visible_at=now_ms)
        for b, i in scan:
            if include == "all" or _TABLE[store.name_roll(b.attrs[i])].name == include:
                yield b, i

    # -- headers ------------------------------------------------------------------------------------

    def _links(self, request: ApiRequest, after: str | None) -> list[tuple[str, str]]:
        origin = self.link_base or f"{self.scheme}://{request.headers.get('Host', '127.0.0.1')}"
        p = request.params
        numeric = "enterprises" if p["kind"] == "enterprises" else "organizations"
        base = f"{origin}{p['prefix']}/{numeric}/{entity_id(p['kind'], p['entity'])}/audit-log"
        query = {k: v for k, v in request.query.items() if k not in ("after", "before")}
        out = []
        if after is not None:
            out.append(f'<{base}?{urlencode({**query, "after": after, "before": ""})}>; rel="next"')
        out.append(f'<{base}?{urlencode({**query, "after": "", "before": ""})}>; rel="first"')
        if request.query.get("after"):
            out.append(f'<{base}?{urlencode({**query, "after": "", "before": request.query["after"]})}>; rel="prev"')
        return [("Link", ", ".join(out))]

    def _rate_headers(self) -> list[tuple[str, str]]:
        now = time.time()
        hour = int(now) // 3600
        with self._lock:
            if hour != self._hour:
                self._hour, self._used = hour, 0
            self._used += 1
            used = self._used
        return [("x-ratelimit-limit", str(self.rate_limit)),
                ("x-ratelimit-remaining", str(max(1, self.rate_limit - used))),
                ("x-ratelimit-reset", str(self._reset_epoch((hour + 1) * 3600 - now))),
                ("x-ratelimit-used", str(used)), ("x-ratelimit-resource", "audit_log")]

    def _reset_epoch(self, seconds: float) -> int:
        """The epoch second, on the sim clock (the ``Date`` header's), ``seconds`` from now."""
        return math.ceil(self.ctx.now_us() / 1_000_000 + seconds)

    def _fresh_after(self, request: ApiRequest) -> str:
        """A valid ``after`` for the query that leads back to its first page."""
        q = request.query
        include, order = q.get("include") or "web", q.get("order") or "desc"
        start: Key = (-(2**62), -(2**63)) if order == "asc" else (2**62, 2**63 - 1)
        return self._afters.encode(_query_hash(q.get("phrase", ""), include, order), start)

    # -- ground truth -------------------------------------------------------------------------------

    def item(self, stream: str, bucket: Bucket, i: int) -> dict[str, Any]:
        """An audit-log event, web or git, with the fields a SIEM keys on."""
        store = self.ctx.store
        t, uq, attrs = bucket.times[i], bucket.uqs[i], bucket.attrs[i]
        user = store.actor(attrs)
        kind = _TABLE[store.name_roll(attrs)]
        login = user.email.split("@")[0]
        out: dict[str, Any] = {"@timestamp": t, "_document_id": self._document_id(stream, t, uq),
                               "action": kind.type, "business": "acme", "business_id": 13827,
                               "org": "acme-corp", "org_id": 80307827}
        if kind.name == "git":
            out.update(repo="acme-corp/service", repository_public=False, transport_protocol_name="ssh",
                       user_agent="git/2.43.0", user_id=int(user.profile_id[:9]))
            if uq % 4:  # some git events carry no actor at all
                out.update(actor=login, actor_id=int(user.profile_id[:9]))
        else:
            out.update(created_at=t, actor=login, actor_id=int(user.profile_id[:9]),
                       actor_location={"country_code": "US"}, operation_type="modify", **kind.params(uq))
        return out

    def _document_id(self, stream: str, t: int, uq: int) -> str:
        digest = hashlib.blake2b(f"{self.ctx.seed}|{stream}|{t}|{uq}".encode(), digest_size=16).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def event_id(self, stream: str, bucket: Bucket, i: int) -> tuple[str, str]:
        """(``@timestamp``, ``_document_id``): the source's id joins them with ``/``."""
        t = bucket.times[i]
        return (str(t), self._document_id(stream, t, bucket.uqs[i]))


def _query_hash(phrase: str, include: str, order: str) -> bytes:
    """What an ``after`` is bound to: the query (a next link repeats it unchanged)."""
    return hashlib.blake2b(f"{' '.join(phrase.split())}|{include}|{order}".encode(), digest_size=8).digest()
