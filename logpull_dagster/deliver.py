"""The delivery loop: hand a window's landed pages to the SIEM sink, exactly once.

Same shape as the pull loop, with its own checkpoint per sink (stage ``deliver`` for the sink named
``siem``, ``deliver:<sink>`` for any other; ``page_seq`` = the next landed page to deliver): write the
batch for landed page N (the sink makes a repeated write of the same batch a no-op), THEN checkpoint
N + 1. A SIEM outage stops delivery between batches and the retry resends at most the one batch in
flight, which the sink absorbs. Only pages the pull has committed are read, so delivery can run while a
re-read of the window lands more.

RECONCILING. The checkpoint names batches by landed page, so it describes the SIEM only while the
checkpoint store survives. When the window's delivery checkpoint knows nothing delivered (no row, or
``page_seq`` 0) yet the sink holds data of the window, or a batch name turns out to hold other
content, the store was lost or replaced (or an attempt died after writing the window's first
batch): delivery then asks the sink which events it has of the window (``delivered_ids``, read once
per attempt) and writes only the others. ``stats["reconciling"]`` in the checkpoint makes later
attempts do the same, since the SIEM's old batches may hold events of any later page, until an
attempt that started at page 0 has met every event the SIEM had: a window's landed pages share no
event id, so no later page can hold one, and delivery is back on the normal path.
``stats["already_delivered"]`` counts the events left out. The normal path costs one or two file
lookups more, at a window's first batch.

EVERY LANDED PAGE, IN ORDER. The pull checkpoint says how many pages landed (``page_seq``): pages
``0 .. page_seq - 1`` all exist, by construction. Delivery walks exactly those numbers, not the pages
it happens to find: a page that is not there (deleted by hand, expired by an S3 lifecycle rule, gone
with its bucket) stops the window with :class:`LandedPageMissing`, naming the page and where it should
be, and the window stays a gap until ``logpull recover`` reads it again (``recovery.py``). Pages that
a recovery recorded as lost (``stats["lost_pages"]`` of the pull checkpoint) are passed over: their
events were landed again in later pages, which delivery then writes reconciling against the sink.

FENCED. Nothing becomes visible in the SIEM from a run that has lost its lease: the sink calls
``fence`` right before it makes a batch visible (the rename into the folder, the request to the
collector), and the fence is a conditional write of the delivery checkpoint that raises LeaseLost once
another run has taken the window over. A run stalled past its lease (a slow landing read, a paused
process), whose window another run then delivered and a forwarder shipped and deleted, therefore writes
nothing when it wakes up, instead of a batch the SIEM receives twice.

KEPT WHILE THE SIEM IS SLOW. A sink may wait on its SIEM longer than ``lease_ttl`` (Splunk HEC holds a
batch until the indexer acknowledges it, up to ``ack_timeout``; a bulk request queues at a busy
cluster). While a sink call is in progress a keeper thread renews the lease every third of
``lease_ttl`` that passes without a commit, for at most ``MAX_SINK_KEEPALIVE`` per call, so another run
does not take over (and send the batch again) while this one still waits for the answer. The fence and
the renewals share one lock and one checkpoint, so the fence still fails only when the lease was
really lost.

No Dagster import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson

from logpull_dagster import recovery
from logpull_dagster.checkpoints import Checkpoint, CheckpointStore, LeaseLost, Stage
from logpull_dagster.checkpoints.lease import acquire
from logpull_dagster.json_codec import dumps, loads
from logpull_dagster.landing import LandingMissing, LandingStore
from logpull_dagster.redact import Redactor, error_text
from logpull_dagster.sinks import Sink, capabilities
from logpull_dagster.windows import Window, rfc3339

log = logging.getLogger(__name__)

# The longest one sink call keeps the lease alive: beyond it a stuck SIEM lets the lease lapse, and the
# next attempt (or run) takes the window over.
MAX_SINK_KEEPALIVE = 30 * 60.0


class LandedPageMissing(RuntimeError):
    """A page the pull checkpoint says landed is not in the landing store; retrying cannot bring it back."""

    def __init__(self, source: str, window: Window, page: int, landed: int, where: str) -> None:
        self.page = page
        super().__init__(
            f"window {window} of {source!r}: landed page {page} (of {landed}) is missing from {where} (deleted by "
            f"hand, expired by a lifecycle rule, or gone with its bucket); its events were not delivered, nor any "
            f"page after it, and the window is not complete. `logpull recover --source {source} --window "
            f"{rfc3339(window.start)}` reads the window again and delivers every event the SIEM does not hold "
            f"(docs/operations.md, 'A landed page was lost')")


@dataclass
class DeliveryResult:
    """What one attempt did: ``batches`` landed pages handed to the sink, ``events`` written to the
    SIEM, ``already_delivered`` left out because the SIEM had them (``reconciled``: the attempt
    reconciled), ``total_events`` the events of the window's delivered pages (the checkpoint's)."""

    source: str
    window: Window
    batches: int = 0
    events: int = 0
    already_delivered: int = 0
    resent: int = 0  # events sent again because the SIEM did not confirm an earlier send in time (Written.resent)
    total_events: int = 0
    pending_pull: bool = False
    reconciled: bool = False
    lost_pages: int = 0  # pages a recovery recorded as lost, passed over (their events landed again later)
    at_least_once: bool = False  # reconciling was asked for, and the sink cannot read back: events may repeat
    outputs: list[str] = field(default_factory=list)
    elapsed: float = 0.0


def envelope(source: str, window: Window, line: bytes) -> bytes:
    """One SIEM record: the untouched API event under ``event`` plus where and when it came from."""
    return _envelope(_head(source, rfc3339(window.start), rfc3339(window.end)), line)[0]


def _head(source: str, start: str, end: str) -> bytes:
    """The part of every SIEM record of a window that does not depend on the event, written once."""
    return dumps({"source": source, "window_start": start, "window_end": end})[:-1]


def _envelope(head: bytes, line: bytes) -> tuple[bytes, str]:
    """The SIEM record of one landed line, and the event id.

    The pull loop writes each line as compact JSON with the keys in one order, ``{"id":…,"time":…,
    "pulled_at":…,"collector":{…},"event":…}`` (``pull.py``; older lines have no ``collector``, which the
    splice carries with ``pulled_at`` when it is there; ``json_codec`` keeps both the orjson and the exact
    path compact), and a key cannot occur inside a JSON string unescaped. So the record is spliced from the
    line's own bytes: the event reaches the SIEM byte for byte as landed, and nothing is parsed again
    but the id (delivery was 3x slower re-parsing and re-writing every event). Any other shape takes
    the parsing path.
    """
    i_time = line.find(b',"time":')
    i_pulled = line.find(b',"pulled_at":', i_time)
    i_event = line.find(b',"event":', i_pulled)
    if line.startswith(b'{"id":"') and line.endswith(b"}") and -1 not in (i_time, i_pulled, i_event):
        raw_id = line[6:i_time]
        try:
            event_id = orjson.loads(raw_id)  # a string: no integer for orjson to mangle
        except orjson.JSONDecodeError:  # a lone surrogate in the id
            event_id = loads(raw_id)
        if isinstance(event_id, str):
            return b"".join((head, b',"event_id":', raw_id, b',"event_time":', line[i_time + 8:i_pulled],
                             b',"pulled_at":', line[i_pulled + 13:i_event], b',"event":', line[i_event + 9:])), \
                event_id
    rec: dict[str, Any] = loads(line)
    out = {"event_id": rec["id"], "event_time": rec["time"], "pulled_at": rec["pulled_at"]}
    if "collector" in rec:  # lines landed by older versions have none
        out["collector"] = rec["collector"]
    out["event"] = rec["event"]
    return head + b"," + dumps(out)[1:], rec["id"]


def deliver_window(
    window: Window,
    *,
    source_name: str,
    checkpoints: CheckpointStore,
    landing: LandingStore,
    sink: Sink,
    owner: str,
    lease_ttl: float,
    lease_wait: float = 0.0,
    stage: Stage = "deliver",
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    redactor: Redactor | None = None,
) -> DeliveryResult:
    """Deliver ``window``'s landed pages to ``sink``, checkpointed in ``stage`` (one per sink of the stream:
    ``targets.DeliveryTarget.stage``); see the module docstring. ``redactor``: the sink's secrets, masked in
    the error the checkpoint keeps."""
    t0 = monotonic()
    result = DeliveryResult(source_name, window)
    pulled = checkpoints.get(source_name, "pull", rfc3339(window.start))
    landed = pulled.landed_pages if pulled else 0
    lost = recovery.lost_pages(pulled.stats) if pulled else set()
    result.pending_pull = pulled is None or not pulled.read_once
    cp = acquire(checkpoints, source_name, stage, window, owner=owner, lease_ttl=lease_ttl,
                 lease_wait=lease_wait, clock=clock)

    held = _Held(checkpoints, cp, lease_ttl, clock)

    def fence() -> None:
        """Right before a batch becomes visible: still ours? (a conditional write; LeaseLost if not)"""
        held.commit(held.cp)

    delivered: set[bytes] | None = None  # reconciling: what the SIEM side has of the window
    unmatched: int | None = None  # of those, not met in this attempt's pages yet (None: cannot tell)
    try:
        if "read_back" in capabilities(sink):
            with held.waiting():
                holds = cp.page_seq == 0 and sink.holds(source_name, window)
            cp = held.cp
            reconciling = bool(cp.stats.get("reconciling")) or holds
        else:
            reconciling = False
            if cp.stats.get("reconciling") and "dedupe_ids" in capabilities(sink):
                # The SIEM keeps one copy per event id: sending the window's events again is exact.
                cp = held.commit(dataclasses.replace(
                    cp, stats={k: v for k, v in cp.stats.items() if k != "reconciling"}))
            elif cp.stats.get("reconciling"):  # asked for (logpull recover) by a sink that cannot: say so, once
                log.warning("%s window %s: the sink cannot tell which events it holds already (no read_back), so "
                            "events of this window it received before the landing loss are sent again "
                            "(at-least-once)", source_name, window)
                result.at_least_once = True
                cp = held.commit(dataclasses.replace(
                    cp, stats={k: v for k, v in cp.stats.items() if k != "reconciling"}))
        from_start = cp.page_seq == 0
        head = _head(source_name, rfc3339(window.start), rfc3339(window.end))
        found = {page.seq: page for page in landing.pages(source_name, window, landed)} if cp.page_seq < landed else {}
        prepare = getattr(sink, "prepare", None)

        def load(seq: int) -> _Batch | None:
            """Landed page ``seq`` as SIEM records (None: a page recorded lost), encoded by the sink if it can."""
            if seq in lost:
                return None
            page = found.get(seq)
            try:
                if page is None:
                    raise LandingMissing(f"landed page {seq} is not listed")
                raw = landing.read_lines(page)  # LandingMissing too if it went since the listing
            except LandingMissing:
                raise LandedPageMissing(source_name, window, seq, landed, landing.where(source_name, window)) \
                    from None
            lines, ids = [], []
            for line in raw:
                out, event_id = _envelope(head, line)
                lines.append(out)
                ids.append(event_id)
            encoded = None
            if prepare is not None:
                try:
                    encoded = prepare(source_name, window, page.seq, lines, ids)
                except Exception:  # write_batch encodes again and raises it at the batch's turn
                    encoded = None
            return _Batch(page.seq, lines, ids, encoded)

        with contextlib.closing(_read_ahead(load, range(cp.page_seq, landed))) as batches:
            for seq, batch in batches:
                if batch is None:
                    result.lost_pages += 1
                    cp = held.commit(dataclasses.replace(cp, page_seq=seq + 1))
                    continue
                lines, ids = batch.lines, batch.ids
                if reconciling and delivered is None:
                    with held.waiting():
                        delivered = _reconcile(sink, source_name, window, cp)
                    cp = held.cp
                    unmatched = len(delivered) if from_start and not result.batches else None
                    if unmatched == 0:  # the SIEM side holds nothing of it after all (an empty record)
                        reconciling, delivered, unmatched = False, None, None
                # What the sink encoded ahead holds every event: it serves only while nothing is left out.
                encoded = {"prepared": batch.prepared} if prepare is not None and delivered is None else {}
                with held.waiting():
                    written = sink.write_batch(source_name, window, batch.seq, lines, ids, delivered=delivered,
                                               fence=fence, **encoded)
                    if written.conflict:  # the name holds other events: the checkpoint is not the SIEM's
                        reconciling = True
                        delivered = _reconcile(sink, source_name, window, held.cp, batch=batch.seq)
                        unmatched = len(delivered) if from_start and not result.batches else None
                        written = sink.write_batch(source_name, window, batch.seq, lines, ids, delivered=delivered,
                                                   fence=fence)
                cp = held.cp
                if written.location is not None:
                    result.outputs.append(written.location)
                result.batches += 1
                result.events += written.events
                result.already_delivered += written.already
                result.resent += written.resent
                stats = cp.stats
                if reconciling:
                    result.reconciled = True
                    stats = {**stats, "reconciling": True,
                             "already_delivered": int(stats.get("already_delivered", 0)) + written.already}
                    if unmatched is not None:
                        unmatched -= written.already
                        if unmatched <= 0:  # every event the SIEM had is accounted for: back to normal
                            reconciling, delivered, unmatched = False, None, None
                            stats = {k: v for k, v in stats.items() if k != "reconciling"}
                cp = dataclasses.replace(cp, page_seq=batch.seq + 1, pages_read=cp.pages_read + 1,
                                         events=cp.events + len(lines), stats=stats)
                cp = held.commit(cp)
        # completed_by: a retry of the same run's step knows the window is done (assets.py)
        stats = {k: v for k, v in cp.stats.items() if k != "missing_page"}
        cp = dataclasses.replace(cp, status="complete", last_error=None, stats={**stats, "completed_by": owner})
        cp = checkpoints.release(cp, now=clock())
    except LeaseLost:
        raise
    except BaseException as e:
        last = held.cp  # the last commit (the keeper may have renewed the lease since ``cp`` was read)
        stats = {**last.stats, "missing_page": e.page} if isinstance(e, LandedPageMissing) else last.stats
        with contextlib.suppress(LeaseLost):  # taken over: the new holder's row is not ours to write
            checkpoints.release(dataclasses.replace(last, status="failed", last_error=error_text(e, redactor),
                                                    stats=stats),
                                now=clock())
        raise
    finally:
        held.close()  # the keeper renews only during a sink call: none is in progress here
    if result.already_delivered:
        log.warning("%s window %s: %d events were in the SIEM already and were not sent again; %d sent",
                    source_name, window, result.already_delivered, result.events)
    result.total_events = cp.events
    result.elapsed = monotonic() - t0
    return result


@dataclass(frozen=True)
class _Batch:
    seq: int
    lines: list[bytes]
    ids: list[str]
    prepared: object  # the sink's encoding of every event of the batch (``Sink.prepare``), or None


def _read_ahead(load: Callable[[int], _Batch | None], seqs: range) -> Iterator[tuple[int, _Batch | None]]:
    """``(seq, load(seq))`` for each of ``seqs`` in order, the next one loaded by a worker thread while the
    caller delivers this one: reading and encoding a page then overlaps the SIEM's answer to the previous
    batch, instead of adding to it. Nothing is sent ahead (the worker only reads the landing store and
    encodes), so what a crash can repeat is unchanged; at most two pages are held. An error loading a page
    is raised when its turn comes, as it would have been without the worker."""
    if not seqs:
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="logpull-delivery-read")
    try:
        ahead = pool.submit(load, seqs[0])
        for k, seq in enumerate(seqs):
            batch = ahead.result()
            if k + 1 < len(seqs):
                ahead = pool.submit(load, seqs[k + 1])
            yield seq, batch
    finally:
        # Nothing of this attempt outlives it: a read in flight (bounded by the store's timeouts) is waited for.
        pool.shutdown(wait=True, cancel_futures=True)


class _Held:
    """The delivery checkpoint one attempt holds, committed by the delivery loop, the fence and the
    keeper (module docstring, KEPT WHILE THE SIEM IS SLOW) under one lock.

    One keeper thread serves the whole attempt (started at the first sink call, stopped by ``close``):
    starting a thread per batch cost milliseconds a batch, more while the read-ahead worker holds the GIL."""

    def __init__(self, store: CheckpointStore, cp: Checkpoint, lease_ttl: float, clock: Callable[[], float]) -> None:
        self.store, self.cp, self.lease_ttl, self.clock = store, cp, lease_ttl, clock
        self.lock = threading.Lock()
        self.committed_at = time.monotonic()
        self.every = max(0.05, lease_ttl / 3)  # renew once this long has passed without a commit
        self._call_started: float | None = None  # when the sink call in progress began (None: none is)
        self._closed = threading.Event()
        self._keeper: threading.Thread | None = None

    def commit(self, cp: Checkpoint) -> Checkpoint:
        with self.lock:
            self.cp = self.store.commit(cp, ttl=self.lease_ttl, now=self.clock())
            self.committed_at = time.monotonic()
            return self.cp

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Keep the lease while a sink call runs; once this returns no renewal is in flight (``cp`` is
        then the latest commit)."""
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._keep, name="logpull-delivery-lease", daemon=True)
            self._keeper.start()
        with self.lock:
            self._call_started = time.monotonic()
        try:
            yield
        finally:
            with self.lock:  # a renewal runs under the lock: none is in flight once this is taken
                self._call_started = None

    def close(self) -> None:
        self._closed.set()
        if self._keeper is not None:
            self._keeper.join()

    def _keep(self) -> None:
        while not self._closed.wait(self.every / 4):
            with self.lock:
                now = time.monotonic()
                started = self._call_started
                if (started is None or now - self.committed_at < self.every
                        or now - started > MAX_SINK_KEEPALIVE):
                    continue
                try:
                    self.cp = self.store.commit(self.cp, ttl=self.lease_ttl, now=self.clock())
                    self.committed_at = now
                except LeaseLost:
                    return  # taken over: the fence (or the next commit) meets it and stops
                except Exception:  # a store outage: the sink's fence or the next commit reports it
                    continue


def _reconcile(sink: Sink, source: str, window: Window, cp: Checkpoint, batch: int | None = None) -> set[bytes]:
    """What the SIEM side has of the window, read once per attempt; logged, since it means state was lost."""
    delivered = sink.delivered_ids(source, window)
    if batch is not None:
        why = (f"batch {batch} in the SIEM holds other events than landed page {batch} (the checkpoint store "
               f"was replaced, or restored from an older copy?)")
    elif cp.stats.get("reconciling"):
        why = "an earlier attempt began reconciling the window"
    else:
        why = ("its delivery checkpoint records nothing delivered (the checkpoint store was lost, or an attempt "
               "died after writing the first batch)")
    log.warning("%s window %s: %s; the SIEM side holds %d events of the window: sending only the others",
                source, window, why, len(delivered))
    return delivered
