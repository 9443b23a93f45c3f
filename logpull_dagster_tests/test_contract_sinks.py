"""The Sink contract (``contracts/sink.py``), run against every SIEM sink.

To add an implementation, add one entry to FACTORIES: its name, and a function of the test's
``tmp_path`` and the real servers (``conftest.Servers``, started on first use) returning a SinkUnderTest:
how to open sink instances on one SIEM side of that test, and how to read back every record that SIEM
side holds for a source, e.g. ``"splunk_hec": lambda tmp, _: hec_under_test(FakeCollector(tmp))``; a sink
on a real server is listed in ON_SERVERS too (the slow tier). Every contract test then runs for it
too, checking what the sink declares it can do (``capabilities``); nothing else changes.
"""

from __future__ import annotations

import functools
import gzip
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from logpull_dagster.simulator.hec import shared_receiver
from logpull_dagster.sinks.file import FileSink
from logpull_dagster.sinks.splunk_hec import SplunkHecSink
from logpull_dagster_tests.conftest import Servers
from logpull_dagster_tests.contracts.sink import *  # noqa: F403
from logpull_dagster_tests.contracts.sink import SinkUnderTest
from logpull_dagster_tests.example_plugins.spool_sink import SpoolSink
from logpull_dagster_tests.test_sink_elasticsearch import elastic_under_test
from logpull_dagster_tests.test_sink_syslog import syslog_under_test


def file_records(root: Path, source: str) -> list[bytes]:
    """What a forwarder watching the folder ships: the lines of the batch files (``*.jsonl``)."""
    return [line for f in sorted((root / source).glob("*.jsonl")) for line in f.read_bytes().splitlines()]


def spool_records(root: Path, source: str) -> list[bytes]:
    return [line for f in sorted((root / source).glob("*.jsonl")) for line in f.read_bytes().splitlines()]


def _s3(servers: Servers) -> SinkUnderTest:
    """The S3 sink on moto's S3 (servers.py): its records are every line of every object under the source."""
    import boto3

    from logpull_dagster.sinks.s3 import S3Sink

    url, bucket = servers.moto.url, f"siem-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    s3.create_bucket(Bucket=bucket)

    def records(source: str) -> list[bytes]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"archive/{source}/")
        return [line for page in pages for o in page.get("Contents", ())
                for line in gzip.decompress(s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()).splitlines()]

    return SinkUnderTest(functools.partial(S3Sink, bucket, prefix="archive", region="us-east-1", endpoint_url=url),
                         records)


def hec_under_test() -> SinkUnderTest:
    """Splunk HEC with indexer acknowledgement, against the receiver implementing HEC's documented contract
    (the bundled ``logpull_dagster/simulator/hec.py``: no Splunk can be installed here); a token of the
    test's own is its SIEM side, and a record is the ``event`` of an indexed event, byte for byte."""
    receiver = shared_receiver()
    token = receiver.add_token()
    return SinkUnderTest(lambda: SplunkHecSink(receiver.url, token, token_env="HEC_TOKEN"),
                         functools.partial(receiver.records, token))


FACTORIES: dict[str, Callable[[Path, Servers], SinkUnderTest]] = {
    "file": lambda tmp, _: SinkUnderTest(functools.partial(FileSink, tmp / "siem"),
                                      functools.partial(file_records, tmp / "siem")),
    # The example plug-in of test_sinks.py: a sink that cannot read back what it holds (names only).
    "spool": lambda tmp, _: SinkUnderTest(functools.partial(SpoolSink, tmp / "spool"),
                                       functools.partial(spool_records, tmp / "spool")),
    # A documented-contract _bulk receiver (receivers/elasticsearch.py); records: the stored documents less
    # the one field the sink adds, @timestamp (test_sink_elasticsearch.envelope_of checks it is only that).
    "elasticsearch": lambda tmp, _: elastic_under_test(tmp),
    "s3": lambda _, servers: _s3(servers),  # moto's S3 on 127.0.0.1
    # rsyslogd (one per xdist worker, over TLS): records are the MSG of each message it wrote for the source.
    "syslog": lambda tmp, _: syslog_under_test(tmp),
    # the documented-contract HEC receiver (simulator/hec.py), a token per test
    "splunk_hec": lambda tmp, _: hec_under_test(),
}

# The sinks on real servers start them: the slow tier (`make test-fast` leaves them out).
ON_SERVERS = {"s3", "syslog"}


@pytest.fixture(params=[pytest.param(name, marks=pytest.mark.slow) if name in ON_SERVERS else name
                        for name in FACTORIES])
def sink_backend(request: pytest.FixtureRequest, tmp_path: Path, servers: Servers) -> SinkUnderTest:
    return FACTORIES[request.param](tmp_path, servers)
