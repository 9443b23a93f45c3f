"""The Reports API simulator, over real HTTP: the behaviours a log-pulling client relies on.

Every test fixes the sim clock, so results do not depend on the wall clock, and uses few events per hour
and small pages, so several pages are read in milliseconds.
"""

from __future__ import annotations

import email.utils
import json
import math
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import orjson
import pytest

from logpull_dagster.simulator import FAULT_DOCS, FAULT_KINDS, Simulator, SimulatorError
from logpull_dagster.simulator.__main__ import build_parser
from logpull_dagster.simulator.__main__ import main as simulator_main

from .tls import TlsFiles, make_tls_files

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
H10 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
H11 = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)
MS = timedelta(milliseconds=1)
TOKEN = "test-token"
REPO = Path(__file__).resolve().parents[1]

SimFactory = Callable[..., Simulator]


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def path(app: str = "login") -> str:
    return f"/admin/reports/v1/activity/users/all/applications/{app}"


def key(item: dict[str, Any]) -> tuple[str, int]:
    """Newest-first sort key; the fixed-width time string sorts like the instant."""
    return (item["id"]["time"], int(item["id"]["uniqueQualifier"]))


def ident(item: dict[str, Any]) -> tuple[str, str, str, str]:
    i = item["id"]
    return (i["applicationName"], i["customerId"], i["time"], i["uniqueQualifier"])


@pytest.fixture
def make_sim() -> Iterator[SimFactory]:
    sims: list[Simulator] = []

    def factory(**kwargs: Any) -> Simulator:
        kwargs.setdefault("events_per_hour", 100)
        kwargs.setdefault("token", TOKEN)
        sim = Simulator(**kwargs)
        sim.set_clock(NOW)
        sim.start()
        sims.append(sim)
        return sim

    yield factory
    for sim in sims:
        sim.stop()


@pytest.fixture
def sim(make_sim: SimFactory) -> Simulator:
    return make_sim()


def client(
    sim: Simulator, token: str | None = TOKEN, timeout: float = 5.0, verify: ssl.SSLContext | bool = True
) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=sim.url, headers=headers, timeout=timeout, trust_env=False, verify=verify)


@pytest.fixture
def http(sim: Simulator) -> Iterator[httpx.Client]:
    with client(sim) as c:
        yield c


def query(
    start: datetime = H10,
    end: datetime | None = H11,
    *,
    max_results: int | None = 25,
    page_token: str | None = None,
) -> dict[str, Any]:
    params: dict[str, Any] = {"startTime": iso(start)}
    if end is not None:
        params["endTime"] = iso(end)
    if max_results is not None:
        params["maxResults"] = max_results
    if page_token is not None:
        params["pageToken"] = page_token
    return params


def get(
    c: httpx.Client,
    start: datetime = H10,
    end: datetime | None = H11,
    *,
    app: str = "login",
    max_results: int | None = 25,
    page_token: str | None = None,
) -> httpx.Response:
    return c.get(path(app), params=query(start, end, max_results=max_results, page_token=page_token))


def fetch_all(
    c: httpx.Client, start: datetime = H10, end: datetime = H11, *, app: str = "login", max_results: int = 25
) -> tuple[list[dict[str, Any]], int]:
    items: list[dict[str, Any]] = []
    token: str | None = None
    pages = 0
    while True:
        r = get(c, start, end, app=app, max_results=max_results, page_token=token)
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        items.extend(body.get("items", []))
        token = body.get("nextPageToken")
        if token is None:
            return items, pages
        assert token != ""


# -- pagination and windows -------------------------------------------------------------------------


def test_pages_are_newest_first_complete_and_without_duplicates(sim: Simulator, http: httpx.Client) -> None:
    items, pages = fetch_all(http, max_results=17)
    assert pages > 3
    keys = [key(i) for i in items]
    assert keys == sorted(keys, reverse=True)
    assert len(set(map(ident, items))) == len(items)
    # 100 random + 1 boundary + 2x3 shared in hour 10, plus hour 11's boundary event (endTime inclusive)
    assert len(items) == 100 + 1 + 6 + 1
    assert items == sim.ground_truth("login", H10, H11 + MS)


def test_both_window_ends_inclusive_but_ground_truth_half_open(sim: Simulator, http: httpx.Client) -> None:
    earlier, _ = fetch_all(http, H10 - timedelta(hours=1), H10)
    later, _ = fetch_all(http, H10, H11)
    shared = set(map(ident, earlier)) & set(map(ident, later))
    assert [t for (_, _, t, _) in shared] == ["2026-11-26T10:00:00.000Z"]

    truth_earlier = sim.ground_truth("login", H10 - timedelta(hours=1), H10)
    truth_later = sim.ground_truth("login", H10, H11)
    assert not set(map(ident, truth_earlier)) & set(map(ident, truth_later))
    assert truth_later[-1]["id"]["time"] == "2026-11-26T10:00:00.000Z"
    both = sim.ground_truth("login", H10 - timedelta(hours=1), H11 + MS)
    assert set(map(ident, earlier)) | set(map(ident, later)) == set(map(ident, both))


