"""Recovering a window whose landed pages (or journaled reads) were lost: ``logpull recover``.

The landing store holds the only copy of a window's events between the API and the SIEM. When a page
the checkpoint says landed is gone (deleted by hand, expired by an S3 lifecycle rule, gone with its
bucket), delivery stops at it (``deliver.LandedPageMissing``) and the window is a gap; a journaled read
that is gone stops the pull the same way. Neither gets better by retrying, and a plain ``logpull
reset`` is not enough: the store still records the lost pages' event ids as landed, so a re-read would
skip exactly the events that are missing.

``recover_window`` makes the window whole again, holding both its leases (pull and delivery), so no run
reads or delivers it meanwhile:

1. it marks the pull row as being recovered (``stats["recovery"]``), and puts its cursor back to page
   one with nothing journaled: a recovery that dies half-way leaves the mark, the pull refuses to run
   on a marked window, and running ``logpull recover`` again finishes the job;
2. it forgets every event id of the window (``CheckpointStore.forget_ids``) and records again those of
   the pages still landed, read from the pages themselves: the ids of the lost pages are dropped;
3. it records the lost pages in ``stats["lost_pages"]`` (delivery passes over them), drops the mark,
   and leaves the window failed ("recovered"), so the schedule reads it again from page one; every
   event not in a surviving page lands again, in new pages after the old ones;
4. it sets each delivery row (one per sink of the stream) to reconcile (``stats["reconciling"]``): the
   re-landed pages are written only with the events the sink does not hold by its own record
   (``Sink.delivered_ids``), so events of lost pages that were delivered before are not sent twice. A
   sink that cannot tell what it holds delivers them again (at-least-once), as its docstring says.

A window whose lost pages had all been delivered needs no recovery (the SIEM has their events; only
the landing copy is gone): ``survey`` says so and ``logpull recover`` leaves it alone.

No Dagster import.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from logpull_dagster import subranges
from logpull_dagster.checkpoints import Checkpoint, CheckpointStore, LeaseHeld
from logpull_dagster.json_codec import loads
from logpull_dagster.landing import LandingMissing, LandingStore
from logpull_dagster.pull import LANDED_HEAD, id_digest
from logpull_dagster.windows import Window, epoch_us, parse_time, rfc3339

RECOVER_OWNER = "logpull-recover"
# Recoveries kept in a window's history (stats["recoveries"]): the newest.
MAX_HISTORY = 20


def lost_pages(stats: dict[str, Any]) -> set[int]:
    """The landed pages a recovery recorded as lost (``stats["lost_pages"]``: ``[first, last]`` ranges)."""
    out: set[int] = set()
    for span in stats.get("lost_pages", ()):
        if isinstance(span, list) and len(span) == 2 and all(isinstance(n, int) for n in span):
            out.update(range(span[0], span[1] + 1))
    return out


def ranges(pages: Iterable[int]) -> list[list[int]]:
    """``[3, 7, 8, 9]`` as ``[[3, 3], [7, 9]]``: what the checkpoint keeps (a window may lose thousands)."""
    out: list[list[int]] = []
    for n in sorted(set(pages)):
        if out and out[-1][1] == n - 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return out


def describe(pages: Iterable[int]) -> str:
    """``3, 7-9``"""
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges(pages))


@dataclass(frozen=True)
class Survey:
    """What is gone of one window: landed ``pages`` (not recorded lost before) and journaled ``reads``;
    ``undelivered``: of those pages, the ones a delivery (to any of the stream's sinks) has not passed yet."""

    pull: Checkpoint | None
    deliveries: dict[str, Checkpoint | None]  # by delivery stage
    pages: list[int]
    reads: list[int]
    kept: int  # landed pages still there

    @property
    def undelivered(self) -> list[int]:
        done = min((d.delivered_pages if d is not None else 0) for d in self.deliveries.values()) \
            if self.deliveries else 0
        return [p for p in self.pages if p >= done]

    @property
    def needed(self) -> bool:
        """Whether events are missing from the SIEM and the landing store both: recovery must read again."""
        return bool(self.undelivered or self.reads)


def survey(store: CheckpointStore, landing: LandingStore, source: str, window: Window,
           stages: Sequence[str] = ("deliver",)) -> Survey:
    """Compare what the window's checkpoint says landed with what the landing store holds (reads nothing
    but listings and the journaled reads that should be pending); ``stages``: the stream's deliveries."""
    start = rfc3339(window.start)
    pull = store.get(source, "pull", start)
    deliveries = {stage: store.get(source, stage, start) for stage in stages}
    if pull is None:
        return Survey(None, deliveries, [], [], 0)
    found = {p.seq for p in landing.pages(source, window, pull.landed_pages)}
    known_lost = lost_pages(pull.stats)
    pages = [n for n in range(pull.landed_pages) if n not in found and n not in known_lost]
    reads = []
    for n in range(pull.reads - pull.journaled, pull.reads):
        try:
            landing.get_read(source, window, n)
        except LandingMissing:
            reads.append(n)
    return Survey(pull, deliveries, pages, reads, len(found))


@dataclass(frozen=True)
class Recovered:
    window: Window
    lost_pages: list[int]
    lost_reads: list[int]
    kept_pages: int
    kept_events: int


def recover_window(store: CheckpointStore, landing: LandingStore, source: str, window: Window, *, by: str,
                   ttl: float, clock: Callable[[], float], stages: Sequence[str] = ("deliver",)) -> Recovered:
    """Recover ``window`` (the module docstring); ``stages``: the delivery stages of every sink of the
    stream. Raises LeaseHeld, touching nothing, while a run holds its pull or one of its deliveries."""
    start, end = rfc3339(window.start), rfc3339(window.end)
    held: list[tuple[Checkpoint, str]] = []  # each row taken, with its status before
    try:
        for stage in ("pull", *stages):
            before = store.get(source, stage, start)
            row = store.acquire(source, stage, start, end, owner=RECOVER_OWNER, ttl=ttl, now=clock())
            held.append((row, before.status if before is not None else "new"))
    except LeaseHeld:  # put the rows taken back as they were, leases aside
        for row, status in held:
            store.release(dataclasses.replace(row, status=status), now=clock())  # type: ignore[arg-type]
        raise
    (pull, _), sends = held[0], held[1:]
    seen = survey(store, landing, source, window, stages)  # again, under every lease: nothing changes it now
    when = rfc3339(dt.datetime.fromtimestamp(clock(), dt.UTC))
    pull = store.commit(dataclasses.replace(
        pull, cursor=None, pages_read=0, journaled=0, status="failed",
        last_error=f"a `logpull recover` started by {by} at {when} did not finish; run it again",
        stats={**subranges.save(pull.stats, None),  # a split pass's sub-ranges go with its cursor
               "recovery": {"by": by, "started_at": when, "lost_pages": ranges(seen.pages),
                            "lost_reads": seen.reads}}), ttl=ttl, now=clock())
    store.forget_ids(pull, now=clock())
    kept_events = 0
    survivors = landing.pages(source, window, pull.landed_pages)
    for page in survivors:
        ids = landed_ids(landing.read_lines(page), page.location)
        pull = store.commit(pull, ttl=ttl, now=clock(), landed_ids=ids)  # renews the lease too
        kept_events += len(ids)
    history = [*pull.stats.get("recoveries", []), {
        "at": when, "by": by, "lost_pages": ranges(seen.pages), "lost_reads": len(seen.reads),
        "kept_pages": len(survivors), "kept_events": kept_events}][-MAX_HISTORY:]
    stats = {k: v for k, v in pull.stats.items() if k not in ("recovery", "bad_page", "pass_cursors")}
    stats.update(lost_pages=ranges(lost_pages(pull.stats) | set(seen.pages)), recoveries=history, recovering=True)
    lost = f"landed page(s) {describe(seen.pages)}" if seen.pages else ""
    if seen.reads:
        lost += (" and " if lost else "") + f"{len(seen.reads)} journaled read(s)"
    store.release(dataclasses.replace(
        pull, events=kept_events, status="failed", stats=stats,
        last_error=f"recovered by {by} at {when} ({lost or 'nothing'} lost); the next run reads the window again "
                   f"from page one and delivery sends only what the SIEM does not hold"), now=clock())
    for send, sent_status in sends:
        send_stats = {k: v for k, v in send.stats.items() if k != "missing_page"}
        store.release(dataclasses.replace(
            send, status="complete" if sent_status == "complete" else "failed",
            last_error=None if sent_status == "complete" else f"recovered by {by} at {when}: delivery resumes once "
                                                              f"the window is read again",
            stats={**send_stats, "reconciling": True}), now=clock())
    return Recovered(window, seen.pages, seen.reads, len(survivors), kept_events)


def landed_ids(lines: list[bytes], where: str) -> list[tuple[int, bytes]]:
    """``(time_us, id digest)`` of each landed line, as the pull recorded them (``pull.py``)."""
    out = []
    for n, line in enumerate(lines, 1):
        m = LANDED_HEAD.match(line)
        if m is None:
            raise ValueError(f"{where}, line {n}: not a landed event (no id/time envelope); cannot recover "
                             f"the window from it: move the file away and run `logpull recover` again")
        event_id = loads(b'"' + m.group(1) + b'"')
        out.append((epoch_us(parse_time(m.group(2).decode())), id_digest(event_id)))
    return out
