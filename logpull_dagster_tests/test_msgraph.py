"""Microsoft Graph audit logs (``sources/msgraph.py``): the API's own quirks, over real HTTP.

The shared suites (contract, HTTP faults, hostile API) run for this source too; here: the ``$filter``
window and its 7-digit times, the nextLink's changed case and origin, short pages mid-stream, a rejected
skiptoken, fractional Retry-After, the client-credentials token (refresh, 401, AADSTS refusals, a
certificate's client assertion) and the config's rules.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from pydantic import ValidationError

from logpull_dagster.config import parse_config
from logpull_dagster.pull import pull_window
from logpull_dagster.simulator import Simulator
from logpull_dagster.simulator.msgraph import MsGraphApi, parse_filter, parse_literal
from logpull_dagster.sources import BadPage, CredentialsRefused, SourceRequestError, TokenRejected
from logpull_dagster.sources.auth import OAuthCertificateJwt, OAuthClientCredentials, TokenRefused
from logpull_dagster.sources.http import parse_retry_after
from logpull_dagster.sources.msgraph import MsGraphConfig, MsGraphSource, first_page_path, literal, scope_for
from logpull_dagster.windows import Window, parse_time

from . import msgraph_login
from .conftest import SIM_NOW, TOKEN, hour, ts

W10 = Window(hour(10), hour(11))
W11 = Window(hour(11), hour(12))
TENANT, CLIENT = msgraph_login.TENANT, msgraph_login.CLIENT
AUDITS = "/v1.0/auditLogs/directoryAudits"


@pytest.fixture
def graph() -> Iterator[Simulator]:
    """Graph and its token endpoint on one simulator (login_url = base_url)."""
    with Simulator(seed=11, events_per_hour=300, token=TOKEN, apis=[MsGraphApi]) as s:
        s.set_clock(now=SIM_NOW)
        yield s


def api(sim: Simulator) -> MsGraphApi:
    [emulated] = sim.apis
    assert isinstance(emulated, MsGraphApi)
    return emulated


def source(sim: Simulator, stream: str = "directory_audits", *, secret: str = TOKEN, tenant: str = TENANT,
           auth: OAuthClientCredentials | None = None, **kw: Any) -> MsGraphSource:
    kw.setdefault("page_size", 50)
    kw.setdefault("backoff_initial", 0.01)
    kw.setdefault("backoff_max", 0.05)
    if auth is None:
        auth = OAuthClientCredentials(f"{sim.url}/{tenant}/oauth2/v2.0/token", CLIENT, secret, scope_for(sim.url),
                                      credential="client_secret (GRAPH_SECRET)")
    return MsGraphSource(base_url=sim.url, stream=stream, auth=auth, credential="client_secret (GRAPH_SECRET)",
                         tenant_id=tenant, client_id=CLIENT, **kw)


def read(src: MsGraphSource, w: Window) -> list[Any]:
    pages = [src.fetch_page(w, None)]
    while pages[-1].next_cursor is not None:
        assert len(pages) < 200
        pages.append(src.fetch_page(w, pages[-1].next_cursor))
    return pages


def truth(sim: Simulator, w: Window, stream: str = "directory_audits") -> list[str]:
    return sorted(i[0] for i in sim.ground_truth_ids(stream, w.start, w.end, api="msgraph"))


def listings(sim: Simulator) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r["path"].lower().startswith("/v1.0/auditlogs/")]


# ---- the window: $filter, 7-digit times, the event at B ------------------------------------------------

def test_the_window_is_ge_start_and_lt_end_with_unquoted_percent_encoded_literals(graph):
    path = first_page_path(AUDITS, "activityDateTime", W10, 50)
    assert path == (f"{AUDITS}?$filter=activityDateTime%20ge%20{ts(10).replace(':', '%3A')}%20and%20"
                    f"activityDateTime%20lt%20{ts(11).replace(':', '%3A')}&$top=50")
    src = source(graph)
    read(src, W10)
    first = listings(graph)[0]
    assert first["filter"] == f"activityDateTime ge {ts(10)} and activityDateTime lt {ts(11)}"  # as Graph read it
    assert first["top"] == 50 and first["skiptoken"] is None
    src.close()


def test_sub_second_window_ends_are_written_with_seven_digits():
    assert literal(parse_time("2026-11-26T10:00:00.5Z")) == "2026-11-26T10:00:00.5000000Z"
    assert literal(parse_time("2026-11-26T10:00:00Z")) == "2026-11-26T10:00:00Z"


def test_seven_digit_times_are_read_exactly_and_b_minus_100ns_stays_in_the_window(graph):
    src = source(graph)
    w = Window(parse_time("2024-12-27T10:00:00Z"), parse_time("2024-12-27T11:00:00Z"))
    body = json.dumps({"@odata.context": "x", "value": [
        {"id": "a", "activityDateTime": "2024-12-27T10:59:59.9999999Z"},  # B - 100 ns: this window's
        {"id": "b", "activityDateTime": "2024-12-27T11:00:00Z"},  # exactly B: the next window's
        {"id": "c", "activityDateTime": "2024-12-27T10:01:19.5796748Z"},
        {"id": "d", "activityDateTime": "2024-12-27T10:00:00.0000000Z"},  # exactly A: this window's
    ]}).encode()
    items, nxt = src.parse_page(body)
    events = {e.id: e for e in src.to_events(items)}
    assert nxt is None
    assert {i for i, e in events.items() if w.contains(e.time)} == {"a", "c", "d"}
    assert events["a"].raw["activityDateTime"] == "2024-12-27T10:59:59.9999999Z"  # kept as served
    with pytest.raises(BadPage, match="bad activityDateTime"):
        src.parse_page(b'{"value":[{"id":"x","activityDateTime":"2024-12-27 10:00"}]}')
    src.close()


def test_the_event_exactly_at_the_end_goes_to_the_next_window_only_and_shared_timestamps_all_land(graph):
    src = source(graph)
    first = [e for p in read(src, W10) for e in src.to_events(p.items)]
    second = [e for p in read(src, W11) for e in src.to_events(p.items)]
    assert sorted(e.id for e in first) == truth(graph, W10)  # lt B: nothing to drop, nothing missing
    assert sorted(e.id for e in second) == truth(graph, W11)
    at_b = [e for e in second if e.time == W11.start]
    assert at_b and at_b[0].raw["activityDateTime"] == ts(11)  # whole seconds, as Graph writes them
    assert not {e.id for e in first} & {e.id for e in second}
    shared = Counter(e.raw["activityDateTime"] for e in first)
    assert max(shared.values()) >= 3  # several events on one 7-digit time: distinct ids, all of them
    assert all(len(e.raw["activityDateTime"]) == 28 for e in first if e.time != W10.start)
    src.close()


@pytest.mark.parametrize("stream", ["sign_ins", "provisioning"])
def test_every_stream_reads_its_own_endpoint_and_time_field(graph, stream):
    src = source(graph, stream)
    events = [e for p in read(src, W10) for e in src.to_events(p.items)]
    assert sorted(e.id for e in events) == truth(graph, W10, stream)
    field = "createdDateTime" if stream == "sign_ins" else "activityDateTime"
    assert listings(graph)[0]["filter"].startswith(f"{field} ge ")
    src.close()


def test_the_emulated_filter_is_exact_to_the_tick_and_refuses_quoted_literals(graph):
    assert parse_literal("2024-12-27T10:01:19.5796748Z") - parse_literal("2024-12-27T10:01:19Z") == 5796748
    lo, hi = parse_filter("activityDateTime ge 2024-12-27T10:00:00Z and activityDateTime lt 2024-12-27T11:00:00Z",
                          "activityDateTime")
    assert hi == parse_literal("2024-12-27T10:59:59.9999999Z") and lo == parse_literal("2024-12-27T10:00:00Z")
    token = httpx.post(f"{graph.url}/{TENANT}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": CLIENT, "client_secret": TOKEN,
        "scope": scope_for(graph.url)}).json()["access_token"]
    quoted = f"{AUDITS}?$filter=activityDateTime%20ge%20%27{ts(10)}%27"
    r = httpx.get(f"{graph.url}{quoted}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 400 and "Edm.String" in r.json()["error"]["message"]
    src = source(graph)
    with pytest.raises(SourceRequestError, match="HTTP 400: BadRequest: Invalid filter clause") as e:
        src.fetch_page(Window(parse_time("0001-01-01T00:00:00Z").replace(year=1), W10.end), None)
    assert e.value.permanent
    src.close()


# ---- pagination: nextLink case and origin, short pages, skiptokens -------------------------------------

def test_the_nextlink_is_followed_verbatim_though_its_path_changes_case(graph):
    src = source(graph)
    pages = read(src, W10)
    assert len(pages) > 3
    assert "/v1.0/auditlogs/directoryaudits?" in pages[0].next_cursor  # not the path we asked for
    assert [r["path"] for r in listings(graph)][1:] == ["/v1.0/auditlogs/directoryaudits"] * (len(pages) - 1)
    assert json.loads(pages[0].body)["@odata.context"].endswith("$metadata#auditLogs/directoryAudits")
    src.close()


def test_a_nextlink_to_another_origin_is_refused_before_the_token_travels(graph):
    src = source(graph)
    api(graph).link_base = "http://127.0.0.2:9"
    first = src.fetch_page(W10, None)
    with pytest.raises(SourceRequestError, match=r"not on base_url's origin") as e:
        src.fetch_page(W10, first.next_cursor)
    assert e.value.permanent and len(listings(graph)) == 1
    src.close()


def test_short_pages_mid_stream_do_not_end_the_window(graph):
    src = source(graph)
    pages = read(src, W10)
    sizes = [len(p.items) for p in pages]
    assert any(n < 50 for n in sizes[:-1]), sizes  # Graph's 941-of-1000 pages
    assert sorted(e.id for p in pages for e in src.to_events(p.items)) == truth(graph, W10)
    src.close()


def test_a_forged_or_foreign_skiptoken_is_rejected_and_the_window_restarts_exactly(graph, store, landing):
    src = source(graph)
    first = src.fetch_page(W10, None)
    other = src.fetch_page(W11, None)
    with pytest.raises(TokenRejected, match="Invalid Skip Token"):
        src.fetch_page(W10, other.next_cursor.replace(ts(11).replace(":", "%3A"), ts(10).replace(":", "%3A"), 1))
    forged = first.next_cursor.rsplit("=", 1)[0] + "=AAAA" + first.next_cursor.rsplit("=", 1)[1][4:]
    with pytest.raises(TokenRejected, match="Invalid Skip Token"):
        src.fetch_page(W10, forged)
    with pytest.raises(TokenRejected, match=r"not a Graph @odata\.nextLink"):
        src.fetch_page(W10, "$skiptoken=abc")
    graph.set_faults([{"kind": "reject_token", "after": 2}])  # the transient 400 of msgraph-sdk-powershell#1388
    res = pull_window(src, W10, source_name="entra", checkpoints=store, landing=landing, owner="r", lease_ttl=60)
    assert res.complete and res.token_restarts == 1 and res.duplicates_dropped > 0
    cp = store.get("entra", "pull", ts(10))
    ids = [json.loads(line)["id"] for pg in landing.pages("entra", W10, cp.page_seq) for line in landing.read_lines(pg)]
    assert sorted(ids) == truth(graph, W10) and len(ids) == len(set(ids))
    src.close()


# ---- throttling ----------------------------------------------------------------------------------------

def test_a_fractional_retry_after_is_honoured_to_the_fraction(graph):
    assert parse_retry_after("2.128") == 2.128 and parse_retry_after("7") == 7.0
    assert parse_retry_after("1.2.3") is None and parse_retry_after("²") is None
    graph.set_faults([{"kind": "429", "retry_after": 0.6, "after": 2}])  # the token request, page 1, then 429
    src = source(graph)
    pages = read(src, W10)
    log = listings(graph)
    assert [r["status"] for r in log][:3] == [200, 429, 200] and pages[1].http_retries == 1
    assert 0.55 <= log[2]["t"] - log[1]["t"] < 1.0  # backoff_max is 0.05 s: the header's 0.6 s won
    src.close()


def test_the_default_rate_limit_keeps_five_requests_in_any_ten_seconds():
    cfg = config()
    assert cfg.rate_limit == "25/min"
    interval = cfg.rate.interval  # type: ignore[union-attr]
    assert 10 / interval + 1 < 6 <= 10 / (60 / 30) + 1  # 25/min: at most 5 in 10 s; 30/min would allow 6


# ---- the token ------------------------------------------------------------------------------------------

def test_the_token_is_fetched_once_refreshed_before_expiry_and_once_on_a_401(graph):
    src = source(graph)
    src.fetch_page(W10, None)
    src.fetch_page(W10, None)
    assert api(graph).tokens_issued == 1
    api(graph).revoke_tokens()  # Graph: 401 InvalidAuthenticationToken, "Lifetime validation failed"
    time.sleep(0.01)
    assert src.fetch_page(W10, None).items
    statuses = [r["status"] for r in listings(graph)]
    assert statuses[-2:] == [401, 200] and api(graph).tokens_issued == 2
    api(graph).token_lifetime = 2  # renewed at half its life, before Graph would refuse it
    api(graph).revoke_tokens()
    time.sleep(0.01)
    src.fetch_page(W10, None)
    issued = api(graph).tokens_issued
    time.sleep(1.1)
    src.fetch_page(W10, None)
    assert api(graph).tokens_issued == issued + 1 and listings(graph)[-1]["status"] == 200
    src.close()


def test_graph_expired_token_answer_is_graphs(graph):
    token = httpx.post(f"{graph.url}/{TENANT}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": CLIENT, "client_secret": TOKEN,
        "scope": scope_for(graph.url)}).json()
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3599
    api(graph).revoke_tokens()
    time.sleep(0.01)
    r = httpx.get(f"{graph.url}{first_page_path(AUDITS, 'activityDateTime', W10, 5)}",
                  headers={"Authorization": f"Bearer {token['access_token']}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "Lifetime validation failed" in r.json()["error"]["message"]
    assert 'client_id="00000003-0000-0000-c000-000000000000"' in r.headers["WWW-Authenticate"]


def test_a_401_after_a_fresh_token_is_refused_for_good(graph):
    graph.set_faults([{"kind": "echo_auth", "status": 401, "count": None}])
    # Tokens from the login host (msgraph_login), so that only Graph refuses them.
    src = source(graph, auth=OAuthClientCredentials(msgraph_login.token_url(), CLIENT, TOKEN, scope_for(graph.url)))
    with pytest.raises(CredentialsRefused, match=r"HTTP 401, also with a freshly fetched token\): check "
                                                 r"client_secret \(GRAPH_SECRET\)") as e:
        src.fetch_page(W10, None)
    assert e.value.permanent and TOKEN not in str(e.value)
    src.close()


@pytest.mark.parametrize("stream", ["directory_audits", "sign_ins"])
def test_a_403_names_the_permission_and_for_sign_ins_the_licence(graph, stream):
    graph.set_faults([{"kind": "echo_auth", "status": 403, "count": None, "after": 1}])  # after the token
    src = source(graph, stream)
    with pytest.raises(CredentialsRefused, match=r"HTTP 403\).*AuditLog\.Read\.All") as e:
        src.fetch_page(W10, None)
    assert ("P1 or P2 licence" in str(e.value)) == (stream == "sign_ins")
    src.close()


@pytest.mark.parametrize(("case", "names"), [
    ("secret", r"check client_secret \(GRAPH_SECRET\); .*AADSTS7000215"),
    ("tenant", rf"check tenant_id {TENANT} \(no such tenant.*AADSTS90002"),
])
def test_the_token_endpoint_s_refusal_names_the_key_to_fix(graph, case, names):
    if case == "tenant":
        api(graph).forget_tenant(TENANT)
    src = source(graph, secret="not-the-secret" if case == "secret" else TOKEN)
    with pytest.raises(TokenRefused, match=rf"credentials refused \(HTTP 40\d\): {names}") as e:
        src.fetch_page(W10, None)
    assert e.value.permanent and len(graph.requests()) == 1 and "not-the-secret" not in str(e.value)
    src.close()


def test_the_scope_is_the_base_url_s_resource():
    assert scope_for("https://graph.microsoft.com") == "https://graph.microsoft.com/.default"
    assert scope_for("https://graph.microsoft.us/") == "https://graph.microsoft.us/.default"
    assert scope_for("https://microsoftgraph.chinacloudapi.cn") == "https://microsoftgraph.chinacloudapi.cn/.default"


def _certificate(tmp_path: Path) -> tuple[str, str]:
    """(PEM of key + certificate, PEM of the certificate alone), RSA."""
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert("logpull.example", key_type=trustme.KeyType.RSA)
    cert = leaf.cert_chain_pems[0].bytes().decode()
    return leaf.private_key_pem.bytes().decode() + cert, cert


def test_a_certificate_credential_signs_a_client_assertion_with_its_thumbprint(graph, tmp_path):
    pem, cert = _certificate(tmp_path)
    token_url = f"{graph.url}/{TENANT}/oauth2/v2.0/token"
    httpx.post(f"{graph.url}/_sim/msgraph/clients", json={"tenant_id": TENANT, "client_id": CLIENT,
                                                         "certificate": cert}).raise_for_status()
    auth = OAuthCertificateJwt(token_url, CLIENT, pem, scope_for(graph.url), key_name="client_certificate (X)")
    form = auth.client_authentication()
    header = json.loads(base64.urlsafe_b64decode(form["client_assertion"].split(".")[0] + "=="))
    claims = json.loads(base64.urlsafe_b64decode(form["client_assertion"].split(".")[1] + "=="))
    assert header["alg"] == "RS256" and header["x5t"] == auth.x5t and "x5t#S256" in header
    assert claims["aud"] == token_url and claims["iss"] == claims["sub"] == CLIENT and claims["jti"]
    assert claims["nbf"] <= time.time() < claims["exp"]
    src = source(graph, auth=auth)
    assert sorted(e.id for p in read(src, W10) for e in src.to_events(p.items)) == truth(graph, W10)
    assert pem in src.secrets()  # the PEM (key and certificate) is among the values every message masks
    src.close()
    other, _ = _certificate(tmp_path)  # a certificate the app registration does not hold
    wrong = OAuthCertificateJwt(token_url, CLIENT, other, scope_for(graph.url))
    src = source(graph, auth=wrong)
    with pytest.raises(TokenRefused, match=r"credentials refused \(HTTP 401\): check client_secret.*AADSTS700027"):
        src.fetch_page(W10, None)
    src.close()


def test_a_certificate_pem_without_its_certificate_fails_before_any_request(tmp_path):
    pem, _ = _certificate(tmp_path)
    key_only = pem.split("-----BEGIN CERTIFICATE-----")[0]
    from logpull_dagster.sources import InvalidSecret

    with pytest.raises(InvalidSecret, match=r"client_certificate \(GRAPH_CERTIFICATE\) lacks a certificate"):
        OAuthCertificateJwt("https://login.example/t/oauth2/v2.0/token", CLIENT, key_only,
                            key_name="client_certificate (GRAPH_CERTIFICATE)")


# ---- config ---------------------------------------------------------------------------------------------

def config(**keys: Any) -> MsGraphConfig:
    base = {"name": "entra", "type": "msgraph", "stream": "directory_audits", "tenant_id": TENANT,
            "client_id": CLIENT, "client_secret": {"env": "GRAPH_SECRET"}, "start": ts(-24)}
    return MsGraphConfig.model_validate({**base, **keys})


def test_config_defaults_are_graph_s_documented_numbers():
    cfg = config()
    assert (cfg.base_url, cfg.login_url) == ("https://graph.microsoft.com", "https://login.microsoftonline.com")
    assert cfg.token_url == f"https://login.microsoftonline.com/{TENANT}/oauth2/v2.0/token"
    assert cfg.settle_lag.total_seconds() == 300 and cfg.lookback.total_seconds() == 7200
    assert cfg.page_size == 1000 and cfg.audit_log == "directory_audits"
    # Graph counts per app per tenant: the streams of one app share one budget by default.
    assert config(name="signins", stream="sign_ins").effective_rate_account == cfg.effective_rate_account
    assert config(rate_account="mine", rate_limit="10/min").effective_rate_account == "mine"


@pytest.mark.parametrize(("keys", "message"), [
    ({"client_certificate": {"env": "GRAPH_CERT"}}, "set exactly one of `client_secret` and `client_certificate` "
                                                    r"\(both are set\)"),
    ({"client_secret": None}, r"\(neither is set\)"),
    ({"client_secret": "hunter2"}, r"client_secret: \{env: GRAPH_SECRET\}"),
    ({"tenant_id": "common"}, "multi-tenant alias"),
    ({"tenant_id": "not a tenant"}, "neither a GUID nor a domain name"),
    ({"client_id": "my-app"}, r"not a GUID; set client_id to the app registration's Application \(client\) ID"),
    ({"stream": "audit"}, "directory_audits"),
    ({"page_size": 1001}, "less than or equal to 1000"),
    ({"login_url": "login.microsoftonline.com"}, "must be an http"),
])
def test_config_errors_name_the_key_and_the_fix(keys, message):
    with pytest.raises(ValidationError, match=message):
        config(**keys)


def test_a_domain_tenant_and_the_whole_file_load():
    assert config(tenant_id="contoso.onmicrosoft.com").tenant_id == "contoso.onmicrosoft.com"
    doc = parse_config({"sources": [{"name": "entra", "type": "msgraph", "stream": "sign_ins", "tenant_id": TENANT,
                                     "client_id": CLIENT, "client_secret": {"env": "GRAPH_SECRET"},
                                     "start": ts(-24)},
                                    {"name": "audits", "type": "msgraph", "stream": "directory_audits",
                                     "tenant_id": TENANT, "client_id": CLIENT,
                                     "client_certificate": {"env": "GRAPH_CERT"}, "start": ts(-24)}]})
    assert [s.audit_log for s in doc.sources] == ["sign_ins", "directory_audits"]
    assert doc.sources[0].stream == f"Entra ID sign_ins of tenant {TENANT}"
