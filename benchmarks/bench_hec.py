"""``python benchmarks/bench_hec.py``: delivery to Splunk HEC with indexer acknowledgement, against a bare loop.

A window of ``--events`` events (default 100,000: 100 pages of 1,000 Google Workspace login events)
is landed first by the real pull loop from the bundled simulator. Both arms then send that window's
pages, one request per page on one keep-alive connection, to the same HEC receiver
(``logpull_dagster/simulator/hec.py``, in a process of its own on loopback, so it does not share this
interpreter's lock):

* bare: an httpx loop POSTing the pages' request bodies, built and gzipped before its clock starts
  (the same bytes the sink sends), taking each 200 as done (no ack);
* sink: ``deliver_window`` into ``SplunkHecSink``, as the ``splunk/<stream>`` asset runs it: it reads
  each landed page, builds the envelopes and HEC events, gzips, POSTs, polls ``/services/collector/ack``
  until the batch's ackId reads true, and commits the delivery checkpoint (SQLite) before the next batch
  is sent. Reading and encoding the next page overlaps the wait for this one (``deliver._read_ahead``).

The ratio is sink events/s over bare events/s (target >= 0.8), best of ``--rounds`` for each arm,
alternating. The receiver acknowledges as soon as it has indexed (``--ack-delay`` to make it slower,
as a real indexer, about 1 s, is): the ratio then measures what the sink adds, not Splunk's indexing
latency, which a sink that waits for each batch's ack before the next pays in full (see the report).
Nothing is asserted. ``--memory 1000000``: instead, the peak RSS of delivering one landed 1M-event window
(issue 21's memory target, <= 250 MB).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench  # noqa: E402  benchmarks/bench.py: its simulator process and pull loop

from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore  # noqa: E402
from logpull_dagster.deliver import _Batch, _envelope, _head, _read_ahead, deliver_window  # noqa: E402
from logpull_dagster.landing.local import LocalLandingStore  # noqa: E402
from logpull_dagster.sinks.splunk_hec import EVENT_PATH, SplunkHecSink  # noqa: E402
from logpull_dagster.windows import Window, rfc3339  # noqa: E402

SOURCE = "bench"  # the pull loop's source name (bench.PULL_LOOP)


def land(n_events: int, state: Path) -> Window:
    """Land one window of ``n_events`` events into ``state`` with the real pull loop; the window."""
    sim = bench.Sim(n_events)
    try:
        state.mkdir()
        bench.pull_loop_proc(sim.url, 0, state, "pull").communicate()
    finally:
        sim.stop()
    return Window(*bench.window(0))


def landed_pages(state: Path, window: Window) -> list[tuple[list[bytes], list[str]]]:
    """Each landed page as delivery hands it to the sink: the envelope lines and their event ids."""
    store = SqliteCheckpointStore(str(state / "c.db"))
    landing = LocalLandingStore(str(state / "landing"))
    pulled = store.get(SOURCE, "pull", rfc3339(window.start))
    if pulled is None or not pulled.read_once:
        raise RuntimeError("the window did not land")
    head = _head(SOURCE, rfc3339(window.start), rfc3339(window.end))
    pages = []
    for page in landing.pages(SOURCE, window, pulled.landed_pages):
        lines, ids = zip(*(_envelope(head, line) for line in landing.read_lines(page)), strict=True)
        pages.append((list(lines), list(ids)))
    return pages


def request_bodies(pages: list[tuple[list[bytes], list[str]]], window: Window, token: str) -> list[bytes]:
    """The request body the sink sends for each page (one request per page)."""
    s = SplunkHecSink("http://unused", token, token_env="HEC_TOKEN")
    bodies = []
    for seq, (lines, ids) in enumerate(pages):
        requests = s.prepare(SOURCE, window, seq, lines, ids)
        if len(requests) != 1:
            raise RuntimeError("a landed page made more than one request: raise batch_events/batch_bytes")
        bodies.append(requests[0][0])
    s.close()
    return bodies


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


def sink(url: str, token: str, pages: list[tuple[list[bytes], list[str]]], window: Window) -> tuple[float, float]:
    """Seconds, and CPU seconds of this process, for the sink's ``write_batch`` of every page, driven as
    delivery drives it: the next page's requests built (``prepare``) by the read-ahead worker meanwhile."""
    s = SplunkHecSink(url, token, token_env="HEC_TOKEN")

    def load(seq: int) -> _Batch:
        lines, ids = pages[seq]
        return _Batch(seq, lines, ids, s.prepare(SOURCE, window, seq, lines, ids))

    try:
        s._client.get(f"{url}/services/collector/health")
        t0, c0 = time.perf_counter(), time.process_time()
        for seq, batch in _read_ahead(load, range(len(pages))):
            assert batch is not None
            s.write_batch(SOURCE, window, seq, batch.lines, batch.ids, fence=lambda: None, prepared=batch.prepared)
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        s.close()


