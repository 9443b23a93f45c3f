"""The DynamoDB checkpoint store beyond the contract suite, against the real moto server.

What the contract (``test_contract_checkpoints.py``) cannot see: throttling retried, the table's setup
(missing, created on demand, no credentials), the per-page bound of ``known_ids``, a page too big for
one item, and the table deleted under a run. Faults come from a small HTTP proxy in front of moto that
answers chosen requests with the error bodies DynamoDB itself sends; nothing in boto3 is patched.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from logpull_dagster import plugins
from logpull_dagster.checkpoints import CheckpointStoreLost, LeaseLost
from logpull_dagster.checkpoints.dynamodb import (
    BOTO_ATTEMPTS,
    RETRY_ATTEMPTS,
    DynamoDbCheckpointsConfig,
    DynamoDbCheckpointStore,
    DynamoDbStoreError,
)
from logpull_dagster_tests.servers import MotoServer

# Slow tier (`make test-fast` leaves it out): moto's server, and botocore's real throttling backoff (tens of seconds).
pytestmark = pytest.mark.slow

START, END = "2026-11-26T10:00:00Z", "2026-11-26T11:00:00Z"
DDB = "com.amazonaws.dynamodb.v20120810#"
Fault = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any]] | None]


class Proxy:
    """An HTTP proxy in front of moto: forwards every request, except those a fault answers itself."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.seen: list[tuple[str, int, dict[str, Any]]] = []  # (operation, status, response body)
        self._http = httpx.Client(timeout=30)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                op = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
                status, headers, out = proxy._answer(op, dict(self.headers), body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _answer(self, op: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        request = json.loads(body or b"{}")
        for fault in list(self.faults):
            answer = fault(op, request)
            if answer is not None:
                status, payload = answer
                self.seen.append((op, status, payload))
                return status, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(payload).encode()
        keep = {k: v for k, v in headers.items() if k.lower() not in ("host", "content-length", "connection")}
        resp = self._http.post(self.upstream, content=body, headers=keep)
        out = {k: v for k, v in resp.headers.items()
               if k.lower() in ("content-type", "x-amzn-requestid", "x-amz-crc32")}
        self.seen.append((op, resp.status_code, resp.json() if resp.content else {}))
        return resp.status_code, out, resp.content

    def fail(self, op: str, times: int, status: int, payload: dict[str, Any]) -> None:
        """Answer the next ``times`` requests of ``op`` with ``payload`` instead of forwarding them."""
        left = [times]

        def fault(seen_op: str, _: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
            if seen_op != op or left[0] <= 0:
                return None
            left[0] -= 1
            return status, payload

        self.faults.append(fault)

    def count(self, op: str, status: int | None = None) -> int:
        return sum(1 for o, s, _ in self.seen if o == op and (status is None or s == status))

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()


@pytest.fixture
def moto(moto_server: MotoServer, aws_env: dict[str, str]) -> MotoServer:
    return moto_server


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[Proxy]:
    p = Proxy(moto.url)
    yield p
    p.close()


def table_name() -> str:
    return f"cp_{uuid.uuid4().hex[:12]}"


def pairs(times: range) -> list[tuple[int, bytes]]:
    return [(t, t.to_bytes(16, "big")) for t in times]


def ddb(moto: MotoServer) -> Any:
    return boto3.client("dynamodb", endpoint_url=moto.url, region_name="us-east-1")


# ---- the config keys are a public contract ------------------------------------------------------------

def test_the_config_keys_open_the_store_through_the_plugin_registry(moto: MotoServer, tmp_path: Any) -> None:
    table = table_name()
    cfg = DynamoDbCheckpointsConfig.model_validate(
        {"type": "dynamodb", "table": table, "region": "us-east-1", "endpoint_url": moto.url, "create_table": True})
    assert cfg.problems(lambda p: tmp_path / p) == []
    assert cfg.where(lambda p: tmp_path / p) == f"dynamodb table {table} in region us-east-1 ({moto.url})"
    store = plugins.open_store("checkpoints", cfg, tmp_path)
    try:
        assert isinstance(store, DynamoDbCheckpointStore) and store.list("s", "pull") == []
    finally:
        store.close()
    bad = DynamoDbCheckpointsConfig(type="dynamodb", table="x", endpoint_url="127.0.0.1:5000")
    assert [key for key, _ in bad.problems(lambda p: tmp_path / p)] == ["table", "endpoint_url"]
    with pytest.raises(ValueError, match="credentials"):  # the config never holds them
        DynamoDbCheckpointsConfig.model_validate({"type": "dynamodb", "table": table, "credentials": "x"})


# ---- setup --------------------------------------------------------------------------------------------

def test_a_missing_table_without_create_table_is_a_clear_error_naming_the_key_and_the_fix(moto: MotoServer) -> None:
    table = table_name()
    with pytest.raises(DynamoDbStoreError) as e:
        DynamoDbCheckpointStore(table, region="us-east-1", endpoint_url=moto.url)
    msg = str(e.value)
    assert f"dynamodb table {table} in region us-east-1" in msg and "does not exist (checkpoints.table)" in msg
    assert "create_table: true" in msg and f"aws dynamodb create-table --table-name {table}" in msg
    assert table not in ddb(moto).list_tables()["TableNames"]  # nothing was created


def test_a_table_created_on_demand_is_pay_per_request_and_racing_creators_all_succeed(moto: MotoServer) -> None:
    table = table_name()
    stores: list[DynamoDbCheckpointStore] = []
    errors: list[BaseException] = []
    go = threading.Barrier(4)

    def open_one() -> None:
        go.wait()
        try:
            stores.append(DynamoDbCheckpointStore(table, region="us-east-1", endpoint_url=moto.url,
                                                  create_table=True))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == [] and len(stores) == 4
    desc = ddb(moto).describe_table(TableName=table)["Table"]
    assert desc["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST" and desc["TableStatus"] == "ACTIVE"
    assert {k["AttributeName"]: k["KeyType"] for k in desc["KeySchema"]} == {"pk": "HASH", "sk": "RANGE"}
    for s in stores:
        s.close()


def test_a_table_with_another_key_schema_is_refused(moto: MotoServer) -> None:
    table = table_name()
    ddb(moto).create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                           AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                           KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    with pytest.raises(DynamoDbStoreError, match="name a table of its own"):
        DynamoDbCheckpointStore(table, region="us-east-1", endpoint_url=moto.url)


def test_no_credentials_is_a_clear_error_naming_boto3s_chain(moto: MotoServer, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Any) -> None:
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
              "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ROLE_ARN",
              "AWS_WEB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role on a test machine
    with pytest.raises(DynamoDbStoreError, match="no AWS credentials") as e:
        DynamoDbCheckpointStore(table_name(), region="us-east-1", endpoint_url=moto.url, create_table=True)
    assert "AWS_ACCESS_KEY_ID" in str(e.value) and "instance role" in str(e.value)


# ---- throttling ---------------------------------------------------------------------------------------

def test_throttling_is_retried_until_served(proxy: Proxy) -> None:
    store = DynamoDbCheckpointStore(table_name(), region="us-east-1", endpoint_url=proxy.url, create_table=True)
    cp = store.acquire("s", "pull", START, END, owner="a", ttl=60, now=100)
    # More throttles than botocore's default for DynamoDB (4 attempts): the store's own (BOTO_ATTEMPTS)
    # get it through, in the one layer that retries throttling.
    proxy.fail("UpdateItem", 5, 400, {"__type": DDB + "ThrottlingException", "message": "Rate of requests exceeds "
                                      "the allowed throughput."})
    cp = store.commit(dataclasses.replace(cp, page_seq=1), ttl=60, now=101)
    assert proxy.count("UpdateItem", 400) == 5 and store.get("s", "pull", START) == cp
    # A transaction cancelled for throttling is not an answer: retried, and applied once.
    proxy.fail("TransactWriteItems", 2, 400, {
        "__type": DDB + "TransactionCanceledException",
        "message": "Transaction cancelled, please refer cancellation reasons for specific reasons "
                   "[ThrottlingError, None, None]",
        "CancellationReasons": [{"Code": "ThrottlingError", "Message": "Throughput exceeds the current capacity "
                                 "of your table or index."}, {"Code": "None"}, {"Code": "None"}]})
    proxy.fail("Query", 1, 400, {"__type": DDB + "ProvisionedThroughputExceededException",
                                 "message": "The level of configured provisioned throughput for the table was "
                                            "exceeded."})
    page = pairs(range(1000, 1100))
    cp = store.commit(dataclasses.replace(cp, page_seq=2), ttl=60, now=102, landed_ids=page)
    assert proxy.count("TransactWriteItems", 400) == 2 and proxy.count("TransactWriteItems", 200) == 1
    assert store.count_ids("s", START) == 100 and store.known_ids("s", START, page) == {d for _, d in page}
    assert store.get("s", "pull", START) == cp
    store.close()


THROTTLED = {"__type": DDB + "ThrottlingException", "message": "Rate of requests exceeds the allowed throughput."}
CANCELLED_THROTTLED = {
    "__type": DDB + "TransactionCanceledException",
    "message": "Transaction cancelled, please refer cancellation reasons for specific reasons [ThrottlingError, None]",
    "CancellationReasons": [{"Code": "ThrottlingError", "Message": "Throughput exceeds the current capacity of your "
                             "table or index."}, {"Code": "None"}]}


def test_a_throttle_that_never_clears_is_retried_by_one_layer_only(proxy: Proxy) -> None:
    """One owner per fault: a throttled request is retried by botocore alone (BOTO_ATTEMPTS requests, not
    botocore's attempts times the store's), a cancelled transaction by the store alone (botocore answers
    it at once); past its owner's bound the call fails with DynamoDB's own error, and the next call, once
    the throttle clears, is served."""
    store = DynamoDbCheckpointStore(table_name(), region="us-east-1", endpoint_url=proxy.url, create_table=True)
    cp = store.acquire("s", "pull", START, END, owner="a", ttl=600, now=100)
    proxy.fail("UpdateItem", 1_000, 400, THROTTLED)
    began = time.monotonic()
    with pytest.raises(ClientError, match="ThrottlingException"):
        store.commit(dataclasses.replace(cp, page_seq=1), ttl=600, now=101)
    took = time.monotonic() - began
    assert proxy.count("UpdateItem", 400) == BOTO_ATTEMPTS == 7  # before: 5 botocore x 4 stamina rounds = 20
    # botocore's throttling backoff: rand(0, 1) * min(2 ** i, 20) s, at most 51 s in all for 7 attempts
    assert took < 51 + 10, took

    proxy.fail("TransactWriteItems", 1_000, 400, CANCELLED_THROTTLED)
    with pytest.raises(ClientError, match="TransactionCanceledException"):
        store.commit(dataclasses.replace(cp, page_seq=1), ttl=600, now=102, landed_ids=pairs(range(1, 11)))
    assert proxy.count("TransactWriteItems", 400) == RETRY_ATTEMPTS == 5

    proxy.faults.clear()  # the throttle clears: the same commit goes through, once
    cp = store.commit(dataclasses.replace(cp, page_seq=1), ttl=600, now=103, landed_ids=pairs(range(1, 11)))
    assert store.get("s", "pull", START) == cp and store.count_ids("s", START) == 10
    assert proxy.count("TransactWriteItems", 200) == 1
    store.close()


def test_a_failed_condition_is_not_retried(proxy: Proxy) -> None:
    store = DynamoDbCheckpointStore(table_name(), region="us-east-1", endpoint_url=proxy.url, create_table=True)
    stale = store.acquire("s", "pull", START, END, owner="a", ttl=10, now=100)
    store.acquire("s", "pull", START, END, owner="b", ttl=10, now=200)
    before = proxy.count("TransactWriteItems")
    with pytest.raises(LeaseLost):
        store.commit(stale, ttl=10, now=201, landed_ids=pairs(range(5, 10)))
    assert proxy.count("TransactWriteItems") == before + 1 and store.count_ids("s", START) == 0
    store.close()


# ---- known_ids reads per page, not per window -------------------------------------------------------------

def test_known_ids_of_a_late_page_reads_only_the_pages_whose_time_overlaps_it(proxy: Proxy) -> None:
    store = DynamoDbCheckpointStore(table_name(), region="us-east-1", endpoint_url=proxy.url, create_table=True)
    cp = store.acquire("s", "pull", START, END, owner="a", ttl=600, now=100)
    n_pages = 60
    for k in range(n_pages):  # page k: ten events at k*1000 .. k*1000+9
        cp = store.commit(dataclasses.replace(cp, page_seq=k + 1), ttl=600, now=100,
                          landed_ids=pairs(range(k * 1000, k * 1000 + 10)))
    assert store.count_ids("s", START) == n_pages * 10

    def scanned(lookup: list[tuple[int, bytes]]) -> tuple[set[bytes], int, int]:
        first = len(proxy.seen)
        found = store.known_ids("s", START, lookup)
        queries = [body for op, status, body in proxy.seen[first:] if op == "Query" and status == 200]
        return found, sum(q["ScannedCount"] for q in queries), len(queries)

    # A re-read page: two events of page 57, one of page 58, one never landed between them.
    late = [(57_003, (57_003).to_bytes(16, "big")), (57_009, (57_009).to_bytes(16, "big")),
            (58_001, (58_001).to_bytes(16, "big")), (57_500, b"n" * 16)]
    found, items_read, queries = scanned(late)
    assert found == {d for t, d in late if t != 57_500}
    assert queries == 1 and items_read <= 2  # pages 57 and 58 of 60
    found, items_read, _ = scanned(pairs(range(59_000, 59_010)))  # the newest page
    assert len(found) == 10 and items_read == 1
    found, items_read, _ = scanned(pairs(range(0, 60_000, 1000)))  # one event of every page: all are read
    assert len(found) == n_pages and items_read == n_pages
    store.close()


# ---- a page too big for one item --------------------------------------------------------------------------

def test_a_page_with_more_than_400_kb_of_ids_is_split_into_items_and_round_trips(moto: MotoServer) -> None:
    table = table_name()
    store = DynamoDbCheckpointStore(table, region="us-east-1", endpoint_url=moto.url, create_table=True)
    cp = store.acquire("s", "pull", START, END, owner="a", ttl=60, now=100)
    big = pairs(range(30_000, 0, -1))  # 30,000 × 24 bytes = 720 KB, newest first as APIs send them
    cp = store.commit(dataclasses.replace(cp, page_seq=1, events=len(big)), ttl=60, now=101, landed_ids=big)
    items = ddb(moto).query(TableName=table, KeyConditionExpression="pk = :pk", ConsistentRead=True,
                            ExpressionAttributeValues={":pk": {"S": f"ids#s#{START}"}})["Items"]
    parts = [i for i in items if i["sk"]["S"] != "meta"]
    assert len(parts) == 3 and all(len(i["pairs"]["B"]) <= 300_000 for i in parts)
    assert sum(int(i["n"]["N"]) for i in parts) == len(big)
    reopened = DynamoDbCheckpointStore(table, region="us-east-1", endpoint_url=moto.url)
    assert reopened.count_ids("s", START) == len(big)
    assert reopened.known_ids("s", START, big) == {d for _, d in big}
    edge = [(12_500, (12_500).to_bytes(16, "big")), (12_501, (12_501).to_bytes(16, "big")), (12_500, b"x" * 16)]
    assert reopened.known_ids("s", START, edge) == {(12_500).to_bytes(16, "big"), (12_501).to_bytes(16, "big")}
    assert reopened.get("s", "pull", START) == cp
    store.close()
    reopened.close()


# ---- the table deleted under a run ----------------------------------------------------------------------

def test_the_table_deleted_mid_run_raises_checkpoint_store_lost_from_every_write(moto: MotoServer) -> None:
    table = table_name()
    store = DynamoDbCheckpointStore(table, region="us-east-1", endpoint_url=moto.url, create_table=True)
    cp = store.acquire("s", "pull", START, END, owner="a", ttl=60, now=100)
    cp = store.commit(dataclasses.replace(cp, page_seq=1), ttl=60, now=101, landed_ids=pairs(range(1, 5)))
    ddb(moto).delete_table(TableName=table)
    for write in (lambda: store.commit(dataclasses.replace(cp, page_seq=2), ttl=60, now=102),
                  lambda: store.commit(dataclasses.replace(cp, page_seq=2), ttl=60, now=102,
                                       landed_ids=pairs(range(5, 9))),
                  lambda: store.release(cp, now=103),
                  lambda: store.acquire("s", "pull", END, "2026-11-26T12:00:00Z", owner="a", ttl=60, now=104)):
        with pytest.raises(CheckpointStoreLost, match="was deleted or replaced while this run was using it") as lost:
            write()
        assert f"dynamodb table {table}" in str(lost.value) and isinstance(lost.value, LeaseLost)
    store.close()


def test_the_table_recreated_under_a_run_is_a_lost_store_too(moto: MotoServer) -> None:
    """Deleted and created again (another run with create_table: true): this run's row is gone."""
    table = table_name()
    store = DynamoDbCheckpointStore(table, region="us-east-1", endpoint_url=moto.url, create_table=True)
    cp = store.acquire("s", "pull", START, END, owner="a", ttl=60, now=100)
    ddb(moto).delete_table(TableName=table)
    DynamoDbCheckpointStore(table, region="us-east-1", endpoint_url=moto.url, create_table=True).close()
    with pytest.raises(CheckpointStoreLost, match="is gone"):
        store.commit(dataclasses.replace(cp, page_seq=1), ttl=60, now=101)
    assert store.get("s", "pull", START) is None  # nothing was written into the new table
    store.close()


def test_floats_come_back_bit_for_bit(moto: MotoServer) -> None:
    store = DynamoDbCheckpointStore(table_name(), region="us-east-1", endpoint_url=moto.url, create_table=True)
    now = time.time() + 1e-7  # a real clock's value, with all 17 significant digits in use
    cp = store.acquire("s", "pull", START, END, owner="a", ttl=0.1, now=now)
    assert (cp.lease_expires, cp.heartbeat) == (now + 0.1, now)
    cp = store.commit(cp, ttl=1 / 3, now=now + 2 ** -20)
    got = store.get("s", "pull", START)
    assert got == cp and got.lease_expires.hex() == (now + 2 ** -20 + 1 / 3).hex()
    store.close()
