"""The worker loop: read one window of one source completely, surviving any crash.

THE INVARIANT. For one window, until the API gives no next token:
  1. fetch the page for the stored cursor (none: the first page); the source validates every item;
  2. keep events whose own time lies in [start, end) and whose id is not landed yet for this window
     (the store keeps the ids of committed pages, so memory stays one page whatever the window size);
  3. LAND the page durably under (window, page seq, lease epoch), replacing an unfinished earlier copy;
  4. THEN CHECKPOINT next cursor, page seq + 1 and counts, conditional on still holding the lease;
  5. no next token: the pass is complete.
So the checkpoint never runs ahead of landed data (a crash loses nothing), the page in flight at a
crash is read again and replaces its own unfinished copy, and event ids deduplicate the rest (a
crash, a rejected token or a re-read duplicates nothing).

HOW IT IS SCHEDULED. Steps 2-4 cost as much as the read itself (dedupe, the id index, writing the
page), so they run beside the next read instead of before it, without giving up "at most the page
in flight is read twice after a crash": the response body of a page is first *journaled* untouched
(``landing.put_read``) and the cursor advanced past it in the same checkpoint that records it as
pending (``journaled``); then the next request goes out while a second thread lands the journaled
page (steps 2-4, its checkpoint clearing the pending mark). A crash after the journal checkpoint
costs no read: the next attempt lands the pending reads from the journal before reading on. Both
threads write the one checkpoint row, each its own fields, under one lock.

THE LEASE WHILE A PAGE IS SLOW. The lease is renewed by every commit, so a run that is reading
normally keeps it. One request can take longer than ``lease_ttl`` (the HTTP client's retries and
their waits: a ``Retry-After``, Okta's rate-limit reset, the shared rate budget's slot), and another
run could then take the window over from a live one (safe: fencing fails the slower run, but it is a
failed attempt). So while a page is being fetched, a keeper thread renews the lease every third of
``lease_ttl`` that passes without a commit, for at most ``MAX_FETCH_KEEPALIVE`` per page: longer than
any fetch the client allows by default, short enough that a stuck process frees its window. A renewal
is a commit that changes nothing but the lease; it never moves the cursor.

WHEN A WINDOW IS DUE. A window is read only once both this host's clock and the API's have passed
its end + ``settle_lag``: a host clock running fast would otherwise read the current hour as finished
and mark it complete with its last minutes missing. This host's clock is asked before the first
request of a pass; the API's clock is its ``Date`` header (``Page.server_time``) on the pass's first
page. Only the first page: a pass whose first page the API served after the window settled by its own
clock reads a settled window, and every later page is served later still. A first page answered too
early is dropped unread (nothing of it journaled, landed or checkpointed); a shortfall of at most
``SETTLE_WAIT_MAX`` is waited out within the time budget, a longer one fails the window
(``WindowNotSettled``), which the schedule requests again on a later tick. The gap between the two
clocks (``Date`` minus this host's clock when the answer arrived: it reads up to a second low, as
``Date`` has whole seconds) is kept in the checkpoint (``stats["api_clock_skew_s"]``).

Everything here is plain Python: no Dagster import. ``assets.py`` wires it into Dagster.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import gc
import hashlib
import math
import queue
import re
import socket
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from logpull_dagster import journal, json_codec, skips, subranges
from logpull_dagster._version import __version__
from logpull_dagster.checkpoints import Checkpoint, CheckpointStore, LeaseLost
from logpull_dagster.checkpoints.lease import acquire
from logpull_dagster.landing import LandingMissing, LandingStore
from logpull_dagster.rate import RateGate, RateWaitPastDeadline
from logpull_dagster.redact import Redactor, error_text, redact
from logpull_dagster.sources import BadPage, Event, LogSource, Page, SourceError, TokenRejected
from logpull_dagster.windows import Window, epoch_us, rfc3339, rfc3339_ms

# A window whose token is rejected again and again is not converging; fail it rather than loop.
MAX_TOKEN_RESTARTS = 3
# Cursors of the pass kept across budget retries (to catch a cycle longer than one attempt): 16 hex
# characters each, written once per budget, not per page.
MAX_KEPT_CURSORS = 20_000
# How long one page's fetch keeps its lease alive (see THE LEASE WHILE A PAGE IS SLOW). The client's
# defaults allow 6 attempts of at most 30 s and 5 waits of at most 60 s: 8 minutes.
MAX_FETCH_KEEPALIVE = 15 * 60.0
# The longest one attempt waits, in all, for a window to settle (by this host's clock or the API's, see
# WHEN A WINDOW IS DUE): the second or so between a window's end and a run started right at it. A
# longer shortfall is a clock that is wrong, or a run started early by hand: fail, do not park a worker.
SETTLE_WAIT_MAX = 60.0


class BudgetExhausted(Exception):
    """The attempt spent its time budget; progress is checkpointed, retry to resume from the token.

    ``progress``: the attempt moved the cursor to pages not read before in this pass. The loop fails a
    window whose API repeats a cursor, so every attempt that read a page made progress; one that read
    none did not, and must not be retried as if it had.
    """

    def __init__(self, result: PullResult) -> None:
        self.result = result
        self.progress = result.pages_read > 0
        super().__init__(
            f"window {result.window} of {result.source!r}: time budget spent after {result.pages_read} pages "
            f"this attempt; checkpointed at page {result.checkpoint.pages_read + 1} of the pass, "
            f"the retry resumes from there"
        )


class PullFailed(RuntimeError):
    """Reading a page failed; nothing of that page was landed or checkpointed. The message is redacted.

    ``permanent``: retrying now cannot help (credentials refused, a redirect, an API that loops); the
    window fails at once and keeps its checkpoint for the next run.
    """

    def __init__(self, message: str, *, permanent: bool = False, bad_page: dict[str, Any] | None = None,
                 tally: RunTally | None = None) -> None:
        self.permanent, self.bad_page = permanent, bad_page  # bad_page: see skips.py
        self.tally = tally or RunTally()  # the run's attempts at the window, this one counted as a fault
        super().__init__(message)


class WindowNotSettled(PullFailed):
    """The window has not settled by this host's clock or the API's (module docstring, WHEN A WINDOW IS
    DUE) by more than this attempt may wait: nothing of it was read for this pass. Permanent for this
    run; the schedule requests the window again once it is due."""


@dataclass
class RunTally:
    """What every attempt of one run at one window did, kept in the window's checkpoint row
    (``stats["run"]``), not in the process: Dagster retries a step in a new process under the
    multiprocess executor, and in a new pod under step-per-pod executors, so counts that must bound
    retries have to live where every attempt finds them. A new run starts a new tally.

    ``faults``: attempts that failed on a fault or read nothing in their budget (bounded by the
    source's ``retries``); ``budget_retries``: attempts that spent their time budget having made
    progress; ``done``: the window was read to its end in this run (a retry of the step skips it);
    ``rate_wait``: seconds its requests waited for the account's rate budget (``rate.py``).
    """

    run: str = ""
    attempts: int = 0
    faults: int = 0
    budget_retries: int = 0
    pages_read: int = 0
    events_landed: int = 0
    late_events: int = 0
    http_retries: int = 0
    token_restarts: int = 0
    duplicates_dropped: int = 0
    outside_window_dropped: int = 0
    elapsed: float = 0.0
    rate_wait: float = 0.0
    resumed_from_page: int | None = None
    done: bool = False
    gave_up: bool = False  # failed for good in this run (retrying cannot help): a retry of the step skips it

    @classmethod
    def of(cls, cp: Checkpoint | None, run: str) -> RunTally:
        """The tally of ``run`` recorded in ``cp`` (a fresh one if another run wrote it)."""
        found = cp.stats.get("run") if cp is not None else None
        if not isinstance(found, dict) or found.get("run") != run:
            return cls(run=run)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in found.items() if k in names})

    def add(self, r: PullResult) -> None:
        if self.resumed_from_page is None:  # the first page a checkpoint let this run resume from
            self.resumed_from_page = r.resumed_from_page
        self.attempts += 1
        self.pages_read += r.pages_read
        self.events_landed += r.events_landed
        self.late_events += r.late_events
        self.http_retries += r.http_retries
        self.token_restarts += r.token_restarts
        self.duplicates_dropped += r.duplicates_dropped
        self.outside_window_dropped += r.outside_window_dropped
        self.elapsed = round(self.elapsed + r.elapsed, 3)
        self.rate_wait = round(self.rate_wait + r.rate_wait, 3)

    def into(self, cp: Checkpoint) -> Checkpoint:
        return dataclasses.replace(cp, stats={**cp.stats, "run": dataclasses.asdict(self)})


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
    pages_skipped: int = 0  # bad pages an operator skipped before, met again (skips.py)
    elapsed: float = 0.0
    rate_wait: float = 0.0  # of elapsed, the seconds spent waiting for the rate budget (rate.py)
    # The API's clock minus this host's at its latest answer this attempt (its Date header), when it sent one.
    api_clock_skew: float | None = None
    settle_wait: float = 0.0  # of elapsed, the seconds spent waiting for the window to settle
    landed: list[str] = field(default_factory=list)
    tally: RunTally = field(default_factory=RunTally)  # the run's attempts at the window, this one included

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


class Readers:
    """The requests one run may have in flight against one source, whatever windows they read: the
    source's ``concurrent_windows``. One is shared by every window of a run, so a split window's
    sub-ranges (``subranges.py``) and whole windows draw from the same quota. ``peak``: the most
    requests that were in flight at once (the benchmark and the tests check it)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0

    @contextlib.contextmanager
    def slot(self) -> Any:
        with self._slots:
            with self._lock:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
            try:
                yield
            finally:
                with self._lock:
                    self.in_flight -= 1


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
    redactor: Redactor | None = None,
    rate: RateGate | None = None,
    settle_lag: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    readers: Readers | None = None,
) -> PullResult:
    """Read ``window`` from its checkpoint until the API has no next page (see the module docstring).

    ``rate``: the gate ``source`` draws its account's request budget from, if any; its waits are
    counted in the result (``rate_wait``). A request whose slot lies past the time budget ends the
    attempt as a spent budget does.

    ``settle_lag`` (seconds): a pass starts only once ``clock()`` and the API's clock have both passed
    the window's end + ``settle_lag`` (module docstring, WHEN A WINDOW IS DUE); None checks neither.
    ``sleep`` waits out a short shortfall (tests pass one that moves their ``clock``).

    ``readers``: the run's quota of requests in flight (``Readers``); with room for more than one, a busy
    window whose source takes any time range is read as sub-ranges at once (``subranges.py``). None: one
    request at a time, page after page.

    Raises BudgetExhausted (retry: it resumes), PullFailed (a page could not be read or trusted, or
    anything else went wrong: its text redacted by ``redactor``; WindowNotSettled, a subclass, when the
    window is not due yet), LeaseHeld (another run holds the window) or LeaseLost (another run took it over).
    """
    t0 = monotonic()
    cp = acquire(checkpoints, source_name, "pull", window, owner=owner, lease_ttl=lease_ttl,
                 lease_wait=lease_wait, clock=clock)
    # The pass's cursors kept by a budget retry: in memory for this attempt, out of every commit.
    kept = cp.stats.get("pass_cursors") if cp.cursor is not None else None
    if "pass_cursors" in cp.stats:
        cp = dataclasses.replace(cp, stats={k: v for k, v in cp.stats.items() if k != "pass_cursors"})
    run = _WindowRun(source, window, source_name, checkpoints, landing, lease_ttl, clock,
                     PullResult(source_name, window, cp, tally=RunTally.of(cp, owner)), rate, settle_lag, sleep,
                     readers)
    if isinstance(kept, dict):
        run.seen.update({str(k): int(v) for k, v in kept.items() if isinstance(v, int)})
    result = run.result
    # A page of 1,000 events allocates ~100k small objects; with Dagster loaded, each full collection
    # walks the whole heap again (measured: ~40% of the pull). Objects alive now are long-lived: move
    # them out of the collector's way while this window is read.
    gc.freeze()
    try:
        if isinstance(unfinished := cp.stats.get("recovery"), dict):
            raise PullFailed(f"window {window} of {source_name!r}: a `logpull recover` of this window started by "
                             f"{unfinished.get('by')} at {unfinished.get('started_at')} did not finish; run it "
                             f"again before reading the window (docs/operations.md, 'A landed page was lost')",
                             permanent=True)
        pending = range(cp.reads - cp.journaled, cp.reads)
        # Pages at or above page_seq were landed by an attempt that died before its checkpoint; reads
        # outside the pending range were landed already, or never checkpointed.
        landing.discard(source_name, window, cp.page_seq, keep_reads=pending)
        if cp.cursor is not None or subranges.load(cp.stats) is not None:
            result.resumed_from_page = cp.pages_read + 1
        # Read by an attempt that died before landing them: land them from the journal.
        for i, n in enumerate(pending):
            try:
                data, epoch = landing.get_read(source_name, window, n)
            except LandingMissing as e:
                raise PullFailed(
                    f"window {window} of {source_name!r}: {e}. It was read and checkpointed but not landed yet "
                    f"(page {cp.pages_read - cp.journaled + i + 1} of the pass), and the cursor has moved past it, "
                    f"so the window cannot go on; nothing of it was landed. `logpull recover --source "
                    f"{source_name} --window {rfc3339(window.start)}` reads the window again "
                    f"(docs/operations.md, 'A landed page was lost')", permanent=True) from None
            record = journal.decode(data)
            items, next_cursor = source.parse_page(record.body, record.headers)
            if not record.legacy:  # the cursor as the source read it when it fetched the page
                next_cursor = record.next_cursor
            landed = run.land(n, epoch, items, next_cursor, live=False, sub=record.subrange)
            run.report(on_page, cp.pages_read - cp.journaled + i + 1, landed, monotonic() - t0)
        # Unless the journal held the pass's last page, read on: page after page, or the pass's sub-ranges.
        if not run.pass_done and (subranges.load(run.cp.stats) is not None
                                  or _read(run, on_page, t0, time_budget, monotonic)):
            _read_split(run, on_page, t0, time_budget, monotonic)
        result.complete = True
        run.stop_clock(monotonic() - t0)
        result.tally.add(result)
        result.tally.done = True
        result.checkpoint = checkpoints.release(result.tally.into(run.cp), now=clock())
        return result
    except (BudgetExhausted, LeaseLost):
        raise
    except BaseException as e:
        # Record why, keep the cursor: the next attempt resumes where this one stopped. The source's
        # credentials as they are now (an OAuth token refreshed mid-run is in no variable) are masked too.
        redactor = (redactor or Redactor()).extended(source.secrets())
        text = error_text(e, redactor)
        stats = run.cp.stats
        if isinstance(e, PullFailed) and e.bad_page is not None:
            stats = {**stats, "bad_page": e.bad_page}
        failed = dataclasses.replace(
            run.cp, status="complete" if run.cp.status == "complete" else "failed", last_error=text, stats=stats,
        )
        run.stop_clock(monotonic() - t0)
        tally = result.tally
        tally.add(result)
        if not (isinstance(e, PullFailed) and e.permanent):
            tally.faults += 1
        else:
            tally.gave_up = True
        with contextlib.suppress(LeaseLost):  # taken over: the new holder's row is not ours to write
            result.checkpoint = checkpoints.release(tally.into(failed), now=clock())
        if isinstance(e, PullFailed):
            raise type(e)(redact(str(e), redactor), permanent=e.permanent, tally=tally) from None
        if not isinstance(e, Exception):  # KeyboardInterrupt, SystemExit: not ours to turn into a fault
            raise
        # Anything else (a full disk, a bug) is a fault of this attempt. Its text may hold what an API
        # or a library put in it: it leaves redacted, with where it happened, never with the original.
        where = redact("".join(traceback.format_exception(e)[-6:]), redactor)
        raise PullFailed(f"window {window} of {source_name!r}: {text}\n{where}", tally=tally) from None
    finally:
        gc.unfreeze()


