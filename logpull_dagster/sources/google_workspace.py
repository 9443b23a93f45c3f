"""Google Workspace Admin SDK Reports API, ``activities.list``: one stream per application.

A source names one application (``application: login``: the stream is the source) or several
(``applications: [login, admin, drive]``: one stream each, named ``<name>_<application>``, with its own
checkpoints, schedule, health and Google's documented lag as its ``settle_lag``/``lookback``; see
``APPLICATION_LAG`` and ``GoogleWorkspaceConfig.streams``). Credentials: a service account with
domain-wide delegation (``service_account:``, by key file or keyless; ``google_auth.py``) or a static
``access_token``.

What the API does that matters here (Google's docs and field reports):

* ``GET {base_url}/admin/reports/v1/activity/users/all/applications/{application}`` with
  ``startTime``/``endTime`` (RFC 3339), ``maxResults`` (1..1000) and ``pageToken``; the other
  parameters must be repeated unchanged with a token.
* Results come **newest first**. Both ends of the range are inclusive, so an event stamped exactly on
  a boundary comes back for two windows; the pull loop keeps it in ``[start, end)`` only.
* Several events can share a millisecond: the event id is
  (``id.applicationName``, ``id.customerId``, ``id.time``, ``id.uniqueQualifier``).
* An empty result has no ``items`` key at all; the last page has no ``nextPageToken``.
* Throttling is 429 or 503, with or without Retry-After (retried by the shared client). The quota is
  per Cloud project, counted per minute: ``rate_limit`` (one budget per ``rate_account``, see
  ``rate.py``) keeps every run of every source on that project under it instead of meeting it as 429s.
* Tokens are opaque and tied to their query; a rejected one is a 400. Known bug: the API can return
  the token it was sent with no items; that page fails as bad here instead of looping (a token that
  repeats *with* items, or any cycle of tokens, is caught by the pull loop for every source).
* Strings in events are user-controlled (names, emails, document titles): a page may carry a lone
  surrogate escape or a huge integer; ``json_codec`` reads both exactly.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

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
from logpull_dagster.sources.auth import BearerAuth, OAuthToken
from logpull_dagster.sources.google_auth import keyless_auth, service_account_auth
from logpull_dagster.sources.http import DEFAULT_MAX_BYTES, RetryableStatus, RetryingClient, describe
from logpull_dagster.windows import Window, parse_time, rfc3339


def event_id(ident: Mapping[str, Any]) -> str:
    """``applicationName/customerId/time/uniqueQualifier`` of an item's ``id`` object (validated by
    ``parse_page``: time and uniqueQualifier present)."""
    app, customer = ident.get("applicationName") or "", ident.get("customerId") or ""
    return f"{app}/{customer}/{ident['time']}/{ident['uniqueQualifier']}"


class GoogleWorkspaceSource:
    ordering: Literal["newest_first", "oldest_first"] = "newest_first"
    #: Any [start, end) of whole seconds reads like a window: a busy window is read as sub-ranges (subranges.py).
    range_step: dt.timedelta | None = dt.timedelta(seconds=1)
    journal_headers: tuple[str, ...] = ()  # the next token is in the body

    def __init__(self, *, base_url: str, application: str, access_token: str | None = None,
                 auth: BearerAuth | OAuthToken | None = None, customer_id: str | None = None,
                 page_size: int = 1000, timeout: float = 30.0, http_attempts: int = 6, backoff_initial: float = 0.5,
                 backoff_max: float = 60.0, max_page_bytes: int = DEFAULT_MAX_BYTES,
                 credential: str = "the access token", ca_file: str | None = None, tls_verify: bool = True,
                 client_cert: tuple[str, str] | None = None, proxy: str | None = None,
                 rate: RateGate | None = None) -> None:
        """``access_token`` (a static token) or ``auth`` (e.g. ``google_auth.ServiceAccountAuth``, which may
        be shared with the other streams of its account)."""
        if (access_token is None) == (auth is None):
            raise TypeError("give exactly one of access_token and auth")
        self.application, self.page_size, self.customer_id = application, page_size, customer_id
        self.path = f"/admin/reports/v1/activity/users/all/applications/{quote(application, safe='')}"
        self._auth: BearerAuth | OAuthToken = auth if auth is not None else BearerAuth(access_token or "")
        self._http = RetryingClient(
            base_url, {"Accept": "application/json"}, auth=self._auth,
            timeout=timeout, attempts=http_attempts, backoff_initial=backoff_initial, backoff_max=backoff_max,
            max_bytes=max_page_bytes, credential=credential, ca_file=ca_file, tls_verify=tls_verify,
            client_cert=client_cert, proxy=proxy, rate=rate,
        )

    def close(self) -> None:
        self._http.close()

    def secrets(self) -> tuple[str, ...]:
        return self._auth.secrets()

    def fetch_page(self, window: Window, cursor: str | None, deadline: float | None = None) -> Page:
        params: dict[str, str | int] = {
            "startTime": rfc3339(window.start), "endTime": rfc3339(window.end), "maxResults": self.page_size,
        }
        if self.customer_id is not None:
            params["customerId"] = self.customer_id
        if cursor is not None:
            params["pageToken"] = cursor
        try:
            res = self._http.get(self.path, params, deadline=deadline)
        except (RetryableStatus, httpx.TransportError) as e:
            # The token request runs inside the API request's attempt: say which of them kept failing.
            where = self._auth.endpoint_of(e) if isinstance(self._auth, OAuthToken) else None
            what = f"{where} (a token for the Reports API {self.application})" if where else \
                f"Reports API {self.application}"
            raise SourceUnavailable(
                f"{what}: still failing after {self._http.last_attempts} attempts (last: {describe(e)})"
            ) from None
        except CredentialsRefused as e:
            raise CredentialsRefused(f"{e}; the Reports API said: {_error_message(e.api_message)}",
                                     status=e.status) from None
        if res.status == 400 and cursor is not None:
            raise TokenRejected(f"Reports API rejected the page token: {_error_message(res.content)}")
        if res.status != 200:
            raise SourceRequestError(f"Reports API answered HTTP {res.status}: {_error_message(res.content)}")
        try:
            items, token = self.parse_page(res.content)
        except BadPage as e:
            raise BadPage(str(e), res.content) from None
        if cursor is not None and token == cursor and not items:
            raise BadPage("the API returned the page token it was sent, with no items "
                          "(a known Reports API bug); stopping instead of looping")
        return Page(items, token, res.content, res.retries, res.reasons, server_time=res.server_time)

    def parse_page(self, body: bytes, headers: Mapping[str, str] | None = None
                   ) -> tuple[list[dict[str, Any]], str | None]:
        try:
            doc = json_codec.loads(body)
        except json_codec.JSONError as e:
            raise BadPage(f"response is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise BadPage(f"response is a JSON {type(doc).__name__}, not an object")
        items = doc.get("items", [])
        if not isinstance(items, list):
            raise BadPage(f"'items' is a {type(items).__name__}, not a list")
        token = doc.get("nextPageToken")
        if token is not None and (not isinstance(token, str) or not token):
            raise BadPage(f"'nextPageToken' is {token!r}, not a non-empty string")
        for i, item in enumerate(items):  # on the request path: only what ``to_events`` relies on, fast
            ident = item.get("id") if type(item) is dict else None
            if type(ident) is not dict:
                raise BadPage(f"item {i} has no 'id' object" if type(item) is dict else f"item {i} is not an object")
            time, qualifier = ident.get("time"), ident.get("uniqueQualifier")
            if type(time) is not str or not time or qualifier is None or qualifier == "":
                raise BadPage(f"item {i} has no id.time or id.uniqueQualifier")
            try:
                parse_time(time)
            except ValueError as e:
                raise BadPage(f"item {i} has a bad id.time: {e}") from None
        return items, token

    def to_events(self, items: list[dict[str, Any]]) -> list[Event]:
        out = []
        for item in items:
            ident = item["id"]
            time = ident["time"]
            events = item.get("events")  # validation checks the id only: any shape here must not fail
            names = tuple([str(ev.get("name")) for ev in events if type(ev) is dict]) if type(events) is list else ()
            canonical = len(time) == 24 and time[10] == "T" and time[19] == "." and time[23] == "Z"
            out.append(Event(event_id(ident), parse_time(time), item, names, time if canonical else ""))
        return out


def _error_message(body: bytes) -> str:
    """Google's error message, or the start of the body (which the caller redacts: it may echo a header)."""
    try:
        return str(json_codec.loads(body)["error"]["message"])[:300]
    except (json_codec.JSONError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")


# ---- the config ------------------------------------------------------------------------------------

_DOC = "Google, \"Data retention and lag times\" (support.google.com/a/answer/7061566)"
_SAML_DOC = ("Google, \"SAML log events\" (support.google.com/a/answer/7007375): \"Entries usually appear within "
             "an hour\"")
_UNREAD = ("not in the rows of Google's table we could read (support.google.com/a/answer/7061566); a conservative "
           "default: field reports put Google's lag at minutes to hours, rarely days")


@dataclass(frozen=True)
class AppLag:
    """An application's documented lag, and the ``settle_lag``/``lookback`` its stream gets by default."""

    documented: str
    settle_lag: dt.timedelta
    lookback: dt.timedelta
    source: str


_M, _H = dt.timedelta(minutes=1), dt.timedelta(hours=1)
# Near real time: pulled 10 min after the window ends, re-read for 2 h for what Google's table calls "a
# small chance ... delayed beyond the specified times". Longer lags: settle about the documented time,
# re-read for a few times it.
_NEAR = AppLag("near real time (couple of minutes)", 10 * _M, 2 * _H, _DOC)
_DEFAULT_LAG = AppLag("unknown", 1 * _H, 12 * _H, _UNREAD)
APPLICATION_LAG: dict[str, AppLag] = {
    **{app: _NEAR for app in ("access_evaluation", "access_transparency", "admin", "admin_data_action",
                              "assignments", "chat", "chrome", "classroom", "context_aware_access",
                              "data_migration", "mobile")},
    "calendar": AppLag("tens of minutes (can also go up to a couple of hours)", 1 * _H, 4 * _H, _DOC),
    "cloud_search": AppLag("up to a few hours", 4 * _H, 12 * _H, _DOC),
    "saml": AppLag("usually within an hour", 1 * _H, 6 * _H, _SAML_DOC),
}
"""Google's documented lag per Reports API application (``applicationName``), as read from its "Data
retention and lag times" page. Applications not listed here (login, drive, token, groups, gmail, ...)
get ``_DEFAULT_LAG``: their rows were not in the copy of the table we could read, so the README tells
operators to check the live page and set ``overrides``."""


def application_lag(application: str) -> AppLag:
    """The lag defaults of ``application`` (``_DEFAULT_LAG`` for one Google's table does not list)."""
    return APPLICATION_LAG.get(application, _DEFAULT_LAG)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, ser_json_timedelta="float")


