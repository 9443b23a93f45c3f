"""What the SQLite checkpoint store and the local landing store do beyond their protocols' contracts
(their files, temp files, schema upgrades); the contracts themselves are in contracts/ and run for
every backend from test_contract_checkpoints.py and test_contract_landing.py."""

import dataclasses
import errno
import os
import subprocess
import sys

import orjson
import pytest

from logpull_dagster.checkpoints import CheckpointStoreLost, LeaseLost
from logpull_dagster.checkpoints.sqlite import SqliteCheckpointStore
from logpull_dagster.landing.local import LocalLandingStore, write_bytes_atomic

from .fakes import W

START, END = "2026-11-26T10:00:00Z", "2026-11-26T11:00:00Z"


def test_landing_keeps_the_newest_epoch_of_each_page_and_discards_unfinished_pages(tmp_path):
    land = LocalLandingStore(tmp_path)
    line = orjson.dumps({"id": "x"})
    land.put_page("s", W, 0, 1, [line])
    land.put_page("s", W, 1, 1, [line, line])
    land.put_page("s", W, 1, 2, [line])  # the run that took over rewrote page 1
    land.put_page("s", W, 2, 2, [line])  # unfinished: not checkpointed
    pages = land.pages("s", W, below=2)
    assert [(p.seq, p.epoch) for p in pages] == [(0, 1), (1, 2)]
    assert land.read_lines(pages[1]) == [line]
    (tmp_path / "s" / W.slug / ".page-000003.e000002.jsonl.99.tmp").write_bytes(b"half")
    assert land.discard("s", W, from_seq=2) == 3  # page 2, the superseded copy of page 1, the temp file
    assert sorted(p.name for p in (tmp_path / "s" / W.slug).iterdir()) == [
        "page-000000.e000001.jsonl", "page-000001.e000002.jsonl"]


SCHEMA_V1 = ["source", "stage", "window_start", "window_end", "status", "cursor", "page_seq", "pages_read", "reads",
             "journaled", "events", "passes", "attempts", "epoch", "lease_owner", "lease_expires", "heartbeat",
             "last_error", "stats"]


def test_a_checkpoint_file_from_before_the_time_keyed_index_keeps_deduplicating_its_windows(tmp_path):
    import sqlite3

    old, new = b"o" * 16, b"n" * 16
    db = sqlite3.connect(tmp_path / "old.db")  # the schema of the first release, one window pulled
    db.execute("CREATE TABLE landed_ids (source TEXT NOT NULL, window_start TEXT NOT NULL, id BLOB NOT NULL, "
               "PRIMARY KEY (source, window_start, id)) WITHOUT ROWID")
    db.execute("INSERT INTO landed_ids VALUES ('s', ?, ?)", (START, old))
    columns = [c for c in SCHEMA_V1 if c not in ("reads", "journaled")]
    db.execute(f"CREATE TABLE checkpoints ({', '.join(columns)}, PRIMARY KEY (source, stage, window_start))")
    db.commit()
    db.close()
    store = SqliteCheckpointStore(tmp_path / "old.db")
    a = store.acquire("s", "pull", START, END, owner="a", ttl=10, now=100)
    assert (a.reads, a.journaled) == (0, 0)  # the columns added since are there, with their defaults
    store.commit(dataclasses.replace(a, reads=3, journaled=1), ttl=10, now=101, landed_ids=[(9, new)])
    assert store.get("s", "pull", START).journaled == 1
    assert store.known_ids("s", START, [(1, old), (9, new), (9, b"x" * 16)]) == {old, new}
    assert store.count_ids("s", START) == 2
    store.close()


def test_reads_are_journaled_untouched_and_discarded_unless_pending(tmp_path):
    land = LocalLandingStore(tmp_path)
    body = b'{"items": [], "nextPageToken": "t"}'  # not JSON Lines: the API's bytes, as received
    land.put_read("s", W, 7, 1, body)
    land.put_read("s", W, 8, 1, b"stale copy")
    land.put_read("s", W, 8, 2, b"newer copy")  # the run that took over read it again
    land.put_read("s", W, 9, 2, b"never checkpointed")
    assert land.get_read("s", W, 7) == (body, 1) and land.get_read("s", W, 8) == (b"newer copy", 2)
    assert land.discard("s", W, from_seq=0, keep_reads=range(7, 9)) == 2  # read 9, and the stale copy of 8
    assert sorted(p.name for p in (tmp_path / "s" / W.slug).iterdir()) == [
        "read-00000007.e000001.json", "read-00000008.e000002.json"]
    land.drop_read("s", W, 7, 1)
    with pytest.raises(FileNotFoundError, match="read 7 of window"):
        land.get_read("s", W, 7)
    assert land.pages("s", W, below=10) == []  # reads are not pages: delivery never sees them


