"""Credentials for :class:`~logpull_dagster.sources.http.RetryingClient`, as ``httpx.Auth`` objects.

What each one promises:

* :class:`BearerAuth` / :class:`SswsAuth`: ``Authorization: Bearer <token>`` (Google, GitHub, Slack) /
  ``Authorization: SSWS <token>`` (an Okta API token) on every request the client sends, which are
  only ever to ``base_url``'s origin (the client refuses any other origin before sending).
* :class:`OAuthClientCredentials`: an access token from ``token_url`` by the client-credentials
  grant (a form POST; ``client_id`` and ``client_secret`` in the body, ``client_secret_post``), sent
  as ``Authorization: Bearer <access token>`` to the API. The client secret goes only to
  ``token_url``; the access token only to the API. One token serves every thread and every client
  that shares the object; it is fetched on first use, again ``refresh_margin`` seconds before its
  ``expires_in`` ends (at most half its lifetime early), and once more when the API answers 401 to
  it: the request is then sent once again, and a second 401 is the client's CredentialsRefused.
  Only one thread fetches at a time; the others wait for its token.

The token request runs inside the API request's attempt, on the same client: it is bounded by the
same request deadline (``timeout``), its TLS trust, client certificate and proxy are the client's
(``ca_file``, ``client_cert``, ``proxy``), and its answer is
read up to ``max_bytes`` (64 KiB). A throttled or failing token endpoint (429, 5xx, a dropped
connection) is retried by the client like the API; a refusal (``invalid_client``, ``invalid_scope``...)
is permanent, and its message names the token URL (without query) and the OAuth ``error`` and
``error_description``.

Never logged or put in a message: the token, the client secret, the access token (an OAuth error
text is passed through a :class:`~logpull_dagster.redact.Redactor` of them first). Each object's
``secrets()`` lists the values it holds now, so that a caller can redact them from any text it writes;
an access token arrives at run time, so it is in no config and only ``secrets()`` knows it.

Only sync clients: httpx's async flow would need an async lock, and nothing here is async.
A JWT variant (``private_key_jwt`` client authentication, or a Google service account's JWT-bearer
grant) is a subclass that overrides one method; see :class:`OAuthToken`.
:class:`OAuthPrivateKeyJwt` is the first: the client-credentials grant with the client authenticated
by an RS256 JWT signed with its private key (RFC 7523 §2.2; Okta's service apps). The private key never
leaves the process: only each assertion, made fresh (new ``jti``, short ``exp``) for every token
request, goes to ``token_url``.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Generator, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from logpull_dagster import json_codec
from logpull_dagster.redact import Redactor
from logpull_dagster.sources import BadPage, CredentialsRefused, InvalidSecret, SourceRequestError
from logpull_dagster.sources.http import (
    ERROR_BODY_MAX,
    RETRY_STATUS,
    RetryableStatus,
    parse_retry_after,
    read_body,
    server_date,
)

TOKEN_BODY_MAX = ERROR_BODY_MAX  # a token answer is a few hundred bytes to a few KiB (a JWT)
# A refusal that is about an assertion's times (Google: "Check your iat and exp values"; Okta: "The
# client_assertion token is expired"): the host's clock is the first suspect.
_TIME_REFUSAL = re.compile(r"\b(?:iat|exp|nbf)\b|expired|in the future|too early|timeframe|clock", re.IGNORECASE)
# Below this a clock difference is the Date header's whole seconds and the answer's flight time.
CLOCK_TOLERANCE = 5.0


class HeaderAuth(httpx.Auth):
    """One fixed credential, ``Authorization: <scheme> <token>``, on every request."""

    scheme = ""

    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"{self.scheme} {self._token}"
        yield request

    def secrets(self) -> tuple[str, ...]:
        return (self._token,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<redacted>)"


class BearerAuth(HeaderAuth):
    scheme = "Bearer"


class SswsAuth(HeaderAuth):
    """Okta's API token scheme."""

    scheme = "SSWS"


class TokenRefused(CredentialsRefused):
    """The token endpoint refused to issue a token (HTTP 400/401/403 with an OAuth ``error``)."""


