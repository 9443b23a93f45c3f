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
  (``attempts``), obeying ``Retry-After`` (seconds, or an HTTP date counted from the answer's ``Date``,
  up to RETRY_AFTER_MAX), otherwise exponential backoff with jitter (stamina). A source whose API
  states its quota differently sets
  ``rate_limit_wait`` (:func:`reset_epoch` for Okta's ``X-Rate-Limit-Reset`` and GitHub's
  ``x-ratelimit-reset``); what such a hook asks for is waited up to ``backoff_max``. No wait ends past
  the caller's deadline: a wait that would is not started, and the last error is raised at once.
* **Keeping its own time**: every :class:`Response` carries the server's clock (``server_time``, from
  ``Date``): the pull loop reads a window only once the API's clock, too, has passed its end.
* **Counting us**: an API's quota per account and minute is kept before it is met: with ``rate`` (a
  :class:`~logpull_dagster.rate.RateGate`, from the source's ``rate_limit``) every request this client
  sends, first tries and retries alike, first takes a slot of the account's budget, shared by every
  run through the checkpoint store, and waits for it. A slot past the caller's deadline raises
  :class:`~logpull_dagster.rate.RateWaitPastDeadline` at once, which the pull loop treats as a spent
  time budget. Requests to an OAuth token URL take no slot (they are another endpoint's quota), nor
  does the resend of a request after a 401 (``auth.py``: once per token, riding on the request's slot).
* **Refusing us**: 401/403 raise :class:`CredentialsRefused` at once (a refused credential does not get
  better in seconds, and a retry storm against an auth endpoint gets accounts locked), unless the
  source's ``rate_limit_wait`` calls a 403 a rate limit (GitHub's primary limit); a redirect is
  never followed (the credentials would go to the redirect's origin) and names its Location; a TLS
  certificate we do not trust fails at once, naming ``ca_file``.
* **Sending us elsewhere**: an API's next link may be an absolute URL (Okta's ``Link``, Graph's
  ``@odata.nextLink``); it is followed only on ``base_url``'s origin (scheme, host, port). Any other
  origin is refused before a request is made, so the credential (``headers`` or ``auth``, see
  ``auth.py``) is only ever sent to ``base_url``'s origin and, by an OAuth ``auth``, to its token URL.

* **Reaching it**: ``proxy`` (an http(s) forward proxy) is httpx's own proxy support; without it the
  environment's ``HTTP(S)_PROXY``/``NO_PROXY``. ``client_cert`` (certificate and key files) is presented
  to a server that asks (mutual TLS); a server that refuses the handshake over it (TLS alert) fails at
  once, naming ``client_cert``/``client_key``: no retry changes what we present.

One client may be shared by threads (windows are read concurrently): the request deadline and
``last_attempts`` are per thread, and httpx's connection pool is thread-safe.

Headers carry credentials: no header, and no exception text that may hold one, is put in an error
message here; what the API says in its errors is passed on and redacted by the caller (``redact.py``).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import random
import ssl
import threading
import time
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import certifi
import httpcore
import httpx
import stamina
import stamina.instrumentation

from logpull_dagster.rate import RateGate
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
    """A status worth retrying. ``retry_after``: the wait the server asked for (None: our backoff);
    ``where``: empty for the API, ``"token endpoint "`` for an OAuth token URL (see ``auth.py``)."""

    def __init__(self, status: int, retry_after: float | None, where: str = "") -> None:
        self.status, self.retry_after, self.where = status, retry_after, where
        super().__init__(f"{where}HTTP {status}" + (f" (wait {retry_after:g}s)" if retry_after is not None else ""))


#: ``(status, headers, now as epoch seconds) -> seconds to wait``, or None for our own backoff. Called
#: for 429, 5xx and 403; on a 403 a number means "rate limited, retry", None means "refused".
RateLimitWait = Callable[[int, httpx.Headers, float], float | None]


def server_date(headers: httpx.Headers) -> float | None:
    """The server's clock when it answered, in epoch seconds: its ``Date`` header (whole seconds,
    truncated, so never ahead of the server's clock); None when absent or not an HTTP date with a zone."""
    value = headers.get("date")
    if not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322's "zone unknown"; an HTTP date is always GMT
        return None
    return when.timestamp()


def retry_after() -> RateLimitWait:
    """The default: ``Retry-After`` of a 429/5xx (delta-seconds or HTTP date); a 403 stays refused.
    An HTTP date is counted from the response's ``Date`` when it has one: both are the server's clock,
    so our clock's skew neither cancels the wait (our clock fast) nor stretches it (slow)."""

    def wait(status: int, headers: httpx.Headers, now: float) -> float | None:
        if status not in RETRY_STATUS:
            return None
        date = server_date(headers)
        return parse_retry_after(headers.get("retry-after"), dt.datetime.fromtimestamp(
            now if date is None else date, dt.UTC))

    return wait


def reset_epoch(header: str, *, remaining: str | None = None) -> RateLimitWait:
    """Wait until the epoch second in ``header`` (Okta ``X-Rate-Limit-Reset``, GitHub ``x-ratelimit-reset``).

    The wait is counted from the response's ``Date`` when it has one: reset and Date are both the
    server's clock, so our clock's skew does not shorten it (``Date`` has whole seconds: the wait
    errs long by under a second). With ``remaining`` (GitHub: ``x-ratelimit-remaining``) it applies
    only when that header is ``0``, and then also to a 403, which is how GitHub answers an exhausted
    primary limit; without it a 403 stays refused (GitHub sends the reset header on every response).

    A reset that is not after the answer's time (``0``, a 1970 epoch, a stale value) is no answer
    (None), as a missing one is: the caller's backoff, never retries 0 s apart at a throttled API.
    """

    def wait(status: int, headers: httpx.Headers, now: float) -> float | None:
        if remaining is not None:
            if (headers.get(remaining) or "").strip() != "0":
                return None
        elif status not in RETRY_STATUS:
            return None
        try:
            reset = float((headers.get(header) or "").strip())
        except ValueError:
            return None
        if not math.isfinite(reset):
            return None
        date = server_date(headers)
        seconds = reset - (now if date is None else date)
        return seconds if seconds > 0 else None

    return wait


def first_of(*hooks: RateLimitWait) -> RateLimitWait:
    """The first hook's answer that is not None (GitHub: ``first_of(retry_after(), reset_epoch(...))``)."""

    def wait(status: int, headers: httpx.Headers, now: float) -> float | None:
        for hook in hooks:
            seconds = hook(status, headers, now)
            if seconds is not None:
                return seconds
        return None

    return wait


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    # Fractions too: Graph sends ``Retry-After: 2.128`` (its throttling doc's sample), RFC 9110 an integer.
    if value.isascii() and value.replace(".", "", 1).isdigit():
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

    @property
    def server_time(self) -> float | None:
        """The API's clock when it answered (epoch seconds, from ``Date``; None without a usable one)."""
        return server_date(self.headers)


# ---- the deadline, under httpcore ------------------------------------------------------------------

class _Deadline(threading.local):
    """The end (time.monotonic) of the request in flight, per thread: threads may share a client, and a
    pooled connection is read by whichever thread's request it carries."""

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


def ssl_context(*, ca_file: str | None = None, verify: bool = True,
                client_cert: tuple[str, str] | None = None) -> ssl.SSLContext:
    """Public CAs (certifi, as httpx uses), plus ``ca_file``'s; or no verification at all (``verify=False``).
    ``client_cert``: (certificate chain, private key) PEM files presented to a server that asks (mutual TLS)."""
    ctx = ssl.create_default_context(cafile=certifi.where())
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    if client_cert is not None:
        load_client_cert(ctx, *client_cert)
    return ctx


def load_client_cert(ctx: ssl.SSLContext, cert: str, key: str) -> None:
    """``ctx.load_cert_chain`` that never prompts: an encrypted key would make OpenSSL ask for its passphrase
    on the terminal (a run has none, a CLI would hang); it fails as an ``ssl.SSLError`` instead."""

    def no_passphrase() -> bytes:
        raise ssl.SSLError(f"the private key {key} is encrypted (a passphrase); decrypt it once: "
                           f"openssl pkey -in key.pem -out plain.pem")

    ctx.load_cert_chain(cert, key, password=no_passphrase)


def _transport(base_url: str, ctx: ssl.SSLContext, deadline: _Deadline, *, proxy: str | None = None,
               proxy_ctx: ssl.SSLContext | None = None) -> httpx.HTTPTransport:
    """httpx's own transport (its proxy support included: ``proxy``, else the environment's HTTP(S)_PROXY
    unless NO_PROXY names the host), given the deadline-aware network backend. httpx offers no public hook
    for the backend, so it is set on the pool httpx built (httpx is pinned below 0.29, and test_hostile_api
    and test_proxy_mtls prove it). ``proxy_ctx``: the TLS trust for an https:// proxy itself (the API's
    CAs, without the client certificate, which is the API's)."""
    parts = urlsplit(base_url)
    if proxy is None and not urllib.request.proxy_bypass_environment(parts.hostname or ""):
        proxy = urllib.request.getproxies_environment().get(parts.scheme)
    transport = httpx.HTTPTransport(
        verify=ctx, trust_env=False,
        # httpcore refuses a TLS context for an http:// proxy (no TLS to it): only an https:// one gets it.
        proxy=httpx.Proxy(proxy, ssl_context=proxy_ctx if proxy.lower().startswith("https:") else None)
        if proxy else None,
    )
    pool = transport._pool
    assert isinstance(pool, httpcore.ConnectionPool)  # HTTPProxy is one; the backend is its connections'
    pool._network_backend = _DeadlineBackend(deadline)
    return transport


# ---- the client ------------------------------------------------------------------------------------

class RetryingClient:
    """GETs against one API origin (``base_url``); see the module docstring for what it guards against.

    ``headers`` are sent with every request; ``auth`` (an ``httpx.Auth``, usually one of ``auth.py``)
    adds the credential, and is driven by httpx (an OAuth token is fetched and refreshed inside it).
    ``rate_limit_wait`` computes the wait of a throttled answer; left None, ``Retry-After`` is obeyed
    up to RETRY_AFTER_MAX even past ``backoff_max`` (the Google source relies on it), while the waits of
    a hook the source sets are obeyed up to ``backoff_max``. ``rate``: the account's request budget
    (see the module docstring), drawn from before every request.
    """

    def __init__(self, base_url: str, headers: Mapping[str, str] | None = None, *, timeout: float, attempts: int,
                 backoff_initial: float = 0.5, backoff_max: float = 60.0, max_bytes: int = DEFAULT_MAX_BYTES,
                 credential: str = "the API credential", ca_file: str | None = None,
                 tls_verify: bool = True, client_cert: tuple[str, str] | None = None, proxy: str | None = None,
                 auth: httpx.Auth | None = None,
                 rate_limit_wait: RateLimitWait | None = None, rate: RateGate | None = None) -> None:
        self.attempts, self.backoff_initial, self.backoff_max = attempts, backoff_initial, backoff_max
        self.timeout, self.max_bytes, self.credential = timeout, max_bytes, credential
        self.origin = origin(base_url)
        self._origin_key = _origin_key(httpx.URL(base_url))
        self.auth = auth
        self.rate = rate
        self._rate_limit_wait = rate_limit_wait or retry_after()
        self._wait_max = backoff_max if rate_limit_wait is not None else RETRY_AFTER_MAX
        self._local = threading.local()
        self._deadline = _Deadline()
        self.proxy = origin(proxy) if proxy else None  # for messages: the origin only
        tls = ssl_context(ca_file=ca_file, verify=tls_verify, client_cert=client_cert)
        proxy_tls = ssl_context(ca_file=ca_file, verify=tls_verify) if proxy else None
        self._client = httpx.Client(
            base_url=base_url, headers={**(headers or {}), "Accept-Encoding": "gzip"}, timeout=timeout,
            transport=_transport(base_url, tls, self._deadline, proxy=proxy, proxy_ctx=proxy_tls),
            follow_redirects=False, trust_env=False, auth=auth,
        )

    @property
    def last_attempts(self) -> int:
        """Requests this thread's last get() sent (fewer than attempts when its deadline came first)."""
        return int(getattr(self._local, "attempts", 0))

    def close(self) -> None:
        self._client.close()

    def get(self, path: str, params: Mapping[str, str | int] | None = None, *,
            deadline: float | None = None) -> Response:
        """GET ``path`` (a path under ``base_url``, or an absolute URL on its origin, e.g. an API's next
        link, followed as given) with retries, each request within ``timeout``, no retry started or
        waited for past ``deadline`` (time.monotonic), if given. ``params`` are added to the URL's own
        query, except those it already has (a next link carries the query the API wants repeated).
        Raises RetryableStatus or httpx.TransportError once attempts or time run out, CredentialsRefused,
        SourceRequestError (another origin, redirect, untrusted TLS, a request that cannot be sent),
        BadPage (body too large, unknown encoding) or RateWaitPastDeadline (the rate budget's next slot
        lies past ``deadline``); returns any other status."""
        url, query = self._target(path, params or {})
        reasons: list[str] = []
        total = None if deadline is None else max(0.0, deadline - time.monotonic())
        num = 0

        def backoff(exc: Exception) -> bool | float:
            if isinstance(exc, RetryableStatus):
                wait = exc.retry_after
            elif isinstance(exc, httpx.TransportError):
                wait = None
            else:
                return False
            if wait is None:  # stamina's exponential backoff, computed here so that the deadline can see it
                wait = min(self.backoff_max,
                           self.backoff_initial * 2 ** (num - 1) + random.uniform(0, self.backoff_initial))
            wait = min(wait, self._wait_max)
            if deadline is not None and time.monotonic() + wait >= deadline:
                return False  # the wait would end past the caller's budget: fail now, the caller resumes later
            return wait

        # A deadline already past: stamina's timeout=0 would only warn; backoff() refuses every retry then.
        for attempt in stamina.retry_context(
            on=backoff, attempts=self.attempts, timeout=total or None,
            wait_initial=self.backoff_initial, wait_max=self.backoff_max, wait_jitter=self.backoff_initial,
        ):
            with attempt:
                num = self._local.attempts = attempt.num
                if self.rate is not None:  # before the request's own deadline starts: waiting is not its time
                    self.rate.wait(deadline)
                now = time.monotonic()
                self._deadline.seconds = self.timeout
                self._deadline.at = now + self.timeout
                try:
                    status, headers, body, resent = self._once(url, query)
                    if status in RETRY_STATUS or status == 403:
                        wait = _finite(self._rate_limit_wait(status, headers, time.time()))
                        if status in RETRY_STATUS or wait is not None:
                            raise RetryableStatus(status, wait)
                except (RetryableStatus, httpx.TransportError) as e:
                    reasons.append(describe(e))
                    self._refuse_for_good(e)
                    raise
                finally:
                    self._deadline.at = float("inf")
                if status in (401, 403):
                    again = ", also with a freshly fetched token" if resent else ""
                    raise CredentialsRefused(f"credentials refused (HTTP {status}{again}): check {self.credential}",
                                             status=status, api_message=body)
                return Response(status, headers, body, attempt.num - 1, reasons)
        raise AssertionError("unreachable: stamina re-raises the last error")

    def _target(self, path: str, params: Mapping[str, str | int]) -> tuple[str, dict[str, str | int] | None]:
        """The URL to request and the params for httpx; refuses an absolute URL on another origin.
        Messages name origins only: a next link's query may hold a token."""
        parts = urlsplit(path)
        if parts.scheme or parts.netloc:
            if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
                raise SourceRequestError(
                    f"the API gave a URL that is neither a path nor an absolute http(s) URL (scheme "
                    f"{parts.scheme!r}); it was not requested, so credentials go only to {self.origin}")
            try:
                url = httpx.URL(path)
            except httpx.InvalidURL:
                raise SourceRequestError(
                    f"the API gave a URL that cannot be parsed; it was not requested (origin {self.origin})") from None
            key = _origin_key(url)
            if key != self._origin_key or url.userinfo:
                theirs = _show_origin(key) + (" (with user info)" if url.userinfo else "")
                raise SourceRequestError(
                    f"the API gave a URL on {theirs}, not on base_url's origin {_show_origin(self._origin_key)}; "
                    f"it was not requested, so credentials go only to base_url's origin")
        if not parts.query:
            return path, dict(params)
        if not params:
            return path, None  # httpx's params= would replace the URL's own query: follow it byte for byte
        present = {k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
        extra = {k: v for k, v in params.items() if k not in present}
        if extra:
            parts = parts._replace(query=f"{parts.query}&{urlencode(extra)}")
        return urlunsplit(parts), None

    def _once(self, url: str, params: Mapping[str, str | int] | None) -> tuple[int, httpx.Headers, bytes, bool]:
        """Status, headers, body, and whether ``auth`` sent the request again after a 401."""
        with self._client.stream("GET", url, params=None if params is None else dict(params)) as r:
            status, headers = r.status_code, r.headers
            resent = any(h.status_code == 401 for h in r.history)
            if status in RETRY_STATUS:
                return status, headers, b"", resent
            if 300 <= status < 400:
                raise SourceRequestError(
                    f"the API answered HTTP {status} redirecting to {headers.get('location', '(no Location)')!r}; "
                    f"redirects are not followed, so credentials go only to {self.origin} (check base_url)")
            body = read_body(r, self.max_bytes if status == 200 else ERROR_BODY_MAX, truncate=status != 200)
        return status, headers, body, resent

    def _refuse_for_good(self, exc: Exception) -> None:
        """Transport errors that no retry can fix fail at once (and without their text, which may hold a header)."""
        if isinstance(exc, httpx.LocalProtocolError):
            raise SourceRequestError(
                "the request could not be sent (httpx.LocalProtocolError: a header value is not valid, "
                f"check {self.credential})") from None
        cert = _cause(exc, ssl.SSLCertVerificationError)
        if cert is not None:
            raise SourceRequestError(
                f"the TLS certificate of {_request_origin(exc) or self.origin} is not trusted "
                f"({cert.verify_message}); if the API is served under a private CA, name its certificate "
                f"with ca_file") from None
        alert = _cause(exc, ssl.SSLError)
        reason = str(getattr(alert, "reason", "") or "").upper()
        if alert is not None and any(word in reason for word in _CLIENT_CERT_ALERTS):
            # The server refused the handshake over our client certificate (none, or one it does not trust):
            # no retry changes the certificate we present.
            raise SourceRequestError(
                f"the TLS server {_request_origin(exc) or self.origin} refused the handshake ({reason}); if it "
                f"asks for a client certificate (mutual TLS), set client_cert and client_key to a certificate "
                f"it trusts and its key") from None


# TLS alerts a server sends when it wants a client certificate (TLS 1.3's certificate_required; TLS 1.2
# servers send handshake_failure or bad_certificate) or does not trust the one it got (unknown_ca...).
_CLIENT_CERT_ALERTS = ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_UNKNOWN",
                       "HANDSHAKE_FAILURE")


def read_body(r: httpx.Response, limit: int, *, truncate: bool) -> bytes:
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


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what a message may name of it (a query may hold a secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(url: httpx.URL) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port filled in: ``https://h`` and ``https://h:443`` are one origin."""
    return url.scheme, url.host, url.port or _DEFAULT_PORTS.get(url.scheme)


def _show_origin(key: tuple[str, str, int | None]) -> str:
    scheme, host, port = key
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}" + ("" if port == _DEFAULT_PORTS.get(scheme) else f":{port}")


def _request_origin(exc: Exception) -> str | None:
    """The origin of the request an httpx error is about (the API's, or an OAuth token URL's)."""
    try:
        request = exc.request if isinstance(exc, httpx.RequestError) else None
    except RuntimeError:  # httpx raises when the error was not given its request
        return None
    return None if request is None else _show_origin(_origin_key(request.url))


def _finite(seconds: float | None) -> float | None:
    """A hook's answer as a wait we can sleep: negative is now, infinite is the cap, NaN is no answer."""
    if seconds is None or math.isnan(seconds):
        return None
    return max(0.0, seconds)


def describe(exc: Exception) -> str:
    """A short, secret-free reason: ``HTTP 503``, ``token endpoint HTTP 503``, ``ReadTimeout``."""
    if isinstance(exc, RetryableStatus):
        return f"{exc.where}HTTP {exc.status}"
    return type(exc).__name__
