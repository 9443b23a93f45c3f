"""A Microsoft identity platform token endpoint for the tests, on its own simulator.

Graph and its token endpoint are two hosts (graph.microsoft.com, login.microsoftonline.com), and the
shared tests' fault rules are meant for the API: a rule that fires on the first request, or on every
request, must strike a page, not the token request before it. So the msgraph sources the shared suites
build take their tokens from this second simulator (one per test process, started on first use); the
emulated Graph accepts any simulator's tokens (they are signed, not stored). ``TOKEN`` is every client's
secret there.
"""

from __future__ import annotations

import atexit
import threading

from logpull_dagster.simulator import Simulator
from logpull_dagster.simulator.msgraph import MsGraphApi
from logpull_dagster_tests.conftest import TOKEN

TENANT = "00000000-0000-0000-0000-000000000000"
CLIENT = "11111111-1111-1111-1111-111111111111"

_lock = threading.Lock()
_login: Simulator | None = None


def login_sim() -> Simulator:
    """The token endpoint's simulator (no faults: no test sets any on it)."""
    global _login
    with _lock:
        if _login is None:
            _login = Simulator(seed=1, events_per_hour=1, token=TOKEN, apis=[MsGraphApi])
            _login.start()
            atexit.register(_login.stop)
        return _login


def token_url(tenant: str = TENANT) -> str:
    return f"{login_sim().url}/{tenant}/oauth2/v2.0/token"
