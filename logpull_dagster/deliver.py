"""The delivery loop: hand a window's landed pages to the SIEM sink, exactly once.

Same shape as the pull loop, with its own checkpoint (stage ``deliver``, ``page_seq`` = the next
landed page to deliver): write the batch for landed page N (the sink makes a repeated write of the
same batch a no-op), THEN checkpoint N + 1. A SIEM outage stops delivery between batches and the
retry resends at most the one batch in flight, which the sink absorbs. Only pages the pull has
committed are read, so delivery can run while a re-read of the window lands more.

No Dagster import.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from logpull_dagster.checkpoints import CheckpointStore, LeaseLost
from logpull_dagster.landing import LandingStore
from logpull_dagster.pull import acquire
from logpull_dagster.sinks import Sink
from logpull_dagster.windows import Window, rfc3339


@dataclass
class DeliveryResult:
    source: str
    window: Window
    batches: int = 0
    events: int = 0
    total_events: int = 0
    pending_pull: bool = False
    outputs: list[str] = field(default_factory=list)
    elapsed: float = 0.0


def envelope(source: str, window: Window, line: bytes) -> bytes:
    """One SIEM record: the untouched API event under ``event`` plus where and when it came from."""
    rec = orjson.loads(line)
    return orjson.dumps({
        "source": source,
        "window_start": rfc3339(window.start),
        "window_end": rfc3339(window.end),
        "event_id": rec["id"],
        "event_time": rec["time"],
        "pulled_at": rec["pulled_at"],
        "event": rec["event"],
    })


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
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
) -> DeliveryResult:
    t0 = monotonic()
    result = DeliveryResult(source_name, window)
    pulled = checkpoints.get(source_name, "pull", rfc3339(window.start))
    landed = pulled.page_seq if pulled else 0
    result.pending_pull = pulled is None or pulled.status != "complete"
    cp = acquire(checkpoints, source_name, "deliver", window, owner=owner, lease_ttl=lease_ttl,
                 lease_wait=lease_wait, clock=clock)
    try:
        for page in landing.pages(source_name, window, landed):
            if page.seq < cp.page_seq:
                continue
            lines = [envelope(source_name, window, line) for line in landing.read_lines(page)]
            result.outputs.append(sink.write_batch(source_name, window, page.seq, lines))
            result.batches += 1
            result.events += len(lines)
            cp = dataclasses.replace(cp, page_seq=page.seq + 1, pages_read=cp.pages_read + 1,
                                     events=cp.events + len(lines))
            cp = checkpoints.commit(cp, ttl=lease_ttl, now=clock())
        cp = dataclasses.replace(cp, status="complete", last_error=None)
        cp = checkpoints.release(cp, now=clock())
    except LeaseLost:
        raise
    except BaseException as e:
        with contextlib.suppress(LeaseLost):  # taken over: the new holder's row is not ours to write
            checkpoints.release(dataclasses.replace(cp, status="failed", last_error=f"{type(e).__name__}: {e}"[:1000]),
                                now=clock())
        raise
    result.total_events = cp.events
    result.elapsed = monotonic() - t0
    return result
