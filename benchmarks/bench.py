"""``make bench``: logpull-dagster against the read limit, in one run, on this machine; writes BENCHMARKS.md.

Every figure is measured here, now, against the bundled simulator running in its own process on
loopback, and reported as a ratio to the bare read of the same pages in the same run. Nothing here is
asserted: the targets of the performance issue are printed beside the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # a script: the tests' package is not installed, the repository holds it

from logpull_dagster_tests.servers import SimProcess  # noqa: E402

BIN = Path(sys.executable).parent
TOKEN = "bench-token"
DAY = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)
PATH = "/admin/reports/v1/activity/users/all/applications/login"


class Sim(SimProcess):
    """The simulator in its own process (the client under test gets a core of its own), the one the tests
    start (``servers.SimProcess``), with no boundary or shared-millisecond events."""

    def __init__(self, events_per_hour: int, latency: float = 0.0) -> None:
        super().__init__("--events-per-hour", str(events_per_hour), "--page-latency", str(latency),
                         "--no-boundary-events", "--no-shared-ms-events", token=TOKEN, timeout=60)

    def clear(self) -> None:
        self.http.delete("/_sim/requests")

    def latency(self, seconds: float) -> None:
        self.http.post("/_sim/page_latency", json={"seconds": seconds})


def window(i: int = 0) -> tuple[dt.datetime, dt.datetime]:
    return DAY + i * H, DAY + (i + 1) * H


def rfc(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def bare_read(url: str, i: int = 0) -> tuple[int, float]:
    """The limit: a keep-alive httpx loop that fetches and parses every page, nothing else."""
    start, end = window(i)
    params = {"startTime": rfc(start), "endTime": rfc(end), "maxResults": 1000}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as c:
        t0, n, token = time.perf_counter(), 0, None
        while True:
            doc = orjson.loads(c.get(PATH, params={**params, **({"pageToken": token} if token else {})}).content)
            n += len(doc.get("items", []))
            token = doc.get("nextPageToken")
            if not token:
                return n, time.perf_counter() - t0


def best(f, runs: int = 3):  # type: ignore[no-untyped-def]
    return max((f() for _ in range(runs)), key=lambda r: r[0] / r[1])


def project(tmp: Path, url: str, start: dt.datetime = DAY, **source: object) -> dict[str, str]:
    cfg = {"sources": [{"name": "bench", "type": "google_workspace", "application": "login", "base_url": url,
                        "access_token": {"env": "BENCH_TOKEN"}, "start": rfc(start), "settle_lag": "0s",
                        "time_budget": "1h", **source}],
           "checkpoints": {"type": "sqlite", "path": "state/checkpoints.db"},
           "landing": {"type": "local", "path": "state/landing"}, "siem": {"type": "file", "path": "siem"}}
    (tmp / "logpull.yaml").write_text(yaml.safe_dump(cfg))
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return {**os.environ, "LOGPULL_CONFIG": str(tmp / "logpull.yaml"), "DAGSTER_HOME": str(home),
            "BENCH_TOKEN": TOKEN}


def key(i: int, first: dt.datetime = DAY) -> str:
    return (first + i * H).strftime("%Y-%m-%d-%H:%M")


PULL_IN_PROCESS = """
import sys, time, dagster as dg
from logpull_dagster.keys import RANGE_END, RANGE_START
from logpull_dagster.config import load_config
from logpull_dagster.definitions import build_definitions
defs = build_definitions(load_config())
job = defs.resolve_job_def("pull_bench")
quiet = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
keys = sys.argv[1:]  # one window, or the first and last window of a range run
run = {"partition_key": keys[0]} if len(keys) == 1 else {"tags": {RANGE_START: keys[0], RANGE_END: keys[1]}}
with dg.DagsterInstance.get() as inst:
    t0 = time.perf_counter()
    res = job.execute_in_process(instance=inst, run_config=quiet, **run)
    elapsed = time.perf_counter() - t0
    events = sum(m.materialization.metadata["new_events"].value for m in res.get_asset_materialization_events())
