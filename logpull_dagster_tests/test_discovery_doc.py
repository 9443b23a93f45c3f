"""The Google source and the simulator, checked against Google's own description of the Reports API: the
discovery document google-api-python-client ships (``admin.reports_v1.json``). Every parameter the source
sends and every response field it reads exists there with that name and type, and the simulator's pages
use only fields the document defines."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import googleapiclient
import pytest

from logpull_dagster.simulator import Simulator
from logpull_dagster.sources.google_auth import REPORTS_SCOPE
from logpull_dagster.sources.google_workspace import GoogleWorkspaceSource
from logpull_dagster.windows import Window

from .conftest import TOKEN, hour

DOC = json.loads((Path(googleapiclient.__file__).parent / "discovery_cache/documents/admin.reports_v1.json")
                 .read_text())
LIST = DOC["resources"]["activities"]["methods"]["list"]
W10 = Window(hour(10), hour(11))


def _schema(node: dict[str, Any]) -> dict[str, Any]:
    return DOC["schemas"][node["$ref"]] if "$ref" in node else node


def conforms(value: Any, node: dict[str, Any], where: str = "$") -> list[str]:
    """Where ``value`` steps outside the discovery schema ``node``: unknown fields and wrong types."""
    node = _schema(node)
    kind = node.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not an object"]
        props = node.get("properties", {})
        out = []
        for k, v in value.items():
            if k not in props:
                out.append(f"{where}.{k}: not a field of the discovery document")
            else:
                out += conforms(v, props[k], f"{where}.{k}")
        return out
    if kind == "array":
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, not an array"]
        return [e for i, v in enumerate(value) for e in conforms(v, node["items"], f"{where}[{i}]")]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where}: {type(value).__name__}, not a string"]
        if node.get("format") == "int64" and not re.fullmatch(r"-?[0-9]+", value):
            return [f"{where}: {value!r} is not an int64 string"]
        return []
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{where}: not a boolean"]
    if kind == "integer":
        return [] if isinstance(value, int) and not isinstance(value, bool) else [f"{where}: not an integer"]
    return [f"{where}: schema type {kind!r} not handled by this test"]


def test_the_request_the_source_sends_is_the_documented_method(sim):
    src = GoogleWorkspaceSource(base_url=sim.url, application="login", access_token=TOKEN, page_size=50,
                                customer_id="my_customer")
    try:
        page = src.fetch_page(W10, None)
        src.fetch_page(W10, page.next_cursor)
    finally:
        src.close()
    assert LIST["httpMethod"] == "GET" and REPORTS_SCOPE in LIST["scopes"]
    template = "/" + LIST["path"].replace("{userKey}", "all").replace("{applicationName}", "login")
    assert src.path == template and DOC["rootUrl"] == "https://admin.googleapis.com/"
    params = LIST["parameters"]
    app = params["applicationName"]
    assert app["location"] == "path" and re.fullmatch(app["pattern"], "login")
    for sent in (r["query"] for r in _sent(sim)):
        for name, value in sent.items():
            spec = params[name]  # a KeyError is a parameter Google does not define
            assert spec["location"] == "query", name
            if spec["type"] == "integer":
                assert value.isdigit() and int(value) <= 1000  # maxResults: int32, at most 1000 (its description)
            else:
                assert spec["type"] == "string", name
            if "pattern" in spec:
                assert re.fullmatch(spec["pattern"], value), (name, value)
    sent_names = set().union(*(r["query"] for r in _sent(sim)))
    assert {"startTime", "endTime", "maxResults", "customerId", "pageToken"} <= sent_names


def _sent(sim: Simulator) -> list[dict[str, Any]]:
    # The simulator's request log has the parsed columns; the raw query is rebuilt from them.
    out = []
    for r in sim.requests():
        q = {k: str(r[k]) for k in ("startTime", "endTime", "maxResults", "pageToken", "customerId")
             if r.get(k) is not None}
        out.append({"query": q})
    return out


def test_every_field_the_source_reads_is_documented_with_that_type():
    activities = DOC["schemas"][LIST["response"]["$ref"]]["properties"]
    assert activities["items"]["type"] == "array" and activities["items"]["items"]["$ref"] == "Activity"
    assert activities["nextPageToken"]["type"] == "string"
    activity = DOC["schemas"]["Activity"]["properties"]
    ident = activity["id"]["properties"]
    assert ident["time"] == {**ident["time"], "type": "string", "format": "date-time"}
    assert ident["uniqueQualifier"]["type"] == "string" and ident["uniqueQualifier"]["format"] == "int64"
    assert ident["applicationName"]["type"] == ident["customerId"]["type"] == "string"
    events = activity["events"]
    assert events["type"] == "array" and events["items"]["properties"]["name"]["type"] == "string"


@pytest.mark.parametrize("application", ["login", "admin", "drive"])
def test_the_simulators_pages_use_only_documented_fields(sim, application):
    src = GoogleWorkspaceSource(base_url=sim.url, application=application, access_token=TOKEN, page_size=100)
    bodies, cursor = [], None
    try:
        while True:
            page = src.fetch_page(W10, cursor)
            bodies.append(json.loads(page.body))
            cursor = page.next_cursor
            if cursor is None:
                break
    finally:
        src.close()
    assert sum(len(b.get("items", [])) for b in bodies) > 0
    problems = [p for b in bodies for p in conforms(b, LIST["response"])]
    assert problems == []


def test_the_checker_catches_a_field_google_does_not_define():
    body = {"kind": "admin#reports#activities", "items": [{"id": {"time": "x", "uniqueQualifier": "1"},
                                                            "publishedAt": "2026-11-01T00:00:00Z"}]}
    assert conforms(body, LIST["response"]) == ["$.items[0].publishedAt: not a field of the discovery document"]
    assert conforms({"items": [{"id": {"uniqueQualifier": "abc"}}]}, LIST["response"]) == [
        "$.items[0].id.uniqueQualifier: 'abc' is not an int64 string"]
