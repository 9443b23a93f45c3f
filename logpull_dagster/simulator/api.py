"""The contract between the shared server and one emulated API, and the reply they pass between them.

Why a contract: the server, the fault switch and the event generator are the same for every SaaS audit
log the project reads; what differs is the URL, the query parameters, the cursor, the page and error
shapes and a few quirks. Those live in one module per API (``google_reports.py``), as a subclass of
``EmulatedApi``, listed once in ``registry.py``. The server owns everything around a request (request
log, clock, latency, auth order, fault rules); the API only answers the questions below.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, ClassVar

from .data import Bucket, EventStore


class SimulatorError(ValueError):
    """A control call (rules, clock, latency) with invalid arguments."""


class BadRequest(Exception):
    """Raised inside an API's page building; the API turns it into its own 400 reply."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Reply:
    """What the handler writes. ``parts`` (with ``length`` bytes in all) streams a body too big to hold;
    ``trickle`` = (delay, bytes per write) slows the whole response, status line included."""

    status: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json; charset=UTF-8"
    items: int = 0
    parts: Iterable[bytes] | None = None
    length: int = 0
    trickle: tuple[float, int] | None = None


DROP = object()  # sentinel reply: close the connection without answering


@dataclass(frozen=True)
class ApiRequest:
    """One request routed to an API; ``params`` are what ``EmulatedApi.match`` captured from the path."""

    method: str
    path: str
    params: Mapping[str, str]
    query: Mapping[str, str]
    headers: Message
    body: bytes = b""

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")


@dataclass(frozen=True)
class ApiContext:
    """What the server shares with every API it hosts. ``settings`` carries the constructor options only
    some APIs understand (``customer_id`` for Google), so the server need not know which API wants what."""

    seed: int
    token: str | None
    store: EventStore
    now_us: Callable[[], int]
    settings: Mapping[str, Any] = field(default_factory=dict)


def json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# Google's error envelope (AIP-193) is also the simulator's own: its control endpoints and unknown paths
# answer in it, so one parser serves every error a test may meet.
_STATUS_TEXT = {
    400: ("INVALID_ARGUMENT", "invalid", "global"),
    401: ("UNAUTHENTICATED", "required", "global"),
    403: ("PERMISSION_DENIED", "forbidden", "global"),
    404: ("NOT_FOUND", "notFound", "global"),
    405: ("METHOD_NOT_ALLOWED", "methodNotAllowed", "global"),
    429: ("RESOURCE_EXHAUSTED", "rateLimitExceeded", "usageLimits"),
    500: ("INTERNAL", "backendError", "global"),
    502: ("UNAVAILABLE", "badGateway", "global"),
    503: ("UNAVAILABLE", "backendError", "global"),
    504: ("DEADLINE_EXCEEDED", "deadlineExceeded", "global"),
}


def json_error(status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
    """A Google-style JSON error body, the shape ``googleapiclient`` and real clients parse."""
    grpc_status, reason, domain = _STATUS_TEXT.get(status, ("UNKNOWN", "unknown", "global"))
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
            "status": grpc_status,
        }
    }
    return Reply(status, json_bytes(body), headers or [])


def seconds_text(seconds: float) -> str:
    """Retry-After value: delta-seconds as an integer when whole (RFC 9110), else a plain decimal."""
    return str(int(seconds)) if float(seconds).is_integer() else str(float(seconds))