def _spend_budget(run: _WindowRun, t0: float, monotonic: Callable[[], float]) -> BudgetExhausted:
    """End the attempt on its spent time budget: count it in the run's tally, keep the pass's cursors
    for the next attempt's cycle checks, release the window. Returns the exception to raise."""
    result = run.result
    kept = dict(list(run.seen.items())[-MAX_KEPT_CURSORS:])
    run.stop_clock(monotonic() - t0)
    result.tally.add(result)
    if result.pages_read:
        result.tally.budget_retries += 1
    else:  # read nothing new: a fault, not a budget (see BudgetExhausted)
        result.tally.faults += 1
    cp = result.tally.into(dataclasses.replace(run.cp, stats={**run.cp.stats, "pass_cursors": kept}))
    result.checkpoint = run.store.release(cp, now=run.clock())
    return BudgetExhausted(result)


def _read(run: _WindowRun, on_page: Callable[[Progress], None] | None, t0: float, time_budget: float,
          monotonic: Callable[[], float]) -> bool:
    """Steps 1 and journal in this thread; steps 2-4 of the previous page in the lander thread. True when
    the pass split after its first page (``subranges.py``): the caller reads the sub-ranges."""
    result, window, source_name = run.result, run.window, run.source_name
    landing_page: Future[int] | None = None
    landing_page_no = 0
    # Set when the rate budget's next slot lies past the budget: the attempt stops as if it were spent.
    out_of_time = False
    with ThreadPoolExecutor(1, thread_name_prefix=f"logpull-land-{source_name}") as lander, \
            _LeaseKeeper(run) as keeper:
        try:
            while True:
                if result.pages_read and (out_of_time or monotonic() - t0 >= time_budget):
                    if landing_page is not None:
                        run.report(on_page, landing_page_no, landing_page.result(), monotonic() - t0)
                        landing_page = None
                    raise _spend_budget(run, t0, monotonic)
                cp = run.cp
                page_no = cp.pages_read + 1
                if cp.cursor is not None:
                    run.seen.setdefault(_cursor_digest(cp.cursor), page_no)
                # After the attempt's first page, no HTTP retry (or its wait) may run past the budget.
                deadline = t0 + time_budget if result.pages_read and time_budget != float("inf") else None
                first = cp.cursor is None  # the first page of a pass: the one read only once the window settled
                if first:
                    run.await_host_settled(keeper, t0 + time_budget, monotonic)
                try:
                    with run.slot(), keeper.fetching():
                        page = run.source.fetch_page(window, cp.cursor, deadline)
                    answered_at = run.clock()
                except TokenRejected as e:
                    if result.token_restarts >= MAX_TOKEN_RESTARTS:
                        raise PullFailed(f"window {window} of {source_name!r}, page {page_no}: {e}; "
                                         f"{result.token_restarts} restarts from page one did not help") from None
                    # Restart the pass from page one; ids already landed keep the result exact.
                    result.token_restarts += 1
                    run.seen.clear()
                    run.commit(lambda c: dataclasses.replace(c, cursor=None, pages_read=0,
                                                             stats=_bump(c.stats, "token_restarts", 1)))
                    run.pass_first_read = run.cp.reads  # a page still landing from before is of the old pass
                    continue
                except SourceError as e:
                    if deadline is not None and (isinstance(e, RateWaitPastDeadline) or monotonic() >= deadline):
                        out_of_time = True  # cut short by the budget, not failed: the check above stops the attempt
                        continue
                    entry = _skipped_before_or_fail(cp.stats, e, f"window {window} of {source_name!r}, page {page_no}",
                                                    page_no)
                    # An operator skipped this very body before (skips.py): the same decision, counted.
                    if landing_page is not None:
                        run.report(on_page, landing_page_no, landing_page.result(), monotonic() - t0)
                        landing_page = None
                    result.pages_skipped += 1
                    run.commit(functools.partial(_skipped_again, entry=entry, now=run.clock()))
                    if entry.get("next_cursor"):
                        continue
                    break
                skew = None if page.server_time is None else page.server_time - answered_at
                if skew is not None:
                    result.api_clock_skew = skew
                if first and not run.api_settled(page, skew, keeper, t0 + time_budget, monotonic):
                    continue  # waited for the API's clock: ask for the first page again
                if page.next_cursor is not None:
                    first_seen = run.seen.get(_cursor_digest(page.next_cursor))
                    if first_seen is not None:
                        raise PullFailed(
                            f"window {window} of {source_name!r}, page {page_no}: the API's next page token is "
                            f"the one it gave for page {first_seen} of this pass: it is looping "
                            f"({page_no - first_seen + 1} pages in a cycle); stopping. Nothing of this page was "
                            f"landed or checkpointed; "
                            f"`logpull reset` restarts the window from page one", permanent=True) from None
                result.pages_read += 1
                result.http_retries += page.http_retries

                n = cp.reads
                run.landing.put_read(source_name, window, n, cp.epoch,
                                     journal.encode(cp.cursor, page.next_cursor, page.body, page.headers))
                run.commit(functools.partial(_journaled, page=page, skew=skew))
                if landing_page is not None:  # one page lands while the next is read, no more
                    run.report(on_page, landing_page_no, landing_page.result(), monotonic() - t0)
                landing_page = lander.submit(run.land, n, cp.epoch, page.items, page.next_cursor)
                landing_page_no = page_no
                if page.next_cursor is None:
                    break
                if first and (plan := run.plan_split(page)):
                    # A busy window: its first page covered a small part of it. The rest is read as
                    # sub-ranges at once; the cursor of this query is not needed any more.
                    run.commit(functools.partial(_split, subs=[subranges.SubRange(w.start, w.end) for w in plan]))
                    run.report(on_page, landing_page_no, landing_page.result(), monotonic() - t0)
                    return True
            if landing_page is not None:
                run.report(on_page, landing_page_no, landing_page.result(), monotonic() - t0)
            return False
        except BaseException:
            if landing_page is not None:  # let the page in hand land (or fail) before the caller releases
                with contextlib.suppress(BaseException):
                    landing_page.result()
            raise


