"""The Okta System Log source's own behaviour: the pure Link parsing, and against the emulated Okta API
over real HTTP (nothing patched), the boundary, late events, rate limits, a rejected ``after``,
credentials (SSWS and OAuth ``private_key_jwt``) and resuming a killed window from its journal. The
hostile-API cases every source shares (gzip bomb, huge bodies, trickling, redirects, TLS, unreadable
pages and skip-page) run for Okta in ``test_hostile_api.py``; the HTTP faults in ``test_reports_http.py``.

Windows are on conftest's DAY (yesterday, UTC) with the simulator's clock frozen at its noon: nothing
compares a fixed date with the wall clock.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from logpull_dagster import journal, plugins
from logpull_dagster.config import ConfigError, load_config
from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.pull import PullFailed, pull_window
from logpull_dagster.redact import Redactor, clean_secret
from logpull_dagster.simulator import Simulator
from logpull_dagster.simulator.okta_system_log import OktaSystemLogApi
from logpull_dagster.sources import BadPage, CredentialsRefused, InvalidSecret, Page, SourceRequestError
from logpull_dagster.sources.auth import OAuthPrivateKeyJwt, TokenRefused
from logpull_dagster.sources.okta import (
    OktaConfig,
    OktaSystemLogSource,
    links,
    looks_like_next_link,
    next_link,
    okta_wait,
)
from logpull_dagster.windows import Window

from .conftest import SIM_NOW, TOKEN, hour, ms, ts

W10 = Window(hour(10), hour(11))
W11 = Window(hour(11), hour(12))
CLIENT_ID = "0oa1logpulltest"


# ---- pure logic: Link headers, the rate-limit hook ----------------------------------------------------

def test_link_headers_are_read_whatever_their_spacing_and_grouping() -> None:
    one = '<https://o.okta.com/api/v1/logs?since=a>; rel="self", <https://o.okta.com/api/v1/logs?after=1_x>; rel="next"'
    assert links(one) == [("https://o.okta.com/api/v1/logs?since=a", ("self",)),
                          ("https://o.okta.com/api/v1/logs?after=1_x", ("next",))]
    assert next_link(one) == "https://o.okta.com/api/v1/logs?after=1_x"
    # several headers, odd spacing, unquoted and multi-valued rel, a quoted parameter holding ; and ,
    odd = ['<https://o/api/v1/logs?a=1>;rel=self',
           '<https://o/api/v1/logs?after=2> ;  title="a; b, c" ;REL = "prev  Next" ,<https://o/x>; rel=last']
    assert next_link(odd) == "https://o/api/v1/logs?after=2"
    assert [rels for _, rels in links(odd)] == [("self",), ("prev", "next"), ("last",)]
    assert next_link('<https://o/api/v1/logs?since=a>; rel="self"') is None
    assert next_link("") is None and next_link([]) is None
    assert next_link(['<https://o/a>; rel="next"', '<https://o/a>; rel=next']) == "https://o/a"  # the same twice
    with pytest.raises(BadPage, match='2 different rel="next" links'):
        next_link('<https://o/a>; rel="next", <https://o/b>; rel="next"')


def test_only_a_system_log_url_is_taken_for_a_stored_next_link() -> None:
    assert looks_like_next_link("https://acme.okta.com/api/v1/logs?after=1_x")
    assert looks_like_next_link("/api/v1/logs?after=1_x")
    assert not looks_like_next_link("not-a-token-this-api-ever-gave")
    assert not looks_like_next_link("ftp://acme.okta.com/api/v1/logs?after=1")


def test_a_429_waits_for_the_reset_epoch_and_a_5xx_does_not() -> None:
    wait = okta_wait()
    date = "Thu, 26 Nov 2026 10:00:00 GMT"
    epoch = dt.datetime(2026, 11, 26, 10, tzinfo=dt.UTC).timestamp()
    headers = httpx.Headers({"X-Rate-Limit-Reset": str(int(epoch) + 42), "Date": date})
    assert wait(429, headers, epoch + 1000) == 42  # counted from the server's Date, not our clock
    assert wait(503, headers, epoch) is None  # Okta sends the reset header always: a 503 backs off instead
    assert wait(503, httpx.Headers({"Retry-After": "3"}), epoch) == 3
    assert wait(403, headers, epoch) is None  # a refusal stays a refusal


# ---- fixtures ---------------------------------------------------------------------------------------

@pytest.fixture
def okta_sim() -> Iterator[Simulator]:
    with Simulator(seed=11, events_per_hour=300, token=TOKEN, boundary_events=True, shared_ms_events=True) as sim:
        sim.set_clock(now=SIM_NOW)
        yield sim


def api_of(sim: Simulator) -> OktaSystemLogApi:
    return next(a for a in sim.apis if isinstance(a, OktaSystemLogApi))


def source(sim: Simulator, **kw) -> OktaSystemLogSource:  # type: ignore[no-untyped-def]
    kw.setdefault("page_size", 50)
    kw.setdefault("backoff_initial", 0.01)
    kw.setdefault("backoff_max", 0.05)
    kw.setdefault("http_attempts", 4)
    kw.setdefault("timeout", 5)
    if "auth" not in kw:
        kw.setdefault("token", TOKEN)
    return OktaSystemLogSource(base_url=sim.url, **kw)


def truth(sim: Simulator, w: Window) -> list[str]:
    return sorted(i[0] for i in sim.ground_truth_ids("system_log", w.start, w.end, api="okta_system_log"))


def landed(landing, store, w: Window) -> list[str]:  # type: ignore[no-untyped-def]
    cp = store.get("okta", "pull", w.start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return [orjson.loads(line)["id"] for p in landing.pages("okta", w, cp.page_seq) for line in landing.read_lines(p)]


def pull(src: OktaSystemLogSource, w: Window, store, landing, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("owner", "r")
    return pull_window(src, w, source_name="okta", checkpoints=store, landing=landing, lease_ttl=60, **kw)


def log_requests(sim: Simulator) -> list[dict]:
    return [r for r in sim.requests() if r["path"] == "/api/v1/logs"]


# ---- the window's boundaries --------------------------------------------------------------------------

def test_until_is_treated_as_inclusive_and_each_boundary_event_lands_in_its_own_window(okta_sim, store, landing):
    src = source(okta_sim)
    try:
        pull(src, W10, store, landing)
        served_w10 = {i["uuid"] for p in _bodies(okta_sim, src, W10) for i in p}
        pull(src, W11, store, landing)
    finally:
        src.close()
    a, b = landed(landing, store, W10), landed(landing, store, W11)
    assert sorted(a) == truth(okta_sim, W10) and sorted(b) == truth(okta_sim, W11)
    on_11 = {i["uuid"] for i in okta_sim.ground_truth("system_log", W11.start, W11.end, api="okta_system_log")
             if i["published"] == ms(11)}
    assert on_11, "the simulator stamps an event exactly on every hour"
    assert on_11 <= served_w10, "the API returned the event stamped on `until` for the earlier window too"
    assert on_11 <= set(b) and not on_11 & set(a)  # ...and it landed in the later window only
    assert not set(a) & set(b)
    first = log_requests(okta_sim)[0]
    assert (first["since"], first["until"], first["limit"]) == (ms(10), ms(11), 50)


def _bodies(sim: Simulator, src: OktaSystemLogSource, w: Window) -> list[list[dict]]:
    """Every page of the window as the API serves it (items before the pull loop's filtering)."""
    pages = [src.fetch_page(w, None)]
    while pages[-1].next_cursor is not None:
        pages.append(src.fetch_page(w, pages[-1].next_cursor))
    return [p.items for p in pages]


def test_events_sharing_a_millisecond_all_land_once(okta_sim, store, landing):
    src = source(okta_sim, page_size=7)  # small pages: a group of three is split across two of them
    try:
        pull(src, W10, store, landing)
    finally:
        src.close()
    ids = landed(landing, store, W10)
    per_ms = Counter(i["published"] for i in okta_sim.ground_truth("system_log", W10.start, W10.end,
                                                                     api="okta_system_log"))
    assert max(per_ms.values()) >= 3
    assert len(ids) == len(set(ids)) and sorted(ids) == truth(okta_sim, W10)


def test_the_pass_ends_on_an_empty_page_even_when_okta_links_past_the_last(okta_sim):
    n = len(truth(okta_sim, W10)) + 1  # + the boundary event at `until`, which the API also returns
    assert n == sum(1 for i in okta_sim.ground_truth("system_log", W10.start, W11.end, api="okta_system_log")
                    if i["published"] <= ms(11))
    src = source(okta_sim, page_size=n)  # exactly one full page: the API links on to an empty one
    try:
        first = src.fetch_page(W10, None)
        assert len(first.items) == n and first.next_cursor is not None
        last = src.fetch_page(W10, first.next_cursor)
    finally:
        src.close()
    assert last.items == [] and last.next_cursor is None
    assert 'rel="next"' in last.headers["link"], "the empty page still carried a next link"


# ---- late events ---------------------------------------------------------------------------------------

def test_late_events_missed_by_the_bounded_read_are_found_by_the_lookback_reread(store, landing):
    with Simulator(seed=3, events_per_hour=400, token=TOKEN, late_fraction=0.05, late_delay=2 * 3600) as sim:
        sim.set_clock(now=W10.end + dt.timedelta(minutes=5))  # the default settle_lag after the window
        src = source(sim)
        try:
            first = pull(src, W10, store, landing)
            missed = len(truth_with_unpublished(sim, W10)) - len(truth(sim, W10))
            assert missed > 5 and first.events_landed == len(truth(sim, W10))
            sim.set_clock(now=W10.end + dt.timedelta(hours=3))  # inside the 6 h lookback: read again
            again = pull(src, W10, store, landing, owner="r2")
        finally:
            src.close()
        assert again.late_events == missed and again.events_landed == missed
        assert sorted(landed(landing, store, W10)) == truth(sim, W10) == truth_with_unpublished(sim, W10)
        assert again.checkpoint.stats["late_events"] == missed and again.checkpoint.passes == 2


def truth_with_unpublished(sim: Simulator, w: Window) -> list[str]:
    return sorted(i[0] for i in sim.ground_truth_ids("system_log", w.start, w.end, api="okta_system_log",
                                                     include_unpublished=True))


def test_the_default_lags_are_okta_s():
    cfg = OktaConfig(name="okta", type="okta", base_url="https://acme.okta.com", token={"env": "OKTA_TOKEN"},
                     start=ts(-24))
    assert cfg.settle_lag == dt.timedelta(minutes=5) and cfg.lookback == dt.timedelta(hours=6)


# ---- rate limits --------------------------------------------------------------------------------------

def test_a_429_waits_until_x_rate_limit_reset_by_the_server_s_clock(okta_sim):
    okta_sim.set_faults([{"kind": "429", "retry_after": 2, "count": 1}])
    src = source(okta_sim, backoff_max=5)
    try:
        page = src.fetch_page(W10, None)
    finally:
        src.close()
    throttled, retried = log_requests(okta_sim)
    reset = api_of(okta_sim).last_reset
    assert throttled["status"] == 429 and retried["status"] == 200 and page.http_retries == 1
    # The reset and the 429's Date are on the API's clock, frozen a day behind ours here: a client that
    # counted the reset from its own clock would find it long past and not wait at all.
    date = int(okta_sim.now().timestamp())  # Date has whole seconds, never later than the server's now
    assert reset is not None and reset - date >= 1.5
    assert abs(time.time() - date) > 3600
    # Counted from the 429's Date: never early, at most a second late; not our exponential backoff
    # (a few hundredths here).
    wait = reset - date
    assert throttled["t"] + wait - 0.05 <= retried["t"] <= throttled["t"] + wait + 1.5


def test_the_reset_wait_is_bounded_by_http_backoff_max(okta_sim):
    okta_sim.set_faults([{"kind": "429", "retry_after": 60, "count": 1}])
    src = source(okta_sim, backoff_max=0.5)
    try:
        src.fetch_page(W10, None)
    finally:
        src.close()
    throttled, retried = log_requests(okta_sim)
    assert 0.4 <= retried["t"] - throttled["t"] < 3


def test_x_rate_limit_remaining_is_kept_for_the_operator(okta_sim):
    api_of(okta_sim).rate_limit = 40
    src = source(okta_sim)
    try:
        pages = [src.fetch_page(W10, None)]
        while pages[-1].next_cursor is not None:
            pages.append(src.fetch_page(W10, pages[-1].next_cursor))
    finally:
        src.close()
    remaining = [p.quota_remaining if p.quota_remaining is not None else -1 for p in pages]
    assert all(p.headers["x-rate-limit-limit"] == "40" for p in pages)
    assert min(remaining) >= 0 and min(remaining) <= 40 - len(pages)
    # Journaled with each page, so it is in the read journal (and for the metadata) with the Link header.
    assert all(set(p.headers) == {"link", "x-rate-limit-limit", "x-rate-limit-remaining"} for p in pages)
    assert remaining == [int(p.headers["x-rate-limit-remaining"]) for p in pages]


class PagesSeen:
    """A source as the pull loop uses it, keeping every Page it handed over (what the loop was told)."""

    def __init__(self, src: OktaSystemLogSource) -> None:
        self.src = src
        self.pages: list[Page] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.src, name)

    def fetch_page(self, window: Window, cursor: str | None, deadline: float | None = None) -> Page:
        page = self.src.fetch_page(window, cursor, deadline)
        self.pages.append(page)
        return page


