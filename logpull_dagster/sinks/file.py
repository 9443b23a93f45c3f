"""JSON Lines file sink: one immutable file per batch, for a SIEM forwarder watching a folder.

``<root>/<source>/<source>-<window slug>-b<batch>.jsonl``. Each file is written atomically (hidden
temp file, fsync, rename) and never rewritten: a forwarder (Splunk UF, Filebeat, Vector) that tails
``*.jsonl`` sees every file once, whole. Writing a batch that exists already is a no-op, which is
what makes a retried delivery exact.
"""

from __future__ import annotations

from pathlib import Path

from logpull_dagster.landing.local import write_atomic
from logpull_dagster.windows import Window


class FileSink:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, source: str, window: Window, batch: int) -> Path:
        return self.root / source / f"{source}-{window.slug}-b{batch:06d}.jsonl"

    def write_batch(self, source: str, window: Window, batch: int, lines: list[bytes]) -> str:
        path = self.path_for(source, window, batch)
        if not path.exists():
            write_atomic(path, lines)
        return str(path)

    def close(self) -> None:
        pass
