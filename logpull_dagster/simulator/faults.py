"""The fault switch: rules that make the next requests fail, and the faulty replies, for every API alike.

Why shared: a log puller must survive the same misbehaviour from every SaaS (throttling, 5xx, dropped
connections, stuck cursors, hostile bodies), and a new emulated API should get all of it for free. So
the rules, their counters and the bodies that are the same everywhere (gzip bomb, huge body, trickle,
redirect, HTML error page) live here; where a fault must look like the API (its error body, its
throttle headers, its cursor, which field of an item gets spoiled) this module asks the API through the
hooks of ``api.EmulatedApi``. Every fault kind and rule key is described in ``FAULT_DOCS`` and
``RULE_KEYS_DOC`` (``python -m logpull_dagster.simulator --help`` prints both).
"""

from __future__ import annotations

import random
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .api import DROP, ApiRequest, EmulatedApi, Reply, SimulatorError, json_bytes

#: Every fault kind a rule may name, in the order the documentation lists them.
FAULT_KINDS: tuple[str, ...] = (
    "429",
    "429_no_retry_after",
    "503",
    "500",
    "502",
    "504",
    "drop",
    "slow",
    "reject_token",
    "bad_json",
    "malformed",
    "no_id",
    "stuck_token",
    "repeat_token",
    "repeat_token_varying",
    "gzip_bomb",
    "big_body",
    "trickle",
    "surrogate",
    "invalid_utf8",
    "control_byte",
    "echo_auth",
    "redirect",
)

#: One line per fault kind: what a request it fires on gets back. ``--help`` prints it. Worded in the
#: Reports API's terms (pageToken, Google-style bodies) because that API came first and the text is part
#: of the CLI; on another API each kind answers in that API's shape (see ``FaultSwitch.reply``).
FAULT_DOCS: dict[str, str] = {
    "429": "429 RESOURCE_EXHAUSTED with Retry-After: retry_after (default 1)",
    "429_no_retry_after": "the same 429 without a Retry-After header",
    "503": "503 UNAVAILABLE; Retry-After only when retry_after is set",
    "500": "500 with a Google-style error body",
    "502": "502 with a Google-style error body",
    "504": "504 with a Google-style error body",
    "drop": "close the connection without answering",
    "slow": "sleep delay seconds (default 5), then answer the normal page",
    "reject_token": "400 'Invalid pageToken' (requests with a token only)",
    "bad_json": "200 with an HTML error page instead of JSON",
    "malformed": "200 JSON whose 'items' is a string",
    "no_id": "the normal page with the middle item's 'id' removed",
    "stuck_token": "200 without items whose nextPageToken is the token sent (Google's stuck-token bug); "
    "without a token, a fresh token that leads back to the first page",
    "repeat_token": "the normal page WITH its items, but nextPageToken is the token sent; without a token, "
    "a fresh token that leads back to the first page, so a naive client reads page 1 again, forever",
    "repeat_token_varying": "as repeat_token, but the next link also carries a parameter that changes on every "
    "answer (where the API's cursor is a URL: Okta's next link repeats its after with n=1, n=2, ...), so the "
    "cursors all differ while the pages repeat",
    "gzip_bomb": "200 Content-Encoding: gzip, Content-Type: application/json: a valid JSON object "
    '{"kind": ..., "pad": "AAA..."} that inflates to size bytes (default 2 GiB) from about size/1000 '
    "on the wire",
    "big_body": "200 uncompressed JSON of exactly size bytes (default 128 MiB, same padding), with a "
    "correct Content-Length, streamed; a client that hangs up early just ends it",
    "trickle": "the normal page, but the whole response (status line, headers, body) is written "
    "trickle_bytes bytes (default 1) every delay seconds (default 1)",
    "surrogate": "the normal page, but the middle item's events[0].name is the JSON text "
    '"login_\\ud800success": a lone UTF-16 surrogate escape (Python\'s json accepts it, orjson refuses it); '
    "ids are untouched",
    "invalid_utf8": "the normal page with one raw 0xFF byte inside the middle item's actor.email",
    "control_byte": "the normal page with one raw 0x01 byte inside the middle item's actor.email",
    "echo_auth": "an error of status (default 401) whose message echoes the Authorization header verbatim "
    "(empty when absent); echo_auth rules are evaluated before the token check, so they fire for a wrong "
    "or missing token too",
    "redirect": "302 to location (default http://127.0.0.2:9/elsewhere) with an empty body",
}