class OAuthToken(httpx.Auth):
    """An access token from an OAuth token endpoint: cached, refreshed before expiry and once on a 401.

    A subclass says how to ask for the token, and nothing else, by overriding :meth:`token_form`
    (or, for a client-credentials grant, :meth:`OAuthClientCredentials.client_authentication`)::

        class GoogleServiceAccount(OAuthToken):            # RFC 7523 JWT-bearer grant
            def token_form(self) -> dict[str, str]:
                return {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
                        "assertion": self.signed_assertion()}

    Each call makes a new form, so an assertion made there is fresh for every token request.
    """

    # The request is sent again after a 401; httpx must then hold its body (a GET has none; cheap).
    requires_request_body = True

    def __init__(self, token_url: str, *, refresh_margin: float = 60.0, max_bytes: int = TOKEN_BODY_MAX,
                 credential: str = "the OAuth client credentials") -> None:
        self.token_url, self.refresh_margin, self.max_bytes, self.credential = \
            token_url, refresh_margin, max_bytes, credential
        parts = urlsplit(token_url)
        self._where = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))  # a query may hold a secret
        self._lock = threading.Lock()
        self._token: str | None = None
        self._previous: str | None = None  # still in texts written while it was current
        self._renew_at = 0.0  # time.monotonic
        self.tokens_fetched = 0

    def token_form(self) -> dict[str, str]:
        """The form fields of the token request (grant type and client authentication)."""
        raise NotImplementedError

    def token_form_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, dict[str, str]]:
        """The form, for a subclass that needs requests of its own to make it (a remote signer, e.g.
        Google's IAM ``signJwt``): it yields them as an auth flow does, on the API request's client and
        within its deadline. The default makes none and returns :meth:`token_form`."""
        return self.token_form()
        yield request  # pragma: no cover  (makes this a generator)

    def secrets(self) -> tuple[str, ...]:
        """The access tokens held now (current, and the one it replaced)."""
        return tuple(t for t in (self._token, self._previous) if t)

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # Overridden (not auth_flow) as httpx's docs ask of a flow that takes a lock.
        if self.requires_request_body:
            request.read()
        token = yield from self._valid_token(request, refused=None)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            return
        _discard(response)
        token = yield from self._valid_token(request, refused=token)
        request.headers["Authorization"] = f"Bearer {token}"
        yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        raise NotImplementedError(f"{type(self).__name__} works with a sync httpx.Client only")
        yield request  # pragma: no cover  (makes this an async generator, as httpx calls it)

    def _valid_token(self, request: httpx.Request,
                     refused: str | None) -> Generator[httpx.Request, httpx.Response, str]:
        """The cached token, unless it is due or is the one just refused; else a new one. Under the lock,
        so threads that find the same stale token make one token request between them."""
        with self._lock:
            if self._token is not None and self._token != refused and time.monotonic() < self._renew_at:
                return self._token
            sent = time.monotonic()
            form = yield from self.token_form_flow(request)
            token_request = httpx.Request(
                "POST", self.token_url, data=form, headers={"Accept": "application/json"},
                extensions={"timeout": request.extensions.get("timeout", {})},
            )
            response = yield token_request
            token, lifetime = self._parse(response)
            self._previous, self._token = self._token, token
            self.tokens_fetched += 1
            early = min(self.refresh_margin, lifetime / 2)
            self._renew_at = sent + lifetime - early
            return token

    def _parse(self, response: httpx.Response) -> tuple[str, float]:
        """(access token, lifetime in seconds) of a token answer; raises on anything else."""
        status = response.status_code
        doc = json_answer(response, self.max_bytes, what=f"the token endpoint {self._where}",
                          retry_where="token endpoint ")
        if status != 200:
            error = self._clean(doc.get("error"))
            described = self._clean(doc.get("error_description"))
            said = f", {error}" + (f": {described}" if described else "") if error else ""
            message = f"the token endpoint {self._where} answered HTTP {status}{said}"
            if status in (400, 401) and _TIME_REFUSAL.search(f"{error} {described}"):
                message += clock_hint(response, "the token endpoint's")
            if 300 <= status < 400:
                raise SourceRequestError(f"{message} (a redirect, not followed: check the token URL)")
            if status in (400, 401, 403) and error:
                raise TokenRefused(f"{message}; check {self.credential}", status=status)
            raise SourceRequestError(f"{message}; check the token URL")
        token, kind = doc.get("access_token"), doc.get("token_type", "Bearer")
        if not isinstance(token, str) or not token:
            raise SourceRequestError(f"the token endpoint {self._where} answered HTTP 200 without an access_token")
        if not isinstance(kind, str) or kind.lower() != "bearer":
            raise SourceRequestError(f"the token endpoint {self._where} issued a {self._clean(kind)!r} token, "
                                     f"not a Bearer token")
        return token, _lifetime(doc.get("expires_in"))

    def endpoint_of(self, exc: BaseException) -> str | None:
        """Which of this auth's own requests ``exc`` is about (a transport error or a retryable status
        the client gave up on), named for a message: ``the token endpoint <URL>``; None for the API's
        request. A token request runs inside the API request's attempt, so without this a token
        endpoint that never answers would be reported as the API timing out."""
        if isinstance(exc, RetryableStatus):
            return f"the token endpoint {self._where}" if exc.where == "token endpoint " else None
        return f"the token endpoint {self._where}" if same_endpoint(exc, self.token_url) else None

    def _clean(self, value: object) -> str:
        """An OAuth error field, fit for a message: a string, short, one line, without our secrets."""
        if value is None:
            return ""
        return Redactor(self.secrets())(" ".join(str(value).split())[:300])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._where!r})"


