"""The config file: the public contract of logpull-dagster.

``LOGPULL_CONFIG`` names a YAML file; without it ``./logpull.yaml`` is used; with neither, the demo
config (one Google Workspace ``login`` source read from the bundled simulator), loudly: a
``DemoConfigWarning`` on stderr once per process, and ``is_demo`` set so the assets say so in the UI
(``logpull status`` and ``logpull reset`` refuse to run on it). Every key is checked when the file is
loaded, so a typo fails ``dagster dev`` at once with the key and the fix, instead of a window failing at
3 a.m.: unknown and duplicate keys, durations that are negative, zero where zero makes no sense, or
outside their documented range, a yes/no where a number belongs, URLs holding credentials, a ``start``
before 2000 or more than one window in the future, and paths that cannot be created or read. A
``start`` before what the source's API still keeps (its ``retention``, seen at load time) is a
``StartBeforeRetentionWarning``, not an error: that bound moves with the calendar.
Relative paths are relative to the config file's folder. Loading creates nothing.

Secrets are only ever *named* (``access_token: {env: GWS_ACCESS_TOKEN}``); their values are read from
the run's environment when an attempt opens its source (``resources.py``) and never pass through this
module.

One module per concern: ``fields`` (durations, secrets, URLs, rate limits), ``source`` (``SourceBase``,
what every source type shares), ``stores`` (``StoreBase``, ``LocalStoreBase``, ``SinkBase``),
``document`` (``LogpullConfig``: the whole file and the rules across keys), ``defaults`` (the default
file name, the demo config) and ``loading`` (the tagged unions of the registered types, the YAML reader,
the error messages). Each type's own model lives in its module and is registered in ``plugins.py``,
which imports none of these; ``loading.config_model()`` joins them into tagged unions chosen by ``type``.
Everything a caller needs is importable from ``logpull_dagster.config``.
"""

from logpull_dagster.config.defaults import DEFAULT_CONFIG_FILE, DEMO_SIMULATOR_URL, demo_config
from logpull_dagster.config.document import DEFAULT_SINK, DEFAULT_STORES, LogpullConfig
from logpull_dagster.config.fields import MAX_DURATION, BaseUrl, Duration, EnvRef, RateLimitText, Strict, secret
from logpull_dagster.config.loading import (
    ConfigError,
    DemoConfigWarning,
    StartBeforeRetentionWarning,
    config_model,
    config_path,
    load_config,
    parse_config,
)
from logpull_dagster.config.source import SourceBase
from logpull_dagster.config.stores import LocalStoreBase, SinkBase, StoreBase, cannot_create

__all__ = [
    "DEFAULT_CONFIG_FILE", "DEFAULT_SINK", "DEFAULT_STORES", "DEMO_SIMULATOR_URL", "MAX_DURATION", "BaseUrl",
    "ConfigError", "DemoConfigWarning", "Duration", "EnvRef", "LocalStoreBase", "LogpullConfig", "RateLimitText",
    "SinkBase", "SourceBase", "StartBeforeRetentionWarning", "StoreBase", "Strict", "cannot_create", "config_model",
    "config_path", "demo_config", "load_config", "parse_config", "secret",
]
