"""S3 archive sink: one gzip JSON Lines object per batch, under a name that only that batch has.

Capabilities: ``names`` and ``read_back`` (``sinks/__init__.py``).

Guarantee: exactly-once into the bucket while the checkpoint store is intact; after it is lost or
replaced, still exactly-once while the window's objects are in the bucket (reconciled by listing and
reading them); a reader that deletes what it ingested (Google SecOps' ``source_deletion_option``, a
lifecycle rule shorter than the lookback) turns that into at-least-once for the windows it deleted.

Layout, under ``<prefix>/<stream>/<yyyy>/<mm>/<dd>/<HH>/`` (the window's start, UTC; the usual
partitioned path, so a reader's ``include_prefixes`` or a lifecycle rule can select by date):

* ``<stream>-<window slug>-b<batch>.jsonl.gz``: a batch, the envelope records one per line, gzip
  (mtime 0, no file name), written by one single-part PutObject, which readers see whole or not at
  all. The object's metadata ``logpull-sha256`` is the SHA-256 of the uncompressed lines.
* ``<stream>-<window slug>-b<batch>-<content hash>.jsonl.gz``: a batch written while reconciling
  (below); the hash keeps it from colliding with any batch of an earlier delivery.

Never PUT twice. Every PUT, even of identical bytes, is an ``s3:ObjectCreated:Put`` notification, and
readers driven by them (Splunk's SQS-based S3 input, Sentinel, SecOps SQS feeds) ingest a rewritten
object again. So a batch is written only if its name is free: a HEAD first, and a name that holds the
same content (by its ``logpull-sha256``; an object without it, by its ETag or else its content) is
the batch, found whole, and is not written again; a name holding other content is a ``conflict``,
never overwritten. The PUT itself is conditional (``If-None-Match: *``, S3 since August 2024, and
moto), so two writers racing between the HEAD and the PUT cannot replace each other's object: the
second gets 412 and compares as above.

Reconciling (``read_back``): ``holds`` lists one key under the window's name prefix;
``delivered_ids`` lists the window's objects and reads the event ids from each, decompressing as it
reads (memory: one line). No delivered-ids record is kept beside the objects (as the file sink keeps
one beside files a forwarder deletes): a second object per batch would double the PUTs, and a reader
ingesting the prefix would read it as events. A bucket keeps what it is given unless told otherwise.

Where duplicates can come from, exactly: (1) after a lost checkpoint store, events whose objects a
reader or a lifecycle rule has deleted are written again; (2) an S3-compatible store that ignores
``If-None-Match`` lets two writers racing on one name (two runs both holding the window, which the
lease excludes) both write it. Nothing else writes a name twice: a zlib upgrade changes the gzip
bytes but not the hash compared, so it never causes a rewrite.

Requests are bounded and errors name the bucket, the key and the fix (``s3_bucket.py``, shared with
the S3 landing store); credentials come from boto3's chain, never from the config. IAM actions:
``s3:PutObject``, ``s3:GetObject`` (HEAD too), ``s3:ListBucket`` on the prefix, and ``s3:DeleteObject``
only to remove an object S3 stored damaged (its ETag is not the MD5 sent).
"""

from __future__ import annotations

import gzip
import hashlib
import re
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from botocore.exceptions import ClientError

from logpull_dagster.config import SinkBase
from logpull_dagster.json_codec import JSONError, loads
from logpull_dagster.plugins import Plugin
from logpull_dagster.pull import id_digest
from logpull_dagster.s3_bucket import S3Bucket, config_problems, error_code, plain_etag
from logpull_dagster.sinks import Capability, Fence, Written
from logpull_dagster.windows import UTC, Window

META_SHA = "logpull-sha256"  # x-amz-meta-logpull-sha256: SHA-256 of the object's uncompressed lines
META_EVENTS = "logpull-events"  # x-amz-meta-logpull-events: how many events the object holds, for operators
# A batch is one landed page (<= 1,000 events, each bounded by the source's max_page_bytes, <= 1 GiB) plus
# its envelopes: anything larger under our names is not ours, compressed or not.
MAX_OBJECT_BYTES = 2 * 2**30
_INFLATE_STEP = 8 * 2**20  # bytes decompressed at a time, so a small object cannot inflate at once
_OURS = re.compile(r"-b\d{6,}(-[0-9a-f]{16})?\.jsonl\.gz$")


class S3SinkError(RuntimeError):
    """The bucket cannot be used as configured; the message names the bucket, the key and the fix."""


class S3SinkUnreachable(S3SinkError, ConnectionError):
    """S3 did not answer within the retries and timeouts: an outage (the delivery is retried from its
    checkpoint) or a wrong ``endpoint_url`` / ``region``."""


class _Gone(Exception):
    """An object listed a moment ago is no longer there (a reader deleted it)."""


class NotABatch(OSError):
    """An object under a batch's name that is not gzip JSON Lines this sink could have written."""


