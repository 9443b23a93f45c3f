"""logpull-dagster: pull security and audit logs from REST APIs into a SIEM, complete, on Dagster.

Two doors onto one config model: ``defs`` (``dagster ... -m logpull_dagster``, the Definitions built from
the config file in force) and ``LogPullComponent`` (``type: logpull_dagster.LogPullComponent`` in a ``dg``
project's defs.yaml). Both are imported on first access, so the pure modules and the bundled simulator
import without Dagster or a config file.

``defs`` is a lazy ``@dg.definitions`` loader rather than the Definitions object: ``dg`` lists a
registry module's members (``getattr`` on each name in ``dir()``) to find its components, and would
otherwise build this door's Definitions from whatever config is in force every time it looks.
Dagster's ``-m logpull_dagster`` loader calls it, and builds the same Definitions as before.
"""

from __future__ import annotations

from typing import Any

from logpull_dagster._version import __version__ as __version__  # the one place it is written

_LAZY = ("defs", "LogPullComponent")


def _plain_door() -> Any:
    from logpull_dagster import definitions

    return definitions.plain_definitions()


def __getattr__(name: str) -> Any:
    if name == "defs":
        import dagster as dg

        # Kept, so that every lookup returns the same loader (Dagster refuses two in one module).
        globals()["defs"] = loader = dg.definitions(_plain_door)
        return loader
    if name == "LogPullComponent":
        from logpull_dagster.component import LogPullComponent

        return LogPullComponent
    raise AttributeError(f"module 'logpull_dagster' has no attribute {name!r}")


def __dir__() -> list[str]:
    # Dagster finds the Definitions loader, and dg the component, by listing the module's members.
    return sorted([*globals(), *_LAZY])
