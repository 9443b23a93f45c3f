"""Lost or replaced state: the checkpoint database deleted, replaced or restored, the SIEM files shipped away.

The checkpoint store is the source of truth for completeness, so losing it is the worst day this
program can have short of losing the landing folder. These tests lose it for real (the file removed
with ``rm checkpoints.db*``, or swapped for a backup) and hold delivery to the same standard as
everywhere else: every event in the SIEM once, none lost, none twice.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from pathlib import Path

import orjson
import pytest

from logpull_dagster.checkpoints import CheckpointStoreLost
from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.deliver import deliver_window
from logpull_dagster.landing.local import LocalLandingStore
from logpull_dagster.pull import BudgetExhausted, PullFailed, pull_window
from logpull_dagster.simulator import Simulator
from logpull_dagster.sinks.file import FileSink
from logpull_dagster.sources import BadPage
from logpull_dagster.sources.google_workspace import GoogleWorkspaceSource
from logpull_dagster.windows import Window, rfc3339

from .conftest import TOKEN, hour
from .fakes import FakeSource, W, make_events

W10 = Window(hour(10), hour(11))


@pytest.fixture
def big_sim():
    """The simulator with ~3,000 events in the test window: 61 pages of 50, 43 of 70."""
    with Simulator(seed=11, events_per_hour=3000, token=TOKEN) as s:
        s.set_clock(now=hour(12))
        yield s


class Site:
    """One deployment's state folders: checkpoints.db, landing/, siem/ (the forwarder's folder)."""

    def __init__(self, root: Path, sim: Simulator | None = None) -> None:
        self.root, self.sim = root, sim
        self.db = root / "checkpoints.db"
        self.landing = LocalLandingStore(root / "landing")
        self.siem = root / "siem"

    def pull(self, page_size: int, **kw):  # type: ignore[no-untyped-def]
        store = SqliteCheckpointStore(self.db)
        src = GoogleWorkspaceSource(base_url=self.sim.url, application="login", access_token=TOKEN,
                                    page_size=page_size, backoff_initial=0.01, backoff_max=0.05)
        try:
            return pull_window(src, W10, source_name="gws", checkpoints=store, landing=self.landing, owner="pull",
                               lease_ttl=60, **kw)
        finally:
            src.close()
            store.close()

    def deliver(self, window: Window = W10, source: str = "gws"):  # type: ignore[no-untyped-def]
        store = SqliteCheckpointStore(self.db)
        try:
            return deliver_window(window, source_name=source, checkpoints=store, landing=self.landing,
                                  sink=FileSink(self.siem), owner="deliver", lease_ttl=60)
        finally:
            store.close()

    def lose_checkpoints(self) -> None:
        for f in self.root.glob("checkpoints.db*"):  # rm checkpoints.db*
            f.unlink()

    def siem_ids(self) -> list[str]:
        return [orjson.loads(line)["event_id"] for f in sorted(self.siem.rglob("*.jsonl"))
                for line in f.read_bytes().splitlines()]

    def truth(self) -> list[str]:
        return sorted("/".join(i) for i in self.sim.ground_truth_ids("login", W10.start, W10.end))


# ---- case 11: losing the checkpoint database must not duplicate or drop events in the SIEM ----------


@pytest.mark.parametrize("first,second", [(50, 70), (70, 50)])
def test_a_lost_checkpoint_database_and_a_new_page_size_deliver_every_event_once(tmp_path, big_sim, first, second):
    """Before: 70 then 50 left 3,865 lines for 3,007 events (the 18 batch names the first delivery had
    not used were written in full); 50 then 70 was exact only because every new name existed."""
    site = Site(tmp_path, big_sim)
    site.pull(first)
    assert site.deliver().events == len(site.truth()) > 3000
    site.lose_checkpoints()
    site.pull(second)  # a new database: the window is read again from page one, in pages of another size
    again = site.deliver()
    ids = site.siem_ids()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} events reached the SIEM twice"
    assert sorted(ids) == site.truth()
    assert (again.events, again.already_delivered, again.reconciled) == (0, len(ids), True)
    assert not [p for p in site.siem.rglob("*.tmp") if p.is_file()]


def test_a_lost_database_after_a_partial_delivery_drops_nothing(tmp_path, big_sim):
    """Delivered one page of 50, lost the database, read again in pages of 70: the new batch 0 holds
    20 events the old one lacked. Before: its name existed, so those 20 never reached the SIEM."""
    site = Site(tmp_path, big_sim)
    with pytest.raises(BudgetExhausted):
        site.pull(50, time_budget=0)  # one page, then the run's time is up
    first = site.deliver()
    assert first.batches == 1 and first.outputs[0].endswith("-b000000.jsonl")
    site.lose_checkpoints()
    site.pull(70)
    again = site.deliver()
    ids = site.siem_ids()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} events reached the SIEM twice"
    assert sorted(ids) == site.truth(), f"{len(site.truth()) - len(set(ids))} events never reached the SIEM"
    assert again.already_delivered == first.events and again.events == len(ids) - first.events
    # The batch written while reconciling carries a content hash, so no name of the first delivery is
    # reused; once every event the SIEM had was met (in the new page 0), delivery is back to plain names.
    assert Path(again.outputs[0]).stem.split("-")[2:] == ["b000000", Path(again.outputs[0]).stem[-16:]]
    assert [Path(p).name for p in again.outputs[1:3]] == [f"gws-{W10.slug}-b00000{n}.jsonl" for n in (1, 2)]
    store = SqliteCheckpointStore(site.db)
    stats = store.get("gws", "deliver", rfc3339(W10.start)).stats
    store.close()
    assert "reconciling" not in stats and stats["already_delivered"] == first.events


@pytest.mark.slow  # 2 to 4 s per case
@pytest.mark.parametrize("left", ["record and batch files", "batch files only", "record only"])
def test_what_the_siem_side_still_has_is_enough_to_reconcile(tmp_path, big_sim, left):
    """The record alone covers a forwarder that deletes what it shipped (Splunk's sinkhole batch input);
    the batch files alone cover a record lost or never written (files from before the record existed)."""
    site = Site(tmp_path, big_sim)
    site.pull(50)
    site.deliver()
    shipped: list[str] = []
    if left == "record only":  # the forwarder shipped every file, then deleted it
        shipped = site.siem_ids()
        for f in site.siem.rglob("*.jsonl"):
            f.unlink()
    if left == "batch files only":
        shutil.rmtree(site.siem / "gws" / ".delivered")
    site.lose_checkpoints()
    site.pull(70)
    again = site.deliver()
    ids = shipped + site.siem_ids()
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} events reached the SIEM twice"
    assert sorted(ids) == site.truth() and again.events == 0


@pytest.mark.slow  # about 4 s
def test_with_neither_record_nor_batch_files_the_window_is_delivered_again_in_full(tmp_path, big_sim):
    """Where exactness ends (the sink's docstring): nothing left to reconcile against, so at-least-once."""
    site = Site(tmp_path, big_sim)
    site.pull(50)
    site.deliver()
    shutil.rmtree(site.siem)
    site.lose_checkpoints()
    site.pull(70)
    again = site.deliver()
    assert sorted(site.siem_ids()) == site.truth() and again.events == len(site.truth())
    assert not again.reconciled


def test_a_checkpoint_database_restored_from_an_older_backup_delivers_every_event_once(tmp_path):
    """The restored rows are not blank, so it is the batch names that give it away: batch 3 exists with
    other events than the re-landed page 3 (the window was re-read from the backup's token in pages of
    7). Before: the names that existed were skipped and the three new ones written, 30 events twice."""
    events = make_events(W, 95)
    site = Site(tmp_path)
    store = SqliteCheckpointStore(site.db)

    def outage(cursor: str | None, call: int) -> None:
        if call == 4:
            raise BadPage("the API went away")

    with pytest.raises(PullFailed):  # three pages landed when the backup is taken
        pull_window(FakeSource(events, fault=outage), W, source_name="s", checkpoints=store, landing=site.landing,
                    owner="p", lease_ttl=60)
    store.close()
    first = site.deliver(W, "s")
    assert first.batches == 3
    backup = tmp_path / "backup.db"
    with sqlite3.connect(site.db) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    store = SqliteCheckpointStore(site.db)
    pull_window(FakeSource(events), W, source_name="s", checkpoints=store, landing=site.landing, owner="p",
                lease_ttl=60)
    store.close()
    assert site.deliver(W, "s").batches == 7
    site.lose_checkpoints()
    shutil.copy(backup, site.db)  # an operator restores last night's backup
    store = SqliteCheckpointStore(site.db)
    assert store.get("s", "deliver", rfc3339(W.start)).page_seq == 3
    pull_window(FakeSource(events, page_size=7), W, source_name="s", checkpoints=store, landing=site.landing,
                owner="p", lease_ttl=60)
    store.close()
    again = site.deliver(W, "s")
    ids = site.siem_ids()
    assert len(ids) == len(set(ids)) == 96
    assert again.reconciled and again.events == 0 and again.already_delivered == 96 - first.events


# ---- case 12: a checkpoint file deleted or replaced under a running pull ------------------------------


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_checkpoint_file_deleted_under_a_running_pull_stops_it_with_an_error_naming_the_file(tmp_path, big_sim,
                                                                                              how):
    """Before: SQLite kept writing into the deleted inode and the pull returned complete."""
    big_sim.set_page_latency(0.02)  # 61 pages: ~1.5 s of reading
    site = Site(tmp_path, big_sim)
    at_loss: list[int] = []

    def lose_it() -> None:
        deadline = time.monotonic() + 30
        while len(big_sim.requests()) < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        if how == "deleted":
            site.lose_checkpoints()
        else:  # a backup copied over it: same name, another file
            shutil.copy(site.db, tmp_path / "copy.db")
            (tmp_path / "copy.db").replace(site.db)
        at_loss.append(len(big_sim.requests()))

    thief = threading.Thread(target=lose_it)
    thief.start()
    try:
        with pytest.raises(CheckpointStoreLost) as lost:
            site.pull(50)
    finally:
        thief.join()
    assert str(site.db) in str(lost.value) and "stopping without writing" in str(lost.value)
    read = len(big_sim.requests())
    assert read <= at_loss[0] + 2 < 61, f"{read} pages read, {at_loss[0]} when the file went: the pull went on"
