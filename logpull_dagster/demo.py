"""``make demo`` and ``make ui``: the whole pipeline against the bundled simulator, on one laptop.

``python -m logpull_dagster.demo`` starts the simulator on a free loopback port (it serves Google's
Reports API with Google's OAuth token endpoint, Okta's System Log and GitHub's enterprise audit log),
writes a config for three sources pointing at it: Google Workspace ``login`` and ``admin`` read through
a service account with domain-wide delegation (a key made for the demo, which the simulator's token
endpoint trusts), Okta with an API token, and GitHub's audit log of enterprise ``acme`` with a token.
Every stream goes to two sinks: the file sink ``siem`` (a folder of JSONL files)
and ``splunk``, the Splunk HEC sink with indexer acknowledgement, pointed at the bundled HEC receiver
(``simulator/hec.py``) that the demo starts on another loopback port for its lifetime. It pulls the last
few settled hourly windows of every stream through the real Dagster assets (checkpoint after every page,
landing, then delivery to each sink launched by that sink's delivery sensor, exactly as the daemon
would), prints one table per source (events delivered per sink, from each sink's delivery checkpoint),
counts at the HEC receiver what it indexed, and stops the simulator and the receiver. The simulator
throttles and drops a few requests on purpose, so the retries show.

``python -m logpull_dagster.demo ui`` starts the simulator and a HEC receiver again (the config is
rewritten with their new ports) and runs ``dagster dev`` on 127.0.0.1 against the same state, so the
demo's runs and partitions are there to look at. The receiver keeps its index in memory: what
``make demo`` indexed went with it (the delivery checkpoints keep the record), and deliveries launched
from the UI are indexed by the receiver ``make ui`` runs.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
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
from logpull_dagster.simulator.hec import HecReceiver

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("LOGPULL_DEMO_DIR", ".logpull/demo")).resolve()
TOKEN_ENV, TOKEN = "LOGPULL_DEMO_TOKEN", "demo-token"
SA_FILE_ENV = "LOGPULL_DEMO_SA_FILE"
HEC_TOKEN_ENV, HEC_TOKEN = "LOGPULL_DEMO_HEC_TOKEN", "demo-hec-token"
FILE_SINK, HEC_SINK = "siem", "splunk"
SA_EMAIL, SA_KEY_ID, ADMIN = "logpull-demo@logpull-demo.iam.gserviceaccount.com", "demo-key-1", "admin@example.com"
# The last settled hourly windows of each stream the demo reads (LOGPULL_DEMO_WINDOWS, 1..24: the test reads
# two, to keep CI time).
WINDOWS = min(24, max(1, int(os.environ.get("LOGPULL_DEMO_WINDOWS", "4"))))
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


def start_hec() -> HecReceiver:
    """The bundled HEC receiver on a free loopback port, accepting the demo's token (with indexer acks)."""
    hec = HecReceiver()
    hec.add_token(HEC_TOKEN)
    return hec


