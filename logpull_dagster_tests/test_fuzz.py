"""Fuzzing the page parser and the envelope writer (hypothesis): random JSON shapes, any unicode (lone
surrogates included), huge numbers, deep nesting, corrupted bytes.

The property: a page either yields every valid event exactly (the landed line and the SIEM line, read
back, hold the API's item unchanged, and each is valid UTF-8 JSON) or fails with BadPage and a clear
message; nothing else escapes, nothing loops, no line we write is invalid.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logpull_dagster import json_codec
from logpull_dagster.deliver import envelope
from logpull_dagster.sources import BadPage
from logpull_dagster.sources.google_workspace import GoogleWorkspaceSource
from logpull_dagster.windows import UTC, Window, rfc3339_ms

W = Window(dt.datetime(2026, 11, 26, 10, tzinfo=UTC), dt.datetime(2026, 11, 26, 11, tzinfo=UTC))
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Any code point, surrogates included: what a JSON \\uXXXX escape can carry.
any_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=30)
# The edges of orjson's exact integers: -2**63 and 2**64 - 1; one step past them it would return a float.
EDGES = [-(2**64), -(2**63) - 1, -(2**63), 2**63, 2**64 - 1, 2**64, 10**19, -(10**19)]
numbers = st.one_of(st.integers(min_value=-(2**200), max_value=2**200), st.sampled_from(EDGES),
                    st.floats(allow_nan=False, allow_infinity=False), st.booleans(), st.none())
json_values = st.recursive(st.one_of(numbers, any_text),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(any_text, inner, max_size=4)),
                           max_leaves=25)
times = st.datetimes(min_value=dt.datetime(2026, 11, 26, 9, 59), max_value=dt.datetime(2026, 11, 26, 11, 1),
                     timezones=st.just(UTC))


@st.composite
def items(draw: st.DrawFn) -> dict[str, Any]:
    t = draw(times).replace(microsecond=draw(st.integers(0, 999)) * 1000)
    item: dict[str, Any] = draw(st.dictionaries(any_text.filter(lambda k: k != "id"), json_values, max_size=5))
    item["id"] = {"time": rfc3339_ms(t), "uniqueQualifier": draw(st.one_of(any_text.filter(bool), st.integers())),
                  "applicationName": "login", "customerId": draw(any_text)}
    return item


def encode(doc: Any, ascii_only: bool) -> bytes:
    """As an API might write it: \\u escapes everywhere, or raw UTF-8 where it can be."""
    if ascii_only:
        return json.dumps(doc, ensure_ascii=True).encode()
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")  # raw surrogates: invalid UTF-8


@pytest.fixture(scope="module")
def source() -> GoogleWorkspaceSource:
    return GoogleWorkspaceSource(base_url="http://127.0.0.1:9", application="login", access_token="x" * 10)


def check_lines_valid(*lines: bytes) -> None:
    for line in lines:
        assert b"\n" not in line
        json.loads(line.decode("utf-8"))  # valid UTF-8, valid JSON
        json_codec.loads(line)  # and our own reader takes it back


def land_and_deliver(source: GoogleWorkspaceSource, body: bytes) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """What the pull loop and delivery do with one body: (landed record, SIEM record) per event in W."""
    items_, _ = source.parse_page(body, {})
    out = []
    for ev in source.to_events(items_):
        if not W.contains(ev.time):
            continue
        line = json_codec.dumps({"id": ev.id, "time": ev.time_text or rfc3339_ms(ev.time), "pulled_at": "now",
                                 "event": ev.raw})
        siem = envelope("s", W, line)
        check_lines_valid(line, siem)
        out.append((json_codec.loads(line), json_codec.loads(siem)))
    return out


@pytest.mark.slow  # about 15 s of generated APIs
@SETTINGS
@given(st.lists(items(), max_size=6), st.one_of(st.none(), any_text.filter(bool)), st.booleans())
def test_every_valid_event_is_landed_and_delivered_exactly(source, page_items, token, ascii_only):
    doc: dict[str, Any] = {"kind": "admin#reports#activities", "items": page_items}
    if token is not None:
        doc["nextPageToken"] = token
    body = encode(doc, ascii_only)
    try:
        got = land_and_deliver(source, body)
    except BadPage as e:
        # Only raw UTF-8 of a lone surrogate is refused (it is invalid UTF-8), and says so with where.
        assert not ascii_only and "invalid UTF-8" in str(e) and " at byte " in str(e), e
        return
    expected = [i for i in page_items if W.contains(_time(i))]
    assert [landed["event"] for landed, _ in got] == expected
    assert [siem["event"] for _, siem in got] == expected
    _, next_token = source.parse_page(body, {})
    assert next_token == token


@SETTINGS
@given(st.binary(max_size=300), st.integers(0, 400), st.binary(min_size=1, max_size=3))
def test_corrupted_or_random_bytes_fail_clearly_or_parse(source, noise, at, insert):
    page = json.dumps({"items": [{"id": {"time": "2026-11-26T10:00:00.000Z", "uniqueQualifier": "1"}, "a": "b"}]})
    for body in (noise, page.encode()[:at] + insert + page.encode()[at:]):
        try:
            land_and_deliver(source, body)
        except BadPage as e:
            assert str(e)  # a message, never a crash


@pytest.mark.parametrize("depth", [10, 500, 1000, 5000, 100_000])
def test_deep_nesting_parses_or_fails_clearly(source, depth):
    inner = "[" * depth + "]" * depth
    body = ('{"items": [{"id": {"time": "2026-11-26T10:00:00.000Z", "uniqueQualifier": "1"}, "deep": ' + inner
            + ', "s": "\\ud800"}]}').encode()
    try:
        got = land_and_deliver(source, body)
    except BadPage as e:
        assert "nested too deeply" in str(e) or "depth" in str(e)
    except json_codec.JSONError as e:  # parsed, but too deep to write back: the page fails clearly
        assert "nested too deeply" in str(e)
    else:
        assert len(got) == 1


def _time(item: dict[str, Any]) -> dt.datetime:
    from logpull_dagster.windows import parse_time

    return parse_time(item["id"]["time"])


@pytest.mark.parametrize("events", [1, "login", {"name": "x"}, None, True])
def test_an_item_whose_events_is_not_a_list_lands_without_names(source, events):
    """Found by the generated test above (``{"events": 1}``): ``to_events`` must never fail on an item that
    passed validation, whatever its ``events`` holds."""
    item = {"id": {"time": "2026-11-26T10:00:00.000Z", "uniqueQualifier": "7", "applicationName": "login",
                   "customerId": "C1"}, "events": events}
    items, _ = source.parse_page(json_codec.dumps({"items": [item]}))
    [event] = source.to_events(items)
    assert event.names == () and event.raw["events"] == events
