"""Secrets (issue 10, cases 7-9): a token never reaches a log, the event log, landing, checkpoints or the
SIEM, whatever the API echoes and however the secret was mounted."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import dagster as dg
import pytest

from logpull_dagster.cli import main as logpull

from .cli import materialize_cmd, run, setup_project, siem_ids, start
from .conftest import TOKEN, key, ts
from .test_assets import make_defs, materialize
from .test_kill import wait_for

WRONG = "LEAKCANARY-wrong-credential-7d1e93"


def every_log(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(str(e) for e in instance.all_logs(result.run_id))


def test_a_secret_mounted_from_a_file_with_a_trailing_newline_works(tmp_path, sim, instance, monkeypatch):
    monkeypatch.setenv("LOGPULL_TEST_TOKEN", TOKEN + "\n")  # what `kubectl create secret --from-file` gives
    res = materialize(make_defs(tmp_path, sim.url), "logs/gws", key(10), instance)
    assert res.success
    assert TOKEN not in every_log(instance, res)


def test_a_secret_with_an_illegal_character_fails_once_naming_the_variable_never_the_value(
        tmp_path, sim, instance, monkeypatch, capfd):
    bad = TOKEN[:8] + "\x01" + TOKEN[8:]
    monkeypatch.setenv("LOGPULL_TEST_TOKEN", bad)
    res = materialize(make_defs(tmp_path, sim.url), "logs/gws", key(10), instance)
    assert not res.success and sim.requests() == []  # nothing was sent
    [failure] = [e for e in res.all_events if e.event_type_value == "STEP_FAILURE"]
    text = str(failure.step_failure_data.error)
    assert "LOGPULL_TEST_TOKEN holds a control character at position 8" in text
    out = capfd.readouterr()
    for where in (every_log(instance, res), out.out, out.err):
        assert TOKEN[:8] not in where and TOKEN[9:] not in where


def test_refused_credentials_fail_the_run_at_once_without_retries(tmp_path, sim, instance, monkeypatch):
    monkeypatch.setenv("LOGPULL_TEST_TOKEN", WRONG)
    sim.set_faults([{"kind": "echo_auth", "status": 401, "count": None}])  # and the API echoes it back
    res = materialize(make_defs(tmp_path, sim.url, retries=3, http_attempts=6), "logs/gws", key(10), instance)
    assert not res.success
    assert len(sim.requests()) == 1  # one request: no retry storm against the auth endpoint
    logs = every_log(instance, res)
    assert "credentials refused (HTTP 401): check LOGPULL_TEST_TOKEN" in logs
    assert "Retry 1 of" not in logs and "STEP_UP_FOR_RETRY" not in logs
    assert WRONG not in logs and "[REDACTED]" in logs


def scan(root: Path, secrets: list[str]) -> list[str]:
    """Every file under ``root`` that holds one of ``secrets``, byte for byte."""
    found = []
    needles = [s.encode() for s in secrets]
    for path in root.rglob("*"):
        if path.is_file() and any(n in path.read_bytes() for n in needles):
            found.append(str(path.relative_to(root)))
    return found


@pytest.mark.slow  # real `dagster` CLI runs
@pytest.mark.timeout(300)
def test_no_byte_of_any_state_or_output_holds_the_token(tmp_path, sim_process, capfd, monkeypatch):
    """A real-CLI run killed at a random page and resumed, a failing-credentials run against an API that
    echoes the header, `logpull status --json`: then every byte under the project folder (DAGSTER_HOME with
    its runs, event log and compute logs; landing; checkpoints; the SIEM) and every captured line."""
    seed = int(os.environ.get("LOGPULL_KILL_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    print(f"kill seed {seed}")
    sim_process.control("page_latency", {"seconds": 0.02})
    env = setup_project(tmp_path, sim_process.url, page_size=100, lease_ttl="1s", retries=0)
    env["LOGPULL_TEST_TOKEN"] = TOKEN + "\n"  # mounted from a file
    log = tmp_path / "runs.log"
    proc = start(materialize_cmd("logs/gws", key(10)), env, log)
    target = rng.randint(2, 10)
    wait_for(lambda: proc.poll() is not None or len(sim_process.requests()) >= target)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1.1)
    assert run(materialize_cmd("logs/gws", key(10)), env, log) == 0, log.read_text()[-2000:]
    assert run(materialize_cmd("siem/gws", key(10)), env, log) == 0
    assert len(siem_ids(tmp_path)) == len(sim_process.truth_ids("login", ts(10), ts(11)))

    sim_process.control("faults", {"rules": [{"kind": "echo_auth", "status": 401, "count": None}]})
    wrong = {**env, "LOGPULL_TEST_TOKEN": WRONG}
    assert run(materialize_cmd("logs/gws", key(11)), wrong, log) == 1
    assert "credentials refused (HTTP 401): check LOGPULL_TEST_TOKEN" in log.read_text()
    sim_process.control("faults", {"rules": [{"kind": "echo_auth", "status": 500, "count": None}]})
    assert run(materialize_cmd("logs/gws", key(12)), wrong, log) == 1  # echoed in 500s, through the retries

    monkeypatch.setenv("LOGPULL_CONFIG", env["LOGPULL_CONFIG"])
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    capfd.readouterr()
    assert logpull(["status", "--json", "--all"]) == 1
    status = capfd.readouterr()
    (tmp_path / "status.json").write_text(status.out + status.err)
    assert "credentials refused" in status.out

    leaks = scan(tmp_path, [TOKEN, WRONG])
    assert leaks == [], f"the token is in {leaks}"
    # What was scanned includes the compute logs (stdout/stderr of every step) and the event log.
    home = Path(env["DAGSTER_HOME"])
    assert [p for p in home.rglob("*.err") if p.stat().st_size] and list(home.rglob("*.db"))


@pytest.mark.parametrize(("text", "kept"), [
    ("Illegal header value b'Splunk 12345678-9abc-4def-8123-456789abcdef'", "Illegal header value b'Splunk "),
    ("Authorization: ApiKey a2lsbDp0ZXN0LXNlY3JldA==", "Authorization: "),
    ("header ApiKey a2lsbDp0ZXN0LXNlY3JldA== refused", "header ApiKey "),
])
def test_the_sinks_auth_schemes_are_masked_even_when_the_value_is_unknown(text: str, kept: str) -> None:
    """Splunk HEC's ``Splunk <token>`` and Elasticsearch's ``ApiKey <key>``, as a library may quote a
    header in an exception; "Splunk" in prose is left alone."""
    from logpull_dagster.redact import MASK, redact

    out = redact(text)
    assert out.startswith(kept) and MASK in out and "a2lsbDp0" not in out and "456789abcdef" not in out
    assert redact("delivery to the Splunk collector at https://hec.example.com failed") == \
        "delivery to the Splunk collector at https://hec.example.com failed"