class StreamOverrides(_Model):
    """``overrides: {<application>: {...}}``: what one application's stream sets differently."""

    settle_lag: Duration | None = None
    lookback: Duration | None = None
    lookback_every: Duration | None = None
    max_delay: Duration | None = None

    @field_validator("lookback_every", "max_delay")
    @classmethod
    def _positive(cls, value: dt.timedelta | None) -> dt.timedelta | None:
        if value is not None and value <= dt.timedelta(0):
            raise ValueError("must be longer than 0s")
        return value


def _email(value: Any) -> Any:
    if not isinstance(value, str) or not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
        raise ValueError("must be an email address, e.g. admin@example.com")
    return value


Email = Annotated[str, BeforeValidator(_email)]


class ServiceAccountConfig(_Model):
    """``service_account:``: a Google service account with domain-wide delegation, acting for ``subject``.

    Either ``file``: the environment variable naming the path of its JSON key (read when an attempt opens
    the source); or ``email`` (keyless: no key file anywhere; Google signs each assertion through the IAM
    Credentials API ``signJwt``, which the run's application default credentials are allowed to call).
    ``token_uri``: where tokens are asked for (default: the key file's own, https://oauth2.googleapis.com/token);
    ``iam_endpoint``: where signJwt is called (default https://iamcredentials.googleapis.com). Both are
    overridable for an emulator."""

    file: secret("GWS_SA_FILE") | None = None  # type: ignore[valid-type]
    email: Email | None = None
    subject: Email
    token_uri: BaseUrl | None = None
    iam_endpoint: BaseUrl | None = None

    @model_validator(mode="after")
    def _one_way(self) -> ServiceAccountConfig:
        if (self.file is None) == (self.email is None):
            raise ValueError("give the service account one way: file: {env: GWS_SA_FILE} (the environment variable "
                             "naming the path of its JSON key), or email: sa@project.iam.gserviceaccount.com "
                             "(keyless: signed through IAM signJwt with application default credentials)")
        if self.file is not None and self.iam_endpoint is not None:
            raise ValueError("iam_endpoint: only used with email: (keyless signing); a key file signs locally, "
                             "so remove iam_endpoint")
        return self


