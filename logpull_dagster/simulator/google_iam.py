"""Google's side of keyless domain-wide delegation, for the simulator's Google API: where a workload gets
its own identity (application default credentials) and where IAM signs a JWT for a service account.

* ``GET /`` and ``GET /computeMetadata/v1/...``: the Compute Engine / GKE / Cloud Run metadata server
  (point ``GCE_METADATA_HOST`` and ``GCE_METADATA_IP`` at the simulator). Every request must carry
  ``Metadata-Flavor: Google`` (else 403, as the real one); it answers with that header. Served:
  ``instance/service-accounts/default/`` (``?recursive=true``: email, aliases, scopes),
  ``.../default/email``, ``.../default/token`` (an access token of the workload's service account),
  ``project/project-id``. Anything else is 404, which google-auth reads as "not set".
* ``POST /v1/token`` (Security Token Service): workload identity federation, the ADC of a workload
  outside Google Cloud (EKS, ECS, any OIDC issuer): an ``external_account`` file names the token URL, the
  pool provider (``audience``) and a file holding the workload's own token, which STS exchanges
  (``grant_type=urn:ietf:params:oauth:grant-type:token-exchange``) for a federated access token.
* ``POST /v1/projects/-/serviceAccounts/{email}:signJwt`` (IAM Service Account Credentials API): with an
  ADC access token from either of the above, for a caller granted Token Creator on ``email``, the claims
  in ``payload`` signed RS256 with the account's Google-held key, which the token endpoint trusts.
  Google's answers: no or unknown token 401 UNAUTHENTICATED; no grant, or no such account (the ``-``
  wildcard hides which), 403 PERMISSION_DENIED; a payload that is no JSON object or an ``exp`` in the
  past or more than 12 hours ahead, 400 INVALID_ARGUMENT.

ADC tokens are accepted by signJwt only, never by the Reports API.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .api import ApiRequest, Reply, json_bytes, json_error

STS_PATH = "/v1/token"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
SIGN_JWT = re.compile(r"^/v1/projects/-/serviceAccounts/(?P<account>[^/:]+):signJwt$")
METADATA_PREFIX = "/computeMetadata/v1/"
_FLAVOR = ("Metadata-Flavor", "Google")
_MAX_EXP_AHEAD = 12 * 3600  # signJwt: "no more than 12 hours in the future"
_CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"

#: What the token endpoint must be told to trust a managed key: (email, public key PEM, key id, subjects).
Trust = Callable[[str, bytes, str, Iterable[str]], None]


@dataclass
class _Managed:
    key: rsa.RSAPrivateKey
    key_id: str


def match(path: str) -> Mapping[str, str] | None:
    """The endpoint of ``path`` if it is one of these."""
    m = SIGN_JWT.match(path)
    if m:
        return {"endpoint": "signJwt", "account": unquote(m.group("account"))}
    if path == STS_PATH:
        return {"endpoint": "sts"}
    if path == "/" or path.startswith(METADATA_PREFIX):
        return {"endpoint": "metadata", "item": path[len(METADATA_PREFIX):] if path != "/" else ""}
    return None


class GoogleIam:
    """The identities and the signer; ``trust`` registers each managed key with the token endpoint."""

    def __init__(self, trust: Trust, project_id: str = "logpull-sim") -> None:
        self._trust, self.project_id = trust, project_id
        self._lock = threading.Lock()
        self._managed: dict[str, _Managed] = {}
        self._creators: dict[str, set[str]] = {}  # service account -> principals allowed to sign as it
        self._federated: dict[tuple[str, str], str] = {}  # (pool provider, subject token) -> principal
        self._tokens: dict[str, tuple[str, float]] = {}  # ADC access token -> (principal, expires at)
        self.workload: str | None = None  # the metadata server's service account
        self.token_lifetime = 3599.0
        self.signed = 0

    # -- what the Cloud console holds ----------------------------------------------------------------

    def managed_service_account(self, email: str, *, subjects: Iterable[str]) -> None:
        """A service account with a Google-held key (no key file exists) whose client ID is delegated
        domain-wide for the Reports scope, acting for ``subjects``."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_id = secrets.token_hex(20)
        with self._lock:
            self._managed[email] = _Managed(key, key_id)
        public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        self._trust(email, public, key_id, subjects)

    def grant_token_creator(self, principal: str, service_account: str) -> None:
        """roles/iam.serviceAccountTokenCreator for ``principal`` on ``service_account``."""
        with self._lock:
            self._creators.setdefault(service_account, set()).add(principal)

    def revoke_token_creator(self, principal: str, service_account: str) -> None:
        with self._lock:
            self._creators.get(service_account, set()).discard(principal)

    def set_workload(self, email: str | None) -> None:
        """The service account the metadata server hands out tokens of (None: not on Google Cloud)."""
        with self._lock:
            self.workload = email

    def federated_workload(self, principal: str) -> tuple[str, str]:
        """A workload identity pool provider trusting one workload token for ``principal``: (its audience,
        the workload's token, as its platform hands it out, e.g. a projected Kubernetes token)."""
        audience = ("//iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/logpull/"
                    "providers/sim")
        subject_token = "eyJsim." + secrets.token_urlsafe(32)
        with self._lock:
            self._federated[(audience, subject_token)] = principal
        return audience, subject_token

    def adc_tokens(self) -> list[str]:
        """Every ADC access token issued (a test looks for them where they must not be)."""
        with self._lock:
            return list(self._tokens)

    def revoke_adc_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    # -- answers -------------------------------------------------------------------------------------

    def _issue(self, principal: str) -> dict[str, Any]:
        token = "ya29.adc-" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = (principal, time.time() + self.token_lifetime)
        return {"access_token": token, "expires_in": int(self.token_lifetime), "token_type": "Bearer"}

    def exchange(self, form: Mapping[str, str]) -> Reply:
        """STS ``token-exchange``: a trusted workload token for a federated access token."""
        if form.get("grant_type") != TOKEN_EXCHANGE:
            return Reply(400, json_bytes({"error": "unsupported_grant_type",
                                          "error_description": "Invalid grant_type."}))
        with self._lock:
            principal = self._federated.get((form.get("audience", ""), form.get("subject_token", "")))
        if principal is None:
            return Reply(400, json_bytes({"error": "invalid_grant",
                                          "error_description": "The audience or subject token is invalid."}))
        issued = self._issue(principal)
        return Reply(200, json_bytes({**issued, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}))

    def metadata(self, request: ApiRequest) -> Reply:
        if request.headers.get("Metadata-Flavor") != "Google":
            return Reply(403, b"Missing required header: Metadata-Flavor", [_FLAVOR], "text/html")
        item = request.params["item"]
        with self._lock:
            workload = self.workload
        if item == "":  # google-auth's ping: is this Google Cloud?
            return Reply(200, b"computeMetadata/\n", [_FLAVOR], "application/text")
        if item == "project/project-id":
            return Reply(200, self.project_id.encode(), [_FLAVOR], "application/text")
        m = re.fullmatch(r"instance/service-accounts/(?P<sa>[^/]+)/(?P<what>.*)", item)
        if m is None or workload is None or m.group("sa") not in ("default", workload):
            return Reply(404, b"Not Found", [_FLAVOR], "text/html")
        what = m.group("what")
        if what == "":
            info = {"aliases": ["default"], "email": workload, "scopes": [_CLOUD_PLATFORM]}
            return Reply(200, json_bytes(info), [_FLAVOR])
        if what == "email":
            return Reply(200, workload.encode(), [_FLAVOR], "application/text")
        if what == "token":
            return Reply(200, json_bytes(self._issue(workload)), [_FLAVOR])
        return Reply(404, b"Not Found", [_FLAVOR], "text/html")

    def sign_jwt(self, request: ApiRequest) -> Reply:
        scheme, _, value = (request.authorization or "").partition(" ")
        with self._lock:
            held = self._tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if held is None or held[1] < time.time():
            return json_error(401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                              "token, login cookie or other valid authentication credential.")
        principal, account = held[0], request.params["account"]
        with self._lock:
            managed = self._managed.get(account)
            allowed = principal in self._creators.get(account, set())
        if managed is None or not allowed:
            return json_error(403, "Permission 'iam.serviceAccounts.signJwt' denied on resource (or it may not "
                              "exist).")
        try:
            body = json.loads(request.body)
            claims = json.loads(body["payload"])
        except (ValueError, KeyError, TypeError):
            return json_error(400, "Invalid payload: the payload must be a serialized JSON object.")
        if not isinstance(claims, dict):
            return json_error(400, "Invalid payload: the payload must be a serialized JSON object.")
        exp, now = claims.get("exp"), time.time()
        if exp is not None and (not isinstance(exp, int) or exp < now or exp > now + _MAX_EXP_AHEAD):
            return json_error(400, "Invalid payload: exp must be an integer timestamp that is not in the past "
                              "and no more than 12 hours in the future.")
        header = {"alg": "RS256", "kid": managed.key_id, "typ": "JWT"}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = managed.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        with self._lock:
            self.signed += 1
        return Reply(200, json_bytes({"keyId": managed.key_id, "signedJwt": f"{signing_input}.{_b64(signature)}"}))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