class EmulatedApi(ABC):
    """One emulated API: which paths are its, how it reads a request, and how it shapes every answer.

    The server calls, per request: ``match`` (routing), ``log_fields`` (request log), ``has_cursor``
    (for rules with ``match: token|first``), ``check_auth``, then either ``page`` or, when a fault rule
    fires, the hook for that fault kind (``rate_limited``, ``server_error``, ``invalid_cursor``,
    ``malformed``, ``stuck_page``, or ``page`` with ``damage``/``repeat_cursor``). ``item``/``event_id``
    render the shared ground truth in this API's shape. The defaults below are plain HTTP behaviour;
    an API overrides those its real counterpart does differently.
    """

    #: Registry name, used by ``Simulator.ground_truth(api=...)``.
    name: ClassVar[str]
    #: Methods the API answers; any other gets ``error(405, ...)``.
    methods: ClassVar[frozenset[str]] = frozenset({"GET"})
    #: ``Authorization`` scheme ``check_auth`` expects before the shared token, and its 401's message.
    auth_scheme: ClassVar[str] = "Bearer"
    auth_message: ClassVar[str] = "Missing or invalid credentials."
    #: Start of the padded JSON object gzip_bomb and big_body serve (``"`` + ``}`` close it).
    pad_prefix: ClassVar[bytes] = b'{"pad":"'
    #: Messages of the throttle and server-error faults, by status.
    fault_messages: ClassVar[Mapping[int, str]] = {
        429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
        503: "Service Unavailable", 504: "Gateway Timeout",
    }

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    # -- routing and reading a request --------------------------------------------------------------

    @abstractmethod
    def match(self, path: str) -> Mapping[str, str] | None:
        """The path parameters when ``path`` is this API's, else None (the server asks the next API)."""

    @abstractmethod
    def has_cursor(self, request: ApiRequest) -> bool:
        """Whether the request continues a listing (carries a page token or cursor)."""

    def log_fields(self, request: ApiRequest) -> dict[str, Any]:
        """The request-log columns of this API, between the server's ``n, t, in_flight`` and its
        ``status, fault, items``."""
        return {"path": request.path}

    # -- answers ------------------------------------------------------------------------------------

    @abstractmethod
    def page(self, request: ApiRequest, *, damage: str | None = None, repeat_cursor: bool | str = False) -> Reply:
        """The normal answer, or the API's 400 for a bad query. ``damage`` (no_id or a splice kind, see
        ``faults.damage_item``) spoils its middle item; ``repeat_cursor`` makes its next cursor the one
        sent (a fresh one leading back to page one when none was), even on the last page; ``"varying"``:
        the same, with a parameter changing on every answer where the cursor is a URL (others repeat it as is)."""

    @abstractmethod
    def stuck_page(self, request: ApiRequest) -> Reply:
        """A page without items whose next cursor is the one sent (or a fresh one leading back to page one)."""

    def error(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
        """This API's error body."""
        return json_error(status, message, headers)

    def check_auth(self, request: ApiRequest) -> Reply | None:
        """None when the request carries ``<auth_scheme> <token>`` (or no token is required), else the
        API's 401."""
        if self.ctx.token is None:
            return None
        scheme, _, value = (request.authorization or "").partition(" ")
        if scheme.lower() == self.auth_scheme.lower() and value.strip() == self.ctx.token:
            return None
        return self.error(401, self.auth_message)

    def rate_limited(self, retry_after: float | None) -> Reply:
        """The 429 of the throttle faults; ``retry_after`` None means no hint at all."""
        headers = [] if retry_after is None else [("Retry-After", seconds_text(retry_after))]
        return self.error(429, self.fault_messages[429], headers)

    def server_error(self, status: int, retry_after: float | None) -> Reply:
        """The 5xx of the server-error faults (500, 502, 503, 504)."""
        headers = [] if retry_after is None else [("Retry-After", seconds_text(retry_after))]
        return self.error(status, self.fault_messages[status], headers)

    def invalid_cursor(self, request: ApiRequest) -> Reply:
        """The answer to a cursor the API no longer accepts (reject_token)."""
        return self.error(400, "Invalid cursor")

    def malformed(self, request: ApiRequest) -> Reply:
        """A 200 whose list of events is not a list."""
        return Reply(200, b'{"items":"oops"}')

    # -- ground truth -------------------------------------------------------------------------------

    @abstractmethod
    def item(self, stream: str, bucket: Bucket, i: int) -> dict[str, Any]:
        """Event ``i`` of ``bucket`` as this API serves it: a fresh dict each time, so callers may mutate it."""

    @abstractmethod
    def event_id(self, stream: str, bucket: Bucket, i: int) -> tuple[str, ...]:
        """The id a client of this API dedupes on."""


#: How the server builds an API: the API class itself, or any callable of the same shape.
ApiFactory = Callable[[ApiContext], EmulatedApi]


class SignedCursor:
    """The opaque page cursors an emulated API hands out: a position in its event order (time ms, tie
    breaker) bound to one query by the query's hash and signed, so a client can only send back a cursor
    it was given for that query. ``invalid``: the API's own message for anything else."""

    _STRUCT = struct.Struct(">B8sqq")  # version, query hash, cursor time ms, cursor tie breaker
    _MAC_BYTES = 6

    def __init__(self, key: bytes, invalid: str) -> None:
        self._key, self._invalid = key, invalid

    def encode(self, qhash: bytes, position: tuple[int, int]) -> str:
        payload = self._STRUCT.pack(1, qhash, position[0], position[1])
        mac = hashlib.blake2b(payload, key=self._key, digest_size=self._MAC_BYTES).digest()
        return base64.urlsafe_b64encode(payload + mac).decode().rstrip("=")

    def decode(self, token: str, qhash: bytes) -> tuple[int, int]:
        """The position of ``token``, or BadRequest when it is garbage or belongs to another query."""
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(self._invalid) from None
        if len(raw) != self._STRUCT.size + self._MAC_BYTES:
            raise BadRequest(self._invalid)
        payload, mac = raw[: self._STRUCT.size], raw[self._STRUCT.size:]
        expected = hashlib.blake2b(payload, key=self._key, digest_size=self._MAC_BYTES).digest()
        version, token_qhash, t, tie = self._STRUCT.unpack(payload)
        if mac != expected or version != 1 or token_qhash != qhash:
            raise BadRequest(self._invalid)
        return (t, tie)
