"""A Google service account with domain-wide delegation, as an ``httpx.Auth`` for the Reports API.

How Google issues Reports API access (OAuth 2.0 for server-to-server applications, RFC 7523): the
service account signs a JWT with its private key, claims ``iss`` (its email), ``sub`` (the Workspace
admin it acts for: domain-wide delegation), ``scope``, ``aud`` (the token URI), ``iat`` and ``exp``
(at most one hour later), and posts it to the token URI as ``grant_type=urn:ietf:params:oauth:grant-
type:jwt-bearer&assertion=<jwt>``; the answer is an access token that lives about an hour. Google
refuses the grant with ``unauthorized_client`` until an admin has authorised the account's client ID
for the scope (Admin console: Security > Access and data control > API controls > Manage domain-wide
delegation), and with ``invalid_grant`` for a wrong ``sub`` or a bad signature.

When the retries run out on the token request (or signJwt) rather than on the Reports API, the source's
message names that endpoint (``OAuthToken.endpoint_of``); a refusal about the assertion's ``iat``/``exp``
("Check your iat and exp values") says how far this host's clock is from the token endpoint's ``Date``
(``auth.clock_hint``): the assertion's times are this host's.

The key file is read through google-auth (``service_account.Credentials``: its parser and its RSA
signer), and the token request is made by :class:`~logpull_dagster.sources.auth.OAuthToken`, through
the source's own HTTP client: so it keeps that client's deadline, TLS trust and retries of 429/5xx,
is refreshed before expiry and once on a 401, and one thread fetches for all. (google-auth's own
refresh would need its ``requests`` transport, outside all of that.)

One :class:`ServiceAccountAuth` per (key, subject, token URI) per process: the streams of one
account share its access token (:func:`service_account_auth`). That cache is only an optimisation; a
fresh process builds its own. The key file is read when an attempt opens its source, never when the
config loads, so a rotated key is picked up by the next attempt (its contents are part of the cache key).

Keyless (:class:`KeylessServiceAccountAuth`, ``service_account: {email, subject}``): the same grant,
but no key file exists anywhere. The assertion is signed by Google with the service account's
Google-held key, through the IAM Service Account Credentials API (``POST {iam_endpoint}/v1/projects/-/
serviceAccounts/{email}:signJwt``, body ``{"payload": "<claims as JSON>"}``, answer ``{"keyId",
"signedJwt"}``; Google refuses an ``exp`` more than 12 hours ahead). The caller proves who it is with
an access token from application default credentials (``google.auth.default()``: the GKE / Cloud Run /
Compute Engine metadata server, a workload identity federation file, or ``gcloud auth
application-default login`` on a laptop), and that identity needs ``roles/iam.serviceAccountTokenCreator``
(the ``iam.serviceAccounts.signJwt`` permission) on the service account. The signJwt request goes through
the source's HTTP client like the token request (deadline, TLS trust, retries of 429/5xx, bounded
answer); a 401 refreshes the ADC token once; a 403/404 fails naming the role and the API to enable.
ADC's own refresh runs through :class:`BoundedTransport` (httpx, no proxy from the environment, no
redirects, answers read up to 64 KiB, every request within the source's ``http_timeout``); its
transport errors and retryable refresh errors are retried by the source's client, its refusals fail the
window naming ADC. (google-auth's compute-engine credentials retry the metadata server a few times
themselves before that.)

Never in a message, a log or the checkpoint store: the key file's contents, the signed assertions,
the access tokens, ADC's token (``secrets()`` lists them for the redactor).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Generator, Mapping
from typing import Any
from urllib.parse import quote

import google.auth
import google.auth.exceptions
import google.auth.transport
import httpx
from google.auth import crypt, jwt
from google.oauth2 import service_account

from logpull_dagster.redact import Redactor
from logpull_dagster.sources import BadPage, CredentialsRefused, InvalidSecret, SourceRequestError
from logpull_dagster.sources.auth import TOKEN_BODY_MAX, OAuthToken, json_answer, same_endpoint, take_body
from logpull_dagster.sources.http import RetryableStatus, origin, read_body

REPORTS_SCOPE = "https://www.googleapis.com/auth/admin.reports.audit.readonly"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
IAM_CREDENTIALS = "https://iamcredentials.googleapis.com"
# What ADC's token is asked for: signJwt accepts cloud-platform or iam.
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Google accepts an assertion that lives at most an hour.
ASSERTION_LIFETIME = 3600
_MAX_KEY_FILE = 64 * 1024  # a service-account JSON key is ~2.3 KiB


def delegation_claims(email: str, subject: str, scope: str, token_uri: str) -> dict[str, Any]:
    """The claims of a domain-wide delegation assertion: ``email`` acting for ``subject``, fresh now."""
    now = int(time.time())
    return {"iss": email, "sub": subject, "scope": scope, "aud": token_uri, "iat": now,
            "exp": now + ASSERTION_LIFETIME}


class ServiceAccountAuth(OAuthToken):
    """Access tokens for ``subject`` from a service account's key, by the JWT-bearer grant."""

    def __init__(self, credentials: service_account.Credentials, subject: str, *, token_uri: str,
                 scope: str = REPORTS_SCOPE, credential: str = "the service account key") -> None:
        super().__init__(token_uri, credential=credential)
        self.email, self.subject, self.scope = credentials.service_account_email, subject, scope
        self._signer: crypt.Signer = credentials.signer
        self._assertion: str | None = None  # the last one sent, for the redactor

    def token_form(self) -> dict[str, str]:
        claims = delegation_claims(self.email, self.subject, self.scope, self.token_url)
        # google-auth's encoder puts the key's id (private_key_id) in the header as `kid`.
        assertion = jwt.encode(self._signer, claims).decode("ascii")
        self._assertion = assertion
        return {"grant_type": JWT_BEARER, "assertion": assertion}

    def secrets(self) -> tuple[str, ...]:
        return (*super().secrets(), *((self._assertion,) if self._assertion else ()))


