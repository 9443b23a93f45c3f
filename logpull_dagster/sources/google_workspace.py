"""Google Workspace Admin SDK Reports API, ``activities.list``, one application per source.

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

from collections.abc import Mapping
from typing import Any, ClassVar, Literal
from urllib.parse import quote

import httpx
from pydantic import Field

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
from logpull_dagster.sources.auth import BearerAuth
from logpull_dagster.sources.http import DEFAULT_MAX_BYTES, RetryableStatus, RetryingClient, describe
from logpull_dagster.windows import Window, parse_time, rfc3339


def event_id(ident: Mapping[str, Any]) -> str:
    """``applicationName/customerId/time/uniqueQualifier`` of an item's ``id`` object (validated by
    ``parse_page``: time and uniqueQualifier present)."""
    app, customer = ident.get("applicationName") or "", ident.get("customerId") or ""
    return f"{app}/{customer}/{ident['time']}/{ident['uniqueQualifier']}"


class GoogleWorkspaceSource:
    ordering: Literal["newest_first", "oldest_first"] = "newest_first"
    journal_headers: tuple[str, ...] = ()  # the next token is in the body

    def __init__(self, *, base_url: str, application: str, access_token: str, page_size: int = 1000,
                 timeout: float = 30.0, http_attempts: int = 6, backoff_initial: float = 0.5,
                 backoff_max: float = 60.0, max_page_bytes: int = DEFAULT_MAX_BYTES,
                 credential: str = "the access token", ca_file: str | None = None, tls_verify: bool = True,
                 rate: RateGate | None = None) -> None:
        self.application, self.page_size = application, page_size
        self.path = f"/admin/reports/v1/activity/users/all/applications/{quote(application, safe='')}"
        self._auth = BearerAuth(access_token)
        self._http = RetryingClient(
            base_url, {"Accept": "application/json"}, auth=self._auth,
            timeout=timeout, attempts=http_attempts, backoff_initial=backoff_initial, backoff_max=backoff_max,
            max_bytes=max_page_bytes, credential=credential, ca_file=ca_file, tls_verify=tls_verify, rate=rate,
        )

    def close(self) -> None:
        self._http.close()

    def secrets(self) -> tuple[str, ...]:
        return self._auth.secrets()

    def fetch_page(self, window: Window, cursor: str | None, deadline: float | None = None) -> Page:
        params: dict[str, str | int] = {
            "startTime": rfc3339(window.start), "endTime": rfc3339(window.end), "maxResults": self.page_size,
        }
        if cursor is not None:
            params["pageToken"] = cursor
        try:
            res = self._http.get(self.path, params, deadline=deadline)
        except (RetryableStatus, httpx.TransportError) as e:
            raise SourceUnavailable(
                f"Reports API {self.application}: still failing after {self._http.last_attempts} attempts "
                f"(last: {describe(e)})"
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
        return Page(items, token, res.content, res.retries, res.reasons)

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
            names = tuple([str(ev.get("name")) for ev in item.get("events") or () if type(ev) is dict])
            canonical = len(time) == 24 and time[10] == "T" and time[19] == "." and time[23] == "Z"
            out.append(Event(event_id(ident), parse_time(time), item, names, time if canonical else ""))
        return out


def _error_message(body: bytes) -> str:
    """Google's error message, or the start of the body (which the caller redacts: it may echo a header)."""
    try:
        return str(json_codec.loads(body)["error"]["message"])[:300]
    except (json_codec.JSONError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")


class GoogleWorkspaceConfig(SourceBase):
    """``type: google_workspace``: one application's audit events (``activities.list``)."""

    type: Literal["google_workspace"]
    application: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    base_url: BaseUrl = "https://admin.googleapis.com"
    access_token: secret("GWS_ACCESS_TOKEN")  # type: ignore[valid-type]
    page_size: int = Field(default=1000, ge=1, le=1000)

    supports_rate_limit: ClassVar[bool] = True

    @property
    def stream(self) -> str:
        return f"Google Workspace `{self.application}` audit events"


def open_source(cfg: GoogleWorkspaceConfig, secrets: Secrets, *, rate: RateGate | None = None) -> GoogleWorkspaceSource:
    return GoogleWorkspaceSource(
        base_url=cfg.base_url, application=cfg.application, access_token=secrets(cfg.access_token.env),
        page_size=cfg.page_size, timeout=cfg.http_timeout.total_seconds(), http_attempts=cfg.http_attempts,
        backoff_initial=min(0.5, cfg.http_backoff_max.total_seconds()),
        backoff_max=cfg.http_backoff_max.total_seconds(), max_page_bytes=cfg.max_page_bytes,
        credential=cfg.access_token.env, ca_file=str(cfg.ca_path) if cfg.ca_path else None,
        tls_verify=cfg.tls_verify, rate=rate,
    )


PLUGINS = [Plugin("source", "google_workspace", GoogleWorkspaceConfig, open_source)]