class S3Sink:
    """Exactly once into a bucket, each batch one object PUT once (never rewritten: notification-driven
    readers would ingest it twice); after a lost checkpoint store, exactly once while the window's
    objects are there (the module docstring)."""

    capabilities: frozenset[Capability] = frozenset({"names", "read_back"})

    def __init__(self, bucket: str, *, prefix: str = "", region: str | None = None,
                 endpoint_url: str | None = None) -> None:
        self._s3 = S3Bucket(bucket, prefix=prefix, region=region, endpoint_url=endpoint_url, role="s3 sink",
                            keys="the s3 sink's ",
                            actions="s3:PutObject, s3:GetObject and s3:ListBucket (and s3:DeleteObject)",
                            error=S3SinkError, unreachable=S3SinkUnreachable,
                            retried="the delivery is retried from its checkpoint")
        self.bucket = bucket

    # ---- names

    def _folder(self, source: str, window: Window) -> str:
        return f"{self._s3.base}{source}/{window.start.astimezone(UTC):%Y/%m/%d/%H}/"

    def _window_prefix(self, source: str, window: Window) -> str:
        """The start of every object name of ``window``'s batches (and of no other window's)."""
        return f"{self._folder(source, window)}{source}-{window.slug}-b"

    def key_for(self, source: str, window: Window, batch: int, tag: str = "") -> str:
        return f"{self._window_prefix(source, window)}{batch:06d}{f'-{tag}' if tag else ''}.jsonl.gz"

    # ---- the Sink protocol

    def write_batch(self, source: str, window: Window, batch: int, lines: list[bytes], ids: list[str], *,
                    delivered: set[bytes] | None = None, fence: Fence | None = None) -> Written:
        if delivered is not None:
            return self._reconciling(source, window, batch, lines, ids, delivered, fence)
        key = self.key_for(source, window, batch)
        if not self._put_once(key, _content(lines), len(lines), fence):
            return Written(None, conflict=True)
        return Written(self._s3.url(key), len(lines))

    def _reconciling(self, source: str, window: Window, batch: int, lines: list[bytes], ids: list[str],
                     delivered: set[bytes], fence: Fence | None) -> Written:
        keep = [k for k, i in enumerate(ids) if id_digest(i) not in delivered]
        if not keep:
            return Written(None, 0, len(lines))
        data = _content([lines[k] for k in keep])
        key = self.key_for(source, window, batch, hashlib.blake2b(data, digest_size=8).hexdigest())
        if not self._put_once(key, data, len(keep), fence):  # 64 bits of content hash collided: never seen
            raise RuntimeError(f"{self._s3.url(key)} exists with other content than the batch named after it")
        return Written(self._s3.url(key), len(keep), len(lines) - len(keep))

    def _put_once(self, key: str, data: bytes, events: int, fence: Fence | None) -> bool:
        """Make ``key`` hold ``data``, PUT only if the name is free: True when it does (written now, or
        found there), False when the name holds other content (left as it is)."""
        found = self._s3.head(key)
        if found is not None:
            return self._holds_content(key, found, data)
        body = _gzip(data)  # before the fence: nothing visible yet
        if fence is not None:
            fence()  # the PUT is what a reader (and its notification) sees
        try:
            self._s3.put(key, body, IfNoneMatch="*", ContentType="application/gzip",
                         Metadata={META_SHA: hashlib.sha256(data).hexdigest(), META_EVENTS: str(events)})
        except ClientError as e:
            code = error_code(e)
            if code == "NotImplemented":
                raise S3SinkError(
                    f"s3 sink (s3://{self.bucket}): the endpoint {self._s3.endpoint_url or 'AWS'} does not take "
                    f"conditional writes (If-None-Match: *), which keep two writers from replacing each other's "
                    f"batch; use a store that does (AWS S3 does since August 2024) ({code}: {e})") from e
            if code not in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise
            # Another writer took the name between the HEAD and the PUT, or botocore retried a PUT whose
            # first attempt was stored but whose answer was lost: compare with what is there now.
            found = self._s3.head(key)
            if found is None:
                raise OSError(f"{self._s3.url(key)}: a concurrent write of this name did not complete ({code}); "
                              f"the delivery is retried from its checkpoint") from e
            return self._holds_content(key, found, data)
        return True

    def holds(self, source: str, window: Window) -> bool:
        # One listing of at most one key: every object of the window starts with its name prefix.
        return next(iter(self._s3.list(self._window_prefix(source, window), max_keys=1)), None) is not None

    def delivered_ids(self, source: str, window: Window) -> set[bytes]:
        found: set[bytes] = set()
        for key in self._s3.list(self._window_prefix(source, window)):
            if not _OURS.search(key):
                continue
            try:
                for n, line in enumerate(self._lines(key), 1):
                    try:
                        found.add(id_digest(loads(line)["event_id"]))
                    except (JSONError, KeyError, TypeError) as e:
                        raise ValueError(f"{self._s3.url(key)}, line {n}: not a SIEM record this sink wrote "
                                         f"({type(e).__name__}: {e}); cannot tell what the window holds") from None
            except _Gone:  # deleted by a reader since the listing: its ids are unknown (the docstring)
                continue
        return found

    def _lines(self, key: str) -> Iterator[bytes]:
        """The non-empty lines of a gzip object, decompressed as they are read: memory is one line and one
        chunk, whatever the object's size."""
        tail = b""
        for out in self._inflated(key):
            *whole, tail = (tail + out).split(b"\n")
            yield from (line for line in whole if line)
        if tail:
            yield tail

    def _inflated(self, key: str) -> Iterator[bytes]:
        """A gzip object's content in chunks of at most _INFLATE_STEP bytes, at most MAX_OBJECT_BYTES of
        either form; _Gone if there is no such key."""
        inflate = zlib.decompressobj(wbits=31)
        size = 0
        try:
            for raw in self._s3.stream(key, limit=MAX_OBJECT_BYTES, missing=_Gone):
                while raw:
                    out = inflate.decompress(raw, _INFLATE_STEP)
                    raw = inflate.unconsumed_tail
                    if inflate.eof and inflate.unused_data:  # a next gzip member (concatenated gzip is valid)
                        raw, inflate = inflate.unused_data + raw, zlib.decompressobj(wbits=31)
                    size += len(out)
                    if size > MAX_OBJECT_BYTES:
                        raise NotABatch(f"{self._s3.url(key)} inflates to more than {MAX_OBJECT_BYTES} bytes; "
                                      f"it is not one of this sink's batches")
                    yield out
        except zlib.error as e:
            raise NotABatch(f"{self._s3.url(key)} is not gzip ({e}): not one of this sink's batches") from None
        if not inflate.eof:
            raise NotABatch(f"{self._s3.url(key)} ends before its gzip stream does: not a batch this sink wrote whole")

    def _holds_content(self, key: str, head: dict[str, Any], data: bytes) -> bool:
        """Whether the object HEAD describes holds ``data``: by the hash this sink stores with every object;
        for an object from elsewhere (no hash: copied by a tool that drops user metadata, written by an
        older version) by its ETag where it is the body's MD5, else by reading it (rare: bounded by the
        batch's own size)."""
        meta = head.get("Metadata") or {}
        if META_SHA in meta:
            return bool(meta[META_SHA] == hashlib.sha256(data).hexdigest())
        etag = str(head.get("ETag", "")).strip('"')
        if plain_etag(head) and etag == hashlib.md5(_gzip(data), usedforsecurity=False).hexdigest():
            return True
        at = 0
        try:
            for out in self._inflated(key):
                if data[at:at + len(out)] != out:
                    return False
                at += len(out)
        except _Gone:  # deleted since the HEAD: the name is free, but another writer is at work; retried
            raise OSError(f"{self._s3.url(key)} was deleted while this batch was compared with it; "
                          f"the delivery is retried from its checkpoint") from None
        except NotABatch:  # not gzip, cut off: not this batch
            return False
        return at == len(data)

    def location(self, source: str) -> str:
        """Where ``source``'s batch objects are (their date folders below)."""
        return self._s3.url(f"{self._s3.base}{source}/")

    def close(self) -> None:
        self._s3.close()


