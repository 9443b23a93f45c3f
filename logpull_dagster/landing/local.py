"""Local-folder landing store: ``<root>/<source>/<window slug>/page-<seq>.e<epoch>.jsonl``.

Reads in flight (the journal) sit beside the pages as ``read-<n>.e<epoch>.json``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from logpull_dagster.landing import LandedPage, current_copies
from logpull_dagster.windows import Window

_PAGE = re.compile(r"^page-(\d{6,})\.e(\d{6,})\.jsonl$")
_READ = re.compile(r"^read-(\d{8,})\.e(\d{6,})\.json$")


def write_atomic(path: Path, lines: Iterable[bytes], *, folder_exists: bool = False) -> None:
    """Write one JSON document per line to ``path``, atomically and durably (see write_bytes_atomic)."""
    data = b"\n".join(lines)
    write_bytes_atomic(path, data + b"\n" if data else b"", folder_exists=folder_exists)


def write_bytes_atomic(path: Path, data: bytes, *, folder_exists: bool = False) -> None:
    """Write ``path`` so that it is either absent or complete, and on disk, when this returns.

    Temp file in the same folder (hidden, so folder watchers skip it), fsync, rename over the final
    name, fsync the folder so the rename itself survives a power cut.
    """
    if not folder_exists:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)  # one write: a page is written whole, not line by line
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
        self._made: set[Path] = set()  # window folders this process created or found

    def _ready(self, source: str, window: Window) -> Path:
        folder = self._dir(source, window)
        if folder not in self._made:
            folder.mkdir(parents=True, exist_ok=True)
            self._made.add(folder)
        return folder

    def _dir(self, source: str, window: Window) -> Path:
        return self.root / source / window.slug

    def put_page(self, source: str, window: Window, seq: int, epoch: int, lines: Iterable[bytes]) -> str:
        path = self._ready(source, window) / f"page-{seq:06d}.e{epoch:06d}.jsonl"
        write_atomic(path, lines, folder_exists=True)
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

    def discard(self, source: str, window: Window, from_seq: int, keep_reads: range = range(0)) -> int:
        found = self._all(source, window)
        keep = set(current_copies(found, from_seq))
        removed = 0
        for page in found:
            if page not in keep:
                Path(page.location).unlink(missing_ok=True)
                removed += 1
        reads = self._reads(source, window)
        for n, copies in reads.items():
            for epoch in sorted(copies)[:-1] if n in keep_reads else copies:
                (self._dir(source, window) / _read_name(n, epoch)).unlink(missing_ok=True)
                removed += 1
        folder = self._dir(source, window)
        for tmp in [*folder.glob(".page-*.tmp"), *folder.glob(".read-*.tmp")]:  # left by a killed writer
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed

    def _reads(self, source: str, window: Window) -> dict[int, list[int]]:
        folder = self._dir(source, window)
        found: dict[int, list[int]] = {}
        if folder.is_dir():
            for entry in os.scandir(folder):
                m = _READ.match(entry.name)
                if m:
                    found.setdefault(int(m.group(1)), []).append(int(m.group(2)))
        return found

    def put_read(self, source: str, window: Window, n: int, epoch: int, body: bytes) -> str:
        path = self._ready(source, window) / _read_name(n, epoch)
        write_bytes_atomic(path, body, folder_exists=True)
        return str(path)

    def get_read(self, source: str, window: Window, n: int) -> tuple[bytes, int]:
        epochs = self._reads(source, window).get(n)
        if not epochs:
            raise FileNotFoundError(f"read {n} of window {window} of {source!r} is not in {self._dir(source, window)}")
        return (self._dir(source, window) / _read_name(n, max(epochs))).read_bytes(), max(epochs)

    def drop_read(self, source: str, window: Window, n: int, epoch: int) -> None:
        (self._dir(source, window) / _read_name(n, epoch)).unlink(missing_ok=True)


def _read_name(n: int, epoch: int) -> str:
    return f"read-{n:08d}.e{epoch:06d}.json"
