"""The bundled API simulator: a real, seeded HTTP server emulating the supported audit-log APIs (today the
Google Admin SDK Reports API), for demos, tests and benchmarks.

Why it exists: completeness of a log puller can only be proven against a source whose full contents are
known. The simulator knows its ground truth (``Simulator.ground_truth``) and can misbehave on demand
(faults, late events, inclusive window ends), so tests can assert "every event exactly once".
Standard library only, so it can run anywhere, including as a bare subprocess.

Layout: ``server.py`` is the shared server (routing, auth order, request log, clock, control endpoints);
``faults.py`` the fault rules and faulty replies; ``data.py`` the event generator; ``api.py`` the
``EmulatedApi`` contract; one module per API (``google_reports.py``), listed in ``registry.py``.
"""

from .api import ApiContext, ApiRequest, EmulatedApi, Reply, SimulatorError
from .faults import FAULT_DOCS, FAULT_KINDS, RULE_KEYS_DOC
from .registry import EMULATED_APIS
from .server import Simulator

__all__ = [
    "EMULATED_APIS", "FAULT_DOCS", "FAULT_KINDS", "RULE_KEYS_DOC", "ApiContext", "ApiRequest", "EmulatedApi",
    "Reply", "Simulator", "SimulatorError",
]
