"""The LandingStore contract (``logpull_dagster/landing/__init__.py``), for every backend.

The implementation comes from the fixture ``landing_backend``: a callable that opens one more store
instance on the test's own backing storage (the same folder, bucket and prefix each time), so that
"another run" and "after a restart" are real second instances.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator

import pytest

from logpull_dagster.landing import LandedPage, LandingMissing, LandingStore
from logpull_dagster.windows import UTC, Window
from logpull_dagster_tests.contracts.opening import closing_all

OpenLanding = Callable[[], LandingStore]

S = "s"
W = Window(dt.datetime(2026, 11, 26, 10, tzinfo=UTC), dt.datetime(2026, 11, 26, 11, tzinfo=UTC))
W_NEXT = Window(W.end, W.end + dt.timedelta(hours=1))


@pytest.fixture
def open_landing(landing_backend: OpenLanding) -> Iterator[OpenLanding]:
    """``landing_backend``, with every store it opened closed after the test."""
    yield from closing_all(landing_backend)


@pytest.fixture
def landing_store(open_landing: OpenLanding) -> LandingStore:
    return open_landing()


def lines(tag: str, n: int = 3) -> list[bytes]:
    """Landed lines as the pull loop writes them (one JSON document each), with non-ASCII in them."""
    return [f'{{"id":"{tag}-{i}","time":"2026-11-26T10:00:0{i % 10}.000Z","event":{{"name":"ü🔐"}}}}'.encode()
            for i in range(n)]


def seen(store: LandingStore, window: Window = W, below: int = 1 << 40) -> list[tuple[int, int, list[bytes]]]:
    return [(p.seq, p.epoch, store.read_lines(p)) for p in store.pages(S, window, below)]


def test_a_landed_page_reads_back_line_for_line_from_any_instance(open_landing: OpenLanding) -> None:
    store = open_landing()
    where = store.put_page(S, W, 0, 1, lines("a"))
    assert isinstance(where, str) and where
    pages = store.pages(S, W, below=1)
    assert [(p.seq, p.epoch) for p in pages] == [(0, 1)] and store.read_lines(pages[0]) == lines("a")
    assert seen(open_landing()) == [(0, 1, lines("a"))]  # durable: another run (or a restart) reads it
    assert seen(store, W_NEXT) == [] and store.pages("other", W, below=1) == []  # per window, per source


def test_put_page_of_the_same_page_and_epoch_replaces_it(landing_store: LandingStore) -> None:
    landing_store.put_page(S, W, 0, 1, lines("first attempt", 5))
    landing_store.put_page(S, W, 0, 1, lines("second attempt", 2))  # shorter: nothing of the first may remain
    assert seen(landing_store) == [(0, 1, lines("second attempt", 2))]


def test_a_page_being_replaced_is_read_whole_before_or_after(open_landing: OpenLanding) -> None:
    """put_page is atomic: a reader (delivery, another instance) never sees half a page."""
    writer, reader = open_landing(), open_landing()
    big, small = lines("big", 4000), lines("small", 10)
    writer.put_page(S, W, 0, 1, big)
    done = threading.Event()
    torn: list[int] = []

    def read() -> None:
        while not done.is_set():
            for p in reader.pages(S, W, below=1):
                got = reader.read_lines(p)
                if got not in (big, small):
                    torn.append(len(got))

    th = threading.Thread(target=read)
    th.start()
    try:
        for i in range(40):
            writer.put_page(S, W, 0, 1, small if i % 2 else big)
    finally:
        done.set()
        th.join()
    assert torn == [], f"a reader saw a page of {torn[:5]} lines, neither the old copy nor the new one"


def test_pages_are_the_highest_epoch_copy_of_each_page_below_in_numeric_order(landing_store: LandingStore) -> None:
    store = landing_store
    for seq, epoch in [(10, 1), (2, 1), (1, 9), (1, 10), (0, 999_999), (0, 1_000_000), (100, 3), (1_000_001, 2),
                       (2, 4), (2, 3)]:
        store.put_page(S, W, seq, epoch, lines(f"{seq}.{epoch}"))
    # 2 before 10, 10 before 100: numeric page order; epoch 10 over 9, 1,000,000 over 999,999: numeric too
    assert [(s, e) for s, e, _ in seen(store)] == [(0, 1_000_000), (1, 10), (2, 4), (10, 1), (100, 3), (1_000_001, 2)]
    assert all(got == lines(f"{s}.{e}") for s, e, got in seen(store))
    assert [(p.seq, p.epoch) for p in store.pages(S, W, below=10)] == [(0, 1_000_000), (1, 10), (2, 4)]
    assert store.pages(S, W, below=0) == []


def test_a_page_of_a_fenced_off_run_landed_late_is_ignored(landing_store: LandingStore) -> None:
    """The run that took over (epoch 2) landed page 0; the stalled one (epoch 1) lands it after that."""
    landing_store.put_page(S, W, 0, 2, lines("current"))
    landing_store.put_page(S, W, 0, 1, lines("stale"))
    assert seen(landing_store) == [(0, 2, lines("current"))]


def test_discard_removes_unfinished_pages_superseded_copies_and_reads_not_kept(open_landing: OpenLanding) -> None:
    store = open_landing()
    store.put_page(S, W, 0, 1, lines("0.1"))
    store.put_page(S, W, 1, 1, lines("1.1"))
    store.put_page(S, W, 1, 2, lines("1.2"))  # the run that took over rewrote page 1
    store.put_page(S, W, 2, 2, lines("2.2"))  # unfinished: not checkpointed
    store.put_page(S, W, 3, 3, lines("3.3"))  # unfinished, even at the newest epoch
    for n, epoch in [(7, 1), (8, 1), (8, 2), (9, 2)]:
        store.put_read(S, W, n, epoch, f"read {n}.{epoch}".encode())
    store.put_page(S, W_NEXT, 5, 1, lines("next window"))
    store.put_read(S, W_NEXT, 9, 1, b"next window's read")
    # pages 2 and 3, page 1's epoch-1 copy, read 9, read 8's epoch-1 copy
    assert store.discard(S, W, from_seq=2, keep_reads=range(7, 9)) == 5
    assert seen(store) == [(0, 1, lines("0.1")), (1, 2, lines("1.2"))]
    assert store.get_read(S, W, 7) == (b"read 7.1", 1) and store.get_read(S, W, 8) == (b"read 8.2", 2)
    with pytest.raises(LandingMissing):
        store.get_read(S, W, 9)
    assert seen(store, W_NEXT) == [(5, 1, lines("next window"))]  # another window's: untouched
    assert store.get_read(S, W_NEXT, 9) == (b"next window's read", 1)
    assert store.discard(S, W, from_seq=2, keep_reads=range(7, 9)) == 0  # nothing left to remove
    store.put_page(S, W, 1, 3, lines("1.3"))  # superseded copies are found by a later instance too
    assert open_landing().discard(S, W, from_seq=2, keep_reads=range(7, 9)) == 1
    assert seen(store) == [(0, 1, lines("0.1")), (1, 3, lines("1.3"))]
    assert open_landing().discard(S, W, from_seq=0) == 4  # both pages and both reads
    assert seen(store) == []


def test_discard_of_a_window_never_landed_removes_nothing(landing_store: LandingStore) -> None:
    assert landing_store.discard(S, W, from_seq=0) == 0 and landing_store.pages(S, W, below=10) == []


ODD_BODIES = [
    b"",
    b'{"items": [], "nextPageToken": "t"}',  # not JSON Lines: the API's bytes, as received
    b"\xff\xfe not UTF-8 \x80\x00\x01",
    b"line one\nline two\r\n\n",  # newlines are not line separators here
    bytes(range(256)) * 64,
]


@pytest.mark.parametrize("body", ODD_BODIES, ids=["empty", "json", "not utf-8", "newlines", "all bytes"])
def test_a_read_is_journaled_byte_for_byte(open_landing: OpenLanding, body: bytes) -> None:
    store = open_landing()
    store.put_read(S, W, 0, 3, body)
    assert store.get_read(S, W, 0) == (body, 3)
    assert open_landing().get_read(S, W, 0) == (body, 3)  # durable
    assert store.pages(S, W, below=10) == []  # reads are not pages: delivery never sees them


def test_the_journal_keeps_the_highest_epoch_copy_and_drops_reads_one_by_one(landing_store: LandingStore) -> None:
    store = landing_store
    store.put_read(S, W, 8, 1, b"stale copy")
    store.put_read(S, W, 8, 10, b"newest copy")  # epoch 10 over 9: numeric
    store.put_read(S, W, 8, 9, b"older copy")
    store.put_read(S, W, 8, 10, b"newest copy, read again")  # same read and epoch: replaced
    store.put_read(S, W, 2, 1, b"read 2")
    store.put_read(S, W, 10, 1, b"read 10")
    assert store.get_read(S, W, 8) == (b"newest copy, read again", 10)
    store.drop_read(S, W, 2, 1)
    with pytest.raises(LandingMissing):
        store.get_read(S, W, 2)
    assert store.get_read(S, W, 10) == (b"read 10", 1)  # the others stay
    assert store.get_read(S, W, 8) == (b"newest copy, read again", 10)
    with pytest.raises(LandingMissing):
        store.get_read(S, W_NEXT, 8)  # per window


def test_a_page_gone_from_under_its_listing_is_landing_missing_naming_where_it_was(
        landing_store: LandingStore) -> None:
    """Deleted by hand or by an S3 lifecycle rule between the listing and the read: never an empty page."""
    landing_store.put_page(S, W, 0, 1, lines("0.1"))
    landing_store.put_page(S, W, 1, 1, lines("1.1"))
    listed = landing_store.pages(S, W, below=2)
    landing_store.discard(S, W, from_seq=1)  # page 1 goes
    assert landing_store.read_lines(listed[0]) == lines("0.1")
    with pytest.raises(LandingMissing, match="1"):
        landing_store.read_lines(listed[1])
    where = landing_store.where(S, W)
    assert W.slug in where and where == landing_store.where(S, W) != landing_store.where(S, W_NEXT)


def test_a_landed_page_names_its_page_and_epoch(landing_store: LandingStore) -> None:
    landing_store.put_page(S, W, 4, 2, lines("x"))
    (page,) = landing_store.pages(S, W, below=5)
    assert isinstance(page, LandedPage) and (page.seq, page.epoch) == (4, 2)


# What ``import *`` brings to the test_contract_*.py module: the tests and fixtures, nothing else.
__all__ = [*sorted(n for n in list(globals()) if n.startswith("test_")), "landing_store", "open_landing"]
