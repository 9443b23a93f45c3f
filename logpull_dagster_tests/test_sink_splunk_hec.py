"""The Splunk HEC sink (``sinks/splunk_hec.py``) over the network, against the bundled ``simulator/hec.py``.

No Splunk can be installed here, so the collector is a real HTTP(S) server on a loopback port that
implements HEC's documented contract (tokens and their codes, gzip bodies of concatenated events,
channels, ackIds per channel, acks answered true once, the error codes) and keeps every event it
indexed: each test counts the events there. The faults (lost and late acks, a busy collector, an event
refused) are the receiver's switches. Waits that only back off use a fake clock; the waits the
guarantee is about (an ack that never turns true, resent only after ``ack_timeout``) run in real time
with ``ack_timeout: 1s``.
"""

from __future__ import annotations

import datetime as dt
import gzip
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from logpull_dagster import plugins
from logpull_dagster.deliver import deliver_window, envelope
from logpull_dagster.json_codec import dumps, loads
from logpull_dagster.pull import pull_window
from logpull_dagster.simulator.hec import HecReceiver
from logpull_dagster.sinks import splunk_hec
from logpull_dagster.sinks.splunk_hec import HecError, HecRefused, HecUnconfirmed, SplunkHecSink, SplunkHecSinkConfig
from logpull_dagster.sources import InvalidSecret
from logpull_dagster.windows import parse_time
from logpull_dagster_tests.fakes import FakeSource, W, make_events  # W: a past window used only as a label
from logpull_dagster_tests.tls import make_tls_files

STREAM = "gws_login"


def page(n: int, first: int = 0, pad: int = 0) -> tuple[list[bytes], list[str]]:
    """``n`` SIEM records as delivery builds them (the envelope of landed lines) and their ids."""
    ids = [f"ev-{first + i:06d}" for i in range(n)]
    landed = [dumps({"id": i, "time": f"2026-11-26T10:{k % 60:02d}:{k % 59:02d}.{k % 1000:03d}Z",
                     "pulled_at": "2026-11-26T12:00:00Z",
                     "event": {"id": i, "name": "login_success", "actor": "ü@example.com", "pad": "x" * pad}})
              for k, i in enumerate(ids, first)]
    return [envelope(STREAM, W, line) for line in landed], ids


@pytest.fixture
def receiver() -> Iterator[HecReceiver]:
    with HecReceiver(prefix="/proxy/hec") as r:  # behind a path prefix, as a proxy puts it
        yield r


