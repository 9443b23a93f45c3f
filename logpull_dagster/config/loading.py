"""Loading the config: the tagged unions of the registered types (``plugins.py``), the YAML reader that
refuses a key written twice, the error messages that name each wrong key, and where the file is."""

from __future__ import annotations

import datetime as dt
import difflib
import os
import ssl
import types
import typing
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model

from logpull_dagster import plugins
from logpull_dagster.config.defaults import DEFAULT_CONFIG_FILE, demo_config
from logpull_dagster.config.document import LogpullConfig
from logpull_dagster.config.fields import URL_KEY_ERROR
from logpull_dagster.config.stores import StoreBase, path_exists
from logpull_dagster.targets import LEGACY_SINK
from logpull_dagster.windows import rfc3339


class ConfigError(ValueError):
    """The config file is wrong; the message names the key and what is allowed."""


class DemoConfigWarning(UserWarning):
    """No config file was found and the built-in demo config is in use (see ``load_config``)."""


class StartBeforeRetentionWarning(UserWarning):
    """A source's ``start`` lies before what its API still keeps (``SourceBase.retention``), seen now."""


def _strip(tp: Any) -> Any:
    """``tp`` without ``Annotated`` metadata and without the ``None`` of an ``Optional``."""
    while True:
        if typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp):
            rest = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = rest[0] if len(rest) == 1 else Union[tuple(rest)]  # noqa: UP007 (a runtime tuple)
        else:
            return tp


