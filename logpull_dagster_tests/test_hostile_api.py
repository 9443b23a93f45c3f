"""A hostile API, over real HTTP (the simulator's fault modes): every bad answer is bounded in seconds
and bytes, fails clearly, and loses nothing (issue 10).

Every test runs for each source (``SOURCES``: Google Workspace, Okta, GitHub, Slack, Microsoft Graph, and Okta
described as ``type: rest``) unchanged: the bounds are the shared HTTP client's and the pull loop's, not a
source's. What differs between them is in ``Case`` (the source's class, its ids, and how to fetch a page by hand)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import httpx
import pytest
import yaml

from logpull_dagster import json_codec, subranges
from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.config import load_config
from logpull_dagster.definitions import build_definitions
from logpull_dagster.deliver import deliver_window
from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.pull import BudgetExhausted, PullFailed, Readers, pull_window
from logpull_dagster.redact import Redactor
from logpull_dagster.simulator import Simulator
from logpull_dagster.sinks.file import FileSink
from logpull_dagster.sources import LogSource
from logpull_dagster.sources.auth import OAuthClientCredentials
from logpull_dagster.sources.github import GitHubAuditLogSource
from logpull_dagster.sources.google_workspace import GoogleWorkspaceSource
from logpull_dagster.sources.msgraph import MsGraphSource, first_page_path, scope_for
from logpull_dagster.sources.okta import OktaSystemLogSource
from logpull_dagster.sources.slack import SlackAuditLogsSource
from logpull_dagster.windows import Window, rfc3339, rfc3339_ms

from . import cli, msgraph_login
from .conftest import SIM_NOW, TOKEN, hour, key, ts

W10 = Window(hour(10), hour(11))
MiB = 1024 * 1024
REPORTS_LOGIN = "/admin/reports/v1/activity/users/all/applications/login"


@dataclass(frozen=True)
class Case:
    """One source under test: ``kind`` its config type, ``name`` its source name (a key of ``cli.SOURCES``)."""

    kind: str
    name: str

    @property
    def okta_api(self) -> bool:
        """Whether the case reads the simulator's Okta System Log (coded, or described as ``type: rest``)."""
        return self.kind == "okta" or self.name == "okta_rest"

    def source(self, sim: Simulator, **kw: Any) -> LogSource:
        kw.setdefault("page_size", 50)
        kw.setdefault("backoff_initial", 0.01)
        kw.setdefault("backoff_max", 0.05)
        kw.setdefault("credential", "LOGPULL_TEST_TOKEN")
        base_url, token = kw.pop("base_url", sim.url), kw.pop("token", TOKEN)
        if self.kind == "okta":
            return OktaSystemLogSource(base_url=base_url, token=token, **kw)
        if self.kind == "github":
            return GitHubAuditLogSource(base_url=base_url, token=token, enterprise="acme", **kw)
        if self.kind == "slack":
            return SlackAuditLogsSource(base_url=base_url, token=token, **kw)
        if self.kind == "rest":
            return cli.rest_source(self.name, base_url, token=token, **kw)  # type: ignore[no-any-return]
        if self.kind == "msgraph":  # ``token`` is the client secret, at a token endpoint on another host
            msgraph_login.login_sim().clear_requests()
            auth = OAuthClientCredentials(msgraph_login.token_url(), msgraph_login.CLIENT, token, scope_for(base_url))
            return MsGraphSource(base_url=base_url, stream="directory_audits", auth=auth, **kw)
        return GoogleWorkspaceSource(base_url=base_url, application="login", access_token=token, **kw)

    def truth(self, sim: Simulator, w: Window = W10) -> list[str]:
        if self.okta_api:
            return sorted(i[0] for i in sim.ground_truth_ids("system_log", w.start, w.end, api="okta_system_log"))
        if self.kind == "github":
            return sorted("/".join(i) for i in sim.ground_truth_ids("audit_log", w.start, w.end,
                                                                     api="github_audit_log"))
        if self.kind == "slack":  # "<date_create>/<id>"
            return sorted("/".join(i) for i in sim.ground_truth_ids("audit_logs", w.start, w.end,
                                                                    api="slack_audit_logs"))
        if self.kind == "msgraph":
            return sorted(i[0] for i in sim.ground_truth_ids("directory_audits", w.start, w.end, api="msgraph"))
        return sorted("/".join(i) for i in sim.ground_truth_ids("login", w.start, w.end))

    def raw_page(self, sim: Simulator, cursor: str | None, page_size: int = 50) -> bytes:
        """The page of W10 at ``cursor`` as the API serves it, fetched by hand (no source, no checks)."""
        if self.okta_api:
            if cursor is not None:  # the next link, followed as Okta gave it
                return httpx.get(cursor, headers={"Authorization": f"SSWS {TOKEN}"}).content
            params: dict[str, str | int] = {"since": rfc3339_ms(W10.start), "until": rfc3339_ms(W10.end),
                                            "limit": page_size, "sortOrder": "ASCENDING"}
            return httpx.get(f"{sim.url}/api/v1/logs", params=params,
                             headers={"Authorization": f"SSWS {TOKEN}"}).content
        if self.kind == "github":  # the next link as GitHub gave it, or the first page's URL
            src = GitHubAuditLogSource(base_url=sim.url, token=TOKEN, enterprise="acme", page_size=page_size)
            url = cursor if cursor is not None else f"{sim.url}{src.first_page_url(W10)}"
            src.close()
            return httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).content
        if self.kind == "slack":  # oldest/latest both inclusive: latest is the window's last second
            params = {"oldest": int(W10.start.timestamp()), "latest": int(W10.end.timestamp()) - 1,
                      "limit": page_size}
            if cursor is not None:
                params["cursor"] = cursor
            return httpx.get(f"{sim.url}/audit/v1/logs", params=params,
                             headers={"Authorization": f"Bearer {TOKEN}"}).content
        if self.kind == "msgraph":
            access = httpx.post(msgraph_login.token_url(), data={
                "grant_type": "client_credentials", "client_id": msgraph_login.CLIENT, "client_secret": TOKEN,
                "scope": scope_for(sim.url)}).json()["access_token"]
            first = first_page_path("/v1.0/auditLogs/directoryAudits", "activityDateTime", W10, page_size)
            url = cursor or f"{sim.url}{first}"
            return httpx.get(url, headers={"Authorization": f"Bearer {access}"}).content
        params = {"startTime": ts(10), "endTime": ts(11), "maxResults": page_size}
        if cursor is not None:
            params["pageToken"] = cursor
        return httpx.get(f"{sim.url}{REPORTS_LOGIN}", params=params,
                         headers={"Authorization": f"Bearer {TOKEN}"}).content

    def item_ids(self, body: bytes) -> set[str]:
        """The event ids of a page's body, as the pull loop lands them."""
        if self.okta_api:
            return {i["uuid"] for i in json_codec.loads(body)}
        if self.kind == "github":
            return {f"{i['@timestamp']}/{i['_document_id']}" for i in json_codec.loads(body)}
        if self.kind == "slack":
            return {f"{i['date_create']}/{i['id']}" for i in json_codec.loads(body).get("entries", [])}
        if self.kind == "msgraph":
            return {i["id"] for i in json_codec.loads(body)["value"]}
        return {"/".join(str(i["id"][k]) for k in ("applicationName", "customerId", "time", "uniqueQualifier"))
                for i in json_codec.loads(body).get("items", [])}

    def names(self, event: dict[str, Any]) -> list[str]:
        """The event names of a delivered event (where the simulator's surrogate fault strikes)."""
        if self.okta_api:
            return [event.get("eventType", "")]
        if self.kind in ("github", "slack"):
            return [event.get("action", "")]
        if self.kind == "msgraph":
            return [event.get("activityDisplayName", "")]
        return [e.get("name") for e in event.get("events", [])]

    def refused_requests(self, sim: Simulator) -> int:
        """Requests that met a refusal or reached the API: the API's, plus (Graph) the token requests its
        login host refused; a token fetched fine is no request to the API."""
        extra = 0
        if self.kind == "msgraph":
            extra = sum(r["status"] != 200 for r in msgraph_login.login_sim().requests())
        return len(sim.requests()) + extra


