"""The sources and the pull loop against the simulator, over real HTTP.

The HTTP fault tests (transient faults, faults outlasting the retries, a rejected cursor) run for every
source (``SOURCES``); the rest are Google's (its inclusive bounds, its page-level messages)."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter

import orjson
import pytest

from logpull_dagster.pull import PullFailed, WindowNotSettled, pull_window
from logpull_dagster.simulator import Simulator
from logpull_dagster.sources import LogSource
from logpull_dagster.sources.auth import OAuthClientCredentials
from logpull_dagster.sources.github import GitHubAuditLogSource
from logpull_dagster.sources.google_workspace import GoogleWorkspaceSource
from logpull_dagster.sources.msgraph import MsGraphSource, scope_for
from logpull_dagster.sources.okta import OktaSystemLogSource
from logpull_dagster.sources.slack import SlackAuditLogsSource
from logpull_dagster.windows import Window

from . import cli, msgraph_login
from .conftest import TOKEN, hour, ms, ts

W10 = Window(hour(10), hour(11))
W11 = Window(hour(11), hour(12))


def source(sim: Simulator, kind: str = "google_workspace", **kw) -> LogSource:  # type: ignore[no-untyped-def]
    kw.setdefault("page_size", 50)
    kw.setdefault("backoff_initial", 0.01)
    kw.setdefault("backoff_max", 0.05)
    if kind == "okta":
        return OktaSystemLogSource(base_url=sim.url, token=TOKEN, **kw)
    if kind == "github":
        return GitHubAuditLogSource(base_url=sim.url, token=TOKEN, enterprise="acme", **kw)
    if kind == "slack":
        return SlackAuditLogsSource(base_url=sim.url, token=TOKEN, **kw)
    if kind == "okta_rest":  # Okta's System Log described as ``type: rest`` (cli.SOURCES)
        return cli.rest_source(kind, sim.url, token=TOKEN, **kw)  # type: ignore[no-any-return]
    if kind == "msgraph":  # tokens from another simulator: the faults set here strike the API only
        auth = OAuthClientCredentials(msgraph_login.token_url(), msgraph_login.CLIENT, TOKEN, scope_for(sim.url))
        return MsGraphSource(base_url=sim.url, stream="directory_audits", auth=auth, **kw)
    return GoogleWorkspaceSource(base_url=sim.url, application="login", access_token=TOKEN, **kw)


def truth(sim: Simulator, w: Window, kind: str = "google_workspace") -> list[str]:
    if kind in ("okta", "okta_rest"):
        return sorted(i[0] for i in sim.ground_truth_ids("system_log", w.start, w.end, api="okta_system_log"))
    if kind == "github":
        return sorted("/".join(i) for i in sim.ground_truth_ids("audit_log", w.start, w.end, api="github_audit_log"))
    if kind == "slack":  # "<date_create>/<id>"
        return sorted("/".join(i) for i in sim.ground_truth_ids("audit_logs", w.start, w.end, api="slack_audit_logs"))
    if kind == "msgraph":
        return sorted(i[0] for i in sim.ground_truth_ids("directory_audits", w.start, w.end, api="msgraph"))
    return sorted("/".join(i) for i in sim.ground_truth_ids("login", w.start, w.end))


SOURCES = ["google_workspace", "okta", "okta_rest", "github", "slack", "msgraph"]


def landed(landing, store, w: Window) -> list[str]:  # type: ignore[no-untyped-def]
    cp = store.get("gws", "pull", w.start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return [orjson.loads(line)["id"] for p in landing.pages("gws", w, cp.page_seq) for line in landing.read_lines(p)]


def run(sim: Simulator, w: Window, store, landing, kind: str = "google_workspace", **kw):  # type: ignore[no-untyped-def]
    src = source(sim, kind, **{k: kw.pop(k) for k in list(kw) if k in ("timeout", "http_attempts", "page_size")})
    try:
        return pull_window(src, w, source_name="gws", checkpoints=store, landing=landing, owner="r", lease_ttl=60, **kw)
    finally:
        src.close()


def test_boundary_events_land_in_exactly_one_window(sim, store, landing):
    run(sim, W10, store, landing)
    run(sim, W11, store, landing)
    a, b = landed(landing, store, W10), landed(landing, store, W11)
    assert sorted(a) == truth(sim, W10) and sorted(b) == truth(sim, W11)
    boundary = [i for i in b if i.split("/")[2] == ms(11)]
    assert boundary and not set(a) & set(b)  # the API returned it for both; it landed once
    served = sum(r["items"] for r in sim.requests())
    assert served > len(a) + len(b)  # proof that the inclusive API did hand out the overlap


def test_events_sharing_a_millisecond_all_land(sim, store, landing):
    run(sim, W10, store, landing)
    ids = landed(landing, store, W10)
    per_ms = Counter(i.split("/")[2] for i in ids)
    assert max(per_ms.values()) >= 3
    assert len(ids) == len(set(ids)) == len(truth(sim, W10))


@pytest.mark.parametrize("rule", [
    {"kind": "429", "retry_after": 1, "after": 2},
    {"kind": "429_no_retry_after", "count": 3, "after": 1},
    {"kind": "503", "count": 2, "after": 3},
    {"kind": "500", "after": 2},
    {"kind": "502", "after": 4},
    {"kind": "504", "after": 1},
    {"kind": "drop", "count": 2, "after": 2},
    {"kind": "slow", "delay": 1.0, "after": 2},
], ids=lambda r: r["kind"])
@pytest.mark.parametrize("kind", SOURCES)
def test_transient_faults_are_retried_and_the_window_is_exact(sim, store, landing, rule, kind):
    sim.set_faults([rule])
    res = run(sim, W10, store, landing, kind, timeout=0.4)
    assert res.complete and res.http_retries == rule.get("count", 1)
    assert sorted(landed(landing, store, W10)) == truth(sim, W10, kind)
    assert sum(f["fired"] for f in sim.faults()) == rule.get("count", 1)


@pytest.mark.parametrize("kind", SOURCES)
def test_a_window_the_api_s_clock_has_not_finished_is_refused_then_read_once_it_has(sim, store, landing, kind):
    """The API's Date (the sim clock) is half an hour into W11 while this host's clock is a day past it:
    read now, the window would be complete with half its events missing (issue 19, case 3)."""
    sim.set_clock(now=hour(11.5))
    with pytest.raises(WindowNotSettled, match=rf"not settled by the API's clock: the API answered at {ts(11.5)}"):
        run(sim, W11, store, landing, kind, settle_lag=0.0)
    cp = store.get("gws", "pull", ts(11))
    assert (cp.status, cp.cursor, cp.events, cp.page_seq, cp.reads, cp.journaled) == ("failed", None, 0, 0, 0, 0)
    assert [p for p in landing.root.rglob("*") if p.is_file()] == []
    assert [r["status"] for r in sim.requests()] == [200]  # the first page was served, and dropped
    sim.set_clock(now=hour(12) + dt.timedelta(seconds=30))
    res = run(sim, W11, store, landing, kind, settle_lag=0.0)
    assert res.complete and sorted(landed(landing, store, W11)) == truth(sim, W11, kind)
    expected_skew = hour(12).timestamp() + 30 - time.time()  # the sim clock is frozen a day behind ours
    assert abs(res.checkpoint.stats["api_clock_skew_s"] - expected_skew) < 5


def test_retry_after_is_honoured(sim, store, landing):
    sim.set_faults([{"kind": "429", "retry_after": 1, "after": 1}])
    res = run(sim, W10, store, landing)
    t = [r["t"] for r in sim.requests()]
    assert res.http_retries == 1 and t[2] - t[1] >= 0.95  # backoff_max is 0.05 s: the header won


@pytest.mark.parametrize("kind", SOURCES)
def test_faults_outlasting_the_retries_fail_without_advancing_then_resume(sim, store, landing, kind):
    sim.set_faults([{"kind": "503", "count": 4, "after": 2}])
    with pytest.raises(PullFailed, match=r"page 3: .*still failing after 3 attempts \(last: HTTP 503\)"):
        run(sim, W10, store, landing, kind, http_attempts=3)
    cp = store.get("gws", "pull", ts(10))
    assert (cp.status, cp.pages_read) == ("failed", 2)
    res = run(sim, W10, store, landing, kind, http_attempts=3)
    assert res.resumed_from_page == 3 and sorted(landed(landing, store, W10)) == truth(sim, W10, kind)


@pytest.mark.parametrize("kind", SOURCES)
def test_a_rejected_token_restarts_the_window_and_nothing_is_lost_or_doubled(sim, store, landing, kind):
    sim.set_faults([{"kind": "reject_token", "after": 2}])
    res = run(sim, W10, store, landing, kind)
    assert res.token_restarts == 1 and res.duplicates_dropped > 0
    ids = landed(landing, store, W10)
    assert sorted(ids) == truth(sim, W10, kind) and len(ids) == len(set(ids))


@pytest.mark.parametrize(("kind", "message"), [
    ("bad_json", "response is not JSON"),
    ("malformed", "'items' is a str, not a list"),
    ("no_id", "has no 'id' object"),
    ("stuck_token", "page token it was sent"),
])
def test_a_bad_page_fails_the_attempt_naming_window_and_page_and_lands_nothing(sim, store, landing, kind, message):
    sim.set_faults([{"kind": kind, "match": "token", "after": 1}])
    with pytest.raises(PullFailed, match=rf"window \[{ts(10)}, {ts(11)}\) of 'gws', "
                                         rf"page 3: .*{message}"):
        run(sim, W10, store, landing)
    cp = store.get("gws", "pull", ts(10))
    assert cp.pages_read == 2 and len(landed(landing, store, W10)) == cp.events
    res = run(sim, W10, store, landing)  # the fault is spent: the next attempt resumes at page 3
    assert res.resumed_from_page == 3
    assert sorted(landed(landing, store, W10)) == truth(sim, W10)


def test_a_wrong_token_is_refused_for_good_and_never_echoed(sim, store, landing):
    src = GoogleWorkspaceSource(base_url=sim.url, application="login", access_token="wrong-secret")
    with pytest.raises(PullFailed, match="HTTP 401") as e:
        pull_window(src, W10, source_name="gws", checkpoints=store, landing=landing, owner="r", lease_ttl=60)
    assert "wrong-secret" not in str(e.value)
    assert "wrong-secret" not in (store.get("gws", "pull", ts(10)).last_error or "")
