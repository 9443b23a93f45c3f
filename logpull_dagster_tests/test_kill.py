"""Completeness under SIGKILL and contention, through the real ``dagster`` CLI.

The simulator runs in its own process and outlives every worker the test kills.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter

import orjson
import pytest

from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.config.source import SourceBase

from .cli import REPO, STORES, materialize_cmd, run, setup_project, siem_ids, start
from .conftest import Servers, key, ts

# Slow tier (`make test-fast` leaves it out): real `dagster` CLI runs killed at random, on every store (moto,
# PostgreSQL).
pytestmark = pytest.mark.slow

KEY = key(10)
START, END = ts(10), ts(11)

# Dagster's own instance for the kill test: its default (SQLite in DAGSTER_HOME), or the production
# example (examples/dagster.production.yaml: PostgreSQL storage, queued runs, run retries) used as it
# ships, its DAGSTER_PG_* variables pointed at a fresh database of the session's cluster, so nothing
# in the product assumes Dagster runs on SQLite.
PRODUCTION_DAGSTER_YAML = REPO / "examples" / "dagster.production.yaml"


def dagster_instance(kind: str, servers: Servers, monkeypatch: pytest.MonkeyPatch) -> str | None:
    """The dagster.yaml for ``kind`` (None: setup_project's default), its variables set in this process
    (setup_project creates the instance's storage from here) and so in every CLI run it starts."""
    if kind == "sqlite":
        return None
    pg = servers.postgres
    monkeypatch.setenv("DAGSTER_PG_HOST", "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(pg.port))
    monkeypatch.setenv("DAGSTER_PG_USER", "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "unused-the-test-cluster-trusts-loopback")
    monkeypatch.setenv("DAGSTER_PG_DB", pg.new_database("dagster").rsplit("/", 1)[1])
    return PRODUCTION_DAGSTER_YAML.read_text()


# (checkpoint store, Dagster's instance storage, source): every store once, both sources, and the
# all-PostgreSQL deployment; each case is a minute of real CLI runs, so the pairs share cases: the
# example plug-in store (found through its entry point) under Okta with OAuth, DynamoDB with S3
# landing (the AWS config), PostgreSQL checkpoints with Dagster itself on PostgreSQL (self-hosted).
KILL_CASES = [
    pytest.param("json_file", "sqlite", "okta", id="okta_oauth+json_file"),
    pytest.param("dynamodb", "sqlite", "gws", id="dynamodb+s3"),
    pytest.param("postgres", "dagster_pg", "gws", id="postgres+dagster_pg"),
]
# SQLite, the default store, is the store of the kill test of every source together (below).
assert {p.values[0] for p in KILL_CASES} | {"sqlite"} == set(STORES), "every checkpoint store has a kill case"


def truth_of(sim_process, source: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The event ids the SIEM must hold for the window, as the source names them."""
    if source == "okta":
        return sim_process.okta_truth_ids(START, END)
    return sim_process.truth_ids("login", START, END)


def okta_oauth(sim_process, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The source keys of an Okta OAuth app the simulator trusts, its tokens living 4 s; the private key
    set as an operator would, OKTA_PRIVATE_KEY="$(cat key.pem)" (setup_project passes this environment on)."""
    from .test_okta import rsa_key

    private, public = rsa_key()
    sim_process.control("okta/clients", {"client_id": "0oakilltest", "public_key": public, "token_lifetime": 4})
    monkeypatch.setenv("OKTA_PRIVATE_KEY", private)
    return {"token": None, "oauth": {"client_id": "0oakilltest", "private_key": {"env": "OKTA_PRIVATE_KEY"},
                                     "token_url": f"{sim_process.url}/oauth2/v1/token"}}


# The request log's columns that are not the request itself.
_NOT_THE_REQUEST = frozenset({"n", "t", "in_flight", "status", "fault", "items"})
# A busy window is read as sub-ranges at once (subranges.py), as many requests in flight as the source's
# concurrent_windows (the default here): a kill costs at most the page in flight of each.
READERS: int = SourceBase.model_fields["concurrent_windows"].default


def page_key(request: dict) -> tuple:  # type: ignore[type-arg]
    """A page as the API saw it: every column of its request (range and cursor), so that the first page
    of a window and the first page of a sub-range of it are different pages."""
    return tuple(sorted((k, str(v)) for k, v in request.items() if k not in _NOT_THE_REQUEST))


def page_reads(sim_process, source: str) -> Counter:  # type: ignore[no-untyped-def]
    """How often each page was requested (its range and the cursor sent)."""
    if source == "okta":
        return Counter(page_key(r) for r in sim_process.okta_requests())
    return Counter(page_key(r) for r in sim_process.gws_requests())


def wait_for(cond, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.01)


def killed_at(cmd: list[str], env: dict[str, str], log, progress, target: int, pause: float) -> bool:  # type: ignore[no-untyped-def]
    """Start ``cmd``; once ``progress()`` reaches ``target`` (pages requested, batch files written), wait
    ``pause`` (a random point inside the next one) and SIGKILL its process group. Whether it was killed
    (False: it finished first)."""
    proc = start(cmd, env, log)
    wait_for(lambda: proc.poll() is not None or progress() >= target)
    time.sleep(pause)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return killed


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("store", "instance_storage", "source"), KILL_CASES)
def test_sigkill_at_random_moments_loses_nothing_and_rereads_at_most_a_page_per_kill(tmp_path, sim_process, store,
                                                                                     instance_storage, source,
                                                                                     servers, monkeypatch):
    seed = int(os.environ.get("LOGPULL_KILL_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    print(f"kill seed {seed} (rerun with LOGPULL_KILL_SEED={seed})")
    sim_process.control("page_latency", {"seconds": 0.03})
    auth: dict[str, object] = {}
    if source == "okta":  # Okta's recommended credential: an OAuth app (tokens living 4 s)
        auth = okta_oauth(sim_process, monkeypatch)
    env = setup_project(tmp_path, sim_process.url, page_size=50, lease_ttl="2s", store=store, source=source,
                        servers=servers, dagster_yaml=dagster_instance(instance_storage, servers, monkeypatch),
                        **auth)
    log = tmp_path / "runs.log"
    cmd = materialize_cmd(f"logs/{source}", KEY)

    kills = 0
    for _ in range(4):
        # die after a random number of pages, at a random point inside the next
        target = len(sim_process.requests()) + rng.randint(1, 8)
        kills += killed_at(cmd, env, log, lambda: len(sim_process.requests()), target, rng.uniform(0, 0.04))
    assert kills >= 3

    for _ in range(3):  # a rerun takes over once the dead run's 2 s lease lapses
        if run(cmd, env, log) == 0:
            break
    else:
        pytest.fail(f"the rerun did not succeed:\n{log.read_text()[-3000:]}")

    # Delivery, killed the same way: after a random number of batch files, at a random point of the next
    # (between its fence, its rename and its checkpoint); the rerun takes over once the lease lapses.
    deliver = materialize_cmd(f"siem/{source}", KEY)
    batches = tmp_path / "siem" / source
    delivery_kills = 0
    for _ in range(2):
        target = len(list(batches.glob("*.jsonl"))) + rng.randint(1, 15)
        delivery_kills += killed_at(deliver, env, log, lambda: len(list(batches.glob("*.jsonl"))), target,
                                    rng.uniform(0, 0.01))
    for _ in range(3):
        if run(deliver, env, log) == 0:
            break
    else:
        pytest.fail(f"the delivery rerun did not succeed:\n{log.read_text()[-3000:]}")
    print(f"{delivery_kills} delivery kills")
    assert delivery_kills >= 1

    truth = truth_of(sim_process, source)
    ids = siem_ids(tmp_path)
    assert len(truth) > 2000
    assert len(ids) == len(set(ids)), "an event reached the SIEM twice"
    assert sorted(ids) == sorted(truth), "an event is missing from the SIEM"
    pages = page_reads(sim_process, source)
    reread = sum(n - 1 for n in pages.values())
    print(f"{kills} kills, {sum(pages.values())} page reads for {len(pages)} pages, {reread} re-read")
    assert reread <= kills * READERS
    if source == "okta":  # every reading run (a fresh process: no cached token) got its own, none refused
        tokens = [r for r in sim_process.requests() if r.get("path") == "/oauth2/v1/token"]
        assert len(tokens) >= kills + 1 and all(r["status"] == 200 for r in tokens)
    if instance_storage == "dagster_pg":  # the CLI's runs really went to Dagster's PostgreSQL storage
        import psycopg

        dsn = servers.postgres.dsn(os.environ["DAGSTER_PG_DB"])
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] >= kills + 2


@pytest.mark.timeout(300)
def test_two_runs_on_one_window_one_wins_and_the_siem_is_exact(tmp_path, sim_process):
    sim_process.control("page_latency", {"seconds": 0.08})  # ~4 s of reading: the runs overlap
    # Page after page (concurrent_windows 1): read as sub-ranges the window takes ~1 s, and the second run
    # could start after the first ended (it then reads the window again and succeeds: no overlap tested).
    env = setup_project(tmp_path, sim_process.url, page_size=50, lease_ttl="30s", lease_wait="0s",
                        concurrent_windows=1)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start(materialize_cmd("logs/gws", KEY), env, log) for log in logs]
    codes = [p.wait(timeout=120) for p in procs]
    assert sorted(codes) == [0, 1], codes
    loser = logs[codes.index(1)].read_text()
    assert "is held by run" in loser and "this run wrote nothing" in loser
    assert run(materialize_cmd("siem/gws", KEY), env, tmp_path / "d.log") == 0
    ids = siem_ids(tmp_path)
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(sim_process.truth_ids("login", START, END))
    pages = Counter(page_key(r) for r in sim_process.gws_requests())
    assert max(pages.values()) == 1  # the loser never read a page


# Google Workspace and the sources of issue 22, killed together on the default store (SQLite): one CLI run
# reads them all, so five sources cost one real-CLI test, not five. Each: its SimProcess truth and request
# log, and the query parameter that names the page a request asked for (its cursor).
NEW_SOURCES: dict[str, tuple[str, str, str]] = {
    "gws": ("gws_truth_ids", "gws_requests", "pageToken"),
    "gh": ("github_truth_ids", "github_requests", "after"),
    "slack": ("slack_truth_ids", "slack_requests", "cursor"),
    "okta_rest": ("okta_rest_truth_ids", "okta_rest_requests", "after"),
    "msgraph": ("msgraph_truth_ids", "msgraph_requests", "skiptoken"),
}


@pytest.mark.timeout(420)
def test_sigkill_at_random_moments_loses_nothing_for_every_source_together(tmp_path, sim_process):
    """Google Workspace, GitHub, Slack, Microsoft Graph and Okta described as ``type: rest``, read by one real
    ``dagster`` run per attempt on SQLite, SIGKILLed at random pages, then delivered with SIGKILLs at random
    batches: every event of each reaches the SIEM exactly once, each window is read as sub-ranges at once
    (subranges.py) and resumed sub-range by sub-range, and each source re-reads at most one page
    per kill."""
    seed = int(os.environ.get("LOGPULL_KILL_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    print(f"kill seed {seed} (rerun with LOGPULL_KILL_SEED={seed})")
    sim_process.control("page_latency", {"seconds": 0.03})
    names = list(NEW_SOURCES)
    env = setup_project(tmp_path, sim_process.url, page_size=50, lease_ttl="2s", source=names[0],
                        also=tuple(names[1:]))
    log = tmp_path / "runs.log"

    def pending_cmd() -> list[str] | None:
        """The run for the windows not read through yet: a new run of a complete window reads it again on
        purpose (late events), which is no re-read caused by a kill."""
        store = SqliteCheckpointStore(tmp_path / "state" / "checkpoints.db")
        try:
            left = [n for n in names if not ((cp := store.get(n, "pull", START)) and cp.read_once)]
        finally:
            store.close()
        return materialize_cmd(",".join(f"logs/{n}" for n in left), KEY) if left else None

    kills = 0
    for _ in range(4):
        cmd = pending_cmd()
        if cmd is None:
            break
        target = len(sim_process.requests()) + rng.randint(1, 12)  # after a random number of pages of any source
        kills += killed_at(cmd, env, log, lambda: len(sim_process.requests()), target, rng.uniform(0, 0.04))
    assert kills >= 3
    for _ in range(3):  # a rerun takes over once the dead run's 2 s leases lapse
        cmd = pending_cmd()
        if cmd is None or run(cmd, env, log, timeout=240) == 0:
            break
    else:
        pytest.fail(f"the rerun did not succeed:\n{log.read_text()[-3000:]}")

    deliver = materialize_cmd(",".join(f"siem/{n}" for n in names), KEY)
    siem = tmp_path / "siem"
    delivery_kills = 0
    for _ in range(2):
        target = len(list(siem.rglob("*.jsonl"))) + rng.randint(1, 20)
        delivery_kills += killed_at(deliver, env, log, lambda: len(list(siem.rglob("*.jsonl"))), target,
                                    rng.uniform(0, 0.01))
    for _ in range(3):
        if run(deliver, env, log, timeout=240) == 0:
            break
    else:
        pytest.fail(f"the delivery rerun did not succeed:\n{log.read_text()[-3000:]}")
    assert delivery_kills >= 1

    for name, (truth_of_source, requests_of_source, _) in NEW_SOURCES.items():
        truth = getattr(sim_process, truth_of_source)(START, END)
        ids = [orjson.loads(line)["event_id"] for f in sorted((siem / name).glob("*.jsonl"))
               for line in f.read_bytes().splitlines()]
        assert len(truth) > 1000, name
        assert len(ids) == len(set(ids)), f"{name}: an event reached the SIEM twice"
        assert sorted(ids) == sorted(truth), f"{name}: an event is missing from the SIEM"
        pages = Counter(page_key(r) for r in getattr(sim_process, requests_of_source)())
        reread = sum(n - 1 for n in pages.values())
        print(f"{name}: {kills} kills, {sum(pages.values())} page reads for {len(pages)} pages, {reread} re-read")
        assert reread <= kills * READERS, name
    store = SqliteCheckpointStore(tmp_path / "state" / "checkpoints.db")
    try:  # the windows were busy enough to split: the kills struck sub-ranges
        splits = {n: (store.get(n, "pull", START).stats.get("split") or {}).get("subranges", 0) for n in names}
    finally:
        store.close()
    print(f"sub-ranges per window: {splits}")
    assert all(k > 1 for k in splits.values()), splits
