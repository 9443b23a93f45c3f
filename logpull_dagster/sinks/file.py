"""JSON Lines file sink: one immutable file per batch, for a SIEM forwarder watching a folder.

Capabilities: ``names`` and ``read_back`` (``sinks/__init__.py``).

Guarantee: exactly-once while the checkpoint store is intact (a batch file appears only after the
delivery's fence, right before the rename, confirmed its lease); after it is lost or replaced, still
exactly-once as long as a window's delivered-ids record or its batch files are there; with both gone
(the source folder deleted, hidden folders included) the window is delivered again in full.

Layout, under ``<root>/<source>/``:

* ``<source>-<window slug>-b<batch>.jsonl``: a batch, written atomically (temp file in ``.tmp/``,
  fsync, rename) and never rewritten, so a forwarder (Splunk UF, Filebeat, Vector) that reads
  ``*.jsonl`` sees every file once, whole. Writing a batch again with the same content is a no-op,
  which is what makes a retried delivery exact. A name that holds other content is reported as a
  conflict, never taken as written.
* ``<source>-<window slug>-b<batch>-<content hash>.jsonl``: a batch written while reconciling (below);
  the hash keeps it from colliding with any batch of an earlier delivery.
* ``.delivered/<window slug>.ids``: the delivered-ids record, the 16-byte BLAKE2b digest of every
  event id this sink wrote for the window, appended and fsynced *after* the batch file is on disk. A
  crash in between leaves ids missing from the record, never ids recorded but not written.

Why a record. The delivery checkpoint names batches by landed page number, so once the checkpoint
store is lost (or an older copy restored) the same names can hold other events: re-pulled with
another page size, the window's pages split differently, and "the name exists, so it was written"
sent 858 of 3,007 events twice in a test (pages of 70, then 50) and never sent the events a new
page held beyond the old one of its number.
When the delivery checkpoint knows nothing of a window but the SIEM side has data for it, or a name
holds other content, delivery reconciles: the events already delivered are the record's ids plus
those in the window's batch files still present; only the others are written. The alternatives
fall short: content-hashed names alone would write every event again after a re-pull (new pages, new
names); reading the batch files alone fails once a forwarder deletes what it shipped (Splunk's
``batch`` input with ``move_policy = sinkhole``); refusing and printing a command wakes an operator for
what the program can settle itself. The record costs 16 bytes per event and one small append and
fsync per batch, and it is read only to reconcile, never on the normal path.

Where exactness ends: with the record and the batch files both gone, or the record gone and the
forwarder having deleted the files it shipped, there is nothing to reconcile against and the window
is delivered again (at-least-once); and a crash between a batch file and its record append, when the
forwarder then deletes that file and the store is lost too, repeats that one batch.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import ClassVar, Literal

from logpull_dagster.config import LocalStoreBase, SinkBase
from logpull_dagster.json_codec import JSONError, loads
from logpull_dagster.landing.local import write_bytes_atomic
from logpull_dagster.plugins import Plugin
from logpull_dagster.pull import id_digest
from logpull_dagster.sinks import Capability, Fence, Written
from logpull_dagster.windows import Window

RECORD_DIR = ".delivered"
TMP_DIR = ".tmp"
DIGEST = 16  # bytes per id in the record: pull.id_digest
_sync = getattr(os, "fdatasync", os.fsync)


class FileSink:
    """Exactly once into a folder a forwarder watches; after a lost checkpoint store, exactly once while
    the window's delivered-ids record or its batch files are there (the module docstring)."""

    capabilities: frozenset[Capability] = frozenset({"names", "read_back"})

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, source: str, window: Window, batch: int) -> Path:
        return self.root / source / f"{source}-{window.slug}-b{batch:06d}.jsonl"

    def record_path(self, source: str, window: Window) -> Path:
        return self.root / source / RECORD_DIR / f"{window.slug}.ids"

    def write_batch(self, source: str, window: Window, batch: int, lines: list[bytes], ids: list[str], *,
                    delivered: set[bytes] | None = None, fence: Fence | None = None) -> Written:
        if delivered is not None:
            return self._reconciling(source, window, batch, lines, ids, delivered, fence)
        path = self.path_for(source, window, batch)
        data = _content(lines)
        existing = _read(path)
        if existing is None:
            self._write(source, path, data, fence)
        elif existing != data:
            return Written(None, conflict=True)
        # Also after a retried identical batch: its first attempt may have died before this append.
        self._record(source, window, [id_digest(i) for i in ids])
        return Written(str(path), len(lines))

    def _reconciling(self, source: str, window: Window, batch: int, lines: list[bytes], ids: list[str],
                     delivered: set[bytes], fence: Fence | None) -> Written:
        digests = [id_digest(i) for i in ids]
        keep = [k for k, d in enumerate(digests) if d not in delivered]
        if not keep:
            return Written(None, 0, len(lines))
        data = _content([lines[k] for k in keep])
        tag = hashlib.blake2b(data, digest_size=8).hexdigest()
        path = self.root / source / f"{source}-{window.slug}-b{batch:06d}-{tag}.jsonl"
        existing = _read(path)
        if existing is None:
            self._write(source, path, data, fence)
        elif existing != data:  # 64 bits of content hash collided: never seen, never papered over
            raise RuntimeError(f"{path} exists with other content than the batch named after it")
        self._record(source, window, [digests[k] for k in keep])
        return Written(str(path), len(keep), len(lines) - len(keep))

    def holds(self, source: str, window: Window) -> bool:
        # Two lookups: every delivery writes batch 0 first and the record after it, so a window this
        # sink (or its versions from before the record) wrote anything of has one of them, unless a
        # forwarder deleted batch 0 before the first record append (a crash exactly there).
        return self.record_path(source, window).exists() or self.path_for(source, window, 0).exists()

    def delivered_ids(self, source: str, window: Window) -> set[bytes]:
        found: set[bytes] = set()
        raw = _read(self.record_path(source, window)) or b""
        found.update(raw[i:i + DIGEST] for i in range(0, len(raw) - len(raw) % DIGEST, DIGEST))
        folder = self.root / source
        prefix = f"{source}-{window.slug}-b"
        if folder.is_dir():
            with os.scandir(folder) as entries:
                batches = [e.path for e in entries if e.name.startswith(prefix) and e.name.endswith(".jsonl")]
            for path in batches:
                data = _read(Path(path)) or b""
                for n, line in enumerate(data.split(b"\n"), 1):
                    if not line:
                        continue
                    try:
                        found.add(id_digest(loads(line)["event_id"]))
                    except (JSONError, KeyError, TypeError) as e:
                        raise ValueError(f"{path}, line {n}: not a SIEM record this sink wrote "
                                         f"({type(e).__name__}: {e}); cannot tell what the window holds") from None
        return found

    def _write(self, source: str, path: Path, data: bytes, fence: Fence | None) -> None:
        # The rename is what a forwarder sees: the fence runs right before it, after the data is on disk.
        write_bytes_atomic(path, data, tmp_dir=self.root / source / TMP_DIR, before_rename=fence)

    def _record(self, source: str, window: Window, digests: list[bytes]) -> None:
        """Append ``digests`` to the window's record, durably (after the batch file is on disk)."""
        path = self.record_path(source, window)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            created = False
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            created = True
        try:
            size = os.fstat(fd).st_size
            whole = size - size % DIGEST
            if whole != size:  # the tail of an append killed mid-way: its batch file is on disk anyway
                os.ftruncate(fd, whole)
            try:
                view = memoryview(b"".join(digests))
                while view:
                    view = view[os.write(fd, view):]
                _sync(fd)
            except OSError:
                os.ftruncate(fd, whole)  # no torn digest left behind (ENOSPC mid-append)
                raise
        except OSError as e:
            raise OSError(e.errno, f"{e.strerror or e} while appending to the delivered-ids record", str(path)) from e
        finally:
            os.close(fd)
        if created:
            _sync_folder(path.parent)

    def location(self, source: str) -> str:
        """The folder a forwarder ships ``source``'s batches from."""
        return str(self.root / source)

    def close(self) -> None:
        pass


def _content(lines: list[bytes]) -> bytes:
    data = b"\n".join(lines)
    return data + b"\n" if data else b""


def _read(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileSiemConfig(SinkBase, LocalStoreBase):
    """``{type: file, path: ...}`` (``siem:``, or an entry of ``sinks:``): immutable JSON Lines batch files
    under ``path/<source>/``."""

    type: Literal["file"]
    path: str = ".logpull/siem"

    kinds: ClassVar[tuple[str, ...]] = ("jsonl",)


def _open(cfg: FileSiemConfig, base_dir: Path) -> FileSink:
    return FileSink(cfg.resolved(base_dir))


PLUGINS = [Plugin("siem", "file", FileSiemConfig, _open)]
