"""Checkpoint stores: where each window's progress lives, and who holds it.

One row per (source, stage, window), stage ``pull`` (reading the API into landing) or ``deliver``
(landing into the SIEM). The row is the source of truth for completeness, not Dagster's event log:
a window landed by a run that was killed is still ``running`` here, with its cursor.

The contract every backend keeps (the pull loop's correctness rests on it):

* ``acquire`` is atomic: it takes the window only when no live lease is held by another owner, and
  bumps ``epoch`` (the fencing token) and ``attempts``. Otherwise it raises :class:`LeaseHeld`.
* ``commit`` and ``release`` are conditional writes: they succeed only while the row still carries the
  caller's ``epoch`` and owner; otherwise they raise :class:`LeaseLost` and write nothing. A run that
  stalled past its lease can therefore never overwrite the progress of the run that took over.
* A store whose backing storage disappears under it (a file deleted or replaced) raises
  :class:`CheckpointStoreLost` from the next write instead of carrying on into storage nobody reads.
* A successful ``commit`` is durable before it returns (the caller lands data first, then commits).
* ``commit`` records the events the page landed (each one's own time and id digest) in the same atomic
  write as the progress, so ``known_ids`` answers "already landed?" for exactly the committed pages:
  ids of a page landed by an attempt that died before its commit are not known, and that page is read
  again. This keeps dedupe exact at any window size without holding a window's ids in memory.
* Ids are looked up by time range: an event's time is part of what the API returns for its id and
  does not change between reads, so a duplicate of an event always lies in the same instant.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

#: ``pull`` (reading the API into landing), or a delivery stage: ``deliver`` for the sink named ``siem``
#: (the one sink of older configs, whose rows keep their name), ``deliver:<sink>`` for any other sink
#: (``targets.DeliveryTarget.stage``): each sink of a stream keeps its own delivery checkpoint.
Stage = str
Status = Literal["new", "running", "complete", "failed"]


class CheckpointStoreError(RuntimeError):
    """The store cannot be opened or used as configured (wrong key, no credentials, no such table or
    file); the message names the store and the fix. ``logpull`` exits 2 on it."""


class CheckpointStoreUnavailable(CheckpointStoreError, ConnectionError):
    """The store did not answer within its retries and timeouts (an outage, or a wrong endpoint);
    nothing was written by the failed call. A run treats it as a fault and retries from its checkpoint."""


class LeaseHeld(RuntimeError):
    """Another run holds the window; this run must not write."""

    def __init__(self, source: str, stage: str, window_start: str, owner: str | None, expires: float) -> None:
        self.owner, self.expires = owner, expires
        super().__init__(
            f"{stage} of window {window_start} of source {source!r} is held by run {owner} "
            f"(lease valid until {_fmt_epoch(expires)}); this run wrote nothing. The holder renews "
            f"its lease after every page; if it died, the lease lapses then and a rerun takes over."
        )


class LeaseLost(RuntimeError):
    """The lease was taken over (this run stalled past lease_ttl); stop without writing."""


class CheckpointStoreLost(LeaseLost):
    """The store's file or table was deleted or replaced while this run used it; stop without writing.

    A LeaseLost, because that is what it means for this run: the row its lease lives in is gone, so
    nothing it writes would count, and every caller already stops a window on LeaseLost without
    retrying (Dagster: ``allow_retries=False``) and without writing its failure into the row.
    """

    def __init__(self, path: str, why: str) -> None:
        self.path = path
        super().__init__(
            f"the checkpoint database {path} was deleted or replaced while this run was using it; stopping "
            f"without writing ({why}). A rerun uses the one now at that place (a new empty one if there is "
            f"none): windows it does not know are read again from page one, and delivery sends only events "
            f"the SIEM folder does not have yet (docs/operations.md, 'The checkpoint database was lost')."
        )


@dataclass(frozen=True)
class Checkpoint:
    """Progress of one stage of one window.

    For ``pull``: ``cursor`` is the API token of the next page to read (None: first page of a pass),
    ``page_seq`` the number of landed pages (the next landed page's number), ``events`` the events
    landed, ``pages_read`` the API pages read in the current pass, ``passes`` the complete reads,
    ``reads`` the API pages read for the window ever (the journal's numbering) and ``journaled`` how
    many of the last of them are journaled but not landed yet (reads ``reads - journaled`` to
    ``reads - 1``; see ``landing``).
    For a delivery stage (``deliver``, ``deliver:<sink>``): ``page_seq`` is the next landed page to
    deliver to that sink and ``events`` the events delivered to it.
    """

    source: str
    stage: Stage
    window_start: str
    window_end: str
    status: Status = "new"
    cursor: str | None = None
    page_seq: int = 0
    pages_read: int = 0
    reads: int = 0
    journaled: int = 0
    events: int = 0
    passes: int = 0
    attempts: int = 0
    epoch: int = 0
    lease_owner: str | None = None
    lease_expires: float = 0.0
    heartbeat: float = 0.0
    last_error: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)

    # One row shape serves both stages, so ``page_seq`` and ``events`` mean different things in each:
    # code that reads a row of the other stage says which meaning it wants.
    @property
    def landed_pages(self) -> int:
        """Pull: pages landed (the next landed page's number)."""
        return self._of("pull", self.page_seq)

    @property
    def landed_events(self) -> int:
        """Pull: distinct events landed."""
        return self._of("pull", self.events)

    @property
    def delivered_pages(self) -> int:
        """Deliver: landed pages delivered (the next landed page to deliver)."""
        return self._of("deliver", self.page_seq)

    @property
    def delivered_events(self) -> int:
        """Deliver: events delivered."""
        return self._of("deliver", self.events)

    def _of(self, stage: Stage, value: int) -> int:
        if (stage == "pull") != (self.stage == "pull"):
            raise ValueError(f"a {self.stage} checkpoint has no {stage} progress")
        return value

    @property
    def is_complete(self) -> bool:
        """Read to its last page with nothing left pending: the one definition of a complete window
        (for ``deliver``: every landed page delivered)."""
        return self.status == "complete" and not self.reading

    @property
    def read_once(self) -> bool:
        """Read to its last page at least once, though a re-read may be under way (``reading``)."""
        return self.status == "complete"

    @property
    def reading(self) -> bool:
        """A pass is under way: a page is left to read (cursor) or a read is left to land (journaled)."""
        return self.cursor is not None or self.journaled > 0


class CheckpointStore(Protocol):
    def get(self, source: str, stage: Stage, window_start: str) -> Checkpoint | None: ...

    def acquire(self, source: str, stage: Stage, window_start: str, window_end: str, *,
                owner: str, ttl: float, now: float) -> Checkpoint:
        """Take the window's lease (see the module docstring); return the row as now held."""
        ...

    def commit(self, cp: Checkpoint, *, ttl: float, now: float,
               landed_ids: Collection[tuple[int, bytes]] = ()) -> Checkpoint:
        """Write ``cp``'s progress (and the ``(time_us, id digest)`` of each event its page landed) and
        renew the lease, if ``cp.epoch`` still holds the window."""
        ...

    def known_ids(self, source: str, window_start: str, events: Collection[tuple[int, bytes]]) -> set[bytes]:
        """Those of ``events`` (``(time_us, id digest)``) that committed pages of the window landed."""
        ...

    def count_ids(self, source: str, window_start: str) -> int:
        """How many distinct event ids committed pages of the window have landed."""
        ...

    def release(self, cp: Checkpoint, *, now: float) -> Checkpoint:
        """Write ``cp`` (status, error) and drop the lease, if ``cp.epoch`` still holds the window."""
        ...

    def forget_ids(self, cp: Checkpoint, *, now: float) -> None:
        """Drop every event id recorded for ``cp``'s window, if ``cp.epoch`` still holds it (else LeaseLost,
        nothing dropped). For ``logpull recover`` only, after landed pages were lost: their events must
        land again. Not atomic on every backend (DynamoDB deletes item by item), so the caller marks the
        window as being recovered before, holds its lease throughout, and runs again after a crash."""
        ...

    def list(self, source: str, stage: Stage) -> list[Checkpoint]: ...

    def reserve(self, account: str, *, interval: float, now: float) -> float:
        """Reserve the next request slot of ``account``'s rate budget and return it (epoch seconds, >= ``now``).

        The budget is shared by every process and machine using this store: slots of one account are
        handed out at least ``interval`` seconds apart, in the order reserved (the next slot is
        ``max(previous slot + interval, now)``), atomically like ``acquire``. The caller sends its
        request no earlier than the slot, so an account never sees more than ``1 / interval`` requests
        per second from all runs together. A slot reserved and not used is simply lost (conservative).
        """
        ...

    def close(self) -> None: ...


def _fmt_epoch(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = ["Checkpoint", "CheckpointStore", "CheckpointStoreError", "CheckpointStoreLost", "CheckpointStoreUnavailable",
           "LeaseHeld", "LeaseLost", "Stage", "Status"]