GOOGLE, OKTA, OKTA_REST = Case("google_workspace", "gws"), Case("okta", "okta"), Case("rest", "okta_rest")
GITHUB, SLACK, MSGRAPH = Case("github", "gh"), Case("slack", "slack"), Case("msgraph", "msgraph")
SOURCES = [GOOGLE, OKTA, OKTA_REST, GITHUB, SLACK, MSGRAPH]
both_sources = pytest.mark.parametrize("case", SOURCES, ids=lambda c: c.kind)


@pytest.fixture(autouse=True, scope="module")
def _graph_login_host_up() -> None:
    """Graph's login host (msgraph_login) serves the whole process: started before any test counts threads."""
    msgraph_login.login_sim()


def pull(case: Case, sim: Simulator, store, landing, w: Window = W10, **kw):  # type: ignore[no-untyped-def]
    src_kw = {k: kw.pop(k) for k in list(kw) if k in (
        "timeout", "http_attempts", "page_size", "max_page_bytes", "token", "base_url", "ca_file", "tls_verify")}
    src = case.source(sim, **src_kw)
    try:
        kw.setdefault("readers", Readers(4))  # as a run reads: a busy window splits (subranges.py)
        return pull_window(src, w, source_name=case.name, checkpoints=store, landing=landing, owner="r",
                           lease_ttl=60, **kw)
    finally:
        src.close()


