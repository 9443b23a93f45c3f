"""``type: rest``: any paginated, windowed JSON API, described in the config instead of coded.

A security team's long tail of SaaS audit logs mostly share one shape (``../shared/reference/
apis-and-emulators.md`` A6): a GET with the window's two ends as query parameters, a JSON body holding
a list of events, each with an id and a time, and the next page named by a ``Link`` header (Okta,
GitHub), a cursor in the body (Slack's ``response_metadata.next_cursor``) or a next URL in the body
(Graph's ``@odata.nextLink``). This module reads any API of that shape from its description::

    base_url, path, auth, params                      the request
    window {start_param, end_param, format, end_inclusive}   how the window is asked for
    records, event_id, event_time, time_format, order  what the answer holds
    paginator {type: link_header | cursor | next_url}  where the next page is
    rate_limit_reset_header                            how a 429 says when to come back

What it guarantees, the same as a coded source (it passes the same contract suite, hostile-API and HTTP
fault tests, re-expressing Okta's System Log, ``logpull_dagster_tests.cli.SOURCES["okta_rest"]``):

* **The window.** The first page asks for ``start_param=<start>&end_param=<end>`` in ``window.format``
  (``iso8601`` ``2026-11-26T10:00:00Z``, ``iso8601_ms`` ``...10:00:00.000Z``, ``epoch_s``, ``epoch_ms``),
  plus ``params``. The end sent is always the window's end itself, never "end minus one unit": Okta
  does not document whether ``until`` is inclusive, and asking an exclusive API for ``end - 1 ms`` would
  lose the events of that last millisecond. Events at the window's end belong to the next window: the
  pull loop keeps ``[start, end)`` only (``Window.contains``), and the next window reads them first.
  ``end_inclusive`` says which answer to expect: ``true``, the API may return events stamped exactly
  ``end`` (Okta, Google, Slack: both ends inclusive); ``false``, it returns ``[start, end)``. Every
  event of a page must lie inside what was asked (at the format's resolution: an ``epoch_s`` API
  compares whole seconds): an event before ``start``, after ``end``, or at ``end`` when
  ``end_inclusive`` is false, means the API did not apply the window as described (a misspelt
  ``start_param`` is silently ignored by many APIs, which then return the newest events for every
  window): the page is :class:`BadPage`, naming the keys to check, instead of a window that
  "completes" with the wrong events dropped.
* **Ids, never times.** ``event_id`` is a dotted path (or several, joined by ``/``: Slack's
  ``[date_create, id]``); events sharing a timestamp are told apart by it, never by time. An item
  without an id or a time, or with a time that does not parse as ``time_format``, is BadPage.
* **Pages.** ``link_header``: the ``rel="next"`` target, followed byte for byte; an empty page ends the
  walk even if it links on (Okta "may" link past the last page). ``next_url``: the URL at a path of
  the body, followed as given. Both only on ``base_url``'s origin (``RetryingClient`` refuses any
  other before the credential is sent). ``cursor``: the value at ``path`` sent back as ``param``, with
  the first page's query repeated (Slack); empty, null or missing ends the walk. With ``cursor`` and
  ``next_url`` an empty page with a next cursor is followed (Slack: "fewer results than your specified
  limit, even when there are additional results"); an empty page whose cursor is the one it was asked
  with is BadPage (Google's known bug: stop instead of looping); a cursor that repeats *with* items,
  or any longer cycle, is caught by the pull loop. The cursor is the checkpoint: a killed window
  resumes at the page it was about to read.
* **Rejected cursors.** A 400, 410 or 422 to a request that carries a cursor, or a stored cursor that
  cannot be one of this paginator's (not a URL for ``link_header``/``next_url``), is TokenRejected:
  the pull loop restarts the window from page one and dedupe by id keeps the result exact.
* **Throttling.** With ``rate_limit_reset_header`` a 429 waits until that epoch second (counted from
  the response's ``Date``, as Okta's ``X-Rate-Limit-Reset``), up to ``http_backoff_max``; otherwise
  (and for 5xx) ``Retry-After`` or exponential backoff (``sources/http.py``). ``rate_limit`` keeps
  every run under the account's quota before it is met.
* **Secrets.** ``token``, ``password``, ``client_secret`` are ``{env: NAME}`` only; ``secrets()`` holds
  each, the Basic credential as sent (its base64) and any access token fetched, so every error text
  is redacted of them.

What it cannot express is listed in ``docs/sources/rest.md`` (a POST body, a records key that is
absent when empty, polling mode, a time in another format, per-API error codes...).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
from collections.abc import Generator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, model_validator

from logpull_dagster import json_codec
from logpull_dagster.config import BaseUrl, SourceBase, secret
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
from logpull_dagster.sources.auth import BearerAuth, HeaderAuth, OAuthClientCredentials, TokenRefused
from logpull_dagster.sources.http import (
    DEFAULT_MAX_BYTES,
    RateLimitWait,
    RetryableStatus,
    RetryingClient,
    describe,
    reset_epoch,
    retry_after,
)
from logpull_dagster.sources.paging import at_path, body_cursor, body_next_url, next_link, next_link_or_none
from logpull_dagster.windows import UTC, Window, epoch_us, parse_time

TimeFormat = Literal["iso8601", "iso8601_ms", "epoch_s", "epoch_ms"]
# The resolution of each window format, in microseconds: what the API can compare a time against.
UNIT_US: dict[str, int] = {"iso8601": 1_000_000, "iso8601_ms": 1000, "epoch_s": 1_000_000, "epoch_ms": 1000}
# Statuses that, to a request carrying a cursor, mean "this cursor is no good" (expired, not for this query).
CURSOR_REJECTED = frozenset({400, 410, 422})
AUTH_TYPES = ("header", "bearer", "basic", "oauth_client_credentials")
PAGINATOR_TYPES = ("link_header", "cursor", "next_url")
_TOKEN_CHARS = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # an HTTP header name (RFC 9110 token)
_PATH = re.compile(r"^[^\s.][^\s]*$")  # a dotted path: no spaces, not starting with a dot


# ---- config: each block its own model ----------------------------------------------------------------

class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_timedelta="float")


class HeaderAuthConfig(_Block):
    """``{type: header, name: Authorization, prefix: "SSWS ", token: {env}}``: ``<name>: <prefix><token>``."""

    type: Literal["header"]
    name: str = Field(min_length=1, max_length=100, pattern=_TOKEN_CHARS.pattern)
    prefix: str = Field(default="", max_length=100, pattern=r"^[^\r\n]*$")
    token: secret("API_TOKEN")  # type: ignore[valid-type]


class BearerAuthConfig(_Block):
    """``{type: bearer, token: {env}}``: ``Authorization: Bearer <token>``."""

    type: Literal["bearer"]
    token: secret("API_TOKEN")  # type: ignore[valid-type]


class BasicAuthConfig(_Block):
    """``{type: basic, username, password: {env}}``: ``Authorization: Basic base64(username:password)``."""

    type: Literal["basic"]
    username: str = Field(min_length=1, max_length=200, pattern=r"^[^:\r\n]+$")
    password: secret("API_PASSWORD")  # type: ignore[valid-type]


class OAuthClientCredentialsConfig(_Block):
    """``{type: oauth_client_credentials, token_url, client_id, client_secret: {env}, scope}``: a Bearer
    access token from ``token_url`` (client-credentials grant, ``client_secret_post``; ``auth.py``)."""

    type: Literal["oauth_client_credentials"]
    token_url: BaseUrl
    client_id: str = Field(min_length=1, max_length=200, pattern=r"^\S+$")
    client_secret: secret("API_CLIENT_SECRET")  # type: ignore[valid-type]
    scope: str | list[str] | None = None


def _tagged(kind: str, allowed: tuple[str, ...], example: str) -> Any:
    """A check before a tagged block is parsed: a mapping whose ``type`` is one of ``allowed``, with an
    error that names the key and the choices (instead of pydantic's union wording)."""

    def check(value: Any) -> Any:
        if isinstance(value, BaseModel):  # already parsed (RestConfig.api)
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"must be a mapping with a `type`, e.g. {kind}: {example}")
        if "type" not in value:
            raise ValueError(f"{kind}.type is missing; one of {', '.join(allowed)}, e.g. {kind}: {example}")
        if value["type"] not in allowed:
            raise ValueError(f"{kind}.type {value['type']!r} is not one of {', '.join(allowed)}")
        return value

    return BeforeValidator(check)


