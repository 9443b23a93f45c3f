"""``type: spool``: a SIEM sink type in one module, for the tests of several sinks per stream.

A stand-in for a collector that takes batches and cannot be read back: each batch is one file
``<path>/<source>/<window slug>-<batch>.jsonl`` (written whole, then renamed), nothing records what it
holds. ``fail: true`` makes every write fail, as a collector that is down does.

Capabilities: ``names`` (a batch name holds one content; the same batch again is found whole, other
content is a conflict). Guarantee: exactly once while the checkpoint store is intact; at least once
after it is lost (it cannot tell what it holds).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

from logpull_dagster.config import LocalStoreBase, SinkBase
from logpull_dagster.plugins import Plugin
from logpull_dagster.sinks import Capability, Fence, Written
from logpull_dagster.windows import Window


class SpoolDown(ConnectionError):
    """The collector does not answer (``fail: true``)."""


class SpoolSink:
    capabilities: frozenset[Capability] = frozenset({"names"})

    def __init__(self, root: Path, fail: bool = False) -> None:
        self.root, self.fail = root, fail

    def write_batch(self, source: str, window: Window, batch: int, lines: list[bytes], ids: list[str], *,
                    delivered: set[bytes] | None = None, fence: Fence | None = None) -> Written:
        if self.fail:
            raise SpoolDown(f"the spool at {self.root} is down (fail: true)")
        path = self.root / source / f"{window.slug}-{batch:06d}.jsonl"
        data = b"".join(line + b"\n" for line in lines)
        if path.exists():
            return Written(str(path), len(lines)) if path.read_bytes() == data else Written(None, conflict=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        try:
            if fence is not None:
                fence()
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return Written(str(path), len(lines))

    def holds(self, source: str, window: Window) -> bool:
        return False

    def delivered_ids(self, source: str, window: Window) -> set[bytes]:
        return set()

    def location(self, source: str) -> str:
        return str(self.root / source)

    def close(self) -> None:
        pass


class SpoolSinkConfig(SinkBase, LocalStoreBase):
    type: Literal["spool"]
    path: str = "spool"
    fail: bool = False

    kinds: ClassVar[tuple[str, ...]] = ("spool",)


def _open(cfg: SpoolSinkConfig, base_dir: Path) -> SpoolSink:
    return SpoolSink(cfg.resolved(base_dir), cfg.fail)


PLUGINS = [Plugin("siem", "spool", SpoolSinkConfig, _open)]
