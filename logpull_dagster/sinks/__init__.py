"""SIEM sinks: where delivered events go.

The contract every sink keeps (delivery's exactly-once rests on it):

* ``write_batch`` is idempotent for one (source, window, batch): a batch written once and written
  again, after a crash between the write and the delivery checkpoint, reaches the SIEM once. Sinks
  that can deduplicate are given the event id of every record.
* A batch name that already holds *other* content is never overwritten or taken as written:
  ``write_batch`` writes nothing and returns ``conflict``. That happens only when the delivery
  checkpoint no longer describes what the SIEM holds (the checkpoint store was lost or replaced);
  delivery then reconciles (below).
* ``fence`` (when given) is called right before the batch becomes visible in the SIEM (a file's rename
  into the folder, the request that hands events to a collector), after everything that can be done
  invisibly. It raises LeaseLost when this delivery no longer holds the window, and then the sink makes
  nothing visible. It is a conditional write to the checkpoint store, so a delivery stalled past its
  lease, whose window another run then delivered (and a forwarder shipped and deleted), cannot add a
  duplicate when it wakes up. What no lease can exclude is a pause longer than ``lease_ttl`` between the
  fence and the visible step itself; the sink keeps that step short (one rename, one request).
* Reconciliation, for sinks that can tell what they hold: ``holds`` answers cheaply whether the SIEM
  side may already have events of a window; ``delivered_ids`` reads which (that can read the whole
  window: it is called only to reconcile); ``write_batch(..., delivered=ids)`` writes only the
  events not in ``ids``, under a name no earlier batch has, and counts the others. A sink that
  cannot tell (an HTTP collector without reads) answers ``holds`` False: after a lost store it
  delivers again what it delivered before (at-least-once), and its docstring says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from logpull_dagster.windows import Window

#: Called right before a batch becomes visible; raises (LeaseLost) when the delivery lost its lease.
Fence = Callable[[], None]


@dataclass(frozen=True)
class Written:
    """What one ``write_batch`` did."""

    location: str | None  # where the batch is (None: nothing written, see ``conflict`` and ``already``)
    events: int = 0  # events this batch put in the SIEM (a retried identical batch: found there whole)
    already: int = 0  # events left out because the SIEM had them already (reconciling only)
    conflict: bool = False  # the batch's name holds other content: nothing written, reconcile first


class Sink(Protocol):
    def write_batch(self, source: str, window: Window, batch: int, lines: list[bytes], ids: list[str], *,
                    delivered: set[bytes] | None = None, fence: Fence | None = None) -> Written:
        """Deliver one batch (one JSON object per line; ``ids[i]`` is the event id of ``lines[i]``).

        ``delivered`` (reconciling): 16-byte digests (``pull.id_digest``) of the events the SIEM has
        of the window; only the others are written (``delivered`` is left as it is). ``fence``: see the
        module docstring; what it raises propagates, and nothing of the batch is then visible.
        """
        ...

    def holds(self, source: str, window: Window) -> bool:
        """Whether the SIEM side may have events of ``window`` already (cheap: a few lookups)."""
        ...

    def delivered_ids(self, source: str, window: Window) -> set[bytes]:
        """Digests of the events of ``window`` the SIEM side has (reads it all: reconciling only)."""
        ...

    def location(self, source: str) -> str:
        """Where the SIEM side of ``source`` is, for operators (a folder, an index, a URL without secrets)."""
        ...

    def close(self) -> None: ...


__all__ = ["Fence", "Sink", "Written"]
