"""DynamoDB checkpoint store: one table shared by every worker on every machine (boto3).

Guarantees (the contract of ``checkpoints/__init__.py``):

* ``acquire`` is one conditional ``UpdateItem`` (the lease rule is its condition, epoch and attempts
  are incremented in place), so two processes racing for a window cannot both win: the loser gets
  :class:`LeaseHeld`. A complete window is taken with a second conditional update that keeps it complete.
* ``commit`` and ``release`` are conditional on the row's ``epoch`` and ``lease_owner``. A commit that
  carries ids is one ``TransactWriteItems``: the window row's update (with that condition), the window's
  id summary (count, span levels) and one item per ~300 KB of the page's packed ``(time_us, digest)``
  pairs. Either all of it is written or none; a fenced-off run gets :class:`LeaseLost` and wrote nothing.
  Each transaction carries a ``ClientRequestToken`` (botocore resends it with every retry), so a commit
  retried after a lost response is applied once. A commit returns after DynamoDB acknowledged it (durable across AZs).
* Every read is strongly consistent (``ConsistentRead``): a run that takes over sees the last commit.
* ``known_ids`` reads only the id items whose time span can overlap the page's ``[min, max]`` time
  (a key range bounded by the window's largest item span, rounded up to a power of two), so its cost
  is per page, not per window; nothing about a window is kept in this process's memory.
* A page's ids are deduplicated against the committed ones of its time range before they are written,
  so ``count_ids`` is the distinct count (a total kept in the summary item, one read).
* The table deleted while in use: the next call raises :class:`CheckpointStoreLost` (a ``LeaseLost``).
* Each fault is retried by one layer, with bounded backoff: throttling, 5xx and connection errors by
  botocore's standard mode (7 requests, at most 51 s of backoff), transaction conflicts and cancelled
  transactions by stamina (botocore answers those at once); every call has connect and read timeouts,
  so none blocks for more than about a minute of throttling or 7 read timeouts of a stalled server.
* ``reserve`` (the shared rate budget): an item per account holding the last slot handed out, advanced by a
  consistent read and a conditional put (compare-and-set), retried on conflict, bounded.

Key schema (one table, ``pk`` string partition key + ``sk`` string sort key, on-demand billing)::

    window row   pk = "w#<source>#<stage>"           sk = <window_start>          (the checkpoint's fields)
    id summary   pk = "ids#<source>#<window_start>"  sk = "meta"                  id_total, span_levels
    id item      pk = "ids#<source>#<window_start>"  sk = <t_min>#<uuid>#<part>   t_max, n, pairs (binary)
    rate budget  pk = "rate#<account>"               sk = "rate"                  last_slot

``<t_min>`` is the item's smallest event time in microseconds plus 2**63, zero-padded to 20 digits (so
the string order is the time order); ``pairs`` is ``n`` records of a big-endian int64 time and a
16-byte id digest, sorted by time. Floats are stored as their shortest exact decimal (``repr``), so
they read back bit for bit; ``stats`` as ``json_codec`` text (lone surrogates and big integers kept).

IAM actions on the table: ``dynamodb:DescribeTable``, ``dynamodb:GetItem``, ``dynamodb:Query``,
``dynamodb:PutItem``, ``dynamodb:UpdateItem`` (a TransactWriteItems is authorized as its PutItem and
UpdateItem parts), ``dynamodb:DeleteItem`` only for ``logpull recover`` (``forget_ids``), and
``dynamodb:CreateTable`` only with ``create_table: true``. Credentials come from
boto3's usual chain (environment, shared profile, container or instance role), never from the config.
"""

from __future__ import annotations

import dataclasses
import random
import re
import struct
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import boto3
import stamina
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ReadTimeoutError,
    WaiterError,
)

from logpull_dagster import json_codec
from logpull_dagster.checkpoints import (
    Checkpoint,
    CheckpointStoreError,
    CheckpointStoreLost,
    CheckpointStoreUnavailable,
    LeaseHeld,
    LeaseLost,
    Stage,
)
from logpull_dagster.config import StoreBase
from logpull_dagster.plugins import Plugin

