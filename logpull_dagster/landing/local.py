"""Local-folder landing store: ``<root>/<source>/<window slug>/page-<seq>.e<epoch>.jsonl``.

Reads in flight (the journal) sit beside the pages as ``read-<n>.e<epoch>.json``.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from logpull_dagster.config import LocalStoreBase
from logpull_dagster.landing import LandedPage, LandingMissing, current_copies
from logpull_dagster.plugins import Plugin
from logpull_dagster.windows import Window

_PAGE = re.compile(r"^page-(\d{6,})\.e(\d{6,})\.jsonl$")
_READ = re.compile(r"^read-(\d{8,})\.e(\d{6,})\.json$")


def write_atomic(path: Path, lines: Iterable[bytes], *, tmp_dir: Path | None = None) -> None:
    """Write one JSON document per line to ``path``, atomically and durably (see write_bytes_atomic)."""
    data = b"\n".join(lines)
    write_bytes_atomic(path, data + b"\n" if data else b"", tmp_dir=tmp_dir)


def write_bytes_atomic(path: Path, data: bytes, *, tmp_dir: Path | None = None,
                       before_rename: Callable[[], None] | None = None) -> None:
    """Write ``path`` so that it is either absent or complete, and on disk, when this returns.

    Temp file, fsync, rename over the final name, fsync the folder so the rename itself survives a
    power cut. A failed write (ENOSPC included) removes its own temp file and raises an OSError whose
    message names ``path``; the final name then holds what it held before.

    The temp file is hidden from folder watchers: ``.<name>.<pid>-<thread>.tmp`` beside ``path``, or
    ``<name>.<pid>-<thread>.tmp`` in ``tmp_dir`` (a hidden folder on the same filesystem, so the rename
    stays atomic). With ``tmp_dir``, the write also removes the temp files that killed writers left
    for the same name; that costs a listing of ``tmp_dir``, which holds only writes in flight. Beside
    ``path`` it would cost a listing of the whole folder on every write (~1 ms per 1,000 files, 89 ms
    at 100,000: a SIEM folder), so there the caller sweeps leftovers at its own moments (landing:
    ``discard`` at each attempt of a window).

    ``before_rename`` runs after the data is on disk and right before the rename that makes it
    visible; whatever it raises removes the temp file and leaves the final name untouched (a SIEM
    sink's fence: nothing becomes visible from a writer that lost its lease).
    """
    if tmp_dir is None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_native_id()}.tmp")
    else:
        tmp = tmp_dir / f"{path.name}.{os.getpid()}-{threading.get_native_id()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    try:
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:  # the first write into this folder, or the folder was deleted since
            path.parent.mkdir(parents=True, exist_ok=True)
            if tmp_dir is not None:
                tmp_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        try:
            if tmp_dir is not None:
                _remove_leftovers(tmp_dir, path.name, tmp.name)
            view = memoryview(data)
            while view:  # one write in practice: a page is written whole, not line by line
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise OSError(e.errno, f"{e.strerror or e} while writing (its temp file was removed)", str(path)) from e
        raise


def _remove_leftovers(tmp_dir: Path, name: str, mine: str) -> None:
    """Remove the temp files of ``name`` that other writers left (killed between create and rename).

    A writer of the same name that is still alive (only a run fenced off by a newer lease) then fails
    its rename and stops, as it should.
    """
    prefix = f"{name}."
    with os.scandir(tmp_dir) as entries:
        for entry in entries:
            if entry.name != mine and entry.name.startswith(prefix) and entry.name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)


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
        try:
            with open(page.location, "rb") as f:
                return [line for line in f.read().split(b"\n") if line]
        except FileNotFoundError:
            raise LandingMissing(f"landed page {page.seq} is no longer at {page.location}") from None

    def where(self, source: str, window: Window) -> str:
        return str(self._dir(source, window))

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
        write_bytes_atomic(path, body)
        return str(path)

    def get_read(self, source: str, window: Window, n: int) -> tuple[bytes, int]:
        epochs = self._reads(source, window).get(n)
        if not epochs:
            raise LandingMissing(f"journaled read {n} of window {window} of {source!r} is not in "
                                 f"{self._dir(source, window)}")
        try:
            return (self._dir(source, window) / _read_name(n, max(epochs))).read_bytes(), max(epochs)
        except FileNotFoundError:
            raise LandingMissing(f"journaled read {n} of window {window} of {source!r} vanished from "
                                 f"{self._dir(source, window)}") from None

    def drop_read(self, source: str, window: Window, n: int, epoch: int) -> None:
        (self._dir(source, window) / _read_name(n, epoch)).unlink(missing_ok=True)

    def close(self) -> None:
        """Nothing is held open between calls (every write is its own file)."""


def _read_name(n: int, epoch: int) -> str:
    return f"read-{n:08d}.e{epoch:06d}.json"


class LocalLandingConfig(LocalStoreBase):
    """``landing: {type: local, path: ...}``: pages as JSON Lines files under ``path/<source>/<window>/``."""

    type: Literal["local"]
    path: str = ".logpull/landing"


def _open(cfg: LocalLandingConfig, base_dir: Path) -> LocalLandingStore:
    return LocalLandingStore(cfg.resolved(base_dir))


PLUGINS = [Plugin("landing", "local", LocalLandingConfig, _open)]
