"""Delivery: landed pages reach the SIEM folder once each, across crashes."""

import contextlib
import errno
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from logpull_dagster.checkpoints import LeaseHeld
from logpull_dagster.deliver import deliver_window, envelope
from logpull_dagster.json_codec import dumps, loads
from logpull_dagster.pull import BudgetExhausted, id_digest, pull_window
from logpull_dagster.sinks.file import FileSink

from .fakes import FakeSource, W, make_events


class Outage(Exception):
    pass


class FlakySink(FileSink):
    """Writes the batch, then fails before the caller can checkpoint it (the worst moment)."""

    def __init__(self, root, fail_after_batch: int) -> None:
        super().__init__(root)
        self.fail_after_batch = fail_after_batch

    def write_batch(self, source, window, batch, lines, ids, **kw):
        out = super().write_batch(source, window, batch, lines, ids, **kw)
        if batch == self.fail_after_batch:
            raise Outage("SIEM went away")
        return out


def siem_records(root):
    return [loads(line) for f in sorted(root.rglob("*.jsonl")) for line in f.read_bytes().splitlines()]


def test_a_failed_delivery_resumes_and_every_event_reaches_the_siem_once(store, landing, tmp_path):
    events = make_events(W, 95)
    pull_window(FakeSource(events), W, source_name="s", checkpoints=store, landing=landing, owner="p", lease_ttl=60)
    root = tmp_path / "siem"
    with pytest.raises(Outage):
        deliver_window(W, source_name="s", checkpoints=store, landing=landing, sink=FlakySink(root, 4),
                       owner="d1", lease_ttl=60)
    assert store.get("s", "deliver", "2026-11-26T10:00:00Z").page_seq == 4  # batch 4 written, not checkpointed
    res = deliver_window(W, source_name="s", checkpoints=store, landing=landing, sink=FileSink(root),
                         owner="d2", lease_ttl=60)
    assert res.batches == 6 and res.total_events == 96
    recs = siem_records(root)
    ids = [r["event_id"] for r in recs]
    assert len(ids) == len(set(ids)) == 96
    r = next(r for r in recs if r["event_id"] == "e5")
    assert r["event"] == {"n": 5, "name": "kind2"} and r["source"] == "s"
    assert r["window_start"] == "2026-11-26T10:00:00Z" and r["window_end"] == "2026-11-26T11:00:00Z"
    assert {"event_time", "pulled_at"} <= r.keys()
    names = sorted(p.name for p in (root / "s").glob("*.jsonl"))  # beside them: .delivered/, .tmp/
    assert names[0] == "s-20261126T1000Z-b000000.jsonl" and len(names) == 10
    # Nothing new landed: delivering again writes nothing.
    again = deliver_window(W, source_name="s", checkpoints=store, landing=landing, sink=FileSink(root),
                           owner="d3", lease_ttl=60)
    assert again.batches == 0 and len(siem_records(root)) == 96


def test_delivery_ships_only_pages_the_pull_has_committed(store, landing, tmp_path):
    events = make_events(W, 95)
    src = FakeSource(events)
    with pytest.raises(BudgetExhausted):  # one page, then the budget is spent
        pull_window(src, W, source_name="s", checkpoints=store, landing=landing, owner="p", lease_ttl=60,
                    time_budget=0)
    landing.put_page("s", W, 1, 9, [orjson.dumps({"id": "uncommitted"})])  # in flight when a run died
    res = deliver_window(W, source_name="s", checkpoints=store, landing=landing, sink=FileSink(tmp_path / "o"),
                         owner="d", lease_ttl=60)
    assert res.pending_pull and res.batches == 1
    assert "uncommitted" not in [r["event_id"] for r in siem_records(tmp_path / "o")]


def test_a_delivery_that_died_after_its_first_batch_is_retried_exactly_and_returns_to_plain_names(
        store, landing, tmp_path):
    """The retry finds batch 0 but no delivery progress, the shape a lost store has too: it reconciles
    (batch 0's events are the SIEM's), meets every event the SIEM had in page 0, and carries on as usual."""
    pull_window(FakeSource(make_events(W, 95)), W, source_name="s", checkpoints=store, landing=landing, owner="p",
                lease_ttl=60)
    root = tmp_path / "siem"
    with pytest.raises(Outage):
        deliver_window(W, source_name="s", checkpoints=store, landing=landing, sink=FlakySink(root, 0),
                       owner="d1", lease_ttl=60)
    res = deliver_window(W, source_name="s", checkpoints=store, landing=landing, sink=FileSink(root),
                         owner="d2", lease_ttl=60)
    ids = [r["event_id"] for r in siem_records(root)]
    assert len(ids) == len(set(ids)) == 96
    assert res.reconciled and res.already_delivered == 9 and res.events == 87
    assert sorted(p.name for p in (root / "s").glob("*.jsonl")) == [f"s-{W.slug}-b{n:06d}.jsonl" for n in range(10)]
    assert "reconciling" not in store.get("s", "deliver", "2026-11-26T10:00:00Z").stats


