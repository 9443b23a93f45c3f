"""CLI: ``python -m logpull_dagster.simulator`` (or ``logpull-simulator``) serves the simulator.

Why a subprocess mode: tests that SIGKILL pipeline workers need the API to outlive them, and the demo
needs a source to point at. It prints exactly one ``LISTENING <url>`` line on stdout once it accepts
connections, so a parent can wait for that line instead of sleeping, then serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import textwrap
import threading
from types import FrameType

from .api import SimulatorError
from .faults import FAULT_DOCS, FAULT_KINDS, RULE_KEYS_DOC
from .server import Simulator

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds from ``90``, ``1.5``, ``30s``, ``15m``, ``3h`` or ``1d``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 30, 30s, 15m, 3h, 1d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _faults(text: str) -> list[dict]:
    try:
        value = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--faults is not JSON: {e}") from None
    if isinstance(value, dict) and "rules" in value:
        value = value["rules"]
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError("--faults must be a JSON list of rules (or {\"rules\": [...]})")
    return value


def faults_help() -> str:
    """The ``--help`` epilog: the rule keys, then every fault kind with what it answers."""
    lines = [RULE_KEYS_DOC, "", "Fault kinds:"]
    for kind in FAULT_KINDS:
        lines += textwrap.wrap(
            FAULT_DOCS[kind], width=110, initial_indent=f"  {kind:<20} ", subsequent_indent=" " * 23
        )
    lines += ["", 'Example: --faults \'[{"kind": "429", "after": 2}, {"kind": "trickle", "match": "token"}]\'',
              "Rules can be replaced at runtime: POST /_sim/faults {\"rules\": [...]}."]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="logpull-simulator",
        description="Serve a simulated Google Admin SDK Reports API.",
        epilog=faults_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,  # keep the fault table as laid out
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--events-per-hour", type=int, default=2000)
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token", default="demo-token", help="required bearer token (default demo-token)")
    auth.add_argument("--no-auth", action="store_true", help="accept requests without a token")
    p.add_argument("--customer-id", default="C03demo")
    p.add_argument("--no-boundary-events", action="store_true", help="no extra event on each hour start")
    p.add_argument("--no-shared-ms-events", action="store_true", help="no groups sharing a millisecond")
    p.add_argument("--late-fraction", type=float, default=0.0)
    p.add_argument("--late-delay", type=parse_duration, default=3 * 3600.0)
    p.add_argument("--publish-delay", type=parse_duration, default=0.0)
    p.add_argument("--page-latency", type=parse_duration, default=0.0)
    p.add_argument("--faults", type=_faults, default=None, help="JSON list of fault rules (see below)")
    p.add_argument("--tls-cert", default=None, help="PEM certificate chain: serve HTTPS (needs --tls-key)")
    p.add_argument("--tls-key", default=None, help="PEM private key of --tls-cert")
    p.add_argument("--verbose", action="store_true", help="log HTTP access lines to stderr")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM/SIGINT; returns the exit status (0 on a signal-initiated shutdown)."""
    args = build_parser().parse_args(argv)
    try:
        sim = Simulator(
            seed=args.seed,
            events_per_hour=args.events_per_hour,
            token=None if args.no_auth else args.token,
            customer_id=args.customer_id,
            boundary_events=not args.no_boundary_events,
            shared_ms_events=not args.no_shared_ms_events,
            publish_delay=args.publish_delay,
            late_fraction=args.late_fraction,
            late_delay=args.late_delay,
            page_latency=args.page_latency,
            faults=args.faults,
            verbose=args.verbose,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
        )
    except (SimulatorError, ValueError) as e:
        print(f"logpull-simulator: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        url = sim.start(args.host, args.port)
    except OSError as e:  # port in use, address not available: say so instead of a traceback
        print(f"logpull-simulator: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    print(f"LISTENING {url}", flush=True)
    try:
        while not stop.wait(0.2):  # short waits so the signal handler runs promptly
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