def test_shared_millisecond_groups_survive_one_item_pages(sim: Simulator, http: httpx.Client) -> None:
    truth = sim.ground_truth("login", H10, H11)
    groups = [t for t, n in Counter(i["id"]["time"] for i in truth).items() if n >= 3]
    assert len(groups) >= 2
    t = datetime.fromisoformat(groups[0])
    in_group = [i for i in truth if i["id"]["time"] == groups[0]]
    assert len({i["id"]["uniqueQualifier"] for i in in_group}) == len(in_group)
    # A page boundary inside the group must lose nothing: the token is a position, not a time.
    items, pages = fetch_all(http, t, t + MS, max_results=1)
    assert pages >= 3
    assert [ident(i) for i in items if i["id"]["time"] == groups[0]] == [ident(i) for i in in_group]


def test_empty_result_has_no_items_key(make_sim: SimFactory) -> None:
    sim = make_sim(events_per_hour=0, boundary_events=False, shared_ms_events=False)
    with client(sim) as c:
        r = get(c)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["kind"] == "admin#reports#activities"
    assert "items" not in body and "nextPageToken" not in body


def test_event_shape(sim: Simulator, http: httpx.Client) -> None:
    login, _ = fetch_all(http, max_results=1000)
    drive, _ = fetch_all(http, app="drive", max_results=1000)
    for item in login + drive:
        assert set(item) == {"kind", "id", "etag", "actor", "ipAddress", "events"}
        assert item["kind"] == "admin#reports#activity"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", item["id"]["time"])
        assert -(2**63) <= int(item["id"]["uniqueQualifier"]) < 2**63
        assert item["id"]["customerId"] == "C03demo"
        assert item["etag"].startswith('"') and item["etag"].endswith('"')
        assert item["actor"]["email"].endswith("@example.com")
    login_names = {i["events"][0]["name"] for i in login}
    assert {"login_success", "logout"} <= login_names
    assert login_names <= {"login_success", "login_failure", "logout", "login_challenge",
                           "login_verification", "2sv_enroll"}
    assert {i["events"][0]["name"] for i in drive} <= {"view", "edit", "create", "delete", "change_setting"}
    assert {i["id"]["applicationName"] for i in drive} == {"drive"}


def test_same_seed_same_pages_other_seed_other_events(make_sim: SimFactory) -> None:
    a, b, c = make_sim(seed=11), make_sim(seed=11), make_sim(seed=12)
    with client(a) as ca, client(b) as cb, client(c) as cc:
        ta = tb = None
        for _ in range(3):
            ra, rb = get(ca, page_token=ta), get(cb, page_token=tb)
            assert ra.content == rb.content
            ta, tb = ra.json()["nextPageToken"], rb.json()["nextPageToken"]
        assert get(cc).json()["items"] != get(ca).json()["items"]


# -- tokens, auth, validation -----------------------------------------------------------------------


def _invalid_token(r: httpx.Response) -> None:
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == 400 and err["message"] == "Invalid pageToken"
    assert err["status"] == "INVALID_ARGUMENT" and err["errors"]


def test_page_token_is_tied_to_its_query(http: httpx.Client) -> None:
    token = get(http).json()["nextPageToken"]
    assert get(http, page_token=token).status_code == 200
    assert get(http, page_token=token, max_results=5).status_code == 200  # page size may change
    _invalid_token(get(http, end=H11 + timedelta(minutes=1), page_token=token))
    _invalid_token(get(http, start=H10 + MS, page_token=token))
    _invalid_token(get(http, app="drive", page_token=token))
    _invalid_token(get(http, page_token="garbage"))
    _invalid_token(get(http, page_token=token[:-2] + ("AA" if token[-2:] != "AA" else "BB")))


