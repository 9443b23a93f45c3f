"""Keyless domain-wide delegation (``service_account: {email, subject}``), over real HTTP against the
simulator's emulation of Google's side (``simulator/google_iam.py``): the run's application default
credentials call IAM ``signJwt``, the signed assertion buys a Reports token, and no key file exists.

Two kinds of ADC, both google-auth's own code against the emulation: workload identity federation
(an ``external_account`` file: a workload outside Google Cloud, e.g. on EKS or ECS, exchanging its own
token at STS), in process; and the metadata server of GKE / Cloud Run / Compute Engine, through the
real ``dagster`` CLI (google-auth reads ``GCE_METADATA_HOST`` when it is imported, so only a fresh
process can be pointed at it). ``gcloud auth application-default login`` files are not emulated:
google-auth always sends their refresh to Google's own token URL.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml
from google.auth import jwt

from logpull_dagster.config import load_config
from logpull_dagster.plugins import open_source
from logpull_dagster.pull import PullFailed, pull_window
from logpull_dagster.simulator import Simulator
from logpull_dagster.simulator.google_iam import GoogleIam
from logpull_dagster.sources import CredentialsRefused, InvalidSecret, google_auth
from logpull_dagster.windows import rfc3339

from .cli import materialize_cmd, run, setup_project, siem_ids
from .conftest import hour, key, ts
from .test_google_auth import W10, google, truth, write_config

SA = "logpull-dwd@logpull-sim.iam.gserviceaccount.com"
ADMIN = "admin@example.com"
# The federated identity of a pod outside Google Cloud (the ADC in process).
POD = "principal://iam.googleapis.com/projects/123456789/locations/global/workloadIdentityPools/logpull/subject/pod"


def iam(sim: Simulator) -> GoogleIam:
    return google(sim).iam


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    google_auth._cache.clear()  # every test as a fresh process: the caches are only an optimisation
    google_auth._adc.clear()
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login of this machine's user
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)


@pytest.fixture
def adc_file(sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workload identity federation ADC file for POD, which may sign as SA; SA is delegated for ADMIN.
    The pod's own token sits in a file, as Kubernetes projects it; no Google key exists anywhere."""
    iam(sim).managed_service_account(SA, subjects=[ADMIN])
    iam(sim).grant_token_creator(POD, SA)
    audience, pod_token = iam(sim).federated_workload(POD)
    (tmp_path / "pod-token").write_text(pod_token)
    path = tmp_path / "application_default_credentials.json"
    path.write_text(json.dumps({
        "type": "external_account", "audience": audience,
        "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "token_url": f"{sim.url}/v1/token",
        "credential_source": {"file": str(tmp_path / "pod-token")}}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    # Else google.auth.default() asks Cloud Resource Manager for the pool's project (not emulated, not needed).
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "logpull-sim")
    return path


def keyless_config(folder: Path, sim: Simulator, **sa: str) -> Path:
    path = write_config(folder, sim, ["login"])
    cfg = yaml.safe_load(path.read_text())
    cfg["sources"][0]["service_account"] = {"email": SA, "subject": ADMIN, "token_uri": f"{sim.url}/token",
                                            "iam_endpoint": sim.url, **sa}
    path.write_text(json.dumps(cfg))
    return path


def pull(sim, tmp_path, store, landing, **sa):  # type: ignore[no-untyped-def]
    [stream] = load_config(keyless_config(tmp_path, sim, **sa)).sources[0].streams()
    src = open_source(stream, lambda name: pytest.fail(f"keyless reads no secret, asked for {name}"))
    try:
        return src, pull_window(src, W10, source_name="gws_login", checkpoints=store, landing=landing,
                                owner="r", lease_ttl=60)
    finally:
        src.close()


def test_a_window_is_pulled_with_an_assertion_signed_by_iam_for_the_adc_identity(
        sim, tmp_path, adc_file, store, landing):
    src, res = pull(sim, tmp_path, store, landing)
    assert res.complete and res.events_landed == len(truth(sim, W10))
    steps = [(r.get("endpoint"), r["status"]) for r in sim.requests()]
    assert steps[:4] == [("sts", 200), ("signJwt", 200), ("token", 200), (None, 200)]
    assert iam(sim).signed == 1 and all(s == 200 for _, s in steps)
    # What was signed is what Google requires of a delegation assertion, for this subject and scope.
    claims = jwt.decode(src._auth._assertion, verify=False)
    assert {k: claims[k] for k in ("iss", "sub", "scope", "aud")} == {
        "iss": SA, "sub": ADMIN, "scope": google_auth.REPORTS_SCOPE, "aud": f"{sim.url}/token"}
    assert 0 < claims["exp"] - claims["iat"] <= 3600
    # Nothing written holds the ADC token, the Reports token, the assertion or the refresh token.
    pod_token = (tmp_path / "pod-token").read_text()
    written = "\n".join(p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*")
                        if p.is_file() and p.name != "pod-token")
    held = [*iam(sim).adc_tokens(), *google(sim).issued_tokens(), src._auth._assertion, pod_token]
    assert len(held) == 4 and not [t for t in held if t in written + json.dumps(sim.requests())]


def test_the_adc_token_is_refreshed_once_when_iam_refuses_it(sim, tmp_path, adc_file):
    [stream] = load_config(keyless_config(tmp_path, sim)).sources[0].streams()
    src = open_source(stream, lambda name: "")
    try:
        page = src.fetch_page(W10, None)
        iam(sim).revoke_adc_tokens()  # ADC's token is revoked (or expired early) ...
        google(sim).revoke_tokens()  # ... and so is the Reports token, so a new assertion must be signed
        again = src.fetch_page(W10, page.next_cursor)
    finally:
        src.close()
    assert again.items and iam(sim).signed == 2
    assert [(r.get("endpoint"), r["status"]) for r in sim.requests()][4:] == [
        (None, 401), ("signJwt", 401), ("sts", 200), ("signJwt", 200), ("token", 200), (None, 200)]


def test_without_the_token_creator_role_the_window_fails_naming_the_role_and_lands_nothing(
        sim, tmp_path, adc_file, store, landing):
    iam(sim).revoke_token_creator(POD, SA)
    with pytest.raises(PullFailed) as failed:
        pull(sim, tmp_path, store, landing)
    text = str(failed.value)
    assert "IAM signJwt for " + SA in text and "HTTP 403, PERMISSION_DENIED Permission 'iam.serviceAccounts" in text
    assert "roles/iam.serviceAccountTokenCreator" in text and "IAM Service Account Credentials API" in text
    assert [r.get("endpoint") for r in sim.requests()] == ["sts", "signJwt"]  # refused for good: no retry
    cp = store.get("gws_login", "pull", rfc3339(W10.start))
    assert cp is not None and cp.cursor is None and cp.pages_read == 0 and cp.status == "failed"
    assert landing.pages("gws_login", W10, below=10**6) == []


def first_page_fails(stream, error: type[Exception], match: str) -> None:  # type: ignore[no-untyped-def]
    """As a fresh process: open the source, ask for page one, expect ``error`` matching ``match``."""
    google_auth._cache.clear(), google_auth._adc.clear()
    src = open_source(stream, lambda name: "")
    try:
        with pytest.raises(error, match=match):
            src.fetch_page(W10, None)
    finally:
        src.close()


@pytest.mark.slow  # about 4 s of Dagster runs
def test_refused_or_missing_application_default_credentials_fail_naming_adc(sim, tmp_path, adc_file, monkeypatch):
    [stream] = load_config(keyless_config(tmp_path, sim)).sources[0].streams()
    (tmp_path / "pod-token").write_text("eyJsim.not-the-pods-token")  # the pool does not trust it
    first_page_fails(stream, CredentialsRefused, r"application default credentials could not be refreshed "
                     r"\(.*invalid_grant.*\); run where application default credentials exist")
    assert "not-the-pods-token" not in json.dumps(sim.requests())

    adc_file.write_text('{"type": "external_account"}')
    first_page_fails(stream, InvalidSecret, rf"GOOGLE_APPLICATION_CREDENTIALS names no usable ones \(.*"
                     rf"{adc_file.name}.*\); run where application default credentials exist")

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    # Off Google Cloud: google-auth pings the metadata address (where nothing listens here), then reads the
    # machine's DMI product name; the one stand-in of this file, so that a CI machine that happens to run
    # on Compute Engine does not answer with its own credentials.
    monkeypatch.setattr("google.auth.compute_engine._metadata.detect_gce_residency_linux", lambda: False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("GCE_METADATA_IP", f"127.0.0.1:{s.getsockname()[1]}")
    first_page_fails(stream, InvalidSecret, r"service_account\.email needs application default credentials, "
                     r"and none were found; .*gcloud auth application-default login")


@pytest.mark.parametrize(("sa", "said"), [
    ({"email": SA}, None),
    ({"email": SA, "file": {"env": "GWS_SA_FILE"}}, r"give the service account one way: file: .* or email: "),
    ({}, r"give the service account one way"),
    ({"file": {"env": "GWS_SA_FILE"}, "iam_endpoint": "https://iam.example"}, r"iam_endpoint: only used with email:"),
    ({"email": "not-an-email"}, r"service_account\.email: .*must be an email address"),
])
def test_the_service_account_is_given_one_way(tmp_path, sa, said):
    src = {"name": "gws", "type": "google_workspace", "application": "login", "start": ts(-24),
           "service_account": {"subject": ADMIN, **sa}}
    path = tmp_path / "logpull.yaml"
    path.write_text(json.dumps({"sources": [src]}))
    if said is None:
        assert load_config(path).sources[0].service_account.email == SA
    else:
        with pytest.raises(Exception, match=said):
            load_config(path)


@pytest.mark.slow  # the real `dagster` CLI
def test_a_keyless_window_through_the_metadata_server_with_the_real_cli(tmp_path, sim):
    """GKE / Cloud Run: the workload's own service account (from the metadata server) signs as SA."""
    workload = "pull-runner@logpull-sim.iam.gserviceaccount.com"
    iam(sim).managed_service_account(SA, subjects=[ADMIN])
    iam(sim).set_workload(workload)
    iam(sim).grant_token_creator(workload, SA)
    host = sim.url.removeprefix("http://")
    env = setup_project(tmp_path, sim.url, access_token=None, page_size=100, service_account={
        "email": SA, "subject": ADMIN, "token_uri": f"{sim.url}/token", "iam_endpoint": sim.url})
    env = {**env, "GCE_METADATA_HOST": host, "GCE_METADATA_IP": host, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud")}
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    log = tmp_path / "run.log"
    window = key(10)
    assert run(materialize_cmd("logs/gws", window), env, log) == 0, log.read_text()[-3000:]
    assert run(materialize_cmd("siem/gws", window), env, log) == 0, log.read_text()[-3000:]
    ids = siem_ids(tmp_path)
    expected = truth(sim, type(W10)(hour(10), hour(11)))
    assert len(ids) == len(set(ids)) == len(expected) > 0
    endpoints = [r.get("endpoint") for r in sim.requests()]
    assert "metadata" in endpoints and endpoints.count("signJwt") == iam(sim).signed >= 1
    written = log.read_text() + "".join(p.read_text("utf-8", "replace") for p in tmp_path.rglob("*")
                                        if p.is_file() and p.suffix in (".jsonl", ".json", ".yaml", ".log"))
    held = [*iam(sim).adc_tokens(), *google(sim).issued_tokens()]
    assert held and not [t for t in held if t in written]
