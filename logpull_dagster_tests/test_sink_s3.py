"""The S3 sink beyond the contract suite: its config, its object layout, no PUT for a resend, conflicts and
racing writers, reconciling after a lost checkpoint store, and its errors.

Everything talks to moto's real server over TCP (``servers.py``). What a reader of the bucket sees is
counted at the server, two ways: the objects listed and read back, line by line; and the
``s3:ObjectCreated`` notifications S3 sends to an SQS queue, which is what Splunk's SQS-based S3 input,
Sentinel and SecOps SQS feeds ingest (every PUT is one, even of identical bytes). The PUT requests the
sink sends are counted too, by a botocore event hook on its client.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
import yaml

from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.config import ConfigError, parse_config
from logpull_dagster.deliver import deliver_window
from logpull_dagster.json_codec import loads
from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.plugins import open_sink
from logpull_dagster.pull import id_digest, pull_window
from logpull_dagster.sinks import Written
from logpull_dagster.sinks.s3 import S3Sink, S3SinkConfig, S3SinkError, S3SinkUnreachable
from logpull_dagster_tests.conftest import Servers
from logpull_dagster_tests.contracts.sink import W, batch
from logpull_dagster_tests.fakes import FakeSource, make_events
from logpull_dagster_tests.servers import AWS_ENV, Gate

# Slow tier (`make test-fast` leaves it out): S3 on moto.
pytestmark = pytest.mark.slow

S = "s"
KEY_DIR = "archive/s/2026/11/26/10/"  # <prefix>/<stream>/<yyyy>/<mm>/<dd>/<HH>/ of W's start


@dataclass
class Bucket:
    """A fresh bucket on moto, with S3 event notifications to an SQS queue (what notification-driven
    SIEM inputs read) and versioning (every PUT that lands is a version)."""

    url: str
    name: str
    queue: str
    s3: Any
    sqs: Any

    def sink(self, prefix: str = "archive") -> S3Sink:
        return S3Sink(self.name, prefix=prefix, region="us-east-1", endpoint_url=self.url)

    def keys(self, prefix: str = "archive/") -> list[str]:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))

    def raw(self, key: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.name, Key=key)["Body"].read())

    def records(self, prefix: str = "archive/") -> list[bytes]:
        """Every line of every object: what a reader listing the bucket ingests."""
        return [line for k in self.keys(prefix) for line in gzip.decompress(self.raw(k)).splitlines()]

    def ids(self, prefix: str = "archive/") -> list[str]:
        return [loads(line)["event_id"] for line in self.records(prefix)]

    def versions(self) -> int:
        pages = self.s3.get_paginator("list_object_versions").paginate(Bucket=self.name)
        return sum(len(page.get("Versions", ())) for page in pages)

    def notified(self) -> list[str]:
        """The keys of the ObjectCreated notifications sent since the last call (drains the queue)."""
        out: list[str] = []
        while msgs := self.sqs.receive_message(QueueUrl=self.queue, MaxNumberOfMessages=10).get("Messages"):
            for m in msgs:
                out += [unquote_plus(r["s3"]["object"]["key"]) for r in json.loads(m["Body"]).get("Records", ())
                        if r["eventName"].startswith("ObjectCreated")]
                self.sqs.delete_message(QueueUrl=self.queue, ReceiptHandle=m["ReceiptHandle"])
        return out


@pytest.fixture
def bucket(servers: Servers) -> Bucket:
    url, name = servers.moto.url, f"archive-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    sqs = boto3.client("sqs", endpoint_url=url, region_name="us-east-1")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=name, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    b = Bucket(url, name, queue, s3, sqs)
    b.notified()  # S3's s3:TestEvent
    return b


@pytest.fixture
def sink(bucket: Bucket) -> Iterator[S3Sink]:
    s = bucket.sink()
    yield s
    s.close()


def count_puts(sink: S3Sink) -> list[str]:
    """The keys of the PutObject requests ``sink`` sends from now on (botocore's retries included)."""
    sent: list[str] = []
    sink._s3.client.meta.events.register(
        "before-parameter-build.s3.PutObject", lambda params, **_: sent.append(params["Key"]))
    return sent


# ---- the config: a public contract ------------------------------------------------------------------

SOURCE = {"name": "gws", "type": "google_workspace", "application": "login", "base_url": "http://127.0.0.1:9",
          "access_token": {"env": "LOGPULL_TEST_TOKEN"}, "start": "2026-11-26T10:00:00Z"}


def load(tmp_path: Path, archive: dict[str, Any]) -> Any:
    return parse_config({"sources": [SOURCE], "sinks": {"archive": archive}}, origin="logpull.yaml",
                        base_dir=str(tmp_path))


def test_the_documented_config_loads_and_opens_a_sink_on_the_bucket(tmp_path: Path) -> None:
    cfg = load(tmp_path, yaml.safe_load("{type: s3, bucket: my-audit-archive, prefix: logpull, region: eu-west-1, "
                                        "endpoint_url: 'http://127.0.0.1:5001'}"))
    archive = cfg.all_sinks["archive"]
    assert isinstance(archive, S3SinkConfig) and archive.kinds == ("s3",)
    assert (archive.bucket, archive.prefix, archive.region, archive.endpoint_url) == (
        "my-audit-archive", "logpull", "eu-west-1", "http://127.0.0.1:5001")
    assert archive.where(cfg.resolve) == "s3://my-audit-archive/logpull"
    sink = open_sink(cfg, "archive")
    try:
        assert isinstance(sink, S3Sink) and sink.capabilities == {"names", "read_back"}
        assert sink.location("gws") == "s3://my-audit-archive/logpull/gws/"
    finally:
        sink.close()
    bare = load(tmp_path, {"type": "s3", "bucket": "my-audit-archive"}).all_sinks["archive"]
    assert (bare.prefix, bare.region, bare.endpoint_url) == ("", None, None)


@pytest.mark.parametrize(("archive", "message"), [
    ({"bucket": "My_Archive"}, "sinks.archive.bucket: 'My_Archive' is not an S3 bucket name"),
    ({"bucket": "s3://my-archive/logpull"}, "without s3:// or a path (the path goes in prefix)"),
    ({"bucket": "my-archive", "prefix": "/logpull"}, "sinks.archive.prefix: '/logpull' is not a key prefix"),
    ({"bucket": "my-archive", "region": "EU West"}, "sinks.archive.region: 'EU West' is not an AWS region"),
    ({"bucket": "my-archive", "endpoint_url": "minio:9000"}, "sinks.archive.endpoint_url: 'minio:9000' must be"),
    ({"bucket": "my-archive", "aws_secret_access_key": "x"}, "sinks.archive.aws_secret_access_key"),
    ({}, "sinks.archive.bucket"),
])
def test_a_wrong_key_is_named_when_the_config_loads(tmp_path: Path, archive: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, {"type": "s3", **archive})
    assert message in str(e.value)


# ---- layout -------------------------------------------------------------------------------------------

def test_each_batch_is_one_deterministic_gzip_object_under_its_dated_key(bucket: Bucket, sink: S3Sink) -> None:
    lines, ids = batch("a", "b", "c")
    written = sink.write_batch(S, W, 7, lines, ids)
    key = f"{KEY_DIR}s-20261126T1000Z-b000007.jsonl.gz"
    assert written == Written(f"s3://{bucket.name}/{key}", 3)
    assert bucket.keys() == [key] and bucket.records() == lines  # the envelope records, unchanged
    raw = bucket.raw(key)
    # gzip with mtime 0 and no file name (FLG 0): the same lines give the same bytes, whenever written
    assert raw[:3] == b"\x1f\x8b\x08" and raw[3] == 0 and raw[4:8] == b"\0\0\0\0"
    assert raw == gzip.compress(b"\n".join(lines) + b"\n", compresslevel=6, mtime=0)
    head = bucket.s3.head_object(Bucket=bucket.name, Key=key)
    assert head["Metadata"] == {"logpull-sha256": hashlib.sha256(b"\n".join(lines) + b"\n").hexdigest(),
                                "logpull-events": "3"}
    assert bucket.notified() == [key]
    assert sink.location(S) == f"s3://{bucket.name}/archive/s/"


# ---- a resend is never PUT again ----------------------------------------------------------------------

class Died(Exception):
    """The delivery process died right after the SIEM confirmed a batch, before its checkpoint."""


class DiesAfter:
    """The S3 sink, dying after writing batch ``n`` (the worst moment for a resend)."""

    def __init__(self, sink: S3Sink, n: int) -> None:
        self.sink, self.n, self.capabilities = sink, n, sink.capabilities

    def write_batch(self, source: str, window: Any, batch: int, lines: list[bytes], ids: list[str],
                    **kw: Any) -> Written:
        out = self.sink.write_batch(source, window, batch, lines, ids, **kw)
        if batch == self.n:
            raise Died(f"killed after batch {batch}")
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)


