"""``make bench-stores``: what each state backend costs per page, on this machine, in one run.

Every backend is a real server on 127.0.0.1, started here: SQLite (a file, the embedded default),
DynamoDB on moto's server, PostgreSQL 15 from Debian's packages (fsync on), and for landing a local
folder and S3 on moto. Two measures, both reported as ratios to the SQLite/local row of the same run:

* commit latency: one pull-loop page step against the store alone, i.e. ``known_ids`` for a page of
  1,000 events (the dedupe lookup) then ``commit`` with those 1,000 ids, 200 pages into one window;
* one window end to end: ``pull_window`` (the real pull loop, in a process of its own) reading a
  window of the bundled simulator with that store, in pages per second and peak RSS.

moto is an emulator written in Python: its latency says how much work a backend does per page, not
what AWS would take (a DynamoDB transaction in-region is typically 10-25 ms). Nothing is asserted.
Writes benchmarks/stores.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.bench import Sim, rfc, window  # noqa: E402
from logpull_dagster_tests.servers import AWS_ENV, MotoServer, PostgresServer  # noqa: E402

OUT = ROOT / "benchmarks" / "stores.md"


def open_checkpoints(spec: dict[str, Any]) -> Any:
    kind = spec["type"]
    if kind == "sqlite":
        from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
        return SqliteCheckpointStore(spec["path"])
    if kind == "dynamodb":
        from logpull_dagster.checkpoints.dynamodb import DynamoDbCheckpointStore
        return DynamoDbCheckpointStore(spec["table"], region="us-east-1", endpoint_url=spec["url"], create_table=True)
    from logpull_dagster.checkpoints.postgres import PostgresCheckpointStore
    return PostgresCheckpointStore(spec["dsn"])


def open_landing(spec: dict[str, Any]) -> Any:
    if spec["type"] == "local":
        from logpull_dagster.landing.local import LocalLandingStore
        return LocalLandingStore(spec["path"])
    from logpull_dagster.landing.s3 import S3LandingStore
    return S3LandingStore(spec["bucket"], prefix="landing", region="us-east-1", endpoint_url=spec["url"])


def commit_latency(spec: dict[str, Any], pages: int = 200, per_page: int = 1000) -> dict[str, float]:
    """known_ids + commit of ``pages`` pages of ``per_page`` ids into one window: seconds per call."""
    store = open_checkpoints(spec)
    try:
        start, end = "2026-11-20T10:00:00Z", "2026-11-20T11:00:00Z"
        cp = store.acquire("bench", "pull", start, end, owner="bench", ttl=60, now=time.time())
        lookups, commits = [], []
        t_us = 1_790_000_000_000_000
        for seq in range(pages):
            ids = [(t_us + (seq * per_page + i) * 1000, hashlib.blake2b(f"{seq}/{i}".encode(), digest_size=16).digest())
                   for i in range(per_page)]
            t0 = time.perf_counter()
            store.known_ids("bench", start, ids)
            t1 = time.perf_counter()
            progress = dataclasses.replace(cp, cursor=f"tok{seq}", page_seq=seq + 1, events=(seq + 1) * per_page)
            cp = store.commit(progress, ttl=60, now=time.time(), landed_ids=ids)
            t2 = time.perf_counter()
            lookups.append(t1 - t0)
            commits.append(t2 - t1)
        return {"lookup_ms": statistics.median(lookups) * 1000, "commit_ms": statistics.median(commits) * 1000,
                "commit_p95_ms": sorted(commits)[int(len(commits) * 0.95)] * 1000,
                "step_ms": statistics.median(a + b for a, b in zip(lookups, commits, strict=True)) * 1000}
    finally:
        store.close()


PULL = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from benchmarks.bench_stores import open_checkpoints, open_landing
from logpull_dagster.windows import Window, parse_time
from logpull_dagster.sources.google_workspace import GoogleWorkspaceSource
from logpull_dagster.pull import pull_window
url, start, end, cps, lands = sys.argv[2:7]
src = GoogleWorkspaceSource(base_url=url, application="login", access_token="bench-token", page_size=1000)
cp, land = open_checkpoints(json.loads(cps)), open_landing(json.loads(lands))
t0 = time.perf_counter()
res = pull_window(src, Window(parse_time(start), parse_time(end)), source_name="bench", checkpoints=cp,
                  landing=land, owner="bench", lease_ttl=60)
elapsed = time.perf_counter() - t0
hwm = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": elapsed, "pages": res.pages_read, "events": res.events_landed,
                  "rss_mb": int(hwm) / 1024}))
"""


