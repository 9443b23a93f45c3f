"""Microsoft Graph audit logs of one Entra ID tenant: directory audits, sign-ins or provisioning.

What Graph promises, and where it says so (``../shared/reference/apis-and-emulators.md`` A5, which reads
microsoftgraph/microsoft-graph-docs-contrib ``api-reference/v1.0/api/directoryaudit-list.md``,
``signin-list.md``, ``provisioningobjectsummary-list.md``, ``resources/directoryaudit.md``,
``resources/signin.md``, ``concepts/throttling.md``, ``concepts/throttling-limits.md``, and
learn.microsoft.com "Microsoft identity platform and the OAuth 2.0 client credentials flow"):

* Endpoints (``stream:``): ``GET {base_url}/v1.0/auditLogs/directoryAudits`` (time ``activityDateTime``),
  ``/v1.0/auditLogs/signIns`` (``createdDateTime``), ``/v1.0/auditLogs/provisioning``
  (``activityDateTime``). Application permission ``AuditLog.Read.All`` (admin-consented; older pages add
  ``Directory.Read.All``); sign-in logs also need an Entra ID P1 or P2 licence [doc].
* Token: the client-credentials grant, ``POST {login_url}/{tenant_id}/oauth2/v2.0/token`` with
  ``scope=https://graph.microsoft.com/.default`` ("Client credential flows must have a scope value with
  /.default suffixed to the resource identifier"; the resource is ``base_url``'s origin, so a national
  cloud's ``base_url`` gives its own scope), the client authenticated by its secret (``client_secret``)
  or by a certificate (``client_certificate``: a signed ``client_assertion`` with the certificate's
  ``x5t``, ``auth.OAuthCertificateJwt``). "Refresh tokens will never be granted with this flow": the
  access token (``expires_in`` 3599) is fetched again before it expires and once more when Graph answers
  401 ``InvalidAuthenticationToken`` ("Lifetime validation failed, the token is expired"), by
  ``auth.OAuthClientCredentials``. Token errors carry ``AADSTSnnnn`` codes: 7000215 (invalid secret),
  7000222 (expired secret), 700016 (unknown application), 90002/900023 (unknown or invalid tenant),
  700027/700024 (assertion signature or time) [src: widely reported]; each is mapped to the config key
  to fix (``refused_key``).
* Window ``[A, B)``: ``$filter=<time> ge A and <time> lt B``, DateTime literals *unquoted* (a quoted one is
  an ``Edm.String``), percent-encoded (spaces ``%20``). The docs list ``eq``, ``ge``, ``le`` for the time
  fields and not ``lt``, but Microsoft's own B2C audit-log page and reporting PowerShell samples filter
  with ``gt``, and ``ge A and lt B`` is what clients send [doc; src]. We send ``lt`` because it says what
  we mean; the pull loop also keeps ``[start, end)`` only, so were ``lt`` ever read as ``le``, an event at
  exactly ``B`` would still go to the next window alone.
* Times carry up to **7 fractional digits** (100 ns ticks: ``2024-12-27T10:01:19.5796748Z``), or none
  (``2014-01-01T00:00:00Z``) [doc examples]. ``datetime.fromisoformat`` reads them truncated to the
  microsecond, never rounded: ``B - 100 ns`` stays below ``B`` (windows start on whole seconds), so no
  event moves to the next window. The item is kept byte for byte as served.
* ``$top``: signIns "the maximum and default page size is 1,000 objects"; directoryAudits at most 1000
  [doc; src #6892]: ``page_size`` 1..1000, default 1000. **Pages shorter than ``$top`` arrive
  mid-stream** (941 of 1000 on the 8th nextLink) [src: docs-contrib#2371]: only a missing nextLink ends
  the pass.
* Order: signIns are "listed in descending order based on createdDateTime" ("the most recent sign-ins
  are returned first") [doc]; directoryAudits' order is not stated (newest first in practice). No
  ``$orderby`` is sent (not every stream documents it with ``$filter``), so ``ordering`` is
  ``newest_first``; the pull loop relies on ids, not order.
* Pagination: ``@odata.nextLink``, an absolute URL with ``$skiptoken``, followed verbatim ("do not extract
  the skiptoken", docs-contrib#5974); its path may differ in case from ours (``.../auditLogs/signins``)
  [doc], so only its origin is checked (``RetryingClient``: scheme, host and port of ``base_url``). The
  nextLink is the cursor: a killed window resumes there.
* A rejected skiptoken: 400 "Invalid Skip Token" has been reported transiently on auditLogs
  (msgraph-sdk-powershell#1388) although a Microsoft PM says skiptokens do not expire
  (msgraph-sdk-javascript#1463). Any 400 to a nextLink is :class:`TokenRejected` at once: the pull loop
  restarts the window from its ``$filter`` (at most ``pull.MAX_TOKEN_RESTARTS`` times) and dedupe by
  ``id`` keeps it exact. Retrying the same link first would mostly meet the same 400 again, and a
  restart costs only a re-read of the window's earlier pages, never correctness.
* Throttling: identity and access reports allow **5 requests per 10 seconds per app per tenant** (122
  per 10 s per app across tenants) [doc: throttling-limits]: the default ``rate_limit`` is ``25/min``,
  one request every 2.4 s, so that no 10 s span ever holds more than 5 requests (``rate.py``: a span of
  ``d`` seconds holds at most ``d / interval + 1``; ``30/min`` would allow 6). Streams of one app in one
  tenant share that budget by default (``effective_rate_account``: ``msgraph:<tenant>:<client>``).
  Over it: 429 ``TooManyRequests`` with ``Retry-After`` in seconds, **possibly fractional** (the doc's
  sample reads ``Retry-After: 2.128``; ``http.parse_retry_after`` reads it as a number); 503/504 too.
  Without ``Retry-After``: exponential backoff [doc].
* Lag: the archived official "reporting latencies" page gave audit logs **2 min at p95, 5 min at p99**
  (docs.microsoft.com/.../reference-reports-latencies); the current "Log latency in Microsoft Entra ID"
  page gives no numbers; third-party measurements see 5-15 min for directory audits (flanksource).
  Defaults: ``settle_lag: 5m`` (the official p99) and ``lookback: 2h`` (re-read for two hours: eight
  times the 15 min third-party tail, at one extra pass an hour out of a 5-per-10-s budget).
* Event id ``id`` (a string; several events can share one timestamp, so time is never an id).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import httpx
from pydantic import ConfigDict, Field, field_validator, model_validator

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
from logpull_dagster.sources.auth import OAuthCertificateJwt, OAuthClientCredentials, TokenRefused
from logpull_dagster.sources.http import DEFAULT_MAX_BYTES, RetryableStatus, RetryingClient, describe
from logpull_dagster.sources.paging import body_next_url
from logpull_dagster.windows import UTC, Window, parse_time

#: stream -> (path, time field)
STREAMS: Mapping[str, tuple[str, str]] = {
    "directory_audits": ("/v1.0/auditLogs/directoryAudits", "activityDateTime"),
    "sign_ins": ("/v1.0/auditLogs/signIns", "createdDateTime"),
    "provisioning": ("/v1.0/auditLogs/provisioning", "activityDateTime"),
}
NEXT_LINK = "@odata.nextLink"
DEFAULT_BASE_URL = "https://graph.microsoft.com"
DEFAULT_LOGIN_URL = "https://login.microsoftonline.com"
MAX_PAGE_SIZE = 1000
PERMISSION_HINT = ("the app registration needs the Microsoft Graph application permission AuditLog.Read.All, "
                   "granted admin consent")
SIGN_IN_HINT = "; sign-in logs also need an Entra ID P1 or P2 licence on the tenant"


# ---- pure logic -------------------------------------------------------------------------------------

def literal(t: dt.datetime) -> str:
    """An OData DateTimeOffset literal, unquoted: ``2026-11-26T10:00:00Z``, with 7 fractional digits
    (100 ns ticks, Graph's own precision) when the time is not a whole second."""
    t = t.astimezone(UTC)
    if t.microsecond:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}0Z"
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def window_filter(field: str, window: Window) -> str:
    """``<field> ge A and <field> lt B``: the half-open window, as Graph's ``$filter``."""
    return f"{field} ge {literal(window.start)} and {field} lt {literal(window.end)}"


