"""Paginators shared by every source: where the next page's cursor is, and when a walk has ended.

Three shapes cover the APIs this project reads (``../shared/reference/apis-and-emulators.md`` A6):

* **Link header** (Okta, GitHub): the next page is the ``rel="next"`` target of RFC 8288 ``Link``
  headers, followed byte for byte (its cursor is the API's, its path may differ from the one asked:
  GitHub switches to numeric ids), on ``base_url``'s origin only (``RetryingClient`` refuses others).
  No next link ends the walk.
* **Body cursor** (Slack ``response_metadata.next_cursor``): a value at a dotted path of the JSON body,
  sent back as a query parameter. "An empty, null, or non-existent" value ends the walk.
* **Next URL in the body** (Graph ``@odata.nextLink``): a whole URL at a key of the body, followed as
  given (same origin rule as links). Empty, null or missing ends the walk.

Pure functions, no I/O and no Dagster import. What each API adds (an empty page that still links on,
a cursor that must not repeat, an expired cursor) lives in that API's module; what is shared is here.
A malformed value (a cursor that is not a string, two different next links) is :class:`BadPage`: the
page is not trusted and nothing of it lands.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from logpull_dagster.sources import BadPage

# ---- Link header (RFC 8288) ---------------------------------------------------------------------------

# One link-value: ``<target>`` then ``; param`` pairs, up to the next comma outside ``<>`` and quotes.
# Spacing around ``;``, ``=`` and ``,`` varies between servers and proxies.
_LINK = re.compile(r'<(?P<target>[^>]*)>(?P<params>(?:\s*;\s*[^;,"=]+(?:=\s*(?:"[^"]*"|[^;,]*))?)*)')
_PARAM = re.compile(r';\s*(?P<name>[^=;,\s]+)\s*(?:=\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^;,]*)))?')


def links(values: str | Iterable[str]) -> list[tuple[str, tuple[str, ...]]]:
    """Every ``(target, rel values)`` in one or several ``Link`` header values (several links may
    share one header, comma-separated, or come in several headers); rel values lower-cased."""
    out: list[tuple[str, tuple[str, ...]]] = []
    for value in [values] if isinstance(values, str) else values:
        for m in _LINK.finditer(value):
            rels: tuple[str, ...] = ()
            for p in _PARAM.finditer(m.group("params")):
                if p.group("name").lower() == "rel":
                    raw = p.group("quoted") if p.group("quoted") is not None else (p.group("bare") or "")
                    rels = tuple(r.lower() for r in raw.split())
            out.append((m.group("target").strip(), rels))
    return out


def next_link(values: str | Iterable[str]) -> str | None:
    """The ``rel="next"`` target of ``Link`` header values, or None. Two different next links are
    not a page we can trust (which one is the rest of the window?)."""
    found = {target for target, rels in links(values) if "next" in rels}
    if len(found) > 1:
        raise BadPage(f"the response has {len(found)} different rel=\"next\" links")
    target = next(iter(found), None)
    return target or None


def next_link_or_none(values: str) -> str | None:
    """The next link of a page whose body cannot be read (for ``BadPage.next_cursor``), or None when the
    header is no help either."""
    try:
        return next_link(values)
    except BadPage:
        return None


# ---- values in the body -------------------------------------------------------------------------------

_MISSING = object()


def at_path(doc: Any, path: str) -> Any:
    """The value at a dotted ``path`` of a JSON document (``""``: the document itself), or None when a key
    is missing or a value on the way is not an object. A key holding dots (``@odata.nextLink``) is
    found when the whole path is a key of the document."""
    if path == "":
        return doc
    if isinstance(doc, Mapping) and path in doc:
        return doc[path]
    node = doc
    for part in path.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part, _MISSING)
        if node is _MISSING:
            return None
    return node


def body_cursor(doc: Any, path: str) -> str | None:
    """The next cursor at ``path`` of the body: None when it is empty, null or missing (the walk has
    ended); BadPage when it is there but not a string (a number, an object: not a cursor we can send)."""
    value = at_path(doc, path)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadPage(f"the next cursor at {path!r} is a JSON {type(value).__name__}, not a string")
    return value


def body_next_url(doc: Any, path: str) -> str | None:
    """The next page's URL at ``path`` of the body (Graph's ``@odata.nextLink``): None when empty, null or
    missing; BadPage when it is not an http(s) URL or a path."""
    value = body_cursor(doc, path)
    if value is not None and not (value.startswith(("https://", "http://", "/"))):
        raise BadPage(f"the next link at {path!r} is not a URL: {value[:80]!r}")
    return value


__all__ = ["at_path", "body_cursor", "body_next_url", "links", "next_link", "next_link_or_none"]