def landed(case: Case, landing, store, w: Window = W10) -> list[str]:  # type: ignore[no-untyped-def]
    cp = store.get(case.name, "pull", rfc3339(w.start))
    pages = landing.pages(case.name, w, cp.page_seq)
    return [json_codec.loads(line)["id"] for p in pages for line in landing.read_lines(p)]


# ---- 1. a next token that repeats, with items ------------------------------------------------------

@both_sources
def test_a_token_repeated_with_items_fails_the_window_at_once_naming_the_page(sim, store, landing, case):
    sim.set_faults([{"kind": "repeat_token", "match": "token", "after": 1}])
    t0 = time.monotonic()
    with pytest.raises(PullFailed, match=r"page 3: the API's next page token is the one it gave for page 3 .*"
                                         r"looping") as e:
        pull(case, sim, store, landing, readers=None)  # page after page: the page numbers are exact
    assert e.value.permanent and time.monotonic() - t0 < 5
    assert len(sim.requests()) == 3  # read once, not 45 times a second until the budget
    cp = store.get(case.name, "pull", ts(10))
    assert (cp.status, cp.pages_read, cp.lease_owner) == ("failed", 2, None)
    sim.set_faults([])
    res = pull(case, sim, store, landing, readers=None)  # the API behaves again: the window resumes at page 3, exact
    assert res.resumed_from_page == 3 and sorted(landed(case, landing, store)) == case.truth(sim)


@both_sources
def test_a_cursor_that_changes_without_advancing_is_caught_as_a_loop(sim, store, landing, case):
    """Issue 24's adversary: Okta's next link repeating its ``after`` with a parameter that changes on every
    answer made every cursor look new, and the pass ran without end (2,632 requests in 150 s). The pages
    repeat their events, and that is caught whatever the cursor's text (Google's repeated token is caught
    by the token itself)."""
    sim.set_faults([{"kind": "repeat_token_varying", "match": "token", "after": 1, "count": None}])
    t0 = time.monotonic()
    with pytest.raises(PullFailed, match=r"looping") as e:
        pull(case, sim, store, landing, readers=None)
    assert e.value.permanent and time.monotonic() - t0 < 5
    assert len(sim.requests()) <= 5  # a page or two past the repeat, not requests without end
    cp = store.get(case.name, "pull", ts(10))
    assert cp.status == "failed" and "looping" in cp.last_error
    sim.set_faults([])
    pull(case, sim, store, landing)  # the API behaves again: the window completes, exact
    assert sorted(landed(case, landing, store)) == case.truth(sim)



@both_sources
@pytest.mark.parametrize("fault", [
    {"kind": "repeat_token", "match": "token", "after": 1},
    {"kind": "repeat_token_varying", "match": "token", "after": 1, "count": None},
    {"kind": "invalid_utf8", "match": "token", "after": 1},
], ids=lambda f: f["kind"])
def test_a_split_window_stops_at_a_hostile_page_of_a_sub_range_and_resumes_exact(sim, store, landing, case, fault):
    """The same bounds for a window read as sub-ranges at once (subranges.py): the page fails the window
    within a few requests, keeping every sub-range's cursor, and the window completes exactly afterwards."""
    sim.set_faults([fault])
    readers = Readers(4)
    t0 = time.monotonic()
    with pytest.raises(PullFailed, match=r"sub-range \[.*(looping|invalid UTF-8)") as e:
        pull(case, sim, store, landing, readers=readers, page_size=50)
    # A loop is for good; an unreadable page may be a glitch, so the window's retries read it again.
    assert e.value.permanent == (fault["kind"] != "invalid_utf8") and time.monotonic() - t0 < 10
    # Bounded, not requests without end: the window's first page, each reader's first page of a sub-range,
    # and until the repeat is seen (a repeated page set is seen when it lands) at most the pages in flight
    # and waiting to land on every reader (two each), plus the repeats themselves.
    assert len(sim.requests()) <= 4 * readers.size + 2
    cp = store.get(case.name, "pull", ts(10))
    subs = subranges.load(cp.stats)
    assert cp.status == "failed" and subs is not None and len(subs) > 1  # the split and its cursors are kept
    sim.set_faults([])
    res = pull(case, sim, store, landing, readers=readers, page_size=50)
    ids = landed(case, landing, store)
    assert res.complete and sorted(ids) == case.truth(sim) and len(ids) == len(set(ids))
    assert store.get(case.name, "pull", ts(10)).stats["split"]["subranges"] == len(subs)


