"""GitHub audit log (``GET /enterprises/{enterprise}/audit-log`` or ``GET /orgs/{org}/audit-log``).

What GitHub promises, and where it says so (``../shared/reference/apis-and-emulators.md`` A3, from
docs.github.com "Using the audit log API for your enterprise", "REST API endpoints for enterprise audit
logs", "Searching the audit log for your enterprise", "Understanding the search syntax", "Rate limits for
the REST API"):

* Base ``https://api.github.com`` (GHEC) or ``https://HOST/api/v3`` (GHES: the path prefix is kept).
  Auth ``Authorization: Bearer <token>``: a classic token with ``read:audit_log`` (older GHES:
  ``admin:enterprise``) of an enterprise owner (org owner for the org endpoint) [doc].
* Window ``[A, B)`` as ``phrase=created:>=A created:<B``, A and B as ``YYYY-MM-DDTHH:MM:SSZ``: ``>=``
  and ``<`` make it exactly half-open, while ``A..B`` and ``<=B`` would also match B (and perhaps all of
  second B) [doc; A6]. No millisecond form is documented (Grove: "doesn't appear to support millisecond
  granularity in filters"), so a window whose edges are not whole seconds is refused here. The phrase is
  percent-encoded as a whole (``quote(safe="")``): an unencoded ``+`` would be read as the space that
  separates qualifiers [doc, derived].
* ``include=all``: the default (``web``) leaves out git events, which carry ``@timestamp`` but no
  ``created_at`` and may lack ``actor`` [doc example 3; Grove fixture ``tests/fixtures/github/git/001.json``].
  ``order=asc`` (oldest first; the default is newest first) and ``per_page=100`` (the maximum; default 30).
* Pagination by the ``Link`` header only: ``rel="next"`` carries the opaque ``after`` cursor, and its URL
  uses the **numeric** entity path (``/enterprises/13827/audit-log``), not the slug asked for
  [doc example; go-github#1848]: it is followed verbatim and checked for its origin only (the shared
  client). No ``rel="next"`` ends the walk [Grove ``api.py``]; whether a full last page links to an
  empty one is unverified, so an empty page ends it too, link or not. An invalid cursor is not
  documented: a 422 (or 400) to a next link is taken as a rejected cursor, :class:`TokenRejected`, and
  the pull loop restarts the window exactly (dedupe by id), as for Google.
* Items: ``@timestamp`` (UTC epoch **milliseconds**, an integer) is the event time; ``_document_id`` the
  event's id [doc]. Several events can share one millisecond.
* **Event id** = ``"{@timestamp}/{_document_id}"``. ``_document_id`` alone should be unique, but Grove's
  redacted fixtures (``tests/fixtures/github/audit/001.json``/``002.json``) reuse one ``_document_id``
  for three distinct events, which an id of ``_document_id`` alone would collapse into one (lost
  events); the reference (A3, A6) keys on (``@timestamp``, ``_document_id``). Including the time costs
  nothing here: the pull loop dedupes within a window, and the time decides the window.
* Throttling, "typically a 403 or 429" [doc]: honour ``retry-after`` if present; else if
  ``x-ratelimit-remaining`` is ``0`` wait until ``x-ratelimit-reset`` (epoch seconds, counted from the
  response's ``Date``, so our clock's skew does not shorten it); else wait **at least one minute**, then
  back off exponentially [doc: rate-limits-for-the-rest-api]. A 403 without those headers is a rate
  limit only when its message says so ("secondary rate limit", "rate limit exceeded"); any other 403 is
  a permission error, :class:`CredentialsRefused` naming the token's variable and ``read:audit_log``.
  Every wait is capped by ``http_backoff_max`` and none ends past the attempt's time budget (the window
  then resumes from its checkpoint on the next attempt). The quota: **1,750 queries per hour** per user
  and IP for each audit-log endpoint [doc], the default ``rate_limit`` (``1750/hour``), kept through the
  shared budget so every run of every source on that token stays under it.
* Lag: not documented. GitHub points to streaming for near-real-time use; Grove exposes a configurable
  ``delay`` because "Github backfills log entries but unfortunately do not provide any guidance around
  'lag' time", and Wazuh saw events missing from polled results (wazuh/wazuh#13529). Defaults here are
  therefore conservative: ``settle_lag: 15m`` (a window is first read a quarter hour after it ends) and
  ``lookback: 6h`` (re-read hourly for six hours, only new events delivered). Six re-reads keep a busy
  enterprise inside the query budget: at 10,000 events an hour a window is 100 pages, seven passes 700
  of the 1,750 queries an hour.
* Retention: 7 days for git events on GHEC (180 for web events) [doc]: a backfill further back than a
  week finds no git events, and says nothing about it.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import httpx
from pydantic import Field, model_validator

from logpull_dagster import json_codec
from logpull_dagster.config import BaseUrl, Duration, RateLimitText, SourceBase, secret
from logpull_dagster.plugins import Plugin, Secrets
from logpull_dagster.rate import RateGate
from logpull_dagster.sources import (
    BadPage,
    CredentialsRefused,
    Event,
    Page,
    SourceRequestError,
    SourceUnavailable,
    TokenRejected,
)
from logpull_dagster.sources.auth import BearerAuth
from logpull_dagster.sources.http import (
    DEFAULT_MAX_BYTES,
    RateLimitWait,
    RetryableStatus,
    RetryingClient,
    describe,
    parse_retry_after,
    reset_epoch,
    server_date,
)
from logpull_dagster.sources.paging import next_link, next_link_or_none
from logpull_dagster.windows import Window

DEFAULT_BASE_URL = "https://api.github.com"
JOURNAL_HEADERS = ("link", "x-ratelimit-limit", "x-ratelimit-remaining")
PAGE_SIZE = 100  # per_page: GitHub's maximum
#: GitHub's documented wait when a throttled answer gives no hint ("wait for at least one minute")
MIN_UNHINTED_WAIT = 60.0
SCOPE_HINT = "a classic token with the read:audit_log scope, of an enterprise owner (org owner for org:)"
# Epoch ms GitHub can have stamped: 2008 (GitHub's founding) to 2200. Anything else is not a time.
_MS_MIN, _MS_MAX = 1_199_145_600_000, 7_258_118_400_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# ---- pure logic ---------------------------------------------------------------------------------

def phrase(window: Window) -> str:
    """``created:>=A created:<B`` for ``[A, B)``, in whole seconds; a window with a fraction is refused:
    the search syntax has no documented millisecond form."""
    for edge in (window.start, window.end):
        if edge.microsecond or edge.utcoffset() is None:
            raise SourceRequestError(f"window edge {edge.isoformat()} is not a whole UTC second; GitHub's "
                                     f"created: qualifier takes whole seconds only")
    fmt = "%Y-%m-%dT%H:%M:%SZ"
    return (f"created:>={window.start.astimezone(dt.UTC).strftime(fmt)} "
            f"created:<{window.end.astimezone(dt.UTC).strftime(fmt)}")


def audit_log_path(*, enterprise: str | None = None, org: str | None = None) -> str:
    if (enterprise is None) == (org is None):
        raise ValueError("give exactly one of enterprise and org")
    return (f"/enterprises/{quote(enterprise, safe='')}/audit-log" if enterprise is not None
            else f"/orgs/{quote(org or '', safe='')}/audit-log")


def looks_like_next_link(cursor: str) -> bool:
    """Whether a stored cursor can be an audit-log next link (an http(s) URL, or a path, to ``/audit-log``)."""
    parts = urlsplit(cursor)
    return parts.path.endswith("/audit-log") and (parts.scheme in ("http", "https") or not parts.netloc)


def is_rate_limit_message(body: bytes) -> bool:
    """Whether a 403's body says it is a rate limit (primary "API rate limit exceeded", secondary "You have
    exceeded a secondary rate limit"), not a permission error."""
    return b"rate limit" in body[:2000].lower()


