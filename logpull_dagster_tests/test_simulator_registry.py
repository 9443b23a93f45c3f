"""The simulator hosts any ``EmulatedApi``: one small class, served by the shared server next to Google's
Reports API, gets the shared auth order, fault switch, request log, clock and ground truth unchanged.

This is the promise the next emulator (Okta's System Log) relies on: one module plus one registry line.
The API here is deliberately Okta-shaped (a JSON array, ``Link: <...>; rel="next"``, ``SSWS`` auth, its
own error body) so that nothing Google-specific can hide in the shared parts.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from itertools import islice
from typing import Any, ClassVar
from urllib.parse import urlencode

import httpx
import pytest

from logpull_dagster.simulator import EMULATED_APIS, ApiRequest, EmulatedApi, Reply, Simulator, SimulatorError
from logpull_dagster.simulator.api import json_bytes
from logpull_dagster.simulator.data import Bucket, Key, ceil_div, format_ms, parse_rfc3339_us
from logpull_dagster.simulator.faults import DamageTargets, damage_item, splice
from logpull_dagster.simulator.google_reports import GoogleReportsApi

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
H10 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
H11 = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)
TOKEN = "test-token"
_LIMIT = 10
_NEXT = re.compile(r'<([^>]+)>; rel="next"')
_DAMAGE = DamageTargets(id_key="uuid", name=("actor", "alternateId"), text=("actor", "alternateId"))


class TinyLogApi(EmulatedApi):
    """GET /tiny/v1/logs?since=&until=[&after=]: the half-open window newest first, 10 per page, the next
    page in a Link header, the cursor being ``<time ms>:<unique qualifier>`` of the last item sent."""

    name: ClassVar[str] = "tiny"
    auth_scheme: ClassVar[str] = "SSWS"
    pad_prefix: ClassVar[bytes] = b'{"errorCode":"pad","pad":"'

    def match(self, path: str) -> Mapping[str, str] | None:
        return {} if path == "/tiny/v1/logs" else None

    def has_cursor(self, request: ApiRequest) -> bool:
        return "after" in request.query

    def log_fields(self, request: ApiRequest) -> dict[str, Any]:
        return {"after": request.query.get("after")}

    def error(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> Reply:
        return Reply(status, json_bytes({"errorCode": f"E{status}", "errorSummary": message}), headers or [])

    def page(self, request: ApiRequest, *, damage: str | None = None, repeat_cursor: bool = False) -> Reply:
        q = request.query
        since, until = parse_rfc3339_us(q["since"]), parse_rfc3339_us(q["until"])
        after: Key | None = None
        if "after" in q:
            t, _, uq = q["after"].partition(":")
            after = (int(t), int(uq))
        now_ms = self.ctx.now_us() // 1000
        scan = self.ctx.store.scan(self.name, ceil_div(since, 1000), ceil_div(until, 1000) - 1,
                                   before=after, visible_at=now_ms)
        refs = list(islice(scan, _LIMIT + 1))
        items = [self.item(self.name, b, i) for b, i in refs[:_LIMIT]]
        spliced = damage_item(items, damage, _DAMAGE) if damage and items else None
        cursor = q.get("after") if repeat_cursor else None
        if cursor is None and len(refs) > _LIMIT:
            b, i = refs[_LIMIT - 1]
            cursor = f"{b.times[i]}:{b.uqs[i]}"
        raw = json_bytes(items)
        return Reply(200, raw if spliced is None else splice(raw, spliced), self._link(request, cursor),
                     items=len(items))

    def stuck_page(self, request: ApiRequest) -> Reply:
        return Reply(200, b"[]", self._link(request, request.query.get("after", "0:0")))

    def item(self, stream: str, bucket: Bucket, i: int) -> dict[str, Any]:
        actor = self.ctx.store.actor(bucket.attrs[i])
        return {"uuid": str(bucket.uqs[i]), "published": format_ms(bucket.times[i]),
                "actor": {"alternateId": actor.email}}

    def event_id(self, stream: str, bucket: Bucket, i: int) -> tuple[str, ...]:
        return (str(bucket.uqs[i]),)

    @staticmethod
    def _link(request: ApiRequest, cursor: str | None) -> list[tuple[str, str]]:
        if cursor is None:
            return []
        query = urlencode({"since": request.query["since"], "until": request.query["until"], "after": cursor})
        return [("Link", f'<{request.path}?{query}>; rel="next"')]


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


@pytest.fixture
def sim() -> Iterator[Simulator]:
    sim = Simulator(events_per_hour=100, token=TOKEN, apis=[*EMULATED_APIS, TinyLogApi])
    sim.set_clock(NOW)
    with sim:
        yield sim


@pytest.fixture
def tiny(sim: Simulator) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"SSWS {TOKEN}"}
    with httpx.Client(base_url=sim.url, headers=headers, timeout=5, trust_env=False) as c:
        yield c


def first_page(c: httpx.Client) -> httpx.Response:
    return c.get("/tiny/v1/logs", params={"since": iso(H10), "until": iso(H11)})


def read_all(c: httpx.Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    r = first_page(c)
    while True:
        assert r.status_code == 200, r.text
        items += r.json()
        m = _NEXT.search(r.headers.get("link", ""))
        if m is None:
            return items
        r = c.get(m.group(1))


def test_the_registry_lists_google_and_a_simulator_hosts_what_it_is_given() -> None:
    assert EMULATED_APIS[0] is GoogleReportsApi  # the first renders ground truth when no api= is given
    assert [type(a) for a in Simulator().apis] == list(EMULATED_APIS)
    hosted = Simulator(apis=[GoogleReportsApi, TinyLogApi]).apis
    assert [type(a) for a in hosted] == [GoogleReportsApi, TinyLogApi]
    with pytest.raises(SimulatorError, match="unique"):
        Simulator(apis=[TinyLogApi, TinyLogApi])


def test_an_extra_api_is_served_beside_google_with_its_own_shapes(sim: Simulator, tiny: httpx.Client) -> None:
    items = read_all(tiny)
    assert len(items) > 3 * _LIMIT
    assert items == sim.ground_truth("tiny", H10, H11, api="tiny")
    ids = sim.ground_truth_ids("tiny", H10, H11, api="tiny")
    assert [(i["uuid"],) for i in items] == ids
    over_http = tiny.get("/_sim/events", params={"application": "tiny", "startTime": H10.isoformat(),
                                                 "endTime": H11.isoformat(), "api": "tiny"})
    assert over_http.json()["items"] == items
    with pytest.raises(SimulatorError, match="no emulated API named 'nope'"):
        sim.ground_truth("tiny", H10, H11, api="nope")

    # Its auth scheme, its error body; Google's API, on the same server, is untouched.
    r = tiny.get("/tiny/v1/logs", params={"since": iso(H10), "until": iso(H11)},
                 headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 401 and r.json() == {"errorCode": "E401", "errorSummary": "Missing or invalid credentials."}
    g = tiny.get("/admin/reports/v1/activity/users/all/applications/login",
                 params={"startTime": iso(H10), "endTime": iso(H11)}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert g.status_code == 200 and g.json()["kind"] == "admin#reports#activities"
    assert tiny.post("/tiny/v1/logs").json() == {"errorCode": "E405", "errorSummary": "Method POST not allowed"}


def test_the_shared_fault_switch_applies_to_the_extra_api(sim: Simulator, tiny: httpx.Client) -> None:
    sim.set_faults([{"kind": "503", "retry_after": 2}])
    r = first_page(tiny)
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert r.json() == {"errorCode": "E503", "errorSummary": "Service Unavailable"}
    assert first_page(tiny).status_code == 200
    assert sim.faults()[0]["fired"] == 1
    log = sim.requests()
    assert [(e["after"], e["status"], e["fault"]) for e in log] == [(None, 503, "503"), (None, 200, None)]

    # One rule list for all APIs: a rule counts requests to either, each answers in its own shape.
    sim.set_faults([{"kind": "429", "count": 1}])
    g = tiny.get("/admin/reports/v1/activity/users/all/applications/login",
                 params={"startTime": iso(H10), "endTime": iso(H11)}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert g.status_code == 429 and g.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert first_page(tiny).status_code == 200

    # "token" rules and the cursor faults use the API's own notion of a cursor.
    sim.set_faults([{"kind": "reject_token", "count": None}, {"kind": "stuck_token", "match": "first"}])
    stuck = first_page(tiny)
    assert stuck.json() == [] and 'after=0%3A0>; rel="next"' in stuck.headers["link"]
    r = first_page(tiny)
    assert r.status_code == 200 and len(r.json()) == _LIMIT
    m = _NEXT.search(r.headers["link"])
    assert m is not None
    bad = tiny.get(m.group(1))
    assert bad.status_code == 400 and bad.json() == {"errorCode": "E400", "errorSummary": "Invalid cursor"}

    # Bodies that are the same for every API use the API's envelope.
    sim.set_faults([{"kind": "big_body", "size": 100}])
    big = first_page(tiny)
    assert big.content == b'{"errorCode":"pad","pad":"' + b"A" * 72 + b'"}'

    # The item-damaging kinds strike the fields the API names.
    sim.set_faults([{"kind": "no_id"}, {"kind": "invalid_utf8"}])
    assert [("uuid" in i) for i in first_page(tiny).json()] == [True] * 5 + [False] + [True] * 4
    assert b"\xff" in first_page(tiny).content