def _read_split(run: _WindowRun, on_page: Callable[[Progress], None] | None, t0: float, time_budget: float,
                monotonic: Callable[[], float]) -> None:
    """Read the unfinished sub-ranges of a split pass (``subranges.py``) at once, each page after page from
    its own cursor, as many at a time as the run's ``Readers`` admit; land every page in the one lander
    thread, in the order the pages were journaled.

    The invariant holds per page as in ``_read``: a page is journaled and its sub-range's cursor moved in
    one commit, then landed and checkpointed. Pages are journaled one at a time (``journaling``), so the
    reads still pending are always the last ones journaled, as ``pull_window`` expects when it resumes;
    once a page fails to land, no later page lands (they stay pending for the next attempt). A kill costs
    at most the pages in flight: one per sub-range being read. ``on_page`` is called from this thread only.
    """
    result, window, source_name = run.result, run.window, run.source_name
    subs = subranges.load(run.cp.stats) or []
    todo = collections.deque(i for i, sub in enumerate(subs) if not sub.fetched)
    workers = max(1, min(run.readers.size if run.readers is not None else 1, len(todo)))
    stop = threading.Event()
    out_of_time = threading.Event()
    journaling = threading.Lock()  # one page journaled at a time: reads are numbered in landing order
    room = threading.BoundedSemaphore(workers + 1)  # pages read but not landed: memory stays a few pages
    landed: queue.SimpleQueue[tuple[int, Future[int]]] = queue.SimpleQueue()

    def read_sub(i: int, lander: ThreadPoolExecutor, keeper: _LeaseKeeper) -> None:
        mark = monotonic()
        while not stop.is_set():
            if result.pages_read and monotonic() - t0 >= time_budget:
                out_of_time.set()
                return
            with run.lock:
                sub = (subranges.load(run.cp.stats) or subs)[i]
                page_no = run.cp.pages_read + 1
                if sub.cursor is not None:
                    run.seen.setdefault(_cursor_digest(f"{i}\0{sub.restarts}\0{sub.cursor}"), page_no)
            deadline = t0 + time_budget if result.pages_read and time_budget != float("inf") else None
            where = f"window {window} of {source_name!r}, sub-range {sub.window} page {sub.pages + 1}"
            # The slot is held until the page is journaled: a kill then loses at most one page per slot,
            # whatever number of sub-ranges have a page read and waiting for its turn to be journaled.
            with run.slot():
                try:
                    with keeper.fetching():
                        page = run.source.fetch_page(sub.window, sub.cursor, deadline)
                except TokenRejected as e:
                    with run.lock:
                        restarts = result.token_restarts
                        result.token_restarts += 1
                    if restarts >= MAX_TOKEN_RESTARTS:
                        raise PullFailed(f"{where}: {e}; {restarts} restarts did not help") from None
                    # Restart the sub-range from its first page; ids already landed keep the result exact.
                    run.commit(functools.partial(_restart_sub, i=i, restarts=sub.restarts + 1))
                    continue
                except SourceError as e:
                    if deadline is not None and (isinstance(e, RateWaitPastDeadline) or monotonic() >= deadline):
                        out_of_time.set()
                        return
                    # The page is the sub-range's next one (skips.stands_at).
                    entry = _skipped_before_or_fail(run.cp.stats, e, where, page_no,
                                                    subrange=i, subrange_page=sub.pages + 1)
                    with run.lock:  # an operator skipped this very body before (skips.py): the same decision
                        result.pages_skipped += 1
                    run.commit(functools.partial(_skipped_again, entry=entry, now=run.clock(), subrange=i))
                    if entry.get("next_cursor"):
                        continue
                    return
                if page.next_cursor is not None:
                    with run.lock:
                        first_seen = run.seen.get(_cursor_digest(f"{i}\0{sub.restarts}\0{page.next_cursor}"))
                    if first_seen is not None:
                        raise PullFailed(f"{where}: the API's next page token is the one it gave for page {first_seen} "
                                         f"of this pass: it is looping; stopping. Nothing of this page was landed or "
                                         f"checkpointed; `logpull reset` restarts the window from page one",
                                         permanent=True) from None
                room.acquire()
                try:
                    with journaling:
                        cp = run.cp
                        n = cp.reads
                        run.landing.put_read(source_name, window, n, cp.epoch,
                                             journal.encode(sub.cursor, page.next_cursor, page.body, page.headers, i))
                        now = monotonic()
                        run.commit(functools.partial(_journaled_sub, i=i, page=page, seconds=now - mark))
                        mark = now
                        result.pages_read += 1
                        result.http_retries += page.http_retries
                        future = lander.submit(run.land_in_turn, n, cp.epoch, page.items, page.next_cursor, i,
                                               sub.restarts)
                except BaseException:
                    room.release()
                    raise
            future.add_done_callback(lambda _: room.release())
            landed.put((cp.pages_read + 1, future))
            if page.next_cursor is None:
                return

    def worker(lander: ThreadPoolExecutor, keeper: _LeaseKeeper) -> None:
        while not stop.is_set():
            with run.lock:
                if not todo:
                    return
                i = todo.popleft()
            try:
                read_sub(i, lander, keeper)
            except BaseException:
                stop.set()
                raise

    errors: list[BaseException] = []
    with ThreadPoolExecutor(1, thread_name_prefix=f"logpull-land-{source_name}") as lander, \
            _LeaseKeeper(run) as keeper, \
            ThreadPoolExecutor(workers, thread_name_prefix=f"logpull-sub-{source_name}") as pool:
        readers = [pool.submit(worker, lander, keeper) for _ in range(workers)]
        while True:
            finished = all(f.done() for f in readers)  # then nothing more is queued
            try:
                page_no, future = landed.get_nowait() if finished else landed.get(timeout=0.05)
            except queue.Empty:
                if finished:
                    break
                continue
            try:
                run.report(on_page, page_no, future.result(), monotonic() - t0)
            except BaseException as e:
                stop.set()
                errors.append(e)
        errors[:0] = [e for f in readers if (e := f.exception()) is not None]
    # Pages still queued were landed (or refused after a failure) by the time the lander shut down.
    while not landed.empty():
        with contextlib.suppress(BaseException):
            landed.get_nowait()[1].result()
    if errors:
        raise next((e for e in errors if isinstance(e, LeaseLost)), errors[0])
    if out_of_time.is_set():
        raise _spend_budget(run, t0, monotonic)
    if not run.pass_done:  # every sub-range fetched, the last one's end skipped (skips.py): nothing left to land
        run.commit(functools.partial(_split_pass_complete, now=run.clock()))
        run.pass_done = True


