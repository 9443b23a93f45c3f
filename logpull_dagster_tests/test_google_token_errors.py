"""Google's token endpoint as the cause, named as such, over real HTTP against the simulator: a token
endpoint that never answers (or answers 503) is reported as the token endpoint, not as the Reports API;
a refusal of the assertion's iat/exp says how far this host's clock is from the endpoint's ``Date``."""

from __future__ import annotations

import re

import pytest

from logpull_dagster.simulator import Simulator
from logpull_dagster.sources import CredentialsRefused, SourceUnavailable
from logpull_dagster.sources.google_auth import service_account_auth
from logpull_dagster.sources.google_workspace import GoogleWorkspaceSource

from .test_google_auth import ADMIN, ENV, W10, google
from .test_google_auth import fresh_process as fresh_process  # the fixtures, which the tests take by name
from .test_google_auth import key_file as key_file
from .test_google_auth import sa_key as sa_key


def source(sim: Simulator, key_file, subject: str = ADMIN, **kw) -> GoogleWorkspaceSource:  # type: ignore[no-untyped-def]
    auth = service_account_auth(str(key_file), subject, env=ENV, token_uri=f"{sim.url}/token")
    kw = {"timeout": 0.5, "http_attempts": 2, "backoff_initial": 0.01, "backoff_max": 0.05, **kw}
    return GoogleWorkspaceSource(base_url=sim.url, application="login", auth=auth, page_size=50,
                                 credential=auth.credential, **kw)


def fails(src: GoogleWorkspaceSource, kind: type[Exception]) -> str:
    try:
        with pytest.raises(kind) as failed:
            src.fetch_page(W10, None)
    finally:
        src.close()
    return str(failed.value)


def asked(sim: Simulator) -> set[str | None]:
    return {r.get("endpoint") or r.get("application") for r in sim.requests()}


def test_a_token_endpoint_that_never_answers_is_named_not_the_reports_api(sim, key_file):
    sim.set_faults([{"kind": "slow", "delay": 2, "count": None}])  # every request hangs past the 0.5 s timeout
    text = fails(source(sim, key_file), SourceUnavailable)
    assert text == (f"the token endpoint {sim.url}/token (a token for the Reports API login): still failing after "
                    f"2 attempts (last: ReadTimeout)")
    assert asked(sim) == {"token"}  # the Reports API was never asked


def test_a_token_endpoint_that_answers_503_is_named(sim, key_file):
    sim.set_faults([{"kind": "503", "count": None}])
    text = fails(source(sim, key_file), SourceUnavailable)
    assert text.startswith(f"the token endpoint {sim.url}/token (a token for the Reports API login): still failing")
    assert "token endpoint HTTP 503" in text


def test_the_reports_api_timing_out_is_still_the_reports_api(sim, key_file):
    sim.set_faults([{"kind": "slow", "delay": 2, "count": None, "after": 1}])  # the token request is answered
    text = fails(source(sim, key_file), SourceUnavailable)
    assert text == "Reports API login: still failing after 2 attempts (last: ReadTimeout)"


@pytest.mark.parametrize(("offset", "said"), [(-600, "ahead of"), (4000, "behind")])
def test_a_refused_iat_or_exp_says_how_far_this_hosts_clock_is_from_the_token_endpoints(sim, key_file,
                                                                                          offset, said):
    # Google's clock (its Date, and the one it judges iat/exp by) is `offset` s from this host's: a host
    # 10 minutes fast sends an iat Google sees as in the future; one over an hour slow, an exp in the past.
    sim.set_clock(offset=offset)
    google(sim).token_clock = lambda: sim.now().timestamp()
    text = fails(source(sim, key_file), CredentialsRefused)
    assert "invalid_grant" in text and "Check your iat and exp values" in text
    found = re.search(rf"this host's clock is (\d+) s {said} the token endpoint's; sync it \(NTP\)", text)
    assert found is not None, text
    assert abs(int(found.group(1)) - abs(offset)) <= 2


def test_a_refusal_not_about_times_says_nothing_of_the_clock(sim, key_file):
    sim.set_clock(offset=-600)  # the clock is off, but the refusal is about the subject
    text = fails(source(sim, key_file, subject="nobody@example.com"), CredentialsRefused)
    assert "Invalid email or User ID" in text and "clock" not in text
