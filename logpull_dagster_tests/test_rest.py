"""``type: rest`` (``sources/rest.py``): the declarative source's own behaviour, over real HTTP.

The contract suite, the hostile-API and HTTP-fault suites run it as Okta re-expressed (``okta_rest``)
against the simulator. Here a tiny windowed API (``TinyApi``: ``http.server`` in a thread, no mock of
httpx) is shaped per test like Slack (cursor in the body, epoch seconds, newest first, both ends
inclusive), GitHub/Okta (Link header) or Graph (next URL in the body), behind each auth type, to prove
each paginator, time format, auth, the window's end, id joining, and the config's errors.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from pydantic import TypeAdapter

from logpull_dagster.config import ConfigError, parse_config
from logpull_dagster.pull import PullFailed, pull_window
from logpull_dagster.sources import BadPage, TokenRejected
from logpull_dagster.sources.rest import (
    AuthConfig,
    RestApi,
    RestSource,
    event_time_us,
    open_auth,
    window_value,
)
from logpull_dagster.windows import UTC, Window, epoch_us, parse_time, rfc3339, rfc3339_ms

from . import cli
from .conftest import ts

# A window three hours before now, on a whole hour: the test means the same on any day.
_NOW = dt.datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
W = Window(_NOW - dt.timedelta(hours=3), _NOW - dt.timedelta(hours=2))
SECRET = "p4ss-w0rd-9e1c"


# ---- a tiny windowed API -------------------------------------------------------------------------------

@dataclass
class TinyApi:
    """One JSON API over the events in ``times`` (epoch microseconds; several may share one), shaped by
    its attributes. Filters by ``start_param``/``end_param`` in ``fmt`` (both inclusive unless
    ``inclusive`` is false), pages of ``limit`` through ``paging`` (cursor | link | next_url)."""

    times: list[int]
    fmt: str = "epoch_s"
    start_param: str = "oldest"
    end_param: str = "latest"
    inclusive: bool = True
    order: str = "descending"
    paging: str = "cursor"
    records: str = "entries"
    limit: int = 7
    time_key: str = "date_create"
    auth_ok: Callable[[dict[str, str]], bool] = lambda h: True
    # fault knobs
    reject_cursor_once: bool = False
    ignore_window: bool = False
    empty_pages_with_cursor: int = 0  # the first N pages after page one are empty but link on
    repeat_cursor_when_empty: bool = False
    throttle_once_reset_in: int | None = None  # a 429 whose reset header is Date + this many seconds
    tokens_issued: list[str] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.events = [{"id": str(uuid.UUID(int=i + 1)), "t": t} for i, t in enumerate(self.times)]

    # -- what an event looks like on the wire
    def render(self, ev: dict[str, Any]) -> dict[str, Any]:
        t = ev["t"]
        value: Any = {"epoch_s": t // 1_000_000, "epoch_ms": t // 1000}.get(self.fmt)
        if value is None:
            value = rfc3339_ms(dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=t))
        return {"id": ev["id"], self.time_key: value, "action": "user_login", "actor": {"id": "U1"}}

    def parse_bound(self, raw: str) -> int:
        if self.fmt == "epoch_s":
            return int(raw) * 1_000_000
        if self.fmt == "epoch_ms":
            return int(raw) * 1000
        return epoch_us(parse_time(raw))

    def truth(self, w: Window) -> list[str]:
        return sorted(ev["id"] for ev in self.events if w.start <= _dt(ev["t"]) < w.end)

    def answer(self, path: str, query: dict[str, str], headers: dict[str, str], base: str
               ) -> tuple[int, dict[str, str], Any]:
        self.log.append({"path": path, **query})
        if path == "/token":
            return 404, {}, {"error": "not here"}
        if not self.auth_ok(headers):
            return 401, {}, {"error": "invalid_auth"}
        if self.throttle_once_reset_in is not None:
            reset = int(time.time()) + self.throttle_once_reset_in
            self.throttle_once_reset_in = None
            return 429, {"X-Reset": str(reset)}, {"error": "ratelimited"}
        cursor = query.get("cursor") or query.get("after") or query.get("skiptoken")
        if cursor == "bad" or (cursor and self.reject_cursor_once):
            self.reject_cursor_once = False
            return 400, {}, {"error": "invalid_cursor"}
        lo, hi = self.parse_bound(query[self.start_param]), self.parse_bound(query[self.end_param])
        unit = 1_000_000 if self.fmt == "epoch_s" else 1000
        inside = [ev for ev in self.events if self.ignore_window or (
            lo <= ev["t"] // unit * unit and (ev["t"] // unit * unit <= hi if self.inclusive else ev["t"] < hi))]
        inside.sort(key=lambda e: (e["t"], e["id"]), reverse=self.order == "descending")
        raw = base64.b64decode(cursor).decode() if cursor else "0"
        offset = int(raw)
        if cursor and self.empty_pages_with_cursor > 0:
            # An empty page mid-walk: linking to itself, or on to a new cursor for the same offset.
            self.empty_pages_with_cursor -= 1
            chunk: list[dict[str, Any]] = []
            nxt: str | None = cursor if self.repeat_cursor_when_empty else base64.b64encode(
                f"0{raw}".encode()).decode()
        else:
            chunk = inside[offset:offset + self.limit]
            more = offset + self.limit < len(inside)
            nxt = base64.b64encode(str(offset + self.limit).encode()).decode() if more else None
        items = [self.render(e) for e in chunk]
        out_headers: dict[str, str] = {}
        body: Any
        keep = {k: v for k, v in query.items() if k not in ("cursor", "after", "skiptoken")}
        if self.paging == "cursor":
            body = {self.records: items, "response_metadata": {"next_cursor": nxt or ""}}
        elif self.paging == "link":
            body = items
            if nxt:
                out_headers["Link"] = f'<{base}{path}?{urlencode({**keep, "after": nxt})}>; rel="next"'
        else:
            body = {self.records: items}
            if nxt:
                body["@odata.nextLink"] = f"{base}{path}?{urlencode({**keep, 'skiptoken': nxt})}"
        return 200, out_headers, body


def _dt(us: int) -> dt.datetime:
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=us)


@pytest.fixture
def tiny() -> Iterator[Callable[..., tuple[TinyApi, str]]]:
    servers: list[ThreadingHTTPServer] = []

    def start(api: TinyApi, token_endpoint: Callable[[dict[str, list[str]]], tuple[int, Any]] | None = None
              ) -> tuple[TinyApi, str]:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, headers: dict[str, str], body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                base = f"http://127.0.0.1:{self.server.server_address[1]}"
                self._send(*api.answer(parts.path, query, dict(self.headers), base))

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                if self.path != "/token" or token_endpoint is None:
                    self._send(404, {}, {"error": "not found"})
                    return
                status, body = token_endpoint(form)
                self._send(status, {}, body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return api, f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def spread(n: int, w: Window = W, *, shared: int = 4) -> list[int]:
    """``n`` event times inside ``w``, with groups of ``shared`` on one second, plus one exactly on each
    of the window's ends and one just outside each (the boundary cases)."""
    start, end = epoch_us(w.start), epoch_us(w.end)
    step = (end - start) // (n // shared + 2) // 1_000_000 * 1_000_000
    inside = [start + step * (1 + i // shared) + (i % shared) * 1000 for i in range(n)]  # ms apart in one second
    return [start - 1_000_000, start, *inside, end - 1000, end, end + 1_000_000]


def rest(api: dict[str, Any], base_url: str, auth: dict[str, Any], secrets: dict[str, str] | None = None,
         **kw: Any) -> RestSource:
    values = secrets or {}
    opened, credential = open_auth(TypeAdapter(AuthConfig).validate_python(auth),
                                   lambda env: values.get(env, SECRET))
    kw.setdefault("backoff_initial", 0.01)
    kw.setdefault("backoff_max", 0.05)
    kw.setdefault("http_attempts", 3)
    kw.setdefault("timeout", 5)
    return RestSource(RestApi.model_validate(api), base_url=base_url, auth=opened, credential=credential, **kw)


def pull(src: RestSource, store, landing, w: Window = W, **kw: Any):  # type: ignore[no-untyped-def]
    try:
        return pull_window(src, w, source_name="tiny", checkpoints=store, landing=landing, owner="r",
                           lease_ttl=60, **kw)
    finally:
        src.close()


def landed(store, landing, w: Window = W) -> list[str]:  # type: ignore[no-untyped-def]
    cp = store.get("tiny", "pull", rfc3339(w.start))
    return [json.loads(line)["id"] for p in landing.pages("tiny", w, cp.page_seq) for line in landing.read_lines(p)]


SLACK = {"path": "/audit/v1/logs", "params": {"limit": 7},
         "window": {"start_param": "oldest", "end_param": "latest", "format": "epoch_s", "end_inclusive": True},
         "records": "entries", "paginator": {"type": "cursor", "path": "response_metadata.next_cursor",
                                             "param": "cursor"},
         "event_id": "id", "event_time": "date_create", "time_format": "epoch_s", "order": "descending"}
BEARER = {"type": "bearer", "token": {"env": "SLACK_TOKEN"}}


def bearer_ok(h: dict[str, str]) -> bool:
    return h.get("Authorization") == f"Bearer {SECRET}"


# ---- each paginator, time format and auth ---------------------------------------------------------------

def test_cursor_paginator_slack_shaped_newest_first_epoch_seconds_inclusive_end(tiny, store, landing):
    api, url = tiny(TinyApi(spread(40), auth_ok=bearer_ok))
    res = pull(rest(SLACK, url, BEARER), store, landing)
    assert res.complete and res.pages_read > 3
    got = landed(store, landing)
    assert sorted(got) == api.truth(W) and len(got) == len(set(got))
    # The end sent is the window's end itself (never end - 1 s); the event stamped on it came back and was
    # dropped here: it belongs to the next window.
    first = api.log[0]
    assert (first["oldest"], first["latest"], first["limit"]) == (
        str(int(W.start.timestamp())), str(int(W.end.timestamp())), "7")
    assert res.outside_window_dropped >= 1
    # every later request repeats the window with the cursor
    assert all(r["latest"] == first["latest"] and r.get("cursor") for r in api.log[1:])


def test_link_header_paginator_iso8601_ascending_basic_auth(tiny, store, landing):
    expected = "Basic " + base64.b64encode(f"auditor:{SECRET}".encode()).decode()
    api, url = tiny(TinyApi(spread(30), fmt="iso8601", start_param="since", end_param="until", order="ascending",
                            paging="link", records="", time_key="published",
                            auth_ok=lambda h: h.get("Authorization") == expected))
    desc = {"path": "/api/v1/logs", "params": {"limit": 5},
            "window": {"start_param": "since", "end_param": "until", "format": "iso8601", "end_inclusive": True},
            "records": "", "paginator": {"type": "link_header"}, "event_id": "id", "event_time": "published"}
    src = rest(desc, url, {"type": "basic", "username": "auditor", "password": {"env": "PW"}})
    assert SECRET in src.secrets() and expected.split()[1] in src.secrets()  # the header's base64 too
    res = pull(src, store, landing)
    assert res.complete and res.pages_read > 3 and sorted(landed(store, landing)) == api.truth(W)
    assert api.log[0]["since"] == rfc3339(W.start) and api.log[0]["until"] == rfc3339(W.end)
    assert all("after" in r and "since" in r for r in api.log[1:])  # the Link target, followed as given


def test_next_url_paginator_epoch_ms_oauth_client_credentials(tiny, store, landing):
    issued: list[str] = []

    def token_endpoint(form: dict[str, list[str]]) -> tuple[int, Any]:
        if form.get("client_secret") != [SECRET] or form.get("grant_type") != ["client_credentials"]:
            return 401, {"error": "invalid_client"}
        assert form.get("scope") == ["audit.read"]
        issued.append(f"at-{uuid.uuid4().hex}")
        return 200, {"access_token": issued[-1], "token_type": "Bearer", "expires_in": 3600}

    api, url = tiny(TinyApi(spread(30), fmt="epoch_ms", start_param="from", end_param="to", paging="next_url",
                            records="value", time_key="ts", inclusive=False,
                            auth_ok=lambda h: bool(issued) and h.get("Authorization") == f"Bearer {issued[-1]}"),
                    token_endpoint)
    desc = {"path": "/v1/audit", "params": {"top": 5},
            "window": {"start_param": "from", "end_param": "to", "format": "epoch_ms", "end_inclusive": False},
            "records": "value", "paginator": {"type": "next_url", "path": "@odata.nextLink"}, "event_id": "id",
            "event_time": "ts", "time_format": "epoch_ms", "order": "descending"}
    src = rest(desc, url, {"type": "oauth_client_credentials", "token_url": f"{url}/token", "client_id": "c1",
                           "client_secret": {"env": "CS"}, "scope": "audit.read"})
    res = pull(src, store, landing)
    assert res.complete and res.pages_read > 3 and sorted(landed(store, landing)) == api.truth(W)
    assert api.log[0]["to"] == str(int(W.end.timestamp() * 1000)) and len(issued) == 1
    assert res.outside_window_dropped == 0  # an exclusive end: nothing at the end came back


def test_header_auth_names_its_own_header_and_prefix(tiny, store, landing):
    api, url = tiny(TinyApi(spread(10), auth_ok=lambda h: h.get("X-Api-Key") == f"Key {SECRET}"))
    auth = {"type": "header", "name": "X-Api-Key", "prefix": "Key ", "token": {"env": "K"}}
    assert pull(rest(SLACK, url, auth), store, landing).complete
    assert sorted(landed(store, landing)) == api.truth(W)


def test_a_refused_credential_fails_at_once_naming_the_key(tiny, store, landing):
    _, url = tiny(TinyApi(spread(10), auth_ok=bearer_ok))
    with pytest.raises(PullFailed, match=r"HTTP 401.*auth\.token \(SLACK_TOKEN\)") as e:
        pull(rest(SLACK, url, BEARER, {"SLACK_TOKEN": "wrong"}), store, landing)
    assert e.value.permanent


def test_the_id_joins_several_paths_so_one_id_reused_at_other_times_stays_distinct(tiny, store, landing):
    times = spread(12)
    api, url = tiny(TinyApi(times, auth_ok=bearer_ok))
    for ev in api.events:  # Grove's Slack fixture: one id for many entries at different times
        ev["id"] = "reused-id"
    src = rest({**SLACK, "event_id": ["date_create", "id"]}, url, BEARER)
    res = pull(src, store, landing)
    got = landed(store, landing)
    inside = [t for t in times if W.start <= _dt(t) < W.end]
    assert res.complete and sorted(got) == sorted({f"{t // 1_000_000}/reused-id" for t in inside})
    # with the id alone, all of them would be one event
    plain = rest(SLACK, url, BEARER)
    events = plain.to_events(plain.fetch_page(W, None).items)
    plain.close()
    assert {e.id for e in events} == {"reused-id"}


# ---- the window's end ---------------------------------------------------------------------------------

def test_an_exclusive_end_declared_but_an_event_at_the_end_returned_is_a_bad_page_naming_end_inclusive(tiny):
    _, url = tiny(TinyApi(spread(10), inclusive=True, auth_ok=bearer_ok, order="descending"))
    desc = copy.deepcopy(SLACK)
    desc["window"]["end_inclusive"] = False
    src = rest(desc, url, BEARER)
    with pytest.raises(BadPage, match=r"stamped exactly at latest while window.end_inclusive is false; .* set "
                                      r"end_inclusive: true"):
        src.fetch_page(W, None)
    src.close()


def test_an_api_that_ignores_the_window_is_a_bad_page_not_a_silently_empty_window(tiny, store, landing):
    # A misspelt parameter: the API ignores it and returns events of other windows.
    _, url = tiny(TinyApi(spread(10), ignore_window=True, auth_ok=bearer_ok))
    with pytest.raises(PullFailed, match=r"outside the window asked for; check window.start_param \(oldest\)"):
        pull(rest(SLACK, url, BEARER), store, landing)
    assert landed(store, landing) == []


# ---- cursors ---------------------------------------------------------------------------------------------

def test_a_rejected_cursor_restarts_the_window_exactly(tiny, store, landing):
    api, url = tiny(TinyApi(spread(40), reject_cursor_once=True, auth_ok=bearer_ok))
    res = pull(rest(SLACK, url, BEARER), store, landing)
    got = landed(store, landing)
    assert res.complete and res.token_restarts == 1
    assert sorted(got) == api.truth(W) and len(got) == len(set(got))
    src = rest(SLACK, url, BEARER)
    with pytest.raises(TokenRejected, match="HTTP 400"):
        src.fetch_page(W, "bad")
    src.close()


def test_a_stored_cursor_that_is_not_a_url_is_rejected_for_url_paginators(tiny):
    _, url = tiny(TinyApi(spread(5)))
    desc = {**SLACK, "paginator": {"type": "link_header"}}
    src = rest(desc, url, BEARER)
    with pytest.raises(TokenRejected, match="not a next URL"):
        src.fetch_page(W, "b64cursor==")
    src.close()


def test_an_empty_page_with_a_new_cursor_is_followed(tiny, store, landing):
    api, url = tiny(TinyApi(spread(30), empty_pages_with_cursor=1, auth_ok=bearer_ok))
    res = pull(rest(SLACK, url, BEARER), store, landing)
    assert res.complete and sorted(landed(store, landing)) == api.truth(W)  # nothing lost after the empty page


def test_an_empty_page_repeating_its_cursor_stops_instead_of_looping(tiny, store, landing):
    _, url = tiny(TinyApi(spread(30), empty_pages_with_cursor=5, repeat_cursor_when_empty=True,
                          auth_ok=bearer_ok))
    with pytest.raises(PullFailed, match="returned the cursor it was sent, with no items"):
        pull(rest(SLACK, url, BEARER), store, landing)


def test_link_header_an_empty_page_ends_the_walk_even_if_it_links_on(tiny):
    _, url = tiny(TinyApi([], paging="link", records=""))
    desc = {**SLACK, "records": "", "paginator": {"type": "link_header"}}
    src = rest(desc, url, BEARER)
    link = {"link": f'<{url}/audit/v1/logs?after=x>; rel="next"'}
    assert src.parse_page(b"[]", link) == ([], None)
    assert src.parse_page(b'[{"id": "a", "date_create": 1}]', link)[1] == f"{url}/audit/v1/logs?after=x"
    src.close()


# ---- throttling ---------------------------------------------------------------------------------------

def test_a_429_waits_for_the_configured_reset_header(tiny, store, landing):
    api, url = tiny(TinyApi(spread(10), throttle_once_reset_in=2, auth_ok=bearer_ok))
    t0 = time.monotonic()
    res = pull(rest({**SLACK, "rate_limit_reset_header": "X-Reset"}, url, BEARER, backoff_max=5), store, landing)
    waited = time.monotonic() - t0
    assert res.complete and res.http_retries == 1 and sorted(landed(store, landing)) == api.truth(W)
    assert waited >= 1.0  # the reset (Date + 2 s, Date truncated to the second), not our 10 ms backoff


# ---- bad pages ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "message"), [
    (b'{"items": []}', r"records 'entries' is missing, not a list"),
    (b'{"entries": {}}', r"records 'entries' is a JSON object, not a list"),
    (b'{"entries": [{"date_create": 1}]}', r"item 0 has no event_id 'id'"),
    (b'{"entries": [{"id": "", "date_create": 1}]}', r"item 0 has no event_id 'id'"),
    (b'{"entries": [{"id": "a"}]}', r"item 0 has no event_time 'date_create'"),
    (b'{"entries": [{"id": "a", "date_create": "soon"}]}', r"item 0 has a bad event_time 'date_create' \(epoch_s\)"),
    (b'{"entries": [{"id": "a", "date_create": true}]}', r"bad event_time .*boolean"),
    (b'{"entries": [7]}', r"item 0 is not an object"),
    (b'{"entries": [], "response_metadata": {"next_cursor": 5}}', r"next cursor .* not a string"),
    (b'not json', r"not JSON"),
])
def test_a_page_that_does_not_match_its_description_is_bad(tiny, body, message):
    _, url = tiny(TinyApi([]))
    src = rest(SLACK, url, BEARER)
    with pytest.raises(BadPage, match=message):
        src.parse_page(body)
    src.close()