class _LeaseKeeper:
    """Renews ``run``'s lease while a page is being fetched and nothing else commits (module docstring).
    Real time throughout: a lease is. A renewal and the end of a fetch take the run's lock, so once
    ``fetching`` has returned no renewal is in flight (the reader may then release the window)."""

    def __init__(self, run: _WindowRun) -> None:
        self.run = run
        self.every = max(0.05, run.lease_ttl / 3)
        # When each request now in flight started (a split window has several: subranges.py).
        self._fetches: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"logpull-lease-{run.source_name}", daemon=True)

    def __enter__(self) -> _LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @contextlib.contextmanager
    def fetching(self) -> Any:
        token = object()
        with self.run.lock:
            self._fetches[id(token)] = time.monotonic()
        try:
            yield
        finally:
            with self.run.lock:
                del self._fetches[id(token)]

    def _due(self) -> bool:
        # The latest request decides: one stuck request must not hold the window, but while any request
        # is younger than MAX_FETCH_KEEPALIVE the run is working.
        latest, now = max(self._fetches.values(), default=None), time.monotonic()
        return (latest is not None and now - latest <= MAX_FETCH_KEEPALIVE
                and now - self.run.committed_at >= self.every)

    def _keep(self) -> None:
        while not self._stop.wait(self.every / 4):
            try:
                self.run.renew_if(self._due)
            except LeaseLost:
                return  # taken over: the reader meets it at its next commit and stops
            except Exception:  # a store outage: the reader's own next commit reports it
                continue