#: The keys of a fault rule, for ``--help``.
RULE_KEYS_DOC = """\
A fault rule is a JSON object; rules are evaluated in order and the first that fires answers the request
(echo_auth rules first, before the token check; every other rule only sees correctly authenticated
requests). The kinds that damage the middle item serve an empty page unchanged. Keys:
  kind           one of the kinds below (required)
  count          times the rule fires, null = forever (default 1)
  after          matching requests let through before it may fire (default 0)
  probability    chance to fire on each eligible request, seeded, null = always (default null)
  match          which requests count: any, token (has a pageToken), first (has none) (default any)
  retry_after    seconds for Retry-After of 429 (default 1) and 503 (default none)
  delay          seconds: slow sleeps it (default 5), trickle waits it between writes (default 1)
  size           bytes of the decoded body of gzip_bomb (default 2 GiB) and big_body (default 128 MiB)
  trickle_bytes  bytes per write of trickle (default 1)
  status         HTTP status of echo_auth: 400, 401, 403, 500 or 503 (default 401)
  location       Location header of redirect (default http://127.0.0.2:9/elsewhere)"""

_RULE_KEYS = frozenset({
    "kind", "count", "after", "probability", "match", "retry_after", "delay",
    "size", "trickle_bytes", "status", "location",
})
_MATCHES = ("any", "token", "first")
_PRE_AUTH_KINDS = frozenset({"echo_auth"})  # evaluated before the token check, so a wrong token reaches them
_ECHO_STATUSES = (400, 401, 403, 500, 503)
_DEFAULT_DELAY = {"trickle": 1.0}  # every other kind (slow) defaults to 5 seconds
_DEFAULT_SIZE = {"gzip_bomb": 2 * 1024**3, "big_body": 128 * 1024**2}
_DEFAULT_LOCATION = "http://127.0.0.2:9/elsewhere"  # discard port on another loopback address: goes nowhere

# gzip_bomb and big_body serve <the API's pad_prefix>AAA..."}; the pad is written from one shared chunk,
# so neither ever holds its decoded size in memory. The cap keeps a cached bomb (about size/1000) small.
PAD_SUFFIX = b'"}'
_PAD_CHUNK = b"A" * (1 << 20)
MAX_PADDED_SIZE = 1 << 34

# The surrogate, invalid_utf8 and control_byte kinds serialize the page with this marker in one string,
# then swap the marker's JSON for raw bytes json.dumps would never write.
_SPLICE_MARK = "\x00logpull-simulator-splice\x00"
_SPLICE_KINDS = frozenset({"surrogate", "invalid_utf8", "control_byte"})
DAMAGE_KINDS = frozenset({"no_id", *_SPLICE_KINDS})
_SURROGATE_JSON = b'"login_\\ud800success"'