def github_wait(min_unhinted: float = MIN_UNHINTED_WAIT) -> RateLimitWait:
    """The wait of a throttled answer, from its headers alone (the shared client's hook).

    403/429: ``retry-after``, else the reset epoch when ``x-ratelimit-remaining`` is 0, else (429
    only: a 403 with neither header is judged by its message, in the source) ``min_unhinted``.
    5xx: ``Retry-After`` or the client's own backoff."""
    reset = reset_epoch("x-ratelimit-reset", remaining="x-ratelimit-remaining")

    def wait(status: int, headers: httpx.Headers, now: float) -> float | None:
        date = server_date(headers)
        hinted = parse_retry_after(headers.get("retry-after"), dt.datetime.fromtimestamp(
            now if date is None else date, dt.UTC))
        if status in (403, 429):
            if hinted is not None:
                return hinted
            seconds = reset(status, headers, now)
            if seconds is not None:
                return seconds
            return min_unhinted if status == 429 else None
        return hinted

    return wait


# ---- the source -------------------------------------------------------------------------------------

class GitHubAuditLogSource:
    ordering: Literal["newest_first", "oldest_first"] = "oldest_first"
    #: Any [start, end) of whole seconds reads like a window: a busy window is read as sub-ranges (subranges.py).
    range_step: dt.timedelta | None = dt.timedelta(seconds=1)
    journal_headers: tuple[str, ...] = JOURNAL_HEADERS

    def __init__(self, *, token: str, enterprise: str | None = None, org: str | None = None,
                 base_url: str = DEFAULT_BASE_URL, page_size: int = PAGE_SIZE, timeout: float = 30.0,
                 http_attempts: int = 6, backoff_initial: float = 0.5, backoff_max: float = 60.0,
                 max_page_bytes: int = DEFAULT_MAX_BYTES, credential: str = "the GitHub token",
                 ca_file: str | None = None, tls_verify: bool = True,
                 client_cert: tuple[str, str] | None = None, proxy: str | None = None,
                 rate: RateGate | None = None,
                 min_unhinted_wait: float = MIN_UNHINTED_WAIT, sleep: Callable[[float], None] = time.sleep) -> None:
        self.path = audit_log_path(enterprise=enterprise, org=org)
        self.page_size, self.credential, self.attempts = page_size, credential, http_attempts
        self.backoff_max, self.min_unhinted_wait, self._sleep = backoff_max, min_unhinted_wait, sleep
        self._auth = BearerAuth(token)
        self._http = RetryingClient(
            base_url, {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
            auth=self._auth, timeout=timeout, attempts=http_attempts, backoff_initial=backoff_initial,
            backoff_max=backoff_max, max_bytes=max_page_bytes, credential=credential, ca_file=ca_file,
            tls_verify=tls_verify,
            client_cert=client_cert, proxy=proxy, rate_limit_wait=github_wait(min_unhinted_wait), rate=rate,
        )

    def close(self) -> None:
        self._http.close()

    def secrets(self) -> tuple[str, ...]:
        return self._auth.secrets()

    def first_page_url(self, window: Window) -> str:
        """The path and query of the window's first page: the phrase percent-encoded as a whole (``%2B``,
        ``%20``), sent byte for byte."""
        return (f"{self.path}?phrase={quote(phrase(window), safe='')}&include=all&order=asc"
                f"&per_page={self.page_size}")

    def fetch_page(self, window: Window, cursor: str | None, deadline: float | None = None) -> Page:
        if cursor is None:
            target = self.first_page_url(window)
        elif looks_like_next_link(cursor):
            target = cursor  # followed byte for byte: its path is GitHub's numeric one, its after GitHub's
        else:
            raise TokenRejected("the stored cursor is not an audit-log next link; the pass starts again")
        res = self._get(target, deadline)
        if res.status in (400, 422) and cursor is not None:
            raise TokenRejected(f"GitHub rejected the next link's cursor (HTTP {res.status}): "
                                f"{_error_message(res.content)}")
        if res.status != 200:
            raise SourceRequestError(f"GitHub audit log answered HTTP {res.status}: {_error_message(res.content)}")
        headers = {name: ", ".join(res.headers.get_list(name)) for name in JOURNAL_HEADERS if name in res.headers}
        try:
            items, nxt = self.parse_page(res.content, headers)
        except BadPage as e:
            # The next link is in the headers, not the body: an operator who skips this page reads on.
            raise BadPage(str(e), res.content, next_link_or_none(headers.get("link", ""))) from None
        remaining = res.headers.get("x-ratelimit-remaining", "")
        return Page(items, nxt, res.content, res.retries, res.reasons, headers,
                    quota_remaining=int(remaining) if remaining.strip().isdigit() else None,
                    server_time=res.server_time)

    def _get(self, target: str, deadline: float | None) -> Any:
        """The shared client's GET, plus GitHub's 403 that only its message calls a rate limit: waited
        for (at least ``min_unhinted_wait``, doubling, capped by ``backoff_max``) within ``deadline``."""
        extra_retries, reasons = 0, []
        while True:
            try:
                res = self._http.get(target, deadline=deadline)
            except (RetryableStatus, httpx.TransportError) as e:
                raise SourceUnavailable(f"GitHub audit log: still failing after {self._http.last_attempts} "
                                        f"attempts (last: {describe(e)})") from None
            except CredentialsRefused as e:
                if e.status == 403 and is_rate_limit_message(e.api_message):
                    extra_retries += 1
                    wait = min(self.min_unhinted_wait * 2 ** (extra_retries - 1), self.backoff_max)
                    wait += random.uniform(0, wait / 10)
                    if extra_retries >= self.attempts:
                        raise SourceUnavailable(f"GitHub audit log: still rate limited (HTTP 403) after "
                                                f"{extra_retries} attempts: {_error_message(e.api_message)}") from None
                    if deadline is not None and time.monotonic() + wait >= deadline:
                        raise SourceUnavailable(f"GitHub audit log: rate limited (HTTP 403, no hint); the "
                                                f"{wait:.0f}s wait would pass the time budget") from None
                    reasons.append("HTTP 403 (rate limit)")
                    self._sleep(wait)
                    continue
                said = _error_message(e.api_message)
                raise CredentialsRefused(f"{e} ({SCOPE_HINT})" + (f"; GitHub said: {said}" if said else ""),
                                         status=e.status) from None
            res.retries += extra_retries
            res.reasons = reasons + res.reasons
            return res

    def parse_page(self, body: bytes, headers: Mapping[str, str] | None = None
                   ) -> tuple[list[dict[str, Any]], str | None]:
        try:
            doc = json_codec.loads(body)
        except json_codec.JSONError as e:
            raise BadPage(f"response is not JSON: {e}") from None
        if not isinstance(doc, list):
            raise BadPage(f"response is a JSON {type(doc).__name__}, not a list of audit-log events")
        for i, item in enumerate(doc):  # on the request path: only what ``to_events`` relies on
            if type(item) is not dict:
                raise BadPage(f"item {i} is not an object")
            doc_id, stamp = item.get("_document_id"), item.get("@timestamp")
            if type(doc_id) is not str or not doc_id:
                raise BadPage(f"item {i} has no _document_id")
            if type(stamp) is not int:
                raise BadPage(f"item {i} has no @timestamp in epoch milliseconds (got {type(stamp).__name__})")
            if not _MS_MIN <= stamp <= _MS_MAX:
                raise BadPage(f"item {i} has an @timestamp out of range: {stamp} (epoch milliseconds expected)")
        # An empty page ends the pass even with a next link: GitHub may link past the last page.
        nxt = next_link((headers or {}).get("link", "")) if doc else None
        return doc, nxt

    def to_events(self, items: list[dict[str, Any]]) -> list[Event]:
        out = []
        for item in items:
            stamp = item["@timestamp"]
            name = item.get("action")
            out.append(Event(f"{stamp}/{item['_document_id']}", _EPOCH + dt.timedelta(milliseconds=stamp),
                             item, (str(name),) if name else ()))
        return out


def _error_message(body: bytes) -> str:
    """GitHub's ``message`` (and its ``errors``), or the start of the body (the caller redacts it)."""
    try:
        doc = json_codec.loads(body)
        text = str(doc["message"])
        errors = [str(e.get("message") or e) for e in doc.get("errors") or () if isinstance(e, dict)]
        return (text + (f" ({'; '.join(errors)})" if errors else ""))[:300]
    except (json_codec.JSONError, KeyError, TypeError, AttributeError):
        return body[:200].decode("utf-8", "replace")


# ---- config -----------------------------------------------------------------------------------------

_SLUG = r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98})$"