def test_auth_required_when_token_set(sim: Simulator, make_sim: SimFactory) -> None:
    for token in (None, "wrong"):
        with client(sim, token=token) as c:
            r = get(c)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == 401
    open_sim = make_sim(token=None)
    with client(open_sim, token=None) as c:
        assert get(c).status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"endTime": iso(H11)},  # startTime missing
        {"startTime": "yesterday", "endTime": iso(H11)},
        {"startTime": iso(H10), "endTime": "soon"},
        {"startTime": iso(H11), "endTime": iso(H11)},
        {"startTime": iso(H11), "endTime": iso(H10)},
        {"startTime": iso(NOW + MS)},
        {"startTime": iso(H10), "maxResults": "0"},
        {"startTime": iso(H10), "maxResults": "1001"},
        {"startTime": iso(H10), "maxResults": "ten"},
        {"startTime": iso(H10), "maxResults": "1.5"},
    ],
)
def test_invalid_requests_are_400(http: httpx.Client, params: dict[str, str]) -> None:
    r = http.get(path(), params=params)
    assert r.status_code == 400
    assert r.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_valid_edge_parameters(http: httpx.Client) -> None:
    assert len(get(http, max_results=1).json()["items"]) == 1
    assert len(get(http, max_results=1000).json()["items"]) == 108
    assert http.get(path(), params={"startTime": "2026-11-26T11:00:00+01:00"}).status_code == 200
    assert get(http, end=None).status_code == 200  # endTime defaults to sim-now
    r = http.get("/admin/reports/v1/activity/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == 404


# -- faults -----------------------------------------------------------------------------------------

FAULT_CASES: list[tuple[str, dict[str, Any]]] = [
    ("429", {}),
    ("429_no_retry_after", {}),
    ("503", {"retry_after": 2}),
    ("500", {}),
    ("502", {}),
    ("504", {}),
    ("drop", {}),
    ("slow", {"delay": 0.5}),
    ("reject_token", {}),
    ("bad_json", {}),
    ("malformed", {}),
    ("no_id", {}),
    ("stuck_token", {}),
    ("repeat_token", {}),
    ("repeat_token_varying", {}),  # Google's cursor is a token, not a URL: repeated as is
    ("gzip_bomb", {}),  # the default 2 GiB: only its raw bytes and a bounded prefix are ever decoded
    ("big_body", {}),
    ("trickle", {"delay": 0.01, "trickle_bytes": 512}),
    ("surrogate", {}),
    ("invalid_utf8", {}),
    ("control_byte", {}),
    ("echo_auth", {}),
    ("redirect", {}),
]
PAD_PREFIX = b'{"kind":"admin#reports#activities","pad":"'
SURROGATE = b'"login_\\ud800success"'


def test_fault_cases_cover_every_kind() -> None:
    assert sorted(k for k, _ in FAULT_CASES) == sorted(FAULT_KINDS)


@pytest.mark.parametrize(("kind", "extra"), FAULT_CASES, ids=[k for k, _ in FAULT_CASES])
def test_each_fault_kind_fires_once(
    sim: Simulator, http: httpx.Client, kind: str, extra: dict[str, Any]
) -> None:
    token = get(http).json()["nextPageToken"]
    normal = get(http, page_token=token)
    sim.set_faults([{"kind": kind, **extra}])
    sim.clear_requests()
    if kind == "drop":
        with pytest.raises(httpx.TransportError):
            get(http, page_token=token)
    elif kind == "slow":
        with client(sim, timeout=0.2) as impatient, pytest.raises(httpx.ReadTimeout):
            get(impatient, page_token=token)
    elif kind == "gzip_bomb":
        with http.stream("GET", path(), params=query(page_token=token)) as r:
            raw = b"".join(r.iter_raw())  # raw: httpx would otherwise inflate all 2 GiB
        assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
        assert r.headers["content-type"] == "application/json"
        assert len(raw) == int(r.headers["content-length"]) < 4_000_000
        assert zlib.decompressobj(wbits=31).decompress(raw, 100) == PAD_PREFIX + b"A" * (100 - len(PAD_PREFIX))
        assert struct.unpack("<I", raw[-4:])[0] == 2**31  # gzip ISIZE: the decoded length, mod 2**32
    elif kind == "big_body":
        with http.stream("GET", path(), params=query(page_token=token)) as r:
            head = b""
            for chunk in r.iter_raw():
                head += chunk
                if len(head) >= 1 << 20:
                    break  # leaving the block closes the connection with 127 MiB unread
        assert r.status_code == 200 and r.headers["content-length"] == str(128 * 1024**2)
        assert "content-encoding" not in r.headers
        assert head[:len(PAD_PREFIX) + 4] == PAD_PREFIX + b"AAAA"
    else:
        t0 = time.monotonic()
        r = get(http, page_token=token)
        elapsed = time.monotonic() - t0
        if kind.startswith(("4", "5")):
            status = int(kind[:3])
            assert r.status_code == status
            assert r.json()["error"]["code"] == status
            if kind == "429":
                assert r.headers["retry-after"] == "1"
                assert r.json()["error"]["errors"][0]["reason"] == "rateLimitExceeded"
            elif kind == "503":
                assert r.headers["retry-after"] == "2"
            else:
                assert "retry-after" not in r.headers
        elif kind == "reject_token":
            _invalid_token(r)
        elif kind == "bad_json":
            assert r.status_code == 200
            with pytest.raises(ValueError):
                r.json()
        elif kind == "malformed":
            assert r.status_code == 200 and not isinstance(r.json()["items"], list)
        elif kind == "no_id":
            items = r.json()["items"]
            assert len(items) == len(normal.json()["items"])
            assert sum("id" not in i for i in items) == 1
        elif kind == "stuck_token":
            body = r.json()
            assert r.status_code == 200 and "items" not in body and body["nextPageToken"] == token
        elif kind in ("repeat_token", "repeat_token_varying"):
            body = r.json()
            assert r.status_code == 200 and body["items"] == normal.json()["items"]
            assert body["nextPageToken"] == token != normal.json()["nextPageToken"]
        elif kind == "trickle":
            assert r.content == normal.content
            assert elapsed >= math.ceil(len(r.content) / 512) * 0.01  # the body alone took that many writes
        elif kind == "surrogate":
            assert r.status_code == 200 and r.content.count(SURROGATE) == 1
            body, expected = json.loads(r.content), normal.json()
            mid = len(expected["items"]) // 2
            expected["items"][mid]["events"][0]["name"] = "login_\ud800success"
            assert body == expected  # ids and everything else untouched
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(r.content)
        elif kind in ("invalid_utf8", "control_byte"):
            byte = b"\xff" if kind == "invalid_utf8" else b"\x01"
            assert r.status_code == 200 and r.content.count(byte) == 1
            assert r.content.replace(byte, b"") == normal.content  # inserted, nothing else changed
            pos = r.content.index(byte)
            value = r.content.rindex(b'"email":"', 0, pos) + len(b'"email":"')
            assert b'"' not in r.content[value:pos]  # inside the actor.email string, not between tokens
        elif kind == "echo_auth":
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["error"]["message"] == f"Request with Authorization: Bearer {TOKEN} was refused"
        elif kind == "redirect":
            assert r.status_code == 302 and r.content == b""
            assert r.headers["location"] == "http://127.0.0.2:9/elsewhere"
    log = sim.requests()
    assert len(log) == 1 and log[0]["fault"] == kind
    if kind == "drop":
        assert log[0]["status"] is None
    elif kind != "slow":  # a slow request is logged as it arrives, its status once it has slept
        assert log[0]["status"] == r.status_code
    again = get(http, page_token=token)  # count defaults to 1: the same request now succeeds
    assert again.status_code == 200 and again.content == normal.content


def test_503_without_retry_after_and_stuck_token_on_first_request(sim: Simulator, http: httpx.Client) -> None:
    sim.set_faults([{"kind": "503"}, {"kind": "stuck_token"}])
    r = get(http)
    assert r.status_code == 503 and "retry-after" not in r.headers
    stuck = get(http).json()
    assert "items" not in stuck
    assert get(http, page_token=stuck["nextPageToken"]).status_code == 200  # a valid-looking token


def statuses(c: httpx.Client, n: int, token: str | None = None) -> list[int]:
    return [get(c, page_token=token).status_code for _ in range(n)]


def test_after_and_count(sim: Simulator, http: httpx.Client) -> None:
    sim.set_faults([{"kind": "500", "after": 2, "count": 2}])
    assert statuses(http, 6) == [200, 200, 500, 500, 200, 200]
    sim.set_faults([{"kind": "502", "count": None}])
    assert statuses(http, 4) == [502] * 4
    sim.set_faults([{"kind": "503", "count": 1}, {"kind": "500", "count": 1}])  # first firing rule wins
    assert statuses(http, 3) == [503, 500, 200]
    assert [r["fired"] for r in sim.faults()] == [1, 1]


def test_match_token_first_and_reject_token(sim: Simulator, http: httpx.Client) -> None:
    token = get(http).json()["nextPageToken"]
    sim.set_faults([{"kind": "500", "match": "token", "count": None}])
    assert statuses(http, 2) == [200, 200]
    assert statuses(http, 2, token) == [500, 500]
    sim.set_faults([{"kind": "500", "match": "first", "count": None}])
    assert statuses(http, 2, token) == [200, 200]
    assert statuses(http, 2) == [500, 500]
    sim.set_faults([{"kind": "reject_token"}])
    assert statuses(http, 1) == [200]  # a request without a token does not match the rule
    assert statuses(http, 2, token) == [400, 200]


def test_probability_is_seeded(sim: Simulator, http: httpx.Client) -> None:
    rule = {"kind": "500", "probability": 0.5, "count": None}
    sim.set_faults([rule])
    first = statuses(http, 30)
    assert 5 < first.count(500) < 25
    sim.set_faults([rule])
    assert statuses(http, 30) == first


def test_invalid_fault_rules_rejected(sim: Simulator, http: httpx.Client) -> None:
    for bad in ({"kind": "418"}, {"kind": "500", "cuont": 2}, {"kind": "500", "match": "sometimes"}):
        with pytest.raises(SimulatorError):
            sim.set_faults([bad])
        assert http.post("/_sim/faults", json={"rules": [bad]}).status_code == 400


def test_page_latency(sim: Simulator, http: httpx.Client) -> None:
    sim.set_page_latency(0.3)
    t0 = time.monotonic()
    assert http.get("/_sim/health").json() == {"ok": True}
    t1 = time.monotonic()
    assert get(http).status_code == 200
    t2 = time.monotonic()
    assert t1 - t0 < 0.25
    assert t2 - t1 >= 0.3


# -- hostile replies --------------------------------------------------------------------------------


def test_new_rule_keys_defaults_and_validation(sim: Simulator, http: httpx.Client) -> None:
    kinds = ["gzip_bomb", "big_body", "trickle", "slow", "echo_auth", "redirect"]
    sim.set_faults([{"kind": k} for k in kinds])
    specs = {r["kind"]: r for r in sim.faults()}
    assert specs["gzip_bomb"]["size"] == 2 * 1024**3 and specs["big_body"]["size"] == 128 * 1024**2
    assert specs["slow"]["size"] is None
    assert (specs["trickle"]["delay"], specs["trickle"]["trickle_bytes"]) == (1.0, 1)
    assert specs["slow"]["delay"] == 5.0  # unchanged for the existing kind
    assert specs["echo_auth"]["status"] == 401
    assert specs["redirect"]["location"] == "http://127.0.0.2:9/elsewhere"
    bad_rules = [
        {"kind": "gzip_bomb", "size": 10},  # smaller than the JSON envelope
        {"kind": "big_body", "size": 1 << 40},
        {"kind": "big_body", "size": True},
        {"kind": "big_body", "size": 1e6},
        {"kind": "trickle", "trickle_bytes": 0},
        {"kind": "trickle", "trickle_bytes": "1"},
        {"kind": "echo_auth", "status": 404},
        {"kind": "redirect", "location": "http://x/\r\nSet-Cookie: a=b"},
        {"kind": "redirect", "location": ""},
        {"kind": "redirect", "location": 5},
    ]
    for bad in bad_rules:
        with pytest.raises(SimulatorError, match=r"size|trickle_bytes|status|location"):
            sim.set_faults([bad])
        r = http.post("/_sim/faults", json={"rules": [bad]})
        assert r.status_code == 400 and re.search(r"size|trickle_bytes|status|location", r.json()["error"]["message"])


def test_repeat_token_without_a_token_leads_back_to_page_one(sim: Simulator, http: httpx.Client) -> None:
    first = get(http).json()
    sim.set_faults([{"kind": "repeat_token", "match": "first"}])
    looped = get(http).json()
    assert looped["items"] == first["items"] and looped["nextPageToken"] != first["nextPageToken"]
    again = get(http, page_token=looped["nextPageToken"]).json()  # page 1 once more, then onwards
    assert again["items"] == first["items"] and again["nextPageToken"] == first["nextPageToken"]


def test_repeat_token_on_the_last_page_still_points_back(sim: Simulator, http: httpx.Client) -> None:
    token = get(http, max_results=100).json()["nextPageToken"]
    last = get(http, max_results=100, page_token=token).json()
    assert "nextPageToken" not in last
    sim.set_faults([{"kind": "repeat_token", "match": "token"}])
    looped = get(http, max_results=100, page_token=token).json()
    assert looped["items"] == last["items"] and looped["nextPageToken"] == token


def test_gzip_bomb_is_valid_gzip_of_exactly_size_bytes_of_json(sim: Simulator, http: httpx.Client) -> None:
    mib = 1 << 20
    envelope = len(PAD_PREFIX) + 2
    for size in (envelope, envelope + 1, envelope + mib, envelope + 3 * mib - 1, 50_000_000):
        sim.set_faults([{"kind": "gzip_bomb", "size": size}])
        with http.stream("GET", path(), params=query()) as r:
            raw = b"".join(r.iter_raw())
        inflate = zlib.decompressobj(wbits=31)
        body = inflate.decompress(raw)
        assert inflate.eof and inflate.unused_data == b""  # zlib checked the gzip CRC32 and length
        assert len(body) == size and len(raw) < size // 900 + 200
        assert json.loads(body) == {"kind": "admin#reports#activities", "pad": "A" * (size - envelope)}
    sim.set_faults([{"kind": "gzip_bomb", "size": 50_000_000}])
    with http.stream("GET", path(), params=query()) as r:
        assert b"".join(r.iter_raw()) == raw  # served from the per-size cache, byte for byte
    assert [e["fault"] for e in sim.requests()] == ["gzip_bomb"] * 6


def handler_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "process_request_thread" in t.name}


def wait_for_no_new_handlers(before: set[threading.Thread], timeout: float = 5.0) -> None:
    """The connection threads started since ``before`` all end: the handler stopped when the client left."""
    deadline = time.monotonic() + timeout
    while handler_threads() - before:
        assert time.monotonic() < deadline, "a handler kept writing to a client that hung up"
        time.sleep(0.02)


def raw_request(sim: Simulator, params: dict[str, Any]) -> socket.socket:
    host, port = urlsplit(sim.url).hostname, sim.port
    sock = socket.create_connection((host, port), timeout=5)
    target = f"{path()}?{urlencode(params)}"
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    return sock


def recv_at_least(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "server closed early"
        data += chunk
    return data


def test_big_body_full_read_and_early_hang_up(sim: Simulator, http: httpx.Client) -> None:
    size = 3 * (1 << 20) + 5
    sim.set_faults([{"kind": "big_body", "size": size}])
    r = get(http)
    assert len(r.content) == size == int(r.headers["content-length"])
    assert json.loads(r.content)["pad"] == "A" * (size - len(PAD_PREFIX) - 2)
    before = handler_threads()
    sim.set_faults([{"kind": "big_body"}])  # 128 MiB
    sock = raw_request(sim, query())
    assert recv_at_least(sock, 65536).startswith(b"HTTP/1.1 200 ")
    sock.close()
    wait_for_no_new_handlers(before)
    assert get(http).status_code == 200


def test_trickle_slows_the_status_line_too_and_stops_when_the_client_leaves(
    sim: Simulator, http: httpx.Client
) -> None:
    before = handler_threads()
    sim.set_faults([{"kind": "trickle", "delay": 0.05}])  # one byte per write
    t0 = time.monotonic()
    sock = raw_request(sim, query())
    assert recv_at_least(sock, 5) == b"HTTP/"
    assert time.monotonic() - t0 >= 4 * 0.05
    sock.close()
    wait_for_no_new_handlers(before)
    assert get(http).status_code == 200


def test_echo_auth_fires_for_wrong_or_missing_tokens_before_other_rules(sim: Simulator) -> None:
    sim.set_faults([{"kind": "500", "count": None}, {"kind": "echo_auth", "status": 403, "count": 2}])
    with client(sim, token="wrong-secret") as c:
        r = get(c)
        assert r.status_code == 403 and "www-authenticate" not in r.headers
        err = r.json()["error"]
        assert err["message"] == "Request with Authorization: Bearer wrong-secret was refused"
        assert err["status"] == "PERMISSION_DENIED" and err["errors"][0]["message"] == err["message"]
    with client(sim, token=None) as c:
        assert get(c).json()["error"]["message"] == "Request with Authorization:  was refused"
        r = get(c)  # echo_auth is spent: the plain 401, which quotes nothing
        assert r.status_code == 401 and "Authorization:" not in r.text
    with client(sim) as c:
        assert get(c).status_code == 500  # the 500 rule only ever saw the authenticated request
    assert [f["fired"] for f in sim.faults()] == [1, 2]
    for status in (400, 401, 500, 503):
        sim.set_faults([{"kind": "echo_auth", "status": status}])
        with client(sim, token="abc") as c:
            r = get(c)
        assert r.status_code == status and "Bearer abc" in r.json()["error"]["message"]


def test_redirect_to_a_chosen_location(sim: Simulator, http: httpx.Client) -> None:
    sim.set_faults([{"kind": "redirect", "location": "https://evil.example/steal?x=1"}])
    r = get(http)
    assert r.status_code == 302 and r.headers["location"] == "https://evil.example/steal?x=1"
    assert r.headers["content-length"] == "0"
    assert get(http).status_code == 200


def test_damaged_items_leave_an_empty_page_alone(make_sim: SimFactory) -> None:
    sim = make_sim(events_per_hour=0, boundary_events=False, shared_ms_events=False)
    with client(sim) as c:
        normal = get(c).content
        for kind in ("surrogate", "invalid_utf8", "control_byte"):
            sim.set_faults([{"kind": kind}])
            assert get(c).content == normal


def test_help_documents_every_fault_kind_and_rule_key() -> None:
    assert list(FAULT_DOCS) == list(FAULT_KINDS)
    text = build_parser().format_help()
    for kind in FAULT_KINDS:
        assert re.search(rf"^  {re.escape(kind)} ", text, re.MULTILINE), kind
    for rule_key in ("count", "after", "probability", "match", "retry_after", "delay", "size",
                     "trickle_bytes", "status", "location"):
        assert re.search(rf"^  {rule_key} ", text, re.MULTILINE), rule_key
    assert "--tls-cert" in text and "--tls-key" in text


# -- late events and the clock ----------------------------------------------------------------------


def test_late_events_invisible_until_published(make_sim: SimFactory) -> None:
    sim = make_sim(late_fraction=0.3, late_delay=3600)
    with client(sim) as c:
        visible = sim.ground_truth("login", H11, NOW)
        eventual = sim.ground_truth("login", H11, NOW, include_unpublished=True)
        assert 10 < len(eventual) - len(visible) < 60
        items, _ = fetch_all(c, H11, NOW - MS)
        assert items == visible
        sim.set_clock(NOW + timedelta(hours=1))
        items, _ = fetch_all(c, H11, NOW - MS)
        assert items == eventual == sim.ground_truth("login", H11, NOW)
        assert all(set(i) == {"kind", "id", "etag", "actor", "ipAddress", "events"} for i in items)
        sim.set_clock(H11 + timedelta(minutes=30))  # events after sim-now do not exist yet
        assert all(i["id"]["time"] <= "2026-11-26T11:30:00.000Z" for i in fetch_all(c, H11, NOW)[0])


def test_late_publication_between_pages_does_not_shift_pages(make_sim: SimFactory) -> None:
    sim = make_sim(late_fraction=0.3, late_delay=1800)
    with client(sim) as c:
        first = get(c, H11, NOW, max_results=20).json()
        sim.set_clock(NOW + timedelta(hours=1))  # every late event of the window is now published
        rest, _ = fetch_all_from(c, first["nextPageToken"])
    cursor = key(first["items"][-1])
    expected = [i for i in sim.ground_truth("login", H11, NOW + MS) if key(i) < cursor]
    assert rest == expected
    assert not set(map(ident, first["items"])) & set(map(ident, rest))


def fetch_all_from(c: httpx.Client, token: str) -> tuple[list[dict[str, Any]], int]:
    items: list[dict[str, Any]] = []
    pages = 0
    next_token: str | None = token
    while next_token:
        body = get(c, H11, NOW, max_results=20, page_token=next_token).json()
        pages += 1
        items.extend(body.get("items", []))
        next_token = body.get("nextPageToken")
    return items, pages


def test_clock_controls(sim: Simulator) -> None:
    assert sim.now() == NOW
    sim.advance_clock(90)
    assert sim.now() == NOW + timedelta(seconds=90)
    sim.set_clock(offset=-3600)
    assert abs((datetime.now(UTC) - timedelta(hours=1) - sim.now()).total_seconds()) < 5
    sim.set_clock()
    assert abs((datetime.now(UTC) - sim.now()).total_seconds()) < 5
    with pytest.raises(ValueError):
        sim.set_clock(datetime(2026, 11, 26, 12))  # naive: refused rather than guessed


def test_the_date_header_is_the_sim_clock(sim: Simulator, http: httpx.Client) -> None:
    """A real API's Date and its publication clock are one clock: clients compare the two."""
    def date(r: httpx.Response) -> datetime:
        return email.utils.parsedate_to_datetime(r.headers["date"])

    assert date(get(http)) == NOW  # frozen: exactly sim-now
    sim.advance_clock(90.7)
    assert date(get(http)) == NOW + timedelta(seconds=90)  # whole seconds, never ahead of sim-now
    sim.set_faults([{"kind": "503", "count": 1}])
    assert get(http).status_code == 503 and date(get(http)) == NOW + timedelta(seconds=90)  # errors too
    sim.set_clock(offset=-86400.0)  # running, a day behind the real clock
    ahead = (datetime.now(UTC) - timedelta(days=1) - date(get(http))).total_seconds()
    assert -1 <= ahead < 5


def test_okta_s_rate_limit_reset_is_on_the_clock_of_its_date(make_sim: SimFactory) -> None:
    from logpull_dagster.simulator.okta_system_log import LOGS_PATH

    sim = make_sim()  # frozen a day and more behind the real clock
    with client(sim) as c:
        c.headers["Authorization"] = f"SSWS {TOKEN}"
        ok = c.get(LOGS_PATH, params={"limit": 5})
        sim.set_faults([{"kind": "429", "retry_after": 7, "count": 1}])
        throttled = c.get(LOGS_PATH, params={"limit": 5})
    assert ok.status_code == 200 and throttled.status_code == 429
    now = email.utils.parsedate_to_datetime(ok.headers["date"]).timestamp()
    assert now == NOW.timestamp()
    assert 0 < int(ok.headers["x-rate-limit-reset"]) - now <= 61  # the end of the (real) minute, from sim-now
    assert int(throttled.headers["x-rate-limit-reset"]) - now == 7


# -- request log, admin endpoints, lifecycle --------------------------------------------------------


def test_request_log(sim: Simulator, http: httpx.Client) -> None:
    token = get(http, max_results=40).json()["nextPageToken"]
    sim.set_faults([{"kind": "drop"}])
    with pytest.raises(httpx.TransportError):
        get(http, max_results=40, page_token=token)
    get(http, max_results=40, page_token=token)
    http.get("/_sim/health")
    log = sim.requests()
    assert [e["n"] for e in log] == [1, 2, 3]
    assert [(e["status"], e["fault"], e["items"]) for e in log] == [
        (200, None, 40), (None, "drop", 0), (200, None, 40)
    ]
    assert log[0]["pageToken"] is None and log[1]["pageToken"] == log[2]["pageToken"] == token
    assert log[0]["maxResults"] == 40 and log[0]["startTime"] == iso(H10) and log[0]["endTime"] == iso(H11)
    assert log[0]["application"] == "login" and isinstance(log[0]["t"], float)
    assert http.get("/_sim/requests").json()["requests"] == log
    assert http.delete("/_sim/requests").status_code == 200
    assert sim.requests() == []


def test_admin_endpoints_over_http(sim: Simulator, http: httpx.Client) -> None:
    assert http.post("/_sim/faults", json={"rules": [{"kind": "504"}]}).status_code == 200
    assert get(http).status_code == 504
    assert http.get("/_sim/faults").json()["rules"][0]["fired"] == 1
    r = http.post("/_sim/clock", json={"now": "2026-11-26T13:00:00Z", "offset": None})
    assert r.json()["now"] == "2026-11-26T13:00:00+00:00" and sim.now() == NOW + timedelta(hours=1)
    http.post("/_sim/clock", json={"now": iso(NOW)})
    http.post("/_sim/page_latency", json={"seconds": 0.0})
    window = {"application": "login", "startTime": iso(H10), "endTime": iso(H11)}
    events = http.get("/_sim/events", params=window)
    assert events.json()["items"] == sim.ground_truth("login", H10, H11)
    ids = http.get("/_sim/events", params={**window, "ids_only": "1"}).json()["ids"]
    assert [tuple(i) for i in ids] == sim.ground_truth_ids("login", H10, H11)
    assert http.post("/_sim/clock", json={"now": "2026-11-26T13:00:00"}).status_code == 400  # naive
    assert http.get("/_sim/nope").status_code == 404
    assert [e["n"] for e in sim.requests()] == [1]  # admin calls are not logged


def test_keep_alive_and_stop_cuts_connections(make_sim: SimFactory) -> None:
    sim = make_sim()
    with client(sim) as c:
        r1, r2 = get(c), get(c)
        assert r1.http_version == "HTTP/1.1" and r1.headers.get("connection") != "close"
        local = [r.extensions["network_stream"].get_extra_info("client_addr") for r in (r1, r2)]
        assert local[0] == local[1]  # one connection, reused
        sim.stop()
        with pytest.raises(httpx.TransportError):
            get(c)
    with Simulator(events_per_hour=10, token=None) as ctx:
        url = ctx.url
        assert httpx.get(f"{url}/_sim/health", trust_env=False).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/_sim/health", trust_env=False)


def test_cli_subprocess_listens_answers_and_exits_on_sigterm() -> None:
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath}
    cmd = [
        sys.executable, "-m", "logpull_dagster.simulator", "--port", "0", "--no-auth",
        "--events-per-hour", "50", "--late-delay", "15m",
        "--faults", json.dumps([{"kind": "503", "retry_after": 1}]),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        lines: list[str] = []
        assert proc.stdout is not None
        stdout = proc.stdout
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=30)
        assert lines, "simulator did not print LISTENING"
        m = re.fullmatch(r"LISTENING (http://127\.0\.0\.1:\d+)\n", lines[0])
        assert m, lines
        with httpx.Client(base_url=m.group(1), trust_env=False, timeout=5) as c:
            assert c.get("/_sim/health").json() == {"ok": True}
            c.post("/_sim/clock", json={"now": iso(NOW)})
            first = get(c)
            assert first.status_code == 503 and first.headers["retry-after"] == "1"
            assert len(get(c).json()["items"]) == 25
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert out == "" and err == ""  # one line only; no access log without --verbose
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- TLS --------------------------------------------------------------------------------------------


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


