"""Provenance: every SIEM record says which tool, which version and which host collected it (issue 24).

The block is written once per landed line beside ``pulled_at`` (``pull.collector``); delivery carries it
byte for byte to every sink. A page landed by an older version, without the block, still delivers.
"""

from __future__ import annotations

import json
import socket

from logpull_dagster import __version__
from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.deliver import deliver_window, envelope
from logpull_dagster.json_codec import dumps, loads
from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.pull import LANDED_HEAD, _collector_json, collector, pull_window
from logpull_dagster_tests.contracts.sink import SinkUnderTest
from logpull_dagster_tests.fakes import FakeSource, W, make_events
from logpull_dagster_tests.test_contract_sinks import sink_backend  # noqa: F401 (the fixture: every sink)

S = "prov"


def test_every_sink_receives_who_collected_each_event_and_older_lines_still_deliver(
        sink_backend: SinkUnderTest, store: SqliteCheckpointStore,  # noqa: F811
        landing: LocalLandingStore) -> None:
    pull_window(FakeSource(make_events(W, 15, boundary=False)), W, source_name=S, checkpoints=store,
                landing=landing, owner="p", lease_ttl=60)
    pages = landing.pages(S, W, below=100)
    assert len(pages) == 2
    lines = landing.read_lines(pages[0])
    assert all(LANDED_HEAD.match(line) for line in lines)  # id and time still lead the line
    assert list(loads(lines[0])) == ["id", "time", "pulled_at", "collector", "event"]
    # The second page as an older version landed it: no collector block.
    older = [dumps({k: v for k, v in loads(line).items() if k != "collector"})
             for line in landing.read_lines(pages[1])]
    landing.put_page(S, W, pages[1].seq, pages[1].epoch, older)

    sink = sink_backend.open()
    try:
        res = deliver_window(W, source_name=S, checkpoints=store, landing=landing, sink=sink, owner="d",
                             lease_ttl=60)
    finally:
        sink.close()
    assert res.total_events == 15
    records = [loads(r) for r in sink_backend.records(S)]
    assert len({r["event_id"] for r in records}) == 15
    expected = {"name": "logpull-dagster", "version": __version__, "host": socket.gethostname()}
    stamped = [r for r in records if "collector" in r]
    assert len(stamped) == 10 and all(r["collector"] == expected for r in stamped)
    old = [r for r in records if "collector" not in r]
    assert len(old) == 5 and all(r["event"]["name"].startswith("kind") and r["pulled_at"] for r in old)



def test_the_block_is_the_same_on_the_exact_path_of_json_codec_and_of_delivery() -> None:
    """A lone surrogate in the id takes json_codec's standard-library path and delivery's parsing path: the
    block, written once as an orjson fragment (``pull._collector_json``), must come out the same there."""
    line = dumps({"id": "id-\ud800", "time": "2026-11-26T10:00:01.000Z", "pulled_at": "2026-11-26T12:00:00Z",
                  "collector": _collector_json(), "event": {"name": "x\udc00"}})
    assert loads(line)["collector"] == collector()
    record = loads(envelope(S, W, line))
    assert list(record)[-3:] == ["pulled_at", "collector", "event"]
    assert record["collector"] == collector() and record["event"] == {"name": "x\udc00"}
    assert record["event_id"] == "id-\ud800"
    # A line of another shape (here: written with spaces) takes delivery's parsing path; the block stays.
    spaced = json.dumps(loads(line)).encode()
    assert loads(envelope(S, W, spaced))["collector"] == collector()