class OAuthClientCredentials(OAuthToken):
    """The client-credentials grant (RFC 6749 §4.4), the client authenticated by its secret in the form.

    ``scope``: one string (``https://graph.microsoft.com/.default``) or several, sent space-separated.
    A ``private_key_jwt`` variant overrides :meth:`client_authentication` to return ``client_id``,
    ``client_assertion_type`` and ``client_assertion`` (a signed JWT made per call) instead.
    """

    def __init__(self, token_url: str, client_id: str, client_secret: str, scope: str | Iterable[str] | None = None,
                 *, refresh_margin: float = 60.0, max_bytes: int = TOKEN_BODY_MAX,
                 credential: str = "the OAuth client id and secret") -> None:
        super().__init__(token_url, refresh_margin=refresh_margin, max_bytes=max_bytes, credential=credential)
        self.client_id, self._client_secret = client_id, client_secret
        self.scope = scope if scope is None or isinstance(scope, str) else " ".join(scope)

    def client_authentication(self) -> dict[str, str]:
        return {"client_id": self.client_id, "client_secret": self._client_secret}

    def token_form(self) -> dict[str, str]:
        form = {"grant_type": "client_credentials", **self.client_authentication()}
        if self.scope:
            form["scope"] = self.scope
        return form

    def secrets(self) -> tuple[str, ...]:
        """The client secret and the access tokens held now."""
        return (self._client_secret, *super().secrets())


def pem_private_key(value: str) -> str:
    """A private key as PEM, from a PEM, or from the base64 of a PEM file or of its DER bytes.

    A secret comes from an environment variable: ``$(cat key.pem)`` (a PEM keeps its line breaks,
    ``redact.clean_secret``) or, where a one-line value is easier to store, ``base64 -w0 key.pem``. A PEM
    pasted on one line with literal ``\\n`` for its line breaks (as a JSON string or a ``.env`` file holds
    it) gets its line breaks back. Anything else is returned unchanged (the signer then refuses it clearly).
    """
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text.replace("\\r\\n", "\n").replace("\\n", "\n")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return text
    if raw.lstrip().startswith(b"-----BEGIN"):
        return raw.decode("ascii", "replace").strip()
    body = base64.encodebytes(raw).decode("ascii").replace("\n", "")
    lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN PRIVATE KEY-----\n{lines}\n-----END PRIVATE KEY-----"


