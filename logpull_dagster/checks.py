"""Asset checks on ``logs/<source>``: completeness you can see in the Dagster UI.

Evaluated by the asset itself at the end of every run, over the run's windows (one result per check
per run, naming every window that fails and what to run), and, for freshness, also by a sensor every
``freshness_interval`` so a stalled source turns red even when nothing runs.

* ``window_complete``: every window of the run was read to its last page (no token outstanding); a
  window with pages an operator skipped (a known gap) makes it a warning, never a pass;
* ``events_inside_window``: every landed event's own time lies in its window;
* ``no_duplicate_ids``: no event id landed twice in a window;
* ``previous_window_complete``: no gap before the run's windows (the previous window is complete);
* ``freshness``: the newest complete window ends at most ``max_delay`` before now.
"""

import datetime as dt

import dagster as dg

from logpull_dagster import skips
from logpull_dagster.checkpoints import Checkpoint, CheckpointStore
from logpull_dagster.config import SourceBase
from logpull_dagster.keys import PLAIN, ResourceKeys, freshness_sensor, logs_key
from logpull_dagster.landing import LandingStore
from logpull_dagster.ledger import WindowAudit, audit_window, freshness
from logpull_dagster.resources import CheckpointsResource
from logpull_dagster.windows import CADENCE_STEP, Window, key_for_window, rfc3339, window_for_key

DESCRIPTIONS = {
    "window_complete": "Every window of the run was read to its last page: no page token outstanding.",
    "events_inside_window": "Every landed event's own timestamp lies inside its half-open window.",
    "no_duplicate_ids": "No event id landed twice in a window.",
    "previous_window_complete": "The window before the run's first window is complete: no gap.",
    "freshness": "The newest complete window ends at most max_delay before now.",
}


def check_specs(src: SourceBase) -> list[dg.AssetCheckSpec]:
    return [dg.AssetCheckSpec(name, asset=logs_key(src.name), description=text)
            for name, text in DESCRIPTIONS.items()]


def check_results(src: SourceBase, keys: list[str], audited: dict[str, WindowAudit | None],
                  store: CheckpointStore, landing: LandingStore, now: dt.datetime,
                  wiring: ResourceKeys = PLAIN) -> list[dg.AssetCheckResult]:
    """The five checks over the windows ``keys`` of a run; ``audited``: the windows whose landed events
    to read again (those the run landed new events in), with their audit if it was done already."""
    windows = [window_for_key(src.cadence, k) for k in keys]
    rows = {w: store.get(src.name, "pull", rfc3339(w.start)) for w in windows}
    results = []

    unfinished = {key_for_window(src.cadence, w): _state(cp) for w, cp in rows.items() if not _done(cp)}
    gapped = {key_for_window(src.cadence, w): _gap(cp) for w, cp in rows.items() if _gap(cp)}
    if unfinished:
        text = (f"{len(unfinished)} window(s) not read to their last page: "
                + "; ".join(f"{k}: {v}" for k, v in list(unfinished.items())[:10])
                + f". Run: {wiring.rerun(src.name, sorted(unfinished))}")
        if gapped:
            text += f". Known gaps: {_gaps_text(gapped)}"
    elif gapped:
        text = f"read to their last page, but with known gaps: {_gaps_text(gapped)}"
    else:
        text = f"{len(keys)} window(s) complete"
    # A known gap is an operator's decision, not a failure of this run: a warning, never a pass.
    results.append(_result("window_complete", not unfinished and not gapped, {**gapped, **unfinished}, text,
                           {"windows": len(keys), "known_gaps": len(gapped)},
                           dg.AssetCheckSeverity.ERROR if unfinished else dg.AssetCheckSeverity.WARN))

    outside: dict[str, int] = {}
    duplicates: dict[str, int] = {}
    events = 0
    for w, cp in rows.items():
        key = key_for_window(src.cadence, w)
        if key in audited and cp is not None:
            audit = audited[key] or audit_window(landing, store, src.name, w, cp.page_seq)
            events += audit.events
            if audit.outside:
                outside[key] = len(audit.outside)
            if audit.duplicates:
                duplicates[key] = audit.duplicates
    where = "Inspect the landed pages; reset the window with `logpull reset` and re-read it"
    results.append(_result(
        "events_inside_window", not outside, outside,
        f"events outside their window in {outside}. {where}" if outside else f"{events} events checked",
        {"events_checked": events}))
    results.append(_result(
        "no_duplicate_ids", not duplicates, duplicates,
        f"duplicate event ids in {duplicates}. {where}" if duplicates else f"{events} events checked",
        {"events_checked": events}))

    first = min(windows)
    prev = Window(first.start - CADENCE_STEP[src.cadence], first.start)
    gaps, known = {}, {}
    if prev.start >= src.start:
        cp = store.get(src.name, "pull", rfc3339(prev.start))
        if not _done(cp):
            gaps[key_for_window(src.cadence, prev)] = _state(cp)
        elif _gap(cp):
            known[key_for_window(src.cadence, prev)] = _gap(cp)
    if gaps:
        text = (f"gap before {key_for_window(src.cadence, first)}: {gaps}. Run: {wiring.rerun(src.name, sorted(gaps))} "
                f"(the orchestrator schedule requests it too)")
    elif known:
        text = f"known gap before {key_for_window(src.cadence, first)}: {_gaps_text(known)}"
    else:
        text = "no gap before the run's windows"
    results.append(_result("previous_window_complete", not gaps and not known, {**known, **gaps}, text, {},
                           dg.AssetCheckSeverity.ERROR if gaps else dg.AssetCheckSeverity.WARN))
    results.append(freshness_result(src, store, now))
    return results