def test_the_lowest_remaining_count_of_a_window_reaches_its_checkpoint_for_the_metadata(okta_sim, store, landing):
    api_of(okta_sim).rate_limit = 1000
    src = PagesSeen(source(okta_sim))
    try:
        result = pull(src, W10, store, landing)
    finally:
        src.close()
    assert result.complete and result.pages_read >= 2
    assert all(p.quota_remaining is not None for p in src.pages)
    lowest = min(p.quota_remaining or 0 for p in src.pages)
    # assets._pull_metadata shows this as rate_limit_remaining_min
    assert result.checkpoint.stats["quota_remaining_min"] == lowest <= 1000 - result.pages_read


# ---- HTTP faults and a rejected after --------------------------------------------------------------

def test_a_rejected_after_restarts_the_pass_from_page_one_and_the_result_stays_exact(okta_sim, store, landing):
    okta_sim.set_faults([{"kind": "reject_token", "match": "token", "after": 2}])
    src = source(okta_sim)
    try:
        result = pull(src, W10, store, landing)
    finally:
        src.close()
    assert result.token_restarts == 1
    ids = landed(landing, store, W10)
    assert len(ids) == len(set(ids)) and sorted(ids) == truth(okta_sim, W10)
    log = log_requests(okta_sim)
    assert [r["after"] is None for r in log].count(True) == 2  # page one, twice
    assert [r["status"] for r in log].count(400) == 1