# The EC curves google-auth signs with, and the JWS algorithm of each (RFC 7518 §3.4); Okta takes both.
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384"}
_JWK_CURVES: dict[str, Any] = {}  # filled on first use: "P-256" -> cryptography's curve class
# The members of a private JWK that are secret (RFC 7518 §6.2.2, §6.3.2).
_JWK_PRIVATE = ("d", "p", "q", "dp", "dq", "qi")


class _NotAKey(ValueError):
    """Why a value is not a private key we sign with (the text names no part of the key)."""


def _b64url_int(jwk: dict[str, Any], name: str) -> int:
    value = jwk.get(name)
    if not isinstance(value, str) or not value:
        raise _NotAKey(f"its JWK has no {name!r}")
    try:
        return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")
    except (binascii.Error, ValueError):
        raise _NotAKey(f"its JWK's {name!r} is not base64url") from None


def _jwk_private_key(jwk: dict[str, Any]) -> Any:
    """The ``cryptography`` private key of a JWK (RFC 7517/7518): RSA (``n``, ``e``, ``d``, and the CRT
    members, or without them: recovered from ``n``, ``e``, ``d``) or EC (``crv``, ``x``, ``y``, ``d``)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    _JWK_CURVES.update({"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1})
    kty = jwk.get("kty")
    if "d" not in jwk:
        raise _NotAKey("it is a public JWK (no \"d\"): that half is the one registered with the app")
    if kty == "RSA":
        n, e, d = (_b64url_int(jwk, k) for k in ("n", "e", "d"))
        public = rsa.RSAPublicNumbers(e, n)
        if all(k in jwk for k in ("p", "q", "dp", "dq", "qi")):
            p, q, dp, dq, qi = (_b64url_int(jwk, k) for k in ("p", "q", "dp", "dq", "qi"))
        else:  # RFC 7518 §6.3.2: the CRT members are optional
            p, q = rsa.rsa_recover_prime_factors(n, e, d)
            dp, dq, qi = rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q)
        return rsa.RSAPrivateNumbers(p, q, d, dp, dq, qi, public).private_key()
    if kty == "EC":
        curve = _JWK_CURVES.get(str(jwk.get("crv")))
        if curve is None:
            raise _NotAKey(f"its JWK's curve {str(jwk.get('crv'))[:20]!r} is not P-256, P-384 or P-521")
        x, y, d = (_b64url_int(jwk, k) for k in ("x", "y", "d"))
        numbers = ec.EllipticCurvePrivateNumbers(d, ec.EllipticCurvePublicNumbers(x, y, curve()))
        return numbers.private_key()
    raise _NotAKey(f"its JWK's kty is {str(kty)[:20]!r}, not RSA or EC")


def read_private_key(value: str, *, key_types: tuple[str, ...] = ("RSA", "EC")) -> tuple[Any, str | None, list[str]]:
    """(``cryptography`` private key, the JWK's ``kid`` or None, the secret strings to redact) of ``value``:
    a PEM (``pem_private_key``'s forms) or a JWK JSON (one key, or a JWK set of exactly one, as Okta's
    console generates it). Raises _NotAKey saying what is wrong, never quoting the key."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    text, kid, held = value.strip(), None, [value.strip()]
    if text.startswith("{"):
        try:
            jwk = json_codec.loads(text.encode())
        except json_codec.JSONError:
            raise _NotAKey("it starts like a JWK but is not JSON") from None
        if isinstance(jwk, dict) and isinstance(jwk.get("keys"), list):  # a JWK set
            if len(jwk["keys"]) != 1:
                raise _NotAKey(f"it is a JWK set of {len(jwk['keys'])} keys; give the one key")
            jwk = jwk["keys"][0]
        if not isinstance(jwk, dict):
            raise _NotAKey("it is JSON but not a JWK object")
        held += [v for k in _JWK_PRIVATE if isinstance(v := jwk.get(k), str) and v]
        kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) and jwk.get("kid") else None
        key = _jwk_private_key(jwk)
    else:
        pem = pem_private_key(text)
        # The private key's own block: `openssl ecparam -genkey` writes an EC PARAMETERS block before it.
        block = re.search(r"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.*?-----END \1-----", pem, re.S)
        pem = block.group(0) if block else pem
        held.append(pem)
        if "ENCRYPTED" in pem.split("\n", 1)[0] or "Proc-Type: 4,ENCRYPTED" in pem:
            raise _NotAKey("it is encrypted (a passphrase); decrypt it once: openssl pkey -in key.pem -out plain.pem")
        try:
            key = serialization.load_pem_private_key(pem.encode("ascii", "replace"), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise _NotAKey("it is not a private key in PEM form") from None
    if isinstance(key, rsa.RSAPrivateKey) and "RSA" in key_types:
        return key, kid, held
    if isinstance(key, ec.EllipticCurvePrivateKey) and "EC" in key_types:
        if key.curve.name not in _EC_ALGORITHMS:
            raise _NotAKey(f"it is an EC key on {key.curve.name}; use a P-256 (ES256) or P-384 (ES384) key")
        return key, kid, held
    kind = "an RSA key" if isinstance(key, rsa.RSAPrivateKey) else "an EC key" \
        if isinstance(key, ec.EllipticCurvePrivateKey) else f"a {type(key).__name__.removeprefix('_')} key"
    raise _NotAKey(f"it is {kind}, and only {' or '.join(key_types)} keys sign here")


CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class OAuthPrivateKeyJwt(OAuthClientCredentials):
    """The client-credentials grant with ``private_key_jwt`` client authentication (RFC 7523 §2.2, OIDC
    Core §9): ``client_assertion`` is a JWT signed RS256 with ``private_key`` (PEM), with ``iss`` =
    ``sub`` = ``client_id``, ``aud`` = ``token_url``, ``iat``, ``exp`` = ``iat`` + ``assertion_lifetime``
    (Okta refuses more than an hour) and a fresh ``jti`` (Okta refuses a replayed one); ``key_id`` is
    the header's ``kid`` (default: a JWK's own ``kid``).

    ``private_key``: an RSA key (RS256) or an EC key on P-256 (ES256) or P-384 (ES384), the header's
    ``alg`` saying which; as PEM (PKCS#8, PKCS#1 or SEC1; also with literal ``\\n`` line breaks, or as
    base64: ``pem_private_key``) or as the JWK JSON Okta's Admin Console generates for a service app
    (``{"kty": "RSA", "kid": ..., "n": ..., "d": ..., ...}``, or a JWK set of that one key). Anything else
    (a public key, an encrypted PEM, another curve or key type) fails here, naming ``key_name`` and what
    to give instead, before any request: retrying cannot fix it.
    """

    #: The key types this grant signs with (a subclass for a service that takes only RSA narrows it).
    key_types: tuple[str, ...] = ("RSA", "EC")

    def refusal(self, key_name: str, why: str) -> str:
        """The message for a key that cannot sign here (``why`` names no part of it)."""
        return (f"{key_name} is not a usable private key: {why}; set it to the RSA or EC (P-256, P-384) private key "
                f"whose public key is registered with the app, as PEM (-----BEGIN PRIVATE KEY-----, line breaks "
                f"as they are or as \\n), its base64, or the JWK JSON the Admin Console generated (with \"d\")")

    def __init__(self, token_url: str, client_id: str, private_key: str, scope: str | Iterable[str] | None = None,
                 *, key_id: str | None = None, assertion_lifetime: float = 300.0, refresh_margin: float = 60.0,
                 max_bytes: int = TOKEN_BODY_MAX, key_name: str = "the private key",
                 credential: str = "the OAuth client id and its private key") -> None:
        from google.auth import crypt  # google-auth: the signers Google's own clients use

        try:
            key, jwk_kid, held = read_private_key(private_key, key_types=self.key_types)
        except _NotAKey as e:
            raise InvalidSecret(self.refusal(key_name, str(e))) from None
        key_id = key_id or jwk_kid
        signer = crypt.RSASigner(key, key_id=key_id) if not hasattr(key, "curve") else crypt.EsSigner(key, key_id)
        super().__init__(token_url, client_id, private_key.strip(), scope, refresh_margin=refresh_margin,
                         max_bytes=max_bytes, credential=credential)
        self._signer: crypt.Signer = signer
        self._held = tuple(held)
        self.key_id, self.assertion_lifetime = key_id, assertion_lifetime
        #: The JWS ``alg`` of each assertion (its header says it): RS256, or ES256/ES384 for an EC key.
        self.algorithm = getattr(signer, "algorithm", "RS256")
        self._assertion: str | None = None

    def client_authentication(self) -> dict[str, str]:
        from google.auth import jwt

        now = int(time.time())
        payload = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url, "iat": now,
                   "exp": now + int(self.assertion_lifetime), "jti": uuid.uuid4().hex}
        self._assertion = jwt.encode(self._signer, payload, key_id=self.key_id).decode()
        return {"client_id": self.client_id, "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": self._assertion}

    def secrets(self) -> tuple[str, ...]:
        """The private key (as given, as PEM, a JWK's private members), the last assertion (usable until it
        expires) and the access tokens held now."""
        return tuple(s for s in (*super().secrets(), *self._held, self._assertion) if s)