def test_tls_serves_a_trusted_client_and_survives_bad_ones(
    make_sim: SimFactory, tls: TlsFiles, capfd: pytest.CaptureFixture[str]
) -> None:
    sim = make_sim(tls_cert=tls.cert, tls_key=tls.key)
    assert re.fullmatch(r"https://127\.0\.0\.1:\d+", sim.url)
    trusted = ssl.create_default_context(cafile=str(tls.ca))
    silent = socket.create_connection(("127.0.0.1", sim.port))  # never says hello: must not block others
    try:
        with client(sim) as default, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            get(default)  # verifies against certifi's CAs, which never signed this certificate
        plain_url = sim.url.replace("https:", "http:")  # plain HTTP on the TLS port
        with httpx.Client(base_url=plain_url, trust_env=False, timeout=5) as plain, pytest.raises(httpx.TransportError):
            get(plain)
        with client(sim, verify=trusted) as c:
            t0 = time.monotonic()
            r = get(c)
            assert r.status_code == 200 and len(r.json()["items"]) == 25
            assert time.monotonic() - t0 < 2
            assert get(c, page_token=r.json()["nextPageToken"]).status_code == 200  # keep-alive over TLS
    finally:
        silent.close()
    with client(sim, verify=trusted) as c:
        assert c.get("/_sim/health").json() == {"ok": True}  # still serving after all of that
    assert "Traceback" not in capfd.readouterr().err  # failed handshakes are dropped quietly