def test_dropped_connections_5xx_and_throttling_mixed_leave_the_window_exact(okta_sim, store, landing):
    okta_sim.set_faults([{"kind": "drop", "probability": 0.2, "count": None},
                         {"kind": "503", "probability": 0.1, "count": None},
                         {"kind": "429", "retry_after": 0, "probability": 0.1, "count": None}])
    src = source(okta_sim, http_attempts=20)
    try:
        result = pull(src, W10, store, landing)
    finally:
        src.close()
    assert sum(f["fired"] for f in okta_sim.faults()) > 0 and result.http_retries > 0
    ids = landed(landing, store, W10)
    assert len(ids) == len(set(ids)) and sorted(ids) == truth(okta_sim, W10)


def test_a_next_link_on_another_origin_is_never_requested(okta_sim):
    api_of(okta_sim).link_base = "http://127.0.0.2:9"
    src = source(okta_sim)
    try:
        first = src.fetch_page(W10, None)
        assert first.next_cursor is not None and first.next_cursor.startswith("http://127.0.0.2:9/api/v1/logs?")
        with pytest.raises(SourceRequestError) as refused:
            src.fetch_page(W10, first.next_cursor)
    finally:
        src.close()
    assert refused.value.permanent
    assert "127.0.0.2:9" in str(refused.value) and "after=" not in str(refused.value)  # origins only
    assert len(log_requests(okta_sim)) == 1