_cache_lock = threading.Lock()
_cache: OrderedDict[tuple[str, str, str, str], OAuthToken] = OrderedDict()
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
        if isinstance(found, ServiceAccountAuth):
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
        stored = _cache.setdefault(key, auth)
        while len(_cache) > _CACHE_MAX:
            _cache.popitem(last=False)
    assert isinstance(stored, ServiceAccountAuth)
    return stored


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


# -- keyless: signJwt with application default credentials -------------------------------------------

class KeylessServiceAccountAuth(OAuthToken):
    """Access tokens for ``subject`` by the JWT-bearer grant, the assertion signed by Google's IAM
    ``signJwt`` for ``email`` (the service account with domain-wide delegation), authorised by ``adc``."""

    def __init__(self, email: str, subject: str, adc: ApplicationDefaultCredentials, *, token_uri: str,
                 iam_endpoint: str = IAM_CREDENTIALS, scope: str = REPORTS_SCOPE) -> None:
        super().__init__(token_uri, credential=f"the domain-wide delegation of {email} for {subject}")
        self.email, self.subject, self.scope, self.adc = email, subject, scope, adc
        self.sign_url = f"{iam_endpoint.rstrip('/')}/v1/projects/-/serviceAccounts/{quote(email, safe='@')}:signJwt"
        self._sign_where = origin(self.sign_url)
        self._assertion: str | None = None
        self.assertions_signed = 0

    def token_form_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, dict[str, str]]:
        claims = delegation_claims(self.email, self.subject, self.scope, self.token_url)
        payload = json.dumps({"payload": json.dumps(claims, separators=(",", ":"))}).encode()
        timeout = request.extensions.get("timeout", {})
        refused: str | None = None
        while True:
            adc_token = self.adc.token(refused=refused)
            response = yield httpx.Request(
                "POST", self.sign_url, content=payload, extensions={"timeout": timeout},
                headers={"Authorization": f"Bearer {adc_token}", "Content-Type": "application/json",
                         "Accept": "application/json"})
            if response.status_code == 401 and refused is None:
                take_body(response, TOKEN_BODY_MAX)
                refused = adc_token  # expired or revoked under us: one fresh ADC token, then the answer stands
                continue
            break
        self._assertion = self._signed_jwt(response)
        self.assertions_signed += 1
        return {"grant_type": JWT_BEARER, "assertion": self._assertion}

    def _signed_jwt(self, response: httpx.Response) -> str:
        status = response.status_code
        doc = json_answer(response, TOKEN_BODY_MAX, what=f"IAM signJwt at {self._sign_where}",
                          retry_where="IAM signJwt ")
        if status == 200:
            signed = doc.get("signedJwt")
            if not isinstance(signed, str) or signed.count(".") != 2:
                raise SourceRequestError(f"IAM signJwt at {self._sign_where} answered HTTP 200 without a signedJwt")
            return signed
        error = doc.get("error") if isinstance(doc.get("error"), dict) else {}
        said = " ".join(str(error.get(k) or "") for k in ("status", "message")).strip()
        said = Redactor(self.secrets())(" ".join(said.split())[:300])
        message = f"IAM signJwt for {self.email} at {self._sign_where} answered HTTP {status}" + \
            (f", {said}" if said else "")
        if 300 <= status < 400:
            raise SourceRequestError(f"{message} (a redirect, not followed: check iam_endpoint)")
        if status in (401, 403, 404):
            raise CredentialsRefused(
                f"{message}; the identity that application default credentials resolve to needs the role "
                f"Service Account Token Creator (roles/iam.serviceAccountTokenCreator) on {self.email}, and the "
                f"project needs the IAM Service Account Credentials API enabled", status=status)
        raise SourceRequestError(f"{message}; check service_account.email and iam_endpoint")

    def endpoint_of(self, exc: BaseException) -> str | None:
        """The token endpoint, IAM signJwt or application default credentials, when ``exc`` is about one."""
        if isinstance(exc, RetryableStatus) and exc.where == "IAM signJwt ":
            return f"IAM signJwt at {self._sign_where}"
        if isinstance(exc, RetryableStatus) and exc.where == "application default credentials ":
            return "the refresh of application default credentials"
        if isinstance(exc, httpx.TransportError) and str(exc).startswith("application default credentials"):
            return "the refresh of application default credentials"
        if same_endpoint(exc, self.sign_url):
            return f"IAM signJwt at {self._sign_where}"
        return super().endpoint_of(exc)

    def secrets(self) -> tuple[str, ...]:
        return (*super().secrets(), *((self._assertion,) if self._assertion else ()), *self.adc.secrets())


