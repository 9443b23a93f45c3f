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

Every request is bounded: connect and read timeouts, and botocore's standard retry mode with
``MAX_ATTEMPTS`` retries (throttling, 5xx, dropped connections). Credentials come only from boto3's
own chain (environment, shared files, SSO, container or instance role), never from the config.
IAM actions needed on the bucket: ``s3:PutObject``, ``s3:GetObject``, ``s3:ListBucket`` (on the
prefix), ``s3:DeleteObject``.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    FlexibleChecksumError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from dagster_aws.s3 import S3Resource
from dagster_aws.utils import construct_boto_client_retry_config

from logpull_dagster.config import StoreBase
from logpull_dagster.landing import LandedPage, LandingMissing, current_copies
from logpull_dagster.plugins import Plugin
from logpull_dagster.windows import Window

_PAGE = re.compile(r"/page-(\d{6,})\.e(\d{6,})\.jsonl$")
_READ = re.compile(r"/read-(\d{8,})\.e(\d{6,})\.json$")

# Retries after the first attempt (botocore "standard" mode: throttling, 5xx, connection errors),
# each waiting a jittered 1 s, 2 s. With the timeouts, a call that makes no progress fails within
# 3 x (CONNECT_TIMEOUT + READ_TIMEOUT) + 3 s, and an unreachable endpoint within seconds.
MAX_ATTEMPTS = 2
CONNECT_TIMEOUT = 3.0
# Per socket read, not per call: a page of 1,000 events is ~1 MB; S3 answers a PUT of that in well
# under a second, so 20 s without a byte means the connection is dead.
READ_TIMEOUT = 20.0
# The largest object read back into memory: a page is bounded by the source's max_page_bytes
# (at most 1 GiB) plus its envelope; anything larger is not ours.
MAX_OBJECT_BYTES = 2 * 2**30
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys


class S3LandingError(RuntimeError):
    """The bucket cannot be used as configured; the message names the config key and the fix."""


class S3Unreachable(S3LandingError, ConnectionError):
    """S3 did not answer within the retries and timeouts: an outage (the attempt is retried) or a wrong
    ``landing.endpoint_url`` / ``landing.region``."""


_UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)


class BoundedS3Resource(S3Resource):
    """dagster-aws's ``S3Resource`` whose client has connect and read timeouts.

    dagster-aws 0.29.27's ``get_client`` configures retries only (``Config(retries=...)``), leaving
    botocore's 60 s connect and 60 s read timeouts per attempt; this builds the same client (the same
    session, retry config and fields) with bounded ones.
    """

    connect_timeout: float = CONNECT_TIMEOUT
    read_timeout: float = READ_TIMEOUT

    def get_client(self) -> Any:
        import boto3

        config = construct_boto_client_retry_config(self.max_attempts).merge(
            Config(connect_timeout=self.connect_timeout, read_timeout=self.read_timeout, tcp_keepalive=True))
        session = boto3.session.Session(profile_name=self.profile_name)
        return session.client("s3", region_name=self.region_name, endpoint_url=self.endpoint_url,
                              use_ssl=self.use_ssl, verify=self.verify, config=config)