class GitHubConfig(SourceBase):
    """``type: github``: the audit log of one GitHub enterprise (``enterprise:``) or organization (``org:``)."""

    type: Literal["github"]
    enterprise: str | None = Field(default=None, pattern=_SLUG)
    org: str | None = Field(default=None, pattern=_SLUG)
    token: secret("GH_TOKEN")  # type: ignore[valid-type]
    # GHEC; GHES: https://HOST/api/v3 (the path prefix is kept)
    base_url: BaseUrl = DEFAULT_BASE_URL
    # See the module docstring: the lag is undocumented, and GitHub backfills.
    settle_lag: Duration = dt.timedelta(minutes=15)
    lookback: Duration = dt.timedelta(hours=6)
    # GitHub: 1,750 queries per hour per user and IP for each audit-log endpoint.
    rate_limit: RateLimitText | None = "1750/hour"

    supports_rate_limit: ClassVar[bool] = True
    # GHEC audit log: 180 days of web events, 7 days of Git events [GitHub doc]; GHES keeps them unless
    # configured otherwise (apis-and-emulators.md, GitHub, Retention).
    retention: ClassVar[dt.timedelta | dt.datetime | None] = dt.timedelta(days=180)

    @model_validator(mode="after")
    def _one_entity(self) -> GitHubConfig:
        if (self.enterprise is None) == (self.org is None):
            said = "both are set" if self.enterprise is not None else "neither is set"
            raise ValueError(f"set exactly one of `enterprise` and `org` ({said}): `enterprise: <slug>` reads "
                             f"/enterprises/<slug>/audit-log, `org: <login>` reads /orgs/<login>/audit-log")
        return self

    @property
    def stream(self) -> str:
        return (f"GitHub audit log of enterprise {self.enterprise}" if self.enterprise is not None
                else f"GitHub audit log of organization {self.org}")


def open_source(cfg: GitHubConfig, secrets: Secrets, *, rate: RateGate | None = None) -> GitHubAuditLogSource:
    return GitHubAuditLogSource(
        token=secrets(cfg.token.env), enterprise=cfg.enterprise, org=cfg.org, base_url=cfg.base_url,
        credential=cfg.token.env, rate=rate, **cfg.client_options(),
    )


PLUGINS = [Plugin("source", "github", GitHubConfig, open_source)]

__all__ = ["GitHubAuditLogSource", "GitHubConfig", "audit_log_path", "github_wait", "is_rate_limit_message",
           "looks_like_next_link", "phrase"]