# ---- 2. gzip bomb and huge bodies ------------------------------------------------------------------

_PEAK = textwrap.dedent("""
    import sys
    from logpull_dagster.sources import BadPage
    from logpull_dagster.sources.google_workspace import GoogleWorkspaceSource
    from logpull_dagster.sources.okta import OktaSystemLogSource
    from logpull_dagster.sources.github import GitHubAuditLogSource
    from logpull_dagster.sources.slack import SlackAuditLogsSource
    from logpull_dagster.windows import Window, parse_time
    url, token, start, end, kind, token_url = sys.argv[1:7]
    if kind == "okta":
        src = OktaSystemLogSource(base_url=url, token=token, http_attempts=1)
    elif kind == "github":
        src = GitHubAuditLogSource(base_url=url, token=token, enterprise="acme", http_attempts=1)
    elif kind == "slack":
        src = SlackAuditLogsSource(base_url=url, token=token, http_attempts=1)
    elif kind == "rest":
        from logpull_dagster_tests.cli import rest_source
        src = rest_source("okta_rest", url, token=token, page_size=1000, http_attempts=1)
    elif kind == "msgraph":
        from logpull_dagster.sources.auth import OAuthClientCredentials
        from logpull_dagster.sources.msgraph import MsGraphSource, scope_for
        auth = OAuthClientCredentials(token_url, "11111111-1111-1111-1111-111111111111", token, scope_for(url))
        src = MsGraphSource(base_url=url, stream="directory_audits", auth=auth, http_attempts=1)
    else:
        src = GoogleWorkspaceSource(base_url=url, application="login", access_token=token, http_attempts=1)
    try:
        src.fetch_page(Window(parse_time(start), parse_time(end)), None)
        print("NO ERROR")
    except BadPage as e:
        print("BadPage:", e)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            print("PEAK_KB", line.split()[1])
""")


def peak_fetch(case: Case, sim: Simulator) -> tuple[str, int]:
    """Fetch one page in a fresh process; its error text and its peak RSS (kB)."""
    token_url = msgraph_login.token_url() if case.kind == "msgraph" else ""
    out = subprocess.run([sys.executable, "-c", _PEAK, sim.url, TOKEN, ts(10), ts(11), case.kind, token_url],
                         capture_output=True, text=True, timeout=120).stdout
    peak = int(out.split("PEAK_KB")[1].split()[0])
    return out, peak


@pytest.mark.slow  # about 4 s per source
@both_sources
def test_a_gzip_bomb_is_cut_at_max_page_bytes_and_memory_stays_bounded(sim, case):
    baseline_out, baseline = peak_fetch(case, sim)
    assert "NO ERROR" in baseline_out
    sim.set_faults([{"kind": "gzip_bomb"}])  # 2 MB on the wire, 2 GiB decoded (took the worker to 6.5 GB)
    out, peak = peak_fetch(case, sim)
    assert "larger than max_page_bytes (67,108,864 bytes; decoded)" in out, out
    print(f"gzip bomb: peak RSS {peak // 1024} MB against {baseline // 1024} MB for a normal page")
    assert peak - baseline < 200 * 1024  # the 64 MiB bound, plus its copy; not gigabytes


@both_sources
@pytest.mark.parametrize(("rule", "decoded"), [
    ({"kind": "big_body", "size": 512 * MiB}, ""),
    ({"kind": "gzip_bomb", "size": 256 * MiB}, "; decoded"),
], ids=lambda v: v["kind"] if isinstance(v, dict) else "")
def test_a_body_over_the_bound_plain_or_gzipped_fails_the_page_without_reading_it_all(sim, store, landing, case,
                                                                                      rule, decoded):
    sim.set_faults([{**rule, "count": None}])
    t0 = time.monotonic()
    with pytest.raises(PullFailed, match=rf"page 1: the response is larger than max_page_bytes \(1,048,576 bytes"
                                         rf"{decoded}"):
        pull(case, sim, store, landing, max_page_bytes=MiB)
    assert time.monotonic() - t0 < 10
    cp = store.get(case.name, "pull", ts(10))
    assert (cp.status, cp.events, cp.lease_owner) == ("failed", 0, None) and landed(case, landing, store) == []


