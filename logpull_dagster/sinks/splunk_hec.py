"""Splunk HTTP Event Collector sink, with indexer acknowledgement.

Capabilities: none (``sinks/__init__.py``). HEC has no idempotency key and no way to read back what it
indexed, so this sink can neither find a batch it sent before nor tell which events it holds:
``holds`` is False, ``delivered_ids`` empty, and a batch sent twice is indexed twice.

Guarantee (``ack: true``, the default): at-least-once, every event indexed; a batch counts as delivered
only once HEC's indexer acknowledgement for it reads true. Duplicates come from exactly two places:

* a batch whose ack did not read true within ``ack_timeout`` is sent again (never sooner): if the first
  copy was in fact indexed (its ack status lost, a connection cut after HEC read the body, an indexer
  slower than ``ack_timeout``), it is there twice. The materialization counts those events as
  ``resent_events`` (``Written.resent``); a batch is sent at most ``MAX_SENDS`` times, then the window
  fails clearly;
* a process that dies after HEC indexed a batch and before the delivery checkpoint recorded it (after
  reading its ack, which HEC answers only once) sends that batch again on the retry: at most one batch
  per crash.

With ``ack: false`` (Splunk Cloud offers acknowledgement only to Firehose): a 200 counts as delivered,
"at-least-once to HEC; events the indexer loses after answering 200 are not seen"; duplicates as above
(a crash between the 200 and the checkpoint; a request whose answer was lost, counted as resent).

The request. ``<url>/services/collector/event`` (``url`` may carry a path prefix: a proxy's), header
``Authorization: Splunk <token>``, gzip; one HEC event per landed envelope line, the events written one
after the other (HEC's batch format)::

    {"time":1764151201.000000,"source":"<stream>","sourcetype":"logpull:json","index":"...","event":<line>}

``event`` is the envelope line itself, a JSON object, byte for byte (Splunk keeps it as the event's
JSON text; ``spath`` and the ``_json`` extractions read it); ``time`` is the event's own time
(``event_time`` of the envelope) in epoch seconds. A delivery batch (one landed page) is split into
requests of at most ``batch_events`` events and ``batch_bytes`` bytes before compression; each request
is sent and confirmed before the next is sent, and ``write_batch`` returns only once every request of
the batch is confirmed. Delivery has the next batch's requests built (``prepare``) while this one waits
on HEC: a batch's bodies are held at most twice over, and nothing is sent ahead.

Acknowledgement. Each sink instance has its own channel (a GUID in ``X-Splunk-Request-Channel``);
HEC answers each request with an ``ackId`` and ``/services/collector/ack`` says which ids are indexed.
An id answered true is forgotten by HEC (asked again it reads false), so the sink records it the
moment it reads it. The sink polls at once, then after 50 ms, doubling up to ``ACK_POLL_MAX``; when
``ack_timeout`` has passed since the last send and a last poll still reads false, it sends the request
again and waits for either copy's id. While it waits it calls the delivery's ``fence`` every
``KEEP_LEASE_EVERY`` seconds, which renews the delivery's lease (a wait of ``ack_timeout``, 5 minutes
by default, outlives a 60 s lease) and stops the wait if another run has taken the window over.

Answers. 503 and 429 (server busy, queues full), other 5xx and dropped connections are retried with
exponential back-off (honouring ``Retry-After``) for at most ``BUSY_BUDGET`` seconds per request;
401/403 fail at once naming the token's environment variable; a 400 fails the window naming HEC's
code, its text and the event (number and event id) it refused; code 14 "ACK is disabled", or a 200
without an ``ackId``, fails with the fix (``ack: false``, or turn indexer acknowledgement on for the
token). Failures that retrying cannot mend are :class:`HecRefused` (``permanent = True``).

``sourcetype`` defaults to ``logpull:<source type>`` of each stream (``logpull:google_workspace``,
``logpull:okta``): the opener is told the config's streams and their types (``streams=``, see
``plugins.open_store``); a stream it was not told of gets ``logpull:json``. ``source`` defaults to the
stream's name.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
import ssl
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field, StrictBool, field_validator

from logpull_dagster.config import BaseUrl, Duration, SinkBase, secret
from logpull_dagster.config.fields import check_ca_file
from logpull_dagster.json_codec import JSONError, dumps, loads
from logpull_dagster.plugins import Plugin
from logpull_dagster.redact import env_secret
from logpull_dagster.sinks import Capability, Fence, Written, to_write
from logpull_dagster.sources.http import parse_retry_after, ssl_context
from logpull_dagster.windows import Window, epoch_us, parse_time

EVENT_PATH = "/services/collector/event"
ACK_PATH = "/services/collector/ack"
DEFAULT_SOURCETYPE = "logpull:json"
MAX_SENDS = 3  # sends of one request (two resends) whose ack never reads true, then the window fails
BUSY_BUDGET = 300.0  # seconds one request may spend backing off 503/429/5xx/connection errors
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
RETRY_AFTER_MAX = 60.0  # a Retry-After beyond this is cut to it (the budget still bounds the total)
ACK_POLL_FIRST, ACK_POLL_MAX = 0.05, 0.25  # a Splunk indexes in ~1 s: a wait overshoots it by 0.25 s at most
KEEP_LEASE_EVERY = 10.0  # seconds between fence calls while waiting on an ack: well inside any lease_ttl
REQUEST_TIMEOUT = 60.0  # the whole of one request: connect, send, answer
ANSWER_MAX = 64 * 1024  # bytes of an answer read: HEC's are tens of bytes, a proxy's error page more
GZIP_LEVEL = 1  # JSON shrinks ~5x at level 1; higher levels cost 3x the CPU for ~20% fewer bytes
_EVENT_TIME = b',"event_time":"'
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_Request = tuple[bytes, list[int]]  # a request body, and the positions in the batch of the events it holds


class HecError(RuntimeError):
    """Delivery to HEC failed; retrying the window later may succeed."""

    permanent: bool = False


class HecRefused(HecError):
    """HEC refused the request in a way retrying cannot mend (the token, the config, an event)."""

    permanent = True


class HecUnconfirmed(HecError):
    """A request's indexer acknowledgement never read true, after every resend."""