def test_a_delivery_retried_after_a_crash_puts_no_object_again(tmp_path: Path, bucket: Bucket,
                                                                sink: S3Sink) -> None:
    """Batch 3 was written and confirmed, then the process died before its checkpoint: the retry finds
    batch 3 whole in the bucket and does not PUT it, so a notification-driven reader ingests it once."""
    store, landing = SqliteCheckpointStore(tmp_path / "cp.db"), LocalLandingStore(tmp_path / "landing")
    try:
        events = make_events(W, 95)
        pull_window(FakeSource(events, page_size=20), W, source_name=S, checkpoints=store, landing=landing,
                    owner="p", lease_ttl=60)
        with pytest.raises(Died):
            deliver_window(W, source_name=S, checkpoints=store, landing=landing, sink=DiesAfter(sink, 3),
                           owner="d1", lease_ttl=60)
        assert len(bucket.notified()) == 4
        puts = count_puts(sink)
        again = deliver_window(W, source_name=S, checkpoints=store, landing=landing, sink=sink, owner="d2",
                               lease_ttl=60)
    finally:
        store.close()
    assert again.batches == 2 and again.total_events == 96  # 95 + the one on the window's start
    assert [k.rsplit("-", 1)[1] for k in puts] == ["b000004.jsonl.gz"]  # batch 3 not PUT again
    ids = bucket.ids()
    assert len(ids) == len(set(ids)) == 96 and set(ids) == {e.id for e in events if W.contains(e.time)}
    assert len(bucket.notified()) == 1 and bucket.versions() == len(bucket.keys()) == 5