# ---- time formats -------------------------------------------------------------------------------------

def test_window_values_in_each_format_round_outward():
    t = dt.datetime(2026, 11, 26, 10, 0, 0, 250_500, tzinfo=UTC)
    assert window_value(t, "iso8601", up=False)[0] == "2026-11-26T10:00:00Z"
    assert window_value(t, "iso8601", up=True)[0] == "2026-11-26T10:00:01Z"
    assert window_value(t, "iso8601_ms", up=False)[0] == "2026-11-26T10:00:00.250Z"
    assert window_value(t, "iso8601_ms", up=True)[0] == "2026-11-26T10:00:00.251Z"
    assert window_value(t, "epoch_s", up=False)[0] == str(int(t.timestamp()))
    assert window_value(t, "epoch_ms", up=True)[0] == str(int(t.timestamp() * 1000) + 1)
    whole = t.replace(microsecond=0)
    assert {window_value(whole, f, up=True)[1] for f in ("iso8601", "iso8601_ms", "epoch_s", "epoch_ms")} == {
        epoch_us(whole)}  # a whole second is exact in every format


@pytest.mark.parametrize(("value", "fmt", "expected"), [
    ("2026-11-26T10:00:02.657Z", "iso8601", 1795687202657000),
    ("2026-11-26T11:00:02.657+01:00", "iso8601", 1795687202657000),
    (1795687202, "epoch_s", 1795687202000000),
    ("1795687202", "epoch_s", 1795687202000000),
    (1795687202.5, "epoch_s", 1795687202500000),
    (1795687202657, "epoch_ms", 1795687202657000),
])
def test_event_times_in_each_format(value, fmt, expected):
    assert event_time_us(value, fmt) == expected


