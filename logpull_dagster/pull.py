"""The worker loop: read one window of one source completely, surviving any crash.

THE INVARIANT. For one window, until the API gives no next token:
  1. fetch the page for the stored cursor (none: the first page);
  2. keep events whose own time lies in [start, end) and whose id is not landed yet for this window
     (the store keeps the ids of committed pages, so memory stays one page whatever the window size);
  3. LAND the page durably under (window, page seq, lease epoch), replacing an unfinished earlier copy;
  4. THEN CHECKPOINT next cursor, page seq + 1 and counts, conditional on still holding the lease;
  5. no next token: the pass is complete.
So the checkpoint never runs ahead of landed data (a crash loses nothing), the page in flight at a
crash is read again and replaces its own unfinished copy, and event ids deduplicate the rest (a
crash, a rejected token or a re-read duplicates nothing).

Everything here is plain Python: no Dagster import. ``assets.py`` wires it into Dagster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import gc
import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from logpull_dagster.checkpoints import Checkpoint, CheckpointStore, LeaseHeld, LeaseLost, Stage
from logpull_dagster.landing import LandingStore
from logpull_dagster.sources import BadPage, Event, LogSource, SourceError, TokenRejected
from logpull_dagster.windows import Window, rfc3339, rfc3339_ms

# A window whose token is rejected again and again is not converging; fail it rather than loop.
MAX_TOKEN_RESTARTS = 3


class BudgetExhausted(Exception):
    """The attempt spent its time budget; progress is checkpointed, retry to resume from the token."""

    def __init__(self, result: PullResult) -> None:
        self.result = result
        super().__init__(
            f"window {result.window} of {result.source!r}: time budget spent after {result.pages_read} pages "
            f"this attempt; checkpointed at page {result.checkpoint.pages_read + 1} of the pass, "
            f"the retry resumes from there"
        )


class PullFailed(RuntimeError):
    """Reading a page failed; nothing of that page was landed or checkpointed."""


@dataclass
class PullResult:
    """What one attempt did, plus the window's checkpoint as it left it."""

    source: str
    window: Window
    checkpoint: Checkpoint
    complete: bool = False
    resumed_from_page: int | None = None
    pages_read: int = 0
    pages_landed: int = 0
    events_landed: int = 0
    late_events: int = 0
    duplicates_dropped: int = 0
    outside_window_dropped: int = 0
    http_retries: int = 0
    token_restarts: int = 0
    elapsed: float = 0.0
    landed: list[str] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.events_landed / self.elapsed if self.elapsed > 0 else 0.0


@dataclass(frozen=True)
class Progress:
    window: Window
    page: int
    landed_in_page: int
    events_this_attempt: int
    events_per_second: float


def acquire(checkpoints: CheckpointStore, source: str, stage: Stage, window: Window, *, owner: str,
            lease_ttl: float, lease_wait: float, clock: Callable[[], float] = time.time,
            sleep: Callable[[float], None] = time.sleep) -> Checkpoint:
    """Take the window's lease, waiting up to ``lease_wait`` for another holder's lease to lapse.

    A live holder renews its lease after every page, so it outlasts the wait and this raises
    LeaseHeld; a dead holder's lease lapses within ``lease_ttl`` and this run takes over.
    """
    deadline = clock() + lease_wait
    while True:
        try:
            return checkpoints.acquire(source, stage, rfc3339(window.start), rfc3339(window.end),
                                       owner=owner, ttl=lease_ttl, now=clock())
        except LeaseHeld as held:
            now = clock()
            if now >= deadline or held.expires > deadline:
                raise
            sleep(min(max(held.expires - now, 0.05), 1.0))


