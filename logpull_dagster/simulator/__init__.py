"""Google Admin SDK Reports API simulator: a real, seeded HTTP server for demos, tests and benchmarks.

Why it exists: completeness of a log puller can only be proven against a source whose full contents are
known. The simulator knows its ground truth (``Simulator.ground_truth``) and can misbehave on demand
(faults, late events, inclusive window ends), so tests can assert "every event exactly once".
Standard library only, so it can run anywhere, including as a bare subprocess.
"""

from .server import FAULT_DOCS, FAULT_KINDS, RULE_KEYS_DOC, Simulator, SimulatorError

__all__ = ["FAULT_DOCS", "FAULT_KINDS", "RULE_KEYS_DOC", "Simulator", "SimulatorError"]