def prepare(sim: Simulator, hec: HecReceiver) -> dict[str, str]:
    """Write the demo config (two sinks: the file sink ``siem`` and ``splunk`` at ``hec``), its
    service-account key and DAGSTER_HOME, and make the simulator trust the key (what the Admin console's
    domain-wide delegation does); return the environment to run in."""
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
    # GitHub's default rate_limit is its documented 1,750 queries an hour (a request every 2 s): the
    # simulator is no GitHub, so the demo lifts it rather than wait minutes for its pages.
    github = {"name": "github", "type": "github", "enterprise": "acme", "base_url": sim.url,
              "token": {"env": TOKEN_ENV}, "cadence": "hourly", "start": gws["start"], "settle_lag": "5m",
              "lookback": "0s", "rate_limit": None}
    cfg["sources"] = [gws, okta, github]
    # Every stream to both sinks (no deliver_to: every sink): the folder, and Splunk HEC at the receiver.
    cfg = {k: v for k, v in cfg.items() if k != "siem"} | {"sinks": {
        FILE_SINK: cfg["siem"],
        HEC_SINK: {"type": "splunk_hec", "url": hec.url, "token": {"env": HEC_TOKEN_ENV}, "ack": True,
                   "ack_timeout": "30s"}}}
    (STATE / "logpull.yaml").write_text(
        "# Written by `make demo`: Google Workspace (login, admin; a service account), Okta and GitHub, from\n"
        "# the bundled simulator, delivered to a folder (siem) and to the bundled Splunk HEC receiver (splunk).\n"
        + yaml.safe_dump(cfg, sort_keys=False))
    home = STATE / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    init_instance(home)
    env = {"LOGPULL_CONFIG": str(STATE / "logpull.yaml"), "DAGSTER_HOME": str(home), TOKEN_ENV: TOKEN,
           SA_FILE_ENV: str(key_file), HEC_TOKEN_ENV: HEC_TOKEN}
    os.environ.update(env)
    return env


def init_instance(home: Path) -> None:
    """Create the storage of the Dagster instance at ``home`` (its ``dagster.yaml``) and bring it to the
    current schema, once, in this process, before anything can open it concurrently: what
    ``dagster instance migrate`` does. On a fresh home with the SQLite storage, ``dagster dev`` starts the
    webserver, the daemon and a code server at once and each creates the databases it finds missing; two
    that race both stamp alembic's version table, which then has "more than one head" and the instance
    stays unusable. On a home already created this only checks the schema (a no-op when current)."""
    import dagster as dg

    # upgrade() prints "Updating event log storage ..." itself, on every call: noise in the demo's report.
    with dg.DagsterInstance.from_config(str(home)) as instance, contextlib.redirect_stdout(io.StringIO()):
        instance.upgrade()