def test_a_batch_written_again_with_the_same_content_sends_no_put(bucket: Bucket, sink: S3Sink) -> None:
    lines, ids = batch("a", "b")
    sink.write_batch(S, W, 0, lines, ids)
    puts = count_puts(sink)
    for _ in range(3):
        assert sink.write_batch(S, W, 0, lines, ids).events == 2
    again = bucket.sink()  # another run, after a restart
    puts_again = count_puts(again)
    assert again.write_batch(S, W, 0, lines, ids).events == 2
    again.close()
    assert puts == puts_again == []
    assert len(bucket.notified()) == 1 and bucket.versions() == 1 and bucket.records() == lines


def test_an_object_from_elsewhere_with_the_same_bytes_is_the_batch(bucket: Bucket, sink: S3Sink) -> None:
    """Copied in by a tool that drops user metadata (no logpull-sha256): its ETag, the MD5 of the body,
    says it is the batch; gzip'd otherwise (another level, a file name, another zlib), its content does."""
    lines, ids = batch("a", "b")
    data = b"\n".join(lines) + b"\n"
    for n, body in enumerate((gzip.compress(data, compresslevel=6, mtime=0), gzip.compress(data, compresslevel=9))):
        key = f"{KEY_DIR}s-20261126T1000Z-b00000{n}.jsonl.gz"
        bucket.s3.put_object(Bucket=bucket.name, Key=key, Body=body)
        bucket.notified()
        puts = count_puts(sink)
        assert sink.write_batch(S, W, n, lines, ids) == Written(f"s3://{bucket.name}/{key}", 2)
        assert puts == [] and bucket.notified() == []
        assert all(sink.write_batch(S, W, n, *other).conflict for other in (batch("a"), batch("a", "b", "c")))


# ---- conflicts and racing writers -------------------------------------------------------------------

def test_a_name_holding_other_content_is_a_conflict_and_is_left_as_it_is(bucket: Bucket, sink: S3Sink) -> None:
    lines, ids = batch("a", "b")
    sink.write_batch(S, W, 0, lines, ids)
    bucket.notified()
    puts = count_puts(sink)
    for other in (batch("a"), batch("b", "a"), batch("a", "b", "c")):
        assert sink.write_batch(S, W, 0, *other) == Written(None, conflict=True)
    assert puts == [] and bucket.notified() == [] and bucket.records() == lines and bucket.versions() == 1