@pytest.mark.parametrize(("value", "fmt"), [
    ("2026-11-26T10:00:02", "iso8601"), (1795687202, "iso8601"), ("x", "epoch_ms"), (None, "epoch_s"),
    (float("inf"), "epoch_s"), (-5, "epoch_s"), (10**30, "epoch_ms"), (True, "epoch_ms"),
])
def test_a_bad_event_time_is_refused(value, fmt):
    with pytest.raises(ValueError):
        event_time_us(value, fmt)


# ---- config -------------------------------------------------------------------------------------------

def config(**change: Any) -> dict[str, Any]:
    src = {"name": "okta_rest", **copy.deepcopy(cli.SOURCES["okta_rest"]), "base_url": "https://acme.okta.com",
           "start": ts(-24)}
    for key, value in change.items():
        node, *path = key.split("__")
        target = src
        for p in [node, *path][:-1]:
            target = target[p]
        last = [node, *path][-1]
        if value is ...:
            target.pop(last)
        else:
            target[last] = value
    return {"sources": [src]}


def test_the_okta_description_loads():
    cfg = parse_config(config()).sources[0]
    assert cfg.type == "rest" and cfg.stream == "/api/v1/logs of acme.okta.com"
    assert [r.env for r in cfg.secret_refs()] == ["LOGPULL_TEST_TOKEN"]
    assert cfg.settle_lag == dt.timedelta(minutes=15) and cfg.supports_rate_limit
    assert parse_config(config(rate_limit="100/min")).sources[0].rate_limit == "100/min"