def delivery(url: str, token: str, state: Path, window: Window, round_: int) -> tuple[float, float]:
    """Seconds, and CPU seconds of this process, for ``deliver_window`` of the landed window into the sink:
    also reading the landing store, and two checkpoint commits a batch (the fence before the send, the
    delivered page after the ack), each on disk (SQLite ``synchronous=FULL``) before the next step."""
    s = SplunkHecSink(url, token, token_env="HEC_TOKEN")
    try:
        s._client.get(f"{url}/services/collector/health")
        t0, c0 = time.perf_counter(), time.process_time()
        # A stage of its own per round: each round delivers the whole window again.
        deliver_window(window, source_name=SOURCE, checkpoints=SqliteCheckpointStore(str(state / "c.db")),
                       landing=LocalLandingStore(str(state / "landing")), sink=s, owner=f"round{round_}",
                       lease_ttl=60, stage=f"deliver:round{round_}")
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
    state = tmp / "landed"
    land(n_events, state)
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
    parser.add_argument("--events", type=int, default=100_000, help="events in the landed window (pages of 1,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ack-delay", type=float, default=0.0)
    parser.add_argument("--memory", type=int, metavar="EVENTS",
                        help="instead: peak RSS delivering one landed window of EVENTS events (e.g. 1000000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.memory:
            memory(args.memory, Path(tmp))
            return
        state = Path(tmp) / "landed"
        window = land(args.events, state)
        token = str(uuid.uuid4())
        pages = landed_pages(state, window)
        bodies = request_bodies(pages, window, token)
        events = sum(len(ids) for _, ids in pages)
        receiver = Receiver(token, args.ack_delay)
        try:
            times: dict[str, list[tuple[float, float]]] = {"bare": [], "sink": [], "delivery": []}
            expected = 0
            for k in range(args.rounds):
                times["bare"].append(bare(receiver.url, token, bodies))
                times["sink"].append(sink(receiver.url, token, pages, window))
                times["delivery"].append(delivery(receiver.url, token, state, window, k))
                expected += 3 * events
                if receiver.count() != expected:
                    raise RuntimeError(f"the receiver indexed {receiver.count()} events, expected {expected}")
        finally:
            receiver.stop()
    mb = sum(map(len, bodies)) / len(bodies) / 1e6
    print(f"{len(bodies)} batches, {events:,} events ({mb:.2f} MB gzip per request), ack delay "
          f"{args.ack_delay:g}s, best of {args.rounds}")
    for arm, ts in times.items():
        best, cpu = min(ts)
        print(f"  {arm:8s} {best:7.2f} s  {events / best:9.0f} events/s  client CPU {cpu / len(bodies) * 1000:5.1f} "
              f"ms/batch  (all: {', '.join(f'{t:.2f}' for t, _ in ts)})")
    bare_best = min(times["bare"])[0]
    print(f"  ratio sink/bare: {bare_best / min(times['sink'])[0]:.2f} (target >= 0.8)")
    print(f"  ratio delivery/bare: {bare_best / min(times['delivery'])[0]:.2f} (with the landing reads and the "
          f"checkpoint commits; no target)")


if __name__ == "__main__":
    main()
