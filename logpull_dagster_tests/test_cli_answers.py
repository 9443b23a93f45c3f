"""`logpull status` and `logpull reset` answer a wrong question with exit 2 and the reason, and never
invent the state they report on (no demo config, no empty checkpoint database)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import logpull_dagster.config.loading as config_module  # the demo warning lives in loading
from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.cli import main
from logpull_dagster.config import demo_config
from logpull_dagster.windows import UTC, rfc3339

from .cli import plugin_path
from .test_status import H, hkey, put, top_of_this_hour, write_config


@pytest.fixture
def project(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """A config (one hourly source `gws` from eight hours ago) with a checkpoint database; returns its start."""
    monkeypatch.setenv("LOGPULL_CONFIG", str(tmp_path / "logpull.yaml"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    first = top_of_this_hour() - 8 * H
    store = write_config(tmp_path, first)
    put(store, first)
    store.close()
    return first


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["reset", "--source", "gws_login",
                                                                         "--window", "2026-11-26-10:00"]])
def test_no_config_file_is_refused_instead_of_reading_the_demo_config(tmp_path, monkeypatch, capsys, command):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOGPULL_CONFIG", raising=False)
    monkeypatch.setattr(config_module, "_demo_warned", False)
    assert main(command) == 2
    captured = capsys.readouterr()
    assert "no config file: LOGPULL_CONFIG is unset and there is no ./logpull.yaml" in captured.err
    assert "set LOGPULL_CONFIG to your config file" in captured.err and captured.out == ""
    assert list(tmp_path.iterdir()) == []  # no ./.logpull, no checkpoints.db
    assert not config_module._demo_warned  # the demo config was not even loaded


@pytest.mark.parametrize(("start", "end"), [(0, 0), (3, 1)])
def test_status_refuses_an_empty_range(project, capsys, start, end):
    args = ["status", "--from", rfc3339(project + start * H), "--to", rfc3339(project + end * H)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--from {rfc3339(project + start * H)} is not before --to {rfc3339(project + end * H)}" in err


def test_status_with_a_good_range_still_answers(project, capsys):
    assert main(["status", "--from", rfc3339(project), "--to", rfc3339(project + H)]) == 0
    assert "gws: 1 of 1 due windows complete and delivered, 0 gaps" in capsys.readouterr().out


def test_reset_refuses_a_key_that_is_not_a_window_of_the_source(project, capsys):
    half = (project + 2 * H).replace(minute=30)
    cases = [
        (hkey(half), f"'{hkey(half)}' is not a window of gws: its hourly windows start on the hour; "
                     f"the window holding that time is {hkey(project + 2 * H)}"),
        (hkey(project - H), f"{hkey(project - H)} is before the first window of gws (start: {rfc3339(project)})"),
        (hkey(project + 8 * H), f"{hkey(project + 8 * H)} has not ended yet"),  # the current hour
        (hkey(project + 8 * H + 30 * 24 * H), "has not ended yet"),  # a month ahead
        ((project + H).strftime("%Y-%m-%d"), "is not a window key of gws; its hourly windows are written like"),
        ("yesterday", "is not a window key of gws"),
    ]
    for key, message in cases:
        assert main(["reset", "--source", "gws", "--window", key]) == 2, key
        captured = capsys.readouterr()
        assert message in captured.err, (key, captured.err)
        assert captured.out == ""
    # a real window still resets
    assert main(["reset", "--source", "gws", "--window", hkey(project)]) == 0
    assert f"--partition {hkey(project)}" in capsys.readouterr().out


def test_reset_of_a_daily_source_checks_its_windows_too(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LOGPULL_CONFIG", str(tmp_path / "logpull.yaml"))
    today = dt.datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    cfg = {"sources": [{"name": "gws", "type": "google_workspace", "application": "login", "cadence": "daily",
                        "access_token": {"env": "X"}, "start": rfc3339(today - 3 * 24 * H)}],
           "checkpoints": {"type": "sqlite", "path": "c.db"}}
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump(cfg))
    SqliteCheckpointStore(tmp_path / "c.db").close()
    day = lambda n: (today + n * 24 * H).strftime("%Y-%m-%d")  # noqa: E731
    for key, message in ((day(0), "has not ended yet"), (day(-4), "is before the first window of gws"),
                         (hkey(today - 24 * H), "its daily windows are written like")):
        assert main(["reset", "--source", "gws", "--window", key]) == 2
        assert message in capsys.readouterr().err
    assert main(["reset", "--source", "gws", "--window", day(-1)]) == 0
    assert "no checkpoint, nothing to reset" in capsys.readouterr().out


@pytest.mark.parametrize("command", [["status"], ["status", "--source", "gws"], ["reset", "--source", "gws"]])
def test_a_missing_checkpoint_database_is_reported_not_created(tmp_path, monkeypatch, capsys, command):
    monkeypatch.setenv("LOGPULL_CONFIG", str(tmp_path / "logpull.yaml"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    first = top_of_this_hour() - 8 * H
    cfg = {"sources": [{"name": "gws", "type": "google_workspace", "application": "login",
                        "access_token": {"env": "X"}, "start": rfc3339(first)}],
           "checkpoints": {"type": "sqlite", "path": "state/c.db"}}
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump(cfg))
    if command[0] == "reset":
        command = [*command, "--window", hkey(first)]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert (f"no checkpoint database at {tmp_path / 'state' / 'c.db'} (checkpoints.path in "
            f"{tmp_path / 'logpull.yaml'}): nothing has been pulled with this config yet, or the path is wrong") in err
    assert not (tmp_path / "state").exists()


def test_status_answers_on_the_state_of_a_config_written_like_make_demo(tmp_path, monkeypatch, capsys):
    """`make demo` writes demo_config() to a file and points LOGPULL_CONFIG at it: status reads that state."""
    state = tmp_path / "demo"
    state.mkdir()
    (state / "logpull.yaml").write_text(yaml.safe_dump(demo_config("http://127.0.0.1:1", state_dir=str(state))))
    monkeypatch.setenv("LOGPULL_CONFIG", str(state / "logpull.yaml"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    SqliteCheckpointStore(state / "checkpoints.db").close()  # as the demo's first run leaves it
    assert main(["status"]) == 1  # answers (its windows are missing here), not a usage error
    assert "gws_login: 0 of" in capsys.readouterr().out


def test_a_source_of_several_applications_is_answered_for_all_its_streams_and_refused_for_one_window(
        tmp_path, monkeypatch, capsys):
    cfg = demo_config("http://127.0.0.1:1", state_dir=str(tmp_path))
    [src] = cfg["sources"]
    del src["application"]
    src.update(name="gws", applications=["login", "admin"])
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("LOGPULL_CONFIG", str(tmp_path / "logpull.yaml"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    SqliteCheckpointStore(tmp_path / "checkpoints.db").close()
    assert main(["status", "--source", "gws"]) == 1  # answers: nothing pulled yet
    out = capsys.readouterr().out
    assert "gws_login: 0 of" in out and "gws_admin: 0 of" in out
    window = hkey(top_of_this_hour() - 3 * H)
    assert main(["reset", "--source", "gws", "--window", window]) == 2
    err = capsys.readouterr().err
    assert "reads several streams (gws_login, gws_admin)" in err and "--source gws_login" in err


# The keys a user misspells, at each level of the config: the message names the key meant.
NEAR_MISSES = [
    ("top level", lambda cfg: cfg.update(executer="in_process"), "executer: unknown key; did you mean 'executor'?"),
    ("source", lambda cfg: cfg["sources"][0].update(settle_lg="5m"),
     "sources[0] (gws).settle_lg: unknown key; did you mean 'settle_lag'?"),
    ("okta source", lambda cfg: cfg["sources"].append(
        {"name": "okta", "type": "okta", "base_url": "https://x.okta.com", "token": {"env": "X"},
         "start": cfg["sources"][0]["start"], "pagesize": 100}),
     "sources[1] (okta).pagesize: unknown key; did you mean 'page_size'?"),
    ("secret", lambda cfg: cfg["sources"][0].update(access_token={"evn": "X"}),
     "sources[0] (gws).access_token.evn: unknown key; did you mean 'env'?"),
    ("store", lambda cfg: cfg["checkpoints"].update(pth="c.db"), "checkpoints.pth: unknown key; did you mean 'path'?"),
    ("sink", lambda cfg: cfg.update(sinks={"hec": {"type": "splunk_hec", "url": "https://127.0.0.1:8088",
                                                    "token": {"env": "X"}, "batch_event": 10}}),
     "sinks.hec.batch_event: unknown key; did you mean 'batch_events'?"),
]


@pytest.mark.parametrize(("change", "line"), [(c, m) for _, c, m in NEAR_MISSES], ids=[n for n, _, _ in NEAR_MISSES])
def test_a_misspelt_key_is_one_line_of_the_config_errors_with_the_key_meant(project, tmp_path, capsys, change, line):
    cfg = yaml.safe_load((tmp_path / "logpull.yaml").read_text())
    change(cfg)
    cfg["retries"] = 3  # a key like no other: no suggestion, the reference instead
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"logpull status: config error: {tmp_path / 'logpull.yaml'} is invalid:\n")
    assert f"\n  - {line}\n" in err
    assert "\n  - retries: unknown key; check its spelling against the README's config reference\n" in err
    assert "Traceback" not in err


# The real `logpull` console script, once per exit code.

def run_logpull(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    env = {**os.environ, "LOGPULL_CONFIG": str(tmp_path / "logpull.yaml"), "PYTHONPATH": plugin_path(tmp_path)}
    env.pop("DAGSTER_HOME", None)
    env.pop("LOGPULL_DEBUG", None)
    return subprocess.run([str(Path(sys.executable).with_name("logpull")), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_exit_0_when_every_window_is_complete_and_1_for_gaps(project, tmp_path):
    done = run_logpull(tmp_path, "status", "--from", rfc3339(project), "--to", rfc3339(project + H))
    assert (done.returncode, done.stderr) == (0, "")
    assert "gws: 1 of 1 due windows complete and delivered, 0 gaps" in done.stdout
    gaps = run_logpull(tmp_path, "status")
    assert (gaps.returncode, gaps.stderr) == (1, "")
    assert "gws: 1 of 8 due windows complete and delivered, 1 gap" in gaps.stdout


@pytest.mark.slow
def test_exit_2_for_usage_config_and_an_unusable_store_in_one_line(project, tmp_path):
    usage = run_logpull(tmp_path, "status", "--form", "2026-03-03")
    assert usage.returncode == 2 and "logpull: error: unrecognized arguments: --form 2026-03-03" in usage.stderr
    config = yaml.safe_load((tmp_path / "logpull.yaml").read_text())
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump({**config, "checkpoint": config["checkpoints"]}))
    bad = run_logpull(tmp_path, "status")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines()[1:] == ["  - checkpoint: unknown key; did you mean 'checkpoints'?"]
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "c.db").write_bytes(b"not a database" * 100)
    store = run_logpull(tmp_path, "status")
    assert store.returncode == 2 and len(store.stderr.splitlines()) == 1
    assert store.stderr.startswith("logpull status: cannot use the checkpoint store: ")


@pytest.mark.slow
def test_exit_3_for_an_internal_error_in_one_line_and_its_traceback_with_debug(tmp_path):
    """A checkpoint store plug-in that fails in a way logpull does not know (here: its file is not JSON)."""
    (tmp_path / "cp.json").write_text("{not json")
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump({
        "sources": [{"name": "gws", "type": "google_workspace", "application": "login", "access_token": {"env": "X"},
                     "start": rfc3339(top_of_this_hour() - 2 * H)}],
        "checkpoints": {"type": "json_file", "path": "cp.json"}}))
    bug = run_logpull(tmp_path, "status")
    assert bug.returncode == 3 and bug.stdout == ""
    assert bug.stderr.startswith("logpull status: internal error (JSONError: ")
    assert bug.stderr.rstrip().endswith("please report it, with the traceback that --debug (or LOGPULL_DEBUG=1) "
                                        "prints")
    assert len(bug.stderr.splitlines()) == 1 and "Traceback" not in bug.stderr
    shown = run_logpull(tmp_path, "status", "--debug")
    assert shown.returncode == 3
    assert "with the traceback that follows\nTraceback (most recent call last):" in shown.stderr


@pytest.mark.slow
def test_dagster_loading_a_bad_config_ends_with_the_same_one_line_list(project, tmp_path):
    """Dagster prints its own traceback when the code location fails to load; the error it ends with is the
    config's list, one line per wrong key, with the key meant (Dagster's output itself is not ours to change)."""
    cfg = yaml.safe_load((tmp_path / "logpull.yaml").read_text())
    cfg["sources"][0]["settle_lg"] = "5m"
    (tmp_path / "logpull.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "LOGPULL_CONFIG": str(tmp_path / "logpull.yaml"), "PYTHONPATH": plugin_path(tmp_path),
           "DAGSTER_HOME": str(tmp_path)}
    res = subprocess.run([str(Path(sys.executable).with_name("dagster")), "asset", "materialize", "-m",
                          "logpull_dagster", "--select", "logs/gws", "--partition", hkey(project)],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert res.returncode != 0
    assert res.stderr.rstrip().splitlines()[-2:] == [
        f"logpull_dagster.config.loading.ConfigError: {tmp_path / 'logpull.yaml'} is invalid:",
        "  - sources[0] (gws).settle_lg: unknown key; did you mean 'settle_lag'?"]