_INTS = ("page_seq", "pages_read", "reads", "journaled", "events", "passes", "attempts", "epoch")
_FLOATS = ("lease_expires", "heartbeat")
_OPTIONAL = ("cursor", "last_error", "lease_owner")  # absent from the item when None
# What commit and release write (as in sqlite.py: everything but the key, the window's end and the fence).
_MUTABLE = [f.name for f in dataclasses.fields(Checkpoint)
            if f.name not in ("source", "stage", "window_start", "window_end", "epoch", "lease_owner")]

_PAIR = struct.Struct(">q16s")
# Id items stay well below DynamoDB's 400 KB item limit, and a commit below a transaction's 4 MB:
# 12 items of 300 KB is 150,000 events in one page, far beyond any API's page size.
_PAIRS_PER_ITEM = 300_000 // _PAIR.size
_MAX_ID_ITEMS = 12
_OFFSET = 2**63  # time_us + _OFFSET is never negative, so zero-padded it sorts as the time does
_META = "meta"

# One owner per fault (docs/architecture.md). botocore owns what it recognises: throttling
# (ThrottlingException, ProvisionedThroughputExceededException, RequestLimitExceeded,
# TransactionInProgressException), 5xx (InternalServerError, ServiceUnavailable) and connection errors
# and timeouts, in standard mode (botocore/retries/standard.py): BOTO_ATTEMPTS requests in all, the
# same ClientRequestToken on each, backoff rand(0, 1) * min(2 ** i, 20) s between throttled ones (at
# most 1 + 2 + 4 + 8 + 16 + 20 = 51 s, about 25 s on average) and rand(0, 1) * 0.025 * 2 ** i s after a
# 5xx or a connection error (at most 1.6 s); a stall costs at most BOTO_ATTEMPTS read timeouts (7 x 15 s).
# botocore's retry quota (a client's 500 units: 5 a throttled retry, 14 any other, paid back by
# successes) can end its retries early in a long storm; the call then fails as a fault and the step's
# retry resumes from the last commit. stamina owns only what botocore answers at once: a write refused
# for a transaction in flight on the same item (TransactionConflictException), and a transaction
# cancelled for a conflict or for throttling, which botocore does not look inside
# (TransactionCanceledException).
# Retrying those cannot change the outcome of a condition, only the chance to be served.
_CONFLICTS = frozenset({"TransactionConflictException"})
_RETRY_REASONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")

# Why 7: nested, botocore's 5 requests inside stamina's rounds (5, within 30 s) made 20 requests in 30 s
# for one throttled call (measured); one layer of 7 rides out as long a throttle with a third of them.
BOTO_ATTEMPTS = 7
_BOTO_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": BOTO_ATTEMPTS}, connect_timeout=5,
                      read_timeout=15, max_pool_connections=16)
RETRY_ATTEMPTS = 5
RETRY_TIMEOUT = 30.0


class DynamoDbStoreError(CheckpointStoreError):
    """The table cannot be used as configured (missing, wrong key schema, no credentials or region)."""


class DynamoDbUnavailable(DynamoDbStoreError, CheckpointStoreUnavailable):
    """DynamoDB did not answer within botocore's retries and timeouts (an outage, or a wrong endpoint_url)."""


# What botocore raises when it got no answer at all, after its own retries.
_UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)


def _pad(t: int) -> str:
    return f"{min(max(t + _OFFSET, 0), 2**64 - 1):020d}"


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _reasons(e: ClientError) -> list[str]:
    return [str(r.get("Code", "None")) for r in e.response.get("CancellationReasons", [])]


def _retryable(e: Exception) -> bool:
    if not isinstance(e, ClientError):
        return False
    if _code(e) in _CONFLICTS:
        return True
    if _code(e) == "TransactionCanceledException":
        reasons = set(_reasons(e)) - {"None"}
        return bool(reasons) and reasons <= _RETRY_REASONS  # a failed condition is an answer, not a fault
    return False


def _num(v: int | float) -> dict[str, str]:
    return {"N": str(v)}


def _float(v: float) -> dict[str, str]:
    f = float(v)
    if f != f or f in (float("inf"), float("-inf")):
        raise ValueError(f"a checkpoint time must be finite, got {v!r}")
    return {"N": repr(f)}  # the shortest decimal that reads back as the same double


def _used(mapping: dict[str, Any], update: list[str], condition: str) -> dict[str, Any]:
    """The placeholders the expressions use (DynamoDB refuses a request that defines one it does not use)."""
    tokens = set(re.findall(r"[#:][A-Za-z0-9_]+", " ".join(update) + " " + condition))
    return {k: v for k, v in mapping.items() if k in tokens}