def one_window(url: str, i: int, cps: dict[str, Any], lands: dict[str, Any]) -> dict[str, float]:
    start, end = window(i)
    out = subprocess.run([sys.executable, "-c", PULL, str(ROOT), url, rfc(start), rfc(end), json.dumps(cps),
                          json.dumps(lands)], capture_output=True, text=True, env={**os.environ, **AWS_ENV})
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=100_000, help="events in the end-to-end window")
    ap.add_argument("--pages", type=int, default=200, help="pages in the commit-latency measure")
    ap.add_argument("--big", type=int, default=0, help="also a window of this many events per backend (RSS)")
    args = ap.parse_args()
    # This script's own process (it is no test): boto3's usual chain reads moto's test credentials here.
    os.environ.update(AWS_ENV)
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-stores-"))
    moto, pg = MotoServer(tmp).start(), PostgresServer().start()
    sims = {n: Sim(events_per_hour=n) for n in {args.events, args.big} if n}
    try:
        s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1")

        def backends() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
            run = uuid.uuid4().hex[:8]
            s3.create_bucket(Bucket=f"bench-{run}")
            return [
                ("sqlite + local", {"type": "sqlite", "path": str(tmp / run / "c.db")},
                 {"type": "local", "path": str(tmp / run / "landing")}),
                ("postgres + local", {"type": "postgres", "dsn": pg.new_database("bench")},
                 {"type": "local", "path": str(tmp / run / "landing-pg")}),
                ("dynamodb + s3 (moto)", {"type": "dynamodb", "table": f"bench_{run}", "url": moto.url},
                 {"type": "s3", "bucket": f"bench-{run}", "url": moto.url}),
            ]

        rows: list[dict[str, Any]] = []
        for n, (name, cps, lands) in enumerate(backends()):
            lat = commit_latency(cps, pages=args.pages)
            print(name, "commit", lat, flush=True)
            win = one_window(sims[args.events].url, n, cps, lands)
            print(name, "window", win, flush=True)
            row = {"backend": name, **lat, "pages_per_s": win["pages"] / win["seconds"], "events": win["events"],
                   "rss_mb": win["rss_mb"]}
            if args.big:
                big = one_window(sims[args.big].url, 10 + n, *backends()[n][1:])
                row["big_events"], row["big_rss_mb"] = big["events"], big["rss_mb"]
                row["big_pages_per_s"] = big["pages"] / big["seconds"]
                print(name, "big window", big, flush=True)
            rows.append(row)
    finally:
        for sim in sims.values():
            sim.stop()
        moto.stop()
        pg.close()
    write(rows, args, time.perf_counter() - t_start)


def write(rows: list[dict[str, Any]], args: argparse.Namespace, total: float) -> None:
    base = rows[0]
    lines = [
        "# State backends: cost per page",
        "",
        f"Measured by `make bench-stores` on {dt.date.today().isoformat()} ({platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}), {total:.0f} s in all. Ratios are to the "
        "first row, measured in the same run. moto is an emulator in Python: its figures show the work a "
        "backend does per page, not AWS's latency.",
        "",
        f"Commit: one pull-loop page step against the store alone ({args.pages} pages of 1,000 ids into one "
        f"window): `known_ids` (dedupe lookup) then `commit` with the page's ids. Window: `pull_window` over "
        f"{args.events:,} events (pages of 1,000) from the simulator, in a process of its own.",
        "",
        "| backend | lookup ms | commit ms (median) | commit ms (p95) | page step vs sqlite | window pages/s | "
        "vs sqlite | peak RSS MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['lookup_ms']:.2f} | {r['commit_ms']:.2f} | {r['commit_p95_ms']:.2f} | "
            f"{r['step_ms'] / base['step_ms']:.1f}x | {r['pages_per_s']:.1f} | "
            f"{r['pages_per_s'] / base['pages_per_s']:.2f} | {r['rss_mb']:.0f} |")
    if args.big:
        lines += ["", f"A window of {args.big:,} events per backend (memory must stay flat in window size):", "",
                  "| backend | events | pages/s | peak RSS MB |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {r['backend']} | {r['big_events']:,} | {r['big_pages_per_s']:.1f} | {r['big_rss_mb']:.0f} |"
                  for r in rows]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
