"""All Dagster definitions, built from the config (see ``config.py``): the plain door.

``dagster ... -m logpull_dagster`` loads ``defs`` from the config file in force (``LOGPULL_CONFIG``,
else ``./logpull.yaml``, else the demo); the Component (``component.py``) calls ``build_definitions``
with its own config and a namespace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from logpull_dagster.assets import build_delivery_asset, build_logs_asset
from logpull_dagster.checks import build_freshness_sensor
from logpull_dagster.config import LogpullConfig, load_config
from logpull_dagster.keys import (
    DG_LAUNCH,
    SINK_TAG,
    SOURCE_TAG,
    ResourceKeys,
    api_resource,
    logs_key,
    pull_job,
    target_key,
)
from logpull_dagster.resources import CheckpointsResource, LandingResource, LogSourceResource, SiemResource
from logpull_dagster.schedules import build_pull_schedule
from logpull_dagster.sensors import build_delivery_sensor
from logpull_dagster.targets import targets

EXECUTORS = {"in_process": dg.in_process_executor, "multiprocess": dg.multiprocess_executor}

if TYPE_CHECKING:  # dg.define_asset_job's return type has no public name in Dagster 1.13
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


def build_definitions(config: LogpullConfig, *, namespace: str = "", dg_project: bool = False) -> dg.Definitions:
    """The assets, checks, jobs, schedules, sensors and resources of ``config``. ``namespace`` prefixes
    the keys of the shared resources, so that several configs load side by side in one code location;
    ``dg_project``: messages tell operators to use ``dg launch``."""
    keys = ResourceKeys(namespace, launch=DG_LAUNCH) if dg_project else ResourceKeys(namespace)
    base = config.base_dir
    resources: dict[str, object] = {
        keys.checkpoints: CheckpointsResource.of(config.checkpoints, base),
        keys.landing: LandingResource.of(config.landing, base),
        **{keys.sink(name): SiemResource.of(sink, base, config.stream_types)
           for name, sink in config.all_sinks.items()},
    }
    assets: list[dg.AssetsDefinition] = []
    jobs: list[UnresolvedAssetJobDefinition] = []
    sensors: list[dg.SensorDefinition] = []
    schedules: list[dg.ScheduleDefinition] = []
    # Every secret the config names (sources, stores, sinks): each source's messages are cleaned of all.
    named = [*config.sources, config.checkpoints, config.landing, *config.all_sinks.values()]
    secret_envs = sorted({ref.env for s in named for ref in s.secret_refs()})
    for src in config.sources:
        mine = targets(config.all_sinks, [src])
        assets.append(build_logs_asset(src, keys, mine))
        pull = dg.define_asset_job(pull_job(src.name), selection=[logs_key(src.name)], tags={SOURCE_TAG: src.name})
        jobs.append(pull)
        schedules.append(build_pull_schedule(src, pull, keys))
        sensors.append(build_freshness_sensor(src, keys))
        for target in mine:  # one delivery asset, job and sensor per (stream, sink) pair
            assets.append(build_delivery_asset(target, keys))
            deliver = dg.define_asset_job(target.job, selection=[target_key(target)],
                                          tags={SOURCE_TAG: src.name, SINK_TAG: target.sink})
            jobs.append(deliver)
            sensors.append(build_delivery_sensor(target, deliver, keys))
        resources[api_resource(src.name)] = LogSourceResource.of(src, secret_envs)
    return dg.Definitions(assets=assets, jobs=jobs, schedules=schedules, sensors=sensors, resources=resources,
                          executor=EXECUTORS[config.executor])


def plain_definitions() -> dg.Definitions:
    """The plain door: the definitions of the config file in force (``config.load_config``). Called by
    ``logpull_dagster.defs`` when Dagster loads ``-m logpull_dagster``, never at import."""
    return build_definitions(load_config())
