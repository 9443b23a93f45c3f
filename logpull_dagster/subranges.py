"""One busy window read as sub-ranges at once: when to split, where the edges go, and the state kept.

A window read page after page costs its pages x the API's latency: 300 pages at 150 ms are 45 s,
whatever the machine. The APIs take any time range, so the rest of a busy window is read as k
sub-ranges, each with its own cursor, all landing into the one window and deduplicated by event id
as ever (``pull.py``). Pure logic: no Dagster import, no I/O.

WHEN A WINDOW SPLITS. After the first page of a pass, if the API has more pages and the first page's
events span only a small part of the window (``plan``). The whole window is then cut into sub-ranges
of about ``PAGES_PER_SUBRANGE`` pages each at the first page's density: more of them than can be read
at once, so that a dense sub-range does not leave the others idle at the end. The whole window, not
the part after the first page: which part that page covered depends on the API's order, and an order
a source declares but an API does not keep would leave events unread; reading the first page's events
again costs one page, and their ids deduplicate them.

EDGES. Every edge is a whole multiple of the source's ``range_step`` (one second for every built-in
API: GitHub's and Slack's range parameters take whole seconds). Sub-ranges are half-open
``[start, end)`` like windows and tile the rest of the window exactly; an API whose end parameter is
inclusive returns the events at an edge to both neighbours, and their ids deduplicate them (the
store knows every landed id of the window). Events outside the window are dropped as ever; events
outside the sub-range but inside the window are landed (or deduplicated) like any other.

THE STATE lives in the window's pull checkpoint (``stats["subranges"]``), so one conditional commit
moves a sub-range's cursor and the window's counts together, and any attempt in any process resumes
every unfinished sub-range from its own cursor. ``fetched``: the API gave the sub-range's last page
(its reads may still be pending in the journal); the pass is complete once every sub-range is
fetched and nothing is pending.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import math
from dataclasses import dataclass
from typing import Any

from logpull_dagster.windows import Window, parse_time, rfc3339

# Pages a sub-range should take at the first page's density: a few, so the pages of the window are
# spread over many more sub-ranges than are read at once (the last ones to finish are short).
PAGES_PER_SUBRANGE = 4
# Sub-ranges per reader at most (readers: the requests the run may have in flight), and in all: the
# state of each is written with every commit of the window.
SUBRANGES_PER_READER = 4
MAX_SUBRANGES = 64
# A window splits only when the first page suggests it takes at least this many pages.
MIN_PAGES_LEFT = 3


@dataclass(frozen=True)
class SubRange:
    """One sub-range of a split window and how far its pass has read it."""

    start: dt.datetime
    end: dt.datetime
    cursor: str | None = None  # the next page's token; None with pages == 0: its first page
    pages: int = 0  # pages read of it in this pass
    events: int = 0  # events it landed in this pass
    seconds: float = 0.0  # time spent reading it, every attempt of the pass together
    fetched: bool = False  # the API gave its last page
    restarts: int = 0  # times the API refused its cursor and it started again (its cursors are new then)

    @property
    def window(self) -> Window:
        return Window(self.start, self.end)

    def to_json(self) -> dict[str, Any]:
        return {"start": rfc3339(self.start), "end": rfc3339(self.end), "cursor": self.cursor, "pages": self.pages,
                "events": self.events, "seconds": round(self.seconds, 3), "fetched": self.fetched,
                "restarts": self.restarts}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SubRange:
        return cls(parse_time(d["start"]), parse_time(d["end"]), d.get("cursor"), int(d.get("pages", 0)),
                   int(d.get("events", 0)), float(d.get("seconds", 0.0)), bool(d.get("fetched", False)),
                   int(d.get("restarts", 0)))


def plan(window: Window, step: dt.timedelta, first: dt.datetime, last: dt.datetime, readers: int) -> list[Window]:
    """The sub-ranges to read ``window`` as, after a first page (with a next page) whose events in the
    window span ``first`` .. ``last``; [] when the window should be read on page after page.

    ``readers``: the requests the run may have in flight. One reader gains nothing from sub-ranges.
    """
    if readers < 2 or not (window.start <= first <= last < window.end):
        return []
    rest = Window(_floor(window.start, step), window.end)
    # The first page's density (at least one step's worth of time a page): the pages the window would take.
    pages_left = (rest.end - rest.start) / max(last - first, step)
    if pages_left < MIN_PAGES_LEFT:
        return []
    k = min(math.ceil(pages_left / PAGES_PER_SUBRANGE), readers * SUBRANGES_PER_READER, MAX_SUBRANGES)
    k = max(k, min(readers, math.floor(pages_left)))  # at least one sub-range per reader when pages allow
    steps = (rest.end - rest.start) // step
    k = min(k, steps)
    if k < 2:
        return []
    edges = [rest.start + step * (steps * i // k) for i in range(k)] + [rest.end]
    return [Window(a, b) for a, b in itertools.pairwise(edges) if a < b]


def _floor(t: dt.datetime, step: dt.timedelta) -> dt.datetime:
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return epoch + (t - epoch) // step * step


def load(stats: dict[str, Any]) -> list[SubRange] | None:
    """The sub-ranges of a split pass, or None: the pass reads page after page (or has not split yet)."""
    found = stats.get("subranges")
    if not isinstance(found, list):
        return None
    return [SubRange.from_json(d) for d in found]


def save(stats: dict[str, Any], subs: list[SubRange] | None) -> dict[str, Any]:
    """``stats`` with ``subs`` as the pass's sub-ranges (None: the pass is not split)."""
    out = {k: v for k, v in stats.items() if k != "subranges"}
    if subs is not None:
        out["subranges"] = [s.to_json() for s in subs]
    return out


def update(stats: dict[str, Any], i: int, **changes: Any) -> dict[str, Any]:
    """``stats`` with sub-range ``i`` changed (a pass that is not split is returned unchanged)."""
    subs = load(stats)
    if subs is None or not 0 <= i < len(subs):
        return stats
    subs[i] = dataclasses.replace(subs[i], **changes)
    return save(stats, subs)


def summary(subs: list[SubRange]) -> dict[str, Any]:
    """What a finished split pass reached, for the window's metadata: the sub-ranges and each one's speed."""
    return {
        "subranges": len(subs),
        "pages": [s.pages for s in subs],
        "events_per_second": [round(s.events / s.seconds) if s.seconds > 0 else 0 for s in subs],
    }
