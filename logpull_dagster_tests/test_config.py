"""The config file is the public contract: the documented keys work, wrong ones are named."""

from pathlib import Path

import pytest

from logpull_dagster.config import ConfigError, load_config

EXAMPLE = """\
sources:
  - name: gws_login                  # assets logs/gws_login and siem/gws_login
    type: google_workspace
    application: login               # any Reports API applicationName
    base_url: https://admin.googleapis.com   # overridable (simulator, proxies)
    access_token: {env: GWS_ACCESS_TOKEN}    # static bearer token
    cadence: hourly                  # hourly | daily
    start: "2026-11-01T00:00:00Z"    # first window
    settle_lag: 15m                  # a window is due once end + settle_lag has passed
    page_size: 1000
    time_budget: 10m                 # reading budget of one attempt
    lease_ttl: 60s                   # how long a silent holder keeps a window
checkpoints: {type: sqlite, path: .logpull/checkpoints.db}
landing: {type: local, path: .logpull/landing}
siem: {type: file, path: .logpull/siem}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "logpull.yaml"
    p.write_text(text)
    return p


def test_the_documented_example_loads(tmp_path):
    cfg = load_config(write(tmp_path, EXAMPLE))
    src = cfg.source("gws_login")
    assert src.settle_lag.total_seconds() == 900 and src.lease_ttl.total_seconds() == 60
    assert src.access_token.env == "GWS_ACCESS_TOKEN" and src.page_size == 1000
    # relative paths are relative to the config file, not to wherever dagster was started
    assert cfg.resolve(cfg.checkpoints.path) == tmp_path / ".logpull" / "checkpoints.db"


@pytest.mark.parametrize(("change", "message"), [
    (("cadence: hourly", "cadence: weekly"),
     r"sources\[0\] \(gws_login\)\.cadence: 'weekly' is not allowed; .*hourly.*daily"),
    (("page_size: 1000", "page_size: 5000"), r"page_size: .*less than or equal to 1000"),
    (("settle_lag: 15m", "settle_lag: soon"), r"settle_lag: 'soon' is not a duration; write it like 15m"),
    (("lease_ttl: 60s", "lease_tll: 60s"), r"sources\[0\] \(gws_login\)\.lease_tll: unknown key"),
    (("access_token: {env: GWS_ACCESS_TOKEN}", "access_token: ya29.secret"),
     r"access_token: secrets are never written in the config; .*\{env: GWS_ACCESS_TOKEN\}"),
    (('start: "2026-11-01T00:00:00Z"', 'start: "2026-11-01T00:30:00Z"'), r"must be a whole UTC hour"),
    (('start: "2026-11-01T00:00:00Z"', 'start: "yesterday"'), r"start: must be an RFC 3339 time"),
    (("type: google_workspace", "type: okta"), r"type: 'okta' is not allowed"),
    (("{type: sqlite,", "{type: dynamo,"), r"checkpoints.type: 'dynamo' is not allowed; .*'sqlite'"),
    (("base_url: https://admin.googleapis.com", "base_url: admin.googleapis.com"), r"base_url: must be an http"),
])
def test_a_wrong_key_or_value_is_named_with_the_fix(tmp_path, change, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, EXAMPLE.replace(*change)))


def test_the_secret_value_never_appears_in_an_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, EXAMPLE.replace("{env: GWS_ACCESS_TOKEN}", "ya29.very-secret")))
    assert "very-secret" not in str(e.value)


def test_duplicate_names_and_missing_sources_are_refused(tmp_path):
    dup = EXAMPLE.replace("checkpoints:", "  - {name: gws_login, type: google_workspace, application: admin, "
                          "access_token: {env: X}, start: '2026-11-01T00:00:00Z'}\ncheckpoints:")
    with pytest.raises(ConfigError, match="two sources are named 'gws_login'"):
        load_config(write(tmp_path, dup))
    with pytest.raises(ConfigError, match="sources: required key is missing"):
        load_config(write(tmp_path, "checkpoints: {type: sqlite}\n"))


def test_config_file_selection(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOGPULL_CONFIG", raising=False)
    assert load_config().sources[0].name == "gws_login"  # neither: the demo config
    monkeypatch.setenv("LOGPULL_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match=r"LOGPULL_CONFIG names .*nope\.yaml.*not a file"):
        load_config()
    write(tmp_path, EXAMPLE.replace("gws_login", "from_file"))
    monkeypatch.delenv("LOGPULL_CONFIG")
    assert load_config().sources[0].name == "from_file"  # ./logpull.yaml