def test_stats_keep_lone_surrogates_and_big_integers_exactly(store):
    """Event names, which API users choose, end up in stats. Before: orjson refused the surrogate, so
    the commit failed on every attempt, and a 2**70 would have come back as a float."""
    stats = {"names": {"login_\ud800success": 3, "plain": 1}, "big": 2**70}
    cp = store.acquire("s", "pull", START, END, owner="a", ttl=10, now=100)
    store.commit(dataclasses.replace(cp, stats=stats), ttl=10, now=101)
    assert store.get("s", "pull", START).stats == stats


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_store_whose_file_went_away_refuses_every_write_naming_the_file(tmp_path, how):
    path = tmp_path / "checkpoints.db"
    store = SqliteCheckpointStore(path)
    cp = store.acquire("s", "pull", START, END, owner="a", ttl=10, now=100)
    cp = store.commit(dataclasses.replace(cp, page_seq=1), ttl=10, now=101)
    if how == "deleted":
        for f in tmp_path.glob("checkpoints.db*"):
            f.unlink()
    else:  # another database moved over it (a restore): same name, another inode
        SqliteCheckpointStore(tmp_path / "other.db").close()
        (tmp_path / "other.db").replace(path)
    for write in (lambda: store.commit(dataclasses.replace(cp, page_seq=2), ttl=10, now=102),
                  lambda: store.release(cp, now=103),
                  lambda: store.acquire("s", "pull", "2026-11-26T11:00:00Z", END, owner="a", ttl=10, now=104)):
        with pytest.raises(CheckpointStoreLost, match="was deleted or replaced while this run was using it") as lost:
            write()
        assert str(path) in str(lost.value) and isinstance(lost.value, LeaseLost)  # callers stop, no retry
    store.close()
    if how == "replaced":  # none of the refused writes is in the file now there (SQLite replays the
        # old file's -wal into it on open, hence page 1: copy a WAL database with its -wal, or not at all)
        now_there = SqliteCheckpointStore(path)
        assert [(c.window_start, c.page_seq) for c in now_there.list("s", "pull")] in ([], [(START, 1)])
        now_there.close()
    else:
        assert not path.exists()


def test_a_killed_writers_temp_file_is_removed_by_the_next_write_of_the_same_name(tmp_path):
    target, tmp_dir = tmp_path / "siem" / "b000000.jsonl", tmp_path / "siem" / ".tmp"
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import os, sys, time\nfrom pathlib import Path\n"
         "from logpull_dagster.landing.local import write_bytes_atomic\n"
         "def hang(fd): print('in fsync', flush=True); time.sleep(60)\n"
         "os.fsync = hang\n"
         "write_bytes_atomic(Path(sys.argv[1]), b'half', tmp_dir=Path(sys.argv[2]))",
         str(target), str(tmp_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "in fsync\n"
    finally:
        writer.kill()
        writer.wait()
    assert [p.name for p in tmp_dir.iterdir()] == [f"b000000.jsonl.{writer.pid}-{writer.pid}.tmp"]
    (tmp_dir / "b000001.jsonl.1-1.tmp").write_bytes(b"another name's: left alone")
    write_bytes_atomic(target, b"whole\n", tmp_dir=tmp_dir)
    assert target.read_bytes() == b"whole\n"
    assert [p.name for p in tmp_dir.iterdir()] == ["b000001.jsonl.1-1.tmp"]


def test_a_failed_write_removes_its_own_temp_file_and_names_the_file(tmp_path, monkeypatch):
    land = LocalLandingStore(tmp_path)

    def broken_disk(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_disk)
    with pytest.raises(OSError, match="Input/output error while writing") as failed:
        land.put_page("s", W, 0, 1, [orjson.dumps({"id": "x"})])
    assert failed.value.filename == str(tmp_path / "s" / W.slug / "page-000000.e000001.jsonl")
    assert list((tmp_path / "s" / W.slug).iterdir()) == []