AuthConfig = Annotated[
    HeaderAuthConfig | BearerAuthConfig | BasicAuthConfig | OAuthClientCredentialsConfig,
    Field(discriminator="type"),
    _tagged("auth", AUTH_TYPES, "{type: bearer, token: {env: API_TOKEN}}"),
]


class LinkHeaderPaginator(_Block):
    """``{type: link_header}``: the ``rel="next"`` target of the ``Link`` headers (Okta, GitHub)."""

    type: Literal["link_header"]


class CursorPaginator(_Block):
    """``{type: cursor, path, param}``: the body's value at ``path`` sent back as query parameter ``param``."""

    type: Literal["cursor"]
    path: str = Field(min_length=1, max_length=200, pattern=_PATH.pattern)
    param: str = Field(min_length=1, max_length=100, pattern=r"^\S+$")

    @model_validator(mode="before")
    @classmethod
    def _both(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            missing = [k for k in ("path", "param") if k not in value]
            if missing:
                raise ValueError(f"a cursor paginator needs {' and '.join(missing)}: where the next cursor is in "
                                 f"the body and which query parameter sends it back, e.g. paginator: {{type: "
                                 f"cursor, path: response_metadata.next_cursor, param: cursor}}")
        return value


class NextUrlPaginator(_Block):
    """``{type: next_url, path}``: the whole next URL at ``path`` of the body (Graph ``@odata.nextLink``)."""

    type: Literal["next_url"]
    path: str = Field(min_length=1, max_length=200, pattern=_PATH.pattern)

    @model_validator(mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and "path" not in value:
            raise ValueError('a next_url paginator needs path: where the next URL is in the body, e.g. '
                             'paginator: {type: next_url, path: "@odata.nextLink"}')
        return value


PaginatorConfig = Annotated[
    LinkHeaderPaginator | CursorPaginator | NextUrlPaginator,
    Field(discriminator="type"),
    _tagged("paginator", PAGINATOR_TYPES, "{type: link_header}"),
]


class WindowConfig(_Block):
    """``window:``: how the window's two ends are sent. See the module docstring for ``end_inclusive``."""

    start_param: str = Field(min_length=1, max_length=100, pattern=r"^\S+$")
    end_param: str = Field(min_length=1, max_length=100, pattern=r"^\S+$")
    format: TimeFormat = "iso8601"
    end_inclusive: StrictBool

    @model_validator(mode="before")
    @classmethod
    def _inclusive_said(cls, value: Any) -> Any:
        if isinstance(value, Mapping) and "end_inclusive" not in value:
            raise ValueError(
                "end_inclusive is required: true if the API may return events stamped exactly at end_param "
                "(both ends inclusive, or not documented: the safe choice), false if it returns [start, end) "
                "only. Either way the events at the end are read by the next window; with false, an event "
                "at the end is a page that does not match its description")
        return value

    @model_validator(mode="after")
    def _two_params(self) -> WindowConfig:
        if self.start_param == self.end_param:
            raise ValueError(f"start_param and end_param are both {self.start_param!r}; name the API's two "
                             f"parameters, e.g. since and until")
        return self


Scalar = Annotated[str | int, BeforeValidator(lambda v: _scalar(v))]


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):  # YAML's true/false: the API's spelling is unknown, so say it
        raise ValueError(f"{value!r} is a YAML boolean; quote the value the API expects, e.g. \"true\"")
    if not isinstance(value, str | int):
        raise ValueError(f"a query parameter is a string or an integer, not a {type(value).__name__}")
    return value


class RestApi(_Block):
    """The description of the API (everything of ``type: rest`` but the base URL and the credential)."""

    path: str = Field(pattern=r"^/\S*$", max_length=2000)
    params: dict[str, Scalar] = Field(default_factory=dict)
    window: WindowConfig
    records: str = Field(default="", max_length=200, pattern=r"^(|[^\s.]\S*)$")
    paginator: PaginatorConfig
    event_id: str | list[str] = Field(min_length=1)
    event_time: str = Field(min_length=1, max_length=200, pattern=_PATH.pattern)
    time_format: Literal["iso8601", "epoch_ms", "epoch_s"] = "iso8601"
    order: Literal["ascending", "descending"] = "ascending"
    rate_limit_reset_header: str | None = Field(default=None, max_length=100, pattern=_TOKEN_CHARS.pattern)

    @model_validator(mode="after")
    def _consistent(self) -> RestApi:
        paths = [self.event_id] if isinstance(self.event_id, str) else self.event_id
        for p in paths:
            if not isinstance(p, str) or not _PATH.match(p):
                raise ValueError(f"event_id: {p!r} is not a dotted path (e.g. uuid, or id.uniqueQualifier)")
        if len(set(paths)) != len(paths):
            raise ValueError(f"event_id names a path twice ({paths}); name each part once")
        if "?" in self.path or "#" in self.path:
            raise ValueError(f"path {self.path!r} holds a query; put its parameters in params")
        ours = {self.window.start_param: "window.start_param", self.window.end_param: "window.end_param"}
        if isinstance(self.paginator, CursorPaginator):
            if self.paginator.param in ours:
                raise ValueError(f"paginator.param {self.paginator.param!r} is also {ours[self.paginator.param]}")
            ours[self.paginator.param] = "paginator.param"
        for name in self.params:
            if name in ours:
                raise ValueError(f"params.{name} is set by the source itself ({ours[name]}); remove it from params")
        return self

    @property
    def id_paths(self) -> tuple[str, ...]:
        return (self.event_id,) if isinstance(self.event_id, str) else tuple(self.event_id)


class RestConfig(SourceBase, RestApi):
    """``type: rest``: a paginated, windowed JSON API described in the config (module docstring)."""

    type: Literal["rest"]
    base_url: BaseUrl
    auth: AuthConfig
    # settle_lag / lookback: SourceBase's defaults (15m, none). A described API's lag is whatever its
    # docs say, which this module cannot know: set both from them (docs/sources/rest.md).

    supports_rate_limit: ClassVar[bool] = True
    # A described API keeps what its own docs say, which this module cannot know.
    retention: ClassVar[dt.timedelta | dt.datetime | None] = None

    @property
    def stream(self) -> str:
        return f"{self.path} of {urlsplit(self.base_url).netloc}"

    def api(self) -> RestApi:
        return RestApi.model_validate({k: getattr(self, k) for k in RestApi.model_fields})


# ---- auths -----------------------------------------------------------------------------------------

class NamedHeaderAuth(HeaderAuth):
    """``<name>: <prefix><token>`` on every request (an Okta ``SSWS`` token, an ``X-Api-Key``...)."""

    def __init__(self, name: str, prefix: str, token: str) -> None:
        super().__init__(token)
        self.name, self.prefix = name, prefix

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self.name] = f"{self.prefix}{self._token}"
        yield request


