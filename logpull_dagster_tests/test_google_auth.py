"""Google service accounts with domain-wide delegation, against the simulator's token endpoint over real
HTTP: tokens fetched by the JWT-bearer grant, refreshed before expiry and once on a 401, shared by the
streams of one account, refused with Google's reason, and never written anywhere."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from logpull_dagster.config import load_config
from logpull_dagster.definitions import build_definitions
from logpull_dagster.plugins import open_source
from logpull_dagster.pull import PullFailed, pull_window
from logpull_dagster.simulator import Simulator
from logpull_dagster.simulator.google_reports import GoogleReportsApi
from logpull_dagster.sources import CredentialsRefused, InvalidSecret, google_auth
from logpull_dagster.sources.google_auth import REPORTS_SCOPE, service_account_auth
from logpull_dagster.sources.google_workspace import GoogleWorkspaceSource
from logpull_dagster.windows import Window

from .conftest import hour, key, ts

SA_EMAIL = "logpull@logpull-test.iam.gserviceaccount.com"
ADMIN = "admin@example.com"
ENV = "GWS_SA_FILE"
W10 = Window(hour(10), hour(11))


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(k: rsa.RSAPrivateKey) -> bytes:
    return k.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_key_file(path: Path, k: rsa.RSAPrivateKey, key_id: str = "kid-1") -> Path:
    """A service-account JSON key as the Cloud console hands it out, for a key made in this test."""
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()).decode()
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "logpull-test", "private_key_id": key_id, "private_key": pem,
        "client_email": SA_EMAIL, "client_id": "104242424242424242424",
        "token_uri": "https://oauth2.googleapis.com/token",
    }))
    return path


def google(sim: Simulator) -> GoogleReportsApi:
    [api] = [a for a in sim.apis if isinstance(a, GoogleReportsApi)]
    return api


@pytest.fixture(autouse=True)
def fresh_process() -> None:
    google_auth._cache.clear()  # every test as a fresh process: the cache is only an optimisation


@pytest.fixture
def sa_key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture
def key_file(tmp_path: Path, sim: Simulator, sa_key: rsa.RSAPrivateKey) -> Path:
    google(sim).trust_service_account(SA_EMAIL, public_pem(sa_key), "kid-1", subjects=[ADMIN])
    return write_key_file(tmp_path / "sa.json", sa_key)


def source(sim: Simulator, key_file: Path, application: str = "login", subject: str = ADMIN) -> GoogleWorkspaceSource:
    auth = service_account_auth(str(key_file), subject, env=ENV, token_uri=f"{sim.url}/token")
    return GoogleWorkspaceSource(base_url=sim.url, application=application, auth=auth, page_size=50,
                                 credential=auth.credential, backoff_initial=0.01, backoff_max=0.05)


def truth(sim: Simulator, w: Window, application: str = "login") -> list[str]:
    return sorted("/".join(i) for i in sim.ground_truth_ids(application, w.start, w.end))


def pull(sim: Simulator, src: GoogleWorkspaceSource, store, landing, name: str = "gws"):  # type: ignore[no-untyped-def]
    try:
        return pull_window(src, W10, source_name=name, checkpoints=store, landing=landing, owner="r", lease_ttl=60)
    finally:
        src.close()


def test_a_window_is_pulled_with_a_token_from_the_service_account(sim, key_file, store, landing):
    res = pull(sim, source(sim, key_file), store, landing)
    assert res.complete and res.events_landed == len(truth(sim, W10))
    log = sim.requests()
    assert [r.get("endpoint") for r in log[:2]] == ["token", None] and google(sim).tokens_issued == 1
    assert all(r["status"] == 200 for r in log)
    assert "assertion" not in json.dumps(log)  # the simulator logs the grant type, never the credential


def test_the_token_is_refreshed_before_it_expires(sim, key_file):
    google(sim).token_lifetime = 2  # renewed after half its life (the margin is capped at half)
    src = source(sim, key_file)
    try:
        page = src.fetch_page(W10, None)
        time.sleep(1.2)
        src.fetch_page(W10, page.next_cursor)
    finally:
        src.close()
    assert src._auth.tokens_fetched == 2 and google(sim).tokens_issued == 2
    assert [r["status"] for r in sim.requests()] == [200, 200, 200, 200]  # no 401 on the way


def test_a_revoked_token_is_replaced_once_and_the_request_sent_again(sim, key_file):
    src = source(sim, key_file)
    try:
        page = src.fetch_page(W10, None)
        google(sim).revoke_tokens()
        again = src.fetch_page(W10, page.next_cursor)
    finally:
        src.close()
    assert again.items and src._auth.tokens_fetched == 2
    assert [(r.get("endpoint"), r["status"]) for r in sim.requests()][2:] == [
        (None, 401), ("token", 200), (None, 200)]


@pytest.mark.parametrize(("setup", "said"), [
    ("subject", "invalid_grant: Invalid email or User ID"),
    ("scope", "HTTP 401, unauthorized_client: Client is unauthorized to retrieve access tokens"),
    ("signature", "invalid_grant: Invalid JWT Signature."),
])
def test_a_refused_grant_fails_for_good_with_googles_reason(sim, tmp_path, sa_key, store, landing, setup, said):
    api = google(sim)
    if setup == "scope":  # the Admin console authorised the client ID for another scope only
        api.trust_service_account(SA_EMAIL, public_pem(sa_key), "kid-1", subjects=[ADMIN],
                                  scopes=["https://www.googleapis.com/auth/admin.directory.user.readonly"])
    elif setup == "signature":  # the key in the file is not the one Google knows under its id
        api.trust_service_account(SA_EMAIL, public_pem(new_key()), "kid-1", subjects=[ADMIN])
    else:
        api.trust_service_account(SA_EMAIL, public_pem(sa_key), "kid-1", subjects=["someone-else@example.com"])
    key_file = write_key_file(tmp_path / "sa.json", sa_key)
    with pytest.raises(PullFailed, match=rf"{said}.*check the service account key named by {ENV} \({SA_EMAIL}\) "
                                         rf"and its domain-wide delegation for {ADMIN}") as e:
        pull(sim, source(sim, key_file), store, landing)
    assert e.value.permanent
    assert [r.get("endpoint") for r in sim.requests()] == ["token"]  # one token request, no page request


def test_the_assertion_claims_what_google_requires(sim, key_file):
    auth = service_account_auth(str(key_file), ADMIN, env=ENV, token_uri=f"{sim.url}/token")
    form = auth.token_form()
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    import base64

    header, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
                      for p in form["assertion"].split(".")[:2])
    assert header["alg"] == "RS256" and header["kid"] == "kid-1"
    assert {k: claims[k] for k in ("iss", "sub", "scope", "aud")} == {
        "iss": SA_EMAIL, "sub": ADMIN, "scope": REPORTS_SCOPE, "aud": f"{sim.url}/token"}
    assert claims["exp"] - claims["iat"] == 3600 and abs(claims["iat"] - time.time()) < 5
    assert form["assertion"] in auth.secrets()  # so that the redactor knows it


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist"),
    ("{not json", "which is not JSON"),
    ('{"type": "authorized_user"}', 'which is not a service-account key \\("type": "service_account"\\)'),
    ('{"type": "service_account", "client_email": "a@b.c"}', "a service-account key without private_key"),
    ('{"type": "service_account", "client_email": "a@b.c", "private_key": "-----BEGIN PRIVATE KEY-----\\nAAAA"}',
     "not a usable service-account key"),
])
def test_a_missing_or_unusable_key_file_names_the_variable_and_the_fix(tmp_path, content, message):
    path = tmp_path / "sa.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InvalidSecret, match=rf"^{ENV} names {path}, {message}.*point {ENV} at the service "
                                            rf"account's JSON key file|^{ENV} names {path}, .*{message}") as e:
        service_account_auth(str(path), ADMIN, env=ENV)
    assert "AAAA" not in str(e.value)


def test_the_streams_of_one_account_share_one_token(sim, key_file, store, landing, monkeypatch):
    monkeypatch.setenv(ENV, str(key_file))
    cfg = load_config(write_config(key_file.parent, sim, ["login", "admin"]))
    login, admin = (open_source(s, _env) for s in cfg.sources)
    assert login._auth is admin._auth  # one credentials object per key file and subject in a process
    for name, src in (("gws_login", login), ("gws_admin", admin)):
        assert pull(sim, src, store, landing, name).complete
    assert google(sim).tokens_issued == 1
    google_auth._cache.clear()  # a fresh process: builds its own, fetches its own
    assert pull(sim, open_source(cfg.sources[0], _env), store, landing, "gws_login").complete
    assert google(sim).tokens_issued == 2


def _env(name: str) -> str:
    import os

    return os.environ[name]


def write_config(folder: Path, sim: Simulator, applications: list[str], **extra: Any) -> Path:
    src = {"name": "gws", "type": "google_workspace", "applications": applications, "base_url": sim.url,
           "service_account": {"file": {"env": ENV}, "subject": ADMIN, "token_uri": f"{sim.url}/token"},
           "start": ts(-24), "page_size": 50, "retry_delay": "0s", "http_backoff_max": "50ms", **extra}
    cfg = {"sources": [src], "checkpoints": {"type": "sqlite", "path": "state/checkpoints.db"},
           "landing": {"type": "local", "path": "state/landing"}, "siem": {"type": "file", "path": "siem"}}
    path = folder / "logpull.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def materialize(defs: dg.Definitions, asset: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(partition_key=key(10), instance=instance, raise_on_error=False,
                                  asset_selection=[dg.AssetKey(asset.split("/"))])


@pytest.mark.slow  # about 4 s of Dagster runs
def test_each_application_is_its_own_asset_in_the_sources_group_and_no_secret_is_written(
        tmp_path, sim, key_file, sa_key, instance, monkeypatch, capfd):
    monkeypatch.setenv(ENV, str(key_file))
    defs = build_definitions(load_config(write_config(tmp_path, sim, ["login", "admin"])))
    specs = {s.key.to_user_string(): s.group_name for s in defs.resolve_all_asset_specs()}
    assert specs == {f"{k}/gws_{a}": "gws" for k in ("logs", "siem") for a in ("login", "admin")}
    assert {s.name for s in defs.schedules} == {"pull_gws_login_schedule", "pull_gws_admin_schedule"}
    results = [materialize(defs, a, instance) for a in ("logs/gws_login", "logs/gws_admin", "siem/gws_login")]
    assert all(r.success for r in results)
    assert google(sim).tokens_issued == 1  # both streams, and delivery, in one process: one token
    tokens = google(sim).issued_tokens()
    pem_lines = [ln for ln in sa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()).decode().splitlines()
                 if "PRIVATE KEY" not in ln]
    out = capfd.readouterr()
    written = "\n".join([*(str(e) for r in results for e in instance.all_logs(r.run_id)), out.out, out.err,
                         *(p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*")
                           if p.is_file() and p.name != "sa.json")])
    assert tokens and not [t for t in tokens if t in written]
    assert not [ln for ln in pem_lines if ln in written]
    assert "eyJ0eXAiOiAiSldUIi" not in written and "eyJhbGciOi" not in written  # no signed assertion


@pytest.mark.slow  # about 3 s of Dagster runs
def test_a_missing_key_file_fails_the_window_at_once_naming_the_variable(tmp_path, sim, instance, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path / "nowhere.json"))
    defs = build_definitions(load_config(write_config(tmp_path, sim, ["login"])))
    res = materialize(defs, "logs/gws_login", instance)
    assert not res.success and sim.requests() == []
    [failure] = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
    text = str(failure.step_failure_data.error)
    assert f"{ENV} names {tmp_path / 'nowhere.json'}, which does not exist; point {ENV} at the service" in text
    # Unset: the resource carries the secret as dg.EnvVar, so Dagster refuses the run as it starts, naming
    # the key and the variable, before a step (or a request) runs.
    monkeypatch.delenv(ENV)
    with pytest.raises(dg.DagsterInvalidConfigError) as unset:
        materialize(defs, "logs/gws_login", instance)
    assert "service_account:file" in str(unset.value) and f'environment variable "{ENV}" which is not set' in str(
        unset.value)
    assert sim.requests() == []


def test_a_refused_credential_is_a_credentials_refused_for_the_pull_loop(sim, tmp_path, sa_key):
    key_file = write_key_file(tmp_path / "sa.json", sa_key)  # never trusted by the simulator
    src = source(sim, key_file)
    try:
        with pytest.raises(CredentialsRefused, match="Invalid JWT Signature"):
            src.fetch_page(W10, None)
    finally:
        src.close()
