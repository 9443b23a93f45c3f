"""Secrets out of every message the project writes: one place that all error paths go through.

A log puller holds admin-level tokens, and the text of an error is written to many places: the
checkpoint row's ``last_error``, ``logpull status``, Dagster's event log and compute logs, stderr.
An API may echo the request's ``Authorization`` header in its error message, and a library may put a
header in an exception (httpx: ``Illegal header value b'Bearer ...'``). So every such text passes
through :func:`redact` before it is written, which removes

* every known secret value: each secret the config names (read from the environment when needed), in
  the forms it can take in a message (as is, repr-escaped, URL-encoded);
* anything shaped like a credential after an auth scheme (``Bearer ...``, ``SSWS ...``, ``Basic ...``,
  ``ApiKey ...``, ``Splunk <GUID>``)
  or in an ``Authorization``/``api_key``/``token`` field, known or not.

No Dagster import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import quote

MASK = "[REDACTED]"
_MIN_SECRET = 6  # shorter "secrets" (tests, typos) would mask ordinary words

_SCHEMES = re.compile(r"\b((?i:bearer|ssws)|Basic|ApiKey)(\s+|%20|\+)([^\s'\"\\,;<>&]{4,})")
# Splunk HEC's scheme is also a product name in prose, so only a token-shaped (GUID) value after it.
_SPLUNK = re.compile(r"\b(Splunk)(\s+|%20|\+)([0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12})")
_FIELDS = re.compile(
    r"(?i)(\"?\b(?:authorization|x-api-key|api[_-]?key|access[_-]?token|client[_-]?secret|password)\"?"
    r"\s*[:=]\s*[\"']?)([^\"'\s,;}&]+(?:\s+[^\"'\s,;}&]+)?)"
)


class Redactor:
    """Masks the given secret values and any credential-shaped text."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        forms: set[str] = set()
        for s in secrets:
            s = (s or "").strip()
            if len(s) < _MIN_SECRET:
                continue
            forms |= {s, repr(s)[1:-1], quote(s, safe=""), s.encode("unicode_escape").decode("ascii")}
            # A multi-line secret (a PEM key) is masked line by line too: a message may quote one line.
            forms |= {ln.strip() for ln in s.splitlines()[1:] if len(ln.strip()) >= 16 and not ln.startswith("-----")}
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, MASK)
        text = _SCHEMES.sub(lambda m: f"{m[1]}{m[2]}{MASK}" if m[3] != MASK else m[0], text)
        text = _SPLUNK.sub(lambda m: f"{m[1]}{m[2]}{MASK}", text)
        return _FIELDS.sub(lambda m: f"{m[1]}{MASK}" if not m[2].startswith(MASK) else m[0], text)

    def extended(self, secrets: Iterable[str | None]) -> Redactor:
        new = Redactor(secrets)
        new._secrets = sorted(set(self._secrets) | set(new._secrets), key=len, reverse=True)
        return new


def from_env(names: Iterable[str]) -> Redactor:
    """A Redactor for the values of the named environment variables (those that are set)."""
    return Redactor(os.environ.get(n) for n in names)


def redact(text: str, redactor: Redactor | None = None) -> str:
    """``text`` without secrets: the known ones of ``redactor`` and credential-shaped ones always."""
    return (redactor or _PATTERNS_ONLY)(text)


def error_text(exc: BaseException, redactor: Redactor | None = None, limit: int = 1000) -> str:
    """``Type: message`` of an exception, redacted and cut to ``limit``: what last_error and logs hold."""
    return redact(f"{type(exc).__name__}: {exc}", redactor)[:limit]


_PATTERNS_ONLY = Redactor()


_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----\n[\x20-\x7e\n]*\n-----END [A-Z0-9 ]+-----")


def _is_jwk(text: str) -> bool:
    """Whether ``text`` is a JSON Web Key (RFC 7517: an object with ``kty``) or a set of them."""
    import json

    try:
        doc = json.loads(text)
    except ValueError:
        return False
    if isinstance(doc, dict) and isinstance(doc.get("keys"), list):
        doc = doc["keys"][0] if doc["keys"] else None
    return isinstance(doc, dict) and isinstance(doc.get("kty"), str)


def clean_secret(name: str, value: str | None) -> str:
    """The secret read from environment variable ``name``, ready for a header: surrounding whitespace
    stripped (a secret mounted from a file ends with a newline), anything else that cannot go in a
    header refused. Messages name the variable, never the value.

    Exceptions, for private keys, which sign and are never sent: a PEM block (``-----BEGIN ...-----`` to
    ``-----END ...-----``, as ``$(cat key.pem)`` or a mounted key file gives it) keeps its line breaks, CRLF
    made LF, and a PEM on one line with literal ``\\n`` for them (as a ``.env`` file or a JSON string holds
    it) gets them back; a JWK (a JSON object with ``kty``) is kept as it is, spaces and line breaks
    included. (A PEM given as one line of base64 works too.)"""
    from logpull_dagster.sources import InvalidSecret

    secret = (value or "").strip()
    if not secret:
        raise InvalidSecret(f"the environment variable {name} is empty or unset; set it to the API credential")
    pem = secret.replace("\r\n", "\n")
    if pem.startswith("-----BEGIN ") and "\\n" in pem:  # one line, literal \n for its breaks (.env, JSON)
        pem = pem.replace("\\r\\n", "\n").replace("\\n", "\n")
    if pem.startswith("-----BEGIN ") and _PEM.fullmatch(pem):
        return pem
    if secret.startswith("{") and _is_jwk(secret):
        return secret  # a private key as a JWK (Okta's console makes one): it signs, it is never sent
    for i, ch in enumerate(secret):
        if not "\x21" <= ch <= "\x7e":
            kind = "a space" if ch == " " else "a control character" if ord(ch) < 0x20 or ord(ch) == 0x7F \
                else "a non-ASCII character"
            raise InvalidSecret(f"the credential in {name} holds {kind} at position {i}, which cannot be sent in "
                                f"an HTTP header; fix the variable's value (it is not shown here)")
    return secret


def env_secret(name: str) -> str:
    """The secret in environment variable ``name`` of this process, cleaned (``clean_secret``); raises
    InvalidSecret naming the variable (never a value) when it is unset. Sources and sinks read their
    credentials through this when they are opened, in the run's environment, which is where the
    resources' ``dg.EnvVar`` resolved them from."""
    from logpull_dagster.sources import InvalidSecret

    value = os.environ.get(name)
    if value is None:
        raise InvalidSecret(f"the environment variable {name} is not set in the run's environment; set it "
                            f"where the run executes (the config names it, e.g. access_token: {{env: {name}}})")
    return clean_secret(name, value)
