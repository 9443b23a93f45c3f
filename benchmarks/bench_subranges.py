"""Issue 23 in one run: a busy window read as sub-ranges at once, and windows read together, at 150 ms a page.

``python benchmarks/bench_subranges.py`` (``make bench-subranges``). Every figure is a ratio measured in this
run against the bundled simulator in its own process (``bench.Sim``); nothing is asserted. Prints a
Markdown table for BENCHMARKS.md.

1. One busy window (``--big`` events, 1,000 a page) at 150 ms a page: the bare page-after-page read
   (httpx + orjson, ``bench.bare_read``) against ``dagster asset materialize`` of the window with the
   default config (whole process, CLI start-up included). Target: speedup >= 4.
2. The same window in-process (the asset in a Dagster run, no CLI start-up), for the record.
3. 8 windows of ``--small`` events in one range run against 1 of them, ``concurrent_windows: 8``, at 150 ms
   a page: the ratio of throughputs, and the most requests the simulator saw in flight. Target >= 7x,
   never above the quota.
4. Peak RSS of the asset reading a 1,000,000-event window split into sub-ranges (``--memory``; 0 skips).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import (  # a script beside bench.py
    Sim,
    bare_read,
    key,
    project,
    pull_cli,
    pull_in_process,
    pull_range,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", type=int, default=300_000, help="events in the busy window (1,000 a page)")
    parser.add_argument("--small", type=int, default=20_000, help="events in each of the 8 windows")
    parser.add_argument("--memory", type=int, default=1_000_000, help="events of the memory row; 0 skips it")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="logpull-bench-sub-"))
    rows: list[tuple[str, str, str, str]] = []

    sim = Sim(args.big, latency=0.15)
    try:
        n, bare = bare_read(sim.url, 0)
        (tmp / "one").mkdir()
        env = project(tmp / "one", sim.url)  # the default config: concurrent_windows as shipped
        sim.clear()
        _, cli = pull_cli(env, 1, n)
        peak = max(r["in_flight"] for r in sim.requests())
        rows.append((f"one {n:,}-event window at 150 ms/page, `dagster asset materialize` (default config) vs "
                     f"the bare page-after-page read", f"{cli:.1f} s vs {bare:.1f} s: **speedup {bare / cli:.2f}**",
                     ">= 4", f"at most {peak} requests in flight; CLI start-up included"))
        sim.clear()
        e, inproc, rss = pull_in_process(env, key(2))
        rows.append(("the same window, the asset in-process (no CLI start-up)",
                     f"{inproc:.1f} s: speedup {bare / inproc:.2f}", "", f"{e:,} events, peak RSS {rss:.0f} MB"))
    finally:
        sim.stop()

    sim = Sim(args.small, latency=0.15)
    try:
        (tmp / "w1").mkdir()
        (tmp / "w8").mkdir()
        one, s1 = pull_range(project(tmp / "w1", sim.url, concurrent_windows=8), 0, 0)
        sim.clear()
        eight, s8 = pull_range(project(tmp / "w8", sim.url, concurrent_windows=8), 1, 8)
        peak = max(r["in_flight"] for r in sim.requests())
        ratio = (eight / s8) / (one / s1)
        rows.append((f"8 windows of {args.small:,} events at once vs 1, 150 ms/page, concurrent_windows 8 "
                     f"(in-process range runs)", f"{eight / s8:,.0f} vs {one / s1:,.0f} events/s: **{ratio:.2f}x**",
                     ">= 7x, within the quota", f"at most {peak} requests in flight (quota 8)"))
    finally:
        sim.stop()

    if args.memory:
        sim = Sim(args.memory)
        try:
            (tmp / "mem").mkdir()
            env = project(tmp / "mem", sim.url)
            t0 = time.perf_counter()
            e, s, rss = pull_in_process(env, key(0))
            rows.append((f"peak RSS reading a {e:,}-event window as sub-ranges (asset, in-process)",
                         f"**{rss:.0f} MB**, {s:.1f} s", "<= 250 MB", f"whole run {time.perf_counter() - t0:.1f} s"))
        finally:
            sim.stop()

    print("| measure | figure | target | note |\n| --- | --- | --- | --- |")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