def first_page_path(path: str, field: str, window: Window, page_size: int) -> str:
    """The first page's path and query, percent-encoded here (spaces as ``%20``, ``+`` as ``%2B``, ``$``
    kept): httpx sends a query it is given inside the URL byte for byte."""
    return f"{path}?$filter={quote(window_filter(field, window), safe='')}&$top={page_size}"


def looks_like_next_link(cursor: str, path: str) -> bool:
    """Whether a stored cursor can be a nextLink of ``path``'s listing: an http(s) URL or a path whose
    path is ours up to case (Graph changes it: ``.../auditLogs/signins``)."""
    parts = urlsplit(cursor)
    return (parts.path.lower().endswith(path.lower())
            and (parts.scheme in ("http", "https") or (not parts.netloc and cursor.startswith("/"))))


_NEXT_LINK_TEXT = re.compile(rb'"@odata\.nextLink"\s*:\s*("(?:[^"\\\x00-\x1f]|\\.)*")')
_AADSTS = re.compile(r"AADSTS(\d+)")


def refused_key(said: str, *, secret: str, tenant: str, client: str, base_url: str) -> str:
    """The config key to fix for a token endpoint's refusal, from its ``AADSTSnnnn`` code."""
    m = _AADSTS.search(said)
    code = m.group(1) if m else ""
    if code in ("7000215", "7000222", "700027", "700024", "7000274", "700023", "50012"):
        return secret
    if code in ("700016", "7000229", "700025"):
        return f"client_id {client} (no such application in tenant {tenant}, or not a confidential client)"
    if code in ("90002", "900023", "90023", "90013"):
        return f"tenant_id {tenant} (no such tenant, or not a valid tenant id or domain)"
    if code in ("1002012", "70011", "500011"):
        return f"base_url {base_url} (its scope {scope_for(base_url)} was refused)"
    return secret


