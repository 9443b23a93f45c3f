"""The read journal's record: what one API request was and what came back, enough for any API to be
resumed from it without asking the API again.

Before the pull loop moves its cursor past a page it journals the page (``landing.put_read``); an
attempt that dies before landing it lands it from the journal. For that the record must hold:

* the cursor that was sent (for the operator, and to name the page in errors);
* the response body, byte for byte (the events, parsed again by the source);
* the response headers the source reads (``LogSource.journal_headers``): an API whose next page is
  in a header (Okta's and GitHub's ``Link``) has nothing in the body to resume from;
* the next cursor *as the source read it* at fetch time, after its own quirks, so resuming never
  depends on reading the page the same way twice;
* for a window read as sub-ranges (``subranges.py``), which sub-range the page belongs to.

Format: one line ``logpull-read/1`` + a JSON header line + the body. A journal entry written before
this format (the body alone) is still read: its next cursor comes from ``parse_page`` of the body.
No Dagster import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from logpull_dagster import json_codec

MAGIC = b"logpull-read/1\n"


@dataclass(frozen=True)
class JournalRecord:
    cursor: str | None
    next_cursor: str | None
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    legacy: bool = False  # the body alone (journaled before this format): next_cursor is unknown
    subrange: int | None = None  # the sub-range of a split pass it was read for (subranges.py)


def encode(cursor: str | None, next_cursor: str | None, body: bytes, headers: Mapping[str, str],
           subrange: int | None = None) -> bytes:
    fields: dict[str, object] = {"cursor": cursor, "next_cursor": next_cursor, "headers": dict(headers)}
    if subrange is not None:
        fields["subrange"] = subrange
    head = json_codec.dumps(fields)
    return b"".join((MAGIC, head, b"\n", body))


def decode(data: bytes) -> JournalRecord:
    if not data.startswith(MAGIC):
        return JournalRecord(None, None, data, legacy=True)
    end = data.index(b"\n", len(MAGIC))
    head = json_codec.loads(data[len(MAGIC):end])
    sub = head.get("subrange")
    return JournalRecord(head["cursor"], head["next_cursor"], data[end + 1:], head.get("headers") or {},
                         subrange=sub if isinstance(sub, int) else None)
