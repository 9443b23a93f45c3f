"""The Sink contract (``contracts/sink.py``), run against every SIEM sink.

To add an implementation, add one entry to FACTORIES: its name, and a function of the test's
``tmp_path`` returning a SinkUnderTest: how to open sink instances on one SIEM side of that test, and
how to read back every record that SIEM side holds for a source, e.g.
``"splunk_hec": lambda tmp: hec_under_test(FakeCollector(tmp))``. Every contract test then runs for it
too, checking what the sink declares it can do (``capabilities``); nothing else changes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from logpull_dagster.sinks.file import FileSink
from logpull_dagster.sinks.splunk_hec import SplunkHecSink
from logpull_dagster_tests.contracts.sink import *  # noqa: F403
from logpull_dagster_tests.contracts.sink import SinkUnderTest
from logpull_dagster_tests.example_plugins.spool_sink import SpoolSink
from logpull_dagster_tests.receivers.hec import shared_receiver


def file_records(root: Path, source: str) -> list[bytes]:
    """What a forwarder watching the folder ships: the lines of the batch files (``*.jsonl``)."""
    return [line for f in sorted((root / source).glob("*.jsonl")) for line in f.read_bytes().splitlines()]


def spool_records(root: Path, source: str) -> list[bytes]:
    return [line for f in sorted((root / source).glob("*.jsonl")) for line in f.read_bytes().splitlines()]


def hec_under_test() -> SinkUnderTest:
    """Splunk HEC with indexer acknowledgement, against the receiver implementing HEC's documented contract
    (``receivers/hec.py``: no Splunk can be installed here); a token of the test's own is its SIEM side,
    and a record is the ``event`` of an indexed event, byte for byte."""
    receiver = shared_receiver()
    token = receiver.add_token()
    return SinkUnderTest(lambda: SplunkHecSink(receiver.url, token, token_env="HEC_TOKEN"),
                         functools.partial(receiver.records, token))


FACTORIES: dict[str, Callable[[Path], SinkUnderTest]] = {
    "file": lambda tmp: SinkUnderTest(functools.partial(FileSink, tmp / "siem"),
                                      functools.partial(file_records, tmp / "siem")),
    # The example plug-in of test_sinks.py: a sink that cannot read back what it holds (names only).
    "spool": lambda tmp: SinkUnderTest(functools.partial(SpoolSink, tmp / "spool"),
                                       functools.partial(spool_records, tmp / "spool")),
    "splunk_hec": lambda tmp: hec_under_test(),
}


@pytest.fixture(params=list(FACTORIES))
def sink_backend(request: pytest.FixtureRequest, tmp_path: Path) -> SinkUnderTest:
    return FACTORIES[request.param](tmp_path)
