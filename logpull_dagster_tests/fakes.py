"""In-memory stand-ins for the pure-core tests: a paginated source with scripted faults."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from logpull_dagster.sources import Event, Page, TokenRejected
from logpull_dagster.windows import UTC, Window, parse_time, rfc3339_ms

W = Window(dt.datetime(2026, 11, 26, 10, tzinfo=UTC), dt.datetime(2026, 11, 26, 11, tzinfo=UTC))


def make_events(window: Window, n: int, *, boundary: bool = True) -> list[Event]:
    """``n`` events inside ``window`` (some sharing a millisecond), plus one on each boundary if asked."""
    step = (window.end - window.start) / (n + 1)
    out = []
    for i in range(n):
        t = window.start + step * (i + 1)
        t = t.replace(microsecond=(t.microsecond // 1000) * 1000)
        if i % 10 == 1:  # shares the millisecond of the previous event
            t = out[-1].time
        out.append(Event(f"e{i}", t, {"n": i, "name": f"kind{i % 3}"}, (f"kind{i % 3}",)))
    if boundary:
        out.append(Event("at-start", window.start, {"n": -1}, ("edge",)))
        out.append(Event("at-end", window.end, {"n": -2}, ("edge",)))  # belongs to the next window
    return sorted(out, key=lambda e: (e.time, e.id), reverse=True)  # newest first, like Google


@dataclass
class FakeSource:
    """Pages of ``page_size`` over a fixed newest-first list; cursor = offset as text.

    ``fault(cursor, call_no)`` may raise to script a failure for a given request. ``cursor_in``:
    where the next cursor travels, in the body or (like Okta's and GitHub's ``Link``) only in a
    response header, so that resuming from the journal needs the journaled headers. ``server_clock``:
    the API's clock, read at each answer as its ``Date`` header (``Page.server_time``; None: no Date).
    """

    events: list[Event]
    page_size: int = 10
    fault: Callable[[str | None, int], None] | None = None
    calls: list[str | None] = field(default_factory=list)
    token_epoch: int = 0
    ordering: str = "newest_first"
    cursor_in: str = "body"
    server_clock: Callable[[], float] | None = None
    # Set: the source reads any [start, end) of whole steps, so a busy window may split (subranges.py).
    range_step: dt.timedelta | None = None

    @property
    def journal_headers(self) -> tuple[str, ...]:
        return ("x-next",) if self.cursor_in == "header" else ()

    def fetch_page(self, window: Window, cursor: str | None, deadline: float | None = None) -> Page:
        self.calls.append(cursor)
        if self.fault is not None:
            self.fault(cursor, len(self.calls))
        offset = 0
        if cursor is not None:
            epoch, _, off = cursor.partition(":")
            if int(epoch) != self.token_epoch:
                raise TokenRejected("Invalid pageToken")
            offset = int(off)
        visible = [e for e in self.events if window.start <= e.time <= window.end]  # both ends inclusive
        chunk = visible[offset: offset + self.page_size]
        nxt = offset + self.page_size
        items = [{"id": e.id, "time": rfc3339_ms(e.time), "raw": e.raw, "names": list(e.names)} for e in chunk]
        token = f"{self.token_epoch}:{nxt}" if nxt < len(visible) else None
        date = None if self.server_clock is None else self.server_clock()
        if self.cursor_in == "header":
            return Page(items, token, orjson.dumps({"items": items}), headers={"x-next": token} if token else {},
                        server_time=date)
        return Page(items, token, orjson.dumps({"items": items, "next": token}), server_time=date)

    def parse_page(self, body: bytes, headers: Mapping[str, str] | None = None
                   ) -> tuple[list[dict[str, Any]], str | None]:
        doc = orjson.loads(body)
        if self.cursor_in == "header":
            return doc["items"], (headers or {}).get("x-next")
        return doc["items"], doc["next"]

    def to_events(self, items: list[dict[str, Any]]) -> list[Event]:
        return [Event(it["id"], parse_time(it["time"]), it["raw"], tuple(it["names"])) for it in items]

    def secrets(self) -> tuple[str, ...]:
        return ()

    def close(self) -> None:
        pass
