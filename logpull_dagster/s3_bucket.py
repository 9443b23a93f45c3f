"""What the S3 landing store (``landing/s3.py``) and the S3 sink (``sinks/s3.py``) share: one bounded boto3
client, the checks of their ``bucket``/``prefix``/``region``/``endpoint_url`` keys, and S3's errors turned
into messages that name the bucket, the config key and the fix.

Every request is bounded: connect and read timeouts, and botocore's standard retry mode with
``MAX_ATTEMPTS`` retries (throttling, 5xx, dropped connections); that is the only retry layer (the
caller's own retry is the run's, from its checkpoint). Credentials come only from boto3's own chain
(environment, shared files, SSO, container or instance role), never from the config.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Callable, Iterator
from typing import Any

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

# Retries after the first attempt (botocore "standard" mode: throttling, 5xx, connection errors),
# each waiting a jittered 1 s, 2 s. With the timeouts, a call that makes no progress fails within
# 3 x (CONNECT_TIMEOUT + READ_TIMEOUT) + 3 s, and an unreachable endpoint within seconds.
MAX_ATTEMPTS = 2
CONNECT_TIMEOUT = 3.0
# Per socket read, not per call: a page of 1,000 events is ~1 MB; S3 answers a PUT of that in well
# under a second, so 20 s without a byte means the connection is dead.
READ_TIMEOUT = 20.0
READ_CHUNK = 8 * 2**20  # bytes of an object body read at a time

UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError)


@functools.cache
def bounded_s3_resource() -> type[Any]:
    """dagster-aws's ``S3Resource`` whose client has connect and read timeouts.

    dagster-aws 0.29.27's ``get_client`` configures retries only (``Config(retries=...)``), leaving
    botocore's 60 s connect and 60 s read timeouts per attempt; this builds the same client (the same
    session, retry config and fields) with bounded ones. Made on first use: importing dagster-aws costs
    every process that loads the config (``logpull status``, each Dagster CLI run) about half a second,
    and only a store or sink that is opened needs it.
    """
    from dagster_aws.s3 import S3Resource
    from dagster_aws.utils import construct_boto_client_retry_config

    class BoundedS3Resource(S3Resource):
        connect_timeout: float = CONNECT_TIMEOUT
        read_timeout: float = READ_TIMEOUT

        def get_client(self) -> Any:
            import boto3

            config = construct_boto_client_retry_config(self.max_attempts).merge(
                Config(connect_timeout=self.connect_timeout, read_timeout=self.read_timeout, tcp_keepalive=True))
            session = boto3.session.Session(profile_name=self.profile_name)
            return session.client("s3", region_name=self.region_name, endpoint_url=self.endpoint_url,
                                  use_ssl=self.use_ssl, verify=self.verify, config=config)

    return BoundedS3Resource


class S3Bucket:
    """One bucket and key prefix as a store or a sink uses it: a bounded client, and calls whose errors
    name the config key and the fix.

    ``role``: who uses it, for messages (``landing``); ``keys``: how its config keys are written in
    messages (``landing.`` gives ``landing.bucket``); ``actions``: the IAM actions it needs; ``error`` and
    ``unreachable``: the exception types it raises (a configuration problem; S3 not answering, a
    ConnectionError the run retries); ``retried``: what happens after an outage, for the message.
    """

    def __init__(self, bucket: str, *, prefix: str, region: str | None, endpoint_url: str | None, role: str,
                 keys: str, actions: str, error: type[Exception], unreachable: type[Exception],
                 retried: str) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.base = f"{self.prefix}/" if self.prefix else ""  # every key of the user starts with it
        self.region, self.endpoint_url = region, endpoint_url
        self.role, self.keys, self.actions = role, keys, actions
        self.error, self.unreachable, self.retried = error, unreachable, retried
        self.client = bounded_s3_resource()(region_name=region, endpoint_url=endpoint_url,
                                            max_attempts=MAX_ATTEMPTS).get_client()

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # ---- errors

    def call(self, what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        """``fn(**kwargs)``; errors that a config key explains say so (others propagate as they are)."""
        try:
            return fn(**kwargs)
        except NoCredentialsError:
            raise self.no_credentials(what) from None
        except ClientError as e:
            raise self.explained(what, e) from e
        except UNREACHABLE as e:
            raise self.unreachable_error(what, e) from e

    def unreachable_error(self, what: str, e: Exception) -> Exception:
        # Usually an outage, which the run's retries ride out; said so, with the keys to check when it lasts.
        return self.unreachable(
            f"{self.role} (s3://{self.bucket}/{self.base}): {what}: S3 did not answer in {MAX_ATTEMPTS + 1} "
            f"attempts ({type(e).__name__}: {e}); {self.retried}. If this persists, check the network and "
            f"{self.keys}endpoint_url ({self.endpoint_url or 'AWS'}) and {self.keys}region")

    def no_credentials(self, what: str) -> Exception:
        return self.error(
            f"{self.role} (s3://{self.bucket}): {what}: boto3 found no AWS credentials in its chain (the "
            f"AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY variables, AWS_PROFILE and ~/.aws/credentials, SSO, "
            f"a container or instance role); provide them in the run's environment (the config never "
            f"holds credentials)")

    def explained(self, what: str, e: ClientError) -> Exception:
        """A message naming the key and the fix for the errors a config explains; ``e`` itself otherwise."""
        code = error_code(e)
        at = f" at {self.endpoint_url}" if self.endpoint_url else ""
        if code == "NoSuchBucket":
            return self.error(
                f"{self.keys}bucket: the bucket {self.bucket!r} does not exist{at} ({what}); create it "
                f"(aws s3 mb s3://{self.bucket}{f' --region {self.region}' if self.region else ''}) or set "
                f"{self.keys}bucket to an existing bucket")
        if code in ("PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"):
            return self.error(
                f"{self.keys}region: the bucket {self.bucket!r} is in another region than "
                f"{self.region or 'the default one'!r} ({what}: {code}); set {self.keys}region to the bucket's region")
        if code in ("AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "ExpiredToken", "InvalidToken", "403"):
            return self.error(
                f"{self.role} (s3://{self.bucket}/{self.base}): {what} was refused ({code}); the credentials boto3 "
                f"found need {self.actions} on this bucket and prefix, and must be valid")
        return e

    # ---- calls

    def list(self, prefix: str, *, max_keys: int | None = None) -> Iterator[str]:
        """Every key under ``prefix`` (at most ``max_keys``), following ListObjectsV2's continuation
        (1,000 keys a response)."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if max_keys is not None:
            args["MaxKeys"] = max_keys
        while True:
            out = self.call("listing", self.client.list_objects_v2, **args)
            for obj in out.get("Contents", ()):
                yield obj["Key"]
            if not out.get("IsTruncated") or max_keys is not None:
                return
            args["ContinuationToken"] = out["NextContinuationToken"]

    def put(self, key: str, data: bytes, **extra: Any) -> dict[str, Any]:
        """One single-part PutObject of ``data``, checked on the way (Content-MD5, CRC32) and after (the
        ETag); ``extra``: more PutObject arguments (``IfNoneMatch``, ``Metadata``, ...). S3's answer."""
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        out: dict[str, Any] = self.call("writing", self.client.put_object, Bucket=self.bucket, Key=key, Body=data,
                                        ContentMD5=base64.b64encode(md5).decode(), ChecksumAlgorithm="CRC32",
                                        **extra)
        # The ETag of a single-part PUT is the body's MD5 unless the object is encrypted with KMS or a
        # customer key: then it is not, and S3's own Content-MD5 check is the one that counts.
        etag = str(out.get("ETag", "")).strip('"')
        if (plain_etag(out) and re.fullmatch(r"[0-9a-f]{32}", etag) and etag != md5.hex()):
            self.delete([key])
            raise OSError(f"{self.url(key)}: the object S3 stored is not the body sent (ETag {etag}, MD5 "
                          f"{md5.hex()}); it was deleted, and the write fails so that the attempt is retried")
        return out

    def head(self, key: str) -> dict[str, Any] | None:
        """HeadObject's answer (ETag, Metadata, ContentLength, ...), or None when there is no such key."""
        try:
            out: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            if error_code(e) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self.explained("reading", e) from e
        except NoCredentialsError:
            raise self.no_credentials("reading") from None
        except UNREACHABLE as e:
            raise self.unreachable_error("reading", e) from e
        return out

    def stream(self, key: str, *, limit: int, missing: Callable[[str], Exception]) -> Iterator[bytes]:
        """The object's bytes in chunks, checked against the checksum stored with it (at the end: consume
        it all); ``missing(message)`` is raised when there is no such key, OSError beyond ``limit`` bytes."""
        try:
            out = self.client.get_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as e:
            if error_code(e) in ("NoSuchKey", "404"):
                raise missing(f"{self.url(key)} does not exist") from None
            raise self.explained("reading", e) from e
        except NoCredentialsError:
            raise self.no_credentials("reading") from None
        except UNREACHABLE as e:
            raise self.unreachable_error("reading", e) from e
        body = out["Body"]
        try:
            if int(out.get("ContentLength", 0)) > limit:
                raise OSError(f"{self.url(key)} holds {out['ContentLength']} bytes, more than one of this "
                              f"{self.role}'s objects can ({limit}); it is not one of them")
            # Read to the end (the empty chunk): botocore checks the checksum only then, not on a read
            # of a given size that returns data.
            size = 0
            while chunk := body.read(READ_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise OSError(f"{self.url(key)} is larger than {limit} bytes")
                yield chunk
        except FlexibleChecksumError as e:
            raise OSError(f"{self.url(key)}: its bytes do not match the checksum stored with it ({e}); "
                          f"it was damaged after it was written, or written by something else") from e
        except (*UNREACHABLE, ResponseStreamingError) as e:  # botocore retries a request, not a body cut off
            raise self.unreachable_error("reading", e) from e
        finally:
            body.close()

    def delete(self, keys: list[str]) -> int:
        for i in range(0, len(keys), _DELETE_BATCH):
            batch = keys[i:i + _DELETE_BATCH]
            out = self.call("deleting", self.client.delete_objects, Bucket=self.bucket,
                            Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            errors = out.get("Errors") or []
            if errors:
                first = errors[0]
                raise OSError(f"{self.url(first.get('Key', '?'))}: deleting failed ({first.get('Code')}: "
                              f"{first.get('Message')}), and {len(errors) - 1} more; the next attempt retries")
        return len(keys)

    def close(self) -> None:
        self.client.close()


_DELETE_BATCH = 1000  # DeleteObjects takes at most 1,000 keys


def error_code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def plain_etag(answer: dict[str, Any]) -> bool:
    """Whether the ETag of this PutObject or HeadObject answer is the MD5 of the body (a single-part
    object, not encrypted with KMS or a customer key)."""
    return answer.get("ServerSideEncryption") in (None, "AES256") and "SSECustomerAlgorithm" not in answer


# ---- the config keys, checked when the config loads ----------------------------------------------------

# S3's bucket naming rules (general purpose buckets).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
# Key segments: S3's "safe characters", so a prefix never needs escaping in a console, a CLI or a policy.
_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z0-9]+)+-\d+$")


