"""``make demo`` and ``make ui``: the whole pipeline against the bundled simulator, on one laptop.

``python -m logpull_dagster.demo`` starts the simulator on a free loopback port (it serves Google's
Reports API with Google's OAuth token endpoint, and Okta's System Log), writes a config for two
sources pointing at it: Google Workspace ``login`` and ``admin`` read through a service account with
domain-wide delegation (a key made for the demo, which the simulator's token endpoint trusts), and
Okta with an API token. It pulls the last few settled hourly windows of every stream through the real
Dagster assets (checkpoint after every page, landing, then SIEM delivery launched by the delivery
sensor, exactly as the daemon would), prints one table per source and stops the simulator. The
simulator throttles and drops a few requests on purpose, so the retries show.

``python -m logpull_dagster.demo ui`` starts the simulator again and runs ``dagster dev`` on
127.0.0.1 against the same state, so the demo's runs and partitions are there to look at.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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
from logpull_dagster.simulator.google_reports import GoogleReportsApi

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("LOGPULL_DEMO_DIR", ".logpull/demo")).resolve()
TOKEN_ENV, TOKEN = "LOGPULL_DEMO_TOKEN", "demo-token"
SA_FILE_ENV = "LOGPULL_DEMO_SA_FILE"
SA_EMAIL, SA_KEY_ID, ADMIN = "logpull-demo@logpull-demo.iam.gserviceaccount.com", "demo-key-1", "admin@example.com"
WINDOWS = 4
FAULTS = [
    {"kind": "429", "retry_after": 1, "after": 2},   # throttled, with Retry-After
    {"kind": "503", "after": 5},                     # quota error, no Retry-After
    {"kind": "drop", "after": 8},                    # connection dropped mid-request
]


def service_account_key() -> tuple[Path, bytes]:
    """The demo's service-account key file (made on first use, as the Cloud console hands one out), and
    its public key for the simulator's token endpoint to trust. A demo key, for the simulator only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = STATE / "service-account.json"
    if path.exists():
        key = serialization.load_pem_private_key(json.loads(path.read_text())["private_key"].encode(), None)
    else:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        path.touch(mode=0o600)
        path.write_text(json.dumps({
            "type": "service_account", "project_id": "logpull-demo", "private_key_id": SA_KEY_ID,
            "private_key": pem, "client_email": SA_EMAIL, "client_id": "100000000000000000001",
            "token_uri": "https://oauth2.googleapis.com/token"}, indent=2))
    public = key.public_key().public_bytes(serialization.Encoding.PEM,  # type: ignore[union-attr]
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, public


def prepare(sim: Simulator) -> dict[str, str]:
    """Write the demo config, its service-account key and DAGSTER_HOME, and make the simulator trust the
    key (what the Admin console's domain-wide delegation does); return the environment to run in."""
    STATE.mkdir(parents=True, exist_ok=True)
    key_file, public = service_account_key()
    next(a for a in sim.apis if isinstance(a, GoogleReportsApi)).trust_service_account(
        SA_EMAIL, public, SA_KEY_ID, subjects=[ADMIN])
    cfg = demo_config(sim.url, state_dir=str(STATE))
    [gws] = cfg["sources"]
    del gws["application"], gws["access_token"]
    gws.update(name="gws", applications=["login", "admin"],
               service_account={"file": {"env": SA_FILE_ENV}, "subject": ADMIN, "token_uri": f"{sim.url}/token"},
               # the demo reads each window once, now: no re-reads of the lag table's lookback
               overrides={app: {"settle_lag": "5m", "lookback": "0s"} for app in ("login", "admin")})
    del gws["settle_lag"]
    okta = {"name": "okta", "type": "okta", "base_url": sim.url, "token": {"env": TOKEN_ENV}, "cadence": "hourly",
            "start": gws["start"], "settle_lag": "5m", "lookback": "0s"}
    cfg["sources"] = [gws, okta]
    (STATE / "logpull.yaml").write_text(
        "# Written by `make demo`: Google Workspace (login, admin; a service account) and Okta, from the\n"
        "# bundled simulator.\n" + yaml.safe_dump(cfg, sort_keys=False))
    home = STATE / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    env = {"LOGPULL_CONFIG": str(STATE / "logpull.yaml"), "DAGSTER_HOME": str(home), TOKEN_ENV: TOKEN,
           SA_FILE_ENV: str(key_file)}
    os.environ.update(env)
    return env


def run_demo() -> int:
    t0 = time.monotonic()
    with Simulator(seed=7, events_per_hour=3000, token=TOKEN, faults=FAULTS) as sim:
        print(f"simulator on {sim.url}: Google's Reports API and token endpoint, Okta's System Log "
              f"(seeded, with injected 429/503/drop)")
        prepare(sim)
        import dagster as dg  # after the environment is set: Dagster reads DAGSTER_HOME at import time

        from logpull_dagster.config import load_config
        from logpull_dagster.definitions import build_definitions
        from logpull_dagster.keys import RANGE_END, RANGE_START, deliver_job, delivery_sensor, logs_key
        from logpull_dagster.plugins import open_checkpoints
        from logpull_dagster.windows import due_windows, key_for_window, rfc3339

        config = load_config()
        defs = build_definitions(config)
        now = dt.datetime.now(dt.UTC)
        job = defs.resolve_implicit_global_asset_job_def()
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        tables: dict[str, list[dict[str, object]]] = {}
        store = open_checkpoints(config)
        with dg.DagsterInstance.get() as instance:
            for src in config.sources:  # the streams: gws_login, gws_admin, okta
                windows = due_windows(src.cadence, src.start, now, src.settle_lag)[-WINDOWS:]
                pulls: dict[str, dict[str, object]] = {}
                for w in windows:
                    key = key_for_window(src.cadence, w)
                    res = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False,
                                                 run_config=quiet, asset_selection=[logs_key(src.name)])
                    pulls[key] = {**_metadata(res), "ok": res.success}
                    print(f"  {src.name}: pulled {key}: {pulls[key].get('new_events', 0)} new events in "
                          f"{pulls[key].get('pages_read', 0)} pages"
                          + ("" if res.success else "  (FAILED: see make ui)"))

                # What the daemon does every 30 s: the delivery sensor sees the windows with new data
                # and launches one delivery run for them.
                sensor = defs.resolve_sensor_def(delivery_sensor(src.name))
                cursor_file = STATE / f"sensor_cursor.{src.name}"  # the daemon keeps this in its storage
                cursor = cursor_file.read_text() if cursor_file.exists() else None
                with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor,
                                             resources=dict(defs.resources or {})) as ctx:
                    tick = sensor.evaluate_tick(ctx)
                if tick.cursor:
                    cursor_file.write_text(tick.cursor)
                delivery = defs.resolve_job_def(deliver_job(src.name))
                for req in tick.run_requests:
                    res = delivery.execute_in_process(partition_key=req.partition_key, instance=instance,
                                                      raise_on_error=False, run_config=quiet, tags=req.tags)
                    span = req.partition_key or f"{req.tags[RANGE_START]}...{req.tags[RANGE_END]}"
                    delivered = sum(int(m.materialization.metadata["delivered_events"].value)  # type: ignore[arg-type]
                                    for m in res.get_asset_materialization_events())
                    print(f"  {src.name}: delivered {span}: {delivered} events in one run"
                          + ("" if res.success else "  (FAILED: see make ui)"))

                # The summary comes from the checkpoint store, the source of truth for completeness.
                siem_dir = config.resolve(config.siem.path) / src.name
                rows = tables.setdefault(src.group, [])
                for w in windows:
                    key = key_for_window(src.cadence, w)
                    pulled = store.get(src.name, "pull", rfc3339(w.start))
                    sent = store.get(src.name, "deliver", rfc3339(w.start))
                    files = sorted(siem_dir.glob(f"{src.name}-{w.slug}-b*.jsonl"))
                    rows.append({
                        "stream": src.name,
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

    total = 0
    for source, rows in tables.items():
        print(f"\nsource {source}")
        print(pd.DataFrame(rows).to_string(index=False))
        total += sum(int(r["delivered"]) for r in rows)  # type: ignore[call-overload]
    siem_root = config.resolve(config.siem.path)
    print(f"\n{total} events delivered to the SIEM folder {siem_root} (one folder per stream)")
    print("  each line: the untouched API event under \"event\" plus source, window, event_id, pulled_at")
    print(f"checkpoints: {config.resolve(config.checkpoints.path)}")
    print(f"landed pages: {config.resolve(config.landing.path)}")
    print(f"the ledger of these windows:  LOGPULL_CONFIG={os.environ['LOGPULL_CONFIG']} logpull status")
    print("\nOpen the Dagster UI on these runs and partitions:  make ui   (then http://127.0.0.1:3000)")
    print(f"demo finished in {time.monotonic() - t0:.1f}s; simulator stopped")
    rows = [r for rs in tables.values() for r in rs]
    exact = all(r["status"] == "complete" and r["delivered"] == r["events"] for r in rows)
    return 0 if exact and total > 0 and len(tables) == 2 else 1


def _metadata(res: object) -> dict[str, object]:
    mats = res.get_asset_materialization_events()  # type: ignore[attr-defined]
    if not mats:
        return {}
    return {k: v.value for k, v in mats[-1].materialization.metadata.items()}


def run_ui(port: int) -> int:
    with Simulator(seed=7, events_per_hour=3000, token=TOKEN) as sim:
        env = {**os.environ, **prepare(sim)}
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
