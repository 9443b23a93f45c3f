"""Landed pages that are gone, and deliveries that lost their lease: the ledger must not say "complete".

Issue 19's cases 1, 2 and 4, in process (the real-CLI versions against local folders, S3 on moto and a
stalled S3 are in test_lost_landing_cli.py):

* a landed page that is gone (deleted by hand, an S3 lifecycle rule) used to be skipped by delivery,
  which walked the pages it found: the window was "complete and delivered" without that page's events;
* lost pages could not be recovered: their ids stayed recorded as landed, so a re-read never landed
  their events again;
* a delivery that stalled past its lease, was taken over and finished elsewhere, then wrote its batch
  anyway: with a forwarder that ships and deletes files, the SIEM received that batch twice.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from logpull_dagster.checkpoints import LeaseLost
from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.deliver import LandedPageMissing, deliver_window
from logpull_dagster.landing import LandedPage
from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.ledger import window_rows
from logpull_dagster.pull import PullFailed, pull_window
from logpull_dagster.recovery import RECOVER_OWNER, lost_pages, recover_window, survey
from logpull_dagster.sinks.file import FileSink
from logpull_dagster.windows import rfc3339

from .fakes import FakeSource, W, make_events

START = rfc3339(W.start)
EVENTS = make_events(W, 95)  # 96 inside the window: 10 pages of 10 (the last one of 6)
TRUTH = sorted(e.id for e in EVENTS if W.contains(e.time))


class Site:
    """One deployment: its checkpoint file, landing folder and SIEM folder (what a forwarder watches)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = SqliteCheckpointStore(root / "checkpoints.db")
        self.landing = LocalLandingStore(root / "landing")
        self.siem = root / "siem"
        self.shipped: list[str] = []  # what a forwarder shipped and deleted

    def pull(self, landing: Any = None, **kw: Any) -> Any:
        return pull_window(FakeSource(EVENTS), W, source_name="s", checkpoints=self.store,
                           landing=landing or self.landing, owner="pull", lease_ttl=60, **kw)

    def deliver(self, owner: str = "deliver", landing: Any = None, sink: Any = None, **kw: Any) -> Any:
        return deliver_window(W, source_name="s", checkpoints=self.store, landing=landing or self.landing,
                              sink=sink or FileSink(self.siem), owner=owner, lease_ttl=60, **kw)

    def page_file(self, seq: int) -> Path:
        [page] = [p for p in self.landing.pages("s", W, 100) if p.seq == seq]
        return Path(page.location)

    def ship(self) -> None:
        """A forwarder (Splunk's batch input with move_policy sinkhole) ships every batch file, then deletes it."""
        for f in sorted(self.siem.rglob("*.jsonl")):
            self.shipped += [orjson.loads(line)["event_id"] for line in f.read_bytes().splitlines()]
            f.unlink()

    def siem_ids(self) -> list[str]:
        return self.shipped + [orjson.loads(line)["event_id"] for f in sorted(self.siem.rglob("*.jsonl"))
                               for line in f.read_bytes().splitlines()]

    def recover(self) -> Any:
        return recover_window(self.store, self.landing, "s", W, by="alice", ttl=300, clock=lambda: 1000.0)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    s = Site(tmp_path)
    yield s
    s.store.close()


def test_a_landed_page_that_is_gone_stops_delivery_at_it_naming_it_and_the_ledger_shows_a_gap(site):
    assert site.pull().complete
    site.page_file(3).unlink()
    with pytest.raises(LandedPageMissing) as e:
        site.deliver()
    text = str(e.value)
    assert f"window {W} of 's': landed page 3 (of 10) is missing from {site.landing.where('s', W)}" in text
    assert f"logpull recover --source s --window {START}" in text
    first_three = sum(len(site.landing.read_lines(p)) for p in site.landing.pages("s", W, 3))
    assert len(site.siem_ids()) == first_three  # pages 0-2: nothing after the missing page either
    sent = site.store.get("s", "deliver", START)
    assert (sent.status, sent.page_seq, sent.stats["missing_page"]) == ("failed", 3, 3)
    [row] = window_rows(_src(), site.store, W.end + (W.end - W.start) * 2, end=W.end).to_dict("records")
    assert row["status"] == "complete" and row["delivered"] == "3 of 10 pages"
    assert "delivery stopped: landed page 3 is missing from the landing store; `logpull recover --source s " \
           "--window 2026-11-26-10:00`" in row["detail"]
    with pytest.raises(LandedPageMissing):  # and again: never skipped, however often it is retried
        site.deliver(owner="deliver-2")


