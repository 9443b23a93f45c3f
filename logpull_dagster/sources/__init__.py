"""Log sources: how to read one page of one API for one window.

A source is one small class behind :class:`LogSource`. It knows the API's URL, parameters, quirks and
ordering, and turns a response into :class:`Event` s carrying the event's own id and time. It knows
nothing of checkpoints, landing or Dagster: the pull loop (``pull.py``) does the rest the same way
for every API.

Reading a page is split in two so that the pull loop can put the next request on the wire sooner:
``fetch_page`` returns the response body with its items *validated* (every item has an id and a
parseable time, or the page raises :class:`BadPage`), which is cheap; ``events`` turns validated items
into :class:`Event` s later (``to_events``) and cannot fail. ``parse_page`` re-reads a body the pull loop journaled.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from logpull_dagster.windows import Window


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    time: dt.datetime
    raw: dict[str, Any]
    names: tuple[str, ...] = ()
    # ``time`` as ``2026-11-26T10:00:02.657Z`` when the API sent exactly that (saves formatting it again)
    time_text: str = ""


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]  # the API's items, validated (see the module docstring)
    next_cursor: str | None
    body: bytes = b""  # the response body, byte for byte: what the pull loop journals
    http_retries: int = 0
    retry_reasons: list[str] = field(default_factory=list)
    # The response headers named by the source's ``journal_headers`` (lower-case names), journaled
    # with the body: all the source needs to read the page again (``parse_page``).
    headers: Mapping[str, str] = field(default_factory=dict)
    # Requests the API account has left in its current rate-limit window, when the API says
    # (Okta: X-Rate-Limit-Remaining): the window's metadata shows the lowest, so operators see how
    # close the account runs to its limit.
    quota_remaining: int | None = None
    # The API's clock when it answered (epoch seconds, from its ``Date`` header; None without one): the
    # pull loop reads a window only once the API's clock, not just ours, has passed its end + settle_lag.
    server_time: float | None = None


class SourceError(RuntimeError):
    """Reading a page failed; nothing from that page may be landed or checkpointed.

    ``permanent``: retrying in seconds cannot help (a refused credential, a redirect, an untrusted
    certificate), so the window fails at once instead of spending its retries against the API.
    """

    permanent = False


class BadPage(SourceError):
    """The API answered, but not with a page we can trust (not JSON, wrong shape, event without id).

    ``body``: the response as received, when the source had one, so that the pull loop can record
    which page failed (its digest, its size) for an operator who must decide to skip it.
    ``next_cursor``: the page's next cursor when the source can tell it without the body (Okta: the
    ``Link`` header), so that skipping the page reads on instead of ending the pass (``skips.py``).
    """

    def __init__(self, message: str, body: bytes = b"", next_cursor: str | None = None) -> None:
        self.body, self.next_cursor = body, next_cursor
        super().__init__(message)


class TokenRejected(SourceError):
    """The API refused the page token (expired, or not for this query): restart the window."""


class SourceUnavailable(SourceError):
    """Transient faults (429/5xx, dropped connections, timeouts) outlasted the retries."""


class SourceRequestError(SourceError):
    """The API refused the request for good (404, a 400 not about the token, a redirect, bad TLS)."""

    permanent = True


class InvalidSecret(SourceRequestError):
    """The configured credential cannot be sent at all (empty, or a character a header cannot hold)."""


class CredentialsRefused(SourceRequestError):
    """401/403: the credential is wrong, expired or lacks the scope. ``api_message``: the start of the
    API's answer, which may echo the credential: redact before writing it anywhere."""

    def __init__(self, message: str, *, status: int, api_message: bytes = b"") -> None:
        self.status, self.api_message = status, api_message
        super().__init__(message)


class LogSource(Protocol):
    """One API stream. The guarantees the pull loop relies on (``contracts/log_source.py`` tests them):

    * ``fetch_page`` returns a page only when every item has an id and a parseable time (else
      BadPage), raises TokenRejected for a cursor the API refuses (the loop restarts the pass), and a
      SourceError with ``permanent`` set when retrying cannot help;
    * items are in ``ordering``; ``to_events`` gives each item's own id and time, ids unique per event
      (events sharing a millisecond included), and never fails on validated items;
    * ``parse_page(page.body, page.headers)`` gives back ``page.items`` and ``page.next_cursor``: a
      journaled page can be landed by another attempt without asking the API again;
    * quirks of the API (a page that repeats its own token, a last page pointing at itself) are
      handled here, in the source's module, never in the loop;
    * ``page.server_time`` is the API's clock when it answered: its Date header (epoch seconds), or
      None when the API sends none. The loop refuses a pass whose first page the API answered before
      the window's end + settle_lag by its own clock (a fast host clock must not end a window early).
    """

    #: ``newest_first`` (Google, Slack) or ``oldest_first`` (Okta, GitHub with order=asc)
    ordering: Literal["newest_first", "oldest_first"]
    #: response headers (lower case) that ``parse_page`` reads; journaled with each body
    journal_headers: tuple[str, ...]
    #: Optional (read with ``getattr``, default None). When set, ``fetch_page`` reads any ``[start, end)``
    #: whose edges are whole multiples of it exactly as it reads a window (the API's range parameters
    #: take it; inclusive ends are fine, ids deduplicate the edge), so the pull loop may read a busy
    #: window as sub-ranges at once (``subranges.py``). None: the API takes only the window as a whole.
    range_step: dt.timedelta | None

    def fetch_page(self, window: Window, cursor: str | None, deadline: float | None = None) -> Page:
        """The page at ``cursor`` (None: the first page) of the query for ``window``, read before
        ``deadline`` (time.monotonic) if given; raises BadPage unless every item has a usable id and time."""
        ...

    def parse_page(self, body: bytes, headers: Mapping[str, str] | None = None
                   ) -> tuple[list[dict[str, Any]], str | None]:
        """Items (validated as by ``fetch_page``) and next cursor of a response (body and the headers
        named by ``journal_headers``)."""
        ...

    def to_events(self, items: list[dict[str, Any]]) -> list[Event]:
        """The events of validated items, in the API's order."""
        ...

    def secrets(self) -> tuple[str, ...]:
        """Every credential the source holds now (tokens it fetched included): masked in every error text."""
        ...

    def close(self) -> None: ...


__all__ = ["BadPage", "CredentialsRefused", "Event", "InvalidSecret", "LogSource", "Page", "SourceError",
           "SourceRequestError", "SourceUnavailable", "TokenRejected"]