class _Answer(google.auth.transport.Response):
    def __init__(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        self._status, self._headers, self._data = status, headers, data

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._headers

    @property
    def data(self) -> bytes:
        return self._data


class BoundedTransport(google.auth.transport.Request):
    """google-auth's transport interface on httpx, bounded: every request within ``timeout`` seconds
    (google-auth's own, shorter, timeouts are kept), answers up to ``max_bytes``, no redirects, no proxy
    settings from the environment. Transport failures are google-auth's TransportError, as its
    credentials expect (the compute-engine ping treats one as "not on Google Cloud")."""

    def __init__(self, timeout: float, *, max_bytes: int = TOKEN_BODY_MAX) -> None:
        self.timeout, self.max_bytes = timeout, max_bytes
        self._client = httpx.Client(trust_env=False, follow_redirects=False, timeout=timeout)

    def __call__(self, url: str, method: str = "GET", body: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None,
                 **kwargs: Any) -> _Answer:
        seconds = self.timeout if timeout is None else min(float(timeout), self.timeout)
        try:
            with self._client.stream(method, url, content=body, headers=dict(headers or {}), timeout=seconds) as r:
                data = read_body(r, self.max_bytes, truncate=False)
                return _Answer(r.status_code, dict(r.headers), data)
        except (httpx.HTTPError, BadPage) as e:
            # The type only: an httpx error's text can hold the request's headers.
            raise google.auth.exceptions.TransportError(f"{type(e).__name__} from {origin(url)}") from None

    def close(self) -> None:
        self._client.close()


class ApplicationDefaultCredentials:
    """The caller's own identity for signJwt: ``google.auth.default()`` found on first use, its token
    refreshed when google-auth says it is due (or was just refused), one refresh at a time."""

    _FIX = ("run where application default credentials exist (on GKE, Cloud Run or Compute Engine the "
            "workload's service account; elsewhere GOOGLE_APPLICATION_CREDENTIALS naming a workload identity "
            "federation file, or `gcloud auth application-default login`)")

    def __init__(self, *, timeout: float) -> None:
        self._transport = BoundedTransport(timeout)
        self._lock = threading.Lock()
        self._credentials: Any = None
        self._tokens: tuple[str, ...] = ()

    def token(self, *, refused: str | None = None) -> str:
        with self._lock:
            try:
                if self._credentials is None:
                    self._credentials, _ = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE], request=self._transport)
                creds = self._credentials
                if not creds.valid or creds.token == refused:
                    creds.refresh(self._transport)
            except google.auth.exceptions.DefaultCredentialsError as e:
                if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):  # google-auth's text names the file and why
                    raise InvalidSecret(f"service_account.email needs application default credentials, and "
                                        f"GOOGLE_APPLICATION_CREDENTIALS names no usable ones ({self._say(e)}); "
                                        f"{self._FIX}") from None
                raise InvalidSecret(f"service_account.email needs application default credentials, and none were "
                                    f"found; {self._FIX}") from None
            except google.auth.exceptions.TransportError as e:
                # A dropped or timed-out request: the source's client retries the attempt, as for the API.
                raise httpx.TransportError(f"application default credentials: {self._say(e)}") from None
            except google.auth.exceptions.GoogleAuthError as e:  # RefreshError, OAuthError (an STS refusal), ...
                if e.retryable:
                    raise RetryableStatus(503, None, where="application default credentials ") from None
                raise CredentialsRefused(f"application default credentials could not be refreshed "
                                         f"({self._say(e)}); {self._FIX}", status=401) from None
            token = str(creds.token)
            self._tokens = (token, *self._tokens[:1])
            return token

    def _say(self, e: Exception) -> str:
        text = " ".join(str(e).split())[:300]
        return Redactor(self._tokens)(text) or type(e).__name__

    def secrets(self) -> tuple[str, ...]:
        return self._tokens


_adc_lock = threading.Lock()
_adc: dict[float, ApplicationDefaultCredentials] = {}


def keyless_auth(email: str, subject: str, *, timeout: float, token_uri: str | None = None,
                 iam_endpoint: str | None = None) -> KeylessServiceAccountAuth:
    """The keyless auth of ``email`` acting for ``subject``, shared in this process like
    :func:`service_account_auth`; the process's application default credentials are found on first use."""
    uri, iam = token_uri or GOOGLE_TOKEN_URI, iam_endpoint or IAM_CREDENTIALS
    key = ("keyless:" + email, subject, uri, iam)
    with _cache_lock:
        found = _cache.get(key)
        if isinstance(found, KeylessServiceAccountAuth):
            _cache.move_to_end(key)
            return found
    with _adc_lock:
        adc = _adc.setdefault(timeout, ApplicationDefaultCredentials(timeout=timeout))
    auth = KeylessServiceAccountAuth(email, subject, adc, token_uri=uri, iam_endpoint=iam)
    with _cache_lock:
        stored = _cache.setdefault(key, auth)  # type: ignore[arg-type]
        while len(_cache) > _CACHE_MAX:
            _cache.popitem(last=False)
    assert isinstance(stored, KeylessServiceAccountAuth)
    return stored