def test_a_page_deleted_between_the_listing_and_its_read_is_missing_too(site):
    site.pull()

    class Vanishing(LocalLandingStore):
        def read_lines(self, page: LandedPage) -> list[bytes]:
            if page.seq == 5:
                Path(page.location).unlink()  # a lifecycle rule fires right now
            return super().read_lines(page)

    with pytest.raises(LandedPageMissing, match="landed page 5"):
        site.deliver(landing=Vanishing(site.root / "landing"))
    assert len(site.siem_ids()) == sum(len(site.landing.read_lines(p)) for p in site.landing.pages("s", W, 5))


@pytest.mark.parametrize("lose", ["one undelivered page", "a delivered and an undelivered page",
                                  "the window's whole landing folder"])
def test_recover_reads_the_window_again_and_the_siem_gets_every_event_once(site, lose):
    site.pull()
    with pytest.raises(LandedPageMissing):  # pages 0-4 delivered, then page 5 is found gone
        site.page_file(5).unlink()
        site.deliver()
    site.ship()  # the forwarder shipped batches 0-4 and deleted them: only the delivered-ids record is left
    if lose == "a delivered and an undelivered page":
        site.page_file(1).unlink()
        site.page_file(8).unlink()
    if lose == "the window's whole landing folder":
        shutil.rmtree(site.landing.where("s", W))
    seen = survey(site.store, site.landing, "s", W)
    assert seen.needed and 5 in seen.undelivered
    r = site.recover()
    kept = {"one undelivered page": 9, "a delivered and an undelivered page": 7,
            "the window's whole landing folder": 0}[lose]
    assert (r.kept_pages, r.kept_events) == (kept, sum(len(site.landing.read_lines(p))
                                                       for p in site.landing.pages("s", W, 10)))
    cp = site.store.get("s", "pull", START)
    assert (cp.status, cp.cursor, cp.journaled, cp.lease_owner) == ("failed", None, 0, None)
    assert site.store.count_ids("s", START) == r.kept_events == cp.events
    assert lost_pages(cp.stats) == set(r.lost_pages) and cp.stats["recoveries"][-1]["by"] == "alice"
    assert "recovered by alice" in cp.last_error and "recovery" not in cp.stats

    again = site.pull()
    assert again.complete and again.late_events == 0  # the lost pages' events are not late ones
    assert site.store.count_ids("s", START) == 96
    res = site.deliver(owner="deliver-3")
    ids = site.siem_ids()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} events reached the SIEM twice"
    assert sorted(ids) == TRUTH
    assert res.lost_pages == len(r.lost_pages) - len([p for p in r.lost_pages if p < 5])
    [row] = window_rows(_src(), site.store, W.end + (W.end - W.start) * 2, end=W.end).to_dict("records")
    assert (row["status"], row["delivered"], row["late_events"]) == ("complete", "yes", 0)
    assert site.store.get("s", "pull", START).stats.get("recovering") is None


def test_lost_pages_that_were_all_delivered_need_no_recovery(site):
    site.pull()
    site.deliver()
    site.page_file(2).unlink()  # an S3 lifecycle rule expired an old, delivered page
    seen = survey(site.store, site.landing, "s", W)
    assert seen.pages == [2] and not seen.needed


def test_a_recovery_that_died_half_way_is_refused_by_the_pull_and_finished_by_running_it_again(site, monkeypatch):
    site.pull()
    site.page_file(4).unlink()
    events_before = site.store.get("s", "pull", START).events
    real = LocalLandingStore.read_lines
    reads = [0]

    def dying(self: LocalLandingStore, page: LandedPage) -> list[bytes]:
        reads[0] += 1
        if reads[0] == 3:
            raise KeyboardInterrupt  # the process is stopped half-way through the survivors
        return real(self, page)

    monkeypatch.setattr(LocalLandingStore, "read_lines", dying)
    with pytest.raises(KeyboardInterrupt):
        site.recover()
    monkeypatch.setattr(LocalLandingStore, "read_lines", real)
    half = site.store.get("s", "pull", START)
    assert "recovery" in half.stats and half.lease_owner == RECOVER_OWNER
    assert site.store.count_ids("s", START) < events_before  # some ids forgotten, not yet recorded again
    half = site.store.release(half, now=2000)  # its lease lapsed (the recover process is dead)
    with pytest.raises(PullFailed, match=r"a `logpull recover` of this window started by alice .* did not finish"):
        site.pull()
    site.recover()
    assert site.pull().complete
    site.deliver(owner="deliver-4")
    ids = site.siem_ids()
    assert len(ids) == len(set(ids)) and sorted(ids) == TRUTH