_PEM_BLOCK = r"-----BEGIN {0}-----[A-Za-z0-9+/=\s]+-----END {0}-----"


class OAuthCertificateJwt(OAuthPrivateKeyJwt):
    """The client-credentials grant with a *certificate* credential (Microsoft identity platform,
    "Microsoft identity platform application authentication certificate credentials", learn.microsoft.com):
    ``client_assertion`` is an RS256 JWT signed with the certificate's private key whose header names the
    certificate by ``x5t`` (base64url SHA-1 thumbprint of its DER) and ``x5t#S256`` (SHA-256; newer docs
    accept either), with ``aud`` = ``token_url``, ``iss`` = ``sub`` = ``client_id``, a fresh ``jti``,
    ``nbf``/``iat`` now and ``exp`` shortly after. ``pem`` holds the private key and the certificate (one
    PEM file, as ``cat key.pem cert.pem`` or ``openssl pkcs12 -nodes`` writes it); a missing part fails here,
    naming ``key_name``, before any request. The private key and the certificate never leave the process.
    """

    key_types = ("RSA",)

    def refusal(self, key_name: str, why: str) -> str:
        return (f"{key_name} is not an RSA private key in PEM form ({why}); set it to one PEM holding the "
                f"private key and the certificate uploaded to the app registration (cat key.pem cert.pem)")

    def __init__(self, token_url: str, client_id: str, pem: str, scope: str | Iterable[str] | None = None,
                 *, assertion_lifetime: float = 300.0, refresh_margin: float = 60.0,
                 max_bytes: int = TOKEN_BODY_MAX, key_name: str = "the certificate credential",
                 credential: str = "the OAuth client id and its certificate") -> None:
        import hashlib
        import ssl

        text = pem_private_key(pem) if "-----BEGIN" not in pem else pem
        certs = re.findall(_PEM_BLOCK.format("CERTIFICATE"), text)
        keys = re.findall(_PEM_BLOCK.format("(?:RSA )?PRIVATE KEY"), text)
        if not certs or not keys:
            missing = " and ".join(n for n, found in (("a certificate (-----BEGIN CERTIFICATE-----)", certs),
                                                      ("a private key (-----BEGIN PRIVATE KEY-----)", keys))
                                   if not found)
            raise InvalidSecret(f"{key_name} lacks {missing}; set it to one PEM holding the private key and "
                                f"the certificate uploaded to the app registration (cat key.pem cert.pem)")
        key_text = re.search(_PEM_BLOCK.format("(?:RSA )?PRIVATE KEY"), text).group(0)  # type: ignore[union-attr]
        super().__init__(token_url, client_id, key_text, scope, assertion_lifetime=assertion_lifetime,
                         refresh_margin=refresh_margin, max_bytes=max_bytes, key_name=key_name, credential=credential)
        try:
            der = ssl.PEM_cert_to_DER_cert(certs[0])
        except ValueError:
            raise InvalidSecret(f"{key_name}: its certificate is not valid PEM") from None
        self.x5t = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).decode().rstrip("=")  # SHA-1: x5t, RFC 7515
        self.x5t_s256 = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
        self._pem = text

    def client_authentication(self) -> dict[str, str]:
        from google.auth import jwt

        now = int(time.time())
        payload = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url, "iat": now, "nbf": now,
                   "exp": now + int(self.assertion_lifetime), "jti": str(uuid.uuid4())}
        header = {"x5t": self.x5t, "x5t#S256": self.x5t_s256}
        self._assertion = jwt.encode(self._signer, payload, header=header).decode()
        return {"client_id": self.client_id, "client_assertion_type": CLIENT_ASSERTION_TYPE,
                "client_assertion": self._assertion}

    def secrets(self) -> tuple[str, ...]:
        """The PEM (key and certificate), the last assertion and the access tokens held now."""
        return (self._pem, *super().secrets())