class BasicAuth(HeaderAuth):
    """``Authorization: Basic base64(username:password)``; both the password and the header's value are
    secrets (an API that echoes the header echoes the base64, which decodes to the password)."""

    def __init__(self, username: str, password: str) -> None:
        super().__init__(password)
        self._encoded = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Basic {self._encoded}"
        yield request

    def secrets(self) -> tuple[str, ...]:
        return (self._token, self._encoded)


def open_auth(cfg: AuthConfig, secrets: Secrets) -> tuple[httpx.Auth, str]:
    """The ``httpx.Auth`` of an ``auth:`` block, and what a refusal tells the operator to check."""
    if isinstance(cfg, HeaderAuthConfig):
        return NamedHeaderAuth(cfg.name, cfg.prefix, secrets(cfg.token.env)), f"auth.token ({cfg.token.env})"
    if isinstance(cfg, BearerAuthConfig):
        return BearerAuth(secrets(cfg.token.env)), f"auth.token ({cfg.token.env})"
    if isinstance(cfg, BasicAuthConfig):
        return (BasicAuth(cfg.username, secrets(cfg.password.env)),
                f"auth.username {cfg.username} and auth.password ({cfg.password.env})")
    credential = f"auth.client_id {cfg.client_id} and auth.client_secret ({cfg.client_secret.env})"
    return (OAuthClientCredentials(cfg.token_url, cfg.client_id, secrets(cfg.client_secret.env), cfg.scope,
                                   credential=credential), credential)


