"""S3 landing store (dagster-aws's ``S3Resource``): pages and reads as objects under deterministic keys.

Key layout, beside local.py's file names::

    <prefix>/<source>/<window slug>/page-<seq>.e<epoch>.jsonl    a landed page (JSON Lines)
    <prefix>/<source>/<window slug>/read-<n>.e<epoch>.json       a journaled read (the API's body)

What it guarantees (the contract of ``landing/__init__.py``), and why S3 provides it:

* ``put_page`` / ``put_read`` are atomic and durable: one single-part PutObject, which S3 stores
  whole or not at all, and acknowledges only once the object is stored redundantly. There is no
  temporary object, so nothing is left behind by a writer killed mid-upload (S3 discards a PUT
  whose body never arrived in full).
* The same (window, seq, epoch) replaces the earlier copy: the key is the same, and a PUT over a key
  makes readers see the old object or the new one, never a mix.
* Every reader (delivery, another run, after a restart) sees what was written: S3 has been strongly
  read-after-write consistent for PUT, GET, LIST and DELETE since December 2020, so a page listed
  by ``pages`` is the newest copy of its key, and a page deleted by ``discard`` is no longer listed.
* Integrity: each PUT carries Content-MD5 and a CRC32 checksum (``ChecksumAlgorithm``), so S3 refuses
  a body damaged on the way (``BadDigest``); the returned ETag is compared with the MD5 as well,
  where it is one (no SSE-KMS, no SSE-C): a mismatch deletes the object and fails the write. Reads
  ask for the stored checksum (``ChecksumMode``), and botocore refuses a body that does not match it.
  moto's server checks neither header; the ETag comparison and the read check still catch a damaged
  body there (``test_s3_landing.py``).

Fencing, ordering and discarding are name-based, as in local.py: readers take the highest-epoch
copy of each page (``current_copies``), and ``discard`` deletes pages at or above the checkpoint,
superseded copies and stray reads (DeleteObjects, 1,000 keys a request).

Every request is bounded, and errors name the config key and the fix, as for the S3 sink: the client,
its timeouts and retries and the key checks are shared (``s3_bucket.py``). Credentials come only from
boto3's own chain, never from the config.
IAM actions needed on the bucket: ``s3:PutObject``, ``s3:GetObject``, ``s3:ListBucket`` (on the
prefix), ``s3:DeleteObject``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from logpull_dagster.config import StoreBase
from logpull_dagster.landing import LandedPage, LandingMissing, current_copies
from logpull_dagster.plugins import Plugin
from logpull_dagster.s3_bucket import S3Bucket, config_problems
from logpull_dagster.windows import Window

_PAGE = re.compile(r"/page-(\d{6,})\.e(\d{6,})\.jsonl$")
_READ = re.compile(r"/read-(\d{8,})\.e(\d{6,})\.json$")

# The largest object read back into memory: a page is bounded by the source's max_page_bytes
# (at most 1 GiB) plus its envelope; anything larger is not ours.
MAX_OBJECT_BYTES = 2 * 2**30


class S3LandingError(RuntimeError):
    """The bucket cannot be used as configured; the message names the config key and the fix."""


class S3Unreachable(S3LandingError, ConnectionError):
    """S3 did not answer within the retries and timeouts: an outage (the attempt is retried) or a wrong
    ``landing.endpoint_url`` / ``landing.region``."""


class S3LandingStore:
    def __init__(self, bucket: str, *, prefix: str = "", region: str | None = None,
                 endpoint_url: str | None = None) -> None:
        self._s3 = S3Bucket(bucket, prefix=prefix, region=region, endpoint_url=endpoint_url, role="landing",
                            keys="landing.", actions="s3:PutObject, s3:GetObject, s3:DeleteObject and s3:ListBucket",
                            error=S3LandingError, unreachable=S3Unreachable,
                            retried="the attempt is retried from its checkpoint")
        self.bucket, self.prefix = bucket, self._s3.prefix
        self.region, self.endpoint_url = region, endpoint_url
        self._base = self._s3.base
        self._client = self._s3.client

    # ---- names

    def _dir(self, source: str, window: Window) -> str:
        return f"{self._base}{source}/{window.slug}/"

    def _url(self, key: str) -> str:
        return self._s3.url(key)

    def _key(self, location: str) -> str:
        head = f"s3://{self.bucket}/"
        if not location.startswith(head):
            raise ValueError(f"{location!r} is not an object of this landing store (s3://{self.bucket}/...)")
        return location[len(head):]

    # ---- S3 calls (s3_bucket.S3Bucket: errors turned into ones that name the config key)

    def _list(self, prefix: str) -> Iterable[str]:
        return self._s3.list(prefix)

    def _put(self, key: str, data: bytes) -> None:
        self._s3.put(key, data)

    def _get(self, key: str) -> bytes:
        """The object's bytes, checked against the checksum stored with it; LandingMissing if absent."""
        return b"".join(self._s3.stream(key, limit=MAX_OBJECT_BYTES, missing=LandingMissing))

    def _delete(self, keys: list[str]) -> int:
        return self._s3.delete(keys)

    # ---- the LandingStore protocol

    def put_page(self, source: str, window: Window, seq: int, epoch: int, lines: Iterable[bytes]) -> str:
        key = f"{self._dir(source, window)}page-{seq:06d}.e{epoch:06d}.jsonl"
        data = b"\n".join(lines)
        self._put(key, data + b"\n" if data else b"")
        return self._url(key)

    def _all(self, source: str, window: Window) -> list[LandedPage]:
        out = []
        for key in self._list(f"{self._dir(source, window)}page-"):
            m = _PAGE.search(key)
            if m:
                out.append(LandedPage(int(m.group(1)), int(m.group(2)), self._url(key)))
        return out

    def pages(self, source: str, window: Window, below: int) -> list[LandedPage]:
        return current_copies(self._all(source, window), below)

    def read_lines(self, page: LandedPage) -> list[bytes]:
        return [line for line in self._get(self._key(page.location)).split(b"\n") if line]

    def where(self, source: str, window: Window) -> str:
        return self._url(self._dir(source, window))

    def _reads(self, source: str, window: Window) -> dict[int, list[int]]:
        found: dict[int, list[int]] = {}
        for key in self._list(f"{self._dir(source, window)}read-"):
            m = _READ.search(key)
            if m:
                found.setdefault(int(m.group(1)), []).append(int(m.group(2)))
        return found

    def discard(self, source: str, window: Window, from_seq: int, keep_reads: range = range(0)) -> int:
        found = self._all(source, window)
        keep = set(current_copies(found, from_seq))
        doomed = [self._key(p.location) for p in found if p not in keep]
        folder = self._dir(source, window)
        for n, epochs in self._reads(source, window).items():
            for epoch in sorted(epochs)[:-1] if n in keep_reads else epochs:
                doomed.append(folder + _read_name(n, epoch))
        return self._delete(doomed)

    def put_read(self, source: str, window: Window, n: int, epoch: int, body: bytes) -> str:
        key = self._dir(source, window) + _read_name(n, epoch)
        self._put(key, body)
        return self._url(key)

    def get_read(self, source: str, window: Window, n: int) -> tuple[bytes, int]:
        epochs = self._reads(source, window).get(n)
        if not epochs:
            raise LandingMissing(f"journaled read {n} of window {window} of {source!r} is not in "
                                 f"{self._url(self._dir(source, window))}")
        return self._get(self._dir(source, window) + _read_name(n, max(epochs))), max(epochs)

    def drop_read(self, source: str, window: Window, n: int, epoch: int) -> None:
        # DeleteObject of a key that is absent succeeds: dropping twice is harmless.
        self._s3.call("deleting", self._client.delete_object, Bucket=self.bucket,
                      Key=self._dir(source, window) + _read_name(n, epoch))

    def close(self) -> None:
        self._client.close()