def _keys_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the model at ``loc`` (a pydantic error's location, without the wrong key) allows: the
    fields of ``model`` walked through lists, dicts and tagged unions (a tag in ``loc`` picks the member
    whose ``type`` it is). Empty when the walk does not end on a model."""
    tp: Any = model
    for item in loc:
        tp = _strip(tp)
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(item, str) and item in tp.model_fields:
            tp = tp.model_fields[item].annotation
        elif origin in (list, tuple) and isinstance(item, int) and args:
            tp = args[0]
        elif origin is dict and isinstance(item, str) and len(args) == 2:
            tp = args[1]
        elif origin in (Union, types.UnionType):
            tagged = [m for m in args if isinstance(m, type) and issubclass(m, BaseModel) and "type" in m.model_fields
                      and item in typing.get_args(m.model_fields["type"].annotation)]
            if not tagged:
                return []
            tp = tagged[0]
        else:
            return []
    tp = _strip(tp)
    if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
        return []
    # base_dir is the loader's (the config file's folder), never a key of the file.
    return [k for k in tp.model_fields if not (tp is model and k == "base_dir")]


def _did_you_mean(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    return f"did you mean {close[0]!r}?" if close else "check its spelling against the README's config reference"


def _describe(err: dict[str, Any], raw: Any, model: type[BaseModel] | None = None) -> str:
    loc = err["loc"]
    parts: list[str] = []
    node = raw
    for item in loc:
        if isinstance(node, dict) and isinstance(item, str) and item not in node and node.get("type") == item:
            continue  # the tagged union's member name (the `type` value), not a key of the file
        if isinstance(item, int):
            name = node[item].get("name") if isinstance(node, list) and isinstance(node[item], dict) else None
            parts[-1] = f"{parts[-1]}[{item}]" + (f" ({name})" if name else "") if parts else f"[{item}]"
        else:
            parts.append(str(item))
        try:
            node = node[item]
        except (KeyError, IndexError, TypeError):
            node = None
    key = ".".join(parts) or "(top level)"
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        allowed = _keys_at(model, tuple(loc[:-1])) if model is not None else []
        return f"{key}: unknown key; {_did_you_mean(str(loc[-1]), allowed)}"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        return (f"{key}.type: {ctx.get('tag')!r} is not allowed; expected one of {ctx.get('expected_tags')} "
                f"(other types come from plug-in packages: entry point group logpull_dagster.plugins)")
    if kind == "union_tag_not_found":
        return f"{key}.type: required key is missing"
    if kind == "literal_error":
        return f"{key}: {err.get('input')!r} is not allowed; {msg.lower()}"
    if kind == "missing":
        return f"{key}: required key is missing"
    if kind == URL_KEY_ERROR:
        ctx = err.get("ctx") or {}
        return f"{key}.{ctx.get('key')}: {ctx.get('why')}"
    if kind in ("int_type", "float_type") and isinstance(err.get("input"), bool):
        return f"{key}: {str(err['input']).lower()} is a yes/no value, not a number; write a number"
    return f"{key}: {msg.removeprefix('Value error, ')}"


def _cannot_read_ca(path: Path) -> str | None:
    if not path_exists(path):
        return f"{path} does not exist (relative paths are relative to the config file's folder)"
    if not os.path.isfile(path):
        return f"{path} is not a file; name a PEM file of CA certificates"
    if not os.access(path, os.R_OK):
        return f"{path} is not readable by this user"
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError) as e:
        return f"{path} holds no PEM CA certificate ({getattr(e, 'reason', None) or e})"
    return None


class _EncryptedKey(Exception):
    pass


def _cannot_read_client_cert(cert: Path, key: Path) -> tuple[str, str] | None:
    """(key, why) when ``client_cert``/``client_key`` cannot be read or are not a certificate and its key."""
    for name, path in (("client_cert", cert), ("client_key", key)):
        if not path_exists(path):
            return name, f"{path} does not exist (relative paths are relative to the config file's folder)"
        if not os.path.isfile(path):
            return name, f"{path} is not a file; name a PEM file"
        if not os.access(path, os.R_OK):
            return name, f"{path} is not readable by this user"
    def no_passphrase() -> bytes:  # an encrypted key would make OpenSSL prompt on the terminal
        raise _EncryptedKey

    try:
        ssl.create_default_context().load_cert_chain(str(cert), str(key), password=no_passphrase)
    except _EncryptedKey:
        return "client_key", (f"{key} is encrypted (a passphrase); decrypt it once: openssl pkey -in "
                              f"{key.name} -out plain.pem, and name the plain file")
    except (ssl.SSLError, OSError) as e:
        return "client_cert", (f"{cert} and {key} are not a PEM certificate and its unencrypted private key "
                               f"({getattr(e, 'reason', None) or e})")
    return None


def _path_problems(cfg: LogpullConfig) -> list[str]:
    """Every key of the config that cannot be used (paths that cannot be created or read), as ``key: why``."""
    out = []
    stores: list[tuple[str, StoreBase]] = [("checkpoints", cfg.checkpoints), ("landing", cfg.landing)]
    stores += [(LEGACY_SINK if cfg.siem is sink else f"sinks.{name}", sink) for name, sink in cfg.all_sinks.items()]
    for where, store in stores:
        out += [f"{where}.{key}: {why}" for key, why in store.problems(cfg.resolve)]
    for i, src in enumerate(cfg.sources):
        if src.ca_path is not None and (why := _cannot_read_ca(src.ca_path)):
            out.append(f"sources[{i}] ({src.name}).ca_file: {why}")
        cert, key = src.path_of("client_cert"), src.path_of("client_key")
        if cert is not None and key is not None and (bad := _cannot_read_client_cert(cert, key)):
            out.append(f"sources[{i}] ({src.name}).{bad[0]}: {bad[1]}")
    return out


_models: tuple[int, type[LogpullConfig]] | None = None


def config_model() -> type[LogpullConfig]:
    """``LogpullConfig`` with ``sources``, ``checkpoints``, ``landing``, ``siem`` and ``sinks`` as tagged unions
    of the registered types (``plugins.py``): ``type`` picks the model, whose own keys are then checked."""
    global _models
    generation = plugins.generation()
    if _models is not None and _models[0] == generation:
        return _models[1]

    def union(kind: plugins.Kind) -> Any:
        models = tuple(p.config for p in plugins.plugins(kind).values())
        return Annotated[Union[models], Field(discriminator="type")]  # noqa: UP007 (a runtime tuple)

    sink = union("siem")
    model = create_model(
        "LogpullConfig", __base__=LogpullConfig,
        sources=(list[union("source")], Field(min_length=1)),  # type: ignore[valid-type]
        checkpoints=(union("checkpoints"), ...), landing=(union("landing"), ...),
        siem=(Optional[sink], None), sinks=(dict[str, sink], Field(default_factory=dict)),  # type: ignore[valid-type]  # noqa: UP045
    )
    _models = (generation, model)
    return model


def parse_config(raw: Any, *, origin: str = "config", base_dir: str = ".", demo: bool = False) -> LogpullConfig:
    """Validate a parsed YAML document; raise ConfigError naming every wrong key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping with a 'sources' list")
    model = config_model()
    try:
        cfg = model.model_validate({**raw, "base_dir": base_dir}, context={"demo": demo})
    except ValidationError as e:
        lines = "\n".join(f"  - {_describe(err, raw, model)}" for err in e.errors())
        raise ConfigError(f"{origin} is invalid:\n{lines}") from None
    problems = _path_problems(cfg)
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"{origin} is invalid:\n{lines}")
    _warn_start_before_retention(cfg, origin)
    return cfg