class GoogleWorkspaceConfig(SourceBase):
    """``type: google_workspace``: audit events of one application (``application``) or of several
    (``applications``, one stream each, see :meth:`streams`)."""

    type: Literal["google_workspace"]
    application: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    applications: list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]] | None = Field(default=None, min_length=1)
    overrides: dict[str, StreamOverrides] = Field(default_factory=dict)
    # The discovery document's pattern for customerId: an account id (C...) or my_customer.
    customer_id: str | None = Field(default=None, pattern=r"^(C[A-Za-z0-9]{1,63}|my_customer)$")
    base_url: BaseUrl = "https://admin.googleapis.com"
    access_token: secret("GWS_ACCESS_TOKEN") | None = None  # type: ignore[valid-type]
    service_account: ServiceAccountConfig | None = None
    page_size: int = Field(default=1000, ge=1, le=1000)

    supports_rate_limit: ClassVar[bool] = True
    # Activity reports: 180 days, most applications [Google, "Data retention and lag times"; Admin SDK
    # activities.list endTime: "the last 180 days"] (apis-and-emulators.md, Google Workspace, Retention).
    retention: ClassVar[dt.timedelta | dt.datetime | None] = dt.timedelta(days=180)

    @model_validator(mode="after")
    def _one_of_each(self) -> GoogleWorkspaceConfig:
        if (self.application is None) == (self.applications is None):
            raise ValueError("name the application to read, application: login, or several, "
                             "applications: [login, admin, drive] (one of the two)")
        if (self.access_token is None) == (self.service_account is None):
            raise ValueError("give exactly one credential: service_account: {file: {env: GWS_SA_FILE}, subject: "
                             "admin@example.com} (domain-wide delegation), or access_token: {env: GWS_ACCESS_TOKEN}")
        if self.applications is not None:
            twice = sorted({a for a in self.applications if self.applications.count(a) > 1})
            if twice:
                raise ValueError(f"applications: {', '.join(twice)} listed twice; list each application once")
            if len(self.name) + 1 + max(map(len, self.applications)) > 63:
                raise ValueError(f"the stream names {self.name}_<application> would be longer than 63 characters; "
                                 f"shorten name")
        listed = self.applications or []
        for app in self.overrides:
            if app not in listed:
                where = f"applications: [{', '.join(listed)}]" if listed else "application: (one application)"
                raise ValueError(f"overrides.{app}: {app!r} is not one of {where}; overrides apply to "
                                 f"the streams of applications:, so add {app} there or remove overrides.{app}")
        return self

    @property
    def stream(self) -> str:
        return f"Google Workspace `{self.application}` audit events"

    def streams(self) -> list[GoogleWorkspaceConfig]:
        """The source as plain one-application streams: itself for ``application:``; one per entry of
        ``applications:``, named ``<name>_<application>``, each with the settle lag and lookback of its
        application (Google's documented lag, ``APPLICATION_LAG``) unless the source sets them, then its
        ``overrides``. The streams share the source's pool (its Dagster pool and rate budget: one API
        account), and its group."""
        if self.applications is None:
            return [self]
        explicit = self.model_fields_set
        out = []
        for app in self.applications:
            lag = application_lag(app)
            update: dict[str, Any] = {
                "name": f"{self.name}_{app}", "application": app, "applications": None, "overrides": {},
                "settle_lag": self.settle_lag if "settle_lag" in explicit else lag.settle_lag,
                "lookback": self.lookback if "lookback" in explicit else lag.lookback,
                "pool": self.effective_pool,
            }
            own = self.overrides.get(app)
            if own is not None:
                update.update({k: v for k, v in own.model_dump().items() if v is not None})
            stream = self.model_copy(update=update)
            stream._group = self.group
            out.append(stream)
        return out


