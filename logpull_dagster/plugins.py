"""The plug-in registry: every source, checkpoint store, landing store and SIEM sink type, in one place.

A type is one module that declares a :class:`Plugin`: the ``type:`` value the config file names, its
config model (a pydantic model whose ``type`` field is that literal) and a factory that opens it. The
built-in modules are listed in ``BUILTIN``; other packages add theirs through the entry point group
``logpull_dagster.plugins`` (the way Grove finds connectors, caches and outputs), each entry point
naming a module with a ``PLUGINS`` list or a ``Plugin`` object::

    # a third-party package's pyproject.toml
    [project.entry-points."logpull_dagster.plugins"]
    okta = "logpull_okta"                  # module with PLUGINS = [Plugin("source", "okta", ...)]

The config file's tagged unions are built from this registry (``config.config_model``), and the
``open_*`` functions below are the one way to open a configured store: the Dagster resources, the
sensors, the schedules and the ``logpull`` CLI all call them. No Dagster import.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from logpull_dagster.checkpoints import CheckpointStore
    from logpull_dagster.config import LogpullConfig, SourceBase, StoreBase
    from logpull_dagster.landing import LandingStore
    from logpull_dagster.rate import RateGate
    from logpull_dagster.sinks import Sink
    from logpull_dagster.sources import LogSource

Kind = Literal["source", "checkpoints", "landing", "siem"]
KINDS: tuple[Kind, ...] = ("source", "checkpoints", "landing", "siem")
ENTRY_POINT_GROUP = "logpull_dagster.plugins"

# The built-in types: each module holds a PLUGINS list.
BUILTIN = (
    "logpull_dagster.sources.google_workspace",
    "logpull_dagster.sources.okta",
    "logpull_dagster.sources.github",
    "logpull_dagster.sources.slack",
    "logpull_dagster.sources.rest",
    "logpull_dagster.sources.msgraph",
    "logpull_dagster.checkpoints.sqlite",
    "logpull_dagster.checkpoints.dynamodb",
    "logpull_dagster.checkpoints.postgres",
    "logpull_dagster.landing.local",
    "logpull_dagster.landing.s3",
    "logpull_dagster.sinks.file",
    "logpull_dagster.sinks.elasticsearch",
    "logpull_dagster.sinks.s3",
    "logpull_dagster.sinks.syslog",
    "logpull_dagster.sinks.splunk_hec",
)

Secrets = Callable[[str], str]
"""Reads a secret by its environment variable's name at run time (stripped, checked: ``redact.clean_secret``)."""


@dataclass(frozen=True)
class Plugin:
    """One type of one kind.

    ``open`` builds the thing the config describes:

    * source: ``open(config, secrets) -> LogSource``, called at run time for each attempt; read every
      secret through ``secrets(env_name)``, never from the config (it only names them). A type whose
      config sets ``supports_rate_limit`` is also given ``rate=`` (a ``rate.RateGate``, when the source
      has a ``rate_limit``) and hands it to its ``RetryingClient``;
    * checkpoints, landing, siem: ``open(config, base_dir) -> CheckpointStore | LandingStore | Sink``;
      relative paths of the config are relative to ``base_dir`` (the config file's folder). A sink's
      opener may also take ``streams=``: the config's streams (name -> source type).
    """

    kind: Kind
    type: str
    config: type[Any]
    open: Callable[..., Any]


class PluginError(RuntimeError):
    """A plug-in module or entry point is broken (it names the module and what is wrong)."""


_lock = threading.Lock()
_registry: dict[Kind, dict[str, Plugin]] | None = None
_generation = 0  # bumped on every change: config.config_model rebuilds its unions when it moves


def register(plugin: Plugin, *, replace: bool = False) -> None:
    """Add a type (a test, or a package that registers itself instead of by entry point)."""
    global _generation
    if plugin.kind not in KINDS:
        raise PluginError(f"plug-in {plugin.type!r}: kind {plugin.kind!r} is not one of {', '.join(KINDS)}")
    fields = getattr(plugin.config, "model_fields", {})
    if "type" not in fields:
        raise PluginError(f"plug-in {plugin.kind} {plugin.type!r}: its config model {plugin.config.__name__} has "
                          f"no `type` field (declare `type: Literal[{plugin.type!r}]`)")
    with _lock:
        registry = _load()
        if plugin.type in registry[plugin.kind] and not replace:
            if registry[plugin.kind][plugin.type] == plugin:
                return
            raise PluginError(f"two plug-ins register {plugin.kind} type {plugin.type!r}")
        registry[plugin.kind][plugin.type] = plugin
        _generation += 1