_BAD_JSON_BODY = (
    b"<!DOCTYPE html><html lang=en><meta charset=utf-8><title>Error 502 (Server Error)!!1</title>"
    b"<p><b>502.</b> <ins>That\xe2\x80\x99s an error.</ins><p>The server encountered a temporary error "
    b"and could not complete your request.<p>Please try again in 30 seconds.</html>"
)
_HTML = "text/html; charset=UTF-8"


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class Rule:
    """One fault rule plus its counters; counters reset whenever the rule list is replaced."""

    kind: str
    count: int | None = 1
    after: int = 0
    probability: float | None = None
    match: str = "any"
    retry_after: float | None = None
    delay: float = 5.0
    size: int | None = None
    trickle_bytes: int = 1
    status: int = 401
    location: str = _DEFAULT_LOCATION
    seen: int = 0
    fired: int = 0

    @classmethod
    def parse(cls, raw: Any, *, min_size: int) -> Rule:
        """A rule from its JSON object; ``min_size`` is the smallest padded body every hosted API can serve."""
        if not isinstance(raw, dict):
            raise SimulatorError(f"fault rule must be an object, got {raw!r}")
        unknown = set(raw) - _RULE_KEYS
        if unknown:
            raise SimulatorError(f"unknown fault rule keys {sorted(unknown)}")
        kind = str(raw.get("kind"))
        if kind not in FAULT_KINDS:
            raise SimulatorError(f"unknown fault kind {raw.get('kind')!r}; expected one of {FAULT_KINDS}")
        count = raw.get("count", 1)
        after = raw.get("after", 0)
        probability = raw.get("probability")
        match = raw.get("match", "any")
        retry_after = raw.get("retry_after")
        delay = raw.get("delay", _DEFAULT_DELAY.get(kind, 5.0))
        size = raw.get("size", _DEFAULT_SIZE.get(kind))
        trickle_bytes = raw.get("trickle_bytes", 1)
        status = raw.get("status", 401)
        location = raw.get("location", _DEFAULT_LOCATION)
        if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
            raise SimulatorError("count must be a non-negative int or null")
        if not isinstance(after, int) or isinstance(after, bool) or after < 0:
            raise SimulatorError("after must be a non-negative int")
        if probability is not None and not (is_number(probability) and 0.0 <= probability <= 1.0):
            raise SimulatorError("probability must be within [0, 1]")
        if match not in _MATCHES:
            raise SimulatorError(f"match must be one of {_MATCHES}")
        if retry_after is not None and not (is_number(retry_after) and retry_after >= 0):
            raise SimulatorError("retry_after must be a non-negative number")
        if not (is_number(delay) and delay >= 0):
            raise SimulatorError("delay must be a non-negative number")
        if size is not None and not (_is_int(size) and min_size <= size <= MAX_PADDED_SIZE):
            raise SimulatorError(f"size must be an int within [{min_size}, {MAX_PADDED_SIZE}] (bytes)")
        if not (_is_int(trickle_bytes) and trickle_bytes >= 1):
            raise SimulatorError("trickle_bytes must be a positive int")
        if not (_is_int(status) and status in _ECHO_STATUSES):
            raise SimulatorError(f"status must be one of {_ECHO_STATUSES}")
        # http.server writes headers as Latin-1, and a CR or LF would split the reply: printable ASCII only.
        if not (isinstance(location, str) and location and all(" " <= c <= "~" for c in location)):
            raise SimulatorError("location must be a non-empty string of printable ASCII")
        return cls(kind, count, after, probability, match, retry_after, float(delay),
                   size, trickle_bytes, status, location)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "count": self.count, "after": self.after, "probability": self.probability,
            "match": self.match, "retry_after": self.retry_after, "delay": self.delay,
            "size": self.size, "trickle_bytes": self.trickle_bytes, "status": self.status,
            "location": self.location, "seen": self.seen, "fired": self.fired,
        }

    def applies_to(self, has_cursor: bool) -> bool:
        if self.kind == "reject_token" and not has_cursor:
            return False
        return self.match == "any" or (self.match == "token") == has_cursor