def freshness_result(src: SourceBase, store: CheckpointStore, now: dt.datetime) -> dg.AssetCheckResult:
    f = freshness(src, store, now)
    if f.newest_complete is None:
        text = f"no complete window yet (max delay {f.max_delay})"
    else:
        text = (f"newest complete window {key_for_window(src.cadence, f.newest_complete)} ended {f.lag} ago "
                f"(max {f.max_delay})")
        if not f.ok:
            text += "; is the daemon running and the schedule on? see docs/operations.md"
    return dg.AssetCheckResult(
        check_name="freshness", passed=f.ok, severity=dg.AssetCheckSeverity.ERROR, description=text,
        metadata={"lag_minutes": round(f.lag.total_seconds() / 60, 1) if f.lag is not None else -1.0,
                  "max_delay_minutes": round(f.max_delay.total_seconds() / 60, 1)})


def _result(name: str, passed: bool, failing: dict[str, object], text: str, extra: dict[str, int],
            severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name, passed=passed, severity=severity, description=text,
        metadata={**extra, "failing_windows": dg.MetadataValue.json(failing)},
    )


def _done(cp: Checkpoint | None) -> bool:
    return cp is not None and cp.is_complete


def _gap(cp: Checkpoint | None) -> str:
    """The known gap of a complete window (pages an operator skipped), or ""."""
    return skips.describe(cp.stats) if cp is not None and cp.is_complete else ""


def _gaps_text(gaps: dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in list(gaps.items())[:10]) + (" ..." if len(gaps) > 10 else "")


def _state(cp: Checkpoint | None) -> str:
    if cp is None:
        return "never read"
    if cp.status == "failed":
        return f"failed: {(cp.last_error or '')[:200]}"
    return f"{cp.status}, at page {cp.pages_read + 1}"


def build_freshness_sensor(src: SourceBase, keys: ResourceKeys = PLAIN) -> dg.SensorDefinition:
    @dg.sensor(
        name=freshness_sensor(src.name),
        required_resource_keys={keys.checkpoints},
        minimum_interval_seconds=max(1, int(src.freshness_interval.total_seconds())),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Records the freshness check of logs/{src.name} even when no run happens.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        checkpoints: CheckpointsResource = getattr(context.resources, keys.checkpoints)
        r = freshness_result(src, checkpoints.store, dt.datetime.now(dt.UTC))
        return dg.SensorResult(asset_events=[dg.AssetCheckEvaluation(
            asset_key=logs_key(src.name), check_name="freshness", passed=r.passed, severity=r.severity,
            description=r.description, metadata=r.metadata)])

    return _sensor