def open_source(cfg: GoogleWorkspaceConfig, secrets: Secrets, *, rate: RateGate | None = None) -> GoogleWorkspaceSource:
    if cfg.application is None:
        raise TypeError(f"source {cfg.name!r} names several applications; open its streams() instead")
    auth: OAuthToken | None = None
    token: str | None = None
    sa = cfg.service_account
    if sa is not None and sa.email is not None:
        auth = keyless_auth(sa.email, sa.subject, timeout=cfg.http_timeout.total_seconds(), token_uri=sa.token_uri,
                            iam_endpoint=sa.iam_endpoint)
        credential = auth.credential
    elif sa is not None:
        assert sa.file is not None  # the model refuses a service account without one
        auth = service_account_auth(secrets(sa.file.env), sa.subject, env=sa.file.env, token_uri=sa.token_uri)
        credential = auth.credential
    else:
        assert cfg.access_token is not None
        token, credential = secrets(cfg.access_token.env), cfg.access_token.env
    return GoogleWorkspaceSource(
        base_url=cfg.base_url, application=cfg.application, access_token=token, auth=auth,
        customer_id=cfg.customer_id, page_size=cfg.page_size, credential=credential, rate=rate,
        **cfg.client_options(),
    )


PLUGINS = [Plugin("source", "google_workspace", GoogleWorkspaceConfig, open_source)]