class FaultSwitch:
    """The rule list shared by every hosted API: which rule fires next, and the reply it makes.

    One list for all APIs on purpose: a test says "the next request fails" without caring which API
    the client under test calls first.
    """

    def __init__(self, seed: int, *, min_padded_size: int) -> None:
        self.seed = seed
        self.min_padded_size = min_padded_size
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._rng = random.Random()
        self._bombs: dict[tuple[bytes, int], bytes] = {}  # (prefix, size) -> gzip body: each built once
        self._bombs_lock = threading.Lock()

    def set(self, rules: list[dict[str, Any]]) -> None:
        """Replace the rules; counters and the probability RNG restart, so runs are repeatable."""
        if not isinstance(rules, list):
            raise SimulatorError("rules must be a list")
        parsed = [Rule.parse(r, min_size=self.min_padded_size) for r in rules]
        with self._lock:
            self._rules = parsed
            self._rng = random.Random(f"logpull-simulator|faults|{self.seed}")

    def specs(self) -> list[dict[str, Any]]:
        """The current rules with their ``seen``/``fired`` counters."""
        with self._lock:
            return [r.spec() for r in self._rules]

    def pick(self, has_cursor: bool, *, pre_auth: bool = False) -> Rule | None:
        """The first rule that fires, among the pre-auth kinds (echo_auth) or among all the others."""
        with self._lock:
            for rule in self._rules:
                if (rule.kind in _PRE_AUTH_KINDS) != pre_auth or not rule.applies_to(has_cursor):
                    continue
                rule.seen += 1
                if rule.seen <= rule.after:
                    continue
                if rule.count is not None and rule.fired >= rule.count:
                    continue
                if rule.probability is not None and self._rng.random() >= rule.probability:
                    continue
                rule.fired += 1
                return rule
        return None

    def reply(self, rule: Rule, api: EmulatedApi, request: ApiRequest) -> Reply | object:
        """What ``rule`` answers to ``request`` on ``api``: a ``Reply`` or ``DROP``."""
        kind = rule.kind
        if kind == "echo_auth":
            return api.error(rule.status, f"Request with Authorization: {request.authorization or ''} was refused")
        if kind in ("429", "429_no_retry_after"):
            retry_after = rule.retry_after if rule.retry_after is not None else 1
            return api.rate_limited(None if kind == "429_no_retry_after" else retry_after)
        if kind in ("500", "502", "503", "504"):
            return api.server_error(int(kind), rule.retry_after if kind == "503" else None)
        if kind == "drop":
            return DROP
        if kind == "slow":
            time.sleep(rule.delay)
            return api.page(request)
        if kind == "reject_token":
            return api.invalid_cursor(request)
        if kind == "bad_json":
            return Reply(200, _BAD_JSON_BODY, content_type=_HTML)
        if kind == "malformed":
            return api.malformed(request)
        if kind in DAMAGE_KINDS:
            return api.page(request, damage=kind)
        if kind == "stuck_token":
            return api.stuck_page(request)
        if kind == "repeat_token":
            return api.page(request, repeat_cursor=True)
        if kind == "repeat_token_varying":
            return api.page(request, repeat_cursor="varying")
        if kind == "gzip_bomb":
            assert rule.size is not None  # parse() defaults it for this kind
            return Reply(200, self._gzip_bomb(api.pad_prefix, rule.size), [("Content-Encoding", "gzip")],
                         content_type="application/json")
        if kind == "big_body":
            assert rule.size is not None
            return Reply(200, b"", parts=padded_parts(api.pad_prefix, rule.size), length=rule.size)
        if kind == "trickle":
            reply = api.page(request)
            reply.trickle = (rule.delay, rule.trickle_bytes)
            return reply
        if kind == "redirect":
            return Reply(302, b"", [("Location", rule.location)], content_type=_HTML)
        raise AssertionError(f"unhandled fault kind {kind}")  # pragma: no cover

    def _gzip_bomb(self, prefix: bytes, size: int) -> bytes:
        with self._bombs_lock:  # held while building, so concurrent first requests build it once
            body = self._bombs.get((prefix, size))
            if body is None:
                body = self._bombs[prefix, size] = _gzip_padded_json(prefix, size)
            return body


# -- spoiling one item of a page ----------------------------------------------------------------------


@dataclass(frozen=True)
class DamageTargets:
    """Where in one of an API's items the damaging kinds strike: ``id_key`` (top-level) is what no_id
    deletes, ``name`` the path of the string surrogate replaces, ``text`` the path of the string that
    invalid_utf8 and control_byte cut in two."""

    id_key: str
    name: tuple[str | int, ...]
    text: tuple[str | int, ...]


