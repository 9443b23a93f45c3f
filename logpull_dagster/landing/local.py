"""Local-folder landing store: ``<root>/<source>/<window slug>/page-<seq>.e<epoch>.jsonl``."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from logpull_dagster.landing import LandedPage, current_copies
from logpull_dagster.windows import Window

_PAGE = re.compile(r"^page-(\d{6,})\.e(\d{6,})\.jsonl$")


def write_atomic(path: Path, lines: Iterable[bytes]) -> None:
    """Write ``path`` so that it is either absent or complete, and on disk, when this returns.

    Temp file in the same folder (hidden, so folder watchers skip it), fsync, rename over the final
    name, fsync the folder so the rename itself survives a power cut.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = b"\n".join(lines)
    with open(tmp, "wb") as f:
        if data:
            f.write(data + b"\n")  # one write: a page is written whole, not line by line
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalLandingStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _dir(self, source: str, window: Window) -> Path:
        return self.root / source / window.slug

    def put_page(self, source: str, window: Window, seq: int, epoch: int, lines: Iterable[bytes]) -> str:
        path = self._dir(source, window) / f"page-{seq:06d}.e{epoch:06d}.jsonl"
        write_atomic(path, lines)
        return str(path)

    def _all(self, source: str, window: Window) -> list[LandedPage]:
        folder = self._dir(source, window)
        if not folder.is_dir():
            return []
        out = []
        for entry in os.scandir(folder):
            m = _PAGE.match(entry.name)
            if m:
                out.append(LandedPage(int(m.group(1)), int(m.group(2)), entry.path))
        return out

    def pages(self, source: str, window: Window, below: int) -> list[LandedPage]:
        return current_copies(self._all(source, window), below)

    def read_lines(self, page: LandedPage) -> list[bytes]:
        with open(page.location, "rb") as f:
            return [line for line in f.read().split(b"\n") if line]

    def discard(self, source: str, window: Window, from_seq: int) -> int:
        found = self._all(source, window)
        keep = set(current_copies(found, from_seq))
        removed = 0
        for page in found:
            if page not in keep:
                Path(page.location).unlink(missing_ok=True)
                removed += 1
        for tmp in self._dir(source, window).glob(".page-*.tmp"):  # left by a killed writer
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed
