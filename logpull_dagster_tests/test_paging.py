"""The shared paginators (``sources/paging.py``): pure functions, tested directly."""

from __future__ import annotations

import pytest

from logpull_dagster.sources import BadPage
from logpull_dagster.sources.paging import at_path, body_cursor, body_next_url, next_link, next_link_or_none


@pytest.mark.parametrize("body", [
    {"entries": [], "response_metadata": {"next_cursor": ""}},
    {"entries": [], "response_metadata": {"next_cursor": None}},
    {"entries": [], "response_metadata": {}},  # Slack's last page (Grove's fixture 002)
    {"entries": []},
])
def test_an_empty_null_or_missing_body_cursor_ends_the_walk(body: dict) -> None:
    assert body_cursor(body, "response_metadata.next_cursor") is None


def test_a_body_cursor_is_taken_as_given_and_a_non_string_is_a_bad_page() -> None:
    assert body_cursor({"response_metadata": {"next_cursor": "dXNlcjpVMEc5V0ZYTlo="}},
                       "response_metadata.next_cursor") == "dXNlcjpVMEc5V0ZYTlo="
    for bad in (7, {"c": 1}, ["x"], True):
        with pytest.raises(BadPage, match="not a string"):
            body_cursor({"response_metadata": {"next_cursor": bad}}, "response_metadata.next_cursor")


def test_a_key_holding_dots_is_found_whole_and_paths_walk_objects_only() -> None:
    doc = {"@odata.nextLink": "https://graph.microsoft.com/v1.0/auditLogs/directoryaudits?$skiptoken=x",
           "a": {"b": [1]}, "value": []}
    assert body_next_url(doc, "@odata.nextLink") == doc["@odata.nextLink"]
    assert at_path(doc, "a.b") == [1] and at_path(doc, "a.b.c") is None and at_path(doc, "") is doc
    assert at_path([1], "a") is None
    assert body_next_url({"@odata.nextLink": ""}, "@odata.nextLink") is None
    with pytest.raises(BadPage, match="not a URL"):
        body_next_url({"@odata.nextLink": "javascript:alert(1)"}, "@odata.nextLink")


def test_link_headers_give_one_next_target_and_two_different_ones_are_a_bad_page() -> None:
    github = ('<https://api.github.com/enterprises/13827/audit-log?phrase=x&after=MS42%3D&before=>; rel="next", '
              '<https://api.github.com/enterprises/13827/audit-log?phrase=x&after=&before=>; rel="first"')
    assert next_link(github) == "https://api.github.com/enterprises/13827/audit-log?phrase=x&after=MS42%3D&before="
    assert next_link(['<https://a/1>; rel="self"']) is None
    two = '<https://a/1>; rel="next", <https://a/2>; rel="next"'
    with pytest.raises(BadPage, match="2 different"):
        next_link(two)
    assert next_link_or_none(two) is None
