"""``LogpullConfig``: the whole config file, its sources expanded into streams, its sinks named, and
the rules across keys (unique names, one rate per account, ``deliver_to`` naming sinks). The field types
here are the bases; ``loading.config_model`` narrows them to the registered types."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, model_validator

from logpull_dagster.config.fields import Strict
from logpull_dagster.config.source import FILE_KEYS, SourceBase
from logpull_dagster.config.stores import StoreBase
from logpull_dagster.targets import LEGACY_SINK, RESERVED_SINK_NAMES, job_of

# The stores a config gets when it names none: the embedded defaults (`siem:` only without `sinks:`).
DEFAULT_STORES = {"checkpoints": {"type": "sqlite"}, "landing": {"type": "local"}}
DEFAULT_SINK = {"type": "file"}
_SINK_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class LogpullConfig(Strict):
    """The whole config file. The field types here are the bases; ``config_model()`` narrows ``sources``,
    ``checkpoints``, ``landing`` and ``siem`` to tagged unions of the registered types (``plugins.py``)."""

    sources: list[SourceBase] = Field(min_length=1)
    checkpoints: StoreBase
    landing: StoreBase
    # The SIEM sinks, by name: each stream is delivered to those it names (deliver_to), else to all.
    # `siem:` is the sink named siem (the only one before `sinks:` existed); the default, with neither.
    siem: StoreBase | None = None
    sinks: dict[str, StoreBase] = Field(default_factory=dict)
    # Dagster's executor for the code location. in_process: steps run in the run's process (a window's
    # work is I/O bound, so a subprocess per step costs ~1.5 s a run for nothing); multiprocess: each
    # step in its own process, as step-per-pod executors do. Retries behave the same under both.
    executor: Literal["in_process", "multiprocess"] = "in_process"
    # Folder that relative paths are resolved against (the config file's folder).
    base_dir: str = "."

    _demo: bool = PrivateAttr(default=False)
    _sinks: dict[str, StoreBase] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_stores(cls, value: Any) -> Any:
        if isinstance(value, dict):
            defaults = dict(DEFAULT_STORES)
            if "siem" not in value and "sinks" not in value:
                defaults["siem"] = DEFAULT_SINK
            return {**{k: v for k, v in defaults.items() if k not in value}, **value}
        return value

    @model_validator(mode="after")
    def _unique_names(self, info: ValidationInfo) -> LogpullConfig:
        # Expanded once, here: definitions, schedules, sensors, the CLI and the Component see streams only.
        seen: dict[str, tuple[int, SourceBase]] = {}
        streams: list[SourceBase] = []
        for i, src in enumerate(self.sources):
            for s in src.streams():
                if s.name in seen:
                    j, other = seen[s.name]
                    if other.group == other.name and s.group == s.name:
                        raise ValueError(f"two sources are named {s.name!r} (sources[{j}] and sources[{i}]); "
                                         f"names must be unique")
                    raise ValueError(f"{_origin(j, other)} and {_origin(i, s)} both make a stream named {s.name!r} "
                                     f"(a source's applications become streams <name>_<application>); stream names "
                                     f"must be unique: rename one of the sources")
                seen[s.name] = (i, s)
                streams.append(s)
        object.__setattr__(self, "sources", streams)  # frozen model: set once, before anyone reads it
        _one_rate_per_account(self.sources)
        self._sinks = _named_sinks(self.siem, self.sinks)
        for i, src in enumerate(self.sources):
            for name in src.deliver_to or ():
                if name not in self._sinks:
                    raise ValueError(f"{_origin(i, src)}.deliver_to: {name!r} is not a sink of this config; its "
                                     f"sinks are {', '.join(self._sinks)} (sinks: names them; siem: is the sink "
                                     f"named siem)")
        _unique_delivery_names(self.sources, self._sinks)
        # Where the config came from, recorded on the sources too: the assets see only their source.
        self._demo = bool((info.context or {}).get("demo"))
        for s in self.sources:
            s._demo = self._demo
            s._paths = {key: self.resolve(getattr(s, key)) for key in FILE_KEYS if getattr(s, key) is not None}
        return self

    @property
    def is_demo(self) -> bool:
        """True when this is the built-in demo config (no config file was found)."""
        return self._demo

    @property
    def all_sinks(self) -> dict[str, StoreBase]:
        """Every sink by name, in order: ``siem`` (the ``siem:`` key) first, then ``sinks:``."""
        return dict(self._sinks)

    @property
    def stream_types(self) -> dict[str, str]:
        """Every stream's source type, by stream name (what a sink may label events with)."""
        return {s.name: s.type for s in self.sources}

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    def source(self, name: str) -> SourceBase:
        for s in self.sources:
            if s.name == name:
                return s
        raise KeyError(name)


def _origin(i: int, stream: SourceBase) -> str:
    """Where a stream comes from, for messages: ``sources[1] (gws)`` or ``sources[1] (gws, application login)``."""
    if stream.group == stream.name:
        return f"sources[{i}] ({stream.name})"
    return f"sources[{i}] ({stream.group}, application {getattr(stream, 'application', '?')})"


def _named_sinks(siem: StoreBase | None, sinks: dict[str, StoreBase]) -> dict[str, StoreBase]:
    """``siem:`` as the sink named siem, then ``sinks:``; names checked (they name assets and jobs)."""
    if siem is not None and LEGACY_SINK in sinks:
        raise ValueError("siem: and sinks.siem are both the sink named siem; keep one of them (sinks: {siem: ...})")
    for name in sinks:
        if not _SINK_NAME.match(name):
            raise ValueError(f"sinks.{name}: a sink's name must be lowercase letters, digits and _, starting with "
                             f"a letter, at most 63 characters (it names the assets <sink>/<stream>)")
        if name in RESERVED_SINK_NAMES:
            raise ValueError(f"sinks.{name}: the name {name!r} is taken by the pull's assets ({name}/<stream>); "
                             f"name the sink otherwise")
    if siem is None and not sinks:
        raise ValueError("sinks: is empty; name at least one sink, e.g. sinks: {siem: {type: file, path: siem}}")
    return {**({LEGACY_SINK: siem} if siem is not None else {}), **sinks}


def _unique_delivery_names(streams: list[SourceBase], sinks: dict[str, StoreBase]) -> None:
    """Jobs and sensors are named after (stream, sink) pairs; refuse two pairs with one name."""
    seen: dict[str, tuple[str, str]] = {}
    for stream in streams:
        for sink in sinks:
            name = job_of(stream.name, sink)
            if name in seen and seen[name] != (stream.name, sink):
                other = seen[name]
                raise ValueError(f"the delivery of stream {stream.name!r} to sink {sink!r} and of stream {other[0]!r} "
                                 f"to sink {other[1]!r} would both be named {name}; rename the sink or the source")
            seen[name] = (stream.name, sink)


def _one_rate_per_account(sources: list[SourceBase]) -> None:
    """Sources drawing from one account's budget must agree on it: with two limits, each run would
    space its requests by its own, and the account would see neither."""
    first: dict[str, SourceBase] = {}
    for s in sources:
        account = s.effective_rate_account
        other = first.setdefault(account, s)
        if other is s:
            continue
        mine, theirs = s.rate, other.rate
        if (None if mine is None else mine.interval) != (None if theirs is None else theirs.interval):
            raise ValueError(
                f"sources {other.name!r} and {s.name!r} draw from the rate budget of account {account!r} "
                f"(rate_account, default: the pool) but state different rate_limit ({theirs or 'none'} and "
                f"{mine or 'none'}); give them the same rate_limit, or different rate_account")
