"""Sensors: launch delivery of a window each time its pull lands new data.

One sensor per source, running by default. It walks the event log of ``logs/<source>`` by storage
id (its cursor), so every materialization is seen once and in order: old windows re-read by a
backfill are delivered too, and no event in between is skipped (``asset_sensor`` only reports the
latest). A materialization whose window has no landed page left to deliver launches nothing.
"""


import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from logpull_dagster.assets import logs_key

# Materializations looked at per tick; the cursor carries the rest to the next tick.
BATCH = 500


def build_delivery_sensor(source: str, job: UnresolvedAssetJobDefinition,
                          interval_seconds: int = 30) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"deliver_{source}_sensor",
        job=job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Delivers each window of logs/{source} to the SIEM after it lands new data.",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        after = int(context.cursor) if context.cursor else None
        found = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=logs_key(source), after_storage_id=after),
            limit=BATCH, ascending=True,
        )
        requests = []
        for record in found.records:
            after = record.storage_id
            mat = record.asset_materialization
            if mat is None or mat.partition is None:
                continue
            pending = mat.metadata.get("pages_to_deliver")
            if pending is not None and getattr(pending, "value", 1) == 0:
                continue
            # One run per materialization: the run key makes a re-evaluated tick harmless.
            requests.append(dg.RunRequest(run_key=f"{mat.partition}@{record.storage_id}",
                                          partition_key=mat.partition))
        return dg.SensorResult(run_requests=requests, cursor=str(after) if after is not None else None)

    return _sensor