def scope_for(base_url: str) -> str:
    """``https://graph.microsoft.com/.default``: the resource (``base_url``'s origin) and ``/.default``."""
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}/.default"


def _graph_error(body: bytes) -> str:
    """Graph's ``error.code: error.message`` (or the start of the body; the caller redacts it)."""
    try:
        err = json_codec.loads(body)["error"]
        return f"{err.get('code')}: {err.get('message')}"[:300]
    except (json_codec.JSONError, KeyError, TypeError, AttributeError):
        return body[:200].decode("utf-8", "replace")


# ---- the source -------------------------------------------------------------------------------------

class MsGraphSource:
    ordering: Literal["newest_first", "oldest_first"] = "newest_first"
    #: Any [start, end) of whole seconds reads like a window: a busy window is read as sub-ranges (subranges.py).
    range_step: dt.timedelta | None = dt.timedelta(seconds=1)
    journal_headers: tuple[str, ...] = ()  # the nextLink is in the body

    def __init__(self, *, base_url: str, stream: str, auth: OAuthClientCredentials, page_size: int = MAX_PAGE_SIZE,
                 timeout: float = 30.0, http_attempts: int = 6, backoff_initial: float = 0.5,
                 backoff_max: float = 60.0, max_page_bytes: int = DEFAULT_MAX_BYTES,
                 credential: str = "client_secret", tenant_id: str = "", client_id: str = "",
                 ca_file: str | None = None, tls_verify: bool = True,
                 client_cert: tuple[str, str] | None = None, proxy: str | None = None,
                 rate: RateGate | None = None) -> None:
        """``credential``: the secret's config key and variable, named in refusals (with ``tenant_id`` and
        ``client_id`` when the token endpoint's code points at them instead)."""
        if stream not in STREAMS:
            raise ValueError(f"stream must be one of {', '.join(STREAMS)}")
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be within 1..{MAX_PAGE_SIZE}")
        self.stream, self.page_size, self.base_url = stream, page_size, base_url
        self.path, self.time_field = STREAMS[stream]
        self.credential, self.tenant_id, self.client_id = credential, tenant_id, client_id
        self._auth = auth
        self._http = RetryingClient(
            base_url, {"Accept": "application/json"}, auth=auth, timeout=timeout, attempts=http_attempts,
            backoff_initial=backoff_initial, backoff_max=backoff_max, max_bytes=max_page_bytes,
            credential=credential, ca_file=ca_file, tls_verify=tls_verify,
            client_cert=client_cert, proxy=proxy, rate=rate,
        )

    def close(self) -> None:
        self._http.close()

    def secrets(self) -> tuple[str, ...]:
        return self._auth.secrets()

    def fetch_page(self, window: Window, cursor: str | None, deadline: float | None = None) -> Page:
        if cursor is None:
            target = first_page_path(self.path, self.time_field, window, self.page_size)
        elif looks_like_next_link(cursor, self.path):
            target = cursor  # Graph's nextLink, byte for byte: its skiptoken is Graph's, not ours
        else:
            raise TokenRejected("the stored cursor is not a Graph @odata.nextLink of this stream; the pass "
                                "starts again")
        try:
            res = self._http.get(target, deadline=deadline)
        except (RetryableStatus, httpx.TransportError) as e:
            raise SourceUnavailable(f"Microsoft Graph {self.stream}: still failing after "
                                    f"{self._http.last_attempts} attempts (last: {describe(e)})") from None
        except TokenRefused as e:
            key = refused_key(str(e), secret=self.credential, tenant=self.tenant_id, client=self.client_id,
                              base_url=self.base_url)
            raise TokenRefused(f"credentials refused (HTTP {e.status}): check {key}; {e}", status=e.status) from None
        except CredentialsRefused as e:
            said = _graph_error(e.api_message)
            hint = ""
            if e.status == 403:
                hint = f"; {PERMISSION_HINT}{SIGN_IN_HINT if self.stream == 'sign_ins' else ''}"
            raise CredentialsRefused(f"{e}; Graph said: {said}{hint}", status=e.status) from None
        if res.status == 400 and cursor is not None:
            raise TokenRejected(f"Graph refused the nextLink's skiptoken: {_graph_error(res.content)}")
        if res.status != 200:
            raise SourceRequestError(f"Microsoft Graph {self.stream} answered HTTP {res.status}: "
                                     f"{_graph_error(res.content)}")
        try:
            items, nxt = self.parse_page(res.content)
        except BadPage as e:
            # An operator who skips this page reads on, when its nextLink can be told from the broken body.
            raise BadPage(str(e), res.content, self.salvage_next_link(res.content)) from None
        if nxt is not None and nxt == cursor and not items:
            raise BadPage("Graph returned the nextLink it was sent, with no items; stopping instead of looping")
        return Page(items, nxt, res.content, res.retries, res.reasons, server_time=res.server_time)

    def salvage_next_link(self, body: bytes) -> str | None:
        """The nextLink of a body that is not valid JSON, when written exactly once and shaped like ours."""
        found = _NEXT_LINK_TEXT.findall(body)
        if len(found) != 1:
            return None
        try:
            link = json_codec.loads(found[0])
        except json_codec.JSONError:
            return None
        return link if isinstance(link, str) and looks_like_next_link(link, self.path) else None

    def parse_page(self, body: bytes, headers: Mapping[str, str] | None = None
                   ) -> tuple[list[dict[str, Any]], str | None]:
        try:
            doc = json_codec.loads(body)
        except json_codec.JSONError as e:
            raise BadPage(f"response is not JSON: {e}") from None
        if not isinstance(doc, dict):
            raise BadPage(f"response is a JSON {type(doc).__name__}, not an object")
        items = doc.get("value")
        if not isinstance(items, list):
            raise BadPage(f"'value' is a {type(items).__name__}, not a list" if "value" in doc
                          else "the response has no 'value' list")
        field = self.time_field
        for i, item in enumerate(items):  # on the request path: only what ``to_events`` relies on
            if type(item) is not dict:
                raise BadPage(f"item {i} is not an object")
            ident, when = item.get("id"), item.get(field)
            if type(ident) is not str or not ident:
                raise BadPage(f"item {i} has no 'id'")
            if type(when) is not str:
                raise BadPage(f"item {i} has no {field}")
            try:
                parse_time(when)
            except ValueError as e:
                raise BadPage(f"item {i} has a bad {field}: {e}") from None
        return items, body_next_url(doc, NEXT_LINK)

    def to_events(self, items: list[dict[str, Any]]) -> list[Event]:
        field = self.time_field
        out = []
        for item in items:
            name = item.get("activityDisplayName") or item.get("appDisplayName")
            out.append(Event(item["id"], parse_time(item[field]), item, (str(name),) if name else ()))
        return out


