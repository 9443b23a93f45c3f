"""Taking a window's lease, for every stage (the pull loop, delivery) and every store.

A live holder renews its lease after every page, so it outlasts any wait shorter than its TTL; a dead
holder's lease lapses within ``lease_ttl``. So a run that finds a window held waits at most
``lease_wait`` for the lease to lapse, then takes over or fails with :class:`LeaseHeld`, naming the
holder. No Dagster import.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from logpull_dagster.checkpoints import Checkpoint, CheckpointStore, LeaseHeld, Stage
from logpull_dagster.windows import Window, rfc3339


def acquire(checkpoints: CheckpointStore, source: str, stage: Stage, window: Window, *, owner: str,
            lease_ttl: float, lease_wait: float, clock: Callable[[], float] = time.time,
            sleep: Callable[[float], None] = time.sleep) -> Checkpoint:
    """Take the window's lease, waiting up to ``lease_wait`` for another holder's lease to lapse."""
    deadline = clock() + lease_wait
    while True:
        try:
            return checkpoints.acquire(source, stage, rfc3339(window.start), rfc3339(window.end),
                                       owner=owner, ttl=lease_ttl, now=clock())
        except LeaseHeld as held:
            now = clock()
            if now >= deadline or held.expires > deadline:
                raise
            sleep(min(max(held.expires - now, 0.05), 1.0))