def _warn_start_before_retention(cfg: LogpullConfig, origin: str) -> None:
    """Warn (once per source) of a ``start`` older than its API keeps. A warning, not an error: the bound
    moves with the calendar, so a config that loaded when written would later refuse to load (and the
    runs re-validating it would fail) although nothing in it changed; and the windows before it only read
    back nothing, which the operator may want recorded. Checked here, at load time only, against now."""
    now = dt.datetime.now(dt.UTC)
    warned: set[str] = set()
    for src in cfg.sources:
        floor = src.retention_floor(now)
        if floor is None or src.start >= floor or src.group in warned:
            continue
        warned.add(src.group)
        kept = type(src).retention
        what = (f"keeps events for {kept.days} days, so nothing before {rfc3339(floor)} today"
                if isinstance(kept, dt.timedelta) else f"has no events before {rfc3339(floor)}")
        warnings.warn(StartBeforeRetentionWarning(
            f"{origin}: source {src.group!r}: start {rfc3339(src.start)} is before what its API ({src.type}) still "
            f"holds: it {what}. The windows before then read back no "
            f"events or fewer than happened (or the API refuses them); set start to {rfc3339(floor)} or later "
            f"unless that is what you mean"), stacklevel=3)


class _DuplicateKey(Exception):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (PyYAML keeps the last one
    silently, so the earlier setting would be ignored without a word). Merge keys (``<<``) may still
    be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class says so
                continue
            line = key_node.start_mark.line + 1
            if first is not None:
                raise _DuplicateKey(f"line {line}: the key {key!r} is written twice in one mapping (first on "
                                    f"line {first}); YAML would silently keep only the last one, so remove one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


_demo_warned = False


def _warn_demo(cfg: LogpullConfig) -> None:
    """Say once per process, on stderr, that the demo config is in use."""
    global _demo_warned
    if _demo_warned:
        return
    _demo_warned = True
    warnings.warn(DemoConfigWarning(
        f"logpull: no config file (LOGPULL_CONFIG unset, no ./logpull.yaml in {os.getcwd()}): using the built-in "
        f"DEMO config, reading the bundled simulator at {getattr(cfg.sources[0], 'base_url', '?')} and keeping "
        f"its state in {cfg.checkpoints.where(cfg.resolve)}; set LOGPULL_CONFIG to your config file"), stacklevel=3)


def config_path() -> Path | None:
    """The config file in force: $LOGPULL_CONFIG, else ./logpull.yaml if it exists, else None (demo)."""
    named = os.environ.get("LOGPULL_CONFIG")
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigError(f"LOGPULL_CONFIG names {named!r}, which is not a file")
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


def load_config(path: Path | None = None) -> LogpullConfig:
    """The config in ``path``, else the file in force (``config_path``), else the demo config, with a
    ``DemoConfigWarning`` (once per process) and ``is_demo`` set."""
    path = path if path is not None else config_path()
    if path is None:
        cfg = parse_config(demo_config(), origin="the built-in demo config", base_dir=os.getcwd(), demo=True)
        _warn_demo(cfg)
        return cfg
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_config(raw, origin=str(path), base_dir=str(path.resolve().parent))