@dataclasses.dataclass(frozen=True)
class _Answer:
    status: int
    body: dict[str, Any]
    retry_after: float | None

    @property
    def code(self) -> int | None:
        code = self.body.get("code")
        return code if isinstance(code, int) else None

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))[:300]


class SplunkHecSink:
    """At-least-once into Splunk HEC: a batch counts only once its indexer ack reads true; duplicates only
    from a batch resent after ``ack_timeout`` (counted as resent) and one batch per crash (module docstring)."""

    capabilities: frozenset[Capability] = frozenset()

    def __init__(self, url: str, token: str, *, token_env: str, index: str | None = None,
                 sourcetype: str | None = None, source: str | None = None,
                 source_types: Mapping[str, str] | None = None, ack: bool = True,
                 ack_timeout: float = 300.0, batch_events: int = 1000, batch_bytes: int = 2**20,
                 gzip: bool = True, ca_file: str | None = None, tls_verify: bool = True,
                 sleep: Callable[[float], None] = time.sleep, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.url = url.rstrip("/")
        self.token_env = token_env
        self.index, self.sourcetype, self.source = index, sourcetype, source
        self.source_types = dict(source_types or {})  # stream -> source type: the default sourcetype
        self.ack, self.ack_timeout = ack, ack_timeout
        self.batch_events, self.batch_bytes, self.gzip = batch_events, batch_bytes, gzip
        self.channel = str(uuid.uuid4())  # one per instance: ackIds count per channel
        self._sleep, self._now = sleep, monotonic
        self._acked: set[int] = set()  # ackIds read true: HEC answers each once, so kept the moment they are
        self._meta: dict[str, bytes] = {}
        self._last_error = ""  # what the last request that got no answer met, for the give-up message
        headers = {"Authorization": f"Splunk {token}", "Content-Type": "application/json",
                   "Accept-Encoding": "identity"}
        if ack:
            headers["X-Splunk-Request-Channel"] = self.channel
        self._client = httpx.Client(
            headers=headers, verify=ssl_context(ca_file=ca_file, verify=tls_verify), follow_redirects=False,
            timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=min(10.0, REQUEST_TIMEOUT)))

    # ---- the Sink protocol ---------------------------------------------------------------------------

    def write_batch(self, source: str, window: Window, batch: int, lines: list[bytes], ids: list[str], *,
                    delivered: set[bytes] | None = None, fence: Fence | None = None,
                    prepared: list[_Request] | None = None) -> Written:
        keep = to_write(ids, delivered)
        if not keep:
            return Written(None, 0, len(lines))
        requests = iter(prepared) if prepared is not None and delivered is None else self._requests(source, lines,
                                                                                                   ids, keep)
        resent = 0
        where: list[str] = []
        for body, picked in requests:
            # Numbers of this request's events in the batch, so a refused event is named by its event id.
            ack_ids, again = self._deliver(body, picked, ids, fence)
            resent += again
            where.append(",".join(map(str, ack_ids)))
        location = f"{self.url}{EVENT_PATH}" + (f" channel {self.channel} ackIds {';'.join(where)}" if self.ack else "")
        return Written(location, len(keep), len(lines) - len(keep), resent=resent)

    def prepare(self, source: str, window: Window, batch: int, lines: list[bytes], ids: list[str]) -> list[_Request]:
        """Every request of a whole batch, built and compressed; nothing is sent. Delivery calls this in its
        read-ahead thread while the previous batch waits on HEC, so building overlaps the indexer's answer."""
        return list(self._requests(source, lines, ids, range(len(lines))))

    def _requests(self, source: str, lines: list[bytes], ids: list[str], keep: Sequence[int]) -> Iterator[_Request]:
        """The requests for the events at ``keep``, each built only when asked for (one body at a time)."""
        meta = self._meta_of(source)
        for part in _chunks([len(lines[k]) for k in keep], len(meta) + 40, self.batch_events, self.batch_bytes):
            picked = [keep[j] for j in part]
            body = _events(meta, [lines[k] for k in picked], [ids[k] for k in picked])
            yield (_gzip(body) if self.gzip else body), picked

    def holds(self, source: str, window: Window) -> bool:
        return False  # HEC cannot be read back

    def delivered_ids(self, source: str, window: Window) -> set[bytes]:
        return set()

    def location(self, source: str) -> str:
        """The collector and the index, source and sourcetype ``source``'s events carry (no token)."""
        return (f"{self.url}{EVENT_PATH} index={self.index or '(the token default)'} "
                f"source={self.source or source} sourcetype={self._sourcetype(source)}")

    def close(self) -> None:
        self._client.close()

    # ---- one request -------------------------------------------------------------------------------

    def _sourcetype(self, source: str) -> str:
        """``sourcetype``, else ``logpull:<source type>`` of the stream (e.g. ``logpull:okta``), else
        ``logpull:json`` for a stream the sink was not told of."""
        if self.sourcetype:
            return self.sourcetype
        kind = self.source_types.get(source)
        return f"logpull:{kind}" if kind else DEFAULT_SOURCETYPE

    def _meta_of(self, source: str) -> bytes:
        """``"source":...,"sourcetype":...[,"index":...]`` for ``source``'s events (written once per stream)."""
        found = self._meta.get(source)
        if found is None:
            fields: dict[str, str] = {"source": self.source or source, "sourcetype": self._sourcetype(source)}
            if self.index:
                fields["index"] = self.index
            found = self._meta[source] = dumps(fields)[1:-1]
        return found

    def _deliver(self, body: bytes, picked: list[int], ids: list[str], fence: Fence | None) -> tuple[list[int], int]:
        """Send one request and wait until HEC confirms it; ``(ackIds, events resent)``."""
        ack_id, resent = self._post(body, picked, ids, fence)
        if not self.ack:
            return [], resent
        pending = [ack_id]
        sends = 1
        sent_at = last_fence = self._now()
        wait = 0.0  # poll at once: a receiver that indexes fast answers true on the first query
        while True:
            deadline = sent_at + self.ack_timeout
            self._sleep(max(0.0, min(wait, deadline - self._now())))
            if self._acks_true(pending):
                return pending, resent
            now = self._now()
            if now >= deadline:  # a last poll at or after the deadline read false: send again
                if sends >= MAX_SENDS:
                    raise HecUnconfirmed(
                        f"HEC at {self.url} did not acknowledge a request of {len(picked)} events (event ids "
                        f"{ids[picked[0]]} .. {ids[picked[-1]]}) within ack_timeout ({self.ack_timeout:g}s) after "
                        f"{sends} sends (ackIds {pending} on channel {self.channel}); the indexers may be down or "
                        f"overloaded, or slower than ack_timeout: check Splunk's indexing queues, or raise "
                        f"ack_timeout. Each send may have been indexed: up to {sends} copies of these events may "
                        f"be in Splunk. The window is retried later")
                ack_id, again = self._post(body, picked, ids, fence)  # fenced right before the send
                last_fence = self._now()
                pending.append(ack_id)
                resent += len(picked) + again
                sends += 1
                sent_at, wait = self._now(), 0.0
                continue
            if fence is not None and now - last_fence >= KEEP_LEASE_EVERY:
                fence()  # renews the lease while HEC indexes; raises LeaseLost if another run took the window
                last_fence = self._now()
            wait = ACK_POLL_FIRST if wait == 0.0 else min(wait * 2, ACK_POLL_MAX)

    def _post(self, body: bytes, picked: list[int], ids: list[str], fence: Fence | None) -> tuple[int, int]:
        """POST the events, backing off while HEC is busy; ``(ackId or -1, events resent)``. ``fence`` is
        called right before every send (the request that makes the events visible)."""
        headers = {"Content-Encoding": "gzip"} if self.gzip else {}
        started = self._now()
        attempt, resent = 0, 0
        while True:
            if fence is not None:
                fence()
            answer, sent = self._request(EVENT_PATH, body, headers)
            if answer is not None and answer.status == 200:
                if not self.ack:
                    return -1, resent
                ack_id = answer.body.get("ackId")
                if not isinstance(ack_id, int):
                    raise HecRefused(self._ack_disabled("answered 200 without an ackId"))
                return ack_id, resent
            if answer is not None and answer.status not in _RETRY_STATUS:
                raise self._refused(answer, picked, ids)
            # Busy (HEC indexed nothing), or an answer lost or failed after HEC may have read the body:
            # those events may be indexed already, so sending them again is a resend.
            if sent and (answer is None or answer.status not in (429, 503)):
                resent += len(picked)
            attempt += 1
            wait = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            if answer is not None and answer.retry_after is not None:
                wait = min(answer.retry_after, RETRY_AFTER_MAX)
            if self._now() + wait - started > BUSY_BUDGET:
                what = (f"HTTP {answer.status}" + (f", code {answer.code} {answer.text!r}" if answer.code is not None
                                                   else "")) if answer is not None else self._last_error
                raise HecError(f"HEC at {self.url} stayed unavailable for {BUSY_BUDGET:g}s ({attempt} attempts; "
                               f"last: {what}); the window is retried later")
            self._sleep(wait)

    def _acks_true(self, pending: list[int]) -> bool:
        """Ask HEC about ``pending``; record every id that reads true at once (HEC answers it only once)."""
        answer, _ = self._request(ACK_PATH, dumps({"acks": pending}), {})
        if answer is None or answer.status in _RETRY_STATUS:
            return False  # keep polling: the ids stay valid at HEC until answered true
        if answer.status != 200:
            if answer.code == 14:
                raise HecRefused(self._ack_disabled("answered the ack query with code 14 'ACK is disabled'"))
            raise self._refused(answer, [], [])
        acks = answer.body.get("acks")
        if not isinstance(acks, dict):
            raise HecError(f"HEC at {self.url} answered the ack query without an acks object: {answer.body!r:.200}")
        for key, value in acks.items():
            if value is True and key.isdigit():
                self._acked.add(int(key))
        return any(i in self._acked for i in pending)

    def _request(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[_Answer | None, bool]:
        """``(answer, sent)``: the answer (None: none came, see ``_last_error``) and whether the body may
        have reached HEC (False only when the connection was never made)."""
        deadline = self._now() + REQUEST_TIMEOUT
        try:
            with self._client.stream("POST", self.url + path, content=body, headers=headers) as r:
                raw = bytearray()
                for chunk in r.iter_raw():
                    raw += chunk
                    if len(raw) > ANSWER_MAX or self._now() > deadline:
                        break  # a trickling or huge answer: what came is enough to say what it is
                answer = _Answer(r.status_code, _json_object(bytes(raw[:ANSWER_MAX])),
                                 parse_retry_after(r.headers.get("retry-after")))
                if 300 <= r.status_code < 400:
                    raise HecRefused(f"{self.url}{path} answered HTTP {r.status_code}, a redirect to "
                                     f"{r.headers.get('location', '?')!r}, which is not followed (the token would "
                                     f"go with it); set url to the collector's own address")
                return answer, True
        except httpx.ConnectError as e:
            if _untrusted(e):
                raise HecRefused(f"the TLS certificate of {self.url} is not trusted ({e}); set ca_file to the PEM "
                                 f"file of the CA that signed it (or tls_verify: false to not check, never in "
                                 f"production)") from None
            self._last_error = f"cannot connect: {type(e).__name__}: {e}"
            return None, False
        except httpx.TransportError as e:  # timeouts, resets, protocol errors: the body may have arrived
            self._last_error = f"{type(e).__name__}: {e}"
            return None, not isinstance(e, httpx.ConnectTimeout | httpx.PoolTimeout)

    # ---- messages ------------------------------------------------------------------------------------

    def _ack_disabled(self, what: str) -> str:
        return (f"HEC at {self.url} {what}: indexer acknowledgement is off for the token in {self.token_env}. "
                f"Either set ack: false on this sink (a 200 then counts as delivered: events the indexer loses "
                f"after answering are not seen), or turn on 'Enable indexer acknowledgement' for the token in "
                f"Splunk (Settings > Data inputs > HTTP Event Collector). Events of this request were accepted "
                f"and are likely indexed: the next attempt may index them again")

    def _refused(self, answer: _Answer, picked: list[int], ids: list[str]) -> HecError:
        hec = f"HTTP {answer.status}" + (f", code {answer.code} {answer.text!r}" if answer.code is not None
                                         else f" {answer.text!r}" if answer.text else "")
        if answer.status in (401, 403):
            return HecRefused(f"HEC at {self.url} refused the token in {self.token_env} ({hec}): check that the "
                              f"variable holds the token's value and that the token exists and is enabled in "
                              f"Splunk (code 1: disabled; 2: no token sent; 3: not 'Splunk <token>'; 4: unknown)")
        if answer.status == 404:
            return HecRefused(f"no HEC at {self.url} ({hec}): url is the collector's base (e.g. "
                              f"https://splunk.example.com:8088, with a proxy's path prefix if any); "
                              f"{EVENT_PATH} is appended. Check also that HEC is enabled (Global Settings)")
        if answer.code == 14:
            return HecRefused(self._ack_disabled("answered code 14 'ACK is disabled'"))
        if answer.code in (10, 11) and not self.ack:
            return HecRefused(f"HEC at {self.url} wants a channel ({hec}): the token in {self.token_env} has "
                              f"indexer acknowledgement on; set ack: true on this sink (it then waits for each "
                              f"batch to be indexed)")
        if answer.code == 7:
            return HecRefused(f"HEC at {self.url} refused the index ({hec}): index {self.index!r} is not among the "
                              f"token's allowed indexes; fix index: or the token's allowed indexes in Splunk")
        event = ""
        number = answer.body.get("invalid-event-number")
        if isinstance(number, int) and 0 <= number < len(picked):
            event = f"; invalid-event-number {number}: event id {ids[picked[number]]!r}"
        if answer.status == 400:
            return HecRefused(f"HEC at {self.url} refused a request of {len(picked)} events ({hec}{event}); "
                              f"nothing of this window is delivered past it until that is mended")
        return HecError(f"HEC at {self.url} answered {hec}{event}")


# ---- encoding ---------------------------------------------------------------------------------------

def _events(meta: bytes, lines: list[bytes], ids: list[str]) -> bytes:
    """HEC events, one per envelope line, written one after the other (one join: no copy per event)."""
    middle = b"," + meta + b',"event":'
    parts: list[bytes] = []
    for line, event_id in zip(lines, ids, strict=True):
        parts += (b'{"time":', _epoch(line, event_id), middle, line, b"}")
    return b"".join(parts)


def _epoch(line: bytes, event_id: str) -> bytes:
    """The envelope's ``event_time`` as epoch seconds with microseconds (HEC's ``time``), exactly.

    The envelope (``deliver.envelope``) has ``event_time`` before ``event``, and a key cannot appear
    unescaped inside a JSON string, so the first ``,"event_time":"`` is the envelope's own."""
    i = line.find(_EVENT_TIME)
    if i != -1:
        i += len(_EVENT_TIME)
        j = line.find(b'"', i)
        if j != -1:
            fast = _epoch_utc(line[i:j])
            if fast is not None:
                return fast
    try:
        value = loads(line).get("event_time")
    except (JSONError, AttributeError):
        value = None
    try:
        us = epoch_us(parse_time(value))
    except (TypeError, ValueError):
        raise HecRefused(f"event {event_id!r}: its record has no event_time HEC's time can be made of "
                         f"({value!r}); it is not an envelope delivery built") from None
    sign, us = ("-" if us < 0 else ""), abs(us)
    return f"{sign}{us // 1_000_000}.{us % 1_000_000:06d}".encode()


_MINUTES: dict[bytes, int] = {}  # "YYYY-MM-DDTHH:MM" -> its epoch second: a window's events share a few


def _epoch_utc(raw: bytes) -> bytes | None:
    """``YYYY-MM-DDTHH:MM:SS[.f{1,6}]Z`` (what the pull writes, nearly always) as HEC's ``time``, with the
    minute's epoch cached (a window's events share a few dozen minutes). None for any other shape, which
    the full parser then takes."""
    minute = _MINUTES.get(raw[:16])
    if minute is None:
        if raw[10:11] != b"T" or not raw[:16].replace(b"-", b"").replace(b"T", b"").replace(b":", b"").isdigit():
            return None
        try:
            minute = int(dt.datetime.fromisoformat(raw[:16].decode("ascii") + "+00:00").timestamp())
        except ValueError:
            return None
        if minute < 0:  # before 1970: the fraction would count the wrong way
            return None
        if len(_MINUTES) > 100_000:  # bounded: a long backfill moves on through the minutes
            _MINUTES.clear()
        _MINUTES[raw[:16]] = minute
    n = len(raw)
    seconds, fraction = raw[17:19], raw[20:-1]
    # bytes.isdigit is ASCII digits only (int() alone would take " 1", "+1" or "1_0")
    if not (raw[16:17] == b":" and raw[-1:] == b"Z" and seconds.isdigit() and seconds < b"60"
            and (n == 20 or (raw[19:20] == b"." and 1 <= len(fraction) <= 6 and fraction.isdigit()))):
        return None  # another shape, or a leap second: the full parser decides
    return b"%d.%s" % (minute + int(seconds), fraction.ljust(6, b"0") if n > 20 else b"000000")


def _chunks(sizes: list[int], overhead: int, max_events: int, max_bytes: int) -> Iterator[range]:
    """Runs of consecutive events, each at most ``max_events`` and ``max_bytes`` (an event larger than
    ``max_bytes`` alone: HEC's own limit per event is 5 MB, and refusing it here would only stall)."""
    start, size = 0, 0
    for k, n in enumerate(sizes):
        n += overhead
        if k > start and (k - start >= max_events or size + n > max_bytes):
            yield range(start, k)
            start, size = k, 0
        size += n
    if start < len(sizes):
        yield range(start, len(sizes))


def _gzip(data: bytes) -> bytes:
    c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def _json_object(raw: bytes) -> dict[str, Any]:
    """HEC's answer as an object; a proxy's page or cut text as ``{"text": <its start>}``."""
    try:
        body = loads(raw)
    except JSONError:
        return {"text": raw[:300].decode("utf-8", "replace").strip()}
    return body if isinstance(body, dict) else {"text": str(body)[:300]}


def _untrusted(e: BaseException) -> bool:
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# ---- config -----------------------------------------------------------------------------------------

class SplunkHecSinkConfig(SinkBase):
    """``{type: splunk_hec, url: ..., token: {env: HEC_TOKEN}}``: Splunk's HTTP Event Collector, each batch
    confirmed by indexer acknowledgement (``ack: false`` to count a 200 as delivered)."""

    type: Literal["splunk_hec"]
    url: BaseUrl  # scheme://host:port and an optional path prefix; /services/collector/event is appended
    token: secret("HEC_TOKEN")  # type: ignore[valid-type]
    index: str | None = None  # default: the token's default index
    sourcetype: str | None = None  # default: logpull:<the stream's source type>, e.g. logpull:okta
    source: str | None = None  # default: the stream's name
    ack: StrictBool = True
    ack_timeout: Duration = dt.timedelta(minutes=5)
    batch_events: int = Field(default=1000, ge=1, le=100_000)
    batch_bytes: int = Field(default=2**20, ge=1024, le=512 * 2**20)
    gzip: StrictBool = True
    ca_file: str | None = None
    tls_verify: StrictBool = True

    kinds: ClassVar[tuple[str, ...]] = ("splunk",)

    @field_validator("ca_file")
    @classmethod
    def _ca_file(cls, value: str | None) -> str | None:
        return check_ca_file(value)

    def problems(self, resolve: Callable[[str], Path]) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        parts = urlsplit(self.url)
        if "/services/collector" in parts.path:
            out.append(("url", f"give the collector's base URL without {parts.path[parts.path.index('/services'):]}"
                               f" (e.g. {parts.scheme}://{parts.netloc}); {EVENT_PATH} is appended"))
        if parts.query or parts.fragment:
            out.append(("url", "must not carry a query or fragment (the token goes in the header, never the URL)"))
        if self.ack_timeout.total_seconds() < 1:
            out.append(("ack_timeout", "must be at least 1s (HEC indexes in about a second); the default is 5m"))
        if self.ca_file is not None:
            if not self.tls_verify:
                out.append(("tls_verify", "false turns certificate checks off, so ca_file would be ignored; keep "
                                          "ca_file and remove tls_verify: false, or remove ca_file"))
            path = resolve(self.ca_file)
            if not path.is_file():
                out.append(("ca_file", f"{path} is not a file; name the PEM file of the CA that signed HEC's "
                                       f"certificate"))
            if parts.scheme != "https":
                out.append(("ca_file", "url is http://, so no certificate is checked; use https:// or remove "
                                       "ca_file"))
        for key in ("index", "sourcetype", "source"):
            value = getattr(self, key)
            if value is not None and not value.strip():
                out.append((key, "must not be empty; leave it out for the default"))
        return out

    def where(self, resolve: Callable[[str], Path]) -> str:
        return f"{self.url}{EVENT_PATH}"


def _open(cfg: SplunkHecSinkConfig, base_dir: Path, *, streams: Mapping[str, str] | None = None) -> SplunkHecSink:
    ca = None
    if cfg.ca_file is not None:
        path = Path(cfg.ca_file).expanduser()
        ca = str(path if path.is_absolute() else (base_dir / path).resolve())
    return SplunkHecSink(
        cfg.url, env_secret(cfg.token.env), token_env=cfg.token.env, index=cfg.index, sourcetype=cfg.sourcetype,
        source=cfg.source, source_types=streams, ack=cfg.ack, ack_timeout=cfg.ack_timeout.total_seconds(),
        batch_events=cfg.batch_events, batch_bytes=cfg.batch_bytes, gzip=cfg.gzip, ca_file=ca,
        tls_verify=cfg.tls_verify)


PLUGINS = [Plugin("siem", "splunk_hec", SplunkHecSinkConfig, _open)]
