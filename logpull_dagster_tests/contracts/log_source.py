"""The LogSource contract (``logpull_dagster/sources/__init__.py``), for every source, over real HTTP.

The implementation comes from the fixture ``source_backend``: a :class:`SourceUnderTest`, which builds
the source for a base URL of the bundled simulator and says which of the simulator's streams and
emulated APIs it reads, so that what the source returns is compared with the simulator's ground truth.

The simulator's clock is frozen on a fixed day: nothing here compares a time with the wall clock.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from logpull_dagster import journal
from logpull_dagster.simulator import Simulator
from logpull_dagster.sources import BadPage, Event, LogSource, Page, SourceError, SourceUnavailable, TokenRejected
from logpull_dagster.windows import UTC, Window
from logpull_dagster_tests.conftest import TOKEN

DAY = dt.datetime(2026, 11, 26, tzinfo=UTC)
W10 = Window(DAY + dt.timedelta(hours=10), DAY + dt.timedelta(hours=11))
W11 = Window(W10.end, W10.end + dt.timedelta(hours=1))
SIM_NOW = DAY + dt.timedelta(hours=12)  # both windows settled and fully published
MAX_PAGES = 500  # a source that never stops paging fails the test instead of hanging it


@dataclass(frozen=True)
class SourceUnderTest:
    #: the source for a base URL (the simulator's, or one under which it serves nothing), with
    #: ``TOKEN`` as its credential, pages small enough that a window takes several (~50 events), and
    #: retries quick enough for a test (backoff of a few hundredths of a second, a handful of attempts)
    open: Callable[[str], LogSource]
    #: the simulator's stream this source reads (Google: the Reports application) and its emulated API
    stream: str
    api: str
    #: the source's ``Event.id`` of a simulator ground-truth id (``Simulator.ground_truth_ids``)
    event_id: Callable[[tuple[str, ...]], str]


@pytest.fixture
def source_sim() -> Iterator[Simulator]:
    # ~300 events an hour, plus the simulator's boundary events (one exactly on every hour) and groups
    # of events sharing a millisecond
    with Simulator(seed=11, events_per_hour=300, token=TOKEN, boundary_events=True, shared_ms_events=True) as sim:
        sim.set_clock(now=SIM_NOW)
        yield sim


@pytest.fixture
def open_source(source_backend: SourceUnderTest) -> Iterator[Callable[[str], LogSource]]:
    """``source_backend.open``, with every source it built closed after the test."""
    opened: list[LogSource] = []

    def open_one(url: str) -> LogSource:
        opened.append(source_backend.open(url))
        return opened[-1]

    yield open_one
    for s in opened:
        s.close()


@pytest.fixture
def source(open_source: Callable[[str], LogSource], source_sim: Simulator) -> LogSource:
    return open_source(source_sim.url)


def read_window(source: LogSource, window: Window) -> list[Page]:
    """Every page of the window's query, first to last, as the pull loop reads them."""
    pages = [source.fetch_page(window, None)]
    while pages[-1].next_cursor is not None:
        assert len(pages) < MAX_PAGES, f"still paging after {MAX_PAGES} pages"
        pages.append(source.fetch_page(window, pages[-1].next_cursor))
    return pages


def events_of(source: LogSource, pages: list[Page]) -> list[Event]:
    return [ev for page in pages for ev in source.to_events(page.items)]


def kept(source: LogSource, window: Window) -> list[Event]:
    """The events the pull loop keeps of the window: their own time in ``[start, end)``."""
    return [ev for ev in events_of(source, read_window(source, window)) if window.contains(ev.time)]


def truth(sim: Simulator, sut: SourceUnderTest, window: Window) -> list[str]:
    return sorted(sut.event_id(i) for i in sim.ground_truth_ids(sut.stream, window.start, window.end, api=sut.api))


def test_a_window_keeps_events_at_its_start_and_leaves_those_at_its_end_to_the_next(
        source: LogSource, source_sim: Simulator, source_backend: SourceUnderTest) -> None:
    pages = read_window(source, W10)
    assert len(pages) >= 3, "the factory should use small pages, so that pagination is what is tested"
    first = [ev for ev in events_of(source, pages) if W10.contains(ev.time)]
    second = kept(source, W11)
    assert sorted(ev.id for ev in first) == truth(source_sim, source_backend, W10)
    assert sorted(ev.id for ev in second) == truth(source_sim, source_backend, W11)
    assert [ev for ev in first if ev.time == W10.start], "the event stamped at the window's start is its own"
    at_boundary = {ev.id for ev in second if ev.time == W11.start}
    assert at_boundary, "the simulator stamps an event exactly on every hour"
    assert not at_boundary & {ev.id for ev in first}  # the end of W10 is W11's start: W11's event only
    assert not {ev.id for ev in first} & {ev.id for ev in second}


def test_events_sharing_a_millisecond_all_come_back_with_distinct_ids(
        source: LogSource, source_sim: Simulator, source_backend: SourceUnderTest) -> None:
    events = kept(source, W10)
    per_ms = Counter(ev.time for ev in events)
    assert max(per_ms.values()) >= 3, "the simulator puts groups of three events in one millisecond"
    ids = [ev.id for ev in events]
    assert len(ids) == len(set(ids)) == len(truth(source_sim, source_backend, W10))


