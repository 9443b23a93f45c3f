"""Slack Audit Logs API (``GET {base_url}/audit/v1/logs``), one Enterprise organization per source.

What Slack promises, and where it says so (``../shared/reference/apis-and-emulators.md`` A4, from
docs.slack.dev "Audit Logs API methods & actions" and "Pagination", slack-sdk's audit-logs client and
tests, and Grove's Slack connector and fixtures):

* Auth: ``Authorization: Bearer xoxp-...``, a user token of an Enterprise organization **owner**, with
  the ``auditlogs:read`` scope, from an app installed at the **organization** level; Enterprise plans
  only [A4, doc].
* Filters: ``oldest`` and ``latest`` are Integer Unix seconds, **both inclusive**; ``limit`` is the
  number of results "to *optimistically* return, maximum 9999" [A4, doc]. Entries carry ``id`` (a UUID)
  and ``date_create`` (Unix seconds, an integer) [A4, src]. So a window ``[A, B)`` is asked for as
  ``oldest=A&latest=B-1`` ("``latest=B`` also returns every entry of second B, which belongs to the next
  window" [A4]); a window whose edges are not whole seconds cannot be asked for exactly and is refused.
  The pull loop still keeps only ``[start, end)`` of what comes back.
* Order: "the default ordering being descending (most to least recent)" [A4, doc]: ``newest_first``.
* Page size: "You may receive more than the passed ``limit`` results ... if there are multiple logs that
  were recorded at the exact same time", and "It's possible to receive *fewer* results than your
  specified ``limit``, even when there are additional results to retrieve. Avoid the temptation to check
  the size of results against the limit" [A4, doc]. Nothing here looks at a page's length: only the
  cursor ends a pass, and an empty page that hands a new cursor is read on.
* Pagination: ``response_metadata.next_cursor`` sent back as ``cursor``; "An empty, null, or non-existent
  ``next_cursor`` in the response indicates no further results" (Grove's last page has
  ``"response_metadata": {}``) [A4, doc; src]. Cursors "typically end in ``=``", which must be sent
  percent-encoded (``%3D``) [A4, doc]: the shared client hands ``cursor`` to httpx as a parameter,
  which encodes ``=``, ``+`` and ``/``. Cursors expire ("do not persist cursors for hours or days"); a
  gibberish, mis-encoded or too old cursor is ``invalid_cursor`` [A4, doc], which raises
  :class:`TokenRejected`: the pull loop restarts the window from its first page, and dedupe by event id
  keeps the result exact (as for Google's rejected page token). A checkpointed cursor therefore serves
  a crash and a prompt retry; a window resumed hours later just starts again. An empty page pointing at
  the cursor it was sent is refused (it would be read for ever).
* Errors: "standard HTTP status codes"; error bodies are ``{"ok": false, "error": "<code>"}``
  (slack-sdk's ``LogsResponse``: ``ok``, ``error``, ``needed``, ``provided``); success bodies in Grove's
  fixtures carry no ``ok`` key at all [A4, doc; src]. The status of each error is not documented, so
  entries are read only from a 2xx body whose ``ok`` is absent or ``true``; any ``ok: false`` is an error
  named by its code, whatever its status: ``not_authed``/``invalid_auth``/``token_revoked``... refuse
  the credential (:class:`CredentialsRefused`, naming the token's variable), ``missing_scope`` names
  ``auditlogs:read`` and the organization-level install, ``feature_not_enabled`` the Enterprise plan,
  ``invalid_cursor`` restarts the window, ``ratelimited`` is transient.
* Throttling: HTTP 429 with ``Retry-After`` (seconds) and ``{"ok": false, "error": "ratelimited"}``
  [A4, src: slack-sdk's audit-logs mock server and retry handler]. The shared client waits what
  ``Retry-After`` says (up to ``http.RETRY_AFTER_MAX``), else backs off. The limit is **Tier 3**: "up to
  50 calls per minute, with an allowance for sporadic bursts", "calculated as an organization-wide
  limit" [A4, doc], hence ``rate_limit: 50/min`` by default, drawn from the shared budget: every source
  reading the same organization must name one ``rate_account`` so that they share those 50 calls.
* Lag: Slack publishes no figure for how late an audit event can appear [A4: "Lag: not documented";
  A6: "GitHub and Slack publish no figure"]. Defaults here are deliberately conservative: ``settle_lag:
  15m`` (the project's default: a window is first read a quarter of an hour after it ends) and
  ``lookback: 24h`` (each window is re-read every ``lookback_every`` for a day, and only events not yet
  landed are delivered). The cost is small against Tier 3: a re-read of a window of N entries is about
  N/1000 calls, so an organization logging 20,000 events an hour spends about 20 x 24 = 480 of its
  3,000 calls an hour on re-reads; lower ``lookback`` if you measure a shorter lag.
* ``page_size`` (``limit``) defaults to **1000**, bounded by Slack's maximum 9999: at 50 calls a minute
  that reads 50,000 entries a minute (far above what an organization logs), while a page stays about a
  megabyte, so it is read well within ``http_timeout`` and a page fetched again after a crash is small.

Event id: ``"<date_create>/<id>"``. Slack's own key is ``id`` (A6: "Slack ``id`` (with
``date_create``)"), but Grove's redacted fixture 003 reuses one ``id`` for 19 entries with different
``date_create`` [A4]: keying on ``id`` alone would drop all but one of them as duplicates, which loses
events, while an entry's creation time never changes between two reads, so adding it can never make one
event two. Dedupe is by this id only, never by time: many entries share a second.

What this source guarantees: the first page is ``oldest=A&latest=B-1&limit=page_size``, and every later
page the same query plus the ``cursor`` the previous page gave; the cursor is the checkpoint (no header
is needed to read a journaled page again). A body that is not a page (not JSON, no ``entries`` list, an
entry without ``id`` or an integer ``date_create``, an ``ok`` that is not ``true``) is :class:`BadPage`
and nothing of it lands.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, NoReturn

import httpx
from pydantic import Field

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
from logpull_dagster.sources.http import DEFAULT_MAX_BYTES, RetryableStatus, RetryingClient, describe
from logpull_dagster.sources.paging import body_cursor
from logpull_dagster.windows import UTC, Window

LOGS_PATH = "/audit/v1/logs"
MAX_LIMIT = 9999  # "maximum 9999" [A4]
SCOPE = "auditlogs:read"
#: Tier 3, organization-wide [A4]
TIER3 = "50/min"
#: Errors that say the credential is not accepted (slack-sdk and Slack's Web API name these).
AUTH_ERRORS = frozenset({"not_authed", "invalid_auth", "token_revoked", "token_expired", "account_inactive",
                         "not_allowed_token_type", "no_permission", "access_denied", "ekm_access_denied"})
# Errors that no retry within seconds can fix, with what to do about each.
_ADVICE: Mapping[str, str] = {
    "not_authed": "no token reached Slack: set {cred} to a user token (xoxp-...) of an organization owner",
    "invalid_auth": "Slack does not accept the token in {cred}: set it to a valid user token (xoxp-...) of an "
                    "Enterprise organization owner",
    "token_revoked": "the token in {cred} was revoked: reinstall the app at the organization level and set "
                     "the new user token",
    "token_expired": "the token in {cred} has expired: set a fresh user token of an organization owner",
    "not_allowed_token_type": "the token in {cred} is not a user token (xoxp-...) of an organization owner, "
                              "the only kind the Audit Logs API takes",
    "missing_scope": f"the token in {{cred}} lacks the {SCOPE} scope: add {SCOPE} to the app's user token "
                     f"scopes, install the app at the organization level (not on one workspace) as an "
                     f"organization owner, and set the new token",
    "feature_not_enabled": "the Audit Logs API is only available on Slack Enterprise plans (Enterprise Grid); "
                           "this organization does not have it",
    "access_denied": "Slack refused the token in {cred}: it must belong to an organization owner "
                     "(organization admins' tokens are not supported)",
}


# ---- pure logic ---------------------------------------------------------------------------------------

def window_params(window: Window) -> dict[str, int]:
    """``oldest``/``latest`` of ``[start, end)``: whole seconds, both inclusive, so ``latest = end - 1``.
    Raises ValueError for an edge that is not a whole second (the query could not be exact)."""
    for edge in (window.start, window.end):
        if edge.microsecond:
            raise ValueError(f"the window [{window.start.isoformat()}, {window.end.isoformat()}) does not start "
                             f"and end on whole seconds; Slack's oldest/latest are Unix seconds, so it cannot "
                             f"be read exactly")
    oldest, end = int(window.start.timestamp()), int(window.end.timestamp())
    if end <= oldest:
        raise ValueError("the window is empty")
    return {"oldest": oldest, "latest": end - 1}


def slack_error(body: bytes) -> tuple[str, str]:
    """The ``error`` code of a Slack error body and a short text with its details (``needed``/``provided``,
    ``response_metadata.messages``), or ``("", start of the body)`` (the caller redacts it)."""
    try:
        doc = json_codec.loads(body)
    except json_codec.JSONError:
        return "", body[:200].decode("utf-8", "replace")
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str):
        return "", body[:200].decode("utf-8", "replace")
    code, details = doc["error"], []
    if isinstance(doc.get("needed"), str):
        details.append(f"needed: {doc['needed']}")
    if isinstance(doc.get("provided"), str):
        details.append(f"provided: {doc['provided']}")
    meta = doc.get("response_metadata")
    messages = meta.get("messages") if isinstance(meta, dict) else None
    if isinstance(messages, list):
        details += [str(m) for m in messages[:3]]
    return code[:100], (f"{code} ({'; '.join(details)})" if details else code)[:400]


_NEXT = re.compile(rb'"next_cursor"\s*:\s*("(?:[^"\\\x00-\x1f]|\\.)*")')


def salvage_next_cursor(body: bytes) -> str | None:
    """The ``next_cursor`` of a body that is not a page we can read, if it is written exactly once (an
    entry's own text could hold the same characters: then nothing is salvaged)."""
    found = _NEXT.findall(body)
    if len(found) != 1:
        return None
    try:
        value = json.loads(found[0].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, str) and value else None


# ---- the source -------------------------------------------------------------------------------------

class SlackAuditLogsSource:
    ordering: Literal["newest_first", "oldest_first"] = "newest_first"
    #: Any [start, end) of whole seconds reads like a window: a busy window is read as sub-ranges (subranges.py).
    range_step: dt.timedelta | None = dt.timedelta(seconds=1)
    journal_headers: tuple[str, ...] = ()  # the cursor is in the body

    def __init__(self, *, base_url: str, token: str, page_size: int = 1000, timeout: float = 30.0,
                 http_attempts: int = 6, backoff_initial: float = 0.5, backoff_max: float = 60.0,
                 max_page_bytes: int = DEFAULT_MAX_BYTES, credential: str = "SLACK_TOKEN",
                 ca_file: str | None = None, tls_verify: bool = True,
                 client_cert: tuple[str, str] | None = None, proxy: str | None = None,
                 rate: RateGate | None = None) -> None:
        if not 1 <= page_size <= MAX_LIMIT:
            raise ValueError(f"page_size must be within 1..{MAX_LIMIT}")
        self.page_size, self.credential = page_size, credential
        self._auth = BearerAuth(token)
        # No rate_limit_wait hook: a 429's Retry-After (seconds) is what Slack sends [A4], which the
        # shared client's default obeys.
        self._http = RetryingClient(
            base_url, {"Accept": "application/json"}, auth=self._auth, timeout=timeout, attempts=http_attempts,
            backoff_initial=backoff_initial, backoff_max=backoff_max, max_bytes=max_page_bytes,
            credential=credential, ca_file=ca_file, tls_verify=tls_verify,
            client_cert=client_cert, proxy=proxy, rate=rate,
        )

    def close(self) -> None:
        self._http.close()

    def secrets(self) -> tuple[str, ...]:
        return self._auth.secrets()

    def fetch_page(self, window: Window, cursor: str | None, deadline: float | None = None) -> Page:
        try:
            params: dict[str, str | int] = {**window_params(window), "limit": self.page_size}
        except ValueError as e:
            raise SourceRequestError(str(e)) from None
        if cursor is not None:
            params["cursor"] = cursor  # percent-encoded by httpx: "=" as %3D, "+" as %2B
        try:
            res = self._http.get(LOGS_PATH, params, deadline=deadline)
        except (RetryableStatus, httpx.TransportError) as e:
            raise SourceUnavailable(f"Slack Audit Logs API: still failing after {self._http.last_attempts} "
                                    f"attempts (last: {describe(e)})") from None
        except CredentialsRefused as e:
            code, said = slack_error(e.api_message)
            advice = _ADVICE.get(code, "").format(cred=self.credential)
            raise CredentialsRefused(f"{e}; Slack said: {said}" + (f"; {advice}" if advice else ""),
                                     status=e.status) from None
        if not 200 <= res.status < 300:
            self._refuse(res.status, res.content, cursor)
        try:
            items, nxt = self.parse_page(res.content)
        except _OkFalse:
            self._refuse(res.status, res.content, cursor)
        except BadPage as e:
            # The cursor may still be readable in a body that is not: an operator's skip-page reads on.
            raise BadPage(str(e), res.content, salvage_next_cursor(res.content)) from None
        if cursor is not None and nxt == cursor and not items:
            raise BadPage("Slack returned the cursor it was sent, with no entries; stopping instead of looping",
                          res.content)
        return Page(items, nxt, res.content, res.retries, res.reasons, server_time=res.server_time)

    def _refuse(self, status: int, body: bytes, cursor: str | None) -> NoReturn:
        """Raise the error a non-2xx or ``ok: false`` answer stands for (never returns)."""
        code, said = slack_error(body)
        where = f"Slack Audit Logs API answered HTTP {status}: {said}"
        if code == "invalid_cursor" and cursor is not None:
            raise TokenRejected(f"{where}; the cursor expired or was refused, so the window starts again")
        if code == "ratelimited":
            raise SourceUnavailable(f"{where}; throttled (Tier 3: 50 calls a minute per organization)")
        advice = _ADVICE.get(code, "").format(cred=self.credential)
        if code in AUTH_ERRORS or code == "missing_scope":
            raise CredentialsRefused(f"credentials refused ({code}): check {self.credential}; {advice}",
                                     status=status)
        raise SourceRequestError(where + (f"; {advice}" if advice else ""))

    def parse_page(self, body: bytes, headers: Mapping[str, str] | None = None
                   ) -> tuple[list[dict[str, Any]], str | None]:
        try:
            doc = json_codec.loads(body)
        except json_codec.JSONError as e:
            raise BadPage(f"response is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise BadPage(f"response is a JSON {type(doc).__name__}, not an object")
        ok = doc.get("ok", True)  # Grove's fixtures: success bodies without ``ok``
        if ok is False:
            raise _OkFalse(f"an error body (ok: false, error: {str(doc.get('error'))[:100]!r}), not a page")
        if ok is not True:
            raise BadPage(f"'ok' is {ok!r}, neither true nor false")
        if "entries" not in doc and doc.get("ok") is True:
            entries: Any = []  # an empty result may leave the list out; only a body that says ok: true
        else:
            entries = doc.get("entries")
        if not isinstance(entries, list):
            raise BadPage(f"'entries' is {'missing' if entries is None else 'a ' + type(entries).__name__}, "
                          f"not a list")
        meta = doc.get("response_metadata")
        if meta is not None and not isinstance(meta, dict):
            raise BadPage(f"'response_metadata' is a {type(meta).__name__}, not an object")
        nxt = body_cursor(doc, "response_metadata.next_cursor")
        for i, item in enumerate(entries):  # on the request path: only what ``to_events`` relies on
            if type(item) is not dict:
                raise BadPage(f"entry {i} is not an object")
            ident, created = item.get("id"), item.get("date_create")
            if type(ident) is not str or not ident:
                raise BadPage(f"entry {i} has no 'id'")
            if type(created) is not int or not 0 <= created < 2**37:  # Unix seconds, an integer [A4]
                raise BadPage(f"entry {i} has no integer 'date_create' (Unix seconds): {created!r}"[:200])
        return entries, nxt

    def to_events(self, items: list[dict[str, Any]]) -> list[Event]:
        out = []
        for item in items:
            created = item["date_create"]
            action = item.get("action")
            out.append(Event(f"{created}/{item['id']}", dt.datetime.fromtimestamp(created, UTC), item,
                             (action,) if type(action) is str and action else ()))
        return out


class _OkFalse(BadPage):
    """A 2xx body with ``ok: false``: an error to name, never a page (``fetch_page`` turns it into one)."""


# ---- config -----------------------------------------------------------------------------------------

class SlackConfig(SourceBase):
    """``type: slack``: an Enterprise organization's Slack audit logs."""

    type: Literal["slack"]
    base_url: BaseUrl = "https://api.slack.com"
    token: secret("SLACK_TOKEN")  # type: ignore[valid-type]
    page_size: int = Field(default=1000, ge=1, le=MAX_LIMIT)
    # Slack documents no lag: conservative defaults (module docstring).
    settle_lag: Duration = dt.timedelta(minutes=15)
    lookback: Duration = dt.timedelta(hours=24)
    # Tier 3, organization-wide (module docstring); a source sharing the organization names one rate_account.
    rate_limit: RateLimitText | None = TIER3

    supports_rate_limit: ClassVar[bool] = True
    # Audit Logs API: "no data before March 2018" (`oldest`), a fixed floor, not a duration [Slack doc]
    # (apis-and-emulators.md, Slack, Filters).
    retention: ClassVar[dt.timedelta | dt.datetime | None] = dt.datetime(2018, 3, 1, tzinfo=dt.UTC)

    @property
    def stream(self) -> str:
        return "Slack audit logs"


def open_source(cfg: SlackConfig, secrets: Secrets, *, rate: RateGate | None = None) -> SlackAuditLogsSource:
    return SlackAuditLogsSource(
        base_url=cfg.base_url, token=secrets(cfg.token.env), credential=cfg.token.env, page_size=cfg.page_size,
        rate=rate, **cfg.client_options(),
    )


PLUGINS = [Plugin("source", "slack", SlackConfig, open_source)]

__all__ = ["SlackAuditLogsSource", "SlackConfig", "slack_error", "window_params"]
