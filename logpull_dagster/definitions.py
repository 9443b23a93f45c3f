"""All Dagster definitions, built from the config file (see ``config.py``)."""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

from logpull_dagster.assets import api_resource_key, build_logs_asset, build_siem_asset, logs_key, siem_key
from logpull_dagster.checks import build_freshness_sensor
from logpull_dagster.config import LogpullConfig, load_config
from logpull_dagster.resources import FileSiem, GoogleWorkspaceReports, LocalLanding, SqliteCheckpoints
from logpull_dagster.schedules import build_pull_schedule
from logpull_dagster.sensors import build_delivery_sensor


def build_definitions(config: LogpullConfig) -> dg.Definitions:
    assets: list[dg.AssetsDefinition] = []
    jobs: list[UnresolvedAssetJobDefinition] = []
    sensors: list[dg.SensorDefinition] = []
    schedules: list[dg.ScheduleDefinition] = []
    resources: dict[str, object] = {
        "checkpoints": SqliteCheckpoints(path=str(config.resolve(config.checkpoints.path))),
        "landing": LocalLanding(path=str(config.resolve(config.landing.path))),
        "siem": FileSiem(path=str(config.resolve(config.siem.path))),
    }
    # Every secret the config names: each source's messages are cleaned of all of them.
    secret_envs = sorted({s.access_token.env for s in config.sources})
    for src in config.sources:
        assets += [build_logs_asset(src), build_siem_asset(src)]
        pull = dg.define_asset_job(f"pull_{src.name}", selection=[logs_key(src.name)],
                                   tags={"logpull/source": src.name})
        deliver = dg.define_asset_job(f"deliver_{src.name}", selection=[siem_key(src.name)],
                                      tags={"logpull/source": src.name})
        jobs += [pull, deliver]
        schedules.append(build_pull_schedule(src, pull))
        sensors += [build_delivery_sensor(src, deliver), build_freshness_sensor(src)]
        resources[api_resource_key(src.name)] = GoogleWorkspaceReports(
            base_url=src.base_url,
            application=src.application,
            access_token=dg.EnvVar(src.access_token.env),
            access_token_env=src.access_token.env,
            page_size=src.page_size,
            http_timeout_seconds=src.http_timeout.total_seconds(),
            http_attempts=src.http_attempts,
            http_backoff_max_seconds=src.http_backoff_max.total_seconds(),
            max_page_bytes=src.max_page_bytes,
            ca_file=str(src.ca_path) if src.ca_path else None,
            tls_verify=src.tls_verify,
            secret_envs=secret_envs,
        )
    return dg.Definitions(
        assets=assets,
        jobs=jobs,
        schedules=schedules,
        sensors=sensors,
        resources=resources,
        # The work is I/O bound; a subprocess per step would cost ~1.5 s a run for nothing.
        executor=dg.in_process_executor,
    )


defs = build_definitions(load_config())