def test_two_writers_racing_for_one_name_cannot_replace_each_others_batch(bucket: Bucket, sink: S3Sink) -> None:
    """Another writer PUTs the name between this one's HEAD (free) and its PUT: the fence runs exactly
    there. The conditional PUT (If-None-Match: *) is refused with 412, and the name is compared."""
    key = f"{KEY_DIR}s-20261126T1000Z-b000000.jsonl.gz"
    other, mine = batch("x"), batch("a", "b")
    rival = bucket.sink()

    def rival_writes(lines: list[bytes], ids: list[str]) -> None:
        assert rival.write_batch(S, W, 0, lines, ids).events == len(lines)

    puts = count_puts(sink)
    assert sink.write_batch(S, W, 0, *mine, fence=lambda: rival_writes(*other)) == Written(None, conflict=True)
    assert puts == [key]  # sent, and refused by S3: nothing written
    assert bucket.records() == other[0] and bucket.versions() == 1 and bucket.notified() == [key]
    # The same race with the same content (two runs of one batch): found whole, written once.
    key1 = key.replace("b000000", "b000001")
    assert sink.write_batch(S, W, 1, *mine, fence=lambda: rival.write_batch(S, W, 1, *mine)).events == 2
    assert bucket.notified() == [key1] and bucket.versions() == 2
    rival.close()


# ---- reconciling after a lost checkpoint store ------------------------------------------------------

def test_a_lost_checkpoint_store_and_a_new_page_size_deliver_every_event_once(tmp_path: Path, bucket: Bucket,
                                                                               sink: S3Sink) -> None:
    """Delivered in pages of 20, the checkpoint store deleted, the window read again in pages of 30: the
    new batch names mostly exist with other events. Delivery lists and reads the window's objects and
    writes only what is missing; here nothing is, so nothing is PUT."""
    events = make_events(W, 150)
    landing = LocalLandingStore(tmp_path / "landing")

    def run(page_size: int) -> Any:
        store = SqliteCheckpointStore(tmp_path / "cp.db")
        try:
            pull_window(FakeSource(events, page_size=page_size), W, source_name=S, checkpoints=store,
                        landing=landing, owner="p", lease_ttl=60)
            return deliver_window(W, source_name=S, checkpoints=store, landing=landing, sink=sink, owner="d",
                                  lease_ttl=60)
        finally:
            store.close()

    first = run(20)
    assert first.events == 151 and len(bucket.notified()) == 8
    truth = sorted(bucket.ids())
    for f in tmp_path.glob("cp.db*"):  # rm cp.db*
        f.unlink()
    puts = count_puts(sink)
    again = run(30)
    ids = bucket.ids()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} events reached the bucket twice"
    assert sorted(ids) == truth and (again.events, again.already_delivered, again.reconciled) == (0, 151, True)
    assert puts == [] and bucket.notified() == []
    assert sink.delivered_ids(S, W) == {id_digest(i) for i in truth}


def test_after_a_lost_store_only_the_missing_events_are_written_under_new_names(tmp_path: Path, bucket: Bucket,
                                                                                sink: S3Sink) -> None:
    """A partial delivery (2 of 8 batches), the store lost, the window read again in other pages: the
    events already in the bucket are left out, the others written under content-hashed names that no
    earlier batch has, then plain names again once every held event was met."""
    events = make_events(W, 150)
    landing = LocalLandingStore(tmp_path / "landing")
    store = SqliteCheckpointStore(tmp_path / "cp.db")
    pull_window(FakeSource(events, page_size=20), W, source_name=S, checkpoints=store, landing=landing,
                owner="p", lease_ttl=60)
    with pytest.raises(Died):
        deliver_window(W, source_name=S, checkpoints=store, landing=landing, sink=DiesAfter(sink, 1), owner="d1",
                       lease_ttl=60)
    store.close()
    before, held = bucket.keys(), len(bucket.ids())
    bucket.notified()
    for f in tmp_path.glob("cp.db*"):
        f.unlink()
    store = SqliteCheckpointStore(tmp_path / "cp.db")
    try:
        pull_window(FakeSource(events, page_size=30), W, source_name=S, checkpoints=store, landing=landing,
                    owner="p", lease_ttl=60)
        again = deliver_window(W, source_name=S, checkpoints=store, landing=landing, sink=sink, owner="d2",
                               lease_ttl=60)
    finally:
        store.close()
    ids = bucket.ids()
    assert len(ids) == len(set(ids)) == 151 and (again.already_delivered, again.events) == (held, 151 - held)
    new = [k for k in bucket.keys("archive/") if k not in before]
    assert new[0].endswith(".jsonl.gz") and len(new[0].rsplit("-", 1)[1]) == len("0123456789abcdef.jsonl.gz")
    assert bucket.versions() == len(bucket.keys())  # no name written twice
    assert Counter(bucket.notified()) == Counter(new)