class FakeClock:
    """time.monotonic and time.sleep for back-off tests: a sleep advances the clock at once."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


def sink_for(receiver: HecReceiver, token: str, **kw: object) -> SplunkHecSink:
    return SplunkHecSink(receiver.url, token, token_env="HEC_TOKEN", **kw)  # type: ignore[arg-type]


def test_every_event_is_indexed_once_with_its_time_source_and_sourcetype(receiver: HecReceiver) -> None:
    token = receiver.add_token()
    sink = sink_for(receiver, token, index="security")
    receiver.indexes = {"security"}
    pages = [page(1000, 0), page(1000, 1000), page(7, 2000)]
    try:
        for n, (lines, ids) in enumerate(pages):
            written = sink.write_batch(STREAM, W, n, lines, ids)
            assert (written.events, written.already, written.resent, written.conflict) == (len(lines), 0, 0, False)
    finally:
        sink.close()
    every = [line for lines, _ in pages for line in lines]
    assert Counter(receiver.records(token, STREAM)) == Counter(every) and len(every) == 2007
    for e in receiver.indexed(token):
        record = loads(e.event)
        assert e.meta["time"] == pytest.approx(parse_time(record["event_time"]).timestamp(), abs=1e-6)
        assert (e.meta["source"], e.meta["sourcetype"], e.meta["index"]) == (STREAM, "logpull:json", "security")
        assert e.channel == sink.channel
    assert all(enc == "gzip" for _, _, _, enc in receiver.requests) and len(receiver.requests) == 3
    # Every request's ack was read true before write_batch returned, one poll each (the receiver is fast).
    assert [a for a in receiver.answers if a[0] == "ack"] == [("ack", 200, 0)] * 3
    assert all(not ch.ready_at for ch in receiver.channels.values())


def test_a_batch_is_split_by_batch_events_and_batch_bytes_and_every_part_confirmed(receiver: HecReceiver) -> None:
    token = receiver.add_token()
    lines, ids = page(1000, pad=400)  # ~0.8 KB records
    calls: list[int] = []
    with_events = sink_for(receiver, token, batch_events=300, source="workspace", sourcetype="logpull:google")
    with_bytes = sink_for(receiver, token, batch_bytes=100_000, gzip=False, source="workspace")
    try:
        assert with_events.write_batch(STREAM, W, 0, lines, ids, fence=lambda: calls.append(1)).events == 1000
        assert [n for _, n, _, _ in receiver.requests] == [300, 300, 300, 100]
        assert len(calls) == 4  # the fence, right before each request that hands events over
        assert with_bytes.write_batch(STREAM, W, 1, lines, ids).events == 1000
        # Encoded ahead (delivery's read-ahead, Sink.prepare): the same requests, each confirmed in turn.
        prepared = with_events.prepare(STREAM, W, 2, lines, ids)
        assert with_events.write_batch(STREAM, W, 2, lines, ids, prepared=prepared).events == 1000
    finally:
        with_events.close()
        with_bytes.close()
    by_bytes = receiver.requests[4:-4]
    assert len(by_bytes) > 5 and all(size <= 100_000 and enc == "" for _, _, size, enc in by_bytes)
    assert sum(n for _, n, _, _ in by_bytes) == 1000
    assert [n for _, n, _, _ in receiver.requests[-4:]] == [300, 300, 300, 100]
    assert Counter(receiver.records(token, "workspace")) == Counter(lines * 3)  # three batches, each once
    assert {e.meta["sourcetype"] for e in receiver.indexed(token)} == {"logpull:google", "logpull:json"}
    acks = [a for a in receiver.answers if a[0] == "ack"]
    assert len(acks) == len(receiver.requests)  # each part confirmed before the next was sent


@pytest.mark.slow
def test_a_lost_ack_is_resent_after_ack_timeout_never_sooner_and_counted(receiver: HecReceiver) -> None:
    token = receiver.add_token()
    receiver.lose_acks = 1  # the first request is indexed, its ack status lost
    lines, ids = page(50)
    sink = sink_for(receiver, token, ack_timeout=1.0)
    try:
        written = sink.write_batch(STREAM, W, 0, lines, ids)
    finally:
        sink.close()
    assert (written.events, written.resent) == (50, 50)
    (first, *_), (second, *_) = receiver.requests
    assert second - first >= 1.0  # never sooner than ack_timeout
    # The duplicate the label allows, and exactly that one: each event twice.
    assert Counter(receiver.records(token, STREAM)) == Counter(lines * 2)
    # The second ack read true; the first was polled throughout (never true) and is still pending at HEC.
    assert [list(ch.ready_at) for ch in receiver.channels.values()] == [[0]]


@pytest.mark.slow
def test_acks_that_never_turn_true_fail_after_a_bounded_number_of_sends(receiver: HecReceiver) -> None:
    token = receiver.add_token()
    receiver.lose_acks = 10**6
    lines, ids = page(5)
    sink = sink_for(receiver, token, ack_timeout=1.0)
    try:
        with pytest.raises(HecUnconfirmed) as e:
            sink.write_batch(STREAM, W, 0, lines, ids)
    finally:
        sink.close()
    assert len(receiver.requests) == splunk_hec.MAX_SENDS == 3
    assert "within ack_timeout (1s) after 3 sends" in str(e.value) and "ev-000000 .. ev-000004" in str(e.value)
    assert not e.value.permanent  # a later retry of the window may find the indexers back


@pytest.mark.slow
def test_a_late_ack_is_waited_for_with_back_off_and_read_once(receiver: HecReceiver, monkeypatch) -> None:
    token = receiver.add_token()
    receiver.ack_delay = 1.5
    monkeypatch.setattr(splunk_hec, "KEEP_LEASE_EVERY", 0.2)
    calls: list[int] = []
    lines, ids = page(10)
    sink = sink_for(receiver, token, ack_timeout=30.0)
    try:
        written = sink.write_batch(STREAM, W, 0, lines, ids, fence=lambda: calls.append(1))
        assert (written.events, written.resent) == (10, 0)
        assert Counter(receiver.records(token, STREAM)) == Counter(lines)
        polls = [a for a in receiver.answers if a[0] == "ack"]
        assert 3 <= len(polls) <= 12  # backing off from 50 ms, not spinning
        assert len(calls) >= 3  # before the send, then at the polls 0.35 s and 0.75 s after it (every 0.2 s)
        # HEC answers an ack once: asked again, the same id reads false (the sink recorded it at once).
        again = httpx.post(f"{receiver.url}/services/collector/ack", json={"acks": [0]},
                           headers={"Authorization": f"Splunk {token}", "X-Splunk-Request-Channel": sink.channel})
        assert again.json() == {"acks": {"0": False}}
    finally:
        sink.close()


def test_busy_collector_is_backed_off_then_delivered(receiver: HecReceiver) -> None:
    token = receiver.add_token()
    receiver.busy = 4
    clock = FakeClock()
    lines, ids = page(20)
    sink = sink_for(receiver, token, sleep=clock.sleep, monotonic=clock.now)
    try:
        written = sink.write_batch(STREAM, W, 0, lines, ids)
    finally:
        sink.close()
    assert (written.events, written.resent) == (20, 0)  # a 503 indexed nothing: not a resend
    assert Counter(receiver.records(token, STREAM)) == Counter(lines)
    assert [a for a in receiver.answers if a[0] == "event"] == [("event", 503, 9)] * 4 + [("event", 200, 0)]
    waits = clock.slept[:4]
    assert all(0.5 * 0.5 * 2**k <= w <= 0.5 * 2**k for k, w in enumerate(waits))  # exponential, with jitter


def test_busy_collector_obeys_retry_after_and_gives_up_within_the_budget(receiver: HecReceiver) -> None:
    token = receiver.add_token()
    receiver.busy, receiver.retry_after = 10**6, 45
    clock = FakeClock()
    sink = sink_for(receiver, token, sleep=clock.sleep, monotonic=clock.now)
    try:
        with pytest.raises(HecError) as e:
            sink.write_batch(STREAM, W, 0, *page(3))
    finally:
        sink.close()
    assert set(clock.slept) == {45.0} and sum(clock.slept) <= splunk_hec.BUSY_BUDGET
    assert "stayed unavailable for 300s" in str(e.value) and "code 9 'Server is busy'" in str(e.value)
    assert not e.value.permanent and receiver.indexed(token) == []


@pytest.mark.parametrize("case", ["unknown", "disabled"])
def test_a_refused_token_fails_at_once_naming_its_variable_not_its_value(receiver: HecReceiver, case: str) -> None:
    token = receiver.add_token()
    if case == "disabled":
        receiver.disable_token(token)
    else:
        token = "0f1e2d3c-aaaa-bbbb-cccc-000000000000"
    sink = sink_for(receiver, token)
    try:
        with pytest.raises(HecRefused) as e:
            sink.write_batch(STREAM, W, 0, *page(3))
        text = str(e.value) + sink.location(STREAM)
    finally:
        sink.close()
    code = "code 1 'Token disabled'" if case == "disabled" else "code 4 'Invalid token'"
    assert f"refused the token in HEC_TOKEN (HTTP 403, {code})" in text and token not in text
    assert e.value.permanent and len(receiver.answers) == 1  # no retry of a refused token


def test_a_refused_event_fails_the_window_naming_code_text_number_and_event_id(receiver: HecReceiver) -> None:
    token = receiver.add_token()
    receiver.refuse = b'"ev-000002"'
    sink = sink_for(receiver, token, batch_events=2)
    try:
        with pytest.raises(HecRefused) as e:
            sink.write_batch(STREAM, W, 0, *page(4))
    finally:
        sink.close()
    assert ("code 6 'Invalid data format'; invalid-event-number 0: event id 'ev-000002'" in str(e.value))
    assert len(receiver.records(token, STREAM)) == 2  # the first request, before it; nothing after


def test_an_index_the_token_may_not_write_names_the_fix(receiver: HecReceiver) -> None:
    token = receiver.add_token()
    receiver.indexes = {"main"}
    sink = sink_for(receiver, token, index="security")
    try:
        with pytest.raises(HecRefused, match=r"code 7 'Incorrect index'.*index 'security' is not among"):
            sink.write_batch(STREAM, W, 0, *page(2))
    finally:
        sink.close()


def test_ack_disabled_on_the_token_fails_with_the_fix(receiver: HecReceiver) -> None:
    token = receiver.add_token(ack=False)
    sink = sink_for(receiver, token)
    try:
        with pytest.raises(HecRefused, match=r"acknowledgement is off for the token in HEC_TOKEN\. Either set "
                                             r"ack: false .* or turn on 'Enable indexer acknowledgement'"):
            sink.write_batch(STREAM, W, 0, *page(2))
        # The ack endpoint of such a token answers code 14, which the sink reads the same way.
        with pytest.raises(HecRefused, match=r"code 14 'ACK is disabled'.*set ack: false"):
            sink._acks_true([0])
    finally:
        sink.close()


def test_ack_false_counts_a_200_and_tells_a_token_that_wants_acks(receiver: HecReceiver) -> None:
    plain, acked = receiver.add_token(ack=False), receiver.add_token()
    lines, ids = page(30)
    sink = sink_for(receiver, plain, ack=False)
    wrong = sink_for(receiver, acked, ack=False)
    try:
        assert sink.write_batch(STREAM, W, 0, lines, ids).events == 30
        with pytest.raises(HecRefused, match=r"code 10 'Data channel is missing'.*set ack: true"):
            wrong.write_batch(STREAM, W, 0, lines, ids)
    finally:
        sink.close()
        wrong.close()
    assert Counter(receiver.records(plain, STREAM)) == Counter(lines)
    assert not [a for a in receiver.answers if a[0] == "ack"]


def test_tls_with_ca_file_through_the_config_and_refused_without_it(tmp_path: Path, monkeypatch) -> None:
    tls = make_tls_files(tmp_path / "tls")
    with HecReceiver(tls=(str(tls.cert), str(tls.key))) as receiver:
        token = receiver.add_token()
        monkeypatch.setenv("HEC_TOKEN", token)
        cfg = SplunkHecSinkConfig.model_validate({"type": "splunk_hec", "url": receiver.url, "token": {
            "env": "HEC_TOKEN"}, "ca_file": "tls/ca.pem", "ack_timeout": "5s"})
        assert cfg.problems(lambda p: tmp_path / p) == []
        sink = splunk_hec._open(cfg, tmp_path)  # the opener the registry holds (test_plugins loads that)
        lines, ids = page(10)
        try:
            assert sink.write_batch(STREAM, W, 0, lines, ids).events == 10
        finally:
            sink.close()
        assert Counter(receiver.records(token, STREAM)) == Counter(lines)
        untrusting = sink_for(receiver, token)
        try:
            with pytest.raises(HecRefused, match=r"is not trusted .*set ca_file"):
                untrusting.write_batch(STREAM, W, 0, lines, ids)
        finally:
            untrusting.close()


def test_config_keys_defaults_and_problems(tmp_path: Path) -> None:
    cfg = SplunkHecSinkConfig.model_validate({"type": "splunk_hec", "url": "https://splunk.example.com:8088/",
                                              "token": {"env": "HEC_TOKEN"}})
    assert (cfg.url, cfg.ack, cfg.ack_timeout, cfg.batch_events, cfg.batch_bytes, cfg.gzip, cfg.tls_verify) == (
        "https://splunk.example.com:8088", True, dt.timedelta(minutes=5), 1000, 2**20, True, True)
    assert cfg.kinds == ("splunk",) and cfg.where(lambda p: tmp_path / p).endswith("/services/collector/event")
    with pytest.raises(ValidationError, match="secrets are never written in the config"):
        SplunkHecSinkConfig.model_validate({"type": "splunk_hec", "url": "https://h:8088", "token": "abc"})
    bad = SplunkHecSinkConfig.model_validate({
        "type": "splunk_hec", "url": "http://h:8088/services/collector/event", "token": {"env": "HEC_TOKEN"},
        "ack_timeout": "0s", "ca_file": "missing.pem", "tls_verify": False, "index": " "})
    keys = [k for k, _ in bad.problems(lambda p: tmp_path / p)]
    assert keys == ["url", "ack_timeout", "tls_verify", "ca_file", "ca_file", "index"]


def test_the_opener_reads_the_token_by_name_and_says_when_it_is_unset(monkeypatch) -> None:
    monkeypatch.delenv("HEC_TOKEN_UNSET_HERE", raising=False)
    cfg = SplunkHecSinkConfig.model_validate({"type": "splunk_hec", "url": "https://h:8088",
                                              "token": {"env": "HEC_TOKEN_UNSET_HERE"}})
    with pytest.raises(InvalidSecret, match="HEC_TOKEN_UNSET_HERE is not set"):
        splunk_hec._open(cfg, Path("."))


@pytest.mark.parametrize("when", ["2026-11-26T10:00:01.000Z", "2026-11-26T10:00:01Z", "2026-11-26T23:59:59.123456Z",
                                  "2026-11-26T10:00:01.5Z", "2026-11-26T11:00:01.250+01:00", "1969-12-31T23:59:58.5Z",
                                  "2016-12-31T23:59:60Z"])
def test_hec_time_is_the_event_time_in_epoch_seconds_exactly(when: str) -> None:
    line = dumps({"source": STREAM, "event_id": "e", "event_time": when,
                  "event": {"event_time": "2000-01-01T00:00:00Z"}})
    try:
        us = round(parse_time(when).timestamp() * 1_000_000)
    except ValueError:  # a leap second Python cannot represent: refused, never sent with a wrong time
        with pytest.raises(HecRefused, match="no event_time"):
            splunk_hec._epoch(line, "e")
        return
    assert float(splunk_hec._epoch(line, "e")) == us / 1_000_000
    assert splunk_hec._epoch(line, "e").split(b".")[1] == f"{abs(us) % 1_000_000:06d}".encode()


def test_a_lost_connection_backs_off_and_is_counted_as_a_resend_only_when_the_body_may_have_arrived() -> None:
    with HecReceiver() as gone:
        url = gone.url  # a port nothing listens on once it stops
    clock = FakeClock()
    sink = SplunkHecSink(url, "t" * 36, token_env="HEC_TOKEN", sleep=clock.sleep, monotonic=clock.now)
    try:
        with pytest.raises(HecError, match=r"stayed unavailable for 300s .*cannot connect"):
            sink.write_batch(STREAM, W, 0, *page(3))
    finally:
        sink.close()
    assert 5 <= len(clock.slept) <= 40 and max(clock.slept) <= splunk_hec.BACKOFF_MAX


def test_the_receiver_answers_as_hec_documents(receiver: HecReceiver) -> None:
    """The receiver's own contract, on the points the sink never exercises itself."""
    token = receiver.add_token()
    url = f"{receiver.url}/services/collector/event"
    channel = "11111111-2222-3333-4444-555555555555"
    auth = {"Authorization": f"Splunk {token}", "X-Splunk-Request-Channel": channel}

    client = httpx.Client()

    def post(body: bytes, headers: dict[str, str], path: str = url) -> tuple[int, dict[str, object]]:
        r = client.post(path, content=body, headers=headers)
        return r.status_code, r.json()

    assert post(b'{"event":"x"}', {}) == (401, {"text": "Token is required", "code": 2})
    assert post(b'{"event":"x"}', {"Authorization": f"Bearer {token}"})[1]["code"] == 3
    assert post(b'{"event":"x"}', {"Authorization": f"Splunk {token}"}) == (400, {"text": "Data channel is missing",
                                                                              "code": 10})
    assert post(b'{"event":"x"}', {**auth, "X-Splunk-Request-Channel": "not-a-guid"})[1]["code"] == 11
    assert post(b'{"event":"a"}{"time":"x","event":"b"}', auth)[1] == {
        "text": "Invalid data format", "code": 6, "invalid-event-number": 1}
    assert post(b'{"event":"a"}{"event":null}', auth)[1]["code"] == 12
    assert post(b'{"event":"a"} {"event":""}', auth)[1]["code"] == 13
    assert post(b'{"event":{}}', auth)[1]["code"] == 13
    assert post(b'{"event":"a","fields":{"k":{"n":1}}}', auth)[1]["code"] == 15
    assert post(b'{"event":"a"}', auth, f"{url}?token={token}")[1]["code"] == 16
    assert receiver.indexed() == []  # a refused request indexes nothing
    assert post(gzip.compress(b'{"event":{"a":1}}\n{"event": "b" , "time": 1.5}'),
                {**auth, "Content-Encoding": "gzip"}) == (200, {"text": "Success", "code": 0, "ackId": 0})
    assert post(b'{"event":"c"}', auth) == (200, {"text": "Success", "code": 0, "ackId": 1})
    assert [e.event for e in receiver.indexed()] == [b'{"a":1}', b'"b"', b'"c"']
    ack = f"{receiver.url}/services/collector/ack"
    assert post(b'{"acks":[0,1,7]}', auth, ack)[1] == {"acks": {"0": True, "1": True, "7": False}}
    assert post(b'{"acks":[0,1]}', auth, ack)[1] == {"acks": {"0": False, "1": False}}  # read once
    assert client.get(f"{receiver.url}/services/collector/health").json() == {"text": "HEC is healthy", "code": 17}
    client.close()


