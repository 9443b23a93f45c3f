"""The HTTP client every source shares: bounded in seconds and bytes, retried with backoff, never leaking.

What an API (or anything between us and it) may do, and what this client does about it:

* **Slow or hung**: every request has one *total* deadline, connect + TLS + headers + body
  (``timeout``). httpx times each socket read, so a server trickling a byte a second would hold a
  request for ever; here each socket operation gets only what is left of the deadline (a small
  network backend under httpcore). A caller with a time budget passes its end: no retry starts, and
  no backoff waits, past it, so an attempt ends within its budget plus one request deadline (the
  request in flight at the budget's end may finish: its page is then not read twice).
* **Huge or compressed into a bomb**: the body is read raw and decoded here, ``gzip``/``deflate``
  streamed with ``max_length``, so no response ever decodes to more than ``max_bytes``
  (``max_page_bytes``); an encoding we did not ask for is refused.
* **Throttled or failing**: 429, 500, 502, 503, 504, dropped connections and timeouts are retried
  (``attempts``), obeying ``Retry-After`` (seconds or an HTTP date, up to RETRY_AFTER_MAX), otherwise
  exponential backoff with jitter (stamina); never past the caller's deadline.
* **Refusing us**: 401/403 raise :class:`CredentialsRefused` at once (a refused credential does not get
  better in seconds, and a retry storm against an auth endpoint gets accounts locked); a redirect is
  never followed (the credentials would go to the redirect's origin) and names its Location; a TLS
  certificate we do not trust fails at once, naming ``ca_file``.

Headers carry credentials: no header, and no exception text that may hold one, is put in an error
message here; what the API says in its errors is passed on and redacted by the caller (``redact.py``).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ssl
import time
import urllib.request
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import certifi
import httpcore
import httpx
import stamina
import stamina.instrumentation

from logpull_dagster.sources import BadPage, CredentialsRefused, SourceRequestError

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# A server's Retry-After is obeyed even beyond our own backoff cap (it knows its quota window), but
# not without bound: past this, a stuck window is better failed and re-requested than silently parked.
RETRY_AFTER_MAX = 300.0
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# Of an error response only the start is read: enough for the API's message.
ERROR_BODY_MAX = 64 * 1024
_CHUNK = 64 * 1024

# stamina's default hook logs every scheduled retry with the exception's repr; an httpx exception can
# hold a request header (the credential). We record retries ourselves (``Response.reasons``, secret-free).
stamina.instrumentation.set_on_retry_hooks([])


class RetryableStatus(Exception):
    def __init__(self, status: int, retry_after: float | None) -> None:
        self.status, self.retry_after = status, retry_after
        super().__init__(f"HTTP {status}" + (f" (Retry-After {retry_after:g}s)" if retry_after is not None else ""))


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass
class Response:
    status: int
    headers: httpx.Headers
    content: bytes
    retries: int
    reasons: list[str]

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


# ---- the deadline, under httpcore ------------------------------------------------------------------

class _Deadline:
    """The end (time.monotonic) of the request in flight; one request at a time per client."""

    def __init__(self) -> None:
        self.at = float("inf")
        self.seconds = 0.0

    def left(self, timeout: float | None, exc: type[Exception]) -> float:
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise exc(f"request deadline of {self.seconds:g}s passed")
        return remaining if timeout is None else min(timeout, remaining)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner, self._deadline = inner, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        inner = self._inner.start_tls(ssl_context, server_hostname,
                                      self._deadline.left(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, deadline: _Deadline) -> None:
        self._inner, self._deadline = httpcore.SyncBackend(), deadline

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, self._deadline.left(timeout, httpcore.ConnectTimeout),
                                         local_address, socket_options)
        return _DeadlineStream(stream, self._deadline)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(path, self._deadline.left(timeout, httpcore.ConnectTimeout),
                                                 socket_options)
        return _DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def ssl_context(*, ca_file: str | None = None, verify: bool = True) -> ssl.SSLContext:
    """Public CAs (certifi, as httpx uses), plus ``ca_file``'s; or no verification at all (``verify=False``)."""
    ctx = ssl.create_default_context(cafile=certifi.where())
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    return ctx