def test_a_batch_name_holding_other_events_is_never_taken_as_written(tmp_path):
    sink = FileSink(tmp_path)
    lines = [orjson.dumps({"event_id": i}) for i in ("a", "b")]
    first = sink.write_batch("s", W, 0, lines, ["a", "b"])
    assert sink.write_batch("s", W, 0, lines, ["a", "b"]) == first  # a retried identical batch: a no-op
    other = sink.write_batch("s", W, 0, [orjson.dumps({"event_id": "c"})], ["c"])
    assert other.conflict and other.location is None
    assert (tmp_path / "s" / f"s-{W.slug}-b000000.jsonl").read_bytes() == b"\n".join(lines) + b"\n"
    assert sink.delivered_ids("s", W) == {id_digest("a"), id_digest("b")}
    # The record survives a torn append (a kill mid-write): the partial digest is cut, not misread.
    record = sink.record_path("s", W)
    record.write_bytes(record.read_bytes() + b"\x01\x02\x03")
    sink.write_batch("s", W, 1, [orjson.dumps({"event_id": "c"})], ["c"])
    (tmp_path / "s" / f"s-{W.slug}-b000001.jsonl").unlink()  # shipped and deleted by the forwarder
    assert sink.delivered_ids("s", W) == {id_digest(i) for i in "abc"}


def test_envelopes_keep_lone_surrogates_and_big_integers_exactly():
    """Attacker-influenced fields: orjson refuses the first and rounds the second to a float."""
    raw = {"name": "login_\ud800success", "n": 2**70, "id": {"time": "2026-11-26T10:01:00.000Z"}}
    line = dumps({"id": "e1", "time": "2026-11-26T10:01:00.000Z", "pulled_at": "2026-11-26T12:00:00Z", "event": raw})
    out = envelope("s", W, line)
    assert out.isascii() and loads(out)["event"] == raw and loads(out)["event_id"] == "e1"


@contextlib.contextmanager
def tiny_tmpfs(path: Path, size: str = "256k") -> Iterator[Path]:
    """A real filesystem that fills up: tmpfs of ``size`` mounted at ``path`` (needs root, as CI has)."""
    path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"this test needs root to mount a tmpfs at {path} (mount -t tmpfs -o size={size}): "
                    f"{(done.stderr or done.stdout).strip()}. Run it as root (CI does); it must not be skipped.")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_full_siem_folder_fails_the_batch_naming_its_file_and_leaves_no_temp_file(store, landing, tmp_path):
    """Before: the ENOSPC error named no file and left a hidden .tmp beside the batches at every attempt."""
    pull_window(FakeSource(make_events(W, 95)), W, source_name="s", checkpoints=store, landing=landing, owner="p",
                lease_ttl=60)
    with tiny_tmpfs(tmp_path / "siem") as root:
        (root / "s").mkdir()
        filler = root / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as f:  # fill it up, as a stuck forwarder does
            while True:
                f.write(b"x" * 4096)
                f.flush()
        for attempt in range(3):
            with pytest.raises(OSError) as full:
                deliver_window(W, source_name="s", checkpoints=store, landing=landing, sink=FileSink(root),
                               owner=f"d{attempt}", lease_ttl=60)
            assert full.value.errno == errno.ENOSPC
            assert str(root / "s" / f"s-{W.slug}-b000000.jsonl") in str(full.value)
            assert not [p for p in root.rglob("*") if p.is_file() and p != filler], "a temp file was left"
        cp = store.get("s", "deliver", "2026-11-26T10:00:00Z")
        assert cp.status == "failed" and f"s-{W.slug}-b000000.jsonl" in cp.last_error
        filler.unlink()  # the forwarder catches up
        res = deliver_window(W, source_name="s", checkpoints=store, landing=landing, sink=FileSink(root),
                             owner="d9", lease_ttl=60)
        assert res.events == 96 and len({r["event_id"] for r in siem_records(root)}) == len(siem_records(root)) == 96


class SlowAckSink(FileSink):
    """Like a collector that holds each batch until its indexer acknowledges it: after the fence (right
    before the request) the call waits ``wait`` seconds, longer than the lease, then makes the batch visible.
    While it waits, another run tries to take the window over."""

    def __init__(self, root, wait: float, contender) -> None:
        super().__init__(root)
        self.wait, self.contender, self.contended = wait, contender, []

    def write_batch(self, source, window, batch, lines, ids, *, fence=None, **kw):
        if fence is not None:
            fence()
        deadline = time.monotonic() + self.wait
        while time.monotonic() < deadline:  # the "ack" is pending: others keep trying to take the window
            self.contended.append(self.contender())
            time.sleep(0.05)
        return super().write_batch(source, window, batch, lines, ids, **kw)


