"""The config file's default name, and the built-in demo config used when there is none."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

DEFAULT_CONFIG_FILE = "logpull.yaml"
DEMO_SIMULATOR_URL = "http://127.0.0.1:8765"


def demo_config(base_url: str | None = None, state_dir: str = ".logpull") -> dict[str, Any]:
    """The config used when no file exists: a Google Workspace login stream from the simulator."""
    # Starts with the four windows `make demo` pulls, so `logpull status` on the demo state is all green
    # and the schedule under `make ui` only has the new windows to pull.
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).replace(minute=0, second=0, microsecond=0)
    start -= dt.timedelta(hours=4)
    return {
        "sources": [{
            "name": "gws_login",
            "type": "google_workspace",
            "application": "login",
            "base_url": base_url or os.environ.get("LOGPULL_SIMULATOR_URL", DEMO_SIMULATOR_URL),
            "access_token": {"env": "LOGPULL_DEMO_TOKEN"},
            "cadence": "hourly",
            "start": start.isoformat().replace("+00:00", "Z"),
            "settle_lag": "5m",
        }],
        "checkpoints": {"type": "sqlite", "path": f"{state_dir}/checkpoints.db"},
        "landing": {"type": "local", "path": f"{state_dir}/landing"},
        "siem": {"type": "file", "path": f"{state_dir}/siem"},
    }