# ---- config -----------------------------------------------------------------------------------------

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$")


class MsGraphConfig(SourceBase):
    """``type: msgraph``: one audit-log stream of one Entra ID tenant, read by one app registration."""

    # ``stream:`` in the file; named otherwise here, as SourceBase.stream is the stream's description (the
    # resources carry the config by field name, hence validate_by_name).
    model_config = ConfigDict(**SourceBase.model_config, validate_by_name=True)

    type: Literal["msgraph"]
    audit_log: Literal["directory_audits", "sign_ins", "provisioning"] = Field(alias="stream")
    tenant_id: str
    client_id: str
    client_secret: secret("GRAPH_SECRET") | None = None  # type: ignore[valid-type]
    client_certificate: secret("GRAPH_CERTIFICATE") | None = None  # type: ignore[valid-type]
    base_url: BaseUrl = DEFAULT_BASE_URL
    login_url: BaseUrl = DEFAULT_LOGIN_URL
    page_size: int = Field(default=MAX_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    # See the module docstring: the official p99 of 5 min, and two hours of re-reads for the tail.
    settle_lag: Duration = dt.timedelta(minutes=5)
    lookback: Duration = dt.timedelta(hours=2)
    # 5 requests per 10 s per app per tenant (throttling-limits), kept with no burst: see the docstring.
    rate_limit: RateLimitText | None = "25/min"

    supports_rate_limit: ClassVar[bool] = True
    # Entra audit and sign-in logs: 30 days with Entra ID P1/P2, 7 days on Free [secondary: flanksource]
    # (apis-and-emulators.md, Microsoft Graph, Retention); the longer one, so P1/P2 tenants get no false alarm.
    retention: ClassVar[dt.timedelta | dt.datetime | None] = dt.timedelta(days=30)

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if value.lower() in ("common", "organizations", "consumers"):
            raise ValueError(f"{value!r} is a multi-tenant alias; the client-credentials flow needs the tenant "
                             f"itself: its Directory (tenant) ID (a GUID) or a verified domain such as "
                             f"contoso.onmicrosoft.com")
        if not (_GUID.match(value) or _DOMAIN.match(value)):
            raise ValueError(f"{value!r} is neither a GUID nor a domain name; set tenant_id to the Directory "
                             f"(tenant) ID shown in Entra ID > Overview (00000000-0000-0000-0000-000000000000) "
                             f"or a verified domain such as contoso.onmicrosoft.com")
        return value

    @field_validator("client_id")
    @classmethod
    def _client(cls, value: str) -> str:
        if not _GUID.match(value):
            raise ValueError(f"{value!r} is not a GUID; set client_id to the app registration's Application "
                             f"(client) ID (00000000-0000-0000-0000-000000000000)")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> MsGraphConfig:
        if (self.client_secret is None) == (self.client_certificate is None):
            said = "both are set" if self.client_secret is not None else "neither is set"
            raise ValueError(
                f"set exactly one of `client_secret` and `client_certificate` ({said}): the app's secret as "
                f"`client_secret: {{env: GRAPH_SECRET}}`, or a PEM holding its private key and certificate as "
                f"`client_certificate: {{env: GRAPH_CERTIFICATE}}`")
        return self

    @property
    def stream(self) -> str:
        return f"Entra ID {self.audit_log} of tenant {self.tenant_id}"

    @property
    def effective_rate_account(self) -> str:
        """The app's budget in its tenant (Graph counts per app per tenant), unless ``rate_account`` or
        ``pool`` names another: every stream of one app registration in one tenant shares it."""
        if self.rate_account or self.pool:
            return super().effective_rate_account
        return f"msgraph:{self.tenant_id.lower()}:{self.client_id.lower()}"

    @property
    def token_url(self) -> str:
        return f"{self.login_url}/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def credential_name(self) -> str:
        ref = self.client_secret or self.client_certificate
        key = "client_secret" if self.client_secret is not None else "client_certificate"
        assert ref is not None  # _one_credential
        return f"{key} ({ref.env}) of client_id {self.client_id} in tenant_id {self.tenant_id}"


def open_source(cfg: MsGraphConfig, secrets: Secrets, *, rate: RateGate | None = None) -> MsGraphSource:
    credential = cfg.credential_name
    scope = scope_for(cfg.base_url)
    auth: OAuthClientCredentials
    if cfg.client_secret is not None:
        auth = OAuthClientCredentials(cfg.token_url, cfg.client_id, secrets(cfg.client_secret.env), scope,
                                      credential=credential)
    else:
        assert cfg.client_certificate is not None  # _one_credential
        auth = OAuthCertificateJwt(cfg.token_url, cfg.client_id, secrets(cfg.client_certificate.env), scope,
                                   key_name=f"client_certificate ({cfg.client_certificate.env})",
                                   credential=credential)
    return MsGraphSource(
        base_url=cfg.base_url, stream=cfg.audit_log, auth=auth, page_size=cfg.page_size,
        credential=credential, tenant_id=cfg.tenant_id, client_id=cfg.client_id, rate=rate,
        **cfg.client_options(),
    )


PLUGINS = [Plugin("source", "msgraph", MsGraphConfig, open_source)]

__all__ = ["STREAMS", "MsGraphConfig", "MsGraphSource", "first_page_path", "literal", "looks_like_next_link",
           "refused_key", "scope_for", "window_filter"]