def test_a_journaled_read_that_is_gone_fails_the_pull_clearly_and_recover_reads_the_window_again(site):
    class DiesLanding(LocalLandingStore):
        """The process dies after read 3 is journaled and checkpointed, before it lands."""

        def put_page(self, source: str, window: Any, seq: int, epoch: int, lines: Any) -> str:
            if seq == 3:
                raise SystemExit("killed")
            return super().put_page(source, window, seq, epoch, lines)

    with pytest.raises(SystemExit):
        site.pull(landing=DiesLanding(site.root / "landing"))
    cp = site.store.get("s", "pull", START)
    assert cp.journaled >= 1
    for read in Path(site.landing.where("s", W)).glob("read-*.json"):
        read.unlink()  # the journal went with the landing bucket
    with pytest.raises(PullFailed) as e:
        site.pull()
    assert e.value.permanent and "journaled read" in str(e.value) and "logpull recover --source s" in str(e.value)
    assert survey(site.store, site.landing, "s", W).reads
    r = site.recover()
    assert r.lost_reads and r.kept_pages == 3
    assert site.pull().complete
    site.deliver()
    ids = site.siem_ids()
    assert len(ids) == len(set(ids)) and sorted(ids) == TRUTH


def test_a_delivery_that_lost_its_lease_while_stalled_writes_nothing_when_it_wakes(site):
    """Run A stalls with landed page 2 in hand (a slow read, a paused process) past its lease; run B takes
    the window over and delivers all of it; a forwarder ships and deletes B's files; then A wakes up.
    Before: A wrote batch 2 again (its name was free), and the SIEM received those 10 events twice.

    The stall is in the sink's call, before its fence: delivery reads page 2 ahead in a worker thread
    while batch 1 is written, so a stall inside the read would pause only that worker, not A."""
    site.pull()
    t = [0.0]
    woke: list[BaseException] = []

    class Stalls(FileSink):
        def write_batch(self, source: str, window: Any, batch: int, *args: Any, **kw: Any) -> Any:
            if batch == 2 and not woke:
                t[0] += 120  # A is stuck here for two minutes (lease_ttl is 60 s)...
                woke.append(Exception("stalled"))
                res = site.deliver(owner="B", clock=lambda: t[0])  # ...while B takes over and finishes
                assert res.batches == 8 and site.store.get("s", "deliver", START).is_complete
                site.ship()
            return super().write_batch(source, window, batch, *args, **kw)

    with pytest.raises(LeaseLost):
        site.deliver(owner="A", sink=Stalls(site.siem), clock=lambda: t[0])
    assert woke
    ids = site.siem_ids()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} events reached the SIEM twice"
    assert sorted(ids) == TRUTH
    assert not list((site.siem / "s" / ".tmp").glob("*"))  # A's temp file went with its refusal
    assert site.store.get("s", "deliver", START).stats["completed_by"] == "B"


def test_a_delivery_that_holds_its_lease_writes_each_batch_after_renewing_it(site):
    site.pull()
    commits: list[int] = []
    real = site.store.commit

    def counting(cp: Any, **kw: Any) -> Any:
        commits.append(cp.page_seq)
        return real(cp, **kw)

    site.store.commit = counting  # type: ignore[method-assign]
    res = site.deliver()
    # per batch: the fence (the lease renewed, nothing else) right before the rename, then the checkpoint
    assert res.batches == 10 and commits == [n for b in range(10) for n in (b, b + 1)]


def _src() -> Any:
    from logpull_dagster.config import parse_config

    cfg = parse_config({"sources": [{"name": "s", "type": "google_workspace", "application": "login",
                                     "access_token": {"env": "X"}, "start": START, "settle_lag": "0s"}]})
    return cfg.sources[0]
