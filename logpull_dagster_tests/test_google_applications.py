"""``applications:`` expands one Google Workspace source into one stream per application, each with
Google's documented lag as its defaults; pure config logic (no Dagster)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from logpull_dagster.config import ConfigError, parse_config
from logpull_dagster.sources.google_workspace import APPLICATION_LAG, application_lag

from .conftest import ts

SA = {"file": {"env": "GWS_SA_FILE"}, "subject": "admin@example.com"}


def gws(**kw: Any) -> dict[str, Any]:
    return {"name": "gws", "type": "google_workspace", "service_account": SA, "start": ts(-24), **kw}


def streams(*sources: dict[str, Any]) -> dict[str, Any]:
    return {s.name: s for s in parse_config({"sources": list(sources)}).sources}


H, M = dt.timedelta(hours=1), dt.timedelta(minutes=1)


def test_applications_become_streams_named_after_the_source_with_their_documented_lag():
    got = streams(gws(applications=["login", "admin", "drive", "token", "saml", "groups", "calendar"]))
    assert list(got) == [f"gws_{a}" for a in ("login", "admin", "drive", "token", "saml", "groups", "calendar")]
    for name, s in got.items():
        app = name.removeprefix("gws_")
        assert (s.application, s.applications, s.group) == (app, None, "gws")
        assert (s.settle_lag, s.lookback) == (application_lag(app).settle_lag, application_lag(app).lookback)
    assert (got["gws_admin"].settle_lag, got["gws_admin"].lookback) == (10 * M, 2 * H)  # near real time
    assert got["gws_calendar"].settle_lag == H and got["gws_saml"].settle_lag == H
    # One account: one pool, hence one rate budget, for all the streams of the source.
    assert {s.effective_pool for s in got.values()} == {"google_workspace:gws"}
    assert {s.effective_rate_account for s in got.values()} == {"google_workspace:gws"}


def test_every_documented_lag_names_where_it_comes_from():
    assert APPLICATION_LAG["admin"].source.startswith("Google, \"Data retention and lag times\"")
    assert "answer/7007375" in APPLICATION_LAG["saml"].source
    assert "not in the rows" in application_lag("login").source  # not silently invented
    for lag in [*APPLICATION_LAG.values(), application_lag("no_such_app")]:
        assert dt.timedelta(0) < lag.settle_lag <= lag.lookback


def test_source_settings_apply_to_every_stream_and_overrides_win():
    got = streams(gws(applications=["login", "admin", "drive"], settle_lag="30m", rate_limit="600/min",
                      overrides={"drive": {"settle_lag": "2h", "lookback": "1d"}, "admin": {"max_delay": "5h"}}))
    assert got["gws_login"].settle_lag == got["gws_admin"].settle_lag == 30 * M
    assert got["gws_login"].lookback == application_lag("login").lookback  # not set on the source: documented
    assert (got["gws_drive"].settle_lag, got["gws_drive"].lookback) == (2 * H, 24 * H)
    assert got["gws_admin"].max_delay == 5 * H and got["gws_login"].max_delay is None
    assert {s.rate_limit for s in got.values()} == {"600/min"}


def test_one_application_keeps_todays_name_and_defaults():
    [s] = streams(gws(application="login")).values()
    assert (s.name, s.group, s.application) == ("gws", "gws", "login")
    assert (s.settle_lag, s.lookback) == (15 * M, dt.timedelta(0))


def test_a_stream_survives_the_json_round_trip_of_its_resource():
    from logpull_dagster.sources.google_workspace import GoogleWorkspaceConfig

    s = streams(gws(applications=["login", "drive"], customer_id="my_customer"))["gws_drive"]
    again = GoogleWorkspaceConfig.model_validate_json(s.model_dump_json())
    assert again.model_dump() == s.model_dump() and (again.application, again.customer_id) == ("drive", "my_customer")


@pytest.mark.parametrize(("source", "message"), [
    (gws(applications=["login"], overrides={"drive": {"settle_lag": "2h"}}),
     r"sources\[0\] \(gws\): overrides\.drive: 'drive' is not one of applications: \[login\].*add drive"),
    (gws(applications=["login", "drive"], overrides={"drive": {"settle_lag": "soon"}}),
     r"sources\[0\] \(gws\)\.overrides\.drive\.settle_lag: 'soon' is not a duration"),
    (gws(applications=["login", "drive"], overrides={"drive": {"setle_lag": "2h"}}),
     r"sources\[0\] \(gws\)\.overrides\.drive\.setle_lag: unknown key"),
    (gws(application="login", overrides={"login": {"settle_lag": "2h"}}),
     r"overrides\.login: 'login' is not one of application: \(one application\)"),
    (gws(application="login", applications=["admin"]), r"sources\[0\] \(gws\): .*one of the two"),
    (gws(), r"sources\[0\] \(gws\): name the application to read"),
    (gws(applications=["login", "login"]), r"applications: login listed twice"),
    (gws(applications=["Login"]), r"sources\[0\] \(gws\)\.applications\[0\]: String should match pattern"),
    (gws(application="login", access_token={"env": "T"}), r"give exactly one credential"),
    ({**gws(application="login"), "service_account": None}, r"give exactly one credential"),
    (gws(application="login", service_account={**SA, "file": "/etc/key.json"}),
     r"service_account\.file: secrets are never written in the config; .*\{env: GWS_SA_FILE\}"),
    (gws(application="login", service_account={"subject": "admin@example.com"}),
     r"service_account: .*give the service account one way: file: \{env: GWS_SA_FILE\}.* or email: "),
    (gws(application="login", service_account={**SA, "subject": "admin"}),
     r"service_account\.subject: must be an email address"),
    (gws(application="login", customer_id="acme"), r"customer_id: String should match pattern"),
])
def test_a_wrong_key_is_named_with_the_fix(source, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"sources": [source]})


def test_a_stream_name_made_twice_is_refused_naming_both_sources():
    other = {**gws(application="admin"), "name": "gws_login"}
    with pytest.raises(ConfigError, match=r"sources\[0\] \(gws, application login\) and sources\[1\] \(gws_login\) "
                                          r"both make a stream named 'gws_login'.*rename one"):
        parse_config({"sources": [gws(applications=["login", "admin"]), other]})