@pytest.mark.parametrize(("change", "message"), [
    ({"bogus": 1}, r"okta_rest\)\.bogus: unknown key"),
    ({"window__bogus": 1}, r"window\.bogus: unknown key"),
    ({"auth__type": "magic"}, r"\.auth: auth\.type 'magic' is not one of header, bearer, basic, "
                              r"oauth_client_credentials"),
    ({"auth__token": "plain"}, r"auth\.token: secrets are never written in the config; .*\{env: API_TOKEN\}"),
    ({"auth__name": "Bad Header"}, r"auth\.name: "),
    ({"auth": {"type": "basic", "username": "u"}}, r"auth\.password: required key is missing"),
    ({"auth": {"type": "oauth_client_credentials", "client_id": "c", "client_secret": {"env": "S"}}},
     r"auth\.token_url: required key is missing"),
    ({"paginator": {"type": "cursor", "path": "next"}},
     r"\.paginator: a cursor paginator needs param: .*param: cursor"),
    ({"paginator": {"type": "cursor"}}, r"needs path and param"),
    ({"paginator": {"type": "next_url"}}, r"a next_url paginator needs path"),
    ({"paginator": {"type": "scroll"}}, r"paginator\.type 'scroll' is not one of link_header, cursor, next_url"),
    ({"paginator": {"type": "link_header", "path": "x"}}, r"paginator\.path: unknown key"),
    ({"window__end_inclusive": ...}, r"window: end_inclusive is required: true if the API may return events "
                                     r"stamped exactly at end_param"),
    ({"window__end_inclusive": "yes"}, r"window\.end_inclusive: "),
    ({"window__format": "rfc2822"}, r"window\.format: 'rfc2822' is not allowed"),
    ({"window__end_param": "since"}, r"start_param and end_param are both 'since'"),
    ({"params": {"since": "x"}}, r"params\.since is set by the source itself \(window\.start_param\)"),
    ({"params": {"flag": True}}, r"params\.flag: .*YAML boolean; quote the value"),
    ({"time_format": "unix"}, r"time_format: 'unix' is not allowed"),
    ({"order": "newest"}, r"order: 'newest' is not allowed"),
    ({"event_id": []}, r"event_id"),
    ({"event_id": ["uuid", "uuid"]}, r"event_id names a path twice"),
    ({"path": "api/v1/logs"}, r"path: "),
    ({"path": "/api?x=1"}, r"holds a query; put its parameters in params"),
    ({"records": ".x"}, r"records: "),
    ({"base_url": "acme.okta.com"}, r"base_url: must be an http\(s\) URL"),
    ({"rate_limit_reset_header": "X Reset"}, r"rate_limit_reset_header: "),
])
def test_config_errors_name_the_key_and_the_fix(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(config(**change))


def test_secrets_hold_every_credential_of_basic_and_oauth():
    basic, _ = open_auth(TypeAdapter(AuthConfig).validate_python(
        {"type": "basic", "username": "u", "password": {"env": "P"}}), lambda _: SECRET)
    assert set(basic.secrets()) == {SECRET, base64.b64encode(f"u:{SECRET}".encode()).decode()}  # type: ignore[attr-defined]
    oauth, credential = open_auth(TypeAdapter(AuthConfig).validate_python(
        {"type": "oauth_client_credentials", "token_url": "https://login.example/token", "client_id": "c",
         "client_secret": {"env": "CS"}, "scope": ["a", "b"]}), lambda _: SECRET)
    assert SECRET in oauth.secrets() and "auth.client_secret (CS)" in credential  # type: ignore[attr-defined]
    assert repr(basic) == "BasicAuth(<redacted>)"