# ---- credentials --------------------------------------------------------------------------------------

def test_the_api_token_is_sent_as_ssws_and_never_written_anywhere(okta_sim, store, landing, tmp_path):
    with httpx.Client(base_url=okta_sim.url, trust_env=False) as c:  # the API takes SSWS, not Bearer
        params = {"since": ms(10), "until": ms(11)}
        assert c.get("/api/v1/logs", params=params, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 401
        assert c.get("/api/v1/logs", params=params, headers={"Authorization": f"SSWS {TOKEN}"}).status_code == 200
    okta_sim.set_faults([{"kind": "echo_auth", "status": 401}])  # the API quotes the header it got
    src = source(okta_sim)
    try:
        with pytest.raises(CredentialsRefused) as echoed:
            src.fetch_page(W10, None)
        assert f"Authorization: SSWS {TOKEN} was refused" in str(echoed.value)  # what went on the wire
        okta_sim.set_faults([{"kind": "echo_auth", "status": 401, "after": 1}])
        with pytest.raises(PullFailed) as failed:  # the pull loop's text, as it reaches logs and the UI
            pull(src, W10, store, landing, redactor=Redactor([TOKEN]))
    finally:
        src.close()
    text = str(failed.value)
    assert failed.value.permanent and "Authorization: [REDACTED]" in text and TOKEN not in text
    cp = store.get("okta", "pull", W10.start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert TOKEN not in (cp.last_error or "") and TOKEN not in repr(cp.stats)
    for f in tmp_path.rglob("*"):  # the checkpoint store, the landing store and its journal
        if f.is_file():
            assert TOKEN.encode() not in f.read_bytes(), f"the token is in {f}"

    wrong = source(okta_sim, token="not-the-token", credential="OKTA_TOKEN")
    try:
        with pytest.raises(CredentialsRefused) as refused:
            wrong.fetch_page(W10, None)
    finally:
        wrong.close()
    assert refused.value.permanent and "check OKTA_TOKEN" in str(refused.value)
    assert "Invalid token provided" in str(refused.value)


def rsa_key() -> tuple[str, str]:
    """A fresh RSA key pair (private PEM, public PEM), made for the test and never stored."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return rsa_key()


def oauth(sim: Simulator, private_pem: str, **kw) -> OAuthPrivateKeyJwt:  # type: ignore[no-untyped-def]
    return OAuthPrivateKeyJwt(f"{sim.url}/oauth2/v1/token", CLIENT_ID, private_pem, ["okta.logs.read"], **kw)


def test_oauth_private_key_jwt_reads_the_window_and_refreshes_its_token(okta_sim, keys, store, landing):
    private, public = keys
    api = api_of(okta_sim)
    api.register_client(CLIENT_ID, public)
    auth = oauth(okta_sim, private)
    src = source(okta_sim, auth=auth)
    try:
        pull(src, W10, store, landing)
        assert api.tokens_issued == 1 and auth.tokens_fetched == 1
        api.revoke_tokens()  # the API refuses the token: one new token, the request sent again
        page = src.fetch_page(W11, None)
        assert page.items and api.tokens_issued == 2
        api.token_lifetime = 2  # renewed before expiry (half its life early, at most refresh_margin)
        api.revoke_tokens()
        src.fetch_page(W11, None)
        time.sleep(1.2)
        src.fetch_page(W11, None)
        assert api.tokens_issued == 4
        held = src.secrets()
    finally:
        src.close()
    assert sorted(landed(landing, store, W10)) == truth(okta_sim, W10)
    assert private.strip() in held and len(held) >= 3  # key, assertion and tokens: all masked in any error text
    tokens = [r for r in okta_sim.requests() if r["path"] == "/oauth2/v1/token"]
    assert len(tokens) == 4 and all(r["status"] == 200 for r in tokens)


def test_a_key_okta_does_not_know_is_refused_clearly_and_never_shown(okta_sim, keys):
    private, _ = keys
    _, other_public = rsa_key()
    api_of(okta_sim).register_client(CLIENT_ID, other_public)
    src = source(okta_sim, auth=oauth(okta_sim, private, key_name="oauth.private_key (OKTA_PRIVATE_KEY)",
                                      credential="oauth.client_id and oauth.private_key (OKTA_PRIVATE_KEY)"),
                 credential="oauth.client_id and oauth.private_key (OKTA_PRIVATE_KEY)")
    try:
        with pytest.raises(TokenRefused) as refused:
            src.fetch_page(W10, None)
    finally:
        src.close()
    text = str(refused.value)
    assert refused.value.permanent and "invalid_client" in text and "signature is invalid" in text
    assert "oauth.private_key (OKTA_PRIVATE_KEY)" in text and "/oauth2/v1/token" in text
    assert "PRIVATE KEY-----" not in text and log_requests(okta_sim) == []  # the API never saw a request

    with pytest.raises(InvalidSecret) as bad:
        oauth(okta_sim, "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----",
              key_name="oauth.private_key (OKTA_PRIVATE_KEY)")
    assert "oauth.private_key (OKTA_PRIVATE_KEY) is not a usable private key" in str(bad.value)
    assert "bm90IGEga2V5" not in str(bad.value)


def test_a_scope_the_app_was_not_granted_is_refused(okta_sim, keys):
    private, public = keys
    api_of(okta_sim).register_client(CLIENT_ID, public, scopes=("okta.users.read",))
    src = source(okta_sim, auth=oauth(okta_sim, private))
    try:
        with pytest.raises(TokenRefused, match=r"invalid_scope: The following scopes are not allowed: okta.logs.read"):
            src.fetch_page(W10, None)
    finally:
        src.close()


# ---- the config --------------------------------------------------------------------------------------

def write_config(folder: Path, **source: object) -> Path:
    src = {"name": "okta", "type": "okta", "base_url": "https://acme.okta.com", "start": ts(-24), **source}
    cfg = {"sources": [src], "checkpoints": {"type": "sqlite", "path": "state/cp.db"},
           "landing": {"type": "local", "path": "state/landing"}, "siem": {"type": "file", "path": "siem"}}
    (folder / "logpull.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "logpull.yaml"


def test_exactly_one_of_token_and_oauth_is_a_clear_config_error(tmp_path):
    for keys_ in ({}, {"token": {"env": "OKTA_TOKEN"},
                       "oauth": {"client_id": CLIENT_ID, "private_key": {"env": "OKTA_PRIVATE_KEY"}}}):
        with pytest.raises(ConfigError, match=r"sources\[0\] \(okta\).*set exactly one of `token` and `oauth`"):
            load_config(write_config(tmp_path, **keys_))
    with pytest.raises(ConfigError, match=r"private_key: secrets are never written in the config"):
        load_config(write_config(tmp_path, oauth={"client_id": CLIENT_ID, "private_key": "-----BEGIN"}))
    cfg = load_config(write_config(tmp_path, token={"env": "OKTA_TOKEN"})).sources[0]
    assert isinstance(cfg, OktaConfig) and [r.env for r in cfg.secret_refs()] == ["OKTA_TOKEN"]
    cfg = load_config(write_config(tmp_path, oauth={"client_id": CLIENT_ID,
                                                    "private_key": {"env": "OKTA_PRIVATE_KEY"}})).sources[0]
    assert [r.env for r in cfg.secret_refs()] == ["OKTA_PRIVATE_KEY"]


@pytest.mark.parametrize("form", ["pem", "pem_crlf", "base64"])
def test_an_oauth_config_opens_a_source_that_reads_through_the_token_url_it_names(okta_sim, keys, tmp_path,
                                                                                  store, landing, form):
    private, public = keys
    api_of(okta_sim).register_client(CLIENT_ID, public)
    oauth_keys = {"client_id": CLIENT_ID, "private_key": {"env": "OKTA_PRIVATE_KEY"},
                  "token_url": f"{okta_sim.url}/oauth2/v1/token"}
    cfg = load_config(write_config(tmp_path, base_url=okta_sim.url, oauth=oauth_keys, page_size=100)).sources[0]
    # As an operator sets it: OKTA_PRIVATE_KEY="$(cat key.pem)", the file mounted from a Windows editor's
    # copy, or one line of base64; read as every secret is (redact.clean_secret).
    value = {"pem": private, "pem_crlf": private.replace("\n", "\r\n"),
             "base64": base64.b64encode(private.encode()).decode()}[form]
    src = plugins.open_source(cfg, lambda name: clean_secret(name, {"OKTA_PRIVATE_KEY": value}[name]))
    try:
        pull(src, W10, store, landing)  # type: ignore[arg-type]
    finally:
        src.close()
    assert sorted(landed(landing, store, W10)) == truth(okta_sim, W10)
    assert api_of(okta_sim).tokens_issued == 1


# ---- a killed window resumes from the link it was about to follow ----------------------------------

class Killed(BaseException):
    """The process dying mid-window (not an Exception: nothing in the loop may treat it as a fault)."""


class DyingLanding(LocalLandingStore):
    """Dies while landing its ``die_at``-th page (after the page was journaled and the cursor moved)."""

    def __init__(self, root: Path, die_at: int) -> None:
        super().__init__(root)
        self.die_at, self.pages = die_at, 0

    def put_page(self, *args, **kw):  # type: ignore[no-untyped-def]
        self.pages += 1
        if self.pages == self.die_at:
            raise Killed()
        return super().put_page(*args, **kw)


def test_a_killed_window_resumes_from_the_journaled_link_it_was_about_to_follow(okta_sim, store, tmp_path):
    dying = DyingLanding(tmp_path / "landing", die_at=3)
    src = source(okta_sim)
    try:
        with pytest.raises(Killed):
            pull(src, W10, store, dying)
        cp = store.get("okta", "pull", W10.start.strftime("%Y-%m-%dT%H:%M:%SZ"))
        assert cp.journaled >= 1 and cp.cursor is not None
        n = cp.reads - cp.journaled  # the oldest read journaled and not landed
        record = journal.decode(dying.get_read("okta", W10, n)[0])
        assert record.next_cursor == next_link(record.headers["link"])  # the Link URL, as Okta gave it
        assert record.next_cursor.startswith(f"{okta_sim.url}/api/v1/logs?")
        assert TOKEN not in repr(record.headers) and "authorization" not in record.headers
        expected_after = parse_qs(urlsplit(cp.cursor).query)["after"][0]
        before = len(log_requests(okta_sim))

        resumed = LocalLandingStore(tmp_path / "landing")
        result = pull(src, W10, store, resumed, owner="r2")
    finally:
        src.close()
    assert result.resumed_from_page is not None and result.complete
    first_new = log_requests(okta_sim)[before]
    assert first_new["after"] == expected_after  # no page before the checkpoint was asked for again
    ids = landed(resumed, store, W10)
    assert len(ids) == len(set(ids)) and sorted(ids) == truth(okta_sim, W10)
    reads = Counter(r["after"] for r in log_requests(okta_sim))
    assert max(reads.values()) == 1, "no page was read twice"


def test_only_a_pem_block_keeps_line_breaks_and_each_of_its_lines_is_redacted(keys):
    private, _ = keys
    with pytest.raises(InvalidSecret, match=r"OKTA_TOKEN holds a control character at position 4"):
        clean_secret("OKTA_TOKEN", "00ab\ncd-token")  # a header value with a line break: refused as before
    with pytest.raises(InvalidSecret, match=r"holds a space"):
        clean_secret("OKTA_PRIVATE_KEY", private.replace("-----END PRIVATE KEY-----", ""))  # not a whole block
    line = private.splitlines()[5]
    assert len(line) == 64 and Redactor([private])(f"signer said: {line}!") == "signer said: [REDACTED]!"