# ---- 3. a server that trickles ---------------------------------------------------------------------

@both_sources
def test_a_trickling_server_is_cut_at_the_request_deadline(sim, store, landing, case):
    sim.set_faults([{"kind": "trickle", "delay": 0.05, "count": None}])  # 20 bytes/s: a page takes hours
    t0 = time.monotonic()
    with pytest.raises(PullFailed, match=r"page 1: .*still failing after 2 attempts \(last: ReadTimeout\)"):
        pull(case, sim, store, landing, timeout=1.0, http_attempts=2)
    elapsed = time.monotonic() - t0
    assert 2.0 <= elapsed < 4.0, elapsed  # two attempts of one second each (httpx alone: never)
    cp = store.get(case.name, "pull", ts(10))
    assert cp.status == "failed" and cp.lease_owner is None  # no lease held by a hung process


@both_sources
def test_the_time_budget_stops_retries_of_a_trickling_page_within_one_request_deadline(sim, store, landing, case):
    sim.set_faults([{"kind": "trickle", "delay": 0.05, "count": None, "after": 1}])  # page 1 fine, then trickle
    t0 = time.monotonic()
    with pytest.raises(BudgetExhausted) as e:
        pull(case, sim, store, landing, timeout=1.0, http_attempts=50, time_budget=1.5)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.5 + 1.0 + 1.0, elapsed  # budget + one request deadline (+ slack), not 50 attempts
    assert e.value.progress and e.value.result.checkpoint.pages_read == 1
    assert store.get(case.name, "pull", ts(10)).lease_owner is None


# ---- 4. refused credentials ------------------------------------------------------------------------

@both_sources
@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_fail_at_once_naming_the_variable(sim, store, landing, case, status):
    if status == 401:
        kw = {"token": "not-the-token-at-all"}
    else:
        sim.set_faults([{"kind": "echo_auth", "status": 403, "count": None}])
        kw = {}
    with pytest.raises(PullFailed, match=rf"credentials refused \(HTTP {status}\): check LOGPULL_TEST_TOKEN") as e:
        pull(case, sim, store, landing, http_attempts=6, **kw)
    assert e.value.permanent and case.refused_requests(sim) == 1  # no retry storm against the auth endpoint


# ---- 5/6. pages that orjson refuses ----------------------------------------------------------------

@both_sources
def test_a_lone_surrogate_is_landed_and_delivered_losslessly_as_valid_utf8_json(sim, store, landing, tmp_path, case):
    sim.set_faults([{"kind": "surrogate", "after": 1}])
    # Page after page: a split pass reads the first page's events twice, and the first copy landed wins.
    res = pull(case, sim, store, landing, readers=None)
    assert res.complete and sorted(landed(case, landing, store)) == case.truth(sim)
    sink = FileSink(tmp_path / "siem")
    deliver_window(W10, source_name=case.name, checkpoints=store, landing=landing, sink=sink, owner="d",
                   lease_ttl=60)
    lines = [line for f in sorted((tmp_path / "siem").rglob("*.jsonl")) for line in f.read_bytes().splitlines()]
    assert len(lines) == len(case.truth(sim))
    names = []
    for line in lines:
        text = line.decode("utf-8")  # every line is valid UTF-8...
        rec = json.loads(text)  # ...and JSON
        names += case.names(rec["event"])
    assert "login_\ud800success" in names  # the untouched value, escaped as \ud800
    assert sum(b"\\ud800" in line for line in lines) == 1


@both_sources
@pytest.mark.parametrize(("kind", "byte", "reason"), [
    ("invalid_utf8", b"\xff", "invalid UTF-8"),
    ("control_byte", b"\x01", "unexpected control character in string"),
])
def test_a_raw_invalid_byte_fails_the_page_saying_where(sim, store, landing, case, kind, byte, reason):
    sim.set_faults([{"kind": kind, "match": "token", "after": 1}])
    with pytest.raises(PullFailed, match=rf"page 3: response is not JSON: {reason}.* at byte (\d+)") as e:
        pull(case, sim, store, landing, readers=None)  # page after page: page 3 is the window's third
    offset = int(str(e.value).split(" at byte ")[1].split()[0])
    # The same page, fetched again with the fault on: the byte at that offset is the bad one.
    cp = store.get(case.name, "pull", ts(10))
    sim.set_faults([{"kind": kind}])
    body = case.raw_page(sim, cp.cursor)
    assert body[offset:offset + 1] == byte
    assert cp.status == "failed" and reason in cp.last_error
    assert cp.pages_read == 2 and cp.events == len(landed(case, landing, store))  # nothing of page 3 landed


