"""Delivery: landed pages reach the SIEM folder once each, across crashes."""

import orjson
import pytest

from logpull_dagster.deliver import deliver_window
from logpull_dagster.pull import BudgetExhausted, pull_window
from logpull_dagster.sinks.file import FileSink

from .fakes import FakeSource, W, make_events


class Outage(Exception):
    pass


class FlakySink(FileSink):
    """Writes the batch, then fails before the caller can checkpoint it (the worst moment)."""

    def __init__(self, root, fail_after_batch: int) -> None:
        super().__init__(root)
        self.fail_after_batch = fail_after_batch

    def write_batch(self, source, window, batch, lines):
        out = super().write_batch(source, window, batch, lines)
        if batch == self.fail_after_batch:
            raise Outage("SIEM went away")
        return out


def siem_records(root):
    return [orjson.loads(line) for f in sorted(root.rglob("*.jsonl")) for line in f.read_bytes().splitlines()]


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
    names = sorted(p.name for p in (root / "s").iterdir())
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