def clock_hint(response: httpx.Response, whose: str) -> str:
    """``; this host's clock is N s ahead of <whose>; sync it (NTP)`` from the answer's ``Date``, for a
    refusal about an assertion's ``iat``/``exp`` (which this host's clock set); or that the clocks agree,
    so the cause is elsewhere; or that there was no Date to compare with."""
    theirs = server_date(response.headers)
    if theirs is None:
        return f"; {whose} answer has no Date to compare this host's clock with: check that it is synced (NTP)"
    skew = time.time() - theirs
    if abs(skew) < CLOCK_TOLERANCE:
        return f"; this host's clock agrees with {whose} (within {CLOCK_TOLERANCE:g} s), so it is not the cause"
    return f"; this host's clock is {abs(skew):.0f} s {'ahead of' if skew > 0 else 'behind'} {whose}; sync it (NTP)"


def same_endpoint(exc: BaseException, url: str) -> bool:
    """Whether the httpx error ``exc`` is about a request to ``url`` (scheme, host, port and path)."""
    try:
        request = exc.request if isinstance(exc, httpx.RequestError) else None
    except RuntimeError:  # httpx raises when the error was not given its request
        return False
    if request is None:
        return False
    theirs, ours = request.url, httpx.URL(url)
    return (theirs.scheme, theirs.host, theirs.port, theirs.path) == (ours.scheme, ours.host, ours.port, ours.path)


