"""Error texts never carry event content (issue 24): a page that is not JSON we can keep is named by the
offset of the bad byte and a digest of the body, never by the bytes around it (those are event data: an
e-mail address here, a password typed into a user-name field elsewhere). The texts checked are the ones an
operator and every log see: the raised PullFailed, the checkpoint's last_error and the bad-page record
that ``logpull status`` and ``skip-page`` show."""

from __future__ import annotations

import pytest

from logpull_dagster import json_codec
from logpull_dagster.pull import PullFailed

from .conftest import ts
from .test_hostile_api import GOOGLE, OKTA, Case, pull


def _string_around(body: bytes, offset: int) -> tuple[bytes, bytes]:
    """The two halves of the JSON string value the bad byte at ``offset`` sits in."""
    return body[body.rindex(b'"', 0, offset) + 1:offset], body[offset + 1:body.index(b'"', offset)]


@pytest.mark.parametrize("case", [GOOGLE, OKTA], ids=lambda c: c.kind)
@pytest.mark.parametrize(("kind", "byte"), [("invalid_utf8", b"\xff"), ("control_byte", b"\x01")])
def test_a_bad_byte_inside_an_event_is_named_by_offset_and_digest_never_quoted(
        sim, store, landing, case: Case, kind: str, byte: bytes) -> None:  # type: ignore[no-untyped-def]
    sim.set_faults([{"kind": kind, "match": "token", "after": 1}])
    with pytest.raises(PullFailed) as e:
        pull(case, sim, store, landing, readers=None)  # page after page: the cursor names the page
    cp = store.get(case.name, "pull", ts(10))
    sim.set_faults([{"kind": kind}])
    body = case.raw_page(sim, cp.cursor)  # the same page, as the API served it
    offset = body.index(byte)
    before, after = _string_around(body, offset)  # the actor's e-mail address, cut in two by the bad byte
    assert len(before) >= 4 and len(after) >= 4
    bad = cp.stats["bad_page"]
    texts = {"PullFailed": str(e.value), "last_error": cp.last_error, "bad_page": bad["error"]}
    for where, text in texts.items():
        assert f"at byte {offset} " in text, where
        assert f"document of {len(body)} bytes, blake2b {json_codec.body_digest(body)}" in text, where
        for part in (before, after, before[-4:], after[:4]):
            for shown in (part.decode("utf-8", "replace"), repr(part)[2:-1]):
                assert shown not in text, (where, shown, text)
