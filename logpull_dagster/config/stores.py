"""The bases of every store and sink type's config (``checkpoints:``, ``landing:``, ``siem:`` and
``sinks:``), and the check that a path the pipeline creates on first use can be."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from logpull_dagster.config.fields import Duration, EnvRef, Strict, bounded, secret_refs_of
from logpull_dagster.config.source import DURATION_RANGES


class StoreBase(Strict):
    """What every ``checkpoints``, ``landing`` and ``siem`` type shares; each type (one module, see
    ``plugins.py``) subclasses it with ``type: Literal["<type>"]`` and its own keys."""

    type: str

    def problems(self, resolve: Callable[[str], Path]) -> list[tuple[str, str]]:
        """``(key, why)`` for each key that cannot work, checked when the config loads (creating nothing)."""
        return []

    def missing_state(self, resolve: Callable[[str], Path], origin: str) -> str | None:
        """Why there is no state to answer from yet (``logpull status`` on a store never written), or None;
        ``origin``: the config file, for the message."""
        return None

    def where(self, resolve: Callable[[str], Path]) -> str:
        """Where the state is, for messages."""
        return self.type

    def secret_refs(self) -> list[EnvRef]:
        """Every secret this store or sink names (a DSN, a collector's token): masked in every message."""
        return secret_refs_of(self)


class LocalStoreBase(StoreBase):
    """A store kept at one ``path`` of this host, a file or a folder created on first use; relative to
    the config file's folder. Checked when the config loads: the path must be creatable by this user."""

    path: str
    path_kind: ClassVar[Literal["file", "folder"]] = "folder"

    def problems(self, resolve: Callable[[str], Path]) -> list[tuple[str, str]]:
        why = cannot_create(resolve(self.path), self.path_kind)
        return [("path", why)] if why else []

    def where(self, resolve: Callable[[str], Path]) -> str:
        return str(resolve(self.path))

    def resolved(self, base_dir: Path) -> Path:
        """``path``, absolute (relative paths start at ``base_dir``, the config file's folder)."""
        path = Path(self.path).expanduser()
        return path if path.is_absolute() else (base_dir / path).resolve()


class SinkBase(StoreBase):
    """What every SIEM sink type shares (an entry of ``sinks:``, or ``siem:``): the retries and lease of
    its deliveries. Left out, a delivery takes the stream's own ``retries``, ``retry_delay``,
    ``lease_ttl`` and ``lease_wait`` (as before sinks had their own). ``kinds``: what the Dagster UI shows
    of the sink's delivery assets (its technology)."""

    retries: int | None = Field(default=None, ge=0, le=100)
    # Each with the stream's range (config.source.DURATION_RANGES): retry_delay 0s .. 1h, lease_ttl 1s .. 1h,
    # lease_wait 0s .. 1h.
    retry_delay: Duration | None = None
    lease_ttl: Duration | None = None
    lease_wait: Duration | None = None

    kinds: ClassVar[tuple[str, ...]] = ()

    @field_validator("lease_ttl")
    @classmethod
    def _positive_ttl(cls, value: dt.timedelta | None) -> dt.timedelta | None:
        if value is not None and value <= dt.timedelta(0):
            raise ValueError("must be longer than 0s")
        return None if value is None else bounded(value, *DURATION_RANGES["lease_ttl"])

    @field_validator("retry_delay", "lease_wait")
    @classmethod
    def _in_range(cls, value: dt.timedelta | None, info: ValidationInfo) -> dt.timedelta | None:
        return None if value is None else bounded(value, *DURATION_RANGES[str(info.field_name)])


def path_exists(path: Path) -> bool:
    return os.path.exists(path)  # False, not PermissionError, under a folder this user cannot read


def cannot_create(path: Path, kind: Literal["file", "folder"]) -> str | None:
    """Why ``path`` (a file or a folder the pipeline creates on first use) cannot be, or None.

    Creates nothing: walks up to the nearest existing ancestor, which must be a writable folder."""
    if path_exists(path):
        if kind == "file" and os.path.isdir(path):
            return f"{path} is a folder; name the database file, e.g. {path / 'checkpoints.db'}"
        if kind == "folder" and not os.path.isdir(path):
            return f"{path} exists and is not a folder"
        return None
    ancestor = path.parent
    while not path_exists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not os.path.isdir(ancestor):
        return f"{path} cannot be created: {ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{path} cannot be created: this user cannot write to {ancestor}"
    return None
