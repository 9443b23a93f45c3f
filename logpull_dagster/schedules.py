"""The orchestrator: one schedule per source, running by default.

Each tick asks ``orchestration.plan`` which windows to pull, reading the checkpoint store (the source
of truth for completeness) and Dagster's queue (so a window a queued run will read is not asked for
twice). It is also the scavenger: failed windows and windows whose run died (lease lapsed) come back
on the next tick, oldest first, bounded per tick.
"""

import datetime as dt
import time

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from logpull_dagster.checkpoints import Checkpoint
from logpull_dagster.config import SourceConfig
from logpull_dagster.orchestration import plan
from logpull_dagster.resources import SqliteCheckpoints
from logpull_dagster.windows import key_for_window, rfc3339, window_for_key

# Runs not yet reading: their window has no live lease yet, but they will read it.
_WAITING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]
# A started run without a lease may be waiting for a pool slot; past this age it is presumed dead
# (the default run launcher cannot report a dead worker, so Dagster may show it STARTED forever).
_STALE_AFTER = 6 * 3600.0


def build_pull_schedule(src: SourceConfig, job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=f"pull_{src.name}_schedule",
        cron_schedule=src.schedule,
        job=job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Pulls every settled window of {src.name} not yet complete (oldest first, at most "
                    f"{src.max_windows_per_tick} a tick) and re-reads recent ones for late events.",
    )
    def _schedule(
        context: dg.ScheduleEvaluationContext, checkpoints: SqliteCheckpoints
    ) -> dg.SkipReason | list[dg.RunRequest]:
        now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        rows = {cp.window_start: cp for cp in checkpoints.store.list(src.name, "pull")}
        requests = plan(
            cadence=src.cadence, first=src.start, now=now.astimezone(dt.UTC),
            settle_lag=src.settle_lag, lookback=src.lookback, lookback_every=src.lookback_every,
            max_windows=src.max_windows_per_tick, checkpoints=rows,
            in_flight=_in_flight(context, src, job.name, rows),
        )
        if not requests:
            return dg.SkipReason(f"every due window of {src.name} is complete or being read")
        tick = rfc3339(now)
        return [
            dg.RunRequest(
                # One tick never asks twice for a window, even if the tick itself is retried.
                run_key=f"{key_for_window(src.cadence, r.window)}@{tick}",
                partition_key=key_for_window(src.cadence, r.window),
                tags={"logpull/source": src.name, "logpull/reason": r.reason},
            )
            for r in requests
        ]

    return _schedule


def _in_flight(context: dg.ScheduleEvaluationContext, src: SourceConfig, job_name: str,
               rows: dict[str, Checkpoint]) -> set[str]:
    """Window starts that a queued or started run of this source's job is about to read or reading.

    A started run counts unless it held the window's lease and let it lapse (it died reading), or it
    is older than _STALE_AFTER and never took the lease.
    """
    records = context.instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, statuses=[*_WAITING, dg.DagsterRunStatus.STARTED]),
    )
    now = time.time()
    out = set()
    for rec in records:
        key = rec.dagster_run.tags.get("dagster/partition")
        if not key:
            continue
        start = rfc3339(window_for_key(src.cadence, key).start)
        if rec.dagster_run.status == dg.DagsterRunStatus.STARTED:
            cp = rows.get(start)
            if cp is not None and cp.lease_owner == rec.dagster_run.run_id:
                if cp.lease_expires <= now:
                    continue  # died holding the window
            elif now - (rec.start_time or rec.create_timestamp.timestamp()) > _STALE_AFTER:
                continue
        out.add(start)
    return out