def _skipped_before_or_fail(stats: dict[str, Any], e: SourceError, where: str, page_no: int,
                            **bad_extra: int) -> dict[str, Any]:
    """The operator's earlier skip of exactly the body ``e`` carries (skips.py); else PullFailed, recording the
    page (``stats.bad_page``, with ``bad_extra``) so that an operator can decide on it."""
    body, nxt = (e.body, e.next_cursor) if isinstance(e, BadPage) else (b"", None)
    entry = skips.approved(stats, body) if body else None
    if entry is None:
        bad = skips.bad_page(body, page_no, redact(str(e)), nxt) if body else None
        if bad is not None:
            bad.update(bad_extra)
        raise PullFailed(f"{where}: {e}; nothing of this page was landed or checkpointed", permanent=e.permanent,
                         bad_page=bad) from None
    return entry


def _skipped_again(cp: Checkpoint, entry: dict[str, Any], now: float, subrange: int | None = None) -> Checkpoint:
    moved = skips.past(cp, entry, now=now, subrange=subrange)
    return dataclasses.replace(moved, stats=_bump(moved.stats, "skips_reapplied", 1))


def _journaled(cp: Checkpoint, page: Page, skew: float | None = None) -> Checkpoint:
    """The cursor moves past ``page``, which is now pending in the journal; ``skew``: the API's clock
    minus ours when it answered, kept as the window's latest (WHEN A WINDOW IS DUE)."""
    stats = _bump(cp.stats, "http_retries", page.http_retries) if page.http_retries else cp.stats
    if skew is not None:
        stats = {**stats, "api_clock_skew_s": round(skew, 1)}
    if "bad_page" in stats:  # the page that failed before has been read now
        stats = {k: v for k, v in stats.items() if k != "bad_page"}
    if page.quota_remaining is not None:
        low = stats.get("quota_remaining_min")
        if low is None or page.quota_remaining < low:
            stats = {**stats, "quota_remaining_min": page.quota_remaining}
    return dataclasses.replace(
        cp, cursor=page.next_cursor, pages_read=cp.pages_read + 1, reads=cp.reads + 1, journaled=cp.journaled + 1,
        stats=stats,
    )