def test_tls_arguments_are_checked_up_front(tls: TlsFiles, tmp_path: Path) -> None:
    with pytest.raises(SimulatorError, match="together"):
        Simulator(tls_cert=tls.cert)
    with pytest.raises(SimulatorError, match="cannot load TLS certificate"):
        Simulator(tls_cert=tmp_path / "missing.pem", tls_key=tls.key)
    with pytest.raises(SimulatorError, match="cannot load TLS certificate"):
        Simulator(tls_cert=tls.ca, tls_key=tls.key)  # a key that does not match the certificate


def test_cli_refuses_bad_tls_arguments(tls: TlsFiles, capsys: pytest.CaptureFixture[str]) -> None:
    assert simulator_main(["--tls-cert", str(tls.cert)]) == 2
    assert "together" in capsys.readouterr().err
    assert simulator_main(["--tls-cert", str(tls.key), "--tls-key", str(tls.key)]) == 2
    assert "cannot load TLS certificate" in capsys.readouterr().err


def test_cli_subprocess_serves_https(tls: TlsFiles) -> None:
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "logpull_dagster.simulator", "--port", "0", "--no-auth",
           "--events-per-hour", "50", "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": pythonpath})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.fullmatch(r"LISTENING (https://127\.0\.0\.1:\d+)\n", line)
        assert m, line
        trusted = ssl.create_default_context(cafile=str(tls.ca))
        with httpx.Client(base_url=m.group(1), verify=trusted, trust_env=False, timeout=5) as c:
            c.post("/_sim/clock", json={"now": iso(NOW)})
            assert len(get(c).json()["items"]) == 25
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and err == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
