"""logpull-dagster: pull security and audit logs from REST APIs into a SIEM, complete, on Dagster.

``defs`` (the Dagster Definitions built from the config file) is loaded on first access, so the pure
modules and the bundled simulator import without Dagster or a config file.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "defs":
        from logpull_dagster.definitions import defs

        return defs
    raise AttributeError(f"module 'logpull_dagster' has no attribute {name!r}")


def __dir__() -> list[str]:
    # Dagster finds the Definitions object by listing the module's members.
    return sorted([*globals(), "defs"])