print(events, elapsed, next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def pull_in_process(env: dict[str, str], *keys: str) -> tuple[int, float, float]:
    """The real logs/<source> asset, in-process (Dagster run, checkpoints, landing): events, seconds, peak MB."""
    out = subprocess.run([sys.executable, "-c", PULL_IN_PROCESS, *keys], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return int(out[0]), float(out[1]), int(out[2]) / 1024


def pull_asset(env: dict[str, str], i: int) -> tuple[int, float, float]:
    """One window."""
    return pull_in_process(env, key(i))


def pull_range(env: dict[str, str], first: int, last: int) -> tuple[int, float]:
    """One range run over windows ``first`` to ``last``."""
    events, seconds, _ = pull_in_process(env, key(first), key(last))
    return events, seconds


def pull_cli(env: dict[str, str], i: int, events: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "dagster"), "asset", "materialize", "-m", "logpull_dagster", "--select",
                    "logs/bench", "--partition", key(i)], env=env, capture_output=True, check=True)
    return events, time.perf_counter() - t0


PULL_LOOP = """
import sys, datetime as dt
from logpull_dagster.windows import Window, parse_time
from logpull_dagster.sources.google_workspace import GoogleWorkspaceSource
from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.pull import pull_window
url, start, end, state, owner, page_size = sys.argv[1:7]
src = GoogleWorkspaceSource(base_url=url, application="login", access_token="bench-token", page_size=int(page_size))
pull_window(src, Window(parse_time(start), parse_time(end)), source_name="bench",
            checkpoints=SqliteCheckpointStore(state + "/c.db"), landing=LocalLandingStore(state + "/landing"),
            owner=owner, lease_ttl=0.5, lease_wait=5)
# VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts from its parent's peak (inherited at fork).
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def pull_loop_proc(url: str, i: int, state: Path, owner: str, page_size: int = 1000) -> subprocess.Popen[str]:
    start, end = window(i)
    return subprocess.Popen([sys.executable, "-c", PULL_LOOP, url, rfc(start), rfc(end), str(state), owner,
                             str(page_size)], stdout=subprocess.PIPE, text=True, stderr=subprocess.DEVNULL)


PEERS = ROOT / ".venv-peers"


def peer_python(name: str, requirement: str) -> Path:
    """A venv of its own for a peer tool, so its dependencies never meet Dagster's."""
    venv = PEERS / name
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", requirement], check=True)
    return python


def dlt_pull(url: str, i: int, out: Path) -> tuple[int, float]:
    start, end = window(i)
    python = peer_python("dlt", "dlt[filesystem]==1.31.0")
    res = subprocess.run([str(python), str(ROOT / "benchmarks" / "peers" / "dlt_pull.py"), url, rfc(start), rfc(end),
                          str(out)], capture_output=True, text=True, check=True)
    n, s = res.stdout.split()[-2:]
    return int(n), float(s)


def grove_pull(url: str, i: int, out: Path) -> tuple[int, float, float]:
    """Grove 2.2.0's gsuite_activities connector (three patches, documented in grove_pull.py)."""
    start, end = window(i)
    python = peer_python("grove", "grove==2.2.0")
    res = subprocess.run([str(python), str(ROOT / "benchmarks" / "peers" / "grove_pull.py"), url, rfc(start),
                          rfc(end), str(out)], capture_output=True, text=True, check=True)
    lines = res.stdout.split("\n")
    rss = next(int(line.split()[1]) for line in lines if line.startswith("rss_kb"))
    n, s = res.stdout.split()[-2:]
    return int(n), float(s), rss / 1024


