"""``checkpoints: {type: json_file, path: ...}``: a checkpoint store type in one module, for the plug-in
tests and the checkpoint contract suite.

All rows and ids in one JSON file, rewritten whole (write to a temporary file, fsync, rename) under an
exclusive ``flock`` of a lock file beside it, so every operation is atomic and durable across threads
and processes of one host. Slow for big windows (it rewrites every id on every commit): a fake that
keeps the contract, not a backend to deploy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, Literal

from logpull_dagster import json_codec
from logpull_dagster.checkpoints import Checkpoint, LeaseHeld, LeaseLost, Stage
from logpull_dagster.config import StoreBase
from logpull_dagster.plugins import Plugin
from logpull_dagster.rate import next_slot


class JsonFileCheckpointStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def _state(self, write: bool) -> Iterator[dict[str, Any]]:
        with self._thread_lock, open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            state = json_codec.loads(self.path.read_bytes()) if self.path.exists() else {"rows": {}, "ids": {}}
            yield state
            if write:
                tmp = self.path.with_suffix(".tmp")
                with open(tmp, "wb") as f:
                    f.write(json_codec.dumps(state))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.path)

    @staticmethod
    def _key(source: str, stage: str, window_start: str) -> str:
        return f"{source}|{stage}|{window_start}"

    def get(self, source: str, stage: Stage, window_start: str) -> Checkpoint | None:
        with self._state(write=False) as state:
            row = state["rows"].get(self._key(source, stage, window_start))
        return Checkpoint(**row) if row else None

    def list(self, source: str, stage: Stage) -> list[Checkpoint]:
        with self._state(write=False) as state:
            rows = [Checkpoint(**r) for r in state["rows"].values() if r["source"] == source and r["stage"] == stage]
        return sorted(rows, key=lambda cp: cp.window_start)

    def acquire(self, source: str, stage: Stage, window_start: str, window_end: str, *,
                owner: str, ttl: float, now: float) -> Checkpoint:
        with self._state(write=True) as state:
            key = self._key(source, stage, window_start)
            row = state["rows"].get(key)
            cp = Checkpoint(**row) if row else Checkpoint(source, stage, window_start, window_end)
            if cp.lease_owner is not None and cp.lease_owner != owner and cp.lease_expires > now:
                raise LeaseHeld(source, stage, window_start, cp.lease_owner, cp.lease_expires)
            held = dataclasses.replace(cp, epoch=cp.epoch + 1, attempts=cp.attempts + 1, lease_owner=owner,
                                       lease_expires=now + ttl, heartbeat=now,
                                       status="complete" if cp.status == "complete" else "running")
            state["rows"][key] = dataclasses.asdict(held)
        return held

    def _write(self, cp: Checkpoint, owner: str | None, ids: Collection[tuple[int, bytes]]) -> None:
        with self._state(write=True) as state:
            key = self._key(cp.source, cp.stage, cp.window_start)
            row = state["rows"].get(key)
            if row is None or row["epoch"] != cp.epoch or row["lease_owner"] != owner:
                raise LeaseLost(f"{cp.stage} of window {cp.window_start} of source {cp.source!r} was taken over "
                                f"(epoch {cp.epoch} is no longer current); stopping without writing")
            state["rows"][key] = dataclasses.asdict(cp)
            if ids:
                known = state["ids"].setdefault(f"{cp.source}|{cp.window_start}", {})
                known.update({i.hex(): t for t, i in ids})

    def commit(self, cp: Checkpoint, *, ttl: float, now: float,
               landed_ids: Collection[tuple[int, bytes]] = ()) -> Checkpoint:
        new = dataclasses.replace(cp, lease_expires=now + ttl, heartbeat=now)
        self._write(new, cp.lease_owner, landed_ids)
        return new

    def release(self, cp: Checkpoint, *, now: float) -> Checkpoint:
        new = dataclasses.replace(cp, lease_owner=None, lease_expires=0.0, heartbeat=now)
        self._write(new, cp.lease_owner, ())
        return new

    def forget_ids(self, cp: Checkpoint, *, now: float) -> None:
        with self._state(write=True) as state:
            row = state["rows"].get(self._key(cp.source, cp.stage, cp.window_start))
            if row is None or row["epoch"] != cp.epoch or row["lease_owner"] != cp.lease_owner:
                raise LeaseLost(f"{cp.stage} of window {cp.window_start} of source {cp.source!r} is no longer held "
                                f"by epoch {cp.epoch}; no id was forgotten")
            state["ids"].pop(f"{cp.source}|{cp.window_start}", None)

    def known_ids(self, source: str, window_start: str, events: Collection[tuple[int, bytes]]) -> set[bytes]:
        with self._state(write=False) as state:
            known = state["ids"].get(f"{source}|{window_start}", {})
        return {i for t, i in events if known.get(i.hex()) == t}

    def count_ids(self, source: str, window_start: str) -> int:
        with self._state(write=False) as state:
            return len(state["ids"].get(f"{source}|{window_start}", {}))

    def reserve(self, account: str, *, interval: float, now: float) -> float:
        with self._state(write=True) as state:
            budget = state.setdefault("rate", {})
            budget[account] = slot = next_slot(budget.get(account), interval=interval, now=now)
        return float(slot)

    def close(self) -> None:
        pass


class JsonFileCheckpointsConfig(StoreBase):
    type: Literal["json_file"]
    path: str

    def where(self, resolve: Any) -> str:
        return str(resolve(self.path))


def _open(cfg: JsonFileCheckpointsConfig, base_dir: Path) -> JsonFileCheckpointStore:
    path = Path(cfg.path)
    return JsonFileCheckpointStore(path if path.is_absolute() else base_dir / path)


PLUGINS = [Plugin("checkpoints", "json_file", JsonFileCheckpointsConfig, _open)]
