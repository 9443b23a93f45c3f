"""SIEM sinks: where delivered events go.

Every sink declares what it can do (``capabilities``), and the contract suite (``contracts/sink.py``)
tests exactly what it declares; delivery relies on nothing else:

* ``names``: ``write_batch`` is idempotent for one (source, window, batch): a batch written once and
  written again, after a crash between the write and the delivery checkpoint, reaches the SIEM once;
  and a batch name that already holds *other* content is never overwritten or taken as written:
  ``write_batch`` writes nothing and returns ``conflict``. That happens only when the delivery
  checkpoint no longer describes what the SIEM holds (the checkpoint store was lost or replaced);
  delivery then reconciles (below). A folder of files can do this; an HTTP collector cannot.
* ``read_back``: ``holds`` answers cheaply whether the SIEM side may already have events of a window;
  ``delivered_ids`` reads which (that can read the whole window: it is called only to reconcile);
  ``write_batch(..., delivered=ids)`` writes only the events not in ``ids``, under a name no earlier
  batch has, and counts the others. This is what keeps delivery exact after a lost checkpoint store
  and after ``logpull recover``.
* ``dedupe_ids``: the SIEM itself keeps one copy per event id (it is given every record's id: an
  Elasticsearch ``_id``, a deterministic object name), so a batch sent twice is stored once.

A sink without ``names`` or ``dedupe_ids`` delivers at least once: the batch in flight at a crash may
reach the SIEM twice. A sink without ``read_back`` cannot reconcile: after a lost checkpoint store or a
recovery, events it holds already are sent again, and delivery says so in the run log. Each sink's
docstring states its guarantee in one line (the README's table lists them).

Every sink, whatever it can do:

* ``fence`` (when given) is called right before the batch becomes visible in the SIEM (a file's rename
  into the folder, the request that hands events to a collector), after everything that can be done
  invisibly. It raises LeaseLost when this delivery no longer holds the window, and then the sink makes
  nothing visible. It is a conditional write to the checkpoint store, so a delivery stalled past its
  lease, whose window another run then delivered (and a forwarder shipped and deleted), cannot add a
  duplicate when it wakes up. What no lease can exclude is a pause longer than ``lease_ttl`` between the
  fence and the visible step itself; the sink keeps that step short (one rename, one request).
* A batch counts as delivered only once the SIEM has confirmed it: ``write_batch`` returns after that.
* ``prepare`` (optional): a sink whose batches cost CPU to encode (a request body to build and
  compress) may encode a whole batch ahead. Delivery calls ``prepare(source, window, batch, lines, ids)``
  in a read-ahead thread while the previous batch waits on the SIEM, then passes what it returned as
  ``write_batch(..., prepared=...)``, only when nothing is left out (``delivered`` is None). It must
  send nothing and hold no lock the sink's writes need; an error in it is ignored (``write_batch``,
  then given ``prepared=None``, meets it again).
* An exception whose ``permanent`` attribute is true says retrying cannot mend it (a refused credential,
  a certificate not trusted, an event the SIEM refuses): delivery then fails the window at once instead
  of spending its retries. Every message names what to fix and never holds a secret (delivery redacts
  the sink's secrets from it anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from logpull_dagster.windows import Window

#: Called right before a batch becomes visible; raises (LeaseLost) when the delivery lost its lease.
Fence = Callable[[], None]
#: What a sink can do (the module docstring).
Capability = Literal["names", "read_back", "dedupe_ids"]
CAPABILITIES: tuple[Capability, ...] = ("names", "read_back", "dedupe_ids")


def capabilities(sink: object) -> frozenset[Capability]:
    """What ``sink`` declares it can do; nothing, for a plug-in that predates ``capabilities``."""
    return frozenset(getattr(sink, "capabilities", frozenset()))


@dataclass(frozen=True)
class Written:
    """What one ``write_batch`` did."""

    location: str | None  # where the batch is (None: nothing written, see ``conflict`` and ``already``)
    events: int = 0  # events this batch put in the SIEM (a retried identical batch: found there whole)
    already: int = 0  # events left out because the SIEM had them already (reconciling only)
    conflict: bool = False  # the batch's name holds other content: nothing written, reconcile first
    # events sent again because the SIEM did not confirm an earlier send in time (e.g. a Splunk HEC ack
    # that never turned true): they may be in the SIEM twice; counted in the materialization
    resent: int = 0


def to_write(ids: list[str], delivered: set[bytes] | None) -> Sequence[int]:
    """The positions of a batch's events to write: all of them, or (reconciling) those whose id digest
    is not in ``delivered``."""
    from logpull_dagster.pull import id_digest  # pull imports this package's types

    return range(len(ids)) if delivered is None else [k for k, i in enumerate(ids) if id_digest(i) not in delivered]


class Sink(Protocol):
    #: What this sink can do (the module docstring); the contract suite tests each one it declares.
    capabilities: frozenset[Capability]

    def write_batch(self, source: str, window: Window, batch: int, lines: list[bytes], ids: list[str], *,
                    delivered: set[bytes] | None = None, fence: Fence | None = None) -> Written:
        """Deliver one batch (one JSON object per line; ``ids[i]`` is the event id of ``lines[i]``).

        ``delivered`` (reconciling): 16-byte digests (``pull.id_digest``) of the events the SIEM has
        of the window; only the others are written (``delivered`` is left as it is). ``fence``: see the
        module docstring; what it raises propagates, and nothing of the batch is then visible.
        """
        ...

    def holds(self, source: str, window: Window) -> bool:
        """Whether the SIEM side may have events of ``window`` already (cheap: a few lookups); always False
        without ``read_back``."""
        ...

    def delivered_ids(self, source: str, window: Window) -> set[bytes]:
        """Digests of the events of ``window`` the SIEM side has (reads it all: reconciling only); empty
        without ``read_back``."""
        ...

    def location(self, source: str) -> str:
        """Where the SIEM side of ``source`` is, for operators (a folder, an index, a URL without secrets)."""
        ...

    def close(self) -> None: ...


__all__ = ["CAPABILITIES", "Capability", "Fence", "Sink", "Written", "capabilities", "to_write"]
