"""Skipping a page that can never be read: an explicit, logged, counted operator decision, never automatic.

A page whose body is not JSON we can keep (raw invalid UTF-8, a raw control byte) fails its window
with the parser's reason and byte offset, and the window stays failed: reading it again returns the
same bytes. Only an operator can decide that its events are lost, with ``logpull skip-page``:

* the failing page is recorded on the window's checkpoint when it fails (``stats.bad_page``: its page
  number, the SHA-256 and size of its body, the error, and the next cursor if the source read it
  outside the body (``BadPage.next_cursor``: Okta's ``Link`` header) or it can be found in the broken
  body: ``"nextPageToken": "..."`` written exactly once);
* ``skip-page`` moves the cursor past it to that token (the next run reads on), or, with no token to
  be found, ends the pass there (the rest of the pass is not read);
* either way the skip is kept in ``stats.skipped_pages`` with the operator's reason, who and when;
  ``logpull status`` shows the window as a **known gap**, never as complete, and counts it;
* a later re-read of the window that meets the *same* body (same SHA-256) applies the same decision
  again and counts it, instead of failing the window anew; any other bad page still fails.

No Dagster import.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
from typing import Any

from logpull_dagster import subranges
from logpull_dagster.checkpoints import Checkpoint
from logpull_dagster.windows import rfc3339

_NEXT = re.compile(rb'"nextPageToken"\s*:\s*("(?:[^"\\\x00-\x1f]|\\.)*")')


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def salvage_next_cursor(body: bytes) -> str | None:
    """The next page token of a body that is not valid JSON, if it is written exactly once."""
    found = _NEXT.findall(body)
    if len(found) != 1:
        return None
    try:
        token = json.loads(found[0].decode("ascii", "strict"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return token if isinstance(token, str) and token else None


def bad_page(body: bytes, page: int, error: str, next_cursor: str | None = None) -> dict[str, Any]:
    """What the checkpoint keeps of a page that failed as unreadable (not the body: it is in no state);
    ``next_cursor``: the one the source read outside the body, else the one salvaged from it."""
    return {"page": page, "sha256": digest(body), "bytes": len(body), "error": error[:300],
            "next_cursor": next_cursor or salvage_next_cursor(body)}


def approved(stats: dict[str, Any], body: bytes) -> dict[str, Any] | None:
    """The operator's earlier skip of exactly this body, if any."""
    sha = digest(body)
    for entry in stats.get("skipped_pages", []):
        if isinstance(entry, dict) and entry.get("sha256") == sha:
            return entry
    return None


def stands_at(cp: Checkpoint) -> bool:
    """Whether the window is still stopped at its recorded bad page (``stats.bad_page``): nothing has read
    past it since. For a split pass, the page is its sub-range's next one (``subrange``, ``subrange_page``)."""
    bad = cp.stats.get("bad_page")
    if cp.status != "failed" or not isinstance(bad, dict):
        return False
    if bad.get("subrange") is None:
        return bad.get("page") == cp.pages_read + 1
    subs = subranges.load(cp.stats)
    i = bad["subrange"]
    return (subs is not None and isinstance(i, int) and 0 <= i < len(subs) and not subs[i].fetched
            and subs[i].pages + 1 == bad.get("subrange_page"))


def past(cp: Checkpoint, entry: dict[str, Any], *, now: float, subrange: int | None = None) -> Checkpoint:
    """``cp`` with the cursor past the skipped page: at its next token, or at the end of the pass.

    ``subrange``: the page was one of sub-range ``subrange`` of a split pass (``subranges.py``): that
    sub-range's cursor moves, or, with no next token, the rest of the sub-range is left unread; the pass
    completes once every sub-range has (the pull loop sees to it)."""
    subs = subranges.load(cp.stats) if subrange is not None else None
    if subs is not None and subrange is not None and 0 <= subrange < len(subs):
        nxt = entry.get("next_cursor")
        sub = subs[subrange]
        stats = subranges.update(cp.stats, subrange, cursor=nxt or None, pages=sub.pages + 1, fetched=not nxt)
        return dataclasses.replace(cp, pages_read=cp.pages_read + 1, stats=stats)
    if entry.get("next_cursor"):
        return dataclasses.replace(cp, cursor=entry["next_cursor"], pages_read=cp.pages_read + 1)
    stats = {**cp.stats, "last_read_at": rfc3339(dt.datetime.fromtimestamp(now, dt.UTC))}
    return dataclasses.replace(cp, cursor=None, pages_read=0, passes=cp.passes + 1, status="complete",
                               last_error=None, stats=stats)


def skip(cp: Checkpoint, *, reason: str, by: str, now: float) -> Checkpoint:
    """The operator's decision on the window's recorded bad page (``stats.bad_page``), kept for good."""
    bad = cp.stats["bad_page"]
    when = rfc3339(dt.datetime.fromtimestamp(now, dt.UTC))
    unread = "not read" if bad.get("subrange") is None else "rest of its sub-range not read"
    entry = {**bad, "reason": reason, "by": by, "skipped_at": when,
             "rest_of_pass": "read on from the next page" if bad.get("next_cursor") else unread}
    stats = {k: v for k, v in cp.stats.items() if k != "bad_page"}
    stats["skipped_pages"] = [*stats.get("skipped_pages", []), entry]
    moved = past(dataclasses.replace(cp, stats=stats), entry, now=now, subrange=bad.get("subrange"))
    note = (f"page {bad['page']} skipped by {by} at {when} ({reason}); "
            + ("the next run reads on from the page after it" if bad.get("next_cursor") else
               f"it held the only way to the rest of {'the pass' if bad.get('subrange') is None else 'its sub-range'}, "
               f"which was not read"))
    return dataclasses.replace(moved, last_error=note if moved.status != "complete" else None)


def describe(stats: dict[str, Any]) -> str:
    """One line for the ledger: how many pages were skipped, and why."""
    entries = [e for e in stats.get("skipped_pages", []) if isinstance(e, dict)]
    if not entries:
        return ""
    last = entries[-1]
    rest = {"not read": "; the rest of that pass was not read",
            "rest of its sub-range not read": "; the rest of its sub-range of the window was not read"}.get(
        str(last.get("rest_of_pass")), "")
    return (f"known gap: {len(entries)} page(s) skipped by an operator (last: page {last.get('page')}, "
            f"{last.get('bytes')} bytes, sha256 {str(last.get('sha256'))[:12]}, by {last.get('by')} at "
            f"{last.get('skipped_at')}: {last.get('reason')}{rest})")
