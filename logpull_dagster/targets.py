"""Delivery targets: one (stream, sink) pair, and every name and setting its delivery goes by.

A stream (``logs/<stream>``) is delivered to each sink it names (``deliver_to:``, default every sink of
the config's ``sinks:``). Each pair is one :class:`DeliveryTarget`: its asset ``<sink>/<stream>``, its
own delivery checkpoint (stage), job, sensor, retries and lease, and the sink's resource. So one sink
being down never holds another back, and a second sink for a stream is config only.

The sink named ``siem`` (the config's ``siem:`` key, the only sink before ``sinks:`` existed) keeps the
names it always had: asset ``siem/<stream>``, stage ``deliver``, job ``deliver_<stream>``, sensor
``deliver_<stream>_sensor``, resource key ``siem``; existing deployments keep their checkpoints, asset
history and sensor cursors. Any other sink ``<sink>``: stage ``deliver:<sink>``, job
``deliver_<stream>_to_<sink>``, sensor ``deliver_<stream>_to_<sink>_sensor``, resource ``sink_<sink>``.

No Dagster import (``keys.py`` makes the asset keys).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from logpull_dagster.config import SourceBase, StoreBase

LEGACY_SINK = "siem"
# Names a sink cannot take: its assets would collide with the pull's (logs/<stream>).
RESERVED_SINK_NAMES = frozenset({"logs"})


def stage_of(sink: str) -> str:
    """The checkpoint stage of a stream's delivery to ``sink``."""
    return "deliver" if sink == LEGACY_SINK else f"deliver:{sink}"


def job_of(stream: str, sink: str) -> str:
    return f"deliver_{stream}" if sink == LEGACY_SINK else f"deliver_{stream}_to_{sink}"


def sensor_of(stream: str, sink: str) -> str:
    return f"{job_of(stream, sink)}_sensor"


def resource_of(sink: str, namespace: str = "") -> str:
    """The resource key of ``sink`` (one resource per sink, shared by every stream delivered to it)."""
    return f"{namespace}siem" if sink == LEGACY_SINK else f"{namespace}sink_{sink}"


@dataclass(frozen=True)
class DeliveryTarget:
    """One stream delivered to one sink (see the module docstring)."""

    stream: SourceBase
    sink: str
    config: StoreBase  # the sink's config (a sinks: entry, or siem:)

    @property
    def stage(self) -> str:
        return stage_of(self.sink)

    @property
    def asset_path(self) -> tuple[str, str]:
        return (self.sink, self.stream.name)

    @property
    def job(self) -> str:
        return job_of(self.stream.name, self.sink)

    @property
    def sensor(self) -> str:
        return sensor_of(self.stream.name, self.sink)

    def resource_key(self, namespace: str = "") -> str:
        return resource_of(self.sink, namespace)

    # Delivery settings: the sink's own keys where it sets them, else the stream's (as before sinks had them).
    @property
    def retries(self) -> int:
        own = getattr(self.config, "retries", None)
        return self.stream.retries if own is None else int(own)

    @property
    def retry_delay(self) -> dt.timedelta:
        own = getattr(self.config, "retry_delay", None)
        return self.stream.retry_delay if own is None else own  # type: ignore[no-any-return]

    @property
    def lease_ttl(self) -> dt.timedelta:
        own = getattr(self.config, "lease_ttl", None)
        return self.stream.lease_ttl if own is None else own  # type: ignore[no-any-return]

    @property
    def lease_wait(self) -> dt.timedelta:
        own = getattr(self.config, "lease_wait", None)
        if own is not None:
            return own  # type: ignore[no-any-return]
        if getattr(self.config, "lease_ttl", None) is not None:
            return self.lease_ttl  # a dead holder's lease lapses within the sink's lease_ttl
        return self.stream.effective_lease_wait

    @property
    def kinds(self) -> set[str]:
        """Dagster ``kinds`` of the delivery asset: what the sink type says it is (``jsonl``, ``splunk``...)."""
        return set(getattr(type(self.config), "kinds", ()))


def targets(sinks: dict[str, StoreBase], streams: list[SourceBase]) -> list[DeliveryTarget]:
    """Every (stream, sink) pair: each stream with the sinks it names (``deliver_to``), else every sink,
    in the order of ``sinks``."""
    out = []
    for stream in streams:
        names = stream.deliver_to if stream.deliver_to is not None else list(sinks)
        out += [DeliveryTarget(stream, name, sinks[name]) for name in sinks if name in names]
    return out


__all__ = ["LEGACY_SINK", "RESERVED_SINK_NAMES", "DeliveryTarget", "job_of", "resource_of", "sensor_of", "stage_of",
           "targets"]