def bucket_problem(bucket: str, prefix_key: str) -> str | None:
    """Why ``bucket`` is not an S3 bucket name, or None; ``prefix_key``: the key a path belongs in."""
    if not _BUCKET.match(bucket) or ".." in bucket or ".-" in bucket or "-." in bucket or _IP.match(bucket):
        return (f"{bucket!r} is not an S3 bucket name: 3 to 63 characters of lowercase letters, digits, dots and "
                f"hyphens, starting and ending with a letter or digit, not an IP address (e.g. my-logs); "
                f"write the bucket's name only, without s3:// or a path (the path goes in {prefix_key})")
    if bucket.startswith(("xn--", "sthree-")) or bucket.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3")):
        return f"{bucket!r} uses a prefix or suffix S3 reserves (xn--, sthree-, -s3alias, --ol-s3, .mrap, --x-s3)"
    return None


def config_problems(bucket: str, prefix: str, region: str | None, endpoint_url: str | None, *,
                    prefix_key: str, example_prefix: str) -> list[tuple[str, str]]:
    """``(key, why)`` for each of the four keys that cannot work; ``prefix_key``: how the prefix key is
    written in messages (``landing.prefix``), ``example_prefix``: a prefix to suggest."""
    out = []
    if why := bucket_problem(bucket, prefix_key):
        out.append(("bucket", why))
    if prefix and not _PREFIX.match(prefix):
        out.append(("prefix", f"{prefix!r} is not a key prefix: path segments of letters, digits and "
                              f"!_.*'()- joined by single '/', without a leading or trailing '/' "
                              f"(e.g. {example_prefix} or logpull/{example_prefix})"))
    elif len(prefix) > 512:
        out.append(("prefix", "is longer than 512 characters; S3 keys end at 1,024 bytes"))
    if region is not None and not _REGION.match(region):
        out.append(("region", f"{region!r} is not an AWS region name such as us-east-1 or eu-central-1"))
    if endpoint_url is not None and not re.match(r"^https?://[^\s/]+", endpoint_url):
        out.append(("endpoint_url", f"{endpoint_url!r} must be an http(s) URL such as "
                                    f"https://s3.eu-central-1.amazonaws.com, or be left out for AWS's own"))
    return out


__all__ = [
    "MAX_ATTEMPTS",
    "UNREACHABLE",
    "S3Bucket",
    "bounded_s3_resource",
    "bucket_problem",
    "config_problems",
    "error_code",
    "plain_etag",
]
