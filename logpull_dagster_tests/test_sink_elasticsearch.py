"""The Elasticsearch/OpenSearch ``_bulk`` sink against a real HTTP server on a loopback port.

No Elasticsearch or OpenSearch can be installed here, so the server is ``receivers/elasticsearch.py``, which
implements the documented ``_bulk`` contract (per-item results, 409 on an existing ``_id``, per-item 429,
mapping errors, data streams needing ``@timestamp``, ApiKey/Basic auth, the product header, OpenSearch's
``GET /``). Every test counts the documents the receiver holds.

The sink adds one field to every envelope line, ``@timestamp`` (a copy of ``event_time``, which a data
stream requires): :func:`envelope_of` takes it off again, checking that it is the only field added, at
the head, equal to ``event_time``, and that the rest is the envelope line byte for byte.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from logpull_dagster import plugins
from logpull_dagster.config import ConfigError
from logpull_dagster.config.loading import parse_config
from logpull_dagster.deliver import envelope
from logpull_dagster.json_codec import dumps
from logpull_dagster.sinks.elasticsearch import (
    MAX_ID_BYTES,
    BulkItemFailed,
    CredentialsRefused,
    ElasticsearchError,
    ElasticsearchSink,
    NotSupported,
    doc_id,
)
from logpull_dagster.windows import UTC, Window
from logpull_dagster_tests.contracts.sink import SinkUnderTest
from logpull_dagster_tests.receivers.elasticsearch import BulkReceiver
from logpull_dagster_tests.tls import make_tls_files

S = "gws_login"
W = Window(dt.datetime(2026, 11, 26, 10, tzinfo=UTC), dt.datetime(2026, 11, 26, 11, tzinfo=UTC))
KEY = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="  # an encoded API key's shape
DS = "logs-logpull-default"


def envelope_of(document: bytes) -> bytes:
    """The envelope line a stored document was made from: the document without the one field the sink
    adds, ``@timestamp`` at its head, which must equal the envelope's ``event_time``."""
    m = re.match(rb'\{"@timestamp":("(?:[^"\\]|\\.)*"),', document)
    assert m, f"no @timestamp at the head of {document[:80]!r}"
    line = b"{" + document[m.end():]
    fields = json.loads(line)
    assert "@timestamp" not in fields and json.loads(m[1]) == fields["event_time"]
    return line


def batch(ids: list[str], window: Window = W, source: str = S) -> tuple[list[bytes], list[str]]:
    """Envelope lines as delivery builds them from landed lines, with event times inside the window."""
    lines = []
    for n, i in enumerate(ids):
        t = window.start + dt.timedelta(seconds=n % 3600, microseconds=1000 * (n % 1000))
        landed = dumps({"id": i, "time": t.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                        "pulled_at": "2026-11-26T12:00:00Z",
                        "event": {"id": i, "name": "login_success", "actor": {"email": "ü@example.com"}}})
        lines.append(envelope(source, window, landed))
    return lines, ids


def held(rx: BulkReceiver, index: str = DS) -> Counter[bytes]:
    return Counter(envelope_of(d) for d in rx.sources(index))


def sink_for(rx: BulkReceiver, index: str = DS, **kw: Any) -> ElasticsearchSink:
    """A sink with test-sized back-off (waits of milliseconds: nothing here depends on timing)."""
    auth = kw.pop("authorization", f"ApiKey {rx.api_key}" if rx.api_key else "Basic bG9ncHVsbDpwdw==")
    return ElasticsearchSink(rx.url, index, authorization=auth, credential=kw.pop("credential", "api_key (ES_API_KEY)"),
                             backoff_initial=0.001, backoff_max=0.01, **kw)


@pytest.fixture
def rx() -> Iterator[BulkReceiver]:
    with BulkReceiver(api_key=KEY, data_streams=frozenset({DS})) as receiver:
        yield receiver


# ---- the contract suite's SIEM side (test_contract_sinks.FACTORIES) ------------------------------------

_shared: BulkReceiver | None = None
_indices = itertools.count()


def elastic_under_test(tmp: Path) -> SinkUnderTest:
    """Sinks on an index of their own in one receiver shared by the worker's tests (a daemon thread);
    records: the envelope line (``envelope_of``) of each stored document whose ``_id`` the sink made for
    that source (``<source>:...``; the suite's records carry one ``source`` field whatever the stream)."""
    global _shared
    if _shared is None:
        _shared = BulkReceiver(api_key=KEY).start()
    rx, index = _shared, f"contract-{next(_indices)}"

    def records(source: str) -> list[bytes]:
        with rx._lock:
            docs = list(rx.docs.get(index, {}).items())
        return [envelope_of(d) for i, d in docs if i.startswith(f"{source}:")]

    return SinkUnderTest(lambda: sink_for(rx, index), records)