# ---- read back: bounded and strict ------------------------------------------------------------------

def test_read_back_streams_large_and_concatenated_objects_and_refuses_foreign_ones(bucket: Bucket,
                                                                                   sink: S3Sink) -> None:
    """delivered_ids decompresses as it reads (objects far larger than one read), takes a gzip of
    several members (valid gzip, as some tools append), and names an object it cannot read."""
    lines, ids = batch(*(f"e{i:05d}-{'x' * 4000}" for i in range(3000)))  # ~13 MB of JSON Lines
    sink.write_batch(S, W, 0, lines, ids)
    two = gzip.compress(lines[0] + b"\n", mtime=0) + gzip.compress(lines[1] + b"\n", mtime=0)
    bucket.s3.put_object(Bucket=bucket.name, Key=f"{KEY_DIR}s-20261126T1000Z-b000001.jsonl.gz", Body=two)
    assert sink.holds(S, W) and sink.delivered_ids(S, W) == {id_digest(i) for i in ids}
    bucket.s3.put_object(Bucket=bucket.name, Key=f"{KEY_DIR}s-20261126T1000Z-b000002.jsonl.gz", Body=b"{}\n")
    with pytest.raises(OSError, match=r"b000002\.jsonl\.gz is not gzip"):
        sink.delivered_ids(S, W)
    cut = gzip.compress(b"\n".join(lines[:50]))[:-100]
    bucket.s3.put_object(Bucket=bucket.name, Key=f"{KEY_DIR}s-20261126T1000Z-b000002.jsonl.gz", Body=cut)
    with pytest.raises(OSError, match="ends before its gzip stream does"):
        sink.delivered_ids(S, W)


# ---- errors that name the bucket and the fix ----------------------------------------------------------

def test_a_missing_bucket_names_the_bucket_and_the_fix(servers: Servers) -> None:
    sink = S3Sink("no-such-archive", prefix="archive", region="us-east-1", endpoint_url=servers.moto.url)
    try:
        for call in (lambda: sink.write_batch(S, W, 0, *batch("a")), lambda: sink.holds(S, W),
                     lambda: sink.delivered_ids(S, W)):
            with pytest.raises(S3SinkError) as e:
                call()
            text = str(e.value)
            assert text.startswith("the s3 sink's bucket: the bucket 'no-such-archive' does not exist"), text
            assert "aws s3 mb s3://no-such-archive --region us-east-1" in text and servers.moto.url in text
    finally:
        sink.close()


def test_missing_credentials_name_boto3s_chain(bucket: Bucket, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    for var in (*AWS_ENV, "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find here
    sink = bucket.sink()
    try:
        with pytest.raises(S3SinkError, match="boto3 found no AWS credentials in its chain") as e:
            sink.write_batch(S, W, 0, *batch("a"))
        assert "AWS_ACCESS_KEY_ID" in str(e.value) and "never holds credentials" in str(e.value)
    finally:
        sink.close()
    assert bucket.keys() == []


def test_an_unreachable_endpoint_fails_within_seconds_naming_the_keys_to_check(bucket: Bucket) -> None:
    gate = Gate(int(bucket.url.rsplit(":", 1)[1]))
    gate.close()  # nothing listens there now
    sink = S3Sink(bucket.name, region="us-east-1", endpoint_url=gate.url)
    fenced: list[int] = []
    try:
        t0 = time.monotonic()
        with pytest.raises(S3SinkUnreachable, match="S3 did not answer in 3 attempts") as e:
            sink.write_batch(S, W, 0, *batch("a"), fence=lambda: fenced.append(1))
        assert time.monotonic() - t0 < 15  # three refused connections and two jittered waits (<= 1 s, 2 s)
        assert "endpoint_url" in str(e.value) and gate.url in str(e.value) and isinstance(e.value, ConnectionError)
        assert "retried from its checkpoint" in str(e.value) and fenced == []  # failed at the HEAD, before
    finally:
        sink.close()
