"""The orchestrator: one schedule per source, running by default.

Each tick asks ``orchestration.plan`` which windows to pull, reading the checkpoint store (the source
of truth for completeness) and Dagster's queue (so a window a queued run will read is not asked for
twice). It is also the scavenger: failed windows and windows whose run died (lease lapsed) come back
on the next tick, oldest first, bounded per tick.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING

import dagster as dg

from logpull_dagster.checkpoints import Checkpoint
from logpull_dagster.config import SourceBase
from logpull_dagster.keys import (
    PLAIN,
    RANGE_END,
    RANGE_START,
    SOURCE_TAG,
    ResourceKeys,
    logs_op,
    pull_schedule,
    run_request,
)
from logpull_dagster.orchestration import WindowRequest, batches, plan
from logpull_dagster.resources import CheckpointsResource
from logpull_dagster.windows import due_windows, key_for_window, rfc3339, window_for_key

# Runs not yet reading: their window has no live lease yet, but they will read it.
_WAITING = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]
# A started run without a lease may be waiting for a pool slot; past this age it is presumed dead
# (the default run launcher cannot report a dead worker, so Dagster may show it STARTED forever).
_STALE_AFTER = 6 * 3600.0

if TYPE_CHECKING:  # dg.define_asset_job's return type has no public name in Dagster 1.13
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


def build_pull_schedule(src: SourceBase, job: UnresolvedAssetJobDefinition,
                        keys: ResourceKeys = PLAIN) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=pull_schedule(src.name),
        required_resource_keys={keys.checkpoints},
        cron_schedule=src.schedule,
        job=job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Pulls every settled window of {src.name} not yet complete (oldest first, at most "
                    f"{src.max_windows_per_tick} a tick) and re-reads recent ones for late events.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.SkipReason | list[dg.RunRequest]:
        checkpoints: CheckpointsResource = getattr(context.resources, keys.checkpoints)
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
        return [_run_request(src, batch, tick) for batch in batches(requests, src.max_windows_per_run)]

    return _schedule


def _run_request(src: SourceBase, batch: list[WindowRequest], tick: str) -> dg.RunRequest:
    windows = [r.window for r in batch]
    first, last = (key_for_window(src.cadence, w) for w in (windows[0], windows[-1]))
    tags = {SOURCE_TAG: src.name, "logpull/reason": ",".join(sorted({r.reason for r in batch}))}
    # Re-reads ask a range run to read complete windows too (a one-window run always reads).
    config = {"ops": {logs_op(src.name): {"config": {"reread": True}}}} if batch[0].reason == "reread" else None
    # The run key: one tick never asks twice for a window, even if the tick itself is retried.
    key = first if len(windows) == 1 else f"{first}...{last}"
    return run_request(src.cadence, windows, f"{key}@{tick}", tags, config)


def run_windows(src: SourceBase, tags: dict[str, str]) -> list[str]:
    """Window starts a run of the pull job covers: its partition, or its partition range."""
    if "dagster/partition" in tags:
        keys = [tags["dagster/partition"]]
    elif RANGE_START in tags and RANGE_END in tags:
        first = window_for_key(src.cadence, tags[RANGE_START])
        last = window_for_key(src.cadence, tags[RANGE_END])
        return [rfc3339(w.start) for w in due_windows(src.cadence, first.start, last.end, dt.timedelta(0))]
    else:
        keys = []
    return [rfc3339(window_for_key(src.cadence, k).start) for k in keys]


def _in_flight(context: dg.ScheduleEvaluationContext, src: SourceBase, job_name: str,
               rows: dict[str, Checkpoint]) -> set[str]:
    """Window starts that a queued or started run of this source's job is about to read or reading.

    A started run counts unless it held a window's lease and let it lapse (it died reading), or it is
    older than _STALE_AFTER and holds no lease.
    """
    records = context.instance.get_run_records(
        filters=dg.RunsFilter(job_name=job_name, statuses=[*_WAITING, dg.DagsterRunStatus.STARTED]),
    )
    now = time.time()
    out: set[str] = set()
    for rec in records:
        run = rec.dagster_run
        starts = run_windows(src, dict(run.tags))
        if run.status == dg.DagsterRunStatus.STARTED:
            held = [rows[s] for s in starts if s in rows and rows[s].lease_owner == run.run_id]
            if any(cp.lease_expires <= now for cp in held):
                continue  # died holding a window
            if not held and now - (rec.start_time or rec.create_timestamp.timestamp()) > _STALE_AFTER:
                continue
        out.update(starts)
    return out