# ---- every event once --------------------------------------------------------------------------------

def test_every_event_is_indexed_once_and_a_resent_batch_adds_nothing(
        rx: BulkReceiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the config and the plug-in registry, into a data stream (create only, @timestamp needed)."""
    monkeypatch.setenv("ES_API_KEY", KEY)
    cfg = parse_config({"sources": [SOURCE], "sinks": {"elastic": {
        "type": "elasticsearch", "url": rx.url, "api_key": {"env": "ES_API_KEY"}, "index": DS}}},
        base_dir=str(tmp_path))
    sink = plugins.open_sink(cfg, "elastic")
    batches = [batch([f"e{b}-{i}" for i in range(1000)]) for b in range(3)]
    try:
        for n, (lines, ids) in enumerate(batches):
            written = sink.write_batch(S, W, n, lines, ids)
            assert (written.events, written.already, written.conflict) == (1000, 0, False)
        posts = len([r for r in rx.requests if r.method == "POST"])
        again = sink.write_batch(S, W, 1, *batches[1])  # a retry after a crash before the delivery checkpoint
        assert (again.events, again.conflict) == (1000, False)
    finally:
        sink.close()
    every = [line for lines, _ in batches for line in lines]
    assert held(rx) == Counter(every) and len(rx.sources(DS)) == 3000
    assert len([r for r in rx.requests if r.method == "POST"]) == posts + 1  # the resend: one request, 1,000 x 409
    assert set(rx.docs[DS]) == {doc_id(S, i) for _, ids in batches for i in ids}
    assert KEY not in sink.location(S)


def test_a_batch_over_the_byte_cap_is_cut_into_requests_under_it(rx: BulkReceiver) -> None:
    lines, ids = batch([f"e{i}" for i in range(300)])
    cap = 16 * 1024
    with sink_for(rx, max_request_bytes=cap) as sink:
        assert sink.write_batch(S, W, 0, lines, ids).events == 300
    posts = [r for r in rx.requests if r.method == "POST"]
    assert len(posts) > 5 and all(r.body_bytes <= cap for r in posts)
    assert sum(r.items for r in posts) == 300 and held(rx) == Counter(lines)


def test_long_and_odd_event_ids_get_an_id_within_the_limit_and_stay_distinct(rx: BulkReceiver) -> None:
    odd = ["x" * 600, "x" * 601, "é" * 300, "#abc", "abc", "a:b", "#" + "0" * 64]
    lines, ids = batch(odd)
    with sink_for(rx) as sink:
        assert sink.write_batch(S, W, 0, lines, ids).events == len(odd)
        assert sink.write_batch(S, W, 0, lines, ids).events == len(odd)  # the same _ids again: all 409
    made = [doc_id(S, i) for i in odd]
    assert len(set(made)) == len(odd) and all(len(m.encode()) <= MAX_ID_BYTES for m in made)
    assert doc_id(S, "abc") == f"{S}:abc" and doc_id(S, "#abc").startswith(f"{S}:#")
    assert held(rx) == Counter(lines)


# ---- retries -----------------------------------------------------------------------------------------

def test_per_item_429_resends_only_the_rejected_items(rx: BulkReceiver) -> None:
    lines, ids = batch([f"e{i}" for i in range(50)])
    rx.reject_items(7)  # the first 7 items of the first request
    fenced: list[int] = []
    with sink_for(rx) as sink:
        assert sink.write_batch(S, W, 0, lines, ids, fence=lambda: fenced.append(1)).events == 50
    posts = [r for r in rx.requests if r.method == "POST"]
    assert [r.items for r in posts] == [50, 7]
    assert fenced == [1, 1]  # before each request that hands events over
    assert held(rx) == Counter(lines)


def test_rejections_that_never_end_fail_the_batch_after_the_bounded_attempts(rx: BulkReceiver) -> None:
    lines, ids = batch([f"e{i}" for i in range(10)])
    rx.reject_items(10**6)
    with sink_for(rx, attempts=4) as sink, pytest.raises(ElasticsearchError, match="es_rejected_execution_exception"):
        sink.write_batch(S, W, 0, lines, ids)
    assert len([r for r in rx.requests if r.method == "POST"]) == 4


def test_whole_request_503_429_and_a_lost_answer_are_retried_and_add_nothing(rx: BulkReceiver) -> None:
    lines, ids = batch([f"e{i}" for i in range(100)])
    rx.fail_requests(503, 429)
    rx.lose_answers(1)  # indexed, then the connection drops: the resend meets 100 x 409
    with sink_for(rx) as sink:
        assert sink.write_batch(S, W, 0, lines, ids).events == 100
    assert [r.status for r in rx.requests if r.method == "POST"] == [503, 429, 0, 200]
    assert held(rx) == Counter(lines)


def test_an_unreachable_cluster_fails_after_bounded_attempts(tmp_path: Path) -> None:
    from logpull_dagster_tests.servers import free_port

    sink = ElasticsearchSink(f"http://127.0.0.1:{free_port()}", DS, authorization="ApiKey x", credential="api_key",
                             attempts=3, backoff_initial=0.001, backoff_max=0.01)
    with sink, pytest.raises(ElasticsearchError, match="is the cluster up"):
        sink.write_batch(S, W, 0, *batch(["a"]))


# ---- failures that name what to fix ------------------------------------------------------------------

def test_a_mapping_error_fails_the_batch_naming_the_event_and_the_retry_completes_it(rx: BulkReceiver) -> None:
    lines, ids = batch([f"e{i}" for i in range(20)])
    rx.refuse_events("e7")
    with sink_for(rx) as sink:
        with pytest.raises(BulkItemFailed) as e:
            sink.write_batch(S, W, 0, lines, ids)
        assert "'e7'" in str(e.value) and "document_parsing_exception" in str(e.value)
        assert len(rx.sources(DS)) == 19  # the others went in
        rx._refuse.clear()  # the operator fixed the mapping
        assert sink.write_batch(S, W, 0, lines, ids).events == 20
    assert held(rx) == Counter(lines)


def test_the_data_stream_gets_its_timestamp(rx: BulkReceiver) -> None:
    """A data stream refuses a document without @timestamp; the receiver checks it as Elasticsearch does."""
    lines, ids = batch(["a"])
    with sink_for(rx) as sink:
        sink.write_batch(S, W, 0, lines, ids)
    (doc,) = rx.sources(DS)
    assert json.loads(doc)["@timestamp"] == json.loads(lines[0])["event_time"]
    assert rx.bulk(DS, b'{"create":{"_id":"raw"}}\n' + lines[0] + b"\n")[1]["items"][0]["create"]["status"] == 400


@pytest.mark.parametrize("case", ["wrong key", "wrong password", "may not write"])
def test_a_refused_credential_fails_naming_its_variable_never_its_value(
        case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    basic = case == "wrong password"
    with BulkReceiver(api_key=None if basic else KEY, basic=("logpull", "right-password") if basic else None,
                      bulk_forbidden=case == "may not write") as rx:
        if basic:
            monkeypatch.setenv("ES_PASSWORD", "wrong-password")
            cred: dict[str, Any] = {"username": "logpull", "password": {"env": "ES_PASSWORD"}}
        else:
            monkeypatch.setenv("ES_API_KEY", KEY if case == "may not write" else "d3Jvbmc6a2V5LXZhbHVl")
            cred = {"api_key": {"env": "ES_API_KEY"}}
        cfg = parse_config({"sources": [SOURCE], "sinks": {"elastic": {
            "type": "elasticsearch", "url": rx.url, "index": DS, **cred}}}, base_dir=str(tmp_path))
        with plugins.open_sink(cfg, "elastic") as sink, pytest.raises(CredentialsRefused) as e:  # type: ignore[attr-defined]
            sink.write_batch(S, W, 0, *batch(["a"]))
        text = str(e.value)
        assert ("ES_PASSWORD" if basic else "ES_API_KEY") in text
        assert "wrong-password" not in text and "d3Jvbmc6a2V5LXZhbHVl" not in text and KEY not in text
        assert ("403" if case == "may not write" else "401") in text
        assert rx.sources(DS) == []


def test_an_unset_variable_is_named_when_the_sink_opens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ES_API_KEY", raising=False)
    cfg = parse_config({"sources": [SOURCE], "sinks": {"elastic": {
        "type": "elasticsearch", "url": "http://127.0.0.1:9", "api_key": {"env": "ES_API_KEY"}, "index": DS}}},
        base_dir=str(tmp_path))
    with pytest.raises(Exception, match="ES_API_KEY is not set"):
        plugins.open_sink(cfg, "elastic")


# ---- products --------------------------------------------------------------------------------------

def test_opensearch_is_recognised_and_indexes_every_event_once() -> None:
    with BulkReceiver(basic=("logpull", "pw"), mode="opensearch") as rx:
        lines, ids = batch([f"e{i}" for i in range(200)])
        with sink_for(rx, "logpull-audit") as sink:
            assert sink.write_batch(S, W, 0, lines, ids).events == 200
            assert sink.write_batch(S, W, 0, lines, ids).events == 200
        assert held(rx, "logpull-audit") == Counter(lines)
        assert "X-Elastic-Product" not in str(rx.info())


def test_a_server_that_is_neither_elasticsearch_nor_opensearch_is_refused_before_any_event_is_sent() -> None:
    with BulkReceiver(api_key=KEY, mode="impostor") as rx, sink_for(rx) as sink:
        with pytest.raises(NotSupported, match="not Elasticsearch nor OpenSearch"):
            sink.write_batch(S, W, 0, *batch(["a"]))
        assert [r.method for r in rx.requests] == ["GET"]


def test_a_credential_that_may_not_read_cluster_info_still_delivers(rx: BulkReceiver) -> None:
    rx.info_forbidden = True  # GET / is 403: the product check moves to the _bulk answers, as the clients do
    lines, ids = batch(["a", "b"])
    with sink_for(rx) as sink:
        assert sink.write_batch(S, W, 0, lines, ids).events == 2
    assert held(rx) == Counter(lines)


# ---- TLS and config ----------------------------------------------------------------------------------

def test_tls_is_verified_against_ca_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tls = make_tls_files(tmp_path / "tls")
    monkeypatch.setenv("ES_API_KEY", KEY)
    with BulkReceiver(api_key=KEY, tls=tls) as rx:
        elastic = {"type": "elasticsearch", "url": rx.url, "api_key": {"env": "ES_API_KEY"}, "index": "audit"}
        cfg = parse_config({"sources": [SOURCE], "sinks": {"elastic": {**elastic, "ca_file": "tls/ca.pem"}}},
                           base_dir=str(tmp_path))
        lines, ids = batch(["a", "b"])
        sink = plugins.open_sink(cfg, "elastic")
        try:
            assert sink.write_batch(S, W, 0, lines, ids).events == 2
        finally:
            sink.close()
        untrusted = plugins.open_sink(parse_config({"sources": [SOURCE], "sinks": {"elastic": elastic}},
                                                   base_dir=str(tmp_path)), "elastic")
        untrusted.attempts = 1  # type: ignore[attr-defined]
        try:
            with pytest.raises(ElasticsearchError, match="ca_file"):
                untrusted.write_batch(S, W, 0, lines, ids)
        finally:
            untrusted.close()
        assert held(rx, "audit") == Counter(lines)


@pytest.mark.parametrize(("keys", "says"), [
    ({"index": "Logs"}, "index: 'Logs' has upper-case letters"),
    ({"index": "a/b"}, "index: 'a/b' holds '/'"),
    ({"url": "https://u:p@es.example.com"}, "url: holds a user name or password"),
    ({"username": "u", "password": {"env": "ES_PASSWORD"}}, "either api_key or username + password"),
    ({"api_key": None}, "set a credential"),
    ({"api_key": "plain"}, "secrets are never written in the config"),
    ({"ca_file": "nowhere.pem"}, "ca_file: "),
    ({"ca_file": "ca.pem", "tls_verify": False}, "ca_file would be ignored"),
    ({"refresh": True}, "refresh"),
])
def test_the_config_refuses_what_cannot_work_naming_the_key(keys: dict[str, Any], says: str, tmp_path: Path) -> None:
    elastic = {"type": "elasticsearch", "url": "https://es.example.com:9200", "api_key": {"env": "ES_API_KEY"},
               "index": DS, **keys}
    elastic = {k: v for k, v in elastic.items() if v is not None}
    with pytest.raises(ConfigError, match=re.escape(says)):
        parse_config({"sources": [SOURCE], "sinks": {"elastic": elastic}}, base_dir=str(tmp_path))


def test_the_config_takes_the_issues_keys(tmp_path: Path) -> None:
    cfg = parse_config({"sources": [SOURCE], "sinks": {"elastic": {
        "type": "elasticsearch", "url": "https://es.example.com:9200/", "username": "logpull",
        "password": {"env": "ES_PASSWORD"}, "index": "logs-logpull-default", "retries": 2}}}, base_dir=str(tmp_path))
    elastic = cfg.all_sinks["elastic"]
    assert elastic.where(cfg.resolve) == "https://es.example.com:9200/logs-logpull-default"
    assert elastic.kinds == ("elasticsearch",) and [r.env for r in elastic.secret_refs()] == ["ES_PASSWORD"]
    assert type(elastic).model_validate_json(elastic.model_dump_json()) == elastic  # as the resources carry it


SOURCE = {"name": "gws_login", "type": "google_workspace", "application": "login", "base_url": "http://127.0.0.1:9",
          "access_token": {"env": "LOGPULL_TEST_TOKEN"}, "start": "2026-11-26T00:00:00Z"}