def run_demo() -> int:
    t0 = time.monotonic()
    with Simulator(seed=7, events_per_hour=3000, token=TOKEN, faults=FAULTS) as sim, start_hec() as hec:
        print(f"simulator on {sim.url}: Google's Reports API and token endpoint, Okta's System Log, GitHub's "
              f"audit log (seeded, with injected 429/503/drop)")
        print(f"Splunk HEC receiver on {hec.url}: the bundled HTTP Event Collector, indexer acknowledgement on")
        prepare(sim, hec)
        import dagster as dg  # after the environment is set: Dagster reads DAGSTER_HOME at import time

        from logpull_dagster.config import load_config
        from logpull_dagster.definitions import build_definitions
        from logpull_dagster.keys import RANGE_END, RANGE_START, logs_key
        from logpull_dagster.plugins import open_checkpoints
        from logpull_dagster.targets import targets
        from logpull_dagster.windows import due_windows, key_for_window, rfc3339

        config = load_config()
        defs = build_definitions(config)
        now = dt.datetime.now(dt.UTC)
        job = defs.resolve_implicit_global_asset_job_def()
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        tables: dict[str, list[dict[str, object]]] = {}
        store = open_checkpoints(config)
        with dg.DagsterInstance.get() as instance:
            for src in config.sources:  # the streams: gws_login, gws_admin, okta, github
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

                # What the daemon does every 30 s: each sink's delivery sensor (one per stream and sink) sees
                # the windows with new data and launches one delivery run for them, to its sink only.
                stream_targets = targets(config.all_sinks, [src])
                # Windows already delivered to the HEC sink by an earlier `make demo` on this state: that
                # receiver is gone with its index (in memory), so this one is not expected to hold them.
                hec_earlier = {rfc3339(w.start) for w in windows for t in stream_targets if t.sink == HEC_SINK
                               and _delivered(store, src.name, t.stage, rfc3339(w.start))}
                for target in stream_targets:
                    sensor = defs.resolve_sensor_def(target.sensor)
                    # the daemon keeps each sensor's cursor in its storage; the file sink's keeps its old name
                    cursor_file = STATE / (f"sensor_cursor.{src.name}" if target.sink == FILE_SINK
                                           else f"sensor_cursor.{target.sensor}")
                    cursor = cursor_file.read_text() if cursor_file.exists() else None
                    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor,
                                                 resources=dict(defs.resources or {})) as ctx:
                        tick = sensor.evaluate_tick(ctx)
                    if tick.cursor:
                        cursor_file.write_text(tick.cursor)
                    delivery = defs.resolve_job_def(target.job)
                    for req in tick.run_requests:
                        res = delivery.execute_in_process(partition_key=req.partition_key, instance=instance,
                                                          raise_on_error=False, run_config=quiet, tags=req.tags)
                        span = req.partition_key or f"{req.tags[RANGE_START]}...{req.tags[RANGE_END]}"
                        delivered = sum(int(m.materialization.metadata["delivered_events"].value)  # type: ignore[arg-type]
                                        for m in res.get_asset_materialization_events())
                        print(f"  {src.name}: delivered {span} to {target.sink}: {delivered} events in one run"
                              + ("" if res.success else "  (FAILED: see make ui)"))

                # The summary comes from the checkpoint store, the source of truth for completeness, and
                # from the HEC receiver's own index.
                siem_dir = config.resolve(config.all_sinks[FILE_SINK].path) / src.name  # type: ignore[attr-defined]
                indexed = _indexed(hec, src.name)
                rows = tables.setdefault(src.group, [])
                for w in windows:
                    key, start = key_for_window(src.cadence, w), rfc3339(w.start)
                    pulled = store.get(src.name, "pull", start)
                    files = sorted(siem_dir.glob(f"{src.name}-{w.slug}-b*.jsonl"))
                    ids = indexed.get(start, [])
                    rows.append({
                        "stream": src.name,
                        "window": key,
                        "events": pulled.events if pulled else 0,
                        "pages": pulls[key].get("pages_read", 0),
                        "http_retries": pulls[key].get("http_retries", 0),
                        "events/s": pulls[key].get("events_per_second", 0.0),
                        "status": pulled.status if pulled else "not started",
                        **{t.sink: (sent.events if (sent := store.get(src.name, t.stage, start)) else 0)
                           for t in stream_targets},
                        "output": f"{files[0].name} (+{len(files) - 1} more)" if files else "-",
                        "_hec": len(ids), "_hec_unique": len(set(ids)), "_hec_earlier": start in hec_earlier,
                    })
        store.close()
        with hec.lock:
            unread = sum(len(ch.ready_at) for ch in hec.channels.values())
            acks = sum(ch.next_id for ch in hec.channels.values())
        hec_total = len(hec.indexed(HEC_TOKEN))

    import pandas as pd

    totals = dict.fromkeys(config.all_sinks, 0)
    for source, rows in tables.items():
        print(f"\nsource {source}")
        shown = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
        print(pd.DataFrame(shown).to_string(index=False))
        for sink in totals:
            totals[sink] += sum(int(r.get(sink, 0)) for r in rows)  # type: ignore[call-overload]
    rows = [r for rs in tables.values() for r in rs]
    siem_root = config.resolve(config.all_sinks[FILE_SINK].path)  # type: ignore[attr-defined]
    print(f"\n{totals[FILE_SINK]} events delivered to the SIEM folder {siem_root} (one folder per stream)")
    print("  each line: the untouched API event under \"event\" plus source, window, event_id, pulled_at, "
          "collector")
    print(f"{totals[HEC_SINK]} events delivered to Splunk HEC ({HEC_SINK}), each batch confirmed by indexer "
          f"acknowledgement")
    duplicates = sum(int(r["_hec"]) - int(r["_hec_unique"]) for r in rows)  # type: ignore[call-overload]
    # What this receiver must hold per window: every event pulled, once (HEC is at-least-once, but nothing
    # fails at this collector, so no batch is sent twice); none for a window an earlier run delivered.
    wrong = [r for r in rows if r["_hec_unique"] != (0 if r["_hec_earlier"] else r["events"])]
    earlier = sum(1 for r in rows if r["_hec_earlier"])
    if duplicates or wrong:
        said = ", ".join([f"{duplicates} of them DUPLICATES"] * bool(duplicates)
                         + [f"{len(wrong)} windows NOT matching the events pulled"] * bool(wrong))
    elif earlier:
        said = (f"each event of the {len(rows) - earlier} windows delivered now once; {earlier} windows were "
                f"delivered by an earlier make demo on this state (its receiver's index, in memory, is gone)")
    else:
        said = "each event of every window once"
    print(f"the HEC receiver indexed {hec_total} events, {said}; {acks - unread} of {acks} acks read"
          + (" (every one)" if unread == 0 else f", {unread} NEVER READ"))
    print(f"checkpoints: {config.resolve(config.checkpoints.path)}")
    print(f"landed pages: {config.resolve(config.landing.path)}")
    print(f"the ledger of these windows:  LOGPULL_CONFIG={os.environ['LOGPULL_CONFIG']} {venv_command('logpull')} "
          f"status")
    print("\nOpen the Dagster UI on these runs and partitions:  make ui   (then http://127.0.0.1:3000)")
    print(f"demo finished in {time.monotonic() - t0:.1f}s; simulator and HEC receiver stopped")
    exact = all(r["status"] == "complete" and all(r.get(s) == r["events"] for s in totals) for r in rows)
    ok = exact and not wrong and duplicates == 0 and unread == 0
    return 0 if ok and totals[FILE_SINK] > 0 and len(tables) == 3 else 1


