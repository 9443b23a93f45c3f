"""``make demo`` and ``make ui``: the whole pipeline against the bundled simulator, on one laptop.

``python -m logpull_dagster.demo`` starts the simulator on a free loopback port, writes a config for
one Google Workspace ``login`` source pointing at it, pulls the last few settled hourly windows
through the real Dagster assets (checkpoint after every page, landing, then SIEM delivery launched
by the delivery sensor, exactly as the daemon would), prints a summary per window and stops the
simulator. The simulator throttles and drops a few requests on purpose, so the retries show.

``python -m logpull_dagster.demo ui`` starts the simulator again and runs ``dagster dev`` on
127.0.0.1 against the same state, so the demo's runs and partitions are there to look at.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from logpull_dagster.config import demo_config
from logpull_dagster.simulator import Simulator

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("LOGPULL_DEMO_DIR", ".logpull/demo")).resolve()
TOKEN_ENV, TOKEN = "LOGPULL_DEMO_TOKEN", "demo-token"
WINDOWS = 4
FAULTS = [
    {"kind": "429", "retry_after": 1, "after": 2},   # throttled, with Retry-After
    {"kind": "503", "after": 5},                     # quota error, no Retry-After
    {"kind": "drop", "after": 8},                    # connection dropped mid-request
]


def prepare(sim_url: str) -> dict[str, str]:
    """Write the demo config and DAGSTER_HOME; return the environment the pipeline runs in."""
    STATE.mkdir(parents=True, exist_ok=True)
    cfg = demo_config(sim_url, state_dir=str(STATE))
    (STATE / "logpull.yaml").write_text(
        "# Written by `make demo`: one Google Workspace login stream from the bundled simulator.\n"
        + yaml.safe_dump(cfg, sort_keys=False))
    home = STATE / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {"LOGPULL_CONFIG": str(STATE / "logpull.yaml"), "DAGSTER_HOME": str(home), TOKEN_ENV: TOKEN}
    os.environ.update(env)
    return env


def run_demo() -> int:
    t0 = time.monotonic()
    with Simulator(seed=7, events_per_hour=3000, token=TOKEN, faults=FAULTS) as sim:
        print(f"simulator: Google Workspace Reports API on {sim.url} (seeded, with injected 429/503/drop)")
        prepare(sim.url)
        import dagster as dg  # after the environment is set: Dagster reads DAGSTER_HOME at import time

        from logpull_dagster.config import load_config
        from logpull_dagster.definitions import build_definitions
        from logpull_dagster.keys import RANGE_END, RANGE_START, deliver_job, delivery_sensor
        from logpull_dagster.plugins import open_checkpoints
        from logpull_dagster.windows import due_windows, key_for_window, rfc3339

        config = load_config()
        src = config.sources[0]
        defs = build_definitions(config)
        now = dt.datetime.now(dt.UTC)
        windows = due_windows(src.cadence, src.start, now, src.settle_lag)[-WINDOWS:]
        job = defs.resolve_implicit_global_asset_job_def()
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        pulls: dict[str, dict[str, object]] = {}
        with dg.DagsterInstance.get() as instance:
            for w in windows:
                key = key_for_window(src.cadence, w)
                res = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False,
                                             run_config=quiet, asset_selection=[dg.AssetKey(["logs", src.name])])
                pulls[key] = {**_metadata(res), "ok": res.success}
                print(f"  pulled {key}: {pulls[key].get('new_events', 0)} new events in "
                      f"{pulls[key].get('pages_read', 0)} pages" + ("" if res.success else "  (FAILED: see make ui)"))

            # What the daemon does every 30 s: the delivery sensor sees the windows with new data and
            # launches one delivery run for each.
            sensor = defs.resolve_sensor_def(delivery_sensor(src.name))
            cursor_file = STATE / "sensor_cursor"  # the daemon keeps this in its storage
            cursor = cursor_file.read_text() if cursor_file.exists() else None
            tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor))
            if tick.cursor:
                cursor_file.write_text(tick.cursor)
            delivery = defs.resolve_job_def(deliver_job(src.name))
            for req in tick.run_requests:
                res = delivery.execute_in_process(partition_key=req.partition_key, instance=instance,
                                                  raise_on_error=False, run_config=quiet, tags=req.tags)
                span = req.partition_key or f"{req.tags[RANGE_START]}...{req.tags[RANGE_END]}"
                delivered = sum(int(m.materialization.metadata["delivered_events"].value)  # type: ignore[arg-type]
                                for m in res.get_asset_materialization_events())
                print(f"  delivered {span}: {delivered} events in one run"
                      + ("" if res.success else "  (FAILED: see make ui)"))

        # The summary comes from the checkpoint store, the source of truth for completeness.
        store = open_checkpoints(config)
        siem_dir = config.resolve(config.siem.path) / src.name
        rows = []
        for w in windows:
            key = key_for_window(src.cadence, w)
            pulled = store.get(src.name, "pull", rfc3339(w.start))
            sent = store.get(src.name, "deliver", rfc3339(w.start))
            files = sorted(siem_dir.glob(f"{src.name}-{w.slug}-b*.jsonl"))
            rows.append({
                "window": key,
                "events": pulled.events if pulled else 0,
                "pages": pulls[key].get("pages_read", 0),
                "http_retries": pulls[key].get("http_retries", 0),
                "events/s": pulls[key].get("events_per_second", 0.0),
                "status": pulled.status if pulled else "not started",
                "delivered": sent.events if sent else 0,
                "output": f"{files[0].name} (+{len(files) - 1} more)" if files else "-",
            })
        store.close()

    import pandas as pd

    print()
    print(pd.DataFrame(rows).to_string(index=False))
    total = sum(int(r["delivered"]) for r in rows)  # type: ignore[call-overload]
    print(f"\n{total} events delivered to the SIEM folder {siem_dir}")
    print("  each line: the untouched API event under \"event\" plus source, window, event_id, pulled_at")
    print(f"checkpoints: {config.resolve(config.checkpoints.path)}")
    print(f"landed pages: {config.resolve(config.landing.path) / src.name}")
    print(f"the ledger of these windows:  LOGPULL_CONFIG={os.environ['LOGPULL_CONFIG']} logpull status")
    print("\nOpen the Dagster UI on these runs and partitions:  make ui   (then http://127.0.0.1:3000)")
    print(f"demo finished in {time.monotonic() - t0:.1f}s; simulator stopped")
    exact = all(r["status"] == "complete" and r["delivered"] == r["events"] for r in rows)
    return 0 if exact and total > 0 else 1


def _metadata(res: object) -> dict[str, object]:
    mats = res.get_asset_materialization_events()  # type: ignore[attr-defined]
    if not mats:
        return {}
    return {k: v.value for k, v in mats[-1].materialization.metadata.items()}


def run_ui(port: int) -> int:
    with Simulator(seed=7, events_per_hour=3000, token=TOKEN) as sim:
        env = {**os.environ, **prepare(sim.url)}
        print(f"simulator on {sim.url}; Dagster UI on http://127.0.0.1:{port} (Ctrl-C stops both)")
        cmd = [str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port),
               "-w", str(ROOT / "workspace.yaml")]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
        # Stopped by Ctrl-C or SIGTERM alike: take dagster dev down with us, then the simulator.
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            return proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m logpull_dagster.demo", description=__doc__.split("\n")[0])
    parser.add_argument("command", nargs="?", choices=["run", "ui"], default="run")
    parser.add_argument("--port", type=int, default=3000, help="UI port for `ui` (default 3000)")
    args = parser.parse_args()
    return run_ui(args.port) if args.command == "ui" else run_demo()


if __name__ == "__main__":
    sys.exit(main())
