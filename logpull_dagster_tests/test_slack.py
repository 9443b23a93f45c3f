"""The Slack Audit Logs source's own behaviour, against the emulated Slack API over real HTTP (nothing
patched): the window in whole seconds (``oldest=A&latest=B-1``), short and over-long pages, the three
ways a last page ends, percent-encoded cursors, expired cursors restarting the window exactly, ``ok:
false`` bodies named and never read, 429 + Retry-After, the Tier 3 default budget, the event id, and the
config. The cases every source shares run for Slack in test_contract_sources.py, test_hostile_api.py and
test_reports_http.py.

Windows are on conftest's DAY (yesterday, UTC) with the simulator's clock frozen at its noon.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from logpull_dagster import plugins
from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.config import ConfigError, load_config
from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.pull import PullFailed, pull_window
from logpull_dagster.rate import RateGate, RateLimit
from logpull_dagster.simulator import Simulator
from logpull_dagster.simulator.slack_audit_logs import SlackAuditLogsApi
from logpull_dagster.sources import BadPage, CredentialsRefused, SourceRequestError, TokenRejected
from logpull_dagster.sources.slack import SlackAuditLogsSource, SlackConfig, window_params
from logpull_dagster.windows import Window

from .conftest import SIM_NOW, TOKEN, hour, ts

W10 = Window(hour(10), hour(11))
W11 = Window(hour(11), hour(12))
A, B = int(W10.start.timestamp()), int(W10.end.timestamp())


# ---- fixtures and helpers --------------------------------------------------------------------------

@pytest.fixture
def slack_sim() -> Iterator[Simulator]:
    with Simulator(seed=11, events_per_hour=300, token=TOKEN, boundary_events=True, shared_ms_events=True) as sim:
        sim.set_clock(now=SIM_NOW)
        yield sim


def api_of(sim: Simulator) -> SlackAuditLogsApi:
    return next(a for a in sim.apis if isinstance(a, SlackAuditLogsApi))


def source(sim: Simulator, **kw: Any) -> SlackAuditLogsSource:
    kw.setdefault("page_size", 50)
    kw.setdefault("backoff_initial", 0.01)
    kw.setdefault("backoff_max", 0.05)
    kw.setdefault("http_attempts", 4)
    kw.setdefault("timeout", 5)
    kw.setdefault("token", TOKEN)
    kw.setdefault("credential", "SLACK_TOKEN")
    return SlackAuditLogsSource(base_url=sim.url, **kw)


def truth(sim: Simulator, w: Window) -> list[str]:
    return sorted("/".join(i) for i in sim.ground_truth_ids("audit_logs", w.start, w.end, api="slack_audit_logs"))


def log_requests(sim: Simulator) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r["path"] == "/audit/v1/logs"]


def landed(landing: LocalLandingStore, store: SqliteCheckpointStore, w: Window) -> list[str]:
    cp = store.get("slack", "pull", w.start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return [orjson.loads(line)["id"] for p in landing.pages("slack", w, cp.page_seq) for line in landing.read_lines(p)]


def pull(src: SlackAuditLogsSource, w: Window, store, landing, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("owner", "r")
    return pull_window(src, w, source_name="slack", checkpoints=store, landing=landing, lease_ttl=60, **kw)


def read_all(src: SlackAuditLogsSource, w: Window) -> list[list[dict[str, Any]]]:
    pages = [src.fetch_page(w, None)]
    while pages[-1].next_cursor is not None:
        assert len(pages) < 200
        pages.append(src.fetch_page(w, pages[-1].next_cursor))
    return [p.items for p in pages]


# ---- the window in whole seconds ---------------------------------------------------------------------

def test_a_window_is_asked_as_oldest_a_latest_b_minus_1_and_its_end_second_is_the_next_window_s(
        slack_sim, store, landing):
    src = source(slack_sim)
    try:
        served_w10 = [i for p in read_all(src, W10) for i in p]
        pull(src, W10, store, landing)
        pull(src, W11, store, landing)
    finally:
        src.close()
    first = log_requests(slack_sim)[0]
    assert (first["oldest"], first["latest"], first["limit"]) == (str(A), str(B - 1), 50)
    # Slack's latest is inclusive: asked with latest=B it would serve second B, W11's first second.
    assert not [i for i in served_w10 if i["date_create"] == B]
    on_b = [i for i in truth(slack_sim, W11) if i.startswith(f"{B}/")]
    assert on_b, "the simulator stamps an entry exactly on every hour"
    a, b = landed(landing, store, W10), landed(landing, store, W11)
    assert sorted(a) == truth(slack_sim, W10) and sorted(b) == truth(slack_sim, W11)
    assert set(on_b) <= set(b) and not set(a) & set(b)
    assert any(i.startswith(f"{A}/") for i in a), "the entry of the window's first second is its own"


def test_a_window_whose_edges_are_not_whole_seconds_is_refused_before_any_request(slack_sim):
    assert window_params(W10) == {"oldest": A, "latest": B - 1}
    odd = Window(W10.start + dt.timedelta(milliseconds=500), W10.end)
    with pytest.raises(ValueError, match="whole seconds"):
        window_params(odd)
    src = source(slack_sim)
    try:
        with pytest.raises(SourceRequestError, match="whole seconds") as e:
            src.fetch_page(odd, None)
    finally:
        src.close()
    assert e.value.permanent and log_requests(slack_sim) == []


# ---- pages: short mid-stream, longer than limit, three ways to end ---------------------------------------

def test_short_pages_mid_stream_and_pages_over_the_limit_never_end_the_pass(slack_sim, store, landing):
    src = source(slack_sim, page_size=7)
    try:
        pages = read_all(src, W10)
        res = pull(src, W10, store, landing)
    finally:
        src.close()
    lengths = [len(p) for p in pages]
    assert any(n < 7 for n in lengths[:-1]), f"a short page mid-stream: {lengths}"
    assert any(n > 7 for n in lengths), f"a page over the limit (entries sharing a second): {lengths}"
    seconds = [[i["date_create"] for i in p] for p in pages]
    assert all(a[-1] != b[0] for a, b in itertools.pairwise(seconds) if a and b)  # no second split
    assert res.complete and sorted(landed(landing, store, W10)) == truth(slack_sim, W10)


@pytest.mark.parametrize("meta", [{"next_cursor": ""}, {"next_cursor": None}, {}, None],
                         ids=["empty", "null", "no key", "no response_metadata"])
@pytest.mark.parametrize("ok", [True, None], ids=["ok true", "no ok key"])
def test_an_empty_null_or_missing_next_cursor_ends_the_pass_with_or_without_ok(meta, ok):
    entry = {"id": "bdcb13e3-28a3-41f0-9ace-a20952def3a0", "date_create": 1566215192, "action": "user_created"}
    doc: dict[str, Any] = {"entries": [entry]}
    if ok is not None:
        doc["ok"] = ok
    if meta is not None:
        doc["response_metadata"] = meta
    src = SlackAuditLogsSource(base_url="https://api.slack.com", token="x")
    try:
        assert src.parse_page(orjson.dumps(doc)) == ([entry], None)
        doc["response_metadata"] = {"next_cursor": "dXNlcjpVMEc5V0ZYTlo="}
        assert src.parse_page(orjson.dumps(doc))[1] == "dXNlcjpVMEc5V0ZYTlo="
        # An empty page that hands a cursor is read on: only the cursor ends a pass.
        assert src.parse_page(orjson.dumps({"entries": [], **doc}))[1] == "dXNlcjpVMEc5V0ZYTlo="
    finally:
        src.close()


def test_the_emulator_ends_its_walks_all_three_ways_and_the_source_reads_each_to_the_end(slack_sim):
    src = source(slack_sim, page_size=40)
    endings, oks = set(), set()
    try:
        # The emulator picks a last page's shape from a hash of the query, so which windows show which shape
        # changes with the day: read windows until every shape was met (48 make missing one a 1-in-10^5 event).
        for h in range(-24, 24):
            if len(endings) == 4 and len(oks) == 2:
                break
            w = Window(hour(h), hour(h + 1))
            last = src.fetch_page(w, None)
            while last.next_cursor is not None:
                last = src.fetch_page(w, last.next_cursor)
            doc = orjson.loads(last.body)
            meta = doc.get("response_metadata", "absent")
            endings.add("absent" if meta == "absent" else repr(meta.get("next_cursor", "no key")))
            oks.add(doc.get("ok", "no ok"))
    finally:
        src.close()
    assert endings == {"''", "None", "'no key'", "absent"}
    assert oks == {True, "no ok"}


@pytest.mark.parametrize(("body", "message"), [
    ({"ok": "yes", "entries": []}, "'ok' is 'yes'"),
    ({"entries": "oops"}, "'entries' is a str"),
    ({"response_metadata": {}}, "'entries' is missing"),
    ({"entries": [{"date_create": 1}]}, "entry 0 has no 'id'"),
    ({"entries": [{"id": "x", "date_create": "1566215192"}]}, "no integer 'date_create'"),
    ({"entries": [{"id": "x", "date_create": 1566215192.5}]}, "no integer 'date_create'"),
    ({"entries": [], "response_metadata": {"next_cursor": 7}}, "not a string"),
    ({"entries": [], "response_metadata": "x"}, "'response_metadata' is a str"),
])
def test_a_body_that_is_not_a_page_is_bad(body, message):
    src = SlackAuditLogsSource(base_url="https://api.slack.com", token="x")
    try:
        with pytest.raises(BadPage, match=message):
            src.parse_page(orjson.dumps(body))
    finally:
        src.close()


# ---- cursors: percent-encoded, expiring ----------------------------------------------------------------

def test_cursors_ending_in_equals_are_sent_percent_encoded_and_a_raw_one_is_refused(slack_sim):
    src = source(slack_sim)
    try:
        first = src.fetch_page(W10, None)
        cursor = first.next_cursor
        assert cursor is not None and cursor.endswith("=") and "+" in cursor and "/" in cursor
        second = src.fetch_page(W10, cursor)
    finally:
        src.close()
    assert second.items and log_requests(slack_sim)[-1]["cursor"] == cursor  # arrived intact
    # The same cursor pasted into the URL as is: its "+" arrives as a space, and Slack refuses it.
    raw = httpx.get(f"{slack_sim.url}/audit/v1/logs?oldest={A}&latest={B - 1}&limit=50&cursor={cursor}",
                    headers={"Authorization": f"Bearer {TOKEN}"})
    assert raw.status_code == 400 and raw.json() == {"ok": False, "error": "invalid_cursor"}


def test_an_expired_cursor_is_token_rejected(slack_sim):
    src = source(slack_sim)
    try:
        first = src.fetch_page(W10, None)
        slack_sim.advance_clock(api_of(slack_sim).cursor_ttl + 1)  # "do not persist cursors for hours or days"
        with pytest.raises(TokenRejected, match=r"HTTP 400: invalid_cursor; the cursor expired or was refused"):
            src.fetch_page(W10, first.next_cursor)
    finally:
        src.close()


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


@pytest.mark.parametrize("later", [0, 3600], ids=["resumed at once", "resumed an hour later"])
def test_a_killed_window_resumes_from_its_cursor_or_restarts_exactly_once_the_cursor_expired(
        slack_sim, store, tmp_path, later):
    src = source(slack_sim)
    try:
        with pytest.raises(Killed):
            pull(src, W10, store, DyingLanding(tmp_path / "landing", die_at=3))
        cp = store.get("slack", "pull", ts(10))
        assert cp.cursor is not None
        before = len(log_requests(slack_sim))
        slack_sim.advance_clock(later)
        resumed = LocalLandingStore(tmp_path / "landing")
        res = pull(src, W10, store, resumed, owner="r2")
    finally:
        src.close()
    assert res.complete and res.resumed_from_page is not None
    ids = landed(resumed, store, W10)
    assert len(ids) == len(set(ids)) and sorted(ids) == truth(slack_sim, W10)
    after = log_requests(slack_sim)[before:]
    if later:  # the stored cursor expired: invalid_cursor, then the window from its first page, deduped
        assert res.token_restarts == 1 and res.duplicates_dropped > 0
        assert after[0]["status"] == 400 and after[1]["cursor"] is None
    else:  # no page before the checkpoint was asked for again
        assert res.token_restarts == 0 and after[0]["cursor"] == cp.cursor
        assert all(r["status"] == 200 for r in after)


# ---- errors: ok:false named, never read --------------------------------------------------------------

def test_an_ok_false_body_with_http_200_is_never_read_as_a_page(slack_sim):
    api_of(slack_sim).errors_as_200 = True
    src = source(slack_sim)
    try:
        first = src.fetch_page(W10, None)
        slack_sim.set_faults([{"kind": "reject_token"}])
        with pytest.raises(TokenRejected, match="HTTP 200: invalid_cursor"):
            src.fetch_page(W10, first.next_cursor)
        api_of(slack_sim).refuse = "feature_not_enabled"
        with pytest.raises(SourceRequestError, match=r"HTTP 200: feature_not_enabled.*Enterprise plans") as e:
            src.fetch_page(W10, None)
        assert e.value.permanent
    finally:
        src.close()
    wrong = source(slack_sim, token="xoxp-wrong")
    try:
        with pytest.raises(CredentialsRefused, match=r"credentials refused \(invalid_auth\): check SLACK_TOKEN"):
            wrong.fetch_page(W10, None)
    finally:
        wrong.close()


@pytest.mark.parametrize(("refusal", "message"), [
    ("missing_scope", r"HTTP 403.*missing_scope \(needed: auditlogs:read; provided: admin\).*add auditlogs:read.*"
                      r"organization level"),
    ("feature_not_enabled", r"HTTP 403.*feature_not_enabled.*Enterprise plans"),
    ("not_authed", r"HTTP 401.*not_authed.*set SLACK_TOKEN"),
])
def test_each_refusal_names_slack_s_error_and_what_to_do(slack_sim, store, landing, refusal, message):
    api_of(slack_sim).refuse = refusal
    src = source(slack_sim, http_attempts=6)
    try:
        with pytest.raises(PullFailed, match=message) as e:
            pull(src, W10, store, landing)
    finally:
        src.close()
    assert e.value.permanent and len(log_requests(slack_sim)) == 1


def test_a_wrong_token_is_refused_naming_the_variable_and_never_echoed(slack_sim):
    src = source(slack_sim, token="xoxp-not-the-token")
    try:
        with pytest.raises(CredentialsRefused, match=r"HTTP 401\): check SLACK_TOKEN; Slack said: invalid_auth") as e:
            src.fetch_page(W10, None)
    finally:
        src.close()
    assert "xoxp-not-the-token" not in str(e.value)


def test_a_429_waits_its_retry_after_and_says_ratelimited(slack_sim):
    slack_sim.set_faults([{"kind": "429", "retry_after": 1}])
    src = source(slack_sim)  # backoff_max 0.05 s: only the header can make it wait a second
    try:
        page = src.fetch_page(W10, None)
    finally:
        src.close()
    throttled, retried = log_requests(slack_sim)
    assert (throttled["status"], retried["status"], page.http_retries) == (429, 200, 1)
    assert retried["t"] - throttled["t"] >= 0.95
    body = httpx.get(f"{slack_sim.url}/audit/v1/logs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert body.status_code == 200
    slack_sim.set_faults([{"kind": "429", "retry_after": 7}])
    body = httpx.get(f"{slack_sim.url}/audit/v1/logs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (body.status_code, body.headers["retry-after"], body.json()) == (
        429, "7", {"ok": False, "error": "ratelimited"})


# ---- the event id --------------------------------------------------------------------------------------

def test_the_event_id_is_date_create_and_id_so_a_reused_id_loses_nothing():
    """Grove's redacted fixture 003 reuses one ``id`` for entries with different ``date_create`` [A4]."""
    reused = "0123abcd-0000-4000-8000-000000000000"
    entries = [{"id": reused, "date_create": 1646000000 + n, "action": "user_login"} for n in range(3)]
    entries.append(dict(entries[0]))  # the same entry twice (a re-read): one event
    src = SlackAuditLogsSource(base_url="https://api.slack.com", token="x")
    try:
        events = src.to_events(src.parse_page(orjson.dumps({"entries": entries}))[0])
    finally:
        src.close()
    assert [e.id for e in events] == [f"{1646000000 + n}/{reused}" for n in (0, 1, 2, 0)]
    assert len({e.id for e in events}) == 3
    assert events[1].time == dt.datetime.fromtimestamp(1646000001, dt.UTC) and events[1].names == ("user_login",)


