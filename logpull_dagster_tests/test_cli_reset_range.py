"""`logpull reset` over a period (`--from/--to`) and with `--dry-run`; `logpull skip-page` records the
operator's user name. Through the real `logpull` console script where the user meets it."""

from __future__ import annotations

import datetime as dt
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.cli import main
from logpull_dagster.windows import rfc3339

from .test_status import H, hkey, put, top_of_this_hour, write_config

WORKTREE = str(Path(__file__).resolve().parents[1])


def logpull(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real console script, on this checkout's code, with only the environment given."""
    base = {"PATH": "/usr/bin:/bin", "LOGPULL_CONFIG": str(tmp_path / "logpull.yaml"), "PYTHONPATH": WORKTREE}
    return subprocess.run([str(Path(sys.executable).with_name("logpull")), *args], env={**base, **(env or {})},
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)


@pytest.fixture
def six(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """Six hourly windows read once, cursor set as a run left it; window 2 held by a live run."""
    monkeypatch.setenv("LOGPULL_CONFIG", str(tmp_path / "logpull.yaml"))
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    first = top_of_this_hour() - 7 * H
    store = write_config(tmp_path, first)
    for i in range(6):
        if i == 2:
            put(store, first + i * H, status="running", cursor="tok", lease_owner="run-live",
                lease_expires=time.time() + 300)
        else:
            put(store, first + i * H, status="failed", cursor="tok", last_error="PullFailed: HTTP 503")
    store.close()
    return first


def cursors(tmp_path: Path, first: dt.datetime) -> list[str | None]:
    store = SqliteCheckpointStore(tmp_path / "c.db")
    try:
        return [store.get("gws", "pull", rfc3339(first + i * H)).cursor for i in range(6)]  # type: ignore[union-attr]
    finally:
        store.close()


@pytest.mark.slow  # the real console script
def test_reset_dry_run_of_a_period_lists_its_windows_and_changes_nothing(six, tmp_path):
    res = logpull(tmp_path, "reset", "--source", "gws", "--from", rfc3339(six + H), "--to", rfc3339(six + 4 * H),
                  "--dry-run")
    assert (res.returncode, res.stderr) == (0, "")
    lines = res.stdout.splitlines()
    for line, i in zip(lines[:3], (1, 2, 3), strict=True):
        assert line.startswith(f"gws {hkey(six + i * H)}: would reset (is ")
    assert "refused now: run-live holds it" in lines[1] and "refused" not in lines[0] + lines[2]
    assert "dry run: nothing was changed" in lines[3] and "these 3 windows" in lines[3]
    assert cursors(tmp_path, six) == ["tok"] * 6


def test_reset_of_a_period_resets_each_window_in_it_but_one_a_run_holds(six, tmp_path, capsys):
    assert main(["reset", "--source", "gws", "--from", rfc3339(six + H), "--to", rfc3339(six + 4 * H)]) == 1
    captured = capsys.readouterr()
    assert "refused" in captured.err and "run-live" in captured.err
    assert f"gws {hkey(six + H)}: reset (was failed" in captured.out
    assert f"--partition-range {hkey(six + H)}...{hkey(six + 3 * H)}" in captured.out
    assert cursors(tmp_path, six) == ["tok", None, "tok", None, "tok", "tok"]
    # a period not on window boundaries takes every window it overlaps; a period with no checkpoint, none
    assert main(["reset", "--source", "gws", "--from", rfc3339(six + 4.5 * H), "--to", rfc3339(six + 5.5 * H)]) == 0
    assert cursors(tmp_path, six) == ["tok", None, "tok", None, None, None]
    assert main(["reset", "--source", "gws", "--from", rfc3339(six - 5 * H), "--to", rfc3339(six - 2 * H)]) == 0
    assert "nothing to reset" in capsys.readouterr().out


def test_reset_needs_one_window_or_a_whole_period(six, capsys):
    cases = [
        ([], "name the window (--window KEY) or the period (--from TIME --to TIME) to reset"),
        (["--from", rfc3339(six)], "give both --from and --to (the period [from, to) to reset); only --from"),
        (["--to", rfc3339(six)], "only --to was given"),
        (["--window", hkey(six), "--from", rfc3339(six)], "give either --window or --from/--to, not both"),
    ]
    for extra, message in cases:
        assert main(["reset", "--source", "gws", *extra]) == 2, extra
        assert message in capsys.readouterr().err, extra
    assert main(["reset", "--source", "gws", "--window", hkey(six), "--dry-run"]) == 0
    assert "would reset" in capsys.readouterr().out


@pytest.mark.slow  # the real console script
def test_skip_page_records_the_operators_user_name_not_a_uid(tmp_path):
    first = top_of_this_hour() - 3 * H
    store = write_config(tmp_path, first)
    bad = {"page": 2, "sha256": "0" * 64, "bytes": 10, "error": "invalid UTF-8 at byte 3", "next_cursor": "t2"}
    put(store, first, status="failed", cursor="t1", pages_read=1, stats={"bad_page": bad})
    store.close()
    # As in a container: no USER, LOGNAME or SUDO_USER (logpull() passes only PATH, the config and
    # PYTHONPATH); the name comes from the password database.
    res = logpull(tmp_path, "skip-page", "--source", "gws", "--window", hkey(first), "--reason", "INC-7")
    assert res.returncode == 0, res.stderr
    store = SqliteCheckpointStore(tmp_path / "c.db")
    cp = store.get("gws", "pull", rfc3339(first))
    store.close()
    assert cp is not None
    [entry] = cp.stats["skipped_pages"]
    assert entry["by"] == pwd.getpwuid(os.getuid()).pw_name and not entry["by"].startswith("uid ")
    assert f"skipped by {entry['by']}" in (cp.last_error or "")
