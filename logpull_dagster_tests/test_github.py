"""The GitHub audit-log source's own behaviour against the emulated GitHub API over real HTTP (nothing
patched): the window phrase and its encoding, include=all (git events), numeric next links, the
boundary, shared milliseconds, a rejected cursor, throttling (403/429, retry-after, reset, no hint),
permission errors and the config. The hostile-API cases every source shares run for GitHub in
``test_hostile_api.py``, the HTTP faults in ``test_reports_http.py``, the LogSource contract in
``test_contract_sources.py``.

Windows are on conftest's DAY (yesterday, UTC) with the simulator's clock frozen at its noon.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from logpull_dagster.config import ConfigError, load_config
from logpull_dagster.pull import PullFailed, pull_window
from logpull_dagster.simulator import Simulator
from logpull_dagster.simulator.github_audit_log import GitHubAuditLogApi, parse_phrase
from logpull_dagster.sources import BadPage, CredentialsRefused, SourceRequestError, SourceUnavailable, TokenRejected
from logpull_dagster.sources.github import GitHubAuditLogSource, github_wait, phrase
from logpull_dagster.windows import Window

from .conftest import SIM_NOW, TOKEN, hour, ts

W10 = Window(hour(10), hour(11))
W11 = Window(hour(11), hour(12))


def api(sim: Simulator) -> GitHubAuditLogApi:
    return next(a for a in sim.apis if isinstance(a, GitHubAuditLogApi))


def source(sim: Simulator, **kw: Any) -> GitHubAuditLogSource:
    kw.setdefault("page_size", 50)
    kw.setdefault("backoff_initial", 0.01)
    kw.setdefault("backoff_max", 0.05)
    kw.setdefault("enterprise", "acme")
    return GitHubAuditLogSource(base_url=kw.pop("base_url", sim.url), token=kw.pop("token", TOKEN), **kw)


def truth(sim: Simulator, w: Window) -> list[str]:
    return sorted("/".join(i) for i in sim.ground_truth_ids("audit_log", w.start, w.end, api="github_audit_log"))


def read(src: GitHubAuditLogSource, w: Window) -> list[Any]:
    pages = [src.fetch_page(w, None)]
    while pages[-1].next_cursor is not None:
        assert len(pages) < 200
        pages.append(src.fetch_page(w, pages[-1].next_cursor))
    return pages


def run(sim: Simulator, w: Window, store, landing, **kw):  # type: ignore[no-untyped-def]
    src = source(sim, **{k: kw.pop(k) for k in list(kw) if k in ("page_size", "http_attempts", "backoff_max",
                                                                  "min_unhinted_wait", "sleep", "org", "enterprise")})
    try:
        return pull_window(src, w, source_name="gh", checkpoints=store, landing=landing, owner="r", lease_ttl=60, **kw)
    finally:
        src.close()


def landed(landing, store, w: Window) -> list[str]:  # type: ignore[no-untyped-def]
    import orjson

    cp = store.get("gh", "pull", w.start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return [orjson.loads(line)["id"] for p in landing.pages("gh", w, cp.page_seq) for line in landing.read_lines(p)]


# ---- the window phrase, and what the emulated API makes of other phrases -----------------------------

def test_the_window_is_half_open_in_whole_seconds_and_refused_with_a_fraction() -> None:
    assert phrase(W10) == f"created:>={ts(10)} created:<{ts(11)}"
    with pytest.raises(SourceRequestError, match="not a whole UTC second"):
        phrase(Window(hour(10) + dt.timedelta(milliseconds=5), hour(11)))


def test_the_emulated_phrase_parser_knows_the_documented_forms_and_refuses_the_rest() -> None:
    a = int(hour(10).timestamp() * 1000)
    assert parse_phrase(f"created:>={ts(10)} created:<{ts(11)}") == (a, a + 3_600_000)
    assert parse_phrase(f"created:{ts(10)}..{ts(11)}") == (a, a + 3_601_000)  # both ends, whole second B
    assert parse_phrase(f"created:>{ts(10)}")[0] == a + 1000
    day = hour(0).strftime("%Y-%m-%d")
    assert parse_phrase(f"created:<={day}")[1] == int(hour(24).timestamp() * 1000)  # the whole day
    from logpull_dagster.simulator.api import BadRequest
    for bad in (f"created:>={ts(10)[:-1]}.000Z", f"created:>={ts(10)[:-1]} 00:00", "action:repo.create"):
        with pytest.raises(BadRequest):
            parse_phrase(bad)


def test_the_phrase_is_percent_encoded_so_a_plus_is_never_read_as_a_space(sim) -> None:
    src = source(sim)
    url = src.first_page_url(W10)
    assert "%3E%3D" in url and "%20" in url and " " not in url and "+" not in url
    # What an unencoded offset does to the query: GitHub (and the simulator) read the + as a space.
    bad = f"created:>={ts(10)[:-1]}+00:00 created:<{ts(11)}".replace(" ", "+")
    r = httpx.get(f"{sim.url}/enterprises/acme/audit-log?phrase={bad}&include=all",
                  headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 422 and "could not be parsed" in r.json()["message"]
    good = f"created:>={ts(10)[:-1]}%2B00:00 created:<{ts(11)}".replace(" ", "%20")
    r = httpx.get(f"{sim.url}/enterprises/acme/audit-log?phrase={good}&include=all",
                  headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()
    src.close()


# ---- what the source asks for and reads -----------------------------------------------------------

def test_include_all_brings_the_git_events_without_created_at_or_actor(sim) -> None:
    src = source(sim)
    events = [e for p in read(src, W10) for e in src.to_events(p.items) if W10.contains(e.time)]
    src.close()
    git = [e.raw for e in events if e.raw["action"].startswith("git.")]
    assert git and all("created_at" not in g for g in git) and any("actor" not in g for g in git)
    assert sorted(e.id for e in events) == truth(sim, W10)
    first = sim.requests()[0]
    assert (first["include"], first["order"], first["per_page"]) == ("all", "asc", "50")
    # Without include=all (GitHub's default, web) the git events would be missing:
    r = httpx.get(f"{sim.url}/enterprises/acme/audit-log", headers={"Authorization": f"Bearer {TOKEN}"},
                  params={"phrase": phrase(W10), "order": "asc", "per_page": 100})
    assert all(not i["action"].startswith("git.") for i in r.json())


def test_next_links_use_the_numeric_entity_path_and_are_followed_verbatim(sim) -> None:
    src = source(sim)
    pages = read(src, W10)
    src.close()
    assert len(pages) >= 3
    paths = [r["path"] for r in sim.requests()]
    assert paths[0] == "/enterprises/acme/audit-log"
    assert all(p.startswith("/enterprises/") and p.split("/")[2].isdigit() for p in paths[1:])


def test_ghes_keeps_the_api_v3_path_prefix_and_orgs_read_their_own_path(sim) -> None:
    src = source(sim, base_url=f"{sim.url}/api/v3", enterprise=None, org="acme-corp")
    events = [e for p in read(src, W10) for e in src.to_events(p.items) if W10.contains(e.time)]
    src.close()
    assert sorted(e.id for e in events) == truth(sim, W10)
    paths = [r["path"] for r in sim.requests()]
    assert paths[0] == "/api/v3/orgs/acme-corp/audit-log"
    assert all(p.startswith("/api/v3/organizations/") for p in paths[1:])


def test_the_boundary_event_lands_in_the_next_window_only(sim, store, landing) -> None:
    run(sim, W10, store, landing)
    run(sim, W11, store, landing)
    a, b = landed(landing, store, W10), landed(landing, store, W11)
    assert sorted(a) == truth(sim, W10) and sorted(b) == truth(sim, W11)
    at_11 = str(int(hour(11).timestamp() * 1000))
    assert any(i.startswith(at_11 + "/") for i in b) and not any(i.startswith(at_11 + "/") for i in a)


def test_events_sharing_a_millisecond_are_told_apart_by_document_id(sim, store, landing) -> None:
    run(sim, W10, store, landing)
    ids = landed(landing, store, W10)
    per_ms = Counter(i.split("/")[0] for i in ids)
    assert max(per_ms.values()) >= 3 and len(ids) == len(set(ids)) == len(truth(sim, W10))


def test_the_id_keeps_events_apart_that_reuse_a_document_id_as_redacted_fixtures_do(sim) -> None:
    """Grove's redacted fixtures reuse one _document_id for distinct events: keyed on the time too,
    they stay three events; the same event served twice stays one."""
    src = source(sim)
    items = [{"@timestamp": 1606929874512, "_document_id": "REDACTED", "action": "team.add_member"},
             {"@timestamp": 1606929874999, "_document_id": "REDACTED", "action": "repo.create"},
             {"@timestamp": 1606929875000, "_document_id": "REDACTED", "action": "git.clone"},
             {"@timestamp": 1606929874512, "_document_id": "REDACTED", "action": "team.add_member"}]
    assert len({e.id for e in src.to_events(items)}) == 3
    src.close()


@pytest.mark.parametrize(("item", "message"), [
    ({"_document_id": "x"}, "no @timestamp"),
    ({"_document_id": "x", "@timestamp": "2026-11-26T10:00:00Z"}, "no @timestamp in epoch milliseconds"),
    ({"_document_id": "x", "@timestamp": 1606929874.5}, "no @timestamp"),
    ({"_document_id": "x", "@timestamp": 1606929874}, "out of range"),  # seconds, not milliseconds
    ({"@timestamp": 1606929874512}, "no _document_id"),
])
def test_an_item_without_a_usable_id_or_time_is_a_bad_page(sim, item, message) -> None:
    import json

    src = source(sim)
    with pytest.raises(BadPage, match=message):
        src.parse_page(json.dumps([item]).encode(), {})
    src.close()


def test_an_empty_page_ends_the_pass_even_with_a_next_link(sim) -> None:
    src = source(sim, page_size=1)
    page = src.fetch_page(Window(hour(10), hour(10) + dt.timedelta(seconds=1)), None)  # one boundary event
    assert len(page.items) == 1 and page.next_cursor is not None  # full: GitHub links on without looking
    last = src.fetch_page(Window(hour(10), hour(10) + dt.timedelta(seconds=1)), page.next_cursor)
    assert last.items == [] and "rel=\"next\"" in last.headers["link"] and last.next_cursor is None
    src.close()


# ---- a rejected cursor ---------------------------------------------------------------------------

def test_a_422_to_a_next_link_restarts_the_window_exactly(sim, store, landing) -> None:
    sim.set_faults([{"kind": "reject_token", "match": "token", "after": 2}])
    res = run(sim, W10, store, landing)
    assert res.complete and res.token_restarts == 1 and res.duplicates_dropped > 0
    ids = landed(landing, store, W10)
    assert sorted(ids) == truth(sim, W10) and len(ids) == len(set(ids))
    statuses = [r["status"] for r in sim.requests()]
    assert 422 in statuses and sim.requests()[statuses.index(422) + 1]["after"] is None  # page one again


def test_a_forged_cursor_is_a_422_and_a_rejected_cursor(sim) -> None:
    src = source(sim)
    first = src.fetch_page(W10, None)
    forged = first.next_cursor.replace("after=", "after=AAAA")  # type: ignore[union-attr]
    with pytest.raises(TokenRejected, match="HTTP 422"):
        src.fetch_page(W10, forged)
    src.close()


def test_a_phrase_github_cannot_parse_on_the_first_page_is_a_permanent_error(sim) -> None:
    src = source(sim)
    src.first_page_url = lambda w: "/enterprises/acme/audit-log?phrase=created%3A%3E%3Dyesterday"  # type: ignore[method-assign]
    with pytest.raises(SourceRequestError, match="HTTP 422") as e:
        src.fetch_page(W10, None)
    assert e.value.permanent
    src.close()


# ---- throttling ---------------------------------------------------------------------------------------

def _headers(**h: str) -> httpx.Headers:
    return httpx.Headers({"date": "Thu, 26 Nov 2026 12:00:00 GMT", **h})


def test_the_wait_is_retry_after_else_the_reset_when_none_remain_else_a_minute() -> None:
    wait, now = github_wait(), dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC).timestamp()
    assert wait(403, _headers(**{"retry-after": "7", "x-ratelimit-remaining": "0",
                                 "x-ratelimit-reset": str(int(now) + 900)}), now + 50) == 7
    assert wait(429, _headers(**{"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 900)}),
                now + 50) == 900  # counted from Date, not from our clock (50 s fast)
    assert wait(429, _headers(**{"x-ratelimit-remaining": "12"}), now) == 60
    assert wait(403, _headers(**{"x-ratelimit-remaining": "12"}), now) is None  # the message decides
    assert wait(503, _headers(), now) is None


@pytest.mark.parametrize("status", [403, 429])
def test_a_primary_limit_waits_until_x_ratelimit_reset_by_the_server_s_clock(sim, status) -> None:
    gh = api(sim)
    gh.throttle_status, gh.throttle_hint, gh.reset_in = status, "reset", 2.0
    sim.set_faults([{"kind": "429_no_retry_after", "after": 1}])
    src = source(sim, backoff_max=10)
    pages = read(src, W10)
    src.close()
    t = [r["t"] for r in sim.requests()]
    assert sum(p.http_retries for p in pages) == 1
    assert 1.0 <= t[2] - t[1] <= 3.5  # reset minus the frozen Date (~2 s), never our clock's day of skew


@pytest.mark.parametrize("status", [403, 429])
def test_a_secondary_limit_honours_retry_after(sim, status) -> None:
    api(sim).throttle_status = status
    sim.set_faults([{"kind": "429", "retry_after": 1, "after": 1}])
    src = source(sim, backoff_max=10)
    read(src, W10)
    src.close()
    t = [r["t"] for r in sim.requests()]
    assert t[2] - t[1] >= 0.95


def test_a_403_rate_limit_with_no_hint_waits_at_least_the_minimum_then_backs_off(sim) -> None:
    gh = api(sim)
    gh.throttle_status, gh.throttle_hint = 403, "none"
    sim.set_faults([{"kind": "429_no_retry_after", "after": 1, "count": 2}])
    slept: list[float] = []
    src = source(sim, backoff_max=600, sleep=slept.append)  # the real minimum (60 s), slept by a recorder
    pages = read(src, W10)
    src.close()
    assert len(slept) == 2 and 60 <= slept[0] <= 66 and 120 <= slept[1] <= 132
    assert sum(p.http_retries for p in pages) == 2
    assert any("rate limit" in r for p in pages for r in p.retry_reasons)


def test_a_429_with_no_hint_waits_a_minute_capped_by_http_backoff_max(sim) -> None:
    api(sim).throttle_hint = "none"
    sim.set_faults([{"kind": "429_no_retry_after", "after": 1}])
    src = source(sim, backoff_max=0.5)
    t0 = time.monotonic()
    read(src, W10)
    src.close()
    t = [r["t"] for r in sim.requests()]
    assert t[2] - t[1] >= 0.45 and time.monotonic() - t0 < 5


def test_a_rate_limit_wait_past_the_time_budget_stops_the_attempt_at_once(sim) -> None:
    gh = api(sim)
    gh.throttle_status, gh.throttle_hint = 403, "none"
    sim.set_faults([{"kind": "429_no_retry_after", "count": None}])
    src = source(sim, backoff_max=600, sleep=lambda s: pytest.fail("slept past the budget"))
    with pytest.raises(SourceUnavailable, match="would pass the time budget") as e:
        src.fetch_page(W10, None, deadline=time.monotonic() + 5)
    assert not e.value.permanent and len(sim.requests()) == 1  # the next attempt resumes the window
    src.close()


def test_a_403_that_is_no_rate_limit_is_a_permission_error_naming_variable_and_scope(sim) -> None:
    sim.set_faults([{"kind": "echo_auth", "status": 403, "count": None}])
    src = source(sim, credential="GH_TOKEN", http_attempts=6)
    with pytest.raises(CredentialsRefused, match=r"HTTP 403\): check GH_TOKEN \(.*read:audit_log") as e:
        src.fetch_page(W10, None)
    assert e.value.permanent and len(sim.requests()) == 1
    src.close()


def test_a_wrong_token_is_refused_at_once_and_never_shown(sim, store, landing) -> None:
    src = source(sim, token="ghp_not-the-token", credential="GH_TOKEN")
    with pytest.raises(PullFailed, match=r"HTTP 401.*check GH_TOKEN.*Bad credentials") as e:
        pull_window(src, W10, source_name="gh", checkpoints=store, landing=landing, owner="r", lease_ttl=60)
    assert "ghp_not-the-token" not in str(e.value) and len(sim.requests()) == 1
    src.close()


def test_the_token_goes_only_to_base_url_s_origin(sim) -> None:
    api(sim).link_base = "http://127.0.0.2:9"
    src = source(sim)
    first = src.fetch_page(W10, None)
    assert urlsplit(first.next_cursor).netloc == "127.0.0.2:9"  # type: ignore[arg-type]
    with pytest.raises(SourceRequestError, match="not on base_url's origin"):
        src.fetch_page(W10, first.next_cursor)
    assert len(sim.requests()) == 1
    src.close()


def test_the_remaining_quota_is_kept_for_the_operator(sim) -> None:
    src = source(sim)
    page = src.fetch_page(W10, None)
    src.close()
    assert page.quota_remaining is not None and page.headers["x-ratelimit-limit"] == "1750"


# ---- config ---------------------------------------------------------------------------------------

def _config(tmp_path: Path, **keys: Any) -> Any:
    src = {"name": "gh", "type": "github", "token": {"env": "GH_TOKEN"}, "start": ts(-24), **keys}
    cfg = {"sources": [src], "checkpoints": {"type": "sqlite", "path": "state/checkpoints.db"},
           "landing": {"type": "local", "path": "state/landing"}, "siem": {"type": "file", "path": "siem"}}
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump(cfg))
    return load_config(tmp_path / "logpull.yaml")


def test_the_defaults_are_github_s(tmp_path) -> None:
    [src] = _config(tmp_path, enterprise="acme").sources
    assert src.base_url == "https://api.github.com" and src.rate_limit == "1750/hour"
    assert src.settle_lag == dt.timedelta(minutes=15) and src.lookback == dt.timedelta(hours=6)
    [ghes] = _config(tmp_path, org="acme-corp", base_url="https://ghe.example.com/api/v3/", rate_limit="600/min",
                     settle_lag="1h").sources
    assert ghes.base_url == "https://ghe.example.com/api/v3" and ghes.rate_limit == "600/min"
    assert ghes.settle_lag == dt.timedelta(hours=1)


@pytest.mark.parametrize(("keys", "message"), [
    ({}, "set exactly one of `enterprise` and `org` \\(neither is set\\)"),
    ({"enterprise": "acme", "org": "acme"}, "both are set"),
    ({"enterprise": "acme", "token": "ghp_x"}, "secrets are never written in the config"),
    ({"enterprise": "acme", "page_size": 50}, "page_size"),
    ({"enterprise": "ac me"}, "enterprise"),
])
def test_config_errors_name_the_key_and_the_fix(tmp_path, keys, message) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, **keys)


def test_an_opened_config_reads_the_window_through_the_plugin(tmp_path, sim, store, landing, monkeypatch) -> None:
    from logpull_dagster.plugins import open_source

    monkeypatch.setenv("GH_TOKEN", TOKEN)
    [cfg] = _config(tmp_path, enterprise="acme", base_url=sim.url, rate_limit=None).sources
    src = open_source(cfg, lambda name: TOKEN if name == "GH_TOKEN" else "")
    res = pull_window(src, W10, source_name="gh", checkpoints=store, landing=landing, owner="r", lease_ttl=60)
    src.close()
    assert res.complete and sorted(landed(landing, store, W10)) == truth(sim, W10)
    assert sim.now() == SIM_NOW