# ---- 7/8. secrets ----------------------------------------------------------------------------------

@both_sources
def test_an_echoed_authorization_header_is_redacted_everywhere_it_is_written(sim, store, landing, case):
    sim.set_faults([{"kind": "echo_auth", "status": 400, "count": None}])
    src = case.source(sim)
    with pytest.raises(PullFailed) as e:
        pull_window(src, W10, source_name=case.name, checkpoints=store, landing=landing, owner="r", lease_ttl=60,
                    redactor=Redactor([TOKEN]))
    src.close()
    cp = store.get(case.name, "pull", ts(10))
    assert "Authorization" in str(e.value) and "[REDACTED]" in str(e.value)  # the echo is there, masked
    assert TOKEN not in str(e.value) and TOKEN not in cp.last_error
    assert "[REDACTED]" in cp.last_error


@both_sources
def test_even_without_knowing_the_secret_a_bearer_value_is_masked(sim, store, landing, case):
    sim.set_faults([{"kind": "echo_auth", "status": 400, "count": None}])
    with pytest.raises(PullFailed) as e:
        pull(case, sim, store, landing)  # no redactor: the pattern alone (Bearer for Google, SSWS for Okta)
    assert TOKEN not in str(e.value) and TOKEN not in store.get(case.name, "pull", ts(10)).last_error


# ---- 10. credentials go only to the configured origin; TLS -----------------------------------------

@both_sources
def test_a_redirect_to_another_origin_is_not_followed_and_names_the_location(sim, store, landing, case):
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        other.settimeout(0.5)
        elsewhere = f"http://127.0.0.1:{other.getsockname()[1]}/steal"
        sim.set_faults([{"kind": "redirect", "location": elsewhere, "count": None}])
        with pytest.raises(PullFailed, match=rf"HTTP 302 redirecting to '{elsewhere}'; redirects are not followed") \
                as e:
            pull(case, sim, store, landing)
        assert e.value.permanent and len(sim.requests()) == 1
        assert store.get(case.name, "pull", ts(10)).status == "failed"
        with pytest.raises(TimeoutError):
            other.accept()  # nobody came: the token did not travel


@pytest.fixture
def tls_sim(tmp_path: Path):  # type: ignore[no-untyped-def]
    from .tls import make_tls_files

    ca, cert, key = make_tls_files(tmp_path / "tls")
    with Simulator(seed=11, events_per_hour=300, token=TOKEN, tls_cert=cert, tls_key=key) as s:
        s.set_clock(now=SIM_NOW)
        yield s, ca


@both_sources
def test_tls_is_verified_by_default_and_a_private_ca_is_named_with_ca_file(tls_sim, store, landing, case):
    sim, ca = tls_sim
    assert sim.url.startswith("https://")
    with pytest.raises(PullFailed, match=r"TLS certificate of https://127\.0\.0\.1:\d+ is not trusted .*ca_file") \
            as e:
        pull(case, sim, store, landing, http_attempts=6)
    assert e.value.permanent and len(sim.requests()) == 0  # refused before any request was sent
    res = pull(case, sim, store, landing, ca_file=str(ca))
    assert res.complete and res.pages_read > 1 and sorted(landed(case, landing, store)) == case.truth(sim)


@both_sources
def test_tls_verification_can_only_be_turned_off_explicitly(tls_sim, store, landing, case):
    sim, _ = tls_sim
    assert pull(case, sim, store, landing, tls_verify=False).complete


# ---- the loop stays bounded under everything at once -----------------------------------------------

@both_sources
def test_no_fault_leaves_a_thread_or_a_lease_behind(sim, store, landing, case):
    before = threading.active_count()
    for rule in ({"kind": "repeat_token", "match": "token"}, {"kind": "redirect"},
                 {"kind": "big_body", "size": 8 * MiB}, {"kind": "echo_auth"}, {"kind": "invalid_utf8"}):
        sim.set_faults([{**rule, "count": None}])
        with pytest.raises(PullFailed):
            pull(case, sim, store, landing, max_page_bytes=MiB)
        assert store.get(case.name, "pull", ts(10)).lease_owner is None
    # A server's handler thread (Graph's login host) ends once the closed source's connection is seen closed.
    deadline = time.monotonic() + 5
    while threading.active_count() > before + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before + 1, [t.name for t in threading.enumerate()]