def _journaled_sub(cp: Checkpoint, i: int, page: Page, seconds: float) -> Checkpoint:
    """Read ``page`` of sub-range ``i`` is pending in the journal: that sub-range's cursor moves past it."""
    moved = _journaled(cp, page)
    sub = (subranges.load(cp.stats) or [])[i]
    stats = subranges.update(moved.stats, i, cursor=page.next_cursor, pages=sub.pages + 1,
                             seconds=sub.seconds + seconds, fetched=page.next_cursor is None)
    return dataclasses.replace(moved, cursor=cp.cursor, stats=stats)


def _split(cp: Checkpoint, subs: list[subranges.SubRange]) -> Checkpoint:
    """The pass goes on as ``subs``, each from its first page (the first page's own cursor is dropped)."""
    return dataclasses.replace(cp, cursor=None, stats=subranges.save(cp.stats, subs))


def _restart_sub(cp: Checkpoint, i: int, restarts: int) -> Checkpoint:
    """Sub-range ``i`` starts again from its first page (the API refused its cursor)."""
    stats = subranges.update(cp.stats, i, cursor=None, pages=0, restarts=restarts)
    return dataclasses.replace(cp, stats=_bump(stats, "token_restarts", 1))


def _split_pass_complete(cp: Checkpoint, now: float) -> Checkpoint:
    """A split pass whose sub-ranges all ended with nothing left to land (the last read ended by a skip)."""
    subs = subranges.load(cp.stats) or []
    stats = {**subranges.save(cp.stats, None), "split": subranges.summary(subs),
             "last_read_at": rfc3339(dt.datetime.fromtimestamp(now, dt.UTC))}
    return dataclasses.replace(cp, cursor=None, pages_read=0, passes=cp.passes + 1, status="complete",
                               last_error=None, stats=stats)