def _transport(base_url: str, ctx: ssl.SSLContext, deadline: _Deadline) -> httpx.HTTPTransport:
    """httpx's transport over a deadline-aware httpcore pool (httpx offers no public hook for the
    network backend: the pool is swapped in; httpx is pinned below 0.29, and test_hostile_api proves it)."""
    transport = httpx.HTTPTransport(verify=ctx)
    backend = _DeadlineBackend(deadline)
    parts = urlsplit(base_url)
    proxy = None
    if not urllib.request.proxy_bypass_environment(parts.hostname or ""):
        proxy = urllib.request.getproxies_environment().get(parts.scheme)
    if proxy:
        transport._pool = httpcore.HTTPProxy(proxy_url=proxy, ssl_context=ctx, network_backend=backend)
    else:
        transport._pool = httpcore.ConnectionPool(ssl_context=ctx, network_backend=backend)
    return transport


# ---- the client ------------------------------------------------------------------------------------

class RetryingClient:
    def __init__(self, base_url: str, headers: Mapping[str, str], *, timeout: float, attempts: int,
                 backoff_initial: float = 0.5, backoff_max: float = 60.0, max_bytes: int = DEFAULT_MAX_BYTES,
                 credential: str = "the API credential", ca_file: str | None = None,
                 tls_verify: bool = True) -> None:
        self.attempts, self.backoff_initial, self.backoff_max = attempts, backoff_initial, backoff_max
        self.timeout, self.max_bytes, self.credential = timeout, max_bytes, credential
        self.origin = _origin(base_url)
        self.last_attempts = 0  # requests the last get() sent (fewer than attempts when its deadline came first)
        self._deadline = _Deadline()
        self._client = httpx.Client(
            base_url=base_url, headers={**headers, "Accept-Encoding": "gzip"}, timeout=timeout,
            transport=_transport(base_url, ssl_context(ca_file=ca_file, verify=tls_verify), self._deadline),
            follow_redirects=False, trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def _backoff(self, exc: Exception) -> bool | float:
        if isinstance(exc, RetryableStatus):
            if exc.retry_after is not None:
                return min(exc.retry_after, RETRY_AFTER_MAX)
            return True
        return isinstance(exc, httpx.TransportError)

    def get(self, path: str, params: Mapping[str, str | int], *, deadline: float | None = None) -> Response:
        """GET with retries, each request within ``timeout``, no retry started or waited for past
        ``deadline`` (time.monotonic), if given. Raises RetryableStatus or httpx.TransportError once attempts or
        time run out, CredentialsRefused, SourceRequestError (redirect, untrusted TLS, a request that
        cannot be sent) or BadPage (body too large, unknown encoding); returns any other status."""
        reasons: list[str] = []
        total = None if deadline is None else max(0.0, deadline - time.monotonic())
        for attempt in stamina.retry_context(
            on=self._backoff, attempts=self.attempts, timeout=total,
            wait_initial=self.backoff_initial, wait_max=self.backoff_max, wait_jitter=self.backoff_initial,
        ):
            with attempt:
                self.last_attempts = attempt.num
                now = time.monotonic()
                self._deadline.seconds = self.timeout
                self._deadline.at = now + self.timeout
                try:
                    status, headers, body = self._once(path, params)
                    if status in RETRY_STATUS:
                        raise RetryableStatus(status, parse_retry_after(headers.get("retry-after")))
                except (RetryableStatus, httpx.TransportError) as e:
                    reasons.append(describe(e))
                    self._refuse_for_good(e)
                    raise
                finally:
                    self._deadline.at = float("inf")
                return Response(status, headers, body, attempt.num - 1, reasons)
        raise AssertionError("unreachable: stamina re-raises the last error")

    def _once(self, path: str, params: Mapping[str, str | int]) -> tuple[int, httpx.Headers, bytes]:
        with self._client.stream("GET", path, params=dict(params)) as r:
            status, headers = r.status_code, r.headers
            if status in RETRY_STATUS:
                return status, headers, b""
            if 300 <= status < 400:
                raise SourceRequestError(
                    f"the API answered HTTP {status} redirecting to {headers.get('location', '(no Location)')!r}; "
                    f"redirects are not followed, so credentials go only to {self.origin} (check base_url)")
            body = _read_body(r, self.max_bytes if status == 200 else ERROR_BODY_MAX, truncate=status != 200)
        if status in (401, 403):
            raise CredentialsRefused(f"credentials refused (HTTP {status}): check {self.credential}",
                                     status=status, api_message=body)
        return status, headers, body

    def _refuse_for_good(self, exc: Exception) -> None:
        """Transport errors that no retry can fix fail at once (and without their text, which may hold a header)."""
        if isinstance(exc, httpx.LocalProtocolError):
            raise SourceRequestError(
                "the request could not be sent (httpx.LocalProtocolError: a header value is not valid, "
                f"check {self.credential})") from None
        cert = _cause(exc, ssl.SSLCertVerificationError)
        if cert is not None:
            raise SourceRequestError(
                f"the TLS certificate of {self.origin} is not trusted ({cert.verify_message}); if the API is "
                f"served under a private CA, name its certificate with ca_file") from None


def _read_body(r: httpx.Response, limit: int, *, truncate: bool) -> bytes:
    """The decoded body, at most ``limit`` bytes: more raises BadPage (or, with ``truncate``, is cut)."""
    encoding = r.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        decoder = None
    elif encoding in ("gzip", "x-gzip"):
        decoder = zlib.decompressobj(wbits=31)
    elif encoding == "deflate":
        decoder = zlib.decompressobj(wbits=15)
    else:
        raise BadPage(f"the response is encoded as {encoding!r}, which was not asked for (Accept-Encoding: gzip)")
    if decoder is None and not truncate and int(r.headers.get("content-length") or 0) > limit:
        raise BadPage(_too_large(limit, f"Content-Length {r.headers['content-length']}"))
    out = bytearray()
    for raw in r.iter_raw(_CHUNK):
        chunks = [raw] if decoder is None else _inflate(decoder, raw, limit + 1 - len(out))
        for chunk in chunks:
            out += chunk
            if len(out) > limit:
                if truncate:
                    return bytes(out[:limit])
                raise BadPage(_too_large(limit, "decoded" if decoder is not None else "read"))
    if decoder is not None and not decoder.eof and not truncate:
        raise BadPage(f"the {encoding} body ended before its end-of-stream marker (truncated response)")
    return bytes(out)


def _inflate(decoder: Any, data: bytes, room: int) -> list[bytes]:
    """Decompress ``data`` producing at most ``room`` bytes (+ one), whatever its ratio."""
    out: list[bytes] = []
    try:
        while data and room > 0:
            chunk = decoder.decompress(data, room)
            out.append(chunk)
            room -= len(chunk)
            data = decoder.unconsumed_tail
    except zlib.error as e:
        raise BadPage(f"the compressed body is corrupt ({e})") from None
    if data:  # no room left but input remains: the caller sees more than the limit
        out.append(b"\0")
    return out


def _too_large(limit: int, what: str) -> str:
    return (f"the response is larger than max_page_bytes ({limit:,} bytes; {what}); nothing of it was kept. "
            f"Lower page_size, or raise max_page_bytes if the API really sends pages this big")


def _cause(exc: BaseException, kind: type[BaseException]) -> Any:
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, kind):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def describe(exc: Exception) -> str:
    """A short, secret-free reason: ``HTTP 503``, ``ReadTimeout``, ``RemoteProtocolError``."""
    if isinstance(exc, RetryableStatus):
        return f"HTTP {exc.status}"
    return type(exc).__name__
