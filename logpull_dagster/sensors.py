"""Sensors: launch delivery of a window each time its pull lands new data.

One sensor per (stream, sink) pair (``targets.py``), running by default. It walks the event log of
``logs/<source>`` by storage id (its cursor), so every materialization is seen once and in order: old
windows re-read by a backfill are delivered too, and no event in between is skipped (``asset_sensor`` only reports the
latest), and its observations too: a window completed with a known gap (pages an operator skipped) is
recorded as an observation, not a materialization, and its landed events are delivered all the same.
A window is launched only if the checkpoint store says it has landed pages not delivered yet
*now*, not when its materialization was recorded: a sensor starting over (a new daemon, ``make ui`` on
the demo's state, a reset cursor) walks materializations whose windows were delivered long ago, and
must launch nothing for them. Windows seen in one tick go as few runs as possible (adjacent windows
share a range run).
"""


from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from logpull_dagster.config import SourceBase
from logpull_dagster.keys import PLAIN, SINK_TAG, SOURCE_TAG, ResourceKeys, logs_key, run_request
from logpull_dagster.orchestration import WindowRequest, batches
from logpull_dagster.windows import key_for_window, rfc3339, window_for_key

# Materializations looked at per tick; the cursor carries the rest to the next tick.
BATCH = 500

if TYPE_CHECKING:  # dg.define_asset_job's return type has no public name in Dagster 1.13
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

    from logpull_dagster.checkpoints import CheckpointStore
    from logpull_dagster.targets import DeliveryTarget
    from logpull_dagster.windows import Window


def build_delivery_sensor(target: DeliveryTarget, job: UnresolvedAssetJobDefinition,
                          keys: ResourceKeys = PLAIN) -> dg.SensorDefinition:
    src = target.stream

    @dg.sensor(
        name=target.sensor,
        job=job,
        required_resource_keys={keys.checkpoints},
        minimum_interval_seconds=max(1, int(src.delivery_interval.total_seconds())),
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Delivers each window of logs/{src.name} to {target.sink} after it lands new data.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        after = int(context.cursor) if context.cursor else None
        records_filter = dg.AssetRecordsFilter(asset_key=logs_key(src.name), after_storage_id=after)
        found = [context.instance.fetch_materializations(records_filter, limit=BATCH, ascending=True),
                 context.instance.fetch_observations(records_filter, limit=BATCH, ascending=True)]
        # One cursor over both kinds of event: a kind that has more than BATCH left is seen only up to its
        # last record this tick, and so is the other kind (its later records come next tick).
        full = [f.records[-1].storage_id for f in found if f.has_more and f.records]
        cut = min(full) if full else None
        pending: set[str] = set()
        for record in sorted((r for f in found for r in f.records), key=lambda r: r.storage_id):
            if cut is not None and record.storage_id > cut:
                break
            after = record.storage_id
            event = record.asset_materialization or record.asset_observation
            if event is None or event.partition is None:
                continue
            status = event.metadata.get("status")
            if record.asset_observation is not None and getattr(status, "value", None) != "known gap":
                continue  # a failed window's observation: delivered once it completes (or becomes a known gap)
            left = event.metadata.get("pages_to_deliver")
            if left is not None and getattr(left, "value", 1) == 0:
                continue
            pending.add(event.partition)
        store = getattr(context.resources, keys.checkpoints).store
        windows = [w for w in sorted(window_for_key(src.cadence, k) for k in pending)
                   if _to_deliver(store, src, w, target.stage)]
        requests = []
        # Adjacent windows go as one run (a catch-up delivers in a few runs, not one per window). The run
        # key names the materializations seen, so a re-evaluated tick launches nothing twice.
        for batch in batches([WindowRequest(w, "new") for w in windows], src.max_windows_per_run):
            span = [r.window for r in batch]
            key = "...".join(dict.fromkeys(key_for_window(src.cadence, w) for w in (span[0], span[-1])))
            requests.append(run_request(src.cadence, span, f"{key}@{after}",
                                        {SOURCE_TAG: src.name, SINK_TAG: target.sink}))
        return dg.SensorResult(run_requests=requests, cursor=str(after) if after is not None else None)

    return _sensor


def _to_deliver(store: CheckpointStore, src: SourceBase, window: Window, stage: str) -> bool:
    """Whether ``window`` has landed pages its delivery (``stage``) has not passed yet (one read of each row)."""
    start = rfc3339(window.start)
    pulled = store.get(src.name, "pull", start)
    if pulled is None or pulled.landed_pages == 0:
        return False
    sent = store.get(src.name, stage, start)
    return sent is None or sent.delivered_pages < pulled.landed_pages