class _WindowRun:
    """One attempt at one window: the checkpoint both threads update, and steps 2-4 for one page."""

    def __init__(self, source: LogSource, window: Window, source_name: str, store: CheckpointStore,
                 landing: LandingStore, lease_ttl: float, clock: Callable[[], float], result: PullResult,
                 rate: RateGate | None = None, settle_lag: float | None = None,
                 sleep: Callable[[float], None] = time.sleep, readers: Readers | None = None) -> None:
        self.source, self.window, self.source_name, self.rate = source, window, source_name, rate
        self.readers = readers
        self.pass_done = False  # a land this attempt completed the pass
        self.land_failed = False  # a page of a split pass failed to land: later ones must not (land_in_turn)
        self.settle_lag, self.sleep = settle_lag, sleep
        # When the window is due: its end + settle_lag, by either clock (None: not checked).
        self.settled_at = None if settle_lag is None else window.end.timestamp() + settle_lag
        self.store, self.landing, self.lease_ttl, self.clock, self.result = store, landing, lease_ttl, clock, result
        self.cp = result.checkpoint
        self.lock = threading.Lock()
        self.committed_at = time.monotonic()  # the lease was just taken
        # Digest of every cursor sent in this pass -> the page it was sent for (cycle detection).
        self.seen: dict[str, int] = {}
        # Digest of each landed read's set of event ids -> that read (this attempt): a cursor that does not
        # advance by its meaning (Okta's next link repeating its ``after`` with another parameter changing)
        # makes every cursor look new, but the pages bring the same events (see ``land``).
        # Keyed by sub-range too (None: a pass read page after page): a split pass reads the first page's events
        # again, and neighbouring sub-ranges may both return the events at their shared edge.
        # (sub-range, its restarts, digest): a sub-range that starts again reads its first pages again.
        self.page_sets: dict[tuple[int | None, int, bytes], int] = {}
        self.pass_first_read = 0  # the first read of the pass now being read: earlier ones may repeat

    def slot(self) -> contextlib.AbstractContextManager[Any]:
        """A place among the run's requests in flight (``Readers``), for one request."""
        return self.readers.slot() if self.readers is not None else contextlib.nullcontext()

    def plan_split(self, page: Page) -> list[Window]:
        """The sub-ranges to read the rest of the pass as, after its first ``page`` (``subranges.plan``);
        [] to read on page after page (one reader, a source that cannot take any range, a quiet window)."""
        step: dt.timedelta | None = getattr(self.source, "range_step", None)
        if step is None or self.readers is None or self.readers.size < 2 or page.next_cursor is None:
            return []
        times = [ev.time for ev in self.source.to_events(page.items) if self.window.contains(ev.time)]
        if not times:
            return []
        return subranges.plan(self.window, step, min(times), max(times), self.readers.size)

    def await_host_settled(self, keeper: _LeaseKeeper, budget_end: float, monotonic: Callable[[], float]) -> None:
        """Return once this host's clock has passed ``settled_at``, waiting if that is near enough;
        else raise WindowNotSettled (before any request of the pass)."""
        while self.settled_at is not None:
            now = self.clock()
            short = self.settled_at - now
            if short <= 0:
                return
            if not self._settle_wait(short, keeper, budget_end, monotonic):
                raise WindowNotSettled(
                    f"window {self.window} of {self.source_name!r} has not settled by this host's clock: it is due at "
                    f"{_at(self.settled_at)} (its end + settle_lag {self.settle_lag:g}s), this host's clock says "
                    f"{_at(now)}, {short:,.0f} s before. Nothing was read; the schedule requests the window once it "
                    f"is due (a run started by hand must wait until then)", permanent=True)

    def api_settled(self, page: Page, skew: float | None, keeper: _LeaseKeeper, budget_end: float,
                    monotonic: Callable[[], float]) -> bool:
        """Whether the API answered the pass's first ``page`` after ``settled_at`` by its own clock (or
        said nothing of its clock). If not, the page is dropped: False after waiting out a shortfall
        near enough (fetch it again), else WindowNotSettled."""
        if self.settled_at is None or page.server_time is None or skew is None:
            return True
        # Date truncates to whole seconds, so it never runs ahead of the API's clock: >= proves the answer was later.
        if page.server_time >= self.settled_at:
            return True
        short = math.ceil(self.settled_at) - page.server_time
        if self._settle_wait(short, keeper, budget_end, monotonic):
            return False
        ahead = f"{abs(skew):,.1f} s {'behind' if skew < 0 else 'ahead of'} this host's"
        raise WindowNotSettled(
            f"window {self.window} of {self.source_name!r} has not settled by the API's clock: the API answered at "
            f"{_at(page.server_time)} by its Date header while this host's clock said {_at(page.server_time - skew)} "
            f"(the API's clock is {ahead}); the window is due at {_at(self.settled_at)} by the API's clock (its end + "
            f"settle_lag {self.settle_lag:g}s), {short:,.0f} s after that answer. Nothing of the page was landed or "
            f"checkpointed; the schedule requests the window again on a later tick. A host clock ahead of the API's "
            f"makes windows look finished early: sync this host's clock (NTP)", permanent=True)

    def _settle_wait(self, seconds: float, keeper: _LeaseKeeper, budget_end: float,
                     monotonic: Callable[[], float]) -> bool:
        """Wait ``seconds`` for the window to settle, if the attempt may (SETTLE_WAIT_MAX in all, within
        its time budget), keeping the lease meanwhile; whether it waited."""
        result = self.result
        if result.settle_wait + seconds > SETTLE_WAIT_MAX or monotonic() + seconds >= budget_end:
            return False
        with keeper.fetching():  # a wait, like a slow page, must not let the lease lapse
            self.sleep(seconds)
        result.settle_wait += seconds
        return True

    def stop_clock(self, elapsed: float) -> None:
        """The attempt ends: its time, and how much of it went to waiting for the rate budget."""
        self.result.elapsed = elapsed
        self.result.rate_wait = self.rate.waited if self.rate is not None else 0.0

    def commit(self, change: Callable[[Checkpoint], Checkpoint],
               landed_ids: list[tuple[int, bytes]] | None = None) -> None:
        """Apply ``change`` to the latest checkpoint and commit it (the threads take turns)."""
        with self.lock:
            self._commit(change(self.cp), landed_ids)

    def renew_if(self, due: Callable[[], bool]) -> None:
        """Commit the checkpoint unchanged, renewing the lease, if ``due()`` still holds under the lock."""
        with self.lock:
            if due():
                self._commit(self.cp, None)

    def _commit(self, cp: Checkpoint, landed_ids: list[tuple[int, bytes]] | None) -> None:
        self.cp = self.store.commit(cp, ttl=self.lease_ttl, now=self.clock(), landed_ids=landed_ids or ())
        self.result.checkpoint = self.cp
        self.committed_at = time.monotonic()

    def _refuse_repeat(self, n: int, inside: dict[bytes, Any], sub: int | None = None, gen: int = 0) -> None:
        """PullFailed (permanent) when read ``n`` brings exactly the events of an earlier read of this attempt:
        an API page never repeats a whole earlier page within one pass, so its cursor is not advancing
        whatever its text says. Bounded: a looping API costs one page more than its cycle, not requests
        without end. Empty pages are left to the cursor checks (an API may end on one)."""
        key = (sub, gen, hashlib.blake2b(b"".join(sorted(inside)), digest_size=16).digest())
        with self.lock:
            first = self.page_sets.get(key)
            if first is None or first < self.pass_first_read or first == n:
                self.page_sets[key] = n
                return
            subs = subranges.load(self.cp.stats) if sub is not None else None
            where = f", sub-range {subs[sub].window}" if subs and sub is not None and sub < len(subs) else ""
            raise PullFailed(
                f"window {self.window} of {self.source_name!r}{where}: read {n + 1} of the window brought exactly the "
                f"{len(inside)} events of read {first + 1}: the API's next page does not advance (its cursor "
                f"changes but the page does not), so it is looping; stopping. Nothing of this page was landed; "
                f"`logpull reset` restarts the window from page one", permanent=True)

    def land(self, n: int, epoch: int, items: list[dict[str, Any]], next_cursor: str | None, *,
             live: bool = True, sub: int | None = None, gen: int = 0) -> int:
        """Steps 2-4 for journaled read ``n``; returns how many events it landed. ``live``: read just now (not
        replayed from the journal, where a repeat was read already and lands as a no-op). ``sub``: the
        sub-range of a split pass it was read for (``gen``: how often that sub-range had restarted); the pass
        is complete once every sub-range is fetched and this was the last read pending."""
        result, window = self.result, self.window
        # In the window, and not landed yet: by committed pages (the store knows) or earlier on this page.
        inside: dict[bytes, tuple[int, Event]] = {}
        for ev in self.source.to_events(items):
            if not window.contains(ev.time):
                result.outside_window_dropped += 1
                continue
            digest = id_digest(ev.id)
            if digest in inside:
                result.duplicates_dropped += 1
            else:
                inside[digest] = (epoch_us(ev.time), ev)
        known: set[bytes] = set()
        if inside and live:
            self._refuse_repeat(n, inside, sub, gen)
        if inside:
            with self.lock:
                known = self.store.known_ids(self.source_name, self.cp.window_start,
                                             [(t, d) for d, (t, _) in inside.items()])
        fresh = [(d, t, ev) for d, (t, ev) in inside.items() if d not in known]
        result.duplicates_dropped += len(inside) - len(fresh)

        page_seq = self.cp.page_seq  # only this thread moves page_seq
        if fresh:
            pulled_at, by = rfc3339(dt.datetime.now(dt.UTC)), _collector_json()
            lines = [json_codec.dumps({"id": ev.id, "time": ev.time_text or rfc3339_ms(ev.time),
                                       "pulled_at": pulled_at, "collector": by, "event": ev.raw})
                     for _, _, ev in fresh]
            result.landed.append(self.landing.put_page(self.source_name, window, page_seq, self.cp.epoch, lines))
            result.pages_landed += 1
            result.events_landed += len(fresh)
        first = rfc3339(min(ev.time for _, _, ev in fresh)) if fresh else None
        last = rfc3339(max(ev.time for _, _, ev in fresh)) if fresh else None
        page_names = Counter(name for _, _, ev in fresh for name in (ev.names or ("(none)",)))
        completed: list[bool] = []  # what the committed change decided

        def change(cp: Checkpoint) -> Checkpoint:
            stats = dict(cp.stats)
            subs = subranges.load(stats) if sub is not None else None
            if subs is not None and sub is not None and 0 <= sub < len(subs):
                subs[sub] = dataclasses.replace(subs[sub], events=subs[sub].events + len(fresh))
                stats = subranges.save(stats, subs)
            done = (next_cursor is None if subs is None
                    else cp.journaled == 1 and all(s.fetched for s in subs))
            if done:  # the latest pass's split (or none) is what the window's metadata shows
                stats.pop("split", None)
                if subs is not None:
                    stats = {**subranges.save(stats, None), "split": subranges.summary(subs)}
            completed.append(done)
            if fresh:
                stats["first_event_time"] = min(filter(None, [stats.get("first_event_time"), first]))
                stats["last_event_time"] = max(filter(None, [stats.get("last_event_time"), last]))
                # The window was read completely before: these events were published late. Not while a
                # recovery's pass lands the events of lost pages again (recovery.py): those are not late.
                if cp.passes and not stats.get("recovering"):
                    stats["late_events"] = stats.get("late_events", 0) + len(fresh)
                    result.late_events += len(fresh)
                names = Counter(stats.get("names", {}))
                names.update(page_names)
                stats["names"] = dict(names)
            if done:
                stats["last_read_at"] = rfc3339(dt.datetime.fromtimestamp(self.clock(), dt.UTC))
                stats.pop("recovering", None)
            return dataclasses.replace(
                cp,
                page_seq=page_seq + 1 if fresh else page_seq,
                journaled=cp.journaled - 1,
                pages_read=0 if done else cp.pages_read,
                events=cp.events + len(fresh),
                passes=cp.passes + 1 if done else cp.passes,
                status="complete" if done else cp.status,
                last_error=None if done else cp.last_error,
                stats=stats,
            )

        self.commit(change, [(t, d) for d, t, _ in fresh])
        self.pass_done = self.pass_done or completed[-1]
        self.landing.drop_read(self.source_name, window, n, epoch)
        return len(fresh)

    def land_in_turn(self, n: int, epoch: int, items: list[dict[str, Any]], next_cursor: str | None,
                     sub: int, gen: int) -> int:
        """``land`` for the lander of a split pass: once a page has failed to land, no later one lands, so the
        reads left pending are the last ones journaled (``pull_window`` resumes them in order)."""
        if self.land_failed:
            raise PullFailed(f"window {self.window} of {self.source_name!r}: read {n + 1} not landed after an "
                             f"earlier page failed to land; it stays in the journal for the next attempt")
        try:
            return self.land(n, epoch, items, next_cursor, sub=sub, gen=gen)
        except BaseException:
            self.land_failed = True
            raise

    def report(self, on_page: Callable[[Progress], None] | None, page_no: int, landed: int, elapsed: float) -> None:
        """Progress, from the calling thread (Dagster's logger is not the lander's to call)."""
        if on_page is not None:
            events = self.result.events_landed
            on_page(Progress(self.window, page_no, landed, events, events / elapsed if elapsed > 0 else 0.0))