def test_items_come_in_the_declared_ordering(source: LogSource) -> None:
    assert source.ordering in ("newest_first", "oldest_first")
    times = [ev.time for ev in events_of(source, read_window(source, W10))]  # across pages, ends included
    assert len(times) > 100
    expected = sorted(times, reverse=source.ordering == "newest_first")
    assert times == expected, f"items are not {source.ordering}"


def test_every_page_carries_the_api_s_clock(source: LogSource, source_sim: Simulator) -> None:
    """``Page.server_time``: the API's Date (here the simulator's frozen clock), which the pull loop holds
    a window's first page to (a window is due only once the API's clock has passed its end too)."""
    pages = read_window(source, W10)
    assert {p.server_time for p in pages} == {SIM_NOW.timestamp()}
    source_sim.advance_clock(61.5)
    assert source.fetch_page(W10, None).server_time == SIM_NOW.timestamp() + 61  # Date has whole seconds


@pytest.mark.parametrize("rule", [
    {"kind": "503", "count": 2, "after": 1},
    {"kind": "502", "count": 1, "after": 2},
    {"kind": "drop", "count": 2, "after": 1},
], ids=lambda r: r["kind"])
def test_a_transient_fault_is_retried_and_the_page_still_arrives(
        source: LogSource, source_sim: Simulator, source_backend: SourceUnderTest, rule: dict[str, Any]) -> None:
    source_sim.set_faults([rule])
    pages = read_window(source, W10)
    assert sum(f["fired"] for f in source_sim.faults()) == rule["count"]
    assert sum(p.http_retries for p in pages) == rule["count"]  # counted on the page that needed them
    assert sorted(ev.id for ev in events_of(source, pages) if W10.contains(ev.time)) == truth(
        source_sim, source_backend, W10)


def test_faults_outlasting_the_retries_raise_a_transient_source_error(source: LogSource,
                                                                      source_sim: Simulator) -> None:
    source_sim.set_faults([{"kind": "503", "count": None}])
    with pytest.raises(SourceUnavailable) as failed:
        source.fetch_page(W10, None)
    assert not failed.value.permanent  # the window's retries, later, may still get through


def test_a_permanent_404_raises_a_permanent_source_error(open_source: Callable[[str], LogSource],
                                                         source_sim: Simulator) -> None:
    lost = open_source(f"{source_sim.url}/no-api-here")  # a base URL under which the simulator serves nothing
    with pytest.raises(SourceError) as failed:
        lost.fetch_page(W10, None)
    assert failed.value.permanent, f"{type(failed.value).__name__} is not permanent: {failed.value}"


def test_a_cursor_the_api_refuses_raises_token_rejected(source: LogSource, source_sim: Simulator) -> None:
    first = source.fetch_page(W10, None)
    assert first.next_cursor is not None
    source_sim.set_faults([{"kind": "reject_token", "match": "token"}])
    with pytest.raises(TokenRejected):
        source.fetch_page(W10, first.next_cursor)
    assert source.fetch_page(W10, first.next_cursor).items  # the fault is spent: the same cursor reads


def test_a_bad_cursor_raises_token_rejected(source: LogSource) -> None:
    with pytest.raises(TokenRejected):
        source.fetch_page(W10, "not-a-token-this-api-ever-gave")


@pytest.mark.parametrize("kind", ["no_id", "malformed", "bad_json"])
def test_a_page_it_cannot_trust_raises_bad_page(source: LogSource, source_sim: Simulator, kind: str) -> None:
    source_sim.set_faults([{"kind": kind, "match": "first"}])
    with pytest.raises(BadPage) as bad:
        source.fetch_page(W10, None)
    assert bad.value.body, "the body as received, for the operator who decides to skip the page"


def test_a_page_stuck_on_its_own_cursor_is_never_handed_on(source: LogSource, source_sim: Simulator) -> None:
    """An empty page pointing back at the cursor sent (Google's stuck-token bug): a quirk the source
    handles (the protocol's docstring), so that no loop reads it forever."""
    first = source.fetch_page(W10, None)
    assert first.next_cursor is not None
    source_sim.set_faults([{"kind": "stuck_token", "match": "token"}])
    try:
        page = source.fetch_page(W10, first.next_cursor)
    except SourceError:
        return
    assert page.next_cursor != first.next_cursor or page.items


def test_every_page_reads_back_from_its_journal_record(source: LogSource) -> None:
    """What the pull loop journals (body, headers named by journal_headers) is all another attempt
    needs to land the page without asking the API again."""
    pages = read_window(source, W10) + read_window(source, W11)
    for n, page in enumerate(pages):
        assert page.body, f"page {n} has no body to journal"
        assert set(page.headers) <= set(source.journal_headers), "headers the source does not name are not kept"
        record = journal.decode(journal.encode(None, page.next_cursor, page.body, page.headers))
        items, next_cursor = source.parse_page(record.body, record.headers)
        assert (items, next_cursor) == (page.items, page.next_cursor), f"page {n} reads back otherwise"
        assert source.to_events(items) == source.to_events(page.items)


# What ``import *`` brings to the test_contract_*.py module: the tests and fixtures, nothing else.
__all__ = [*sorted(n for n in list(globals()) if n.startswith("test_")), "open_source", "source", "source_sim"]