def damage_item(items: list[dict[str, Any]], kind: str, targets: DamageTargets) -> bytes | None:
    """Damage the middle item for ``kind``. For the splice kinds, one of its strings becomes the marker
    and the raw bytes to put in the marker's place (with ``splice``) are returned; no_id returns None."""
    item = items[len(items) // 2]
    if kind == "no_id":
        del item[targets.id_key]
        return None
    if kind == "surrogate":
        parent, last = _walk(item, targets.name)
        parent[last] = _SPLICE_MARK
        return _SURROGATE_JSON
    parent, last = _walk(item, targets.text)
    text = json_bytes(parent[last])  # quotes included; the cut falls inside them
    cut = len(text) // 2
    parent[last] = _SPLICE_MARK
    return text[:cut] + (b"\xff" if kind == "invalid_utf8" else b"\x01") + text[cut:]


def splice(raw: bytes, replacement: bytes) -> bytes:
    """The serialized page with the marker ``damage_item`` left replaced by its raw bytes."""
    return raw.replace(json_bytes(_SPLICE_MARK), replacement, 1)


def _walk(obj: Any, path: tuple[str | int, ...]) -> tuple[Any, str | int]:
    for step in path[:-1]:
        obj = obj[step]
    return obj, path[-1]


# -- padded bodies: gzip_bomb and big_body ------------------------------------------------------------


def padded_size_floor(prefix: bytes) -> int:
    """The smallest padded body with this prefix: the envelope with an empty pad."""
    return len(prefix) + len(PAD_SUFFIX)


def padded_parts(prefix: bytes, size: int) -> Iterator[bytes]:
    """The ``size`` bytes of the padded JSON object, as the prefix, shared pad chunks and the suffix."""
    full, rest = divmod(size - padded_size_floor(prefix), len(_PAD_CHUNK))
    yield prefix
    for _ in range(full):
        yield _PAD_CHUNK
    if rest:
        yield _PAD_CHUNK[:rest]
    yield PAD_SUFFIX


def _gzip_padded_json(prefix: bytes, size: int) -> bytes:
    """gzip of the padded JSON object of ``size`` bytes, in milliseconds and without the decoded bytes.

    Why not just stream the chunks through ``compressobj(wbits=31)``: deflating 2 GiB takes over ten
    seconds. After a Z_FULL_FLUSH the compressor forgets its history, so the deflate output of one pad
    chunk refers to nothing outside itself and can simply be repeated; the gzip frame is then written
    here, with a CRC32 of the repeated chunks combined arithmetically instead of computed over 2 GiB."""
    full, rest = divmod(size - padded_size_floor(prefix), len(_PAD_CHUNK))
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate: no zlib or gzip frame
    head = deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)
    unit = deflate.compress(_PAD_CHUNK) + deflate.flush(zlib.Z_FULL_FLUSH) if full else b""
    last = _PAD_CHUNK[:rest] + PAD_SUFFIX
    tail = deflate.compress(last) + deflate.flush(zlib.Z_FINISH)
    pad_crc = _crc32_repeat(zlib.crc32(_PAD_CHUNK), len(_PAD_CHUNK), full)
    crc = _crc32_combine(zlib.crc32(prefix), pad_crc, full * len(_PAD_CHUNK))
    crc = zlib.crc32(last, crc)
    # magic, deflate, no flags, mtime 0, XFL 2 (best compression), OS 255 (unknown)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return b"".join([header, head, unit * full, tail, struct.pack("<II", crc, size & 0xFFFFFFFF)])


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC32 of A+B from crc(A), crc(B) and len(B): zlib's crc32_combine, which Python does not expose.
    Appending len2 zero bytes is a linear map over GF(2); it is applied by repeated squaring."""
    if len2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # the operator for one zero bit
    even = [_gf2_times(odd, v) for v in odd]  # two zero bits
    odd = [_gf2_times(even, v) for v in even]  # four zero bits
    while True:
        even = [_gf2_times(odd, v) for v in odd]
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = [_gf2_times(even, v) for v in even]
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def _crc32_repeat(unit_crc: int, unit_len: int, n: int) -> int:
    """CRC32 of a unit repeated ``n`` times, by doubling: a few dozen combines even for 2 GiB."""
    total, power, power_len = 0, unit_crc, unit_len  # total: CRC32 of the empty string so far
    while n:
        if n & 1:
            total = _crc32_combine(total, power, power_len)
        n >>= 1
        if n:
            power = _crc32_combine(power, power, power_len)
            power_len *= 2
    return total


# -- trickle ------------------------------------------------------------------------------------------


class TrickleWriter:
    """Stands in for the handler's ``wfile`` during a trickle reply: sleeps ``delay`` before each write
    of at most ``step`` bytes. A client that hangs up makes a write raise OSError, which ends the reply."""

    def __init__(self, raw: Any, delay: float, step: int) -> None:
        self.raw, self.delay, self.step = raw, delay, step

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        for i in range(0, len(view), self.step):
            time.sleep(self.delay)
            self.raw.write(view[i:i + self.step])
        return len(data)

    def flush(self) -> None:
        self.raw.flush()
