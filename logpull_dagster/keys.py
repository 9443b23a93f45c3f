"""Every name the Dagster wiring shares: asset keys, op, job, schedule and sensor names, resource keys
and run requests. Assets, schedules, sensors, checks, the CLI and the Component all take names from
here, so that one stream's pieces always find each other and two config files (two Components in one
``dg`` project) never collide.

Names are per source (``logs/<name>``, ``pull_<name>``...), and source names are unique across a code
location; a stream's deliveries are named per (stream, sink) pair (``targets.py``). The shared resources
(the checkpoint store, the landing store, each sink) are per config: ``namespace`` prefixes their keys,
empty for the plain ``logpull.yaml`` door.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from logpull_dagster.targets import LEGACY_SINK, DeliveryTarget, job_of, resource_of, sensor_of
from logpull_dagster.windows import Cadence, Window, key_for_window

# Dagster's own tags of a run over a partition range (one run, many windows).
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
SOURCE_TAG = "logpull/source"
SINK_TAG = "logpull/sink"


def logs_key(source: str) -> dg.AssetKey:
    return dg.AssetKey(["logs", source])


def siem_key(source: str) -> dg.AssetKey:
    """The delivery asset of ``source`` to the sink named ``siem`` (see ``target_key`` for any sink)."""
    return dg.AssetKey(["siem", source])


def target_key(target: DeliveryTarget) -> dg.AssetKey:
    """``<sink>/<stream>``: the asset of one stream's delivery to one sink."""
    return dg.AssetKey(list(target.asset_path))


def logs_op(source: str) -> str:
    """The op name of ``logs/<source>`` (run config goes under ``ops: {<this>: ...}``)."""
    return f"logs__{source}"


def pull_job(source: str) -> str:
    return f"pull_{source}"


def deliver_job(source: str, sink: str = LEGACY_SINK) -> str:
    return job_of(source, sink)


def pull_schedule(source: str) -> str:
    return f"pull_{source}_schedule"


def delivery_sensor(source: str, sink: str = LEGACY_SINK) -> str:
    return sensor_of(source, sink)


def freshness_sensor(source: str) -> str:
    return f"freshness_{source}_sensor"


def api_resource(source: str) -> str:
    return f"{source}_api"


@dataclass(frozen=True)
class ResourceKeys:
    """The keys of one config's shared resources; ``namespace`` keeps two configs apart. ``launch``:
    how an operator runs one of its assets by hand, for the messages that tell them to (the plain
    door's CLI, or ``dg launch`` in a dg project)."""

    namespace: str = ""
    launch: str = "dagster asset materialize -m logpull_dagster --select"

    def rerun(self, source: str, partition_keys: Sequence[str]) -> str:
        """The command that reads ``partition_keys`` (sorted) of ``logs/<source>`` again."""
        where = (f"--partition {partition_keys[0]}" if len(partition_keys) == 1
                 else f"--partition-range {partition_keys[0]}...{partition_keys[-1]}")
        return f"{self.launch} logs/{source} {where}"

    @property
    def checkpoints(self) -> str:
        return f"{self.namespace}checkpoints"

    @property
    def landing(self) -> str:
        return f"{self.namespace}landing"

    @property
    def siem(self) -> str:
        return self.sink(LEGACY_SINK)

    def sink(self, name: str) -> str:
        """The resource key of the sink ``name`` (``targets.resource_of``)."""
        return resource_of(name, self.namespace)


def run_request(cadence: Cadence, windows: Sequence[Window], run_key: str, tags: Mapping[str, str],
                run_config: Mapping[str, object] | None = None) -> dg.RunRequest:
    """A run over one window (its partition) or over adjacent windows (a partition range, one run)."""
    first, last = key_for_window(cadence, windows[0]), key_for_window(cadence, windows[-1])
    if len(windows) == 1:
        return dg.RunRequest(run_key=run_key, partition_key=first, tags=dict(tags), run_config=dict(run_config or {}))
    return dg.RunRequest(run_key=run_key, tags={**tags, RANGE_START: first, RANGE_END: last},
                         run_config=dict(run_config or {}))


PLAIN = ResourceKeys()  # the keys of the plain door (logpull.yaml, -m logpull_dagster)
DG_LAUNCH = "dg launch --assets"  # how a dg project's user runs an asset
