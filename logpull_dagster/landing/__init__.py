"""Landing stores: where pulled pages are kept, durably, before they are checkpointed.

A landed page has a deterministic name: (source, window, page sequence number), plus the lease
epoch of the run that wrote it. The epoch is the fencing half of the name: if a run stalls past its
lease and lands a page after another run took the window over, its copy carries an older epoch and
is ignored, because readers take the copy with the highest epoch of each page. Only pages below the
checkpoint's ``page_seq`` count; anything at or above it is an unfinished attempt, replaced by the
next attempt (``discard``).

The contract every backend keeps:

* ``put_page`` is atomic and durable: after it returns the page is wholly there; a crash during it
  leaves either nothing or an ignorable temporary object, never half a page under the real name.
* ``put_page`` of the same (window, seq, epoch) replaces the earlier copy.

Reads (the journal). Before the pull loop advances its token past an API page, it keeps the page's
response body, byte for byte, as *read n* of the window (n counts every API page read for the
window, ever): ``put_read`` is atomic and durable like ``put_page``. The page is then deduplicated
and landed as a page off the request path, and its read dropped. A crash in between loses nothing
and reads nothing twice: the next attempt lands the read from the journal. The checkpoint says which
reads are pending; any other read found is debris of a crash and is discarded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from logpull_dagster.windows import Window


class LandingMissing(FileNotFoundError):
    """A landed page or a journaled read the checkpoint says is there is not in the landing store: deleted
    by hand, expired by a lifecycle rule, or gone with its bucket. Never skipped: its events are not
    anywhere else, so the window is a gap until ``logpull recover`` reads it again."""


@dataclass(frozen=True, order=True)
class LandedPage:
    seq: int
    epoch: int
    location: str


class LandingStore(Protocol):
    def put_page(self, source: str, window: Window, seq: int, epoch: int, lines: Iterable[bytes]) -> str:
        """Land one page (one JSON document per line); return where it is."""
        ...

    def pages(self, source: str, window: Window, below: int) -> list[LandedPage]:
        """The current copy of every landed page with ``seq < below``, in page order."""
        ...

    def read_lines(self, page: LandedPage) -> list[bytes]:
        """The page's lines; LandingMissing if it is gone."""
        ...

    def where(self, source: str, window: Window) -> str:
        """Where the window's pages are kept (a folder, an ``s3://`` prefix), for messages."""
        ...

    def discard(self, source: str, window: Window, from_seq: int, keep_reads: range = range(0)) -> int:
        """Remove unfinished pages (``seq >= from_seq``), superseded copies, and reads not in
        ``keep_reads``; return how many."""
        ...

    def put_read(self, source: str, window: Window, n: int, epoch: int, body: bytes) -> str:
        """Journal read ``n`` (an API response body, untouched)."""
        ...

    def get_read(self, source: str, window: Window, n: int) -> tuple[bytes, int]:
        """The body of read ``n`` and the epoch that wrote it (the copy of the highest epoch); LandingMissing
        if there is none."""
        ...

    def drop_read(self, source: str, window: Window, n: int, epoch: int) -> None:
        """Forget read ``n`` once its page is landed and checkpointed."""
        ...

    def close(self) -> None: ...


def current_copies(found: Iterable[LandedPage], below: int) -> list[LandedPage]:
    """Keep the highest-epoch copy of each page below ``below``, in page order."""
    best: dict[int, LandedPage] = {}
    for page in found:
        if page.seq < below and (page.seq not in best or page.epoch > best[page.seq].epoch):
            best[page.seq] = page
    return [best[s] for s in sorted(best)]


__all__ = ["LandedPage", "LandingMissing", "LandingStore", "current_copies"]
