"""One rate budget shared by concurrent runs: ``python benchmarks/bench_rate.py``; writes benchmarks/rate_budget.md.

Four ``dagster asset materialize`` processes read one source at once (each a range of windows read
``concurrent_windows`` at a time), all drawing from one ``rate_limit`` kept in the SQLite checkpoint
store. The simulator, in its own process on loopback, logs when each request arrives: that log, the
API's own view, is what is measured. The run lasts well over a minute, so that full sliding minutes
are counted: the most requests in any 60 s and in any 1 s are reported against what the limit allows,
with the achieved rate as a ratio of the limit. Nothing is asserted (``test_rate_budget.py`` does that).
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import BIN, DAY, Sim, key, project, rfc  # bench puts the repository on sys.path

from logpull_dagster_tests.servers import max_in_span  # the rate test's own measure

ROOT = Path(__file__).resolve().parent.parent
H = dt.timedelta(hours=1)


def busiest_minute_start(times: list[float]) -> float:
    """Where the densest 60 s span starts (for the achieved rate over a full minute)."""
    times = sorted(times)
    best, at, j = -1, times[0], 0
    for i, t in enumerate(times):
        while j < len(times) and times[j] < t + 60:
            j += 1
        if j - i > best:
            best, at = j - i, t
    return at


def verdict(most: int, limit: float) -> str:
    """Slots exactly ``interval`` apart put at most ``limit`` in any half-open span; an arrival that is
    late by a few ms (the client's wake-up, loopback) can bring one more into a span, hence the +1."""
    return "within the limit" if most <= limit else "within +1 (arrival jitter)" if most <= limit + 1 else "OVER"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=4, help="concurrent dagster runs")
    parser.add_argument("--rate", type=int, default=120, help="rate_limit, requests per minute")
    parser.add_argument("--windows-per-run", type=int, default=2)
    parser.add_argument("--events-per-hour", type=int, default=2_000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "rate_budget.md"))
    args = parser.parse_args()

    per_run = args.windows_per_run
    windows = args.runs * per_run
    pages = windows * -(-args.events_per_hour // args.page_size)
    print(f"{args.runs} runs x {per_run} windows, ~{pages} pages at {args.rate}/min: "
          f"~{pages / args.rate * 60:.0f} s of requests", flush=True)
    sim = Sim(args.events_per_hour)
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = project(tmp, sim.url, rate_limit=f"{args.rate}/min", page_size=args.page_size,
                      concurrent_windows=per_run, max_windows_per_run=per_run)
        # Create the instance's storage once: CLI processes racing to create it fail.
        subprocess.run([sys.executable, "-c", "import dagster as dg, os; "
                        "dg.DagsterInstance.from_config(os.environ['DAGSTER_HOME']).get_runs(limit=1)"],
                       env=env, check=True)
        procs = []
        for r in range(args.runs):
            first, last = key(r * per_run), key(r * per_run + per_run - 1)
            cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "logpull_dagster", "--select", "logs/bench",
                   *(["--partition", first] if per_run == 1 else ["--partition-range", f"{first}...{last}"])]
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT))
        codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(f"a run failed: exit codes {codes}")
        requests = sim.requests()

        from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore

        store = SqliteCheckpointStore(tmp / "state" / "checkpoints.db")
        rows = [store.get("bench", "pull", rfc(DAY + i * H)) for i in range(windows)]
        store.close()
        landed = sum(cp.events for cp in rows if cp is not None)
        complete = sum(1 for cp in rows if cp is not None and cp.is_complete)
        waited = sum(cp.stats["run"].get("rate_wait", 0.0) for cp in rows if cp is not None)
        truth = sum(len(sim.http.get("/_sim/events", params={"application": "login", "startTime": rfc(DAY + i * H),
                                                             "endTime": rfc(DAY + (i + 1) * H)}).json()["items"])
                    for i in range(windows))
    sim.stop()
    total = time.perf_counter() - t_all

    times = sorted(r["t"] for r in requests)
    span = times[-1] - times[0]
    per_second = args.rate / 60
    m60, m1 = max_in_span(times, 60.0), max_in_span(times, 1.0)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    in_flight = max(r["in_flight"] for r in requests)
    minute_at = busiest_minute_start(times)
    table = [
        ("rate_limit", f"{args.rate}/min", f"{args.runs} concurrent `dagster asset materialize` runs x {per_run} "
                                           f"windows each (concurrent_windows {per_run}), one budget"),
        ("requests the API saw", f"{len(times)}", f"over {span:.1f} s ({sum(c == 0 for c in codes)} runs succeeded)"),
        ("most in any sliding 60 s", f"{m60}", f"limit {args.rate}, +1 allowed: {verdict(m60, args.rate)}"),
        ("most in any sliding 1 s", f"{m1}", f"limit {per_second:g}, +1 allowed: {verdict(m1, per_second)}"),
        ("achieved rate, busiest full minute", f"{m60 / args.rate:.3f}",
         f"{m60} requests in the minute from +{minute_at - times[0]:.1f} s, as a ratio of the limit"),
        ("achieved rate, whole run", f"{(len(times) - 1) / span * 60 / args.rate:.3f}",
         "requests per minute from the first request to the last, as a ratio of the limit"),
        ("smallest gap between two arrivals", f"{min(gaps) * 1000:.0f} ms",
         f"slots are {60_000 / args.rate:.0f} ms apart; arrivals jitter by the client's wake-up and loopback"),
        ("most requests in flight at once", f"{in_flight}", f"of {windows} windows reading at once"),
        ("time the windows waited for the budget", f"{waited:.0f} s", "sum over windows (metadata rate_wait_seconds)"),
        ("events landed / ground truth", f"{landed} / {truth}", f"{complete} of {windows} windows complete"),
    ]
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
               f"load average {os.getloadavg()[0]:.1f} at the end")
    lines = ["| measure | value | note |", "|:--|--:|:--|", *(f"| {a} | {b} | {c} |" for a, b, c in table)]
    text = (f"## Rate budget: {args.runs} runs, one account\n\n"
            f"Generated by `python benchmarks/bench_rate.py` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, in "
            f"{total:.0f} s. Machine: {machine}. Request times are the simulator's arrival times (its "
            f"request log), the API's view.\n\n" + "\n".join(lines) + "\n")
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