def row(name: str, events: int, seconds: float, limit: float | None, target: str = "", note: str = "") -> dict:
    rate = events / seconds if seconds else 0.0
    print(f"{name}: {events} events, {seconds:.2f}s, {rate:,.0f}/s", file=sys.stderr, flush=True)
    return {"measure": name, "events": events, "seconds": round(seconds, 2), "events/s": round(rate),
            "ratio": round(rate / limit, 2) if limit else None, "target": target, "note": note}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", type=int, default=306_000, help="events in the one-window runs (307 pages)")
    parser.add_argument("--latency-events", type=int, default=100_000, help="events in the 150 ms/page window")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    rows: list[dict] = []
    t_all = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="logpull-bench-"))

    # 1-2: one big window, no added latency
    sim = Sim(args.big)
    bare_read(sim.url)  # warm the simulator's event cache
    n, s = best(lambda: bare_read(sim.url))
    limit = n / s
    rows.append(row("1. read limit: httpx keep-alive loop + orjson (best of 3)", n, s, limit))
    (tmp / "p0").mkdir()
    env = project(tmp / "p0", sim.url)
    e, s, _ = pull_asset(env, 0)
    rows.append(row("2a. logpull: logs/<source> asset, in-process run", e, s, limit, ">= 0.85"))
    e, s = pull_cli(env, 1, e)
    rows.append(row("2b. logpull: dagster asset materialize (CLI, whole process)", e, s, limit, "",
                    "includes ~2.4 s of CLI start-up"))
    n, s = dlt_pull(sim.url, 2, tmp / "dlt0")
    rows.append(row("3a. dlt 1.31 rest_api -> filesystem JSONL (extract+normalize+load)", n, s, limit))
    n, s, rss = grove_pull(sim.url, 3, tmp / "grove0")
    rows.append(row("3b. Grove 2.2.0 gsuite_activities -> local_file (gzip NDJSON)", n, s, limit, "",
                    f"peak RSS {rss:.0f} MB; 3 patches to point it here (benchmarks/peers/grove_pull.py)"))

    # 9: delivery of that window
    from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
    from logpull_dagster.deliver import deliver_window
    from logpull_dagster.landing.local import LocalLandingStore
    from logpull_dagster.sinks.file import FileSink
    from logpull_dagster.windows import Window

    store = SqliteCheckpointStore(tmp / "p0" / "state" / "checkpoints.db")
    t0 = time.perf_counter()
    res = deliver_window(Window(*window(0)), source_name="bench", checkpoints=store,
                         landing=LocalLandingStore(tmp / "p0" / "state" / "landing"), sink=FileSink(tmp / "siem0"),
                         owner="bench", lease_ttl=60)
    rows.append(row("9. delivery: landed pages -> JSON Lines SIEM files", res.events, time.perf_counter() - t0,
                    None))
    store.close()
    sim.stop()

    # 4: the same with 150 ms per page (a realistic API), a smaller window
    sim = Sim(args.latency_events, latency=0.15)
    n, s = bare_read(sim.url)
    limit150 = n / s
    rows.append(row("4. read limit at 150 ms/page", n, s, limit150))
    (tmp / "p1").mkdir(exist_ok=True)
    env = project(tmp / "p1", sim.url)
    e, s, _ = pull_asset(env, 0)
    rows.append(row("4a. logpull asset in-process at 150 ms/page", e, s, limit150, ">= 0.97"))
    e, s = pull_cli(env, 1, e)
    rows.append(row("4b. logpull CLI at 150 ms/page", e, s, limit150))
    n, s = dlt_pull(sim.url, 2, tmp / "dlt1")
    rows.append(row("4c. dlt at 150 ms/page", n, s, limit150))
    n, s, _ = grove_pull(sim.url, 3, tmp / "grove1")
    rows.append(row("4d. Grove at 150 ms/page", n, s, limit150))

    # 5: a 24-window range run of the logs asset at 150 ms/page, concurrent_windows 1/2/4/8
    sim.stop()
    sim = Sim(5_000, latency=0.15)
    base = None
    for workers in (1, 2, 4, 8):
        (tmp / f"c{workers}").mkdir()
        env = project(tmp / f"c{workers}", sim.url, concurrent_windows=workers)
        sim.clear()
        total, s = pull_range(env, 0, 23)
        quota = max(r["in_flight"] for r in sim.requests())
        base = base or total / s
        r = row(f"5. 24 windows at 150 ms/page, concurrent_windows {workers}", total, s, None,
                ">= 3.5x at 4, within quota" if workers == 4 else "",
                f"at most {quota} requests in flight (quota {workers})")
        r["ratio"] = round(total / s / base, 2)
        rows.append(r)
    sim.stop()

    # 6: memory of one window, 100k and 1M events (the pull loop alone, in a fresh process)
    for n_events in (100_000, 1_000_000):
        sim = Sim(n_events)
        state = tmp / f"m{n_events}"
        state.mkdir()
        t0 = time.perf_counter()
        p = pull_loop_proc(sim.url, 0, state, "mem")
        rss = int(p.communicate()[0].split()[-1]) / 1024
        r = row(f"6. peak RSS pulling a {n_events:,}-event window", n_events, time.perf_counter() - t0, None,
                "<= 250 MB at 1M, within 10% of 100k")
        r["note"] = f"peak RSS {rss:.0f} MB"
        rows.append(r)
        sim.stop()

    # 7: resume cost: 20 SIGKILLs at random points, pages fetched twice per kill
    # 400 pages of 100 at 50 ms: each run reads at most ~10 pages before its kill, so the window is still
    # unfinished after 20 kills and every page read twice is a resume cost, not a second pass.
    sim = Sim(40_000, latency=0.05)
    state = tmp / "kill"
    state.mkdir()
    rng = random.Random(7)
    kills = 0
    for k in range(20):
        p = pull_loop_proc(sim.url, 0, state, f"k{k}", page_size=100)
        time.sleep(rng.uniform(0.6, 1.0))  # start-up is ~0.5 s: every kill lands while pages are read
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
        time.sleep(0.6)  # the dead run's 0.5 s lease lapses
    p = pull_loop_proc(sim.url, 0, state, "final", page_size=100)
    p.wait()
    pages = Counter(r["pageToken"] for r in sim.requests())
    reread = sum(c - 1 for c in pages.values())
    r = row("7. resume cost: pages read twice per SIGKILL", sum(pages.values()), 0, None, "<= 1 per kill")
    r.update({"events": kills, "seconds": "", "events/s": "", "ratio": round(reread / max(kills, 1), 2),
              "note": f"{kills} kills, {reread} pages read twice, {len(pages)} pages"})
    rows.append(r)
    sim.stop()

    # 8: 720 hourly windows (~100 events each) in one --partition-range run
    sim = Sim(100)
    (tmp / "p8").mkdir()
    first = (dt.datetime.now(dt.UTC) - dt.timedelta(days=32)).replace(hour=0, minute=0, second=0, microsecond=0)
    env = project(tmp / "p8", sim.url, start=first)
    t0 = time.perf_counter()
    subprocess.run([str(BIN / "dagster"), "asset", "materialize", "-m", "logpull_dagster", "--select", "logs/bench",
                    "--partition-range", f"{key(0, first)}...{key(719, first)}"], env=env, capture_output=True,
                   check=True)
    s = time.perf_counter() - t0
    r = row("8. backfill: 720 windows in one --partition-range run", 720 * 100, s, None, "<= 300 s, <= 0.4 s/window")
    r["note"] = f"{s / 720:.3f} s per window, Dagster start-up included"
    rows.append(r)
    sim.stop()

    write(rows, args, time.perf_counter() - t_all)


def write(rows: list[dict], args: argparse.Namespace, total: float) -> None:
    import pandas as pd

    table = pd.DataFrame(rows).fillna("").to_markdown(index=False) if _has_tabulate() else _md(rows)
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, "
               f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
               f"Python {platform.python_version()}, {platform.platform()}")
    text = textwrap.dedent(f"""\
        # Benchmarks

        Generated by `make bench` (`{Path(sys.executable).name} benchmarks/bench.py --big {args.big}`) on
        {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}, in {total:.0f} s.
        Machine: {machine}. The simulator runs in its own process on loopback; ratios are against the
        read limit of the same pages measured in the same run (row 1 for rows 2-3, row 4 for rows 4a-4d;
        row 5 against 1 window at a time; row 7 is pages read twice per kill).

        """) + table + "\n"
    Path(args.out).write_text(text)
    print(text)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def _md(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    main()