def make_defs(tmp_path: Path, case: Case, url: str, **overrides: Any) -> dg.Definitions:
    """Definitions for one source of ``case`` on ``url`` (its config keys: ``cli.SOURCES``)."""
    src = {"name": case.name, **cli.source_keys(case.name, url), "base_url": url, "start": ts(-24),
           **cli.page_size_keys(case.name, 50), "retry_delay": "0s", "http_backoff_max": "50ms", **overrides}
    cfg = {"sources": [src], "checkpoints": {"type": "sqlite", "path": "state/checkpoints.db"},
           "landing": {"type": "local", "path": "state/landing"}, "siem": {"type": "file", "path": "siem"}}
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump(cfg))
    return build_definitions(load_config(tmp_path / "logpull.yaml"))


@pytest.mark.slow  # 2 to 4 s of Dagster runs per source
@both_sources
def test_tls_verify_false_warns_on_every_run(tls_sim, tmp_path, instance, monkeypatch, case):
    from .test_assets import materialize

    sim, _ = tls_sim
    monkeypatch.setenv("LOGPULL_TEST_TOKEN", TOKEN)
    defs = make_defs(tmp_path, case, sim.url, tls_verify=False)
    for _ in range(2):
        res = materialize(defs, f"logs/{case.name}", key(10), instance)
        assert res.success
        warnings = [e.message for e in instance.all_logs(res.run_id) if e.level >= 30]
        assert any("tls_verify is false: the API's certificate is NOT checked" in w for w in warnings)


# ---- 6. the operator's way out: skip the unreadable page, counted, shown as a known gap ------------

# The last-page case needs a window that is one page: GitHub serves at most 100 events a page (per_page),
# so no window of this simulator is, and GitHub has the next-token case only.
SKIP_PAGE_CASES = [pytest.param(case, size, id=f"{case.kind}-{what}") for case in SOURCES
                   for size, what in ((50, "page with a next token"), (1000, "last page"))
                   if not (case.kind == "github" and size > 100)]


@pytest.mark.parametrize(("case", "page_size"), SKIP_PAGE_CASES)
def test_an_unreadable_page_is_skipped_only_by_an_operator_and_stays_a_known_gap(
        tmp_path, sim, monkeypatch, capsys, case, page_size):
    from logpull_dagster.cli import main as logpull

    env = cli.setup_project(tmp_path, sim.url, source=case.name, page_size=page_size)  # none for GitHub's config
    monkeypatch.setenv("LOGPULL_CONFIG", env["LOGPULL_CONFIG"])
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    store = SqliteCheckpointStore(tmp_path / "state" / "checkpoints.db")
    landing = LocalLandingStore(tmp_path / "state" / "landing")
    first_bad = 1 if page_size == 50 else 0  # page 2 of many, or the only page
    in_range = ["--from", ts(10), "--to", ts(11)]
    window = ["--source", case.name, "--window", key(10)]

    def status() -> dict:  # type: ignore[type-arg]
        assert logpull(["status", "--json", *in_range]) == 1  # never 0 while the page is missing
        doc = json.loads(capsys.readouterr().out)
        [row] = doc["sources"][0]["windows"]
        return {**row, "gaps": doc["sources"][0]["gaps"]}

    sim.set_faults([{"kind": "invalid_utf8", "after": first_bad, "count": 2}])
    for _ in range(2):  # the same bytes every time: the window can never complete by itself
        with pytest.raises(PullFailed, match="invalid UTF-8"):
            pull(case, sim, store, landing, page_size=page_size, readers=None)
    cp = store.get(case.name, "pull", ts(10))
    assert cp.stats["bad_page"]["page"] == cp.pages_read + 1 == first_bad + 1
    row = status()
    assert row["status"] == "failed" and "logpull skip-page" in row["detail"]

    lost = case.item_ids(case.raw_page(sim, cp.cursor, page_size))  # the faults are spent: the clean page
    assert lost

    assert logpull(["skip-page", *window, "--reason", "INC-42: vendor bug"]) == 0
    out = capsys.readouterr().out
    assert "skipped" in out and ("reads on from page" in out) == (page_size == 50)
    if page_size == 50:
        assert pull(case, sim, store, landing, page_size=page_size, readers=None).complete
    assert sorted(landed(case, landing, store)) == sorted(set(case.truth(sim)) - lost)  # all but the skipped page
    row = status()
    assert row["status"] == "known gap" and "INC-42: vendor bug" in row["detail"]
    assert row["gaps"] == [[ts(10), ts(11)]]

    # A re-read meets the same bytes: the operator's decision applies again, counted.
    assert logpull(["reset", *window]) == 0
    sim.set_faults([{"kind": "invalid_utf8", "after": first_bad, "count": 1}])
    res = pull(case, sim, store, landing, page_size=page_size, readers=None)
    assert res.complete and res.pages_skipped == 1
    assert store.get(case.name, "pull", ts(10)).stats["skips_reapplied"] == 1
    # Another bad page (other bytes) still fails: the decision was for that page only.
    assert logpull(["reset", *window]) == 0
    sim.set_faults([{"kind": "control_byte", "after": first_bad, "count": 1}])
    with pytest.raises(PullFailed, match="control character"):
        pull(case, sim, store, landing, page_size=page_size, readers=None)
    store.close()



