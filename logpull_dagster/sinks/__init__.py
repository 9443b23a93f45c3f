"""SIEM sinks: where delivered events go.

The contract every sink keeps (delivery's exactly-once rests on it): ``write_batch`` is idempotent
for one (source, window, batch): a batch written once and written again, after a crash between the
write and the delivery checkpoint, reaches the SIEM once. Sinks that can deduplicate are given the
event id in every record.
"""

from __future__ import annotations

from typing import Protocol

from logpull_dagster.windows import Window


class Sink(Protocol):
    def write_batch(self, source: str, window: Window, batch: int, lines: list[bytes]) -> str:
        """Deliver one batch (one JSON object per line); return where it went."""
        ...

    def close(self) -> None: ...


__all__ = ["Sink"]
