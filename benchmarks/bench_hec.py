"""``python benchmarks/bench_hec.py``: delivery to Splunk HEC with indexer acknowledgement, against a bare loop.

Both arms send the same N batches of 1,000 envelope records to the same HEC receiver
(``logpull_dagster/simulator/hec.py``, in a process of its own on loopback, so it does not share
this interpreter's lock), one request per batch on one keep-alive connection:

* bare: an httpx loop POSTing the batches' request bodies, built and gzipped before the clock starts,
  taking the 200 as done (no ack);
* sink: ``SplunkHecSink.write_batch`` per batch, as delivery calls it: it builds each HEC event from the
  envelope (``time`` from ``event_time``), gzips, POSTs, then polls ``/services/collector/ack`` until
  the batch's ackId reads true, before the next batch.

The ratio is sink events/s over bare events/s (target >= 0.8), best of ``--rounds`` for each arm,
alternating. The receiver acknowledges as soon as it has indexed (``--ack-delay`` to make it slower,
as a real indexer, about 1 s, is): the ratio then measures what the sink adds, not Splunk's indexing
latency, which a sink that waits for each batch's ack before the next pays in full (see the report).
Nothing is asserted. ``--memory 1000000``: instead, the peak RSS of delivering one landed 1M-event window
(issue 21's memory target, <= 250 MB).
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from logpull_dagster.deliver import envelope  # noqa: E402
from logpull_dagster.json_codec import dumps  # noqa: E402
from logpull_dagster.sinks.splunk_hec import EVENT_PATH, SplunkHecSink, _events, _gzip  # noqa: E402
from logpull_dagster.windows import UTC, Window  # noqa: E402

WINDOW = Window(dt.datetime(2026, 11, 26, 10, tzinfo=UTC), dt.datetime(2026, 11, 26, 11, tzinfo=UTC))
STREAM = "gws_login"


def batches(n: int, size: int) -> list[tuple[list[bytes], list[str]]]:
    """``n`` batches of ``size`` envelope records shaped like Google Workspace login events (~0.9 KB)."""
    out = []
    for b in range(n):
        ids = [f"{b:05d}-{i:05d}-{uuid.UUID(int=b * size + i)}" for i in range(size)]
        landed = [dumps({"id": i, "time": f"2026-11-26T10:{k % 60:02d}:{k % 59:02d}.{k % 1000:03d}Z",
                         "pulled_at": "2026-11-26T12:00:00.123Z",
                         "event": {"kind": "admin#reports#activity",
                                   "id": {"time": "2026-11-26T10:00:00.000Z", "uniqueQualifier": str(k * 7919),
                                          "applicationName": "login", "customerId": "C0abc123"},
                                   "actor": {"email": f"user{k % 500}@example.com", "profileId": str(10**20 + k)},
                                   "ipAddress": f"203.0.113.{k % 250}",
                                   "events": [{"type": "login", "name": "login_success", "parameters": [
                                       {"name": "login_type", "value": "google_password"},
                                       {"name": "is_suspicious", "boolValue": False},
                                       {"name": "login_challenge_method", "multiValue": ["password", "totp"]}]}]}})
                  for k, i in enumerate(ids)]
        out.append(([envelope(STREAM, WINDOW, line) for line in landed], ids))
    return out


class Receiver:
    def __init__(self, token: str, ack_delay: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "logpull_dagster.simulator.hec", "--token", token,
             "--ack-delay", str(ack_delay)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line.startswith("LISTENING "):
            self.proc.kill()
            raise RuntimeError(f"receiver did not start: {line!r}")
        self.url = line.split()[1]

    def count(self) -> int:
        return int(httpx.get(f"{self.url}/_receiver/count").json()["events"])

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def bare(url: str, token: str, bodies: list[bytes]) -> tuple[float, float]:
    """Seconds, and CPU seconds of this process, for POSTing ``bodies``."""
    headers = {"Authorization": f"Splunk {token}", "Content-Type": "application/json", "Content-Encoding": "gzip",
               "X-Splunk-Request-Channel": str(uuid.uuid4())}
    with httpx.Client(headers=headers) as client:
        client.get(f"{url}/services/collector/health")  # the connection, outside the clock as the sink's
        t0, c0 = time.perf_counter(), time.process_time()
        for body in bodies:
            r = client.post(url + EVENT_PATH, content=body)
            if r.status_code != 200:
                raise RuntimeError(f"bare loop: HTTP {r.status_code} {r.text}")
        return time.perf_counter() - t0, time.process_time() - c0


def sink(url: str, token: str, data: list[tuple[list[bytes], list[str]]]) -> tuple[float, float]:
    """Seconds, and CPU seconds of this process, for delivering ``data`` through the sink."""
    s = SplunkHecSink(url, token, token_env="HEC_TOKEN")
    try:
        s._client.get(f"{url}/services/collector/health")
        t0, c0 = time.perf_counter(), time.process_time()
        for n, (lines, ids) in enumerate(data):
            s.write_batch(STREAM, WINDOW, n, lines, ids, fence=lambda: None)
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        s.close()


DELIVER = """
import sys, time
from logpull_dagster.windows import Window, parse_time
from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.deliver import deliver_window
from logpull_dagster.sinks.splunk_hec import SplunkHecSink
url, token, start, end, state = sys.argv[1:6]
t0 = time.perf_counter()
res = deliver_window(Window(parse_time(start), parse_time(end)), source_name="bench",
                     checkpoints=SqliteCheckpointStore(state + "/c.db"), landing=LocalLandingStore(state + "/landing"),
                     sink=SplunkHecSink(url, token, token_env="HEC_TOKEN"), owner="deliver", lease_ttl=60)
# VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts from its parent's peak (inherited at fork).
print(res.events, time.perf_counter() - t0,
      next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
"""


def memory(n_events: int, tmp: Path) -> None:
    """Peak RSS of delivering one landed window of ``n_events`` to HEC with acks (``deliver_window`` in a
    fresh process), the window landed first by the real pull loop from the simulator (bench.py row 6)."""
    import bench  # benchmarks/bench.py: its simulator process and pull loop

    sim = bench.Sim(n_events)
    try:
        state = tmp / "landed"
        state.mkdir()
        bench.pull_loop_proc(sim.url, 0, state, "pull").communicate()
    finally:
        sim.stop()
    token = str(uuid.uuid4())
    receiver = Receiver(token, 0.0)
    try:
        start, end = bench.window(0)
        out = subprocess.run([sys.executable, "-c", DELIVER, receiver.url, token, bench.rfc(start), bench.rfc(end),
                              str(state)], capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
        indexed = receiver.count()
    finally:
        receiver.stop()
    events, seconds, rss = int(out[0]), float(out[1]), int(out[2]) / 1024
    print(f"delivered {events:,} events of one window to HEC with acks in {seconds:.1f} s "
          f"({events / seconds:,.0f} events/s); peak RSS of the delivering process {rss:.0f} MB "
          f"(target <= 250 MB at 1M); the receiver indexed {indexed:,}")
    if indexed != events:
        raise RuntimeError(f"the receiver indexed {indexed} events, expected {events}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ack-delay", type=float, default=0.0)
    parser.add_argument("--memory", type=int, metavar="EVENTS",
                        help="instead: peak RSS delivering one landed window of EVENTS events (e.g. 1000000)")
    args = parser.parse_args()
    if args.memory:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            memory(args.memory, Path(tmp))
        return
    token = str(uuid.uuid4())
    data = batches(args.batches, args.size)
    meta = dumps({"source": STREAM, "sourcetype": "logpull:json"})[1:-1]
    bodies = [_gzip(_events(meta, lines, ids)) for lines, ids in data]
    events = args.batches * args.size
    receiver = Receiver(token, args.ack_delay)
    try:
        times: dict[str, list[tuple[float, float]]] = {"bare": [], "sink": []}
        expected = 0
        for _ in range(args.rounds):
            times["bare"].append(bare(receiver.url, token, bodies))
            times["sink"].append(sink(receiver.url, token, data))
            expected += 2 * events
            if receiver.count() != expected:
                raise RuntimeError(f"the receiver indexed {receiver.count()} events, expected {expected}")
    finally:
        receiver.stop()
    mb = sum(map(len, bodies)) / args.batches / 1e6
    print(f"{args.batches} batches x {args.size} events ({mb:.2f} MB gzip per request), ack delay "
          f"{args.ack_delay:g}s, best of {args.rounds}")
    for arm, ts in times.items():
        best, cpu = min(ts)
        print(f"  {arm:5s} {best:7.2f} s  {events / best:9.0f} events/s  client CPU {cpu / args.batches * 1000:5.1f} "
              f"ms/batch  (all: {', '.join(f'{t:.2f}' for t, _ in ts)})")
    ratio = min(times["bare"])[0] / min(times["sink"])[0]
    print(f"  ratio sink/bare: {ratio:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