class S3LandingStore:
    def __init__(self, bucket: str, *, prefix: str = "", region: str | None = None,
                 endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.region, self.endpoint_url = region, endpoint_url
        self._base = f"{self.prefix}/" if self.prefix else ""
        self._client = BoundedS3Resource(region_name=region, endpoint_url=endpoint_url,
                                         max_attempts=MAX_ATTEMPTS).get_client()

    # ---- names

    def _dir(self, source: str, window: Window) -> str:
        return f"{self._base}{source}/{window.slug}/"

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _key(self, location: str) -> str:
        head = f"s3://{self.bucket}/"
        if not location.startswith(head):
            raise ValueError(f"{location!r} is not an object of this landing store (s3://{self.bucket}/...)")
        return location[len(head):]

    # ---- S3 calls, each with its errors turned into ones that name the config key

    def _call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """``fn(**kwargs)``; errors that a config key explains say so."""
        try:
            return fn(**kwargs)
        except NoCredentialsError:
            raise self._no_credentials(what) from None
        except ClientError as e:
            raise self._explained(what, e) from e
        except _UNREACHABLE as e:
            raise self._unreachable(what, e) from e

    def _unreachable(self, what: str, e: Exception) -> S3Unreachable:
        # Usually an outage, which the pull loop's fault retries ride out; said so, with the keys to
        # check when it lasts.
        return S3Unreachable(
            f"landing (s3://{self.bucket}/{self._base}): {what}: S3 did not answer in {MAX_ATTEMPTS + 1} attempts "
            f"({type(e).__name__}: {e}); the attempt is retried from its checkpoint. If this persists, check "
            f"the network and landing.endpoint_url ({self.endpoint_url or 'AWS'}) and landing.region")

    def _no_credentials(self, what: str) -> S3LandingError:
        return S3LandingError(
            f"landing (s3://{self.bucket}): {what}: boto3 found no AWS credentials in its chain (the "
            f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY variables, AWS_PROFILE and ~/.aws/credentials, SSO, "
            f"a container or instance role); provide them in the run's environment (the config never "
            f"holds credentials)")

    def _explained(self, what: str, e: ClientError) -> Exception:
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        at = f" at {self.endpoint_url}" if self.endpoint_url else ""
        if code == "NoSuchBucket":
            return S3LandingError(
                f"landing.bucket: the bucket {self.bucket!r} does not exist{at} ({what}); create it "
                f"(aws s3 mb s3://{self.bucket}{f' --region {self.region}' if self.region else ''}) or set "
                f"landing.bucket to an existing bucket")
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
            return S3LandingError(
                f"landing.region: the bucket {self.bucket!r} is in another region than "
                f"{self.region or 'the default one'!r} ({what}: {code}); set landing.region to the bucket's region")
        if code in ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "ExpiredToken", "InvalidToken"):
            return S3LandingError(
                f"landing (s3://{self.bucket}/{self._base}): {what} was refused ({code}); the credentials boto3 "
                f"found need s3:PutObject, s3:GetObject, s3:DeleteObject and s3:ListBucket on this bucket and "
                f"prefix, and must be valid")
        return e

    def _list(self, prefix: str) -> Iterator[str]:
        """Every key under ``prefix``, following ListObjectsV2's continuation (1,000 keys a response)."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            out = self._call("listing", self._client.list_objects_v2, **args)
            for obj in out.get("Contents", ()):
                yield obj["Key"]
            if not out.get("IsTruncated"):
                return
            args["ContinuationToken"] = out["NextContinuationToken"]

    def _put(self, key: str, data: bytes) -> None:
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        out = self._call("writing", self._client.put_object, Bucket=self.bucket, Key=key, Body=data,
                         ContentMD5=base64.b64encode(md5).decode(), ChecksumAlgorithm="CRC32")
        # The ETag of a single-part PUT is the body's MD5 unless the object is encrypted with KMS or a
        # customer key: then it is not, and S3's own Content-MD5 check is the one that counts.
        etag = str(out.get("ETag", "")).strip('"')
        if (out.get("ServerSideEncryption") in (None, "AES256") and "SSECustomerAlgorithm" not in out
                and re.fullmatch(r"[0-9a-f]{32}", etag) and etag != md5.hex()):
            self._delete([key])
            raise OSError(f"{self._url(key)}: the object S3 stored is not the body sent (ETag {etag}, MD5 "
                          f"{md5.hex()}); it was deleted, and the write fails so that the attempt is retried")

    def _get(self, key: str) -> bytes:
        """The object's bytes, checked against the checksum stored with it; LandingMissing if absent."""
        try:
            out = self._client.get_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise LandingMissing(f"{self._url(key)} does not exist") from None
            raise self._explained("reading", e) from e
        except NoCredentialsError:
            raise self._no_credentials("reading") from None
        except _UNREACHABLE as e:
            raise self._unreachable("reading", e) from e
        body = out["Body"]
        try:
            if int(out.get("ContentLength", 0)) > MAX_OBJECT_BYTES:
                raise OSError(f"{self._url(key)} holds {out['ContentLength']} bytes, more than a landed page can "
                              f"({MAX_OBJECT_BYTES}); it is not one of this store's objects")
            # Read to the end (the empty chunk): botocore checks the checksum only then, not on a read
            # of a given size that returns data.
            chunks, size = [], 0
            while chunk := body.read(8 * 2**20):
                size += len(chunk)
                if size > MAX_OBJECT_BYTES:
                    raise OSError(f"{self._url(key)} is larger than {MAX_OBJECT_BYTES} bytes")
                chunks.append(chunk)
        except FlexibleChecksumError as e:
            raise OSError(f"{self._url(key)}: its bytes do not match the checksum stored with it ({e}); "
                          f"it was damaged after it was written, or written by something else") from e
        except (*_UNREACHABLE, ResponseStreamingError) as e:  # botocore retries a request, not a body cut off
            raise self._unreachable("reading", e) from e
        finally:
            body.close()
        return b"".join(chunks)

    def _delete(self, keys: list[str]) -> int:
        for i in range(0, len(keys), _DELETE_BATCH):
            batch = keys[i:i + _DELETE_BATCH]
            out = self._call("deleting", self._client.delete_objects, Bucket=self.bucket,
                             Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            errors = out.get("Errors") or []
            if errors:
                first = errors[0]
                raise OSError(f"{self._url(first.get('Key', '?'))}: deleting failed ({first.get('Code')}: "
                              f"{first.get('Message')}), and {len(errors) - 1} more; the next attempt retries")
        return len(keys)

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
        self._call("deleting", self._client.delete_object, Bucket=self.bucket,
                   Key=self._dir(source, window) + _read_name(n, epoch))

    def close(self) -> None:
        self._client.close()


def _read_name(n: int, epoch: int) -> str:
    return f"read-{n:08d}.e{epoch:06d}.json"


# S3's bucket naming rules (general purpose buckets), checked when the config loads.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
# Key segments: S3's "safe characters", so a prefix never needs escaping in a console, a CLI or a policy.
_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+-\d+$")


def _bucket_problem(bucket: str) -> str | None:
    if not _BUCKET.match(bucket) or ".." in bucket or ".-" in bucket or "-." in bucket or _IP.match(bucket):
        return (f"{bucket!r} is not an S3 bucket name: 3 to 63 characters of lowercase letters, digits, dots and "
                f"hyphens, starting and ending with a letter or digit, not an IP address (e.g. my-logs); "
                f"write the bucket's name only, without s3:// or a path (the path goes in landing.prefix)")
    if bucket.startswith(("xn--", "sthree-")) or bucket.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3")):
        return f"{bucket!r} uses a prefix or suffix S3 reserves (xn--, sthree-, -s3alias, --ol-s3, .mrap, --x-s3)"
    return None


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
        out = []
        if why := _bucket_problem(self.bucket):
            out.append(("bucket", why))
        if self.prefix and not _PREFIX.match(self.prefix):
            out.append(("prefix", f"{self.prefix!r} is not a key prefix: path segments of letters, digits and "
                                  f"!_.*'()- joined by single '/', without a leading or trailing '/' "
                                  f"(e.g. landing or logpull/landing)"))
        elif len(self.prefix) > 512:
            out.append(("prefix", "is longer than 512 characters; S3 keys end at 1,024 bytes"))
        if self.region is not None and not _REGION.match(self.region):
            out.append(("region", f"{self.region!r} is not an AWS region name such as us-east-1 or eu-central-1"))
        if self.endpoint_url is not None and not re.match(r"^https?://[^\s/]+", self.endpoint_url):
            out.append(("endpoint_url", f"{self.endpoint_url!r} must be an http(s) URL such as "
                                        f"https://s3.eu-central-1.amazonaws.com, or be left out for AWS's own"))
        return out

    def where(self, resolve: Callable[[str], Path]) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def _open(cfg: S3LandingConfig, base_dir: Path) -> S3LandingStore:
    return S3LandingStore(cfg.bucket, prefix=cfg.prefix, region=cfg.region, endpoint_url=cfg.endpoint_url)


PLUGINS = [Plugin("landing", "s3", S3LandingConfig, _open)]

__all__ = ["PLUGINS", "BoundedS3Resource", "S3LandingConfig", "S3LandingError", "S3LandingStore", "S3Unreachable"]
