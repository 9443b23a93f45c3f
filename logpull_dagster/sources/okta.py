"""Okta System Log (``GET /api/v1/logs``), one Okta org per source.

What Okta promises, and where it says so:

* ``since``/``until`` (ISO 8601), ``limit`` (up to 1000, default 100), ``sortOrder`` (``ASCENDING``,
  the default, or ``DESCENDING``) and ``after``, an opaque, system-generated cursor that only ever
  comes inside the ``Link: <...>; rel="next"`` response header ("Okta returns a link in the HTTP
  Header (rel=next) that includes the after query parameter"; ``since`` and ``after`` are mutually
  exclusive). A ``rel="self"`` link comes too. [okta/okta-developer-docs, ``docs/reference/api/
  system-log/index.md``; developer.okta.com/docs/reference/system-log-query; the generated SDKs'
  ``listLogEvents`` docs, developer.okta.com/okta-sdk-java/apidocs/.../SystemLogApi.html]
* A **bounded** request (``since`` and ``until`` both set) filters by ``published`` and returns its
  events in ``published`` order in a finite number of pages; **but** "not all events for the specified
  time range may be present — events may be delayed. Such delays are rare but possible." A *polling*
  request (no ``until``) filters by persistence time instead, to avoid skipping delayed records, and
  has infinitely many pages (a next link is always present). [System Log API reference, "Bounded
  requests" / "Polling requests"] We read one window at a time, so we make bounded requests, and win
  back what they can miss with the lookback re-read (below).
* Inclusivity of ``since``/``until`` is not documented: we treat ``until`` as possibly inclusive, so an
  event stamped exactly at the window's end may come back; the pull loop keeps ``[start, end)`` only.
* The System Log is "near real-time" and gives no figure for how late an event can be
  [developer.okta.com/docs/reference/system-log-query]. Defaults here: ``settle_lag: 5m`` (a window is
  read once it ended five minutes ago: "near real-time" puts almost every event in by then) and
  ``lookback: 6h`` (each window is read again every ``lookback_every`` for six hours, which finds
  the "rare but possible" delayed events a bounded request missed; Okta states no bound, so six hours
  is our judgement of where the re-read cost, six extra passes per window, stops paying).
* Rate limits: every response carries ``X-Rate-Limit-Limit``, ``X-Rate-Limit-Remaining`` and
  ``X-Rate-Limit-Reset`` ("the time at which the rate limit resets, specified in UTC epoch time (in
  seconds)"), and a throttled request is a 429 (``E0000047``) [developer.okta.com/docs/reference/
  rl-best-practices]. A 429 waits until that reset (counted from the response's ``Date``, so our
  clock's skew does not shorten it), up to ``http_backoff_max``; other retryable statuses back off
  as usual. ``X-Rate-Limit-Limit``/``-Remaining`` are journaled with each page (``journal_headers``),
  and the remaining count is the page's ``quota_remaining``: the pull loop keeps a window's lowest, which
  its metadata shows as ``rate_limit_remaining_min``, so operators see how close they run to the limit.
* Auth: an API token (``Authorization: SSWS <token>``), or, as Okta recommends ("Okta recommends using
  scoped OAuth 2.0 and OIDC access tokens to authenticate with the System Log API"), a service app
  with ``private_key_jwt`` client authentication and the ``okta.logs.read`` scope, its token from the
  org authorization server's ``/oauth2/v1/token`` (client-credentials grant; the client assertion is
  an RS256 JWT with ``iss`` = ``sub`` = client id, ``aud`` = the token URL, ``exp`` at most an hour
  ahead, a unique ``jti``) [developer.okta.com/docs/guides/build-self-signed-jwt; .../guides/
  implement-oauth-for-okta-serviceapp]. See ``auth.OAuthPrivateKeyJwt``.
* Event id: ``uuid``; event time: ``published`` (several events can share a millisecond).

What this source guarantees: the first page is ``since=start&until=end&limit=..&sortOrder=ASCENDING``;
every later page is the ``rel="next"`` URL exactly as Okta gave it, requested only on ``base_url``'s
origin (the shared client refuses any other before sending the credential); the next cursor is that
URL, journaled with the page's ``Link`` header, so a killed window resumes at the link it was about to
follow. The pass ends at a page without a next link **or** an empty page (Okta may hand a next link on
the last page). A 400 to a next link is a rejected cursor (the pull loop restarts the pass from page
one, and dedupe by ``uuid`` keeps it exact), as is a stored cursor that is not a URL at all. A page
whose body cannot be read still names its next link (``BadPage.next_cursor``, from the header), so an
operator's ``logpull skip-page`` loses that page only, not the rest of the window.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from logpull_dagster import json_codec
from logpull_dagster.config import BaseUrl, Duration, SourceBase, secret
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
from logpull_dagster.sources.auth import OAuthPrivateKeyJwt, OAuthToken, SswsAuth, TokenRefused
from logpull_dagster.sources.http import (
    DEFAULT_MAX_BYTES,
    RateLimitWait,
    RetryableStatus,
    RetryingClient,
    describe,
    reset_epoch,
    retry_after,
)
from logpull_dagster.sources.paging import links, next_link, next_link_or_none
from logpull_dagster.windows import Window, parse_time, rfc3339_ms

LOGS_PATH = "/api/v1/logs"
TOKEN_PATH = "/oauth2/v1/token"
LOGS_SCOPE = "okta.logs.read"
JOURNAL_HEADERS = ("link", "x-rate-limit-limit", "x-rate-limit-remaining")


# ---- pure logic: the next link ------------------------------------------------------------------

def looks_like_next_link(cursor: str) -> bool:
    """Whether a stored cursor can be a next link of the System Log (an http(s) URL or a path to it)."""
    parts = urlsplit(cursor)
    return parts.path.endswith(LOGS_PATH) and (parts.scheme in ("http", "https") or not parts.netloc)


# ---- the source -------------------------------------------------------------------------------------

def okta_wait() -> RateLimitWait:
    """A 429 waits until ``X-Rate-Limit-Reset``; anything else (5xx) as ``Retry-After`` or backoff:
    Okta sends the reset header on every response, and a 503 is not a spent quota."""
    reset, other = reset_epoch("X-Rate-Limit-Reset"), retry_after()

    def wait(status: int, headers: httpx.Headers, now: float) -> float | None:
        if status == 429:
            seconds = reset(status, headers, now)
            if seconds is not None:
                return seconds
        return other(status, headers, now)

    return wait


class OktaSystemLogSource:
    ordering: Literal["newest_first", "oldest_first"] = "oldest_first"
    #: Any [start, end) of whole seconds reads like a window: a busy window is read as sub-ranges (subranges.py).
    range_step: dt.timedelta | None = dt.timedelta(seconds=1)
    journal_headers: tuple[str, ...] = JOURNAL_HEADERS

    def __init__(self, *, base_url: str, token: str | None = None, auth: OAuthPrivateKeyJwt | None = None,
                 page_size: int = 1000, timeout: float = 30.0, http_attempts: int = 6,
                 backoff_initial: float = 0.5, backoff_max: float = 60.0, max_page_bytes: int = DEFAULT_MAX_BYTES,
                 credential: str = "the Okta API token", ca_file: str | None = None, tls_verify: bool = True,
                 client_cert: tuple[str, str] | None = None, proxy: str | None = None,
                 rate: RateGate | None = None) -> None:
        if (token is None) == (auth is None):
            raise ValueError("give exactly one of token (SSWS) and auth (OAuth)")
        self.page_size = page_size
        self._auth: SswsAuth | OAuthPrivateKeyJwt = SswsAuth(token) if token is not None else auth  # type: ignore[assignment]
        self._http = RetryingClient(
            base_url, {"Accept": "application/json"}, auth=self._auth, timeout=timeout, attempts=http_attempts,
            backoff_initial=backoff_initial, backoff_max=backoff_max, max_bytes=max_page_bytes,
            credential=credential, ca_file=ca_file, tls_verify=tls_verify,
            client_cert=client_cert, proxy=proxy, rate_limit_wait=okta_wait(), rate=rate,
        )

    def close(self) -> None:
        self._http.close()

    def secrets(self) -> tuple[str, ...]:
        return self._auth.secrets()

    def fetch_page(self, window: Window, cursor: str | None, deadline: float | None = None) -> Page:
        if cursor is None:
            path: str = LOGS_PATH
            params: dict[str, str | int] = {"since": rfc3339_ms(window.start), "until": rfc3339_ms(window.end),
                                            "limit": self.page_size, "sortOrder": "ASCENDING"}
        elif looks_like_next_link(cursor):
            path, params = cursor, {}  # followed byte for byte: ``after`` is Okta's, not ours
        else:
            raise TokenRejected("the stored cursor is not a System Log next link; the pass starts again")
        try:
            res = self._http.get(path, params, deadline=deadline)
        except (RetryableStatus, httpx.TransportError) as e:
            # The OAuth token request runs inside the API request's attempt: say which of them kept failing.
            where = self._auth.endpoint_of(e) if isinstance(self._auth, OAuthToken) else None
            what = f"{where} (a token for the Okta System Log)" if where else "Okta System Log"
            raise SourceUnavailable(f"{what}: still failing after {self._http.last_attempts} attempts "
                                    f"(last: {describe(e)})") from None
        except TokenRefused:
            raise  # the token endpoint's refusal already says what it said, and which key to check
        except CredentialsRefused as e:
            said = _error_message(e.api_message)
            raise CredentialsRefused(f"{e}; Okta said: {said}" if said else str(e), status=e.status) from None
        if res.status == 400 and cursor is not None:
            raise TokenRejected(f"Okta rejected the next link's cursor: {_error_message(res.content)}")
        if res.status != 200:
            raise SourceRequestError(f"Okta System Log answered HTTP {res.status}: {_error_message(res.content)}")
        headers = {name: ", ".join(res.headers.get_list(name)) for name in JOURNAL_HEADERS if name in res.headers}
        try:
            items, nxt = self.parse_page(res.content, headers)
        except BadPage as e:
            # The next link is in the headers, not the body: an operator who skips this page reads on.
            raise BadPage(str(e), res.content, next_link_or_none(headers.get("link", ""))) from None
        remaining = res.headers.get("x-rate-limit-remaining", "")
        return Page(items, nxt, res.content, res.retries, res.reasons, headers,
                    quota_remaining=int(remaining) if remaining.strip().isdigit() else None,
                    server_time=res.server_time)

    def parse_page(self, body: bytes, headers: Mapping[str, str] | None = None
                   ) -> tuple[list[dict[str, Any]], str | None]:
        try:
            doc = json_codec.loads(body)
        except json_codec.JSONError as e:
            raise BadPage(f"response is not JSON: {e}") from None
        if not isinstance(doc, list):
            raise BadPage(f"response is a JSON {type(doc).__name__}, not a list of LogEvents")
        for i, item in enumerate(doc):  # on the request path: only what ``to_events`` relies on
            if type(item) is not dict:
                raise BadPage(f"item {i} is not an object")
            uuid, published = item.get("uuid"), item.get("published")
            if type(uuid) is not str or not uuid:
                raise BadPage(f"item {i} has no uuid")
            if type(published) is not str:
                raise BadPage(f"item {i} has no published time")
            try:
                parse_time(published)
            except ValueError as e:
                raise BadPage(f"item {i} has a bad published time: {e}") from None
        # An empty page ends the pass even with a next link: Okta may link past the last page.
        nxt = next_link((headers or {}).get("link", "")) if doc else None
        return doc, nxt

    def to_events(self, items: list[dict[str, Any]]) -> list[Event]:
        out = []
        for item in items:
            published = item["published"]
            canonical = len(published) == 24 and published[19] == "." and published[23] == "Z"
            name = item.get("eventType")
            out.append(Event(item["uuid"], parse_time(published), item, (str(name),) if name else (),
                             published if canonical else ""))
        return out


def _error_message(body: bytes) -> str:
    """Okta's ``errorSummary`` (and causes), or the start of the body (the caller redacts it)."""
    try:
        doc = json_codec.loads(body)
        text = str(doc["errorSummary"])
        causes = [str(c.get("errorSummary")) for c in doc.get("errorCauses") or () if isinstance(c, dict)]
        return (text + (f" ({'; '.join(causes)})" if causes else ""))[:300]
    except (json_codec.JSONError, KeyError, TypeError, AttributeError):
        return body[:200].decode("utf-8", "replace")