def test_a_sink_waiting_on_its_siem_longer_than_the_lease_keeps_it(store, landing, tmp_path):
    """The delivery lease is renewed while a sink call waits (deliver.py: KEPT WHILE THE SIEM IS SLOW): no
    other run takes the window over mid-batch (and sends it again), and the delivery completes."""
    pull_window(FakeSource(make_events(W, 15)), W, source_name="s", checkpoints=store, landing=landing,
                owner="p", lease_ttl=60)

    def contender() -> str:
        try:
            store.acquire("s", "deliver", "2026-11-26T10:00:00Z", "2026-11-26T11:00:00Z", owner="other",
                          ttl=0.3, now=time.time())
        except LeaseHeld:
            return "held"
        return "taken"

    sink = SlowAckSink(tmp_path / "siem", wait=1.2, contender=contender)  # 4 leases of 0.3 s per batch
    res = deliver_window(W, source_name="s", checkpoints=store, landing=landing, sink=sink, owner="d",
                         lease_ttl=0.3)
    assert res.batches == 2 and res.total_events == 16
    assert len(sink.contended) > 20 and set(sink.contended) == {"held"}
    assert len(siem_records(tmp_path / "siem")) == 16


class PreparingSink(FileSink):
    """A file sink that encodes ahead (``Sink.prepare``): each batch's write waits (up to 5 s) for the next
    batch's ``prepare`` to be called, which happens only if delivery reads and encodes it meanwhile."""

    def __init__(self, root, batches: int, fail_prepare: bool = False) -> None:
        super().__init__(root)
        self.batches, self.fail_prepare = batches, fail_prepare
        self.prepared_at: dict[int, threading.Event] = {n: threading.Event() for n in range(batches + 1)}
        self.ahead: list[int] = []  # batches whose successor was prepared while they were being written
        self.given: list[tuple[int, object, bool]] = []  # (batch, prepared given, reconciling)

    def prepare(self, source, window, batch, lines, ids):
        self.prepared_at[batch].set()
        if self.fail_prepare:
            raise ValueError("cannot encode")
        return ("encoded", batch, len(lines))

    def write_batch(self, source, window, batch, lines, ids, *, delivered=None, fence=None, **kw):
        self.given.append((batch, kw.get("prepared", "not given"), delivered is not None))
        if batch + 1 < self.batches and self.prepared_at[batch + 1].wait(5):
            self.ahead.append(batch)
        return super().write_batch(source, window, batch, lines, ids, delivered=delivered, fence=fence)


def test_the_next_page_is_read_and_encoded_while_the_sink_waits_on_this_batch(store, landing, tmp_path):
    """Delivery reads landed page N + 1 and has the sink encode it (``prepare``) while batch N waits on the
    SIEM, so the two overlap (bench_hec.py: 0.72 -> 0.9 of a bare loop); each batch gets its own encoding,
    and nothing is sent ahead: every event reaches the SIEM once."""
    pull_window(FakeSource(make_events(W, 45)), W, source_name="s", checkpoints=store, landing=landing, owner="p",
                lease_ttl=60)
    pages = store.get("s", "pull", "2026-11-26T10:00:00Z").landed_pages
    sizes = [len(landing.read_lines(p)) for p in landing.pages("s", W, pages)]
    assert pages >= 4
    sink = PreparingSink(tmp_path / "siem", pages)
    res = deliver_window(W, source_name="s", checkpoints=store, landing=landing, sink=sink, owner="d", lease_ttl=60)
    assert res.batches == pages and res.total_events == 46
    assert sink.ahead == list(range(pages - 1))
    assert sink.given == [(n, ("encoded", n, sizes[n]), False) for n in range(pages)]
    ids = [r["event_id"] for r in siem_records(tmp_path / "siem")]
    assert len(ids) == len(set(ids)) == 46


def test_an_encoding_that_fails_ahead_is_left_to_the_write_and_a_reconciling_write_gets_none(store, landing,
                                                                                              tmp_path):
    pull_window(FakeSource(make_events(W, 45)), W, source_name="s", checkpoints=store, landing=landing, owner="p",
                lease_ttl=60)
    pages = store.get("s", "pull", "2026-11-26T10:00:00Z").landed_pages
    root = tmp_path / "siem"
    sink = PreparingSink(root, pages, fail_prepare=True)
    assert deliver_window(W, source_name="s", checkpoints=store, landing=landing, sink=sink, owner="d",
                          lease_ttl=60).total_events == 46
    assert [given for _, given, _ in sink.given] == [None] * pages
    # A delivery with no checkpoint of its own (the shape of a lost store) reconciles, writing only what the
    # SIEM lacks, so an encoding of the whole batch must not be used.
    for f in sorted((root / "s").glob("*.jsonl"))[3:]:
        f.unlink()  # shipped and deleted by the forwarder; the sink's record still knows them
    again = PreparingSink(root, pages)
    res = deliver_window(W, source_name="s", checkpoints=store, landing=landing, sink=again, owner="d2", lease_ttl=60,
                         stage="deliver:again")
    assert res.reconciled and res.events == 0 and res.already_delivered == 46
    assert {(given, reconciling) for _, given, reconciling in again.given} == {("not given", True)}
