"""Elasticsearch 8/9 and OpenSearch 2 sink: the ``_bulk`` API, one ``create`` per event under an ``_id``
derived from (stream, event id), so the cluster itself keeps one copy of every event.

Capabilities: ``dedupe_ids`` (``sinks/__init__.py``).

Guarantee: exactly-once per (stream, event id) in the index, crashes and resends included: a resent
batch, whole or in part, creates nothing new (per-item 409 ``version_conflict_engine_exception`` counts as
delivered, the copy already there).

Layout. Every batch goes to ``POST <url>/<index>/_bulk`` (``Content-Type: application/x-ndjson``) as
pairs of lines: ``{"create":{"_id":…}}`` and the document. ``index`` is an index, an alias with a write
index or a data stream (which only takes ``create``, the one action used here). A batch (one landed page,
at most 1,000 events) is cut into requests of at most ``MAX_REQUEST_BYTES`` (5 MiB; Elasticsearch's
``http.max_content_length`` defaults to 100 MB, AWS OpenSearch Service's smallest is 10 MiB); a single
event over the cap goes alone. No ``refresh`` is asked (a refresh per batch costs the cluster a segment
each time); the documents are searchable after the index's own ``refresh_interval``.

The document is the envelope line (``deliver.envelope``) byte for byte, with ONE field added at its head:
``@timestamp``, a copy of the envelope's ``event_time``. A data stream refuses a document without
``@timestamp`` ("data stream timestamp field [@timestamp] is missing"), and Kibana's time pickers and
``logs-*`` templates use it; ``event_time`` stays, unchanged, beside it. Adding it is a splice of bytes,
not a re-encoding: the rest of the record is untouched.

``_id``: ``<stream>:<event id>`` (stream names hold no ``:``, so no two streams' ids meet) while that is
at most 512 UTF-8 bytes, Elasticsearch's limit for ``_id``; otherwise, and for an event id that starts
with ``#`` or cannot be encoded as UTF-8 (a lone surrogate), ``<stream>:#<SHA-256 of the id, hex>``. A
plain id never starts with ``#`` after the colon and a hashed one always does, so the two forms never
meet; the event id itself is always in the document's ``event_id`` field.

Answers. The request as a whole: 2xx carries one result per item, in order; 429, 502, 503, 504 and
transport errors (refused or reset connection, timeout) are retried whole, with bounded exponential
back-off (``Retry-After`` obeyed up to the cap), which the ``_id`` makes harmless; 401 and 403 fail at
once naming the variable that holds the credential; any other status fails naming it and the cluster's
error type and reason. Per item: 201 is created, 409 is "already there" (delivered); 429
(``es_rejected_execution_exception``: a full write queue, or a flood-stage disk block) is retried, only
those items, with the same bounded back-off; anything else (a mapping error such as
``document_parsing_exception``/``mapper_parsing_exception``, a missing index, a privilege missing on the
index) fails the batch naming the event id, the status, the error type and the reason. The items of the
batch that were created stay; the delivery's retry finds them (409) and counts them delivered.

Product check, as the official clients do: the first use of a sink reads ``GET /``; Elasticsearch
answers with the header ``X-Elastic-Product: Elasticsearch`` (sent since 7.14) and a version 8 or later;
OpenSearch sends no such header and says ``"distribution": "opensearch"`` in its version (2 or later).
Anything else is refused with a message saying what answered. A credential allowed to write but not to
read cluster info gets 403 from ``GET /``: as the official clients do, the check is then made on the
``_bulk`` answers instead (a 2xx answer naming another product is refused).

Where duplicates can come from: none in the index for one stream, as long as the documents' ``_id`` is
what makes them one (an index whose documents were reindexed under other ids, or the same events
delivered into two different indices, e.g. after ``index`` was changed, hold them again). Writes go
through the fence before every request that hands events over, so a delivery that lost its lease sends
nothing more.

Not declared: ``read_back``. Telling exactly which events of a window an index holds needs a search,
and a search is exact only after a refresh (which an ingest-only API key is usually not allowed to ask
for), and only if the operator's mapping keeps ``source`` and ``window_start`` searchable as keyword and
date. ``dedupe_ids`` already makes a delivery resent after a lost checkpoint store exact: the cluster
answers 409 for every event it holds.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import logging
import random
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
from pydantic import StrictBool, ValidationInfo, field_validator, model_validator

from logpull_dagster.config import BaseUrl, SinkBase, secret
from logpull_dagster.config.fields import check_tls_verify
from logpull_dagster.json_codec import JSONError, dumps, loads
from logpull_dagster.plugins import Plugin
from logpull_dagster.redact import Redactor, env_secret
from logpull_dagster.sinks import Capability, Fence, Written, to_write
from logpull_dagster.sources.http import ssl_context
from logpull_dagster.windows import Window

log = logging.getLogger(__name__)

MAX_ID_BYTES = 512  # Elasticsearch refuses a longer _id ("id [...] is too long, must be no longer than 512 bytes")
MAX_REQUEST_BYTES = 5 * 2**20  # one _bulk request's body; a larger batch is cut into several requests
MAX_RESPONSE_BYTES = 32 * 2**20  # a _bulk answer of 1,000 items with long error reasons is far smaller
ATTEMPTS = 8  # requests for one part of a batch (whole-request retries and per-item 429 retries together)
BACKOFF_INITIAL = 0.5  # seconds before the first retry, doubled each time (with jitter) up to BACKOFF_MAX
BACKOFF_MAX = 30.0
DEADLINE = 600.0  # seconds one batch may spend in retries before it fails (the delivery retries it later)
TIMEOUT = httpx.Timeout(60.0, connect=10.0)  # per read/write: _bulk waits up to 1m for shards by default
RETRY_STATUSES = frozenset({429, 502, 503, 504})
_REASON_CHARS = 500  # of a cluster's error reason in a message


class ElasticsearchError(RuntimeError):
    """The cluster refused a batch, or is not a cluster this sink supports."""


class CredentialsRefused(ElasticsearchError):
    """401/403: the credential is wrong, expired, or lacks a privilege (the message names its variable)."""

    permanent = True  # retrying cannot mend it: delivery fails the window at once (sinks/__init__.py)


class BulkItemFailed(ElasticsearchError):
    """An event of the batch was refused for good (not 409, not 429): the message names its event id."""

    permanent = True  # retrying cannot mend it: delivery fails the window at once (sinks/__init__.py)


class NotSupported(ElasticsearchError):
    """The server is not Elasticsearch 8+ nor OpenSearch 2+."""

    permanent = True  # retrying cannot mend it: delivery fails the window at once (sinks/__init__.py)


@dataclass(frozen=True)
class _Cluster:
    product: Literal["elasticsearch", "opensearch", "unverified"]
    version: str


def doc_id(stream: str, event_id: str) -> str:
    """The ``_id`` of an event (the module docstring): readable when it can be, hashed when it must be."""
    plain = f"{stream}:{event_id}"
    try:
        size = len(plain.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 form, and the cluster would mangle it
        size = MAX_ID_BYTES + 1
    if size <= MAX_ID_BYTES and not event_id.startswith("#"):
        return plain
    return f"{stream}:#{hashlib.sha256(event_id.encode('utf-8', 'surrogatepass')).hexdigest()}"


def with_timestamp(record: bytes) -> bytes:
    """``record`` (an envelope line) with ``"@timestamp"`` = its ``event_time`` as the first key.

    A splice: ``,"event_time":`` cannot occur unescaped inside a JSON string, and every key before it
    in an envelope (source, window_start, window_end, event_id) holds a string, so its first occurrence
    is the key. The value is copied as it is (Elasticsearch's ``date`` takes ISO 8601 with an offset).
    Any other shape is parsed."""
    start = record.find(b',"event_time":')
    end = record.find(b',"pulled_at":', start)
    if record.startswith(b'{"source":"') and -1 not in (start, end):
        value = record[start + 14:end]
    else:
        value = dumps(loads(record)["event_time"])
    return b'{"@timestamp":' + value + b"," + record[1:]


class ElasticsearchSink:
    """Exactly once per (stream, event id) into an Elasticsearch/OpenSearch index or data stream: ``_bulk``
    ``create`` under a deterministic ``_id``, so a resent batch adds nothing (the module docstring)."""

    capabilities: frozenset[Capability] = frozenset({"dedupe_ids"})

    def __init__(self, url: str, index: str, *, authorization: str, credential: str,
                 ca_file: str | None = None, tls_verify: bool = True, max_request_bytes: int = MAX_REQUEST_BYTES,
                 attempts: int = ATTEMPTS, backoff_initial: float = BACKOFF_INITIAL,
                 backoff_max: float = BACKOFF_MAX, deadline: float = DEADLINE,
                 timeout: httpx.Timeout = TIMEOUT, secrets: tuple[str, ...] = ()) -> None:
        """``authorization``: the header's value (``ApiKey …`` or ``Basic …``); ``credential``: what to name
        when it is refused (e.g. ``api_key (ES_API_KEY)``), never the value; ``secrets``: values kept out
        of every message (the key or password)."""
        self.url, self.index, self.credential = url.rstrip("/"), index, credential
        self.max_request_bytes, self.attempts = max_request_bytes, attempts
        self.backoff_initial, self.backoff_max, self.deadline = backoff_initial, backoff_max, deadline
        self._redact = Redactor(secrets)
        self._cluster: _Cluster | None = None
        self._bulk_path = f"/{urllib.parse.quote(index, safe='')}/_bulk"
        self._client = httpx.Client(
            base_url=self.url, timeout=timeout, follow_redirects=False, trust_env=False,
            verify=ssl_context(ca_file=ca_file, verify=tls_verify),
            headers={"Authorization": authorization, "Accept": "application/json"},
        )

    # ---- the Sink protocol ---------------------------------------------------------------------------

    def write_batch(self, source: str, window: Window, batch: int, lines: list[bytes], ids: list[str], *,
                    delivered: set[bytes] | None = None, fence: Fence | None = None) -> Written:
        keep = to_write(ids, delivered)
        if not keep:
            return Written(None, 0, len(lines))
        self._check_product()
        items = [(ids[k], b'{"create":{"_id":' + dumps(doc_id(source, ids[k])) + b"}}\n"
                  + with_timestamp(lines[k]) + b"\n") for k in keep]
        for part in _parts(items, self.max_request_bytes):
            self._send(part, fence)
        return Written(self.location(source), len(keep), len(lines) - len(keep))

    def holds(self, source: str, window: Window) -> bool:
        return False  # no read_back (the module docstring says why)

    def delivered_ids(self, source: str, window: Window) -> set[bytes]:
        return set()

    def location(self, source: str) -> str:
        """The index (or data stream) at the cluster; ``source`` is the documents' ``source`` field."""
        return f"{self.url}/{self.index}"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ElasticsearchSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- requests ------------------------------------------------------------------------------------

    def _send(self, items: list[tuple[str, bytes]], fence: Fence | None) -> None:
        """Send ``items`` (event id, action and document lines) until every one is created or already there;
        only items the cluster rejected with 429 are sent again."""
        started = time.monotonic()
        pending = items
        for attempt in range(1, self.attempts + 1):
            if fence is not None:
                fence()  # right before events are handed over; again before each resend (keeps the lease)
            answer = self._post(pending)
            if isinstance(answer, _Retry):
                why, wait = answer.why, answer.wait
            else:
                rejected, reason = self._results(pending, answer)
                if not rejected:
                    return
                pending = rejected
                why = f"{len(rejected)} events rejected with 429 (first: event {rejected[0][0]!r}: {reason})"
                wait = None
            if attempt == self.attempts or time.monotonic() - started > self.deadline:
                raise ElasticsearchError(
                    f"{self.url}/{self.index}: {why}, still after {attempt} requests in "
                    f"{time.monotonic() - started:.0f}s; the cluster is overloaded or unreachable, so the batch "
                    f"is not delivered yet (a retry of the delivery sends it again, harmlessly: events already "
                    f"indexed answer 409)")
            pause = self._backoff(attempt, wait, started)
            log.warning("%s/%s: %s; retrying in %.1fs (request %d of at most %d)", self.url, self.index, why, pause,
                        attempt + 1, self.attempts)
            time.sleep(pause)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _backoff(self, attempt: int, retry_after: float | None, started: float) -> float:
        pause = min(self.backoff_max, self.backoff_initial * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            pause = max(pause, min(retry_after, self.backoff_max))
        return max(0.0, min(pause, self.deadline - (time.monotonic() - started)))

    def _post(self, items: list[tuple[str, bytes]]) -> _Retry | dict[str, Any]:
        """One ``_bulk`` request: its parsed answer, or why and after how long to retry it whole."""
        body = b"".join(pair for _, pair in items)
        try:
            with self._client.stream("POST", self._bulk_path, content=body,
                                     headers={"Content-Type": "application/x-ndjson"}) as resp:
                data = _read_bounded(resp, MAX_RESPONSE_BYTES, f"{self.url}/{self.index}/_bulk")
        except httpx.TransportError as e:  # refused, reset, timed out: the _id makes resending harmless
            return _Retry(f"{type(e).__name__}: {self._redact(str(e)) or 'no detail'}", None)
        if resp.status_code in RETRY_STATUSES:
            return _Retry(f"HTTP {resp.status_code} ({self._error_of(data)})", _retry_after(resp))
        if resp.status_code in (401, 403):
            raise self._refused(resp.status_code, data, f"POST {self._bulk_path}")
        if resp.status_code == 413:
            raise ElasticsearchError(
                f"{self.url}/{self.index}: a _bulk request of {len(body)} bytes is over the cluster's "
                f"http.max_content_length (413); raise that setting (or the proxy's body limit) above 5 MiB")
        if not 200 <= resp.status_code < 300:
            hint = " (is url the cluster's address, with the path prefix of a proxy in front of it?)" \
                if resp.status_code in (404, 405) else ""
            raise ElasticsearchError(f"{self.url}/{self.index}: _bulk answered HTTP {resp.status_code}: "
                                     f"{self._error_of(data)}{hint}")
        self._check_bulk_product(resp)
        try:
            answer = loads(data)
        except JSONError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
            raise ElasticsearchError(f"{self.url}/{self.index}: _bulk answered {resp.status_code} without a "
                                     f"list of items: {self._redact(data[:200].decode('utf-8', 'replace'))!r}")
        return answer

    def _results(self, items: list[tuple[str, bytes]],
                 answer: dict[str, Any]) -> tuple[list[tuple[str, bytes]], str]:
        """The items to send again (per-item 429) and the first one's reason; raises when an item was
        refused for good, naming the first such event."""
        results = answer["items"]
        if len(results) != len(items):
            raise ElasticsearchError(f"{self.url}/{self.index}: _bulk answered {len(results)} items for "
                                     f"{len(items)} sent; cannot tell which events were indexed")
        if answer.get("errors") is False:  # the documented fast path: every item succeeded
            return [], ""
        again: list[tuple[str, bytes]] = []
        reason = ""
        failed: list[str] = []
        for (event_id, pair), result in zip(items, results, strict=True):
            outcome = result.get("create") if isinstance(result, dict) else None
            status = outcome.get("status") if isinstance(outcome, dict) else None
            if not isinstance(outcome, dict) or not isinstance(status, int):
                raise ElasticsearchError(f"{self.url}/{self.index}: _bulk answered an item that is not a create "
                                         f"result for event {event_id!r}: {str(result)[:200]!r}")
            if 200 <= status < 300 or status == 409:  # created, or the copy already there (a resend)
                continue
            error = outcome.get("error")
            if status == 429:
                again.append((event_id, pair))
                reason = reason or _describe(error)
                continue
            failed.append(f"event {event_id!r}: {status} {_describe(error)}{_hint(status, error, self)}")
        if failed:
            more = f" (and {len(failed) - 1} more events of the batch)" if len(failed) > 1 else ""
            raise BulkItemFailed(self._redact(f"{self.url}/{self.index} refused {failed[0]}{more}; the other "
                                              f"events of the batch were indexed and count as delivered on retry"))
        return again, reason

    # ---- the product check ---------------------------------------------------------------------------

    def _check_product(self) -> None:
        """Once per sink: is this Elasticsearch 8+ or OpenSearch 2+? (the module docstring)"""
        if self._cluster is not None:
            return
        what = f"{self.url} (GET /)"
        for attempt in range(1, self.attempts + 1):
            try:
                with self._client.stream("GET", "/") as resp:
                    data = _read_bounded(resp, 1 << 20, what)
            except httpx.TransportError as e:
                if attempt == self.attempts:
                    raise ElasticsearchError(f"{what}: {type(e).__name__}: {self._redact(str(e))}; is the cluster "
                                             f"up and url right? (ca_file for a private CA)") from None
            else:
                if resp.status_code not in RETRY_STATUSES or attempt == self.attempts:
                    break
            time.sleep(self._backoff(attempt, None, time.monotonic()))
        if resp.status_code == 401:
            raise self._refused(401, data, "GET /")
        if resp.status_code == 403:
            # Allowed to write, not to read cluster info: check the _bulk answers instead (as the clients do).
            log.warning("%s: the credential in %s may not read cluster info (GET / answered 403), so the product "
                        "check is made on the _bulk answers instead", self.url, self.credential)
            self._cluster = _Cluster("unverified", "?")
            return
        if not 200 <= resp.status_code < 300:
            raise ElasticsearchError(f"{what} answered HTTP {resp.status_code}: {self._error_of(data)}")
        self._cluster = self._product_of(resp, data)
        log.info("%s is %s %s", self.url, self._cluster.product, self._cluster.version)

    def _product_of(self, resp: httpx.Response, data: bytes) -> _Cluster:
        try:
            info = loads(data)
        except JSONError:
            info = None
        version = info.get("version") if isinstance(info, dict) else None
        number = str(version.get("number", "")) if isinstance(version, dict) else ""
        distribution = version.get("distribution") if isinstance(version, dict) else None
        major = _major(number)
        header = resp.headers.get("X-Elastic-Product")
        where = f"the server at {self.url}"
        if distribution == "opensearch":
            if major is None or major < 2:
                raise NotSupported(f"{where} is OpenSearch {number or '(no version)'}; this sink supports "
                                   f"OpenSearch 2 and later")
            return _Cluster("opensearch", number)
        if header == "Elasticsearch":
            if major is None or major < 8:
                raise NotSupported(f"{where} is Elasticsearch {number or '(no version)'}; this sink supports "
                                   f"Elasticsearch 8 and 9 (and OpenSearch 2)")
            return _Cluster("elasticsearch", number)
        said = f"version {number}" if number else "no version"
        if distribution:
            said += f", distribution {distribution!r}"
        raise NotSupported(
            f"{where} is not Elasticsearch nor OpenSearch: GET / answered with {said} and "
            f"X-Elastic-Product {header or 'absent'} (Elasticsearch 7.14+ always sends 'Elasticsearch'; "
            f"OpenSearch says distribution 'opensearch'); check url (a proxy in front of the cluster must "
            f"pass the header through)")

    def _check_bulk_product(self, resp: httpx.Response) -> None:
        """After a GET / we were not allowed to read: a 2xx _bulk answer naming another product is refused."""
        if self._cluster is not None and self._cluster.product == "unverified":
            header = resp.headers.get("X-Elastic-Product")
            if header is not None and header != "Elasticsearch":
                raise NotSupported(f"the server at {self.url} answered _bulk as {header!r}, not Elasticsearch")

    # ---- messages ------------------------------------------------------------------------------------

    def _refused(self, status: int, data: bytes, request: str) -> CredentialsRefused:
        if status == 401:
            fix = "the credential is wrong, expired or revoked: set the variable to a valid one"
        else:
            fix = (f"the credential is valid but lacks a privilege: grant it create_doc (or create/index) on "
                   f"{self.index}, and auto_configure to let it create a data stream")
        return CredentialsRefused(f"{self.url}: {request} answered {status} for the credential in "
                                  f"{self.credential} ({self._error_of(data)}); {fix}")

    def _error_of(self, data: bytes) -> str:
        """The cluster's ``error.type: reason``, or the start of the body; never a secret."""
        try:
            body = loads(data)
        except JSONError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        text = _describe(error) if error is not None else data[:200].decode("utf-8", "replace") or "empty body"
        return self._redact(text)


@dataclass(frozen=True)
class _Retry:
    why: str
    wait: float | None  # Retry-After, seconds


def _parts(items: list[tuple[str, bytes]], cap: int) -> Iterator[list[tuple[str, bytes]]]:
    """``items`` in order, cut into requests of at most ``cap`` bytes (an item over it goes alone)."""
    part: list[tuple[str, bytes]] = []
    size = 0
    for item in items:
        if part and size + len(item[1]) > cap:
            yield part
            part, size = [], 0
        part.append(item)
        size += len(item[1])
    if part:
        yield part


def _read_bounded(resp: httpx.Response, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in resp.iter_bytes():
        size += len(chunk)
        if size > limit:
            raise ElasticsearchError(f"{what}: the answer is over {limit} bytes; not read further")
        chunks.append(chunk)
    return b"".join(chunks)


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, when.timestamp() - time.time()) if when else None


def _major(number: str) -> int | None:
    head = number.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _describe(error: Any) -> str:
    """``type: reason`` of an Elasticsearch error object (``caused_by`` appended), cut to a readable length."""
    if isinstance(error, dict):
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}"
        cause = error.get("caused_by")
        if isinstance(cause, dict):
            text += f" (caused by {cause.get('type', '?')}: {cause.get('reason', '')})"
    else:
        text = str(error)
    return text[:_REASON_CHARS]


def _hint(status: int, error: Any, sink: ElasticsearchSink) -> str:
    kind = error.get("type", "") if isinstance(error, dict) else ""
    if kind == "index_not_found_exception":
        return f"; create the index or data stream {sink.index} (or an index template for it), or allow auto-create"
    if kind in ("mapper_parsing_exception", "document_parsing_exception"):
        return ("; the index's mapping refuses this event: map the field it names to fit (e.g. `event` as "
                "`flattened`), or deliver to an index whose template does (docs/sinks/elasticsearch.md)")
    if status == 403:
        return f"; the credential in {sink.credential} may not write to {sink.index}: grant create_doc on it"
    return ""


# ---- config ------------------------------------------------------------------------------------------

_INDEX_BAD = set('\\/*?"<>| ,#:')


class ElasticsearchSinkConfig(SinkBase):
    """``{type: elasticsearch, url, api_key | username + password, index}``: Elasticsearch 8/9 or OpenSearch 2
    ``_bulk`` into an index or a data stream."""

    type: Literal["elasticsearch"]
    # The cluster's address (scheme://host:port, and a proxy's path prefix if any); no credential in it.
    url: BaseUrl
    # An API key (Kibana's "encoded" form, or id:api_key); or username + password (basic auth).
    api_key: secret("ES_API_KEY") | None = None  # type: ignore[valid-type]
    username: str | None = None
    password: secret("ES_PASSWORD") | None = None  # type: ignore[valid-type]
    # An index, an alias with a write index, or a data stream (e.g. logs-logpull-default).
    index: str
    # A PEM file of CA certificates for a cluster behind a private CA (relative to the config's folder).
    ca_file: str | None = None
    # false turns certificate checks off (a warning is logged when the sink opens).
    tls_verify: StrictBool = True

    kinds: ClassVar[tuple[str, ...]] = ("elasticsearch",)

    @field_validator("tls_verify")
    @classmethod
    def _tls_verify(cls, value: bool, info: ValidationInfo) -> bool:
        return check_tls_verify(value, info)

    @model_validator(mode="after")
    def _one_credential(self) -> ElasticsearchSinkConfig:
        basic = self.username is not None or self.password is not None
        if self.api_key is not None and basic:
            raise ValueError("set either api_key or username + password, not both")
        if self.api_key is None and not basic:
            raise ValueError("set a credential: api_key: {env: ES_API_KEY}, or username: logpull with "
                             "password: {env: ES_PASSWORD}")
        if basic and (not self.username or self.password is None):
            raise ValueError("username and password go together: username: logpull, password: {env: ES_PASSWORD}")
        return self

    def problems(self, resolve: Callable[[str], Path]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        parts = urllib.parse.urlsplit(self.url)
        if parts.username is not None or parts.password is not None:
            out.append(("url", "holds a credential; remove it from url and set api_key, or username and password"))
        if parts.query or parts.fragment:
            out.append(("url", "must be the cluster's address without ?query or #fragment"))
        if why := index_problem(self.index):
            out.append(("index", why))
        if self.ca_file is not None:
            path = resolve(self.ca_file)
            try:
                ssl.create_default_context(cafile=str(path))
            except (ssl.SSLError, OSError) as e:  # missing, unreadable, or not PEM: as for sources' ca_file
                why = getattr(e, "strerror", None) or getattr(e, "reason", None) or e
                out.append(("ca_file", f"{path} is not a readable PEM file of CA certificates ({why}); relative "
                                       f"paths start at the config file's folder"))
        return out

    def where(self, resolve: Callable[[str], Path]) -> str:
        return f"{self.url}/{self.index}"


def index_problem(index: str) -> str | None:
    """Why ``index`` cannot name an Elasticsearch index or data stream, or None (Elasticsearch's rules)."""
    if not index:
        return "must name an index or a data stream"
    if index != index.lower():
        return f"{index!r} has upper-case letters; index and data stream names are lower case"
    if bad := sorted(set(index) & _INDEX_BAD):
        return f"{index!r} holds {' '.join(repr(c) for c in bad)}, which index names cannot"
    if index[0] in "-_+" or index in (".", ".."):
        return f"{index!r} cannot start with -, _ or + nor be . or .."
    if len(index.encode("utf-8")) > 255:
        return "is longer than 255 bytes, the longest index name"
    return None


def authorization(cfg: ElasticsearchSinkConfig) -> tuple[str, str, str]:
    """The ``Authorization`` header, what to call the credential in messages, and the secret value."""
    if cfg.api_key is not None:
        key = env_secret(cfg.api_key.env)
        # Kibana shows the "encoded" key (base64 of id:api_key); id:api_key itself is accepted too, as the
        # official clients take (id, api_key). Base64 has no ':', so the two cannot be confused.
        encoded = base64.b64encode(key.encode()).decode() if ":" in key else key
        return f"ApiKey {encoded}", f"api_key ({cfg.api_key.env})", key
    assert cfg.username is not None and cfg.password is not None  # the config's validator
    password = env_secret(cfg.password.env)
    basic = base64.b64encode(f"{cfg.username}:{password}".encode()).decode()
    return f"Basic {basic}", f"username {cfg.username} and password ({cfg.password.env})", password


def _open(cfg: ElasticsearchSinkConfig, base_dir: Path) -> ElasticsearchSink:
    header, credential, value = authorization(cfg)
    ca_file = None
    if cfg.ca_file is not None:
        path = Path(cfg.ca_file).expanduser()
        ca_file = str(path if path.is_absolute() else (base_dir / path).resolve())
    if not cfg.tls_verify:
        log.warning("%s: tls_verify is false: the cluster's certificate is NOT checked, so anyone on the path can "
                    "read the credential and the events; use ca_file for a private CA", cfg.url)
    return ElasticsearchSink(cfg.url, cfg.index, authorization=header, credential=credential, ca_file=ca_file,
                             tls_verify=cfg.tls_verify, secrets=(value, header.split(" ", 1)[1]))


PLUGINS = [Plugin("siem", "elasticsearch", ElasticsearchSinkConfig, _open)]