# ---- config -----------------------------------------------------------------------------------------

class OktaOAuthConfig(BaseModel):
    """``oauth:`` of an Okta source: an API Services app authenticating with ``private_key_jwt``."""

    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_timedelta="float")

    client_id: str = Field(min_length=1, max_length=200, pattern=r"^\S+$")
    private_key: secret("OKTA_PRIVATE_KEY")  # type: ignore[valid-type]
    # The ``kid`` of the app's public key in Okta (sent in the assertion's header), when it has several.
    key_id: str | None = Field(default=None, min_length=1, max_length=200)
    # Default: ``{base_url}/oauth2/v1/token``, the org authorization server (the one management APIs take).
    token_url: BaseUrl | None = None
    scopes: tuple[str, ...] = Field(default=(LOGS_SCOPE,), min_length=1)


class OktaConfig(SourceBase):
    """``type: okta``: an Okta org's System Log."""

    type: Literal["okta"]
    base_url: BaseUrl
    token: secret("OKTA_TOKEN") | None = None  # type: ignore[valid-type]
    oauth: OktaOAuthConfig | None = None
    page_size: int = Field(default=1000, ge=1, le=1000)
    # See the module docstring for why: "near real-time", and bounded requests may miss delayed events.
    settle_lag: Duration = dt.timedelta(minutes=5)
    lookback: Duration = dt.timedelta(hours=6)

    supports_rate_limit: ClassVar[bool] = True
    # System Log: 90 days; outside it queries succeed with in-window events only, and a since over 180
    # days back is a 400 E0000053 [Okta System Log API doc] (apis-and-emulators.md, Okta, Retention).
    retention: ClassVar[dt.timedelta | dt.datetime | None] = dt.timedelta(days=90)

    @model_validator(mode="after")
    def _one_credential(self) -> OktaConfig:
        if (self.token is None) == (self.oauth is None):
            said = "both are set" if self.token is not None else "neither is set"
            raise ValueError(
                f"set exactly one of `token` and `oauth` ({said}): an API token as "
                f"`token: {{env: OKTA_TOKEN}}`, or a service app with private_key_jwt as "
                f"`oauth: {{client_id: 0oa..., private_key: {{env: OKTA_PRIVATE_KEY}}}}`")
        return self

    @property
    def stream(self) -> str:
        return f"Okta System Log of {urlsplit(self.base_url).netloc}"


def open_source(cfg: OktaConfig, secrets: Secrets, *, rate: RateGate | None = None) -> OktaSystemLogSource:
    common: dict[str, Any] = dict(
        base_url=cfg.base_url, page_size=cfg.page_size, rate=rate, **cfg.client_options(),
    )
    if cfg.token is not None:
        return OktaSystemLogSource(token=secrets(cfg.token.env), credential=cfg.token.env, **common)
    oauth = cfg.oauth
    assert oauth is not None  # the config's validator: exactly one of token and oauth
    credential = f"oauth.client_id {oauth.client_id} and its key oauth.private_key ({oauth.private_key.env})"
    auth = OAuthPrivateKeyJwt(
        oauth.token_url or f"{cfg.base_url}{TOKEN_PATH}", oauth.client_id, secrets(oauth.private_key.env),
        oauth.scopes, key_id=oauth.key_id, key_name=f"oauth.private_key ({oauth.private_key.env})",
        credential=credential,
    )
    return OktaSystemLogSource(auth=auth, credential=credential, **common)


PLUGINS = [Plugin("source", "okta", OktaConfig, open_source)]

__all__ = ["OktaConfig", "OktaSystemLogSource", "links", "looks_like_next_link", "next_link", "okta_wait"]
