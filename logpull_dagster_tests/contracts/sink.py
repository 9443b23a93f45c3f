"""The Sink contract (``logpull_dagster/sinks/__init__.py``), for every SIEM sink.

The implementation comes from the fixture ``sink_backend``: a :class:`SinkUnderTest`, which opens
sink instances on the test's own SIEM side (one folder, index, bucket or collector per test) and reads
back every record that SIEM side holds, so that "reaches the SIEM once" is checked where it counts.
Each test checks what the sink declares it can do (``Sink.capabilities``): a sink that declares
``names`` must detect a name holding other content, one that declares ``read_back`` must tell exactly
what it holds, and one that declares neither must say it cannot (``holds`` False, no ids).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from logpull_dagster.deliver import envelope
from logpull_dagster.json_codec import dumps
from logpull_dagster.pull import id_digest
from logpull_dagster.sinks import CAPABILITIES, Capability, Sink, capabilities
from logpull_dagster.windows import UTC, Window

S = "s"
W = Window(dt.datetime(2026, 11, 26, 10, tzinfo=UTC), dt.datetime(2026, 11, 26, 11, tzinfo=UTC))
W_NEXT = Window(W.end, W.end + dt.timedelta(hours=1))


@dataclass(frozen=True)
class SinkUnderTest:
    #: a new sink instance on the test's SIEM side (a second call: another run, or the same after a restart)
    open: Callable[[], Sink]
    #: every record the SIEM side holds for a source, byte for byte, in any order
    records: Callable[[str], list[bytes]]

    def can(self, capability: Capability) -> bool:
        """Whether the sink under test declares ``capability``."""
        sink = self.open()
        try:
            return capability in capabilities(sink)
        finally:
            sink.close()


def test_a_sink_declares_only_capabilities_the_contract_knows(sink: Sink) -> None:
    assert isinstance(sink.capabilities, frozenset) and sink.capabilities <= set(CAPABILITIES)


@pytest.fixture
def open_sink(sink_backend: SinkUnderTest) -> Iterator[Callable[[], Sink]]:
    """``sink_backend.open``, with every sink it opened closed after the test."""
    opened: list[Sink] = []

    def open_one() -> Sink:
        opened.append(sink_backend.open())
        return opened[-1]

    yield open_one
    for s in opened:
        s.close()


@pytest.fixture
def sink(open_sink: Callable[[], Sink]) -> Sink:
    return open_sink()


def batch(*ids: str, window: Window = W) -> tuple[list[bytes], list[str]]:
    """SIEM records as delivery builds them (``deliver.envelope`` of landed lines), and their ids."""
    landed = [dumps({"id": i, "time": "2026-11-26T10:00:01.000Z", "pulled_at": "2026-11-26T12:00:00Z",
                     "event": {"id": i, "name": "login_success", "actor": "ü@example.com"}}) for i in ids]
    return [envelope(S, window, line) for line in landed], list(ids)


def held(sut: SinkUnderTest) -> Counter[bytes]:
    return Counter(sut.records(S))


def test_a_batch_written_twice_reaches_the_siem_once(sink_backend: SinkUnderTest, sink: Sink) -> None:
    """What ``names`` or ``dedupe_ids`` promise; a sink with neither delivers at least once."""
    lines, ids = batch("a", "b", "c")
    first = sink.write_batch(S, W, 0, lines, ids)
    assert first.location and (first.events, first.already, first.conflict) == (3, 0, False)
    again = sink.write_batch(S, W, 0, lines, ids)  # a retry after a crash before the delivery checkpoint
    assert (again.events, again.already, again.conflict) == (3, 0, False)
    if sink_backend.can("names") or sink_backend.can("dedupe_ids"):
        assert held(sink_backend) == Counter(lines)  # found whole, or kept once by id
    else:
        assert set(held(sink_backend)) == set(lines)  # at least once


def test_a_batch_name_holding_other_content_is_never_overwritten_or_taken_as_written(
        sink_backend: SinkUnderTest, sink: Sink) -> None:
    lines, ids = batch("a", "b")
    sink.write_batch(S, W, 0, lines, ids)
    if not sink_backend.can("names"):  # it cannot tell: it never reports a conflict, and says so
        assert not sink.write_batch(S, W, 0, *batch("c")).conflict
        return
    for other in (batch("c"), batch("a"), batch("a", "b", "c"), batch("b", "a")):
        written = sink.write_batch(S, W, 0, *other)
        assert written.conflict and written.location is None and written.events == 0
    assert held(sink_backend) == Counter(lines)
    if sink_backend.can("read_back"):
        assert sink.delivered_ids(S, W) == {id_digest("a"), id_digest("b")}
    assert sink.write_batch(S, W, 0, lines, ids).events == 2  # the original content is still "written"


def test_batches_of_other_windows_and_sources_are_their_own(sink_backend: SinkUnderTest, sink: Sink) -> None:
    sink.write_batch(S, W, 0, *batch("a"))
    assert not sink.write_batch(S, W_NEXT, 0, *batch("n", window=W_NEXT)).conflict
    assert not sink.write_batch("other", W, 0, *batch("o")).conflict
    assert sorted(sink_backend.records(S)) == sorted(batch("a")[0] + batch("n", window=W_NEXT)[0])
    assert len(sink_backend.records("other")) == 1
    assert isinstance(sink.location(S), str) and sink.location(S)


def test_holds_and_delivered_ids_tell_what_the_siem_has_of_a_window(sink_backend: SinkUnderTest,
                                                                    sink: Sink) -> None:
    assert not sink.holds(S, W)
    sink.write_batch(S, W, 0, *batch("a", "b"))
    sink.write_batch(S, W, 1, *batch("c"))
    if not sink_backend.can("read_back"):
        # cannot tell: says so, and delivery is at-least-once after a lost store
        assert not sink.holds(S, W) and sink.delivered_ids(S, W) == set()
        return
    assert sink.holds(S, W) and not sink.holds(S, W_NEXT) and not sink.holds("other", W)
    assert sink.delivered_ids(S, W) == {id_digest(i) for i in "abc"}
    assert sink.delivered_ids(S, W_NEXT) == set() and sink.delivered_ids("other", W) == set()


def test_reconciling_writes_only_the_events_the_siem_lacks_under_a_name_no_batch_has(
        sink_backend: SinkUnderTest, open_sink: Callable[[], Sink]) -> None:
    """The store was lost and the window re-read in other pages: the new batch 0 holds b (delivered
    before, in the old batch 0) and c, d (never delivered). Only a sink that can read back is asked to."""
    if not sink_backend.can("read_back"):
        return
    sink = open_sink()
    old = batch("a", "b")
    sink.write_batch(S, W, 0, *old)
    delivered = {id_digest("a"), id_digest("b")}
    asked = set(delivered)
    new = batch("b", "c", "d")
    written = open_sink().write_batch(S, W, 0, *new, delivered=asked)
    assert written.location and (written.events, written.already, written.conflict) == (2, 1, False)
    assert asked == delivered  # left as it is
    assert held(sink_backend) == Counter(old[0] + new[0][1:])
    again = sink.write_batch(S, W, 0, *new, delivered=asked)  # the reconciling batch retried: still once
    assert (again.events, again.already, again.conflict) == (2, 1, False)
    assert held(sink_backend) == Counter(old[0] + new[0][1:])
    nothing_new = sink.write_batch(S, W, 1, *batch("a", "d"), delivered={id_digest("a"), id_digest("d")})
    assert (nothing_new.location, nothing_new.events, nothing_new.already) == (None, 0, 2)
    assert held(sink_backend) == Counter(old[0] + new[0][1:])
    assert sink.delivered_ids(S, W) == {id_digest(i) for i in "abcd"}


class Fenced(Exception):
    """What a fence raises for a delivery that lost its lease (LeaseLost, in deliver.py)."""


@pytest.mark.parametrize("reconciling", [False, True])
def test_a_fence_that_refuses_makes_nothing_visible_and_is_asked_right_before(
        sink_backend: SinkUnderTest, sink: Sink, reconciling: bool) -> None:
    """A delivery stalled past its lease (taken over, finished elsewhere, its files shipped and deleted by a
    forwarder) wakes up and writes its batch: the fence refuses, and the SIEM receives nothing from it."""
    lines, ids = batch("a", "b")
    known = {id_digest("z")} if reconciling else None
    seen_before: list[int] = []

    def refuse() -> None:
        seen_before.append(len(sink_backend.records(S)))
        raise Fenced("lease lost")

    with pytest.raises(Fenced):
        sink.write_batch(S, W, 0, lines, ids, delivered=known, fence=refuse)
    assert sink_backend.records(S) == [] and seen_before == [0]
    if sink_backend.can("read_back"):
        assert sink.delivered_ids(S, W) == set()
    calls: list[int] = []
    written = sink.write_batch(S, W, 0, lines, ids, delivered=known, fence=lambda: calls.append(1))
    assert written.events == 2 and calls == [1] and held(sink_backend) == Counter(lines)


def test_a_new_sink_after_a_crash_resumes_exactly(sink_backend: SinkUnderTest,
                                                   open_sink: Callable[[], Sink]) -> None:
    """Batches 0..2 written, then the process died before batch 2's delivery checkpoint."""
    batches = [batch(*(f"e{b}-{i}" for i in range(3))) for b in range(4)]
    dead = open_sink()
    for n in range(3):
        dead.write_batch(S, W, n, *batches[n])
    retry = open_sink()  # no close of the dead one: it was killed
    again = retry.write_batch(S, W, 2, *batches[2])
    assert not again.conflict and again.events == 3
    exact = sink_backend.can("names") or sink_backend.can("dedupe_ids")
    assert len(sink_backend.records(S)) == 9 if exact else len(sink_backend.records(S)) >= 9
    assert retry.write_batch(S, W, 3, *batches[3]).events == 3
    every = [line for lines, _ in batches for line in lines]
    if exact:
        assert held(sink_backend) == Counter(every) and len(sink_backend.records(S)) == 12
    else:
        assert set(held(sink_backend)) == set(every)
    if sink_backend.can("read_back"):
        assert retry.holds(S, W)
        assert retry.delivered_ids(S, W) == {id_digest(i) for _, ids in batches for i in ids}


# What ``import *`` brings to the test_contract_*.py module: the tests and fixtures, nothing else.
__all__ = [*sorted(n for n in list(globals()) if n.startswith("test_")), "open_sink", "sink"]
