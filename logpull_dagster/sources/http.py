"""The HTTP client every source shares: keep-alive, bounded retries with backoff and jitter.

Retried: 429, 500, 502, 503, 504, dropped connections and timeouts. ``Retry-After`` (seconds or an
HTTP date) is honoured when sent (up to RETRY_AFTER_MAX); otherwise exponential backoff with
jitter (stamina). Anything else is returned to the source to interpret. Headers (which carry the
credentials) never appear in an error message.
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import stamina

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
# A server's Retry-After is obeyed even beyond our own backoff cap (it knows its quota window), but
# not without bound: past this, a stuck window is better failed and re-requested than silently parked.
RETRY_AFTER_MAX = 300.0


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
    response: httpx.Response
    retries: int
    reasons: list[str]


class RetryingClient:
    def __init__(self, base_url: str, headers: Mapping[str, str], *, timeout: float, attempts: int,
                 backoff_initial: float = 0.5, backoff_max: float = 60.0) -> None:
        self.attempts, self.backoff_initial, self.backoff_max = attempts, backoff_initial, backoff_max
        self._client = httpx.Client(base_url=base_url, headers=dict(headers), timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def _backoff(self, exc: Exception) -> bool | float:
        if isinstance(exc, RetryableStatus):
            if exc.retry_after is not None:
                return min(exc.retry_after, RETRY_AFTER_MAX)
            return True
        return isinstance(exc, httpx.TransportError)

    def get(self, path: str, params: Mapping[str, str | int]) -> Response:
        """GET with retries. Raises RetryableStatus or httpx.TransportError once attempts run out."""
        reasons: list[str] = []
        for attempt in stamina.retry_context(
            on=self._backoff, attempts=self.attempts, timeout=None,
            wait_initial=self.backoff_initial, wait_max=self.backoff_max, wait_jitter=self.backoff_initial,
        ):
            with attempt:
                try:
                    r = self._client.get(path, params=dict(params))
                    if r.status_code in RETRY_STATUS:
                        raise RetryableStatus(r.status_code, parse_retry_after(r.headers.get("retry-after")))
                except (RetryableStatus, httpx.TransportError) as e:
                    reasons.append(describe(e))
                    raise
                return Response(r, attempt.num - 1, reasons)
        raise AssertionError("unreachable: stamina re-raises the last error")


def describe(exc: Exception) -> str:
    """A short, secret-free reason: ``HTTP 503``, ``ReadTimeout``, ``RemoteProtocolError``."""
    if isinstance(exc, RetryableStatus):
        return f"HTTP {exc.status}"
    return type(exc).__name__
