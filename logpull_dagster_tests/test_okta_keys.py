"""The forms an Okta service app's private key arrives in: the JWK JSON the Admin Console generates, a PEM
pasted on one line with literal ``\\n``, EC keys (ES256/ES384), each read as every secret is
(``redact.clean_secret``) and proven against the simulator's token endpoint, which verifies the
assertion's signature with the public key registered for the app. Keys it cannot sign with are refused
before any request, saying what to give instead and never quoting the key."""

from __future__ import annotations

import base64
import json
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from logpull_dagster import plugins
from logpull_dagster.config import load_config
from logpull_dagster.redact import clean_secret
from logpull_dagster.sources import InvalidSecret
from logpull_dagster.sources.auth import OAuthPrivateKeyJwt, TokenRefused

from .test_okta import CLIENT_ID, W10, api_of, landed, pull, source, truth, write_config
from .test_okta import okta_sim as okta_sim  # the fixture, which the tests take by name

ENV = "OKTA_PRIVATE_KEY"
KEY_NAME = f"oauth.private_key ({ENV})"


def b64u(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8 or 1, "big")).decode().rstrip("=")


def pem_of(key: Any) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def public_pem(key: Any) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str = "okta-kid-1") -> dict[str, str]:
    """The private JWK as Okta's Admin Console shows it after "Generate new key"."""
    n = key.private_numbers()
    return {"kty": "RSA", "alg": "RS256", "kid": kid, "use": "sig", "e": b64u(n.public_numbers.e),
            "n": b64u(n.public_numbers.n), "d": b64u(n.d), "p": b64u(n.p), "q": b64u(n.q), "dp": b64u(n.dmp1),
            "dq": b64u(n.dmq1), "qi": b64u(n.iqmp)}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str = "okta-ec-1") -> dict[str, str]:
    n = key.private_numbers()
    size = (key.curve.key_size + 7) // 8
    pad = lambda v: base64.urlsafe_b64encode(v.to_bytes(size, "big")).decode().rstrip("=")  # noqa: E731
    return {"kty": "EC", "crv": "P-256", "kid": kid, "x": pad(n.public_numbers.x), "y": pad(n.public_numbers.y),
            "d": pad(n.private_value)}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def header_of(assertion: str) -> dict[str, Any]:
    head = assertion.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


def assertions(src: Any) -> list[str]:
    return [s for s in src.secrets() if s.count(".") == 2 and s.startswith("eyJ")]


def forms(rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey) -> dict[str, tuple[str, Any, str, str]]:
    """name -> (the variable's value, the key, the header's alg, its kid) for every accepted form."""
    pem = pem_of(rsa_key)
    sec1 = ec_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
    params = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    no_crt = {k: v for k, v in rsa_jwk(rsa_key).items() if k not in ("p", "q", "dp", "dq", "qi")}
    return {
        # as the console shows it: pretty-printed, with spaces and line breaks
        "rsa_jwk": (json.dumps(rsa_jwk(rsa_key), indent=2), rsa_key, "RS256", "okta-kid-1"),
        "rsa_jwk_compact": (json.dumps(rsa_jwk(rsa_key), separators=(",", ":")), rsa_key, "RS256", "okta-kid-1"),
        "rsa_jwk_set": (json.dumps({"keys": [rsa_jwk(rsa_key)]}), rsa_key, "RS256", "okta-kid-1"),
        "rsa_jwk_without_crt": (json.dumps(no_crt), rsa_key, "RS256", "okta-kid-1"),
        # a PEM pasted on one line with literal \n (a .env file, a JSON string)
        "rsa_pem_literal_n": (pem.strip().replace("\n", "\\n"), rsa_key, "RS256", ""),
        "ec_pem": (pem_of(ec_key), ec_key, "ES256", ""),
        "ec_sec1_with_params": (params + sec1, ec_key, "ES256", ""),  # `openssl ecparam -genkey` output
        "ec_jwk": (json.dumps(ec_jwk(ec_key), indent=2), ec_key, "ES256", "okta-ec-1"),
        "ec_pem_literal_n": (pem_of(ec_key).strip().replace("\n", "\\n"), ec_key, "ES256", ""),
    }


FORMS = ["rsa_jwk", "rsa_jwk_compact", "rsa_jwk_set", "rsa_jwk_without_crt", "rsa_pem_literal_n", "ec_pem",
         "ec_sec1_with_params", "ec_jwk", "ec_pem_literal_n"]


