"""JSON in and out, lossless for everything an API can legally send, fast for everything it usually sends.

orjson is the fast path. It refuses two things that are valid JSON (RFC 8259) and that audit events do
carry, because their strings and numbers are attacker-influenced:

* a lone UTF-16 surrogate written as an escape (``"login_\\ud800success"``): orjson cannot decode it,
  and cannot encode the resulting Python string either;
* an integer outside the signed/unsigned 64-bit range: orjson *accepts* it but turns it into a float,
  silently changing the value (``123456789012345678901234567890`` becomes ``1.2345678901234568e+29``).

Both go through the standard library instead, which keeps the exact value: surrogates are written back
as ``\\uXXXX`` escapes, so every line we write is plain ASCII where it has to be, valid UTF-8 always, and
re-reads to the same string. What stays refused: invalid UTF-8, raw control characters in strings,
``NaN``/``Infinity`` and numbers beyond a double's range (no JSON parser agrees on them, and we would
have to invent a value); the error says why and at which byte, and never quotes the document.

No Dagster import.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

import orjson

# A run of 19+ digits is the only way to write an integer orjson would turn into a float (below -2**63:
# 19 digits; above 2**64 - 1: 20). Such runs are common inside strings (Google's 21-digit profile ids,
# 19-digit unique qualifiers), where they do not matter, so the first look is a C-speed one: digits
# become "0", the bytes a number token can follow (separators, whitespace) "S", and a number of 19+
# digits is then the plain substring "S" + 19 zeros. Only pages that have one pay for the exact check.
_SHAPE = bytes(ord("0") if chr(c).isdigit() and c < 128 else ord("S") if chr(c) in ":,[ \t\r\n" else
               ord("-") if c == ord("-") else ord("x") for c in range(256))
_Z19 = b"0" * 19
_LONG_DIGITS = re.compile(rb"\d{19,}")
_NUMBER_BEFORE = frozenset(b":,[ \t\r\n")
_I64_MIN, _U64_MAX = -(2**63), 2**64 - 1


class JSONError(ValueError):
    """Not JSON we can keep exactly; ``reason`` is the parser's own words, ``offset`` the byte it stopped at.

    The message never quotes the document: the bytes around a bad byte are event data (a password typed
    into a user-name field, a token), and this text ends up in checkpoints, run logs and alerts. It gives
    the offset, the size and a digest of the whole document instead, by which an operator can find it
    (``logpull`` keeps the page) and tell two bad pages apart. ``reason`` is one of the parsers' fixed
    texts, never a part of the document."""

    def __init__(self, reason: str, offset: int | None, data: bytes) -> None:
        self.reason, self.offset = reason, offset
        where = f" at byte {offset}" if offset is not None else ""
        of = f" (document of {len(data)} bytes, blake2b {body_digest(data)})" if data else ""
        super().__init__(f"{reason}{where}{of}")


def body_digest(data: bytes) -> str:
    """A short digest naming a document in an error text instead of quoting it: 16 hex digits of BLAKE2b."""
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def loads(data: bytes) -> Any:
    """Parse ``data`` exactly, or raise JSONError naming the reason and the byte offset."""
    if not _has_big_integer(data):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as e:
            first_error = e
    else:
        first_error = None
    try:
        text = data.decode("utf-8")  # strict: refuses invalid UTF-8 and encoded surrogates
    except UnicodeDecodeError as e:
        raise JSONError(f"invalid UTF-8 ({e.reason})", e.start, data) from None
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as e:
        reason = first_error.msg if first_error is not None else e.msg
        raise JSONError(reason, len(text[:e.pos].encode("utf-8", "surrogatepass")), data) from None
    except _Refused as e:
        raise JSONError(str(e), None, data) from None
    except RecursionError:
        raise JSONError("nested too deeply", None, data) from None


def dumps(obj: Any) -> bytes:
    """One compact JSON document; lone surrogates as ``\\uXXXX`` escapes, big integers exact."""
    try:
        return orjson.dumps(obj)
    except TypeError:  # a lone surrogate, or an integer beyond 64 bits
        pass
    try:
        return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False,
                          default=_fragment_value).encode()
    except RecursionError:
        raise JSONError("nested too deeply to write back with a lone surrogate or a huge integer", None, b"") from None


def fragment(obj: Any) -> orjson.Fragment:
    """``obj`` written as JSON once, to be placed in many documents by ``dumps`` as it is (orjson copies a
    Fragment's bytes): for a constant part of every line, such as the envelope's ``collector`` block."""
    frag = orjson.Fragment(dumps(obj))
    _FRAGMENTS[id(frag)] = (frag, obj)  # the fragment is held here, so its id is never reused
    return frag


# The value of each fragment, for the standard library path of ``dumps`` (orjson.Fragment's bytes are not
# readable from Python); fragments are few and made once (constants), so this never grows with the data.
_FRAGMENTS: dict[int, tuple[orjson.Fragment, Any]] = {}


def _fragment_value(o: Any) -> Any:
    found = _FRAGMENTS.get(id(o))
    if found is None or found[0] is not o:
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")
    return found[1]


def _has_big_integer(data: bytes) -> bool:
    shape = data.translate(_SHAPE)
    if not (b"S" + _Z19 in shape or b"S-" + _Z19 in shape or shape.startswith((_Z19, b"-" + _Z19))):
        return False
    for m in _LONG_DIGITS.finditer(data):
        i = m.start()
        if i > 0 and data[i - 1] == 0x2D:  # a minus sign
            i -= 1
        if i == 0 or data[i - 1] in _NUMBER_BEFORE:
            value = int(m.group().decode()) * (-1 if data[i] == 0x2D else 1)
            if not _I64_MIN <= value <= _U64_MAX:
                return True
    return False


class _Refused(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused("a number is beyond a double's range")  # not quoted: the number is event data
    return value