def _read_name(n: int, epoch: int) -> str:
    return f"read-{n:08d}.e{epoch:06d}.json"


class S3LandingConfig(StoreBase):
    """``landing: {type: s3, bucket: my-logs, prefix: landing, region: us-east-1}``: pages as objects under
    ``s3://bucket/prefix/<source>/<window>/``. ``endpoint_url``: an S3-compatible endpoint (moto, MinIO,
    a VPC endpoint), else AWS's. Credentials come from boto3's chain in the run's environment."""

    type: Literal["s3"]
    bucket: str
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None

    def problems(self, resolve: Callable[[str], Path]) -> list[tuple[str, str]]:
        return config_problems(self.bucket, self.prefix, self.region, self.endpoint_url,
                               prefix_key="landing.prefix", example_prefix="landing")

    def where(self, resolve: Callable[[str], Path]) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def _open(cfg: S3LandingConfig, base_dir: Path) -> S3LandingStore:
    return S3LandingStore(cfg.bucket, prefix=cfg.prefix, region=cfg.region, endpoint_url=cfg.endpoint_url)


PLUGINS = [Plugin("landing", "s3", S3LandingConfig, _open)]

__all__ = ["PLUGINS", "S3LandingConfig", "S3LandingError", "S3LandingStore", "S3Unreachable"]