def test_an_unreadable_page_of_a_sub_range_is_skipped_by_an_operator_and_the_split_window_reads_on(
        tmp_path, sim, monkeypatch, capsys):
    """A busy window read as sub-ranges (subranges.py) stops at a page of one sub-range that can never be read;
    the other sub-ranges read on meanwhile, so the window's page count has moved past that page, and
    `logpull skip-page` must still find the window stopped at it. The next run reads on in that sub-range."""
    from logpull_dagster.cli import main as logpull

    env = cli.setup_project(tmp_path, sim.url, source=GOOGLE.name, page_size=50)
    monkeypatch.setenv("LOGPULL_CONFIG", env["LOGPULL_CONFIG"])
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    store = SqliteCheckpointStore(tmp_path / "state" / "checkpoints.db")
    landing = LocalLandingStore(tmp_path / "state" / "landing")
    window = ["--source", GOOGLE.name, "--window", key(10)]
    sim.set_faults([{"kind": "invalid_utf8", "match": "token", "after": 2, "count": None}])
    with pytest.raises(PullFailed, match=r"sub-range .*invalid UTF-8"):
        pull(GOOGLE, sim, store, landing, page_size=50)
    cp = store.get(GOOGLE.name, "pull", ts(10))
    bad = cp.stats["bad_page"]
    assert bad["subrange"] is not None and bad["page"] != cp.pages_read + 1  # the others read on past it
    sim.set_faults([])  # the page reads fine again, but the operator's decision is what is tested
    assert logpull(["skip-page", *window, "--reason", "INC-7: corrupt export"]) == 0
    out = capsys.readouterr().out
    assert f"sub-range {bad['subrange'] + 1} of the window" in out, out
    assert ("reads that sub-range on" in out) == bool(bad["next_cursor"]), out
    res = pull(GOOGLE, sim, store, landing, page_size=50)
    assert res.complete
    ids = landed(GOOGLE, landing, store)
    missing = set(GOOGLE.truth(sim)) - set(ids)
    assert len(ids) == len(set(ids)) and 0 < len(missing) <= 50  # exactly the skipped page's events, no more
    assert logpull(["status", "--json", "--from", ts(10), "--to", ts(11)]) == 1
    [row] = json.loads(capsys.readouterr().out)["sources"][0]["windows"]
    assert row["status"] == "known gap" and "INC-7: corrupt export" in row["detail"]
    store.close()


@both_sources
def test_skip_page_refuses_a_window_that_is_not_stopped_at_an_unreadable_page(tmp_path, sim, monkeypatch, capsys,
                                                                              case):
    from logpull_dagster.cli import main as logpull

    env = cli.setup_project(tmp_path, sim.url, source=case.name)
    monkeypatch.setenv("LOGPULL_CONFIG", env["LOGPULL_CONFIG"])
    store = SqliteCheckpointStore(tmp_path / "state" / "checkpoints.db")
    sim.set_faults([{"kind": "503", "count": None}])
    with pytest.raises(PullFailed):
        pull(case, sim, store, LocalLandingStore(tmp_path / "state" / "landing"), http_attempts=1)
    store.close()
    assert logpull(["skip-page", "--source", case.name, "--window", key(10), "--reason", "x"]) == 2
    assert "not stopped at an unreadable page" in capsys.readouterr().err