def unregister(kind: Kind, type_: str) -> None:
    global _generation
    with _lock:
        _load()[kind].pop(type_, None)
        _generation += 1


def plugins(kind: Kind) -> Mapping[str, Plugin]:
    """The registered types of ``kind``, by ``type:`` value."""
    with _lock:
        return dict(_load()[kind])


def plugin(kind: Kind, type_: str) -> Plugin:
    found = plugins(kind).get(type_)
    if found is None:
        raise PluginError(f"no {kind} type {type_!r} is registered; known: {', '.join(sorted(plugins(kind)))}")
    return found


def generation() -> int:
    with _lock:
        _load()
        return _generation


def _load() -> dict[Kind, dict[str, Plugin]]:
    """The registry, loading the built-in modules and the entry points on first use (under ``_lock``)."""
    global _registry
    if _registry is not None:
        return _registry
    registry: dict[Kind, dict[str, Plugin]] = {kind: {} for kind in KINDS}
    found: list[tuple[str, object]] = [(name, _import(name)) for name in BUILTIN]
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            found.append((f"entry point {ep.name} ({ep.value})", ep.load()))
        except Exception as e:  # a broken third-party package must say which one it is
            raise PluginError(f"entry point {ep.name} = {ep.value} (group {ENTRY_POINT_GROUP}) failed to load: "
                              f"{type(e).__name__}: {e}") from e
    for origin, obj in found:
        for p in _plugins_of(origin, obj):
            if p.type in registry[p.kind]:
                raise PluginError(f"{origin}: {p.kind} type {p.type!r} is registered twice")
            registry[p.kind][p.type] = p
    _registry = registry
    return registry


def _import(module: str) -> object:
    return importlib.import_module(module)


def _plugins_of(origin: str, obj: object) -> Iterable[Plugin]:
    if isinstance(obj, Plugin):
        return [obj]
    listed = getattr(obj, "PLUGINS", obj if isinstance(obj, list | tuple) else None)
    if listed is None or not all(isinstance(p, Plugin) for p in listed):
        raise PluginError(f"{origin}: expected a Plugin, a list of them, or a module with a PLUGINS list")
    return list(listed)


# The one way to open what a config describes.

def open_source(src: SourceBase, secrets: Secrets, *, rate: RateGate | None = None) -> LogSource:
    """The source of ``src``; ``rate``: its account's request budget (only for a source with a rate_limit,
    so types that keep none are opened as they always were)."""
    opener = plugin("source", src.type).open
    if rate is None:
        return opener(src, secrets)  # type: ignore[no-any-return]
    return opener(src, secrets, rate=rate)  # type: ignore[no-any-return]


def open_store(kind: Literal["checkpoints", "landing", "siem"], cfg: StoreBase, base_dir: str | Path, *,
               streams: Mapping[str, str] | None = None) -> Any:
    """What ``cfg`` describes. ``streams`` (sinks): the config's streams and their source types, passed to
    an opener that takes ``streams=`` (e.g. Splunk HEC's default ``sourcetype``, ``logpull:<type>``)."""
    opener = plugin(kind, cfg.type).open
    if streams is not None and "streams" in inspect.signature(opener).parameters:
        return opener(cfg, Path(base_dir), streams=streams)
    return opener(cfg, Path(base_dir))


def open_checkpoints(config: LogpullConfig) -> CheckpointStore:
    """The checkpoint store of ``config`` (the caller closes it)."""
    return open_store("checkpoints", config.checkpoints, config.base_dir)  # type: ignore[no-any-return]


def open_landing(config: LogpullConfig) -> LandingStore:
    return open_store("landing", config.landing, config.base_dir)  # type: ignore[no-any-return]


def open_sink(config: LogpullConfig, name: str = "siem") -> Sink:
    """The sink ``name`` of ``config`` (``siem:``, or an entry of ``sinks:``)."""
    return open_store("siem", config.all_sinks[name], config.base_dir,  # type: ignore[no-any-return]
                      streams=config.stream_types)
