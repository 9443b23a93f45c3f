"""``type: counter_api``: a source type in one module, for the plug-in tests.

An "API" that serves ``events_per_window`` events per window, oldest first, ``page_size`` a page,
computed from the window alone (so every read of a window agrees), with the next page in a response
header only, as Okta's and GitHub's ``Link`` are. It takes a secret like any real source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import Field

from logpull_dagster.config import SourceBase, secret
from logpull_dagster.plugins import Plugin, Secrets
from logpull_dagster.sources import BadPage, Event, Page, TokenRejected
from logpull_dagster.windows import Window, epoch_us, parse_time, rfc3339_ms


class CounterApiConfig(SourceBase):
    type: Literal["counter_api"]
    events_per_window: int = Field(default=25, ge=0, le=100_000)
    page_size: int = Field(default=10, ge=1, le=1000)
    token: secret("COUNTER_TOKEN")  # type: ignore[valid-type]

    @property
    def stream(self) -> str:
        return "counter events"


class CounterApiSource:
    ordering: Literal["newest_first", "oldest_first"] = "oldest_first"
    journal_headers: tuple[str, ...] = ("x-next",)

    def __init__(self, cfg: CounterApiConfig, token: str) -> None:
        self.cfg, self.token, self.requests = cfg, token, 0

    def fetch_page(self, window: Window, cursor: str | None, deadline: float | None = None) -> Page:
        self.requests += 1
        offset = 0 if cursor is None else int(cursor.removeprefix("after-"))
        if cursor is not None and not cursor.startswith("after-"):
            raise TokenRejected(f"unknown cursor {cursor!r}")
        n, size = self.cfg.events_per_window, self.cfg.page_size
        step = (window.end - window.start) / max(n, 1)
        items = [{"uuid": f"{epoch_us(window.start)}-{i}", "published": rfc3339_ms(window.start + i * step)}
                 for i in range(offset, min(offset + size, n))]
        nxt = f"after-{offset + size}" if offset + size < n else None
        return Page(items, nxt, orjson.dumps({"events": items}), headers={"x-next": nxt} if nxt else {})

    def parse_page(self, body: bytes, headers: Mapping[str, str] | None = None
                   ) -> tuple[list[dict[str, Any]], str | None]:
        try:
            items = orjson.loads(body)["events"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as e:
            raise BadPage(f"not a counter page: {e}") from None
        return items, (headers or {}).get("x-next")

    def to_events(self, items: list[dict[str, Any]]) -> list[Event]:
        return [Event(it["uuid"], parse_time(it["published"]), it) for it in items]

    def secrets(self) -> tuple[str, ...]:
        return (self.token,)

    def close(self) -> None:
        pass


def open_source(cfg: CounterApiConfig, secrets: Secrets) -> CounterApiSource:
    return CounterApiSource(cfg, secrets(cfg.token.env))


PLUGINS = [Plugin("source", "counter_api", CounterApiConfig, open_source)]