def _lifetime(expires_in: object) -> float:
    """Seconds a token lives: ``expires_in`` (a number, or a string of one as some servers send);
    without one, until the API refuses it (a 401 then fetches a new one)."""
    if isinstance(expires_in, bool):
        return float("inf")
    try:
        seconds = float(expires_in)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("inf")
    return seconds if seconds > 0 else 0.0


# httpx reads in full, unbounded, every response an auth flow moves past (``response.read()`` in
# ``Client._send_handling_auth``). These hand httpx an empty stream instead and deal with the real one here.

def json_answer(response: httpx.Response, limit: int, *, what: str, retry_where: str) -> dict[str, Any]:
    """The JSON object of an answer an auth flow moved past (a token endpoint's, a remote signer's), read
    up to ``limit``; ``{}`` when it is no JSON object. Raises RetryableStatus for 429/5xx (``retry_where``
    names the endpoint in the retry's reason) and SourceRequestError, naming ``what``, for an unreadable body."""
    status = response.status_code
    try:
        body = take_body(response, limit)
    except BadPage as e:
        raise SourceRequestError(f"{what} answered HTTP {status}, unreadable: {e}") from None
    if status in RETRY_STATUS:
        raise RetryableStatus(status, parse_retry_after(response.headers.get("retry-after")), where=retry_where)
    try:
        doc = json_codec.loads(body)
    except json_codec.JSONError:
        return {}
    return doc if isinstance(doc, dict) else {}


def take_body(response: httpx.Response, limit: int) -> bytes:
    """At most ``limit`` decoded bytes of ``response`` (more raises BadPage)."""
    detached = httpx.Response(response.status_code, headers=response.headers, stream=response.stream)
    response.stream = httpx.ByteStream(b"")
    try:
        return read_body(detached, limit, truncate=False)
    finally:
        detached.close()


def _discard(response: httpx.Response) -> None:
    """Drop a response unread (its connection is closed, not reused)."""
    stream = response.stream
    response.stream = httpx.ByteStream(b"")
    if isinstance(stream, httpx.SyncByteStream):
        stream.close()
