"""Log sources: how to read one page of one API for one window.

A source is one small class behind :class:`LogSource`. It knows the API's URL, parameters, quirks and
ordering, and turns a response into :class:`Event` s carrying the event's own id and time. It knows
nothing of checkpoints, landing or Dagster: the pull loop (``pull.py``) does the rest the same way
for every API.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from logpull_dagster.windows import Window


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    time: dt.datetime
    raw: dict[str, Any]
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Page:
    events: list[Event]
    next_cursor: str | None
    http_retries: int = 0
    retry_reasons: list[str] = field(default_factory=list)


class SourceError(RuntimeError):
    """Reading a page failed; nothing from that page may be landed or checkpointed."""


class BadPage(SourceError):
    """The API answered, but not with a page we can trust (not JSON, wrong shape, event without id)."""


class TokenRejected(SourceError):
    """The API refused the page token (expired, or not for this query): restart the window."""


class SourceUnavailable(SourceError):
    """Transient faults (429/5xx, dropped connections, timeouts) outlasted the retries."""


class SourceRequestError(SourceError):
    """The API refused the request for good (401, 403, 404, a 400 not about the token)."""


class LogSource(Protocol):
    #: ``newest_first`` (Google, Slack) or ``oldest_first`` (Okta, GitHub with order=asc)
    ordering: Literal["newest_first", "oldest_first"]

    def fetch_page(self, window: Window, cursor: str | None) -> Page:
        """The page at ``cursor`` (None: the first page) of the query for ``window``."""
        ...

    def close(self) -> None: ...


__all__ = ["BadPage", "Event", "LogSource", "Page", "SourceError", "SourceRequestError",
           "SourceUnavailable", "TokenRejected"]
