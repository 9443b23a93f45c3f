"""Dagster resources: the only place that touches an external system.

Four resource bases, typed against the protocols, not against one backend: a source, the checkpoint
store, the landing store and a SIEM sink. Each configured type gets its own subclass with the fields of
its config model (``typed_resource``), so the Dagster UI's resource page shows every key as the config
file sets it (durations in seconds, times in RFC 3339); the resource rebuilds the model from them and
opens it through ``plugins.py``, the same factory the sensors, the schedules and the ``logpull`` CLI
use. A new backend is a plug-in, never a hand-written resource class.

Secrets: the config only names them (``{env: NAME}``); the resources carry them as ``dg.EnvVar(NAME)``,
which Dagster resolves when a run starts (a run whose variable is unset fails before any step, naming
the variable and the key) and shows by name only, in the UI and the event log. The opener then reads the
credential from the same environment (``redact.env_secret``, which cleans it and names the variable if
something is wrong); ``secrets_from`` keeps which variable each secret key names.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import types
import typing
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import BaseModel, Field, PrivateAttr, create_model

from logpull_dagster import plugins
from logpull_dagster.checkpoints import CheckpointStore
from logpull_dagster.config import SourceBase, StoreBase
from logpull_dagster.config.fields import EnvRef
from logpull_dagster.config.source import FILE_KEYS
from logpull_dagster.json_codec import dumps, loads
from logpull_dagster.landing import LandingStore
from logpull_dagster.rate import RateGate
from logpull_dagster.redact import Redactor, env_secret
from logpull_dagster.sinks import Sink
from logpull_dagster.sources import LogSource

# ---- config model -> typed Dagster config ---------------------------------------------------------------

# How each field of a config model is carried by its resource: the Dagster config type, and the value
# written into the resource (``out``) and read back for the model (``back``).
class _Carried(typing.NamedTuple):
    tp: Any
    note: str = ""
    json: bool = False  # carried as JSON text: a type Dagster's config cannot show (a plug-in's own)


def _carried(annotation: Any) -> _Carried:
    """The Dagster config type that carries a config model's field of type ``annotation``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _carried(args[0])
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            inner = _carried(rest[0])
            return inner if inner.json else inner._replace(tp=inner.tp | None)
        return _Carried(str, "JSON", json=True)
    if isinstance(annotation, type) and issubclass(annotation, EnvRef):
        return _Carried(str, "secret: dg.EnvVar, resolved when the run starts")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _Carried(_nested_config(annotation))
    if annotation is dt.timedelta:
        return _Carried(float, "seconds")
    if annotation is dt.datetime:
        return _Carried(str, "RFC 3339")
    if origin in (list, tuple) and args:
        item = _carried(args[0])
        return _Carried(str, "JSON", json=True) if item.json else _Carried(list[item.tp])  # type: ignore[name-defined]
    if origin is dict and len(args) == 2 and args[0] is str:
        item = _carried(args[1])
        return _Carried(str, "JSON", json=True) if item.json else _Carried(dict[str, item.tp])  # type: ignore[name-defined]
    if origin is Literal or annotation in (str, int, float, bool):
        return _Carried(annotation)
    if annotation is Path:
        return _Carried(str)
    return _Carried(str, "JSON", json=True)


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """``create_model`` field definitions mirroring ``model``'s fields."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        carried = _carried(info.annotation)
        note = f" ({carried.note})" if carried.note else ""
        description = (info.description or f"`{name}:` of the config") + note
        out[name] = (carried.tp, Field(description=description))
    return out


@functools.cache
def _nested_config(model: type[BaseModel]) -> type[dg.Config]:
    """A ``dg.Config`` mirroring a nested model of the config (e.g. Okta's ``oauth:``)."""
    return create_model(model.__name__.removesuffix("Config") + "Fields", __base__=dg.Config,  # type: ignore[call-overload, no-any-return]
                        __doc__=model.__doc__, **_fields(model))


def _to_dagster(annotation: Any, value: Any, path: str, secrets_from: dict[str, str]) -> Any:
    """``value`` (the model's, in JSON mode: durations in seconds, secrets as ``{env: NAME}``) as the
    field of type ``annotation`` carries it; each secret becomes ``dg.EnvVar`` and is noted in
    ``secrets_from`` under its dotted ``path``."""
    if value is None:
        return None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _to_dagster(args[0], value, path, secrets_from)
    if _carried(annotation).json:
        return dumps(value).decode()
    if origin in (typing.Union, types.UnionType):
        return _to_dagster(next(a for a in args if a is not type(None)), value, path, secrets_from)
    if isinstance(annotation, type) and issubclass(annotation, EnvRef):
        secrets_from[path] = value["env"]
        return dg.EnvVar(value["env"])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        fields = annotation.model_fields
        return _nested_config(annotation)(**{k: _to_dagster(fields[k].annotation, v, f"{path}.{k}", secrets_from)
                                             for k, v in value.items()})
    if origin in (list, tuple):
        return [_to_dagster(args[0], v, f"{path}[{i}]", secrets_from) for i, v in enumerate(value)]
    if origin is dict:
        return {k: _to_dagster(args[1], v, f"{path}.{k}", secrets_from) for k, v in value.items()}
    return value


def _from_dagster(annotation: Any, value: Any, path: str, secrets_from: dict[str, str]) -> Any:
    """The inverse of ``_to_dagster``: what the config model validates (secrets as ``{env: NAME}``)."""
    if value is None:
        return None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _from_dagster(args[0], value, path, secrets_from)
    if _carried(annotation).json:
        return loads(value.encode() if isinstance(value, str) else value)  # carried as text; loads reads bytes
    if origin in (typing.Union, types.UnionType):
        return _from_dagster(next(a for a in args if a is not type(None)), value, path, secrets_from)
    if isinstance(annotation, type) and issubclass(annotation, EnvRef):
        return {"env": secrets_from[path]}  # the name, never the value Dagster resolved
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {k: _from_dagster(f.annotation, getattr(value, k), f"{path}.{k}", secrets_from)
                for k, f in annotation.model_fields.items()}
    if origin in (list, tuple):
        return [_from_dagster(args[0], v, f"{path}[{i}]", secrets_from) for i, v in enumerate(value)]
    if origin is dict:
        return {k: _from_dagster(args[1], v, f"{path}.{k}", secrets_from) for k, v in value.items()}
    return value


@functools.cache
def typed_resource(base: type[_Typed], model: type[BaseModel]) -> type[_Typed]:
    """The resource class of one config type: ``base`` with a typed field per key of ``model``."""
    name = model.__name__.removesuffix("Config") + "Resource"
    doc = f"{(base.__doc__ or '').strip()}\n\n{(model.__doc__ or '').strip()}".strip()
    return create_model(name, __base__=base, __doc__=doc, __module__=__name__,  # type: ignore[call-overload, no-any-return]
                        **_fields(model))


class _Typed(dg.ConfigurableResource):
    """What every typed resource carries besides its config's keys."""

    secrets_from: dict[str, str] = Field(
        default_factory=dict, description="Each secret key of the config (dotted) and the environment variable "
                                          "it is read from when the run starts (dg.EnvVar); never a value.")

    _kind: plugins.Kind

    @classmethod
    def _build(cls, cfg: BaseModel, **extra: Any) -> Any:
        """A resource carrying ``cfg``, of the class generated for ``cfg``'s type."""
        typed = typed_resource(cls, type(cfg))
        secrets_from: dict[str, str] = {}
        values = cfg.model_dump(mode="json")
        fields = {k: _to_dagster(f.annotation, values[k], k, secrets_from) for k, f in type(cfg).model_fields.items()}
        return typed(**fields, secrets_from=secrets_from, **extra)

    def _model(self) -> Any:
        model = plugins.plugin(self._kind, self.type).config  # type: ignore[attr-defined]
        values = {k: _from_dagster(f.annotation, getattr(self, k), k, self.secrets_from)
                  for k, f in model.model_fields.items()}
        return model.model_validate(values)


class LogSourceResource(_Typed):
    """The API of one configured source (any registered type), opened once per attempt."""

    secret_envs: list[str] = Field(default_factory=list,
                                   description="Every secret the config names (of every source): masked in every "
                                               "message.")

    _kind = "source"

    @classmethod
    def of(cls, src: SourceBase, secret_envs: list[str]) -> LogSourceResource:
        """The resource of stream ``src``; its file keys (``ca_file``, ``client_cert``...) made absolute (the
        resource is opened elsewhere)."""
        paths = {key: str(path) for key in FILE_KEYS if (path := src.path_of(key)) is not None}
        carried = src.model_copy(update=paths) if paths else src
        return cls._build(carried, secret_envs=secret_envs)  # type: ignore[no-any-return]

    @cached_property
    def config(self) -> SourceBase:
        return self._model()  # type: ignore[no-any-return]

    def open(self, rate: RateGate | None = None) -> LogSource:
        """A source for one attempt, drawing from ``rate`` (see ``rate_gate``) before every request;
        raises InvalidSecret if a credential is unset or cannot be sent."""
        return plugins.open_source(self.config, env_secret, rate=rate)

    def rate_gate(self, store: CheckpointStore) -> RateGate | None:
        """The source's share of its account's request budget, kept in ``store`` (the run's checkpoint
        store, so every run and machine draws from one budget); None without ``rate_limit``. One per
        attempt at a window: ``waited`` is that attempt's."""
        limit = self.config.rate
        return None if limit is None else RateGate(store, self.config.effective_rate_account, limit)

    def redactor(self) -> Redactor:
        """Masks every secret the config names (``secret_envs``) in any text."""
        return Redactor([os.environ.get(n) for n in self.secret_envs])


class _StoreResource(_Typed):
    base_dir: str = Field(description="The config file's folder: relative paths are relative to it.")

    _kind: Literal["checkpoints", "landing", "siem"]
    _opened: Any = PrivateAttr(default=None)

    @classmethod
    def of(cls, cfg: StoreBase, base_dir: str | Path) -> Any:
        return cls._build(cfg, base_dir=str(base_dir))

    def _open(self) -> Any:
        if self._opened is None:  # also used outside a run (sensors, schedules)
            streams = getattr(self, "stream_types", None)  # sinks only
            self._opened = plugins.open_store(self._kind, self._model(), self.base_dir, streams=streams)
        return self._opened

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._opened is not None:
            self._opened.close()
            self._opened = None


class CheckpointsResource(_StoreResource):
    """Window checkpoints and leases (``checkpoints:`` of the config; see ``checkpoints/__init__.py``)."""

    _kind = "checkpoints"

    @property
    def store(self) -> CheckpointStore:
        return self._open()  # type: ignore[no-any-return]


class LandingResource(_StoreResource):
    """Landed pages and the read journal (``landing:`` of the config; see ``landing/__init__.py``)."""

    _kind = "landing"

    @property
    def store(self) -> LandingStore:
        return self._open()  # type: ignore[no-any-return]


class SiemResource(_StoreResource):
    """One SIEM sink (``siem:``, or an entry of ``sinks:``; see ``sinks/__init__.py``), shared by every
    stream delivered to it."""

    stream_types: dict[str, str] = Field(default_factory=dict,
                                         description="The config's streams and their source types, for a sink "
                                                     "that labels events with them (Splunk's sourcetype).")

    _kind = "siem"

    @classmethod
    def of(cls, cfg: StoreBase, base_dir: str | Path, stream_types: dict[str, str] | None = None) -> Any:
        return cls._build(cfg, base_dir=str(base_dir), stream_types=stream_types or {})

    @property
    def sink(self) -> Sink:
        return self._open()  # type: ignore[no-any-return]