def venv_command(name: str) -> str:
    """``name`` as the environment running the demo installed it (``.venv/bin/logpull`` after ``make demo``
    on a fresh clone, where the venv is not on PATH): relative to the working directory when inside it."""
    path = Path(sys.executable).parent / name  # not resolved: a venv's python is a link to the system's
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _delivered(store: object, stream: str, stage: str, start: str) -> bool:
    """Whether the checkpoint store says ``stage`` has delivered every landed page of the window."""
    pulled, sent = store.get(stream, "pull", start), store.get(stream, stage, start)  # type: ignore[attr-defined]
    return bool(pulled and sent and pulled.landed_pages and sent.delivered_pages >= pulled.landed_pages)


def _indexed(hec: HecReceiver, stream: str) -> dict[str, list[str]]:
    """The event ids the HEC receiver indexed for ``stream`` (HEC ``source``), by window start: each
    indexed ``event`` is the SIEM record, which names its window and event id."""
    out: dict[str, list[str]] = {}
    for raw in hec.records(HEC_TOKEN, stream):
        record = json.loads(raw)
        out.setdefault(record["window_start"], []).append(record["event_id"])
    return out


def _metadata(res: object) -> dict[str, object]:
    mats = res.get_asset_materialization_events()  # type: ignore[attr-defined]
    if not mats:
        return {}
    return {k: v.value for k, v in mats[-1].materialization.metadata.items()}


def run_ui(port: int) -> int:
    with Simulator(seed=7, events_per_hour=3000, token=TOKEN) as sim, start_hec() as hec:
        env = {**os.environ, **prepare(sim, hec)}
        print(f"simulator on {sim.url}; Splunk HEC receiver on {hec.url} (a new, empty index: what make demo "
              f"indexed went with its receiver); Dagster UI on http://127.0.0.1:{port} (Ctrl-C stops all three)")
        cmd = [str(Path(sys.executable).parent / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port),
               "-w", str(ROOT / "workspace.yaml")]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
        # Stopped by Ctrl-C or SIGTERM alike: take dagster dev down with us, then the simulator and the receiver.
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