# ---- times -----------------------------------------------------------------------------------------

def window_value(t: dt.datetime, fmt: str, *, up: bool) -> tuple[str, int]:
    """``t`` as the API's parameter in ``fmt``, rounded to the format's resolution (down for the start,
    ``up`` for the end, so nothing of the window is left out), and that value in epoch microseconds."""
    unit = UNIT_US[fmt]
    us = epoch_us(t)
    us = -(-us // unit) * unit if up else us // unit * unit
    if fmt == "epoch_s":
        return str(us // 1_000_000), us
    if fmt == "epoch_ms":
        return str(us // 1000), us
    when = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=us)
    text = when.isoformat(timespec="milliseconds" if fmt == "iso8601_ms" else "seconds")
    return text.replace("+00:00", "Z"), us


def event_time_us(value: Any, fmt: str) -> int:
    """An event's time in epoch microseconds; ValueError when it is not a time in ``fmt``."""
    if fmt == "iso8601":
        if type(value) is not str:
            raise ValueError(f"is a JSON {_kind(value)}, not an ISO 8601 string")
        return epoch_us(parse_time(value))
    if type(value) is str:  # some APIs quote their epoch numbers
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{value[:40]!r} is not a number of {fmt[6:]}") from None
    elif type(value) in (int, float):
        number = Decimal(value)
    else:
        raise ValueError(f"is a JSON {_kind(value)}, not a number of {fmt[6:]}")
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    us = int(number * (1_000_000 if fmt == "epoch_s" else 1000))
    if not 0 <= us < 253402300800 * 10**6:  # 1970 to year 9999: a datetime can hold it
        raise ValueError(f"{value!r} is not a time between 1970 and 9999")
    return us


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def _id_part(value: Any) -> str | None:
    if type(value) is str:
        return value or None
    if type(value) is int:
        return str(value)
    if type(value) is float and math.isfinite(value):
        return repr(value)
    return None


# ---- the source ------------------------------------------------------------------------------------

def rest_wait(header: str | None) -> RateLimitWait | None:
    """A 429 waits until the epoch second in ``header``; anything else (5xx, a 429 without it) as
    ``Retry-After`` or backoff. None without a header: the shared client's default (Retry-After)."""
    if header is None:
        return None
    reset, other = reset_epoch(header), retry_after()

    def wait(status: int, headers: httpx.Headers, now: float) -> float | None:
        if status == 429:
            seconds = reset(status, headers, now)
            if seconds is not None:
                return seconds
        return other(status, headers, now)

    return wait


class RestSource:
    """One described API (``RestApi``) read over the shared client; see the module docstring."""

    def __init__(self, api: RestApi, *, base_url: str, auth: httpx.Auth | None, timeout: float = 30.0,
                 http_attempts: int = 6, backoff_initial: float = 0.5, backoff_max: float = 60.0,
                 max_page_bytes: int = DEFAULT_MAX_BYTES, credential: str = "the API credential",
                 ca_file: str | None = None, tls_verify: bool = True,
                 client_cert: tuple[str, str] | None = None, proxy: str | None = None,
                 rate: RateGate | None = None) -> None:
        self.api = api
        self.ordering: Literal["newest_first", "oldest_first"] = (
            "oldest_first" if api.order == "ascending" else "newest_first")
        # The window parameters take any time in the format's resolution (a second or finer): a busy window
        # is read as sub-ranges (subranges.py) with edges on whole seconds.
        self.range_step: dt.timedelta | None = dt.timedelta(seconds=1)
        self.journal_headers: tuple[str, ...] = ("link",) if isinstance(api.paginator, LinkHeaderPaginator) else ()
        self._where = f"{urlsplit(base_url).netloc}{api.path}"
        self._auth = auth
        self._http = RetryingClient(
            base_url, {"Accept": "application/json"}, auth=auth, timeout=timeout, attempts=http_attempts,
            backoff_initial=backoff_initial, backoff_max=backoff_max, max_bytes=max_page_bytes,
            credential=credential, ca_file=ca_file, tls_verify=tls_verify, client_cert=client_cert, proxy=proxy,
            rate_limit_wait=rest_wait(api.rate_limit_reset_header), rate=rate,
        )

    def close(self) -> None:
        self._http.close()

    def secrets(self) -> tuple[str, ...]:
        held = getattr(self._auth, "secrets", None)
        return tuple(held()) if held is not None else ()

    # -- requests ---------------------------------------------------------------------------------------

    def _first_query(self, window: Window) -> tuple[dict[str, str | int], int, int]:
        w = self.api.window
        start, lo = window_value(window.start, w.format, up=False)
        end, hi = window_value(window.end, w.format, up=True)
        return {**self.api.params, w.start_param: start, w.end_param: end}, lo, hi

    def fetch_page(self, window: Window, cursor: str | None, deadline: float | None = None) -> Page:
        query, lo, hi = self._first_query(window)
        paginator = self.api.paginator
        path: str = self.api.path
        if cursor is not None:
            if isinstance(paginator, CursorPaginator):
                query = {**query, paginator.param: cursor}
            elif cursor.startswith(("https://", "http://", "/")):
                path, query = cursor, {}  # the API's own next URL, byte for byte
            else:
                raise TokenRejected("the stored cursor is not a next URL; the pass starts again")
        try:
            res = self._http.get(path, query, deadline=deadline)
        except (RetryableStatus, httpx.TransportError) as e:
            raise SourceUnavailable(f"{self._where}: still failing after {self._http.last_attempts} attempts "
                                    f"(last: {describe(e)})") from None
        except TokenRefused:
            raise  # the token endpoint's refusal already names it and the keys to check
        except CredentialsRefused as e:
            said = _error_message(e.api_message)
            raise CredentialsRefused(f"{e}; the API said: {said}" if said else str(e), status=e.status) from None
        if cursor is not None and res.status in CURSOR_REJECTED:
            raise TokenRejected(f"{self._where} rejected the next page's cursor (HTTP {res.status}): "
                                f"{_error_message(res.content)}")
        if res.status != 200:
            raise SourceRequestError(f"{self._where} answered HTTP {res.status}: {_error_message(res.content)}")
        headers = {name: ", ".join(res.headers.get_list(name)) for name in self.journal_headers
                   if name in res.headers}
        try:
            items, nxt = self.parse_page(res.content, headers)
            self._inside(items, lo, hi)
        except BadPage as e:
            # A Link header still names the next page: an operator who skips this page reads on.
            link = next_link_or_none(headers.get("link", "")) if "link" in self.journal_headers else None
            raise BadPage(str(e), res.content, link) from None
        if cursor is not None and nxt == cursor and not items:
            raise BadPage("the API returned the cursor it was sent, with no items; stopping instead of looping")
        return Page(items, nxt, res.content, res.retries, res.reasons, headers, server_time=res.server_time)

    def _inside(self, items: list[dict[str, Any]], lo: int, hi: int) -> None:
        """BadPage unless every item's time lies in what was asked, at the window format's resolution."""
        w, unit = self.api.window, UNIT_US[self.api.window.format]
        for i, item in enumerate(items):
            t = event_time_us(at_path(item, self.api.event_time), self.api.time_format) // unit * unit
            if t < lo or t > hi or (t == hi and not w.end_inclusive):
                at_end = t == hi
                said = (f"stamped exactly at {w.end_param} while window.end_inclusive is false; if the API "
                        f"includes its end, set end_inclusive: true" if at_end else
                        f"outside the window asked for; check window.start_param ({w.start_param}), "
                        f"window.end_param ({w.end_param}) and window.format ({w.format}): an API that does not "
                        f"know a parameter may ignore it")
                raise BadPage(f"item {i} ({self.api.event_time}) is {said}")

    # -- answers ----------------------------------------------------------------------------------------

    def parse_page(self, body: bytes, headers: Mapping[str, str] | None = None
                   ) -> tuple[list[dict[str, Any]], str | None]:
        api = self.api
        try:
            doc = json_codec.loads(body)
        except json_codec.JSONError as e:
            raise BadPage(f"response is not JSON: {e}") from None
        if api.records == "":
            items = doc
            if not isinstance(items, list):
                raise BadPage(f"response is a JSON {_kind(doc)}, not a list of events (records: \"\")")
        else:
            items = at_path(doc, api.records)
            if not isinstance(items, list):
                what = "missing" if items is None else f"a JSON {_kind(items)}"
                raise BadPage(f"records {api.records!r} is {what}, not a list of events")
        for i, item in enumerate(items):  # on the request path: what ``to_events`` relies on
            if type(item) is not dict:
                raise BadPage(f"item {i} is not an object")
            for p in api.id_paths:
                if _id_part(at_path(item, p)) is None:
                    raise BadPage(f"item {i} has no event_id {p!r} (a non-empty string or a number)")
            value = at_path(item, api.event_time)
            if value is None:
                raise BadPage(f"item {i} has no event_time {api.event_time!r}")
            try:
                event_time_us(value, api.time_format)
            except ValueError as e:
                raise BadPage(f"item {i} has a bad event_time {api.event_time!r} ({api.time_format}): {e}") from None
        return items, self._next(doc, items, headers or {})

    def _next(self, doc: Any, items: list[Any], headers: Mapping[str, str]) -> str | None:
        paginator = self.api.paginator
        if isinstance(paginator, LinkHeaderPaginator):
            # An empty page ends the walk even with a next link: an API may link past the last page (Okta).
            return next_link(headers.get("link", "")) if items else None
        if isinstance(paginator, CursorPaginator):
            return body_cursor(doc, paginator.path)
        return body_next_url(doc, paginator.path)

    def to_events(self, items: list[dict[str, Any]]) -> list[Event]:
        api, out = self.api, []
        iso = api.time_format == "iso8601"
        for item in items:
            ident = "/".join(_id_part(at_path(item, p)) or "" for p in api.id_paths)
            raw_time = at_path(item, api.event_time)
            if iso:
                when = parse_time(raw_time)
                canonical = len(raw_time) == 24 and raw_time[19] == "." and raw_time[23] == "Z"
                text = raw_time if canonical else ""
            else:
                when = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(
                    microseconds=event_time_us(raw_time, api.time_format))
                text = ""
            out.append(Event(ident, when, item, (), text))
        return out


def _error_message(body: bytes) -> str:
    """The API's error text, when its body says one in a common field; else the start of the body (the
    caller redacts it)."""
    try:
        doc = json_codec.loads(body)
    except json_codec.JSONError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(doc, dict):
        for key in ("errorSummary", "error_description", "message", "error", "detail", "title"):
            value = doc.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("code")
            if isinstance(value, str) and value:
                return value[:300]
    return body[:200].decode("utf-8", "replace")


def open_source(cfg: RestConfig, secrets: Secrets, *, rate: RateGate | None = None) -> RestSource:
    auth, credential = open_auth(cfg.auth, secrets)
    return RestSource(
        cfg.api(), base_url=cfg.base_url, auth=auth, credential=credential, rate=rate, **cfg.client_options(),
    )


PLUGINS = [Plugin("source", "rest", RestConfig, open_source)]

__all__ = ["AuthConfig", "BasicAuth", "NamedHeaderAuth", "RestApi", "RestConfig", "RestSource", "event_time_us",
           "open_auth", "rest_wait", "window_value"]