# ---- config --------------------------------------------------------------------------------------------

def write_config(folder: Path, **source_keys: object) -> Path:
    src = {"name": "slack", "type": "slack", "token": {"env": "SLACK_TOKEN"}, "start": ts(-24), **source_keys}
    cfg = {"sources": [src], "checkpoints": {"type": "sqlite", "path": "state/cp.db"},
           "landing": {"type": "local", "path": "state/landing"}, "siem": {"type": "file", "path": "siem"}}
    (folder / "logpull.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "logpull.yaml"


def test_the_defaults_are_slack_s(tmp_path):
    cfg = load_config(write_config(tmp_path)).sources[0]
    assert isinstance(cfg, SlackConfig)
    assert cfg.base_url == "https://api.slack.com" and cfg.page_size == 1000
    assert cfg.rate == RateLimit(50, 60.0)  # Tier 3, organization-wide
    assert cfg.settle_lag == dt.timedelta(minutes=15) and cfg.lookback == dt.timedelta(hours=24)
    assert [r.env for r in cfg.secret_refs()] == ["SLACK_TOKEN"]
    own = load_config(write_config(tmp_path, rate_limit="20/min", page_size=9999, settle_lag="5m")).sources[0]
    assert own.rate == RateLimit(20, 60.0) and own.page_size == 9999 and own.settle_lag == dt.timedelta(minutes=5)


@pytest.mark.parametrize(("keys", "message"), [
    ({"page_size": 10000}, r"page_size.*less than or equal to 9999"),
    ({"page_size": 0}, r"page_size.*greater than or equal to 1"),
    ({"token": "xoxp-123"}, r"token: secrets are never written in the config"),
    ({"token": None}, r"\(slack\)\.token: Input should be a valid dictionary"),
    ({"org": "acme"}, r"\(slack\)\.org: unknown key"),
    ({"rate_limit": "lots"}, r"rate_limit.*not a rate"),
])
def test_config_errors_name_the_key(tmp_path, keys, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, **keys))


def test_the_default_tier_3_budget_paces_every_request_of_the_source(slack_sim, tmp_path):
    cfg = load_config(write_config(tmp_path, base_url=slack_sim.url, page_size=50)).sources[0]
    slept: list[float] = []
    store = SqliteCheckpointStore(tmp_path / "rate.db")
    gate = RateGate(store, cfg.effective_rate_account, cfg.rate, sleep=slept.append)  # records, does not sleep
    src = plugins.open_source(cfg, {"SLACK_TOKEN": TOKEN}.__getitem__, rate=gate)
    try:
        pages = read_all(src, W10)  # type: ignore[arg-type]
    finally:
        src.close()
        store.close()
    assert len(pages) >= 5 and len(slept) == len(pages) - 1  # the first request takes the first slot at once
    # Slots 1.2 s apart (60 s / 50): nothing really slept here, so each wait is one interval longer.
    assert all(abs(w - 1.2 * (n + 1)) < 0.5 for n, w in enumerate(slept)), slept