def _int(text: str) -> int:
    return int(text) if text.lstrip("-").isdigit() else int(Decimal(text))


class DynamoDbCheckpointStore:
    """CheckpointStore on one DynamoDB table (see the module docstring for its keys and guarantees)."""

    def __init__(self, table: str, *, region: str | None = None, endpoint_url: str | None = None,
                 create_table: bool = False) -> None:
        self.table = table
        try:
            # A session of its own: boto3's default session is not safe to share between threads.
            self._client = boto3.session.Session().client("dynamodb", region_name=region, endpoint_url=endpoint_url,
                                                          config=_BOTO_CONFIG)
        except NoRegionError:
            raise DynamoDbStoreError(
                f"no AWS region for the DynamoDB checkpoint table {table!r}: set checkpoints.region in the config "
                f"(e.g. region: us-east-1), or AWS_REGION / AWS_DEFAULT_REGION, or a region in the AWS profile"
            ) from None
        self.region = self._client.meta.region_name
        self.where = f"dynamodb table {table} in region {self.region}" + (f" ({endpoint_url})" if endpoint_url else "")
        try:
            self._ensure_table(create_table)
        except BaseException:
            self._client.close()
            raise

    # ---- setup -------------------------------------------------------------------------------------

    def _ensure_table(self, create: bool) -> None:
        try:
            desc = self._setup_call(self._client.describe_table, TableName=self.table)["Table"]
        except ClientError as e:
            if _code(e) != "ResourceNotFoundException":
                raise self._setup_error(e) from None
            if not create:
                raise DynamoDbStoreError(
                    f"the {self.where} does not exist (checkpoints.table). Set `create_table: true` under "
                    f"checkpoints to create it on first use (on-demand billing), or create it once: aws dynamodb "
                    f"create-table --table-name {self.table} --attribute-definitions AttributeName=pk,"
                    f"AttributeType=S AttributeName=sk,AttributeType=S --key-schema AttributeName=pk,KeyType=HASH "
                    f"AttributeName=sk,KeyType=RANGE --billing-mode PAY_PER_REQUEST --region {self.region}"
                ) from None
            try:
                self._setup_call(
                    self._client.create_table, TableName=self.table, BillingMode="PAY_PER_REQUEST",
                    AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                          {"AttributeName": "sk", "AttributeType": "S"}],
                    KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
            except ClientError as e:
                if _code(e) != "ResourceInUseException":  # another process created it first: fine
                    raise self._setup_error(e) from None
            desc = {"TableStatus": "CREATING"}
        if desc.get("TableStatus") != "ACTIVE":
            try:
                self._client.get_waiter("table_exists").wait(TableName=self.table,
                                                             WaiterConfig={"Delay": 1, "MaxAttempts": 120})
            except WaiterError as e:
                raise DynamoDbStoreError(f"the {self.where} did not become ACTIVE within 2 minutes: {e}") from None
            desc = self._setup_call(self._client.describe_table, TableName=self.table)["Table"]
        keys = {k["AttributeName"]: k["KeyType"] for k in desc.get("KeySchema", [])}
        types = {a["AttributeName"]: a["AttributeType"] for a in desc.get("AttributeDefinitions", [])}
        if keys != {"pk": "HASH", "sk": "RANGE"} or types.get("pk") != "S" or types.get("sk") != "S":
            raise DynamoDbStoreError(
                f"the {self.where} (checkpoints.table) has key schema {keys} {types}, not the checkpoint store's "
                f"(pk: string partition key, sk: string sort key); name a table of its own for the checkpoints")

    def _setup_call(self, fn: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        try:
            return self._retrying(fn, **kwargs)
        except NoCredentialsError:
            raise DynamoDbStoreError(
                f"no AWS credentials for the {self.where}: boto3 looks in the environment (AWS_ACCESS_KEY_ID and "
                f"AWS_SECRET_ACCESS_KEY, or AWS_PROFILE), the shared files ~/.aws/credentials and ~/.aws/config, "
                f"then a container or instance role; provide one of those (the config file never holds credentials)"
            ) from None

    def _setup_error(self, e: ClientError) -> DynamoDbStoreError:
        msg = e.response.get("Error", {}).get("Message", "")
        return DynamoDbStoreError(f"cannot use the {self.where} (checkpoints.table): {_code(e)}: {msg}. The "
                                  f"credentials need dynamodb:DescribeTable, GetItem, Query, PutItem, UpdateItem "
                                  f"(and CreateTable with create_table: true) on it")

    # ---- calls ---------------------------------------------------------------------------------------

    def _retrying(self, fn: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
        try:
            for attempt in stamina.retry_context(on=_retryable, attempts=RETRY_ATTEMPTS, timeout=RETRY_TIMEOUT,
                                                 wait_initial=0.05, wait_max=2.0):
                with attempt:
                    return fn(**kwargs)
        except _UNREACHABLE as e:
            raise DynamoDbUnavailable(
                f"the {self.where} did not answer ({type(e).__name__}: {e}); check the network, "
                f"checkpoints.endpoint_url and checkpoints.region") from None
        raise AssertionError("unreachable: stamina re-raises the last error")

    def _call(self, op: str, *, token: bool = False, **kwargs: Any) -> dict[str, Any]:
        """One request (retried while throttled or in conflict); the table gone is this run's store lost.

        ``token``: a new ``ClientRequestToken`` for each of our retries. botocore's own retries resend
        the same one, so a transaction whose response was lost is applied once; ours follow only a
        definite refusal (a conflict, a cancelled transaction), after which a new token cannot apply
        anything twice.
        """
        fn = getattr(self._client, op)
        if token:
            def fn(**kw: Any) -> dict[str, Any]:
                return getattr(self._client, op)(ClientRequestToken=str(uuid.uuid4()), **kw)
        try:
            return self._retrying(fn, **kwargs)
        except ClientError as e:
            if _code(e) == "ResourceNotFoundException":
                raise CheckpointStoreLost(self.where, f"{op}: the table is gone") from None
            raise
        except NoCredentialsError:
            raise DynamoDbStoreError(f"the AWS credentials for the {self.where} are no longer available "
                                     f"(boto3's chain: environment, shared profile, container or instance role)"
                                     ) from None

    def close(self) -> None:
        self._client.close()

    # ---- rows ----------------------------------------------------------------------------------------

    @staticmethod
    def _wkey(source: str, stage: str, window_start: str) -> dict[str, Any]:
        return {"pk": {"S": f"w#{source}#{stage}"}, "sk": {"S": window_start}}

    @staticmethod
    def _ikey(source: str, window_start: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": f"ids#{source}#{window_start}"}, "sk": {"S": sk}}

    @staticmethod
    def _checkpoint(item: dict[str, Any]) -> Checkpoint:
        values: dict[str, Any] = {"source": item["source"]["S"], "stage": item["stage"]["S"],
                                  "window_start": item["sk"]["S"], "window_end": item["window_end"]["S"],
                                  "status": item["status"]["S"],
                                  "stats": json_codec.loads(item["stats"]["S"].encode())}
        values.update({f: _int(item[f]["N"]) for f in _INTS})
        values.update({f: float(item[f]["N"]) for f in _FLOATS})
        values.update({f: item[f]["S"] if f in item else None for f in _OPTIONAL})
        return Checkpoint(**values)

    def get(self, source: str, stage: Stage, window_start: str) -> Checkpoint | None:
        item = self._call("get_item", TableName=self.table, Key=self._wkey(source, stage, window_start),
                          ConsistentRead=True).get("Item")
        return self._checkpoint(item) if item else None

    def list(self, source: str, stage: Stage) -> list[Checkpoint]:
        rows: list[Checkpoint] = []
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True,
                                  "KeyConditionExpression": "pk = :pk",
                                  "ExpressionAttributeValues": {":pk": {"S": f"w#{source}#{stage}"}}}
        while True:
            page = self._call("query", **kwargs)
            rows += [self._checkpoint(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return rows
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def acquire(self, source: str, stage: Stage, window_start: str, window_end: str, *,
                owner: str, ttl: float, now: float) -> Checkpoint:
        free = "(attribute_not_exists(#lease_owner) OR #lease_owner = :owner OR #lease_expires <= :now)"
        sets = ["#source = :source", "#stage = :stage", "#window_end = if_not_exists(#window_end, :end)",
                "#stats = if_not_exists(#stats, :stats)", "#lease_owner = :owner", "#lease_expires = :expires",
                "#heartbeat = :now",
                *(f"#{f} = if_not_exists(#{f}, :zero)" for f in _INTS if f not in ("attempts", "epoch")),
                "#attempts = if_not_exists(#attempts, :zero) + :one", "#epoch = if_not_exists(#epoch, :zero) + :one"]
        values = {":source": {"S": source}, ":stage": {"S": stage}, ":end": {"S": window_end},
                  ":stats": {"S": _stats_text({})}, ":owner": {"S": owner}, ":expires": _float(now + ttl),
                  ":now": _float(now), ":zero": _num(0), ":one": _num(1), ":complete": {"S": "complete"}}
        names = {f"#{f}": f for f in ("source", "stage", "window_end", "stats", "status", *_INTS, *_FLOATS,
                                      "lease_owner")}
        # Status follows the row as it is at write time: a complete window stays complete (a re-read), any
        # other becomes running. One update for each case, each conditional on the lease being free.
        tries = (
            ([*sets, "#status = :running"], f"{free} AND (attribute_not_exists(#status) OR #status <> :complete)",
             {":running": {"S": "running"}}),
            (sets, f"{free} AND #status = :complete", {}),
        )
        for _ in range(20):
            for update, condition, extra in tries:
                try:
                    item = self._call("update_item", TableName=self.table, Key=self._wkey(source, stage, window_start),
                                      UpdateExpression="SET " + ", ".join(update), ConditionExpression=condition,
                                      ExpressionAttributeNames=_used(names, update, condition),
                                      ExpressionAttributeValues=_used({**values, **extra}, update, condition),
                                      ReturnValues="ALL_NEW")["Attributes"]
                    return self._checkpoint(item)
                except ClientError as e:
                    if _code(e) != "ConditionalCheckFailedException":
                        raise
            held = self.get(source, stage, window_start)
            if held is not None and held.lease_owner not in (None, owner) and held.lease_expires > now:
                raise LeaseHeld(source, stage, window_start, held.lease_owner, held.lease_expires)
            # Neither update's condition held, yet the lease is free now: the row changed between them.
            time.sleep(random.uniform(0, 0.02))
        raise RuntimeError(f"acquire of {stage} of window {window_start} of source {source!r} in the {self.where} "
                           f"kept conflicting with concurrent writes; retry the run")

    def commit(self, cp: Checkpoint, *, ttl: float, now: float,
               landed_ids: Collection[tuple[int, bytes]] = ()) -> Checkpoint:
        new = dataclasses.replace(cp, lease_expires=now + ttl, heartbeat=now)
        self._write(new, owner=cp.lease_owner, ids=landed_ids)
        return new

    def release(self, cp: Checkpoint, *, now: float) -> Checkpoint:
        new = dataclasses.replace(cp, lease_owner=None, lease_expires=0.0, heartbeat=now)
        self._write(new, owner=cp.lease_owner)
        return new

    def _lost(self, cp: Checkpoint) -> LeaseLost:
        if self.get(cp.source, cp.stage, cp.window_start) is None:  # acquired, then gone: a new table
            return CheckpointStoreLost(self.where, f"the row of {cp.stage} of window {cp.window_start} of source "
                                                   f"{cp.source!r} is gone")
        return LeaseLost(f"{cp.stage} of window {cp.window_start} of source {cp.source!r} was taken over by another "
                         f"run (this run's lease epoch {cp.epoch} is no longer current); stopping without writing")

    def _write(self, cp: Checkpoint, *, owner: str | None, ids: Collection[tuple[int, bytes]] = ()) -> None:
        if owner is None:  # a released copy holds no lease (sqlite: NULL matches no owner)
            raise self._lost(cp)
        sets, removes = [], []
        names = {"#epoch": "epoch", "#lease_owner": "lease_owner"}
        values: dict[str, Any] = {":c_epoch": _num(cp.epoch), ":c_owner": {"S": owner}}
        for f in [*_MUTABLE, "lease_owner"]:
            v = getattr(cp, f)
            names[f"#{f}"] = f
            if v is None:
                removes.append(f"#{f}")
                continue
            sets.append(f"#{f} = :{f}")
            values[f":{f}"] = (_float(v) if f in _FLOATS else _num(v) if f in _INTS else
                               {"S": _stats_text(v)} if f == "stats" else {"S": v})
        row = {"TableName": self.table, "Key": self._wkey(cp.source, cp.stage, cp.window_start),
               "UpdateExpression": "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else ""),
               "ConditionExpression": "#epoch = :c_epoch AND #lease_owner = :c_owner",
               "ExpressionAttributeNames": names, "ExpressionAttributeValues": values}
        items = self._id_items(cp, ids)
        if not items:
            try:
                self._call("update_item", **row)
            except ClientError as e:
                if _code(e) == "ConditionalCheckFailedException":
                    raise self._lost(cp) from None
                raise
            return
        try:
            self._call("transact_write_items", token=True, TransactItems=[{"Update": row}, *items])
        except ClientError as e:
            if _code(e) == "TransactionCanceledException" and _reasons(e)[:1] == ["ConditionalCheckFailed"]:
                raise self._lost(cp) from None
            raise

    def forget_ids(self, cp: Checkpoint, *, now: float) -> None:
        # Not one transaction: a window's id items are too many for one. The row's condition is checked
        # first (an unchanged write of cp); the caller (``logpull recover``) marks the window before and
        # runs again after a crash half-way, and holds its lease throughout.
        self._write(cp, owner=cp.lease_owner)
        pk = f"ids#{cp.source}#{cp.window_start}"
        kwargs: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True, "ProjectionExpression": "sk",
                                  "KeyConditionExpression": "pk = :pk", "ExpressionAttributeValues": {":pk": {"S": pk}}}
        keys: list[str] = []
        while True:
            page = self._call("query", **kwargs)
            keys += [item["sk"]["S"] for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        for sk in sorted(keys, key=lambda k: k == _META):  # the summary last: it tells readers which items to read
            self._call("delete_item", TableName=self.table, Key=self._ikey(cp.source, cp.window_start, sk))

    # ---- ids -----------------------------------------------------------------------------------------

    def _id_items(self, cp: Checkpoint, ids: Collection[tuple[int, bytes]]) -> list[dict[str, Any]]:
        """The transaction items recording ``ids`` not yet recorded (a page read twice records them once)."""
        pairs = sorted(set(ids))
        if not pairs:
            return []
        recorded = set(self._recorded(cp.source, cp.window_start, pairs[0][0], pairs[-1][0]))
        pairs = [p for p in pairs if p not in recorded]
        if not pairs:
            return []
        parts = [pairs[n:n + _PAIRS_PER_ITEM] for n in range(0, len(pairs), _PAIRS_PER_ITEM)]
        if len(parts) > _MAX_ID_ITEMS:
            raise ValueError(f"a page of {len(pairs)} events is more than one DynamoDB transaction can record "
                             f"({_MAX_ID_ITEMS * _PAIRS_PER_ITEM}); ask the source for smaller pages")
        page = uuid.uuid4().hex
        items: list[dict[str, Any]] = []
        levels = set()
        for n, part in enumerate(parts):
            t_min, t_max = part[0][0], part[-1][0]
            levels.add((t_max - t_min).bit_length())
            items.append({"Put": {"TableName": self.table, "Item": {
                **self._ikey(cp.source, cp.window_start, f"{_pad(t_min)}#{page}#{n:02d}"),
                "t_max": _num(t_max), "n": _num(len(part)),
                "pairs": {"B": b"".join(_PAIR.pack(t, d) for t, d in part)}}}})
        items.append({"Update": {
            "TableName": self.table, "Key": self._ikey(cp.source, cp.window_start, _META),
            "UpdateExpression": "ADD id_total :n, span_levels :levels",
            "ExpressionAttributeValues": {":n": _num(len(pairs)), ":levels": {"NS": [str(v) for v in levels]}}}})
        return items

    def _recorded(self, source: str, window_start: str, a: int, b: int) -> Iterator[tuple[int, bytes]]:
        """The recorded ``(time_us, digest)`` pairs with a time in ``[a, b]``, reading only the id items
        whose span can overlap it: those starting no earlier than ``a`` minus the window's largest span."""
        meta = self._call("get_item", TableName=self.table, Key=self._ikey(source, window_start, _META),
                          ConsistentRead=True, ProjectionExpression="span_levels").get("Item")
        if not meta:
            return
        widest = (1 << max(int(v) for v in meta["span_levels"]["NS"])) - 1
        kwargs: dict[str, Any] = {
            "TableName": self.table, "ConsistentRead": True,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi", "FilterExpression": "t_max >= :a",
            "ProjectionExpression": "pairs",
            "ExpressionAttributeValues": {":pk": {"S": f"ids#{source}#{window_start}"}, ":lo": {"S": _pad(a - widest)},
                                          ":hi": {"S": _pad(b) + "~"}, ":a": _num(a)}}
        while True:
            page = self._call("query", **kwargs)
            for item in page.get("Items", []):
                for t, d in _PAIR.iter_unpack(item["pairs"]["B"]):
                    if a <= t <= b:
                        yield t, d
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def known_ids(self, source: str, window_start: str, events: Collection[tuple[int, bytes]]) -> set[bytes]:
        if not events:
            return set()
        wanted = {d for _, d in events}
        times = [t for t, _ in events]
        return {d for _, d in self._recorded(source, window_start, min(times), max(times)) if d in wanted}

    def count_ids(self, source: str, window_start: str) -> int:
        meta = self._call("get_item", TableName=self.table, Key=self._ikey(source, window_start, _META),
                          ConsistentRead=True, ProjectionExpression="id_total").get("Item")
        return _int(meta["id_total"]["N"]) if meta else 0

    # ---- the shared rate budget ------------------------------------------------------------------------

    def reserve(self, account: str, *, interval: float, now: float) -> float:
        key = {"pk": {"S": f"rate#{account}"}, "sk": {"S": "rate"}}
        for attempt in range(200):
            item = self._call("get_item", TableName=self.table, Key=key, ConsistentRead=True).get("Item")
            if item:
                raw = item["last_slot"]["N"]
                slot = max(float(raw) + interval, now)  # this caller's interval: accounts differ, and may change
                cond: dict[str, Any] = {"ConditionExpression": "last_slot = :old",
                                        "ExpressionAttributeValues": {":old": {"N": raw}}}
            else:
                slot, cond = float(now), {"ConditionExpression": "attribute_not_exists(pk)"}
            try:
                self._call("put_item", TableName=self.table, Item={**key, "last_slot": _float(slot)}, **cond)
                return slot
            except ClientError as e:
                if _code(e) != "ConditionalCheckFailedException":
                    raise
            # Another process took the slot first: read again, after a short random pause so that
            # many contenders do not collide in lockstep.
            time.sleep(random.uniform(0, 0.002 * min(attempt + 1, 10)))
        raise RuntimeError(f"the rate budget of {account!r} in the {self.where} kept changing under 200 "
                           f"reservations in a row; too many processes share it")


def _stats_text(stats: dict[str, Any]) -> str:
    """As sqlite.py: json_codec keeps lone surrogates and big integers exactly."""
    return json_codec.dumps(stats).decode()


class DynamoDbCheckpointsConfig(StoreBase):
    """``checkpoints: {type: dynamodb, table: ..., region: ..., endpoint_url: ..., create_table: ...}``: one
    DynamoDB table shared by every worker anywhere. Credentials come from boto3's chain, never the config."""

    type: Literal["dynamodb"]
    table: str
    region: str | None = None
    endpoint_url: str | None = None
    create_table: bool = False

    def problems(self, resolve: Callable[[str], Path]) -> list[tuple[str, str]]:
        found = []
        if not _TABLE_NAME.match(self.table):
            found.append(("table", f"{self.table!r} is not a DynamoDB table name (3 to 255 of A-Z a-z 0-9 _ . -)"))
        if self.endpoint_url is not None and not re.match(r"^https?://[^/\s]+", self.endpoint_url):
            found.append(("endpoint_url", f"{self.endpoint_url!r} is not an http(s) URL "
                                          f"(e.g. http://127.0.0.1:5000; leave it out for AWS itself)"))
        return found

    def where(self, resolve: Callable[[str], Path]) -> str:
        region = self.region or "the AWS default region"
        return f"dynamodb table {self.table} in region {region}" + (f" ({self.endpoint_url})" if self.endpoint_url
                                                                     else "")


def _open(cfg: DynamoDbCheckpointsConfig, base_dir: Path) -> DynamoDbCheckpointStore:
    return DynamoDbCheckpointStore(cfg.table, region=cfg.region, endpoint_url=cfg.endpoint_url,
                                   create_table=cfg.create_table)


PLUGINS = [Plugin("checkpoints", "dynamodb", DynamoDbCheckpointsConfig, _open)]