def pull_window(
    source: LogSource,
    window: Window,
    *,
    source_name: str,
    checkpoints: CheckpointStore,
    landing: LandingStore,
    owner: str,
    lease_ttl: float,
    lease_wait: float = 0.0,
    time_budget: float = float("inf"),
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    on_page: Callable[[Progress], None] | None = None,
) -> PullResult:
    """Read ``window`` from its checkpoint until the API has no next page (see the module docstring).

    Raises BudgetExhausted (retry: it resumes), PullFailed (a page could not be read or trusted),
    LeaseHeld (another run holds the window) or LeaseLost (another run took it over).
    """
    t0 = monotonic()
    cp = acquire(checkpoints, source_name, "pull", window, owner=owner, lease_ttl=lease_ttl,
                 lease_wait=lease_wait, clock=clock)
    result = PullResult(source_name, window, cp)
    # A page of 1,000 events allocates ~100k small objects; with Dagster loaded, each full collection
    # walks the whole heap again (measured: ~40% of the pull). Objects alive now are long-lived: move
    # them out of the collector's way while this window is read.
    gc.freeze()
    try:
        # Pages at or above page_seq were landed by an attempt that died before its checkpoint.
        landing.discard(source_name, window, cp.page_seq)
        if cp.cursor is not None:
            result.resumed_from_page = cp.pages_read + 1
        while True:
            if result.pages_read and monotonic() - t0 >= time_budget:
                result.checkpoint = cp = checkpoints.release(cp, now=clock())
                result.elapsed = monotonic() - t0
                raise BudgetExhausted(result)
            page_no = cp.pages_read + 1
            try:
                page = source.fetch_page(window, cp.cursor)
                if cp.cursor is not None and page.next_cursor == cp.cursor and not page.events:
                    raise BadPage("the API returned the page token it was sent, with no items "
                                  "(a known Reports API bug); stopping instead of looping")
            except TokenRejected as e:
                if result.token_restarts >= MAX_TOKEN_RESTARTS:
                    raise PullFailed(f"window {window} of {source_name!r}, page {page_no}: {e}; "
                                     f"{result.token_restarts} restarts from page one did not help") from None
                # Restart the pass from page one; ids already landed keep the result exact.
                result.token_restarts += 1
                cp = dataclasses.replace(cp, cursor=None, pages_read=0, stats=_bump(cp.stats, "token_restarts", 1))
                result.checkpoint = cp = checkpoints.commit(cp, ttl=lease_ttl, now=clock())
                continue
            except SourceError as e:
                raise PullFailed(f"window {window} of {source_name!r}, page {page_no}: {e}; "
                                 f"nothing of this page was landed or checkpointed") from None
            result.pages_read += 1
            result.http_retries += page.http_retries

            # In the window, and not landed yet: by committed pages (the store knows) or earlier on this page.
            inside: dict[bytes, Event] = {}
            for ev in page.events:
                if not window.contains(ev.time):
                    result.outside_window_dropped += 1
                    continue
                digest = id_digest(ev.id)
                if digest in inside:
                    result.duplicates_dropped += 1
                else:
                    inside[digest] = ev
            known = checkpoints.known_ids(source_name, cp.window_start, inside.keys()) if inside else set()
            result.duplicates_dropped += len(known)
            fresh = {d: ev for d, ev in inside.items() if d not in known}
            keep = list(fresh.values())

            stats = dict(cp.stats)
            page_seq = cp.page_seq
            if keep:
                pulled_at = rfc3339(dt.datetime.now(dt.UTC))
                lines = [orjson.dumps({"id": ev.id, "time": rfc3339_ms(ev.time), "pulled_at": pulled_at,
                                       "event": ev.raw}) for ev in keep]
                result.landed.append(landing.put_page(source_name, window, page_seq, cp.epoch, lines))
                page_seq += 1
                result.pages_landed += 1
                result.events_landed += len(keep)
                times = [ev.time for ev in keep]
                stats["first_event_time"] = min(filter(None, [stats.get("first_event_time"), rfc3339(min(times))]))
                stats["last_event_time"] = max(filter(None, [stats.get("last_event_time"), rfc3339(max(times))]))
                if cp.passes:  # the window was read completely before: these events were published late
                    stats["late_events"] = stats.get("late_events", 0) + len(keep)
                    result.late_events += len(keep)
                page_names = Counter(n for ev in keep for n in (ev.names or ("(none)",)))
                names = Counter(stats.get("names", {}))
                names.update(page_names)
                stats["names"] = dict(names)
            if page.http_retries:
                stats["http_retries"] = stats.get("http_retries", 0) + page.http_retries

            done = page.next_cursor is None
            if done:
                stats["last_read_at"] = rfc3339(dt.datetime.fromtimestamp(clock(), dt.UTC))
            cp = dataclasses.replace(
                cp,
                cursor=page.next_cursor,
                page_seq=page_seq,
                pages_read=0 if done else cp.pages_read + 1,
                events=cp.events + len(keep),
                passes=cp.passes + 1 if done else cp.passes,
                status="complete" if done else cp.status,
                last_error=None if done else cp.last_error,
                stats=stats,
            )
            result.checkpoint = cp = checkpoints.commit(cp, ttl=lease_ttl, now=clock(), landed_ids=fresh.keys())
            if on_page is not None:
                elapsed = monotonic() - t0
                on_page(Progress(window, page_no, len(keep), result.events_landed,
                                 result.events_landed / elapsed if elapsed > 0 else 0.0))
            if done:
                break
        result.complete = True
        result.checkpoint = checkpoints.release(cp, now=clock())
        result.elapsed = monotonic() - t0
        return result
    except BudgetExhausted:
        raise
    except LeaseLost:
        raise
    except BaseException as e:
        # Record why, keep the cursor: the next attempt resumes where this one stopped.
        failed = dataclasses.replace(
            cp, status="complete" if cp.status == "complete" else "failed",
            last_error=f"{type(e).__name__}: {e}"[:1000],
        )
        with contextlib.suppress(LeaseLost):  # taken over: the new holder's row is not ours to write
            result.checkpoint = checkpoints.release(failed, now=clock())
        raise
    finally:
        gc.unfreeze()


def _bump(stats: dict[str, object], key: str, n: int) -> dict[str, object]:
    value = stats.get(key, 0)
    return {**stats, key: (value if isinstance(value, int) else 0) + n}


def id_digest(event_id: str) -> bytes:
    """What the store keeps of an event id: 16 bytes of BLAKE2b (collisions: ~1e-26 per window at 1M events)."""
    return hashlib.blake2b(event_id.encode(), digest_size=16).digest()