def _at(epoch: float) -> str:
    return rfc3339(dt.datetime.fromtimestamp(epoch, dt.UTC))


def _bump(stats: dict[str, object], key: str, n: int) -> dict[str, object]:
    value = stats.get(key, 0)
    return {**stats, key: (value if isinstance(value, int) else 0) + n}


def _cursor_digest(cursor: str) -> str:
    return hashlib.blake2b(cursor.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


@functools.cache
def collector() -> dict[str, str]:
    """Who landed a line, in every line beside ``pulled_at`` and so in every SIEM record (Grove's ``_grove``
    block does the same): the tool, its version and this host's name. Once per process: it does not change."""
    return {"name": "logpull-dagster", "version": __version__, "host": socket.gethostname()}


@functools.cache
def _collector_json() -> Any:
    """``collector()`` as JSON written once: each line copies its bytes (no dict to encode per event)."""
    return json_codec.fragment(collector())


# What every landed line starts with (``_WindowRun.land`` writes the envelope in this key order: id, time,
# pulled_at, collector, event; lines landed by older versions have no collector): the event id (a JSON
# string body) and the event's own time. Read back by the audit and by recovery.
LANDED_HEAD = re.compile(rb'\{"id":"((?:[^"\\]|\\.)*)","time":"([^"]+)"')


def id_digest(event_id: str) -> bytes:
    """What the store keeps of an event id: 16 bytes of BLAKE2b (collisions: ~1e-26 per window at 1M events)."""
    return hashlib.blake2b(event_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()
