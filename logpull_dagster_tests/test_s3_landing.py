"""The S3 landing store beyond the contract suite: its config, its errors, damaged bodies, listings
longer than one response, and S3 outages through the real ``dagster`` CLI.

Everything talks to moto's server over TCP (``servers.py``); an outage is a :class:`Gate` in front
of it, closed for the landing store's endpoint only, so the checkpoints (DynamoDB on the same moto,
or SQLite) carry on and moto keeps its state.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from logpull_dagster.config import ConfigError, load_config, parse_config
from logpull_dagster.landing import LandedPage
from logpull_dagster.landing.s3 import S3LandingConfig, S3LandingError, S3LandingStore, S3Unreachable
from logpull_dagster.plugins import open_checkpoints
from logpull_dagster_tests.cli import materialize_cmd, setup_project, siem_ids, start
from logpull_dagster_tests.conftest import Servers, hour, key, ts
from logpull_dagster_tests.contracts.landing_store import W, lines
from logpull_dagster_tests.servers import AWS_ENV, Gate, SimProcess, free_port

# Slow tier (`make test-fast` leaves it out): S3 on moto, and real `dagster` CLI runs.
pytestmark = pytest.mark.slow

KEY = key(10)
START, END = ts(10), ts(11)


def new_bucket(url: str) -> str:
    bucket = f"landing-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=bucket)
    return bucket


def keys(url: str, bucket: str, prefix: str = "") -> list[str]:
    s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", ())]


# ---- the config: a public contract ------------------------------------------------------------------

SOURCE = {"name": "gws", "type": "google_workspace", "application": "login", "base_url": "http://127.0.0.1:9",
          "access_token": {"env": "LOGPULL_TEST_TOKEN"}, "start": START}


def load(tmp_path: Path, landing: dict[str, Any]) -> Any:
    return parse_config({"sources": [SOURCE], "landing": landing}, origin="logpull.yaml", base_dir=str(tmp_path))


def test_the_documented_landing_config_loads_and_says_where_it_lands(tmp_path: Path) -> None:
    cfg = load(tmp_path, yaml.safe_load("{type: s3, bucket: my-logs, prefix: landing, region: us-east-1, "
                                        "endpoint_url: 'http://127.0.0.1:5001'}"))
    assert isinstance(cfg.landing, S3LandingConfig)
    assert (cfg.landing.bucket, cfg.landing.prefix, cfg.landing.region, cfg.landing.endpoint_url) == (
        "my-logs", "landing", "us-east-1", "http://127.0.0.1:5001")
    assert cfg.landing.where(cfg.resolve) == "s3://my-logs/landing"
    assert load(tmp_path, {"type": "s3", "bucket": "my-logs"}).landing.where(cfg.resolve) == "s3://my-logs/"


@pytest.mark.parametrize(("landing", "message"), [
    ({"bucket": "My_Logs"}, "landing.bucket: 'My_Logs' is not an S3 bucket name"),
    ({"bucket": "s3://my-logs/landing"}, "without s3:// or a path"),
    ({"bucket": "ab"}, "landing.bucket"),
    ({"bucket": "192.168.1.10"}, "not an IP address"),
    ({"bucket": "my..logs"}, "landing.bucket"),
    ({"bucket": "xn--logs"}, "reserves"),
    ({"bucket": "my-logs", "prefix": "/landing"}, "landing.prefix: '/landing' is not a key prefix"),
    ({"bucket": "my-logs", "prefix": "landing/"}, "without a leading or trailing '/'"),
    ({"bucket": "my-logs", "prefix": "a//b"}, "landing.prefix"),
    ({"bucket": "my-logs", "region": "US East"}, "landing.region: 'US East' is not an AWS region"),
    ({"bucket": "my-logs", "endpoint_url": "127.0.0.1:5001"}, "landing.endpoint_url: '127.0.0.1:5001' must be"),
    ({"bucket": "my-logs", "aws_secret_access_key": "x"}, "landing.aws_secret_access_key: unknown key"),
    ({}, "landing.bucket: required key is missing"),
])
def test_a_wrong_landing_key_is_named_when_the_config_loads(tmp_path: Path, landing: dict[str, Any],
                                                            message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, {"type": "s3", **landing})
    assert message in str(e.value)


# ---- errors that name the key and the fix -----------------------------------------------------------

def test_a_missing_bucket_names_landing_bucket_and_the_fix(servers: Servers) -> None:
    store = S3LandingStore("no-such-bucket-here", prefix="landing", region="us-east-1",
                           endpoint_url=servers.moto.url)
    try:
        for call in (lambda: store.put_page("s", W, 0, 1, lines("a")), lambda: store.pages("s", W, below=1),
                     lambda: store.put_read("s", W, 0, 1, b"{}"), lambda: store.discard("s", W, from_seq=0)):
            with pytest.raises(S3LandingError) as e:
                call()
            text = str(e.value)
            assert text.startswith("landing.bucket: the bucket 'no-such-bucket-here' does not exist"), text
            assert "aws s3 mb s3://no-such-bucket-here" in text and servers.moto.url in text
    finally:
        store.close()


def test_missing_credentials_name_boto3s_chain(servers: Servers, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    url, bucket = servers.moto.url, new_bucket(servers.moto.url)
    for var in (*AWS_ENV, "AWS_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to find here
    store = S3LandingStore(bucket, region="us-east-1", endpoint_url=url)
    try:
        with pytest.raises(S3LandingError, match="boto3 found no AWS credentials in its chain") as e:
            store.put_page("s", W, 0, 1, lines("a"))
        assert "AWS_ACCESS_KEY_ID" in str(e.value) and "never holds credentials" in str(e.value)
        with pytest.raises(S3LandingError, match="no AWS credentials"):
            store.read_lines(LandedPage(0, 1, f"s3://{bucket}/x"))
    finally:
        store.close()


def test_an_unreachable_endpoint_fails_within_seconds_naming_the_keys_to_check(servers: Servers) -> None:
    gate = Gate(servers.moto.port)
    gate.close()  # nothing listens there now
    store = S3LandingStore(new_bucket(servers.moto.url), region="us-east-1", endpoint_url=gate.url)
    try:
        t0 = time.monotonic()
        with pytest.raises(S3Unreachable, match="S3 did not answer in 3 attempts") as e:
            store.put_page("s", W, 0, 1, lines("a"))
        assert time.monotonic() - t0 < 15  # three refused connections and two jittered waits (<= 1 s, 2 s)
        assert "landing.endpoint_url" in str(e.value) and gate.url in str(e.value)
        assert isinstance(e.value, ConnectionError)
    finally:
        store.close()


# ---- damaged bodies -----------------------------------------------------------------------------------

class DamagingProxy:
    """An HTTP forwarder that flips one bit of every PUT body on its way to the server.

    moto checks neither Content-MD5 nor the CRC32 header (S3 does), so this is the store's own check
    at work: the ETag moto computes from what it received differs from the MD5 of what was sent.
    """

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.damaged = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target), timeout=10)
            threading.Thread(target=self._responses, args=(upstream, client), daemon=True).start()
            threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()

    @staticmethod
    def _responses(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_RDWR)

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    if not (chunk := client.recv(65536)):
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                length = int(m.group(1)) if m else 0
                upstream.sendall(head + b"\r\n\r\n")  # headers first: botocore may wait for 100-continue
                while len(buf) < length:
                    if not (chunk := client.recv(65536)):
                        return
                    buf += chunk
                body, buf = buf[:length], buf[length:]
                if head.startswith(b"PUT ") and body:
                    body = body[:-1] + bytes([body[-1] ^ 1])
                    self.damaged += 1
                upstream.sendall(body)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_RDWR)


def test_a_page_damaged_on_the_way_is_refused_and_removed(servers: Servers) -> None:
    url, bucket = servers.moto.url, new_bucket(servers.moto.url)
    proxy = DamagingProxy(servers.moto.port)
    damaged = S3LandingStore(bucket, prefix="landing", region="us-east-1", endpoint_url=proxy.url)
    direct = S3LandingStore(bucket, prefix="landing", region="us-east-1", endpoint_url=url)
    try:
        with pytest.raises(OSError, match=r"is not the body sent .* it was deleted"):
            damaged.put_page("s", W, 0, 1, lines("a"))
        with pytest.raises(OSError, match="is not the body sent"):
            damaged.put_read("s", W, 0, 1, b'{"items": []}')
        assert proxy.damaged == 2
        assert direct.pages("s", W, below=10) == [] and keys(url, bucket) == []  # nothing damaged is left
        direct.put_page("s", W, 0, 1, lines("a"))  # the same store, undamaged: fine
        assert [direct.read_lines(p) for p in direct.pages("s", W, below=1)] == [lines("a")]
    finally:
        for s in (damaged, direct):
            s.close()
        proxy.close()


def test_a_page_whose_bytes_do_not_match_its_stored_checksum_is_refused_on_read(servers: Servers) -> None:
    url, bucket = servers.moto.url, new_bucket(servers.moto.url)
    store = S3LandingStore(bucket, prefix="landing", region="us-east-1", endpoint_url=url)
    try:
        where = store.put_page("s", W, 0, 1, lines("a"))
        # Another writer replaces the object with a body and a CRC32 that do not match (0 is no page's).
        boto3.client("s3", endpoint_url=url, region_name="us-east-1").put_object(
            Bucket=bucket, Key=where.split("/", 3)[3], Body=b"\n".join(lines("b")), ChecksumAlgorithm="CRC32",
            ChecksumCRC32="AAAAAA==")
        (page,) = store.pages("s", W, below=1)
        with pytest.raises(OSError, match="do not match the checksum stored with it"):
            store.read_lines(page)
    finally:
        store.close()


# ---- listings longer than one response -------------------------------------------------------------

def test_pages_and_discard_go_past_one_listing_and_one_delete_request(servers: Servers) -> None:
    url, bucket = servers.moto.url, new_bucket(servers.moto.url)
    store = S3LandingStore(bucket, prefix="deep/landing", region="us-east-1", endpoint_url=url)
    try:
        n = 1_030  # ListObjectsV2 and DeleteObjects stop at 1,000 keys
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda seq: store.put_page("s", W, seq, 1, [b'{"id":"%d"}' % seq]), range(n)))
            list(pool.map(lambda i: store.put_read("s", W, i, 1, b"r"), range(5)))
        assert all(k.startswith(f"deep/landing/s/{W.slug}/") for k in keys(url, bucket))
        pages = store.pages("s", W, below=n)
        assert [p.seq for p in pages] == list(range(n))
        assert store.read_lines(pages[-1]) == [b'{"id":"%d"}' % (n - 1)]
        assert store.discard("s", W, from_seq=10, keep_reads=range(2, 4)) == n - 10 + 3
        assert [p.seq for p in store.pages("s", W, below=n)] == list(range(10))
        assert len(keys(url, bucket)) == 10 + 2
    finally:
        store.close()


# ---- outages through the real CLI -------------------------------------------------------------------

def s3_project(tmp_path: Path, sim: SimProcess, servers: Servers, endpoint: str, store: str = "sqlite",
               **source: Any) -> tuple[dict[str, str], str]:
    """The checkpoints of ``store`` (cli.STORES: dynamodb talks to moto directly), S3 landing at
    ``endpoint`` (moto, or a gate in front of it); the env and the bucket."""
    bucket = new_bucket(servers.moto.url)
    env = setup_project(tmp_path, sim.url, page_size=50, store=store, servers=servers, **source)
    cfg_file = tmp_path / "logpull.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg["landing"] = {"type": "s3", "bucket": bucket, "prefix": "landing", "region": "us-east-1",
                      "endpoint_url": endpoint}
    cfg_file.write_text(yaml.safe_dump(cfg))
    return {**env, **AWS_ENV}, bucket


def wait_for(cond: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def tally(tmp_path: Path) -> dict[str, Any]:
    """The run's tally in the window's pull checkpoint, read from whichever store the config names."""
    store = open_checkpoints(load_config(tmp_path / "logpull.yaml"))
    try:
        cp = store.get("gws", "pull", START)
    finally:
        store.close()
    assert cp is not None and cp.is_complete
    return cp.stats["run"]  # type: ignore[no-any-return]


@pytest.mark.timeout(240)
def test_an_s3_outage_mid_window_and_during_delivery_costs_retries_and_loses_nothing(
        tmp_path: Path, sim_process: SimProcess, servers: Servers) -> None:
    sim_process.control("page_latency", {"seconds": 0.05})  # ~50 pages: ~3 s of reading
    gate = Gate(servers.moto.port)
    try:
        # DynamoDB checkpoints on moto itself, S3 landing through the gate: only S3 goes away. Fault
        # retries 2 s, 4 s, 8 s apart: the window outlasts an outage of a few seconds.
        # Page after page (concurrent_windows 1): it counts the pages read twice.
        env, bucket = s3_project(tmp_path, sim_process, servers, gate.url, store="dynamodb", retries=4,
                                 concurrent_windows=1,
                                 retry_delay="2s")
        log = tmp_path / "runs.log"
        proc = start(materialize_cmd("logs/gws", KEY), env, log)
        wait_for(lambda: proc.poll() is not None or len(sim_process.requests()) >= 10)
        gate.close()  # S3 is gone mid-window; the checkpoints (DynamoDB, same moto, no gate) are not
        read_at_cut = len(sim_process.requests())
        time.sleep(4)
        gate.open()
        assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]
        # Delivery reads the landed pages from S3 alone (nothing landed on this host), through an
        # outage of its own: S3 cut off as it starts, back 3 s later; its retries ride it out.
        gate.close()
        delivery = start(materialize_cmd("siem/gws", KEY), env, log)
        time.sleep(3)
        gate.open()
        assert delivery.wait(timeout=180) == 0, log.read_text()[-3000:]
    finally:
        gate.close()

    pages = Counter(r["pageToken"] for r in sim_process.requests())
    assert read_at_cut < len(pages), "the outage did not fall inside the window"
    run_tally = tally(tmp_path)
    print(f"cut after {read_at_cut} of {len(pages)} pages; the run's tally: {run_tally}")
    assert run_tally["faults"] >= 1, f"the outage cost no retry: {run_tally}"  # it was felt, and survived
    truth = sim_process.truth_ids("login", START, END)
    ids = siem_ids(tmp_path)
    assert len(truth) > 2000
    assert len(ids) == len(set(ids)), "an event reached the SIEM twice"
    assert sorted(ids) == sorted(truth), "an event is missing from the SIEM"
    # Each failed attempt re-reads at most the page it had in flight.
    assert sum(n - 1 for n in pages.values()) <= run_tally["faults"]
    landed = keys(servers.moto.url, bucket, f"landing/gws/{hour(10).strftime('%Y%m%dT%H%MZ')}/")
    assert landed and all(re.search(r"/page-\d{6}\.e\d{6}\.jsonl$", k) for k in landed), landed  # no read left
    assert not (tmp_path / "state" / "landing").exists()
