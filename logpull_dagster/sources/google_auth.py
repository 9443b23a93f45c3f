"""A Google service account with domain-wide delegation, as an ``httpx.Auth`` for the Reports API.

How Google issues Reports API access (OAuth 2.0 for server-to-server applications, RFC 7523): the
service account signs a JWT with its private key, claims ``iss`` (its email), ``sub`` (the Workspace
admin it acts for: domain-wide delegation), ``scope``, ``aud`` (the token URI), ``iat`` and ``exp``
(at most one hour later), and posts it to the token URI as ``grant_type=urn:ietf:params:oauth:grant-
type:jwt-bearer&assertion=<jwt>``; the answer is an access token that lives about an hour. Google
refuses the grant with ``unauthorized_client`` until an admin has authorised the account's client ID
for the scope (Admin console: Security > Access and data control > API controls > Manage domain-wide
delegation), and with ``invalid_grant`` for a wrong ``sub`` or a bad signature.

The key file is read through google-auth (``service_account.Credentials``: its parser and its RSA
signer), and the token request is made by :class:`~logpull_dagster.sources.auth.OAuthToken`, through
the source's own HTTP client: so it keeps that client's deadline, TLS trust and retries of 429/5xx,
is refreshed before expiry and once on a 401, and one thread fetches for all. (google-auth's own
refresh would need its ``requests`` transport, outside all of that.)

One :class:`ServiceAccountAuth` per (key, subject, token URI) per process: the streams of one
account share its access token (:func:`service_account_auth`). That cache is only an optimisation; a
fresh process builds its own. The key file is read when an attempt opens its source, never when the
config loads, so a rotated key is picked up by the next attempt (its contents are part of the cache key).

Never in a message, a log or the checkpoint store: the key file's contents, the signed assertions,
the access tokens (``secrets()`` lists them for the redactor).
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from typing import Any

from google.auth import crypt, jwt
from google.oauth2 import service_account

from logpull_dagster.sources import InvalidSecret
from logpull_dagster.sources.auth import OAuthToken

REPORTS_SCOPE = "https://www.googleapis.com/auth/admin.reports.audit.readonly"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Google accepts an assertion that lives at most an hour.
ASSERTION_LIFETIME = 3600
_MAX_KEY_FILE = 64 * 1024  # a service-account JSON key is ~2.3 KiB


class ServiceAccountAuth(OAuthToken):
    """Access tokens for ``subject`` from a service account's key, by the JWT-bearer grant."""

    def __init__(self, credentials: service_account.Credentials, subject: str, *, token_uri: str,
                 scope: str = REPORTS_SCOPE, credential: str = "the service account key") -> None:
        super().__init__(token_uri, credential=credential)
        self.email, self.subject, self.scope = credentials.service_account_email, subject, scope
        self._signer: crypt.Signer = credentials.signer
        self._assertion: str | None = None  # the last one sent, for the redactor

    def token_form(self) -> dict[str, str]:
        now = int(time.time())
        claims = {"iss": self.email, "sub": self.subject, "scope": self.scope, "aud": self.token_url,
                  "iat": now, "exp": now + ASSERTION_LIFETIME}
        # google-auth's encoder puts the key's id (private_key_id) in the header as `kid`.
        assertion = jwt.encode(self._signer, claims).decode("ascii")
        self._assertion = assertion
        return {"grant_type": JWT_BEARER, "assertion": assertion}

    def secrets(self) -> tuple[str, ...]:
        return (*super().secrets(), *((self._assertion,) if self._assertion else ()))


_cache_lock = threading.Lock()
_cache: OrderedDict[tuple[str, str, str, str], ServiceAccountAuth] = OrderedDict()
_CACHE_MAX = 32


def service_account_auth(path: str, subject: str, *, env: str, token_uri: str | None = None) -> ServiceAccountAuth:
    """The auth of the key file at ``path`` (named by the environment variable ``env``) acting for
    ``subject``; ``token_uri`` replaces the key file's own (an emulator). Shared by every caller in
    this process with the same key, subject and token URI. Raises InvalidSecret, naming ``env`` and the
    fix, when the file is missing, unreadable or not a service-account key; never quotes its contents."""
    info, digest = _read_key(path, env)
    uri = token_uri or info.get("token_uri") or GOOGLE_TOKEN_URI
    key = (digest, subject, uri, env)
    with _cache_lock:
        found = _cache.get(key)
        if found is not None:
            _cache.move_to_end(key)
            return found
    try:
        creds = service_account.Credentials.from_service_account_info(
            info, scopes=[REPORTS_SCOPE], subject=subject).with_token_uri(uri)
    except (ValueError, TypeError):  # its text may quote the key; a malformed PEM is either
        raise InvalidSecret(f"{env} names {path}, which is not a usable service-account key (its private_key "
                            f"cannot be read); download a new JSON key of the service account and point {env} "
                            f"at it") from None
    auth = ServiceAccountAuth(creds, subject, token_uri=uri, credential=f"the service account key named by {env} "
                              f"({creds.service_account_email}) and its domain-wide delegation for {subject}")
    with _cache_lock:
        auth = _cache.setdefault(key, auth)
        while len(_cache) > _CACHE_MAX:
            _cache.popitem(last=False)
    return auth


def _read_key(path: str, env: str) -> tuple[dict[str, Any], str]:
    fix = (f"point {env} at the service account's JSON key file (Cloud console: IAM & Admin > Service accounts "
           f"> Keys > Add key > JSON), readable by the user the run executes as")
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise InvalidSecret(f"{env} names {path}, which does not exist; {fix}") from None
    except IsADirectoryError:
        raise InvalidSecret(f"{env} names {path}, which is a folder; {fix}") from None
    except OSError as e:
        raise InvalidSecret(f"{env} names {path}, which cannot be read ({e.strerror}); {fix}") from None
    if len(raw) > _MAX_KEY_FILE:
        raise InvalidSecret(f"{env} names {path}, which is larger than a service-account key; {fix}")
    try:
        info = json.loads(raw)
    except ValueError:  # never quote it: it is meant to hold a private key
        raise InvalidSecret(f"{env} names {path}, which is not JSON; {fix}") from None
    if not isinstance(info, dict) or info.get("type") != "service_account":
        raise InvalidSecret(f"{env} names {path}, which is not a service-account key (\"type\": "
                            f"\"service_account\"); {fix}")
    missing = [k for k in ("client_email", "private_key") if not isinstance(info.get(k), str) or not info[k]]
    if missing:
        raise InvalidSecret(f"{env} names {path}, a service-account key without {' and '.join(missing)}; {fix}")
    return info, hashlib.sha256(raw).hexdigest()