def _gzip(data: bytes) -> bytes:
    """Deterministic gzip: mtime 0 and no file name, so the same lines make the same bytes (and ETag)."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def _content(lines: list[bytes]) -> bytes:
    data = b"\n".join(lines)
    return data + b"\n" if data else b""


class S3SinkConfig(SinkBase):
    """``{type: s3, bucket: my-audit-archive, prefix: logpull, region: eu-west-1}`` (an entry of ``sinks:``):
    one gzip JSON Lines object per batch under ``s3://bucket/prefix/<stream>/<yyyy>/<mm>/<dd>/<HH>/``.
    ``endpoint_url``: an S3-compatible endpoint (MinIO, a VPC endpoint, moto), else AWS's. Credentials
    come from boto3's chain in the run's environment, never from here."""

    type: Literal["s3"]
    bucket: str
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None

    kinds: ClassVar[tuple[str, ...]] = ("s3",)

    def problems(self, resolve: Callable[[str], Path]) -> list[tuple[str, str]]:
        return config_problems(self.bucket, self.prefix, self.region, self.endpoint_url,
                               prefix_key="prefix", example_prefix="archive")

    def where(self, resolve: Callable[[str], Path]) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def _open(cfg: S3SinkConfig, base_dir: Path) -> S3Sink:
    return S3Sink(cfg.bucket, prefix=cfg.prefix, region=cfg.region, endpoint_url=cfg.endpoint_url)


PLUGINS = [Plugin("siem", "s3", S3SinkConfig, _open)]

__all__ = ["PLUGINS", "S3Sink", "S3SinkConfig", "S3SinkError", "S3SinkUnreachable"]
