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
    (("type: google_workspace", "type: no_such_type"), r"type: 'no_such_type' is not allowed"),
    (("{type: sqlite,", "{type: dynamo,"), r"checkpoints.type: 'dynamo' is not allowed; .*'sqlite'"),
    (("base_url: https://admin.googleapis.com", "base_url: admin.googleapis.com"), r"base_url: must be an http"),
    (("lease_ttl: 60s", "lease_ttl: 60s\n    schedule: '61 * * * *'"),
     r"sources\[0\] \(gws_login\)\.schedule: '61 \* \* \* \*' is not a cron string"),
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


# ---- the demo config is loud ----------------------------------------------------------------------

import datetime as dt  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402

import logpull_dagster.config.loading as config_module  # noqa: E402  (the demo warning lives in loading)
from logpull_dagster.config import DemoConfigWarning  # noqa: E402

DAGSTER = str(Path(sys.executable).parent / "dagster")


@pytest.fixture
def no_config(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """An empty working folder, no LOGPULL_CONFIG, and a process that has not warned yet."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOGPULL_CONFIG", raising=False)
    monkeypatch.setattr(config_module, "_demo_warned", False)
    return tmp_path


def test_the_demo_config_warns_once_and_says_where_it_reads(no_config):
    with pytest.warns(DemoConfigWarning, match=r"logpull: no config file \(LOGPULL_CONFIG unset, no \./logpull\.yaml"
                      r".*built-in DEMO config, reading the bundled simulator at http://127\.0\.0\.1:8765.*"
                      r"set LOGPULL_CONFIG to your config file"):
        cfg = load_config()
    assert cfg.is_demo and cfg.sources[0].is_demo
    assert cfg.sources[0].demo_notice.startswith("**DEMO config**")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second load in the same process stays quiet
        load_config()
    assert list(no_config.iterdir()) == []  # loading created nothing (no ./.logpull)


def test_a_config_file_is_not_the_demo(tmp_path, monkeypatch):
    monkeypatch.setattr(config_module, "_demo_warned", False)
    with warnings.catch_warnings():
        # the demo warning only: EXAMPLE's fixed start will lie before Google's 180-day retention one day,
        # which warns (StartBeforeRetentionWarning, test_config_bounds.py)
        warnings.simplefilter("error", DemoConfigWarning)
        cfg = load_config(write(tmp_path, EXAMPLE))
    assert not cfg.is_demo and not cfg.sources[0].is_demo and cfg.sources[0].demo_notice == ""


def test_the_assets_of_the_demo_config_say_so_in_their_description(no_config, tmp_path, monkeypatch):
    from logpull_dagster.definitions import build_definitions  # may load (and warn about) the demo config

    monkeypatch.setattr(config_module, "_demo_warned", False)
    with pytest.warns(DemoConfigWarning):
        demo = build_definitions(load_config())
    for key in (["logs", "gws_login"], ["siem", "gws_login"]):
        spec = demo.resolve_assets_def(key).specs_by_key[dg.AssetKey(key)]
        assert spec.description.startswith("**DEMO config**: no config file was found"), spec.description
        assert "127.0.0.1:8765" in spec.description and "LOGPULL_CONFIG" in spec.description
    (tmp_path / "real").mkdir()
    real = build_definitions(load_config(write(tmp_path / "real", EXAMPLE)))
    spec = real.resolve_assets_def(["logs", "gws_login"]).specs_by_key[dg.AssetKey(["logs", "gws_login"])]
    assert "DEMO" not in spec.description


@pytest.mark.slow  # the real `dagster` CLI
def test_the_dagster_cli_on_the_demo_config_warns_on_stderr(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LOGPULL_CONFIG"}
    res = subprocess.run([DAGSTER, "asset", "list", "-m", "logpull_dagster"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count("using the built-in DEMO config") == 1, res.stderr
    assert "logs/gws_login" in res.stdout
    write(tmp_path, EXAMPLE)  # ./logpull.yaml: quiet
    res = subprocess.run([DAGSTER, "asset", "list", "-m", "logpull_dagster"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "DEMO" not in res.stderr, res.stderr


# ---- refused at load time, naming the key -------------------------------------------------------

import dagster as dg  # noqa: E402

SRC = r"sources\[0\] \(gws_login\)"


def with_key(text: str) -> str:
    """EXAMPLE with ``text`` (one or more ``key: value`` lines) set in its source, replacing those keys."""
    keys = {line.split(":")[0] for line in text.splitlines()}
    kept = [x for x in EXAMPLE.splitlines(keepends=True) if x.strip().split(":")[0] not in keys]
    lines = "".join(f"    {line}\n" for line in text.splitlines())
    return "".join(kept).replace("checkpoints:", lines + "checkpoints:", 1)


def hour_from_now(hours: int) -> str:
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return (now + dt.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_start_more_than_one_window_in_the_future_is_refused(tmp_path):
    start = 'start: "2026-11-01T00:00:00Z"'
    # the next hour starts within one window of now: allowed (the config is written just before it)
    load_config(write(tmp_path, EXAMPLE.replace(start, f'start: "{hour_from_now(1)}"')))
    with pytest.raises(ConfigError, match=SRC + r"\.start: .* is more than one window \(an hour\) after now"):
        load_config(write(tmp_path, EXAMPLE.replace(start, f'start: "{hour_from_now(2)}"')))
    today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    daily = EXAMPLE.replace("cadence: hourly", "cadence: daily")
    load_config(write(tmp_path, daily.replace(start, f'start: "{(today + dt.timedelta(days=1)).isoformat()}"')))
    with pytest.raises(ConfigError, match=SRC + r"\.start: .* is more than one window \(a day\) after now"):
        load_config(write(tmp_path, daily.replace(start, f'start: "{(today + dt.timedelta(days=2)).isoformat()}"')))


def test_a_key_written_twice_is_refused_with_its_line(tmp_path):
    twice = EXAMPLE.replace("    settle_lag: 15m", "    settle_lag: 15m\n    settle_lag: 2h")
    with pytest.raises(ConfigError, match=r"logpull\.yaml: line 10: the key 'settle_lag' is written twice in one "
                                          r"mapping \(first on line 9\)"):
        load_config(write(tmp_path, twice))
    with pytest.raises(ConfigError, match=r"line 16: the key 'checkpoints' is written twice .*first on line 13"):
        load_config(write(tmp_path, EXAMPLE + "checkpoints: {type: sqlite, path: other.db}\n"))
    with pytest.raises(ConfigError, match=r"line 13: the key 'path' is written twice"):
        load_config(write(tmp_path, EXAMPLE.replace("{type: sqlite, path: .logpull/checkpoints.db}",
                                                    "{type: sqlite, path: a.db, path: b.db}")))
    # a merge key (<<) may be overridden, as YAML intends
    merged = EXAMPLE.replace("sources:\n", "defaults: &d {settle_lag: 1h}\nsources:\n", 1)
    merged = merged.replace("  - name: gws_login", "  - <<: *d\n    name: gws_login")
    with pytest.raises(ConfigError, match=r"defaults: unknown key"):  # parsed, then refused for the unknown key
        load_config(write(tmp_path, merged))


@pytest.mark.parametrize("key", ["http_timeout", "time_budget", "lease_ttl", "http_backoff_max", "lookback_every",
                                 "freshness_interval", "delivery_interval", "max_delay"])
def test_a_duration_that_must_be_positive_refuses_zero(tmp_path, key):
    with pytest.raises(ConfigError, match=SRC + rf"\.{key}: must be longer than 0s"):
        load_config(write(tmp_path, with_key(f"{key}: 0s")))
    assert getattr(load_config(write(tmp_path, with_key(f"{key}: 1s"))).sources[0], key) == dt.timedelta(seconds=1)


def test_durations_that_may_be_zero_and_negative_ones(tmp_path):
    cfg = load_config(write(tmp_path, with_key("settle_lag: 0s\nretry_delay: 0s\nlookback: 0s\nlease_wait: 0s")))
    src = cfg.sources[0]
    assert src.settle_lag == src.retry_delay == src.lookback == src.effective_lease_wait == dt.timedelta(0)
    for value in ("-5m", "-5"):
        with pytest.raises(ConfigError, match=SRC + r"\.settle_lag: .*cannot be negative"):
            load_config(write(tmp_path, EXAMPLE.replace("settle_lag: 15m", f"settle_lag: {value}")))


@pytest.mark.parametrize(("value", "message"), [
    ("99999999999999d", r"'99999999999999d' is too long for a duration"),
    ("1" + "0" * 400 + "s", r"is too long for a duration"),
    ("1.0e+300", r"too long for a duration"),
    (".inf", r"is not a duration"),
    (".nan", r"is not a duration"),
    ("3651d", r"longer than 3650d, the longest duration allowed"),
])
def test_a_duration_too_long_is_named_not_an_overflow(tmp_path, value, message):
    with pytest.raises(ConfigError, match=SRC + r"\.settle_lag: .*" + message):
        load_config(write(tmp_path, EXAMPLE.replace("settle_lag: 15m", f"settle_lag: {value}")))


def test_a_path_whose_folder_cannot_be_created_is_refused_and_nothing_is_created(tmp_path, monkeypatch):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    for key, line in (("checkpoints.path", "checkpoints: {type: sqlite, path: blocker/state/c.db}"),
                      ("landing.path", "landing: {type: local, path: blocker/landing}"),
                      ("siem.path", "siem: {type: file, path: blocker/siem}")):
        section = key.split(".")[0]
        text = "\n".join(line if x.startswith(section + ":") else x for x in EXAMPLE.splitlines()) + "\n"
        with pytest.raises(ConfigError, match=rf"\n  - {key}: .*blocker/\S+ cannot be created: .*blocker is a file"):
            load_config(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"checkpoints\.path: .* is a folder; name the database file"):
        load_config(write(tmp_path, EXAMPLE.replace("path: .logpull/checkpoints.db", "path: .")))

    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # os.access as a user who may not write to `locked` (the tests may run as root, who may write anywhere)
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    with pytest.raises(ConfigError, match=r"checkpoints\.path: .*locked/a/b/c\.db cannot be created: this user "
                                          r"cannot write to .*locked$"):
        load_config(write(tmp_path, EXAMPLE.replace("path: .logpull/checkpoints.db", "path: locked/a/b/c.db")))
    monkeypatch.undo()
    cfg = load_config(write(tmp_path, EXAMPLE.replace("path: .logpull/checkpoints.db", "path: locked/a/b/c.db")))
    assert cfg.resolve(cfg.checkpoints.path) == locked / "a" / "b" / "c.db"
    assert list(locked.iterdir()) == [] and not (tmp_path / ".logpull").exists()  # loading created nothing


def test_a_read_only_folder_is_refused(tmp_path):
    import subprocess

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    mounted = False
    if os.geteuid() == 0:  # permission bits do not stop root; a read-only file system does (CI runs as root)
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(locked)],
                             capture_output=True, text=True)
        assert res.returncode == 0, f"this test needs `mount` as root for a read-only folder: {res.stderr}"
        mounted = True
    try:
        with pytest.raises(ConfigError, match=r"landing\.path: .* this user cannot write to"):
            load_config(write(tmp_path, EXAMPLE.replace("path: .logpull/landing", "path: locked/landing")))
    finally:
        if mounted:
            subprocess.run(["umount", str(locked)], check=True)


# ---- max_page_bytes, ca_file, tls_verify ----------------------------------------------------------

def test_max_page_bytes_defaults_to_64_mib_within_1_kib_and_1_gib(tmp_path):
    assert load_config(write(tmp_path, EXAMPLE)).sources[0].max_page_bytes == 64 * 2**20
    assert load_config(write(tmp_path, with_key(f"max_page_bytes: {2**30}"))).sources[0].max_page_bytes == 2**30
    with pytest.raises(ConfigError, match=SRC + r"\.max_page_bytes: .*greater than or equal to 1024"):
        load_config(write(tmp_path, with_key("max_page_bytes: 1023")))
    with pytest.raises(ConfigError, match=SRC + r"\.max_page_bytes: .*less than or equal to 1073741824"):
        load_config(write(tmp_path, with_key(f"max_page_bytes: {2**30 + 1}")))


def test_ca_file_is_resolved_against_the_config_folder_and_checked(tmp_path, monkeypatch):
    import trustme

    conf = tmp_path / "conf"
    conf.mkdir()
    trustme.CA().cert_pem.write_to_path(str(conf / "ca.pem"))
    monkeypatch.chdir(tmp_path)  # not the config's folder
    cfg = load_config(write(conf, with_key("ca_file: ca.pem")))
    src = cfg.sources[0]
    assert src.ca_file == "ca.pem" and src.ca_path == conf / "ca.pem" and src.ca_path.is_absolute()
    assert src.tls_verify is True and load_config(write(conf, EXAMPLE)).sources[0].ca_path is None

    (conf / "not-pem.txt").write_text("hello\n")
    for value, message in (("missing.pem", r"missing\.pem does not exist"), (".", r"is not a file"),
                           ("not-pem.txt", r"not-pem\.txt holds no PEM CA certificate")):
        with pytest.raises(ConfigError, match=SRC + r"\.ca_file: .*" + message):
            load_config(write(conf, with_key(f"ca_file: {value}")))


def test_tls_verify_false_is_allowed_alone_but_not_with_ca_file(tmp_path):
    import trustme

    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    assert load_config(write(tmp_path, with_key("tls_verify: false"))).sources[0].tls_verify is False
    with pytest.raises(ConfigError, match=SRC + r"\.tls_verify: false turns certificate checks off, so ca_file"):
        load_config(write(tmp_path, with_key("ca_file: ca.pem\ntls_verify: false")))
    with pytest.raises(ConfigError, match=SRC + r"\.tls_verify: "):
        load_config(write(tmp_path, with_key("tls_verify: maybe")))


def test_plain_http_to_any_host_stays_allowed(tmp_path):
    for url in ("http://127.0.0.1:8765", "http://10.1.2.3:8080", "http://reports-proxy.internal"):
        text = EXAMPLE.replace("https://admin.googleapis.com", url)
        assert load_config(write(tmp_path, text)).sources[0].base_url == url


# ---- rate_limit / rate_account: one request budget per API account (rate.py) --------------------

def second_source(**keys: str) -> str:
    """EXAMPLE with a second Google Workspace source, ``gws_admin``, carrying ``keys``."""
    extra = "".join(f"\n    {k}: {v}" for k, v in keys.items())
    return EXAMPLE.replace("checkpoints:", "  - name: gws_admin\n    type: google_workspace\n    application: admin\n"
                           "    access_token: {env: GWS_ACCESS_TOKEN}\n    start: '2026-11-01T00:00:00Z'"
                           f"{extra}\ncheckpoints:")


def test_rate_limit_is_read_in_every_unit_and_its_account_defaults_to_the_pool(tmp_path):
    for text, count, per in (("600/min", 600, 60), ("600/m", 600, 60), ("10/s", 10, 1), ("10 / sec", 10, 1),
                             ("5000/hour", 5000, 3600), ("1/h", 1, 3600)):
        src = load_config(write(tmp_path, with_key(f"rate_limit: {text}"))).sources[0]
        assert (src.rate.count, src.rate.per) == (count, per)
        assert src.effective_rate_account == "google_workspace:gws_login" == src.effective_pool
    src = load_config(write(tmp_path, with_key("rate_limit: 600/m\npool: okta"))).sources[0]
    assert src.rate_limit == "600/min" and src.rate.interval == 0.1 and src.effective_rate_account == "okta"
    src = load_config(write(tmp_path, with_key("rate_limit: 600/min\nrate_account: project-42"))).sources[0]
    assert src.effective_rate_account == "project-42" and src.effective_pool == "google_workspace:gws_login"
    src = load_config(write(tmp_path, EXAMPLE)).sources[0]
    assert src.rate_limit is None and src.rate is None  # off by default


@pytest.mark.parametrize(("value", "message"), [
    ("600 per minute", r"'600 per minute' is not a rate; write it as requests per sec, min or hour, "
                       r"e\.g\. rate_limit: 600/min"),
    ("600", r"'600' is not a rate; .*rate_limit: 600/min"),
    ("600/day", r"'600/day' is not a rate; .*units: sec, s, min, m, hour, h"),
    ("1.5/s", r"'1.5/s' is not a rate"),
    ("0/min", r"'0/min' allows no request at all"),
    ("-5/min", r"'-5/min' is not a rate"),
    ("999999999/s", r"'999999999/s' is more than 100,000 requests a second"),
])
def test_a_wrong_rate_limit_is_named_with_its_form(tmp_path, value, message):
    with pytest.raises(ConfigError, match=SRC + r"\.rate_limit: " + message):
        load_config(write(tmp_path, with_key(f"rate_limit: '{value}'")))


def test_rate_account_without_a_rate_limit_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=SRC + r": rate_account: names the budget of rate_limit, which is not set"):
        load_config(write(tmp_path, with_key("rate_account: project-42")))


def test_sources_sharing_an_account_share_one_rate_limit(tmp_path):
    same = second_source(rate_limit="10/s", rate_account="project-42")
    cfg = load_config(write(tmp_path, same.replace("lease_ttl: 60s", "lease_ttl: 60s\n    rate_limit: 600/min\n"
                                                                     "    rate_account: project-42")))
    assert {s.effective_rate_account for s in cfg.sources} == {"project-42"}  # 600/min is 10/s: one budget
    for first, second, shown in (("300/min", "600/min", r"\(300/min and 600/min\)"),
                                 (None, "600/min", r"\(none and 600/min\)")):
        text = second_source(rate_limit=second, pool="okta")
        mine = "lease_ttl: 60s\n    pool: okta" + (f"\n    rate_limit: {first}" if first else "")
        with pytest.raises(ConfigError, match=r"sources 'gws_login' and 'gws_admin' draw from the rate budget of "
                                              r"account 'okta' \(rate_account, default: the pool\) but state "
                                              r"different rate_limit " + shown + r"; give them the same rate_limit, "
                                              r"or different rate_account"):
            load_config(write(tmp_path, text.replace("lease_ttl: 60s", mine)))
    # without a shared pool or rate_account, each source is its own account
    assert len(load_config(write(tmp_path, second_source(rate_limit="300/min"))).sources) == 2


def test_a_source_type_that_keeps_no_rate_budget_refuses_rate_limit(tmp_path):
    from logpull_dagster import plugins
    from logpull_dagster_tests.example_plugins import counter_api

    for p in counter_api.PLUGINS:
        plugins.register(p)
    try:
        text = ("sources:\n  - {name: counter, type: counter_api, token: {env: COUNTER_TOKEN}, "
                "start: '2026-11-01T00:00:00Z', rate_limit: 60/min}\n")
        with pytest.raises(ConfigError, match=r"sources\[0\] \(counter\)\.rate_limit: type 'counter_api' does not "
                                              r"send its requests through the shared HTTP client"):
            load_config(write(tmp_path, text))
    finally:
        plugins.unregister("source", "counter_api")