class Killed(Exception):
    """The process died after HEC acknowledged a batch and before delivery checkpointed it."""


class DiesAfterBatch(SplunkHecSink):
    def __init__(self, *args: object, die_after: int, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.die_after = die_after

    def write_batch(self, source, window, batch, lines, ids, **kw):  # type: ignore[no-untyped-def]
        written = super().write_batch(source, window, batch, lines, ids, **kw)
        if batch == self.die_after:
            raise Killed
        return written


@pytest.mark.slow
def test_delivery_to_hec_end_to_end_duplicates_only_what_the_label_allows(receiver: HecReceiver, store,
                                                                          landing) -> None:
    """The real pull and delivery loops (sqlite checkpoints, whose fence is the lease), into the receiver:
    a crash after batch 2 was acknowledged repeats that one batch; a lost ack repeats its batch, counted."""
    events = make_events(W, 95)
    pull_window(FakeSource(events), W, source_name="s", checkpoints=store, landing=landing, owner="p", lease_ttl=60)
    token = receiver.add_token()
    dying = DiesAfterBatch(receiver.url, token, token_env="HEC_TOKEN", die_after=2)
    with pytest.raises(Killed):
        deliver_window(W, source_name="s", checkpoints=store, landing=landing, sink=dying, owner="d1", lease_ttl=60)
    receiver.lose_acks = 1  # the retry's first batch (batch 2 again): indexed, its ack lost
    sink = sink_for(receiver, token, ack_timeout=1.0)
    try:
        res = deliver_window(W, source_name="s", checkpoints=store, landing=landing, sink=sink, owner="d2",
                             lease_ttl=60)
    finally:
        sink.close()
        dying.close()
    held = Counter(loads(r)["event_id"] for r in receiver.records(token, "s"))
    landed = {r["event_id"] for p in landing.pages("s", W, 10) for r in
              (loads(envelope("s", W, line)) for line in landing.read_lines(p))}
    assert set(held) == landed and len(landed) == res.total_events == 96
    batch2 = [loads(line)["id"] for line in landing.read_lines(next(p for p in landing.pages("s", W, 10)
                                                                     if p.seq == 2))]
    assert res.resent == len(batch2) == 10
    # batch 2: once by the dead run, again by the retry, and once more after its lost ack: all counted above
    assert {i: n for i, n in held.items() if n > 1} == dict.fromkeys(batch2, 3)


def test_the_default_sourcetype_is_logpull_and_the_source_type_of_each_stream(receiver: HecReceiver, tmp_path,
                                                                              monkeypatch) -> None:
    """Opened as a run opens it (``plugins.open_store`` with the config's streams), each stream's events
    carry ``logpull:<its source type>``; ``sourcetype:`` in the config overrides it for every stream."""
    token = receiver.add_token()
    monkeypatch.setenv("HEC_TOKEN", token)
    streams = {"gws_login": "google_workspace", "okta": "okta"}
    lines, ids = page(3)
    for cfg_keys, expected in (({}, {"gws_login": "logpull:google_workspace", "okta": "logpull:okta",
                                     "other": "logpull:json"}),
                               ({"sourcetype": "audit"}, {"gws_login": "audit", "okta": "audit", "other": "audit"})):
        cfg = SplunkHecSinkConfig.model_validate({"type": "splunk_hec", "url": receiver.url,
                                                  "token": {"env": "HEC_TOKEN"}, **cfg_keys})
        sink = plugins.open_store("siem", cfg, tmp_path, streams=streams)
        try:
            for stream in expected:
                sink.write_batch(stream, W, 0, lines, ids)
        finally:
            sink.close()
        got = {e.meta["source"]: e.meta["sourcetype"] for e in receiver.indexed(token)[-9:]}
        assert got == expected