@pytest.mark.parametrize("form", FORMS)
def test_every_key_form_okta_hands_out_gets_a_token_and_reads(okta_sim, rsa_key, ec_key, form):
    value, key, alg, kid = forms(rsa_key, ec_key)[form]
    api_of(okta_sim).register_client(CLIENT_ID, public_pem(key))
    private = clean_secret(ENV, value)  # as the run reads the variable: no "cannot be sent in a header"
    auth = OAuthPrivateKeyJwt(f"{okta_sim.url}/oauth2/v1/token", CLIENT_ID, private, ["okta.logs.read"],
                              key_name=KEY_NAME)
    src = source(okta_sim, auth=auth)
    try:
        page = src.fetch_page(W10, None)
        [assertion] = assertions(src)
        held = src.secrets()
    finally:
        src.close()
    assert page.items and api_of(okta_sim).tokens_issued == 1
    head = header_of(assertion)
    assert head["alg"] == alg == auth.algorithm
    assert head.get("kid", "") == kid  # a JWK's kid is the default key id
    if form.endswith("jwk"):  # the key's private members are masked in any text written
        doc = json.loads(value)
        assert doc["d"] in held and all(doc[k] in held for k in ("p", "q") if k in doc)


def test_an_ec_key_okta_does_not_know_is_refused_by_its_signature(okta_sim, ec_key):
    # Another EC key registered; then an RSA key registered while an EC assertion is sent: refused, not a crash.
    others = (ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(public_exponent=65537, key_size=2048))
    for other in others:
        api_of(okta_sim).register_client(CLIENT_ID, public_pem(other))
        src = source(okta_sim, auth=OAuthPrivateKeyJwt(f"{okta_sim.url}/oauth2/v1/token", CLIENT_ID, pem_of(ec_key),
                                                       ["okta.logs.read"]))
        try:
            with pytest.raises(TokenRefused, match="signature is invalid"):
                src.fetch_page(W10, None)
        finally:
            src.close()


def test_a_jwk_from_the_config_reads_the_window(okta_sim, rsa_key, tmp_path, store, landing):
    """Through the config and the plug-in opener, as a run opens the source."""
    api_of(okta_sim).register_client(CLIENT_ID, public_pem(rsa_key))
    oauth = {"client_id": CLIENT_ID, "private_key": {"env": ENV}, "token_url": f"{okta_sim.url}/oauth2/v1/token"}
    cfg = load_config(write_config(tmp_path, base_url=okta_sim.url, oauth=oauth, page_size=100)).sources[0]
    value = json.dumps(rsa_jwk(rsa_key), indent=2)
    src = plugins.open_source(cfg, lambda name: clean_secret(name, {ENV: value}[name]))
    try:
        pull(src, W10, store, landing)  # type: ignore[arg-type]
        text = orjson.dumps(src.secrets()).decode()
    finally:
        src.close()
    assert sorted(landed(landing, store, W10)) == truth(okta_sim, W10)
    assert rsa_jwk(rsa_key)["d"] in text


def refused(value: str) -> str:
    with pytest.raises(InvalidSecret) as bad:
        OAuthPrivateKeyJwt("https://acme.okta.com/oauth2/v1/token", CLIENT_ID, value, key_name=KEY_NAME)
    return str(bad.value)


def test_keys_it_cannot_sign_with_are_refused_saying_what_to_give(rsa_key):
    p521 = ec.generate_private_key(ec.SECP521R1())
    public_jwk = {k: v for k, v in rsa_jwk(rsa_key).items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
    encrypted = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"pass")).decode()
    cases = {
        pem_of(p521): "it is an EC key on secp521r1; use a P-256 (ES256) or P-384 (ES384) key",
        json.dumps(public_jwk): "it is a public JWK (no \"d\")",
        encrypted: "it is encrypted (a passphrase); decrypt it once: openssl pkey",
        pem_of(ed25519.Ed25519PrivateKey.generate()): "only RSA or EC keys sign here",
        public_pem(rsa_key): "it is not a private key in PEM form",
        json.dumps({"keys": [rsa_jwk(rsa_key), rsa_jwk(rsa_key)]}): "a JWK set of 2 keys; give the one key",
        json.dumps({**rsa_jwk(rsa_key), "kty": "oct"}): "its JWK's kty is 'oct', not RSA or EC",
    }
    for value, why in cases.items():
        text = refused(value)
        assert text.startswith(f"{KEY_NAME} is not a usable private key: "), text
        assert why in text, text
        assert "as PEM (-----BEGIN PRIVATE KEY-----" in text and "the JWK JSON the Admin Console generated" in text
        assert "cannot be sent in an HTTP header" not in text
        assert rsa_jwk(rsa_key)["d"][:40] not in text and "MII" not in text  # never the key


def test_clean_secret_keeps_a_jwk_and_mends_literal_newlines_but_still_refuses_a_spaced_token(rsa_key):
    jwk = json.dumps(rsa_jwk(rsa_key), indent=2)
    assert clean_secret(ENV, jwk + "\n") == jwk
    pem = pem_of(rsa_key).strip()
    assert clean_secret(ENV, pem.replace("\n", "\\n")) == pem
    with pytest.raises(InvalidSecret, match="holds a space at position 3"):
        clean_secret("OKTA_TOKEN", "abc def")
    with pytest.raises(InvalidSecret, match="holds a space"):
        clean_secret("OKTA_TOKEN", '{"not": "a key"}')  # JSON that is no JWK is still a header value
