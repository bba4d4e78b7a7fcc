"""The MongoDB oplog archive against a real server (SecantusDB) and a real local store: slices cut
by size and by time, each record written after its object was stored and read back, continuity
with the hole a rolled-over oplog leaves named, pruning, verified fetches, one shipper at a time,
the lag under a steady write load, and archive-logs, verify and prune through the flows.

What the archive holds is judged against the server's own oplog, read by a plain query and
filtered by namespace here (no vaultflow code)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import bson
import pytest
from bson import Timestamp
from pymongo import MongoClient

from vaultflow.engines.mongodb.consistency import MongoDumpConsistency
from vaultflow.engines.mongodb.oplog import OplogGap
from vaultflow.engines.mongodb.oplog_archive import ENGINE, LOCK_PURPOSE, OplogArchive
from vaultflow.engines.mongodb.oplog_slices import ROLLED_OVER, Position, text_of
from vaultflow.engines.mongodb.settings import MongoSettings
from vaultflow.errors import IntegrityError, LockHeldError, StoreUnavailableError
from vaultflow.logarchive import ship_failure, ship_following
from vaultflow.manifest import BackupKind, Manifest, new_backup_id
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
from vaultflow.testing.mongo_server import MongoProcess, running_mongo

TARGET = "oplog"
PAD = "p" * 300


@pytest.fixture(scope="module")
def server() -> Iterator[MongoProcess]:
    with running_mongo("oplog-archive") as process:
        yield process


@pytest.fixture(scope="module")
def client(server: MongoProcess) -> Iterator[MongoClient]:
    with server.client() as own:
        yield own


def settings_for(server: MongoProcess, database: str, seconds: int = 3600, size: int = 1 << 20) -> MongoSettings:
    return MongoSettings(
        host=server.host,
        port=server.port,
        databases=[database],
        oplog_slice_seconds=seconds,
        oplog_slice_bytes=size,
        target_name=TARGET,
    )


def oplog_of(client: MongoClient, database: str) -> list[dict]:
    """The oracle: every entry of `database` in the server's oplog, in oplog order."""
    return [
        doc
        for doc in client.local.oplog.rs.find().sort("$natural", 1)
        if doc["ns"].split(".", 1)[0] == database and "." in doc["ns"]
    ]


def settle(archive: OplogArchive, client: MongoClient, database: str, seconds: float) -> None:
    """Ship everything the server holds so far, so that the next entry opens a new slice window
    (the module's server holds other tests' entries, and a window starts at the first entry read)."""
    client[database].docs.insert_one({"_id": "settle"})
    time.sleep(seconds + 0.1)
    archive.ship()
    assert archive.lag().units == 0


def archived(archive: OplogArchive) -> list[dict]:
    return [bson.decode(raw) for name in archive.units() for raw in archive.slice_entries(name)]


def backup_at(point: Timestamp, hours: int = 0) -> Manifest:
    when = datetime(2026, 11, 26, tzinfo=UTC) + timedelta(hours=hours)
    text = text_of(point)
    return Manifest(
        id=new_backup_id(BackupKind.FULL, when),
        engine=ENGINE,
        target=TARGET,
        kind=BackupKind.FULL,
        mode="logical",
        started_at=when,
        finished_at=when + timedelta(minutes=1),
        consistency=MongoDumpConsistency(method="snapshot", cluster_time=text, start_ts=text, end_ts=text),
        objects=[],
    )


class RecordingStore:
    """A real LocalStore that notes every put and open, in order; optionally fails the n-th put of
    a slice record (like a dropped connection)."""

    def __init__(self, inner: LocalStore, fail_record: int | None = None):
        self.inner, self.fail_record = inner, fail_record
        self.calls: list[tuple[str, str]] = []
        self.records_put = 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def put(self, key: str, reader, size_hint=None) -> int:
        if "/logs/" in key and key.endswith(".json"):
            self.records_put += 1
            if self.records_put == self.fail_record:
                raise StoreUnavailableError(f"connection reset while writing {key}")
        self.calls.append(("put", key))
        return self.inner.put(key, reader, size_hint)

    def open(self, key: str):
        self.calls.append(("open", key))
        return self.inner.open(key)


def test_slices_cut_by_size_continue_each_other_and_each_record_is_written_last(
    server: MongoProcess, client: MongoClient, tmp_path: Path
):
    db = "arc_size"
    store = RecordingStore(LocalStore(tmp_path / "repo"))
    archive = OplogArchive(Repository(store), TARGET, settings_for(server, db, size=8192))
    client[db].docs.insert_many([{"_id": i, "pad": PAD} for i in range(200)])
    client[db].docs.update_many({"_id": {"$lt": 10}}, {"$set": {"x": 1}})

    report = archive.ship()
    calls = list(store.calls)
    records = archive.records()
    assert report.shipped == [r.name for r in records] == sorted(report.shipped) and len(records) >= 8
    assert all(later.after == earlier.end for earlier, later in zip(records, records[1:], strict=False))
    for record in records:  # full: at least 8192 bytes of entries, and not without its last one
        sizes = [len(raw) for raw in archive.slice_entries(record.name)]
        assert len(sizes) == record.count and sum(sizes) >= 8192 > sum(sizes) - sizes[-1], record.name
    assert report.stored_bytes < report.raw_bytes / 3, "zstd: the repeated padding compresses"
    assert report.lag_units == 210 - sum(r.count for r in records) > 0, "the unfinished slice waits"
    assert report.lag_seconds >= 0 and archive.lag().units == report.lag_units

    for record in records:  # not archived yet; object stored, read back; then the record, and nothing after
        obj, rec = archive.object_key(record.name), archive.record_key(record.name)
        steps = [call for call in calls if call[1] in (obj, rec)]
        assert steps == [("open", rec), ("put", obj), ("open", obj), ("put", rec)], record.name

    client[db].docs.insert_many([{"_id": i, "pad": PAD} for i in range(200, 240)])
    archive.ship()
    oracle = oplog_of(client, db)
    got = archived(archive)
    assert got == oracle[: len(got)] and len(oracle) - len(got) == archive.lag().units < 25


def test_a_failed_record_write_leaves_the_slice_unarchived_and_the_next_ship_redoes_it(
    server: MongoProcess, client: MongoClient, tmp_path: Path
):
    db = "arc_fail"
    settings = settings_for(server, db, size=4096)
    client[db].docs.insert_many([{"_id": i, "pad": PAD} for i in range(60)])
    failing = OplogArchive(Repository(RecordingStore(LocalStore(tmp_path / "repo"), fail_record=2)), TARGET, settings)
    with pytest.raises(StoreUnavailableError) as caught:
        failing.ship()
    unit, partial = ship_failure(caught.value)
    archive = OplogArchive(Repository(LocalStore(tmp_path / "repo")), TARGET, settings)
    assert partial is not None and partial.shipped == archive.units() and len(archive.units()) == 1
    assert unit and unit in str(caught.value) and unit not in archive.units()
    assert (tmp_path / "repo" / archive.object_key(unit)).exists(), "its object stays, invisible without a record"
    assert partial.lag_units == 60 - archive.records()[0].count

    again = archive.ship()
    assert again.shipped[0] == unit
    assert archived(archive) == oplog_of(client, db)[: sum(r.count for r in archive.records())]


def test_slices_cut_by_time_span_at_most_the_window_and_the_last_waits_for_it(
    server: MongoProcess, client: MongoClient, tmp_path: Path
):
    db = "arc_time"
    archive = OplogArchive(Repository(LocalStore(tmp_path / "repo")), TARGET, settings_for(server, db, seconds=3))
    settle(archive, client, db, 3)
    for batch in range(3):
        if batch:
            time.sleep(3.3)
        last_insert = time.time()
        client[db].docs.insert_many([{"_id": f"{batch}-{i}", "pad": PAD} for i in range(5)])
    report = archive.ship()
    shipped = time.time()
    mine = [r for r in archive.records() if r.count]
    assert [r.count for r in mine] == [1, 5, 5], "the third window is not over yet"
    assert all(r.end.ts.time < r.start_ts.time + 3 for r in archive.records()), "no slice spans 3 s"
    # The waiting window is the last batch: as old as the time since it was written, no older
    # (the oplog's wall clock is in ms; 0.01 s of slack for the rounding).
    assert report.lag_units == 5 and 0 <= report.lag_seconds <= shipped - last_insert + 0.01
    time.sleep(3.1)
    assert archive.ship().lag_units == 0 and archive.lag().units == 0
    assert [r.count for r in archive.records() if r.count] == [1, 5, 5, 5]
    assert archived(archive) == oplog_of(client, db)


def test_an_oplog_that_rolled_over_is_a_named_gap_and_shipping_goes_on(tmp_path: Path):
    db = "arc_gap"
    with running_mongo("oplog-gap", oplog_max_entries=100) as server, server.client() as client:
        archive = OplogArchive(Repository(LocalStore(tmp_path / "repo")), TARGET, settings_for(server, db, size=4096))
        client[db].docs.insert_many([{"_id": i, "pad": PAD} for i in range(30)])
        archive.ship()
        before_gap = archive.records()
        last_end = before_gap[-1].end
        early = backup_at(oplog_of(client, db)[3]["ts"], 0)

        client[db].docs.insert_many([{"_id": i, "pad": PAD} for i in range(30, 1000)])
        client.admin.command("secantusAdmin.pruneOplog")  # SecantusDB's prune trigger (mongod: automatic)
        oldest = client.local.oplog.rs.find_one({}, sort=[("$natural", 1)])["ts"]
        with pytest.raises(OplogGap) as caught:
            archive.ship()
        message = str(caught.value)
        assert text_of(last_end.ts) in message and text_of(oldest) in message and "take a full backup" in message
        unit, partial = ship_failure(caught.value)
        assert partial is not None and partial.shipped and unit == partial.shipped[0]

        restarted = archive.record(unit)
        assert restarted.after is None and restarted.rolled_from == last_end and restarted.start_ts == oldest
        late = backup_at(oplog_of(client, db)[-50]["ts"], 1)
        continuity = archive.continuity([early, late])
        [broken] = continuity.broken
        assert broken.backup_id == early.id and continuity.backups[1].ok
        [gap] = broken.gaps
        assert (gap.first, gap.last, gap.reason) == (text_of(last_end.ts), text_of(oldest), ROLLED_OVER)
        assert early.id in broken.problem and ROLLED_OVER in broken.problem

        client[db].docs.insert_many([{"_id": i, "pad": PAD} for i in range(1000, 1030)])
        assert archive.ship().shipped, "the next run continues without a gap"
        assert archive.continuity([late]).ok


def test_prunable_keeps_what_the_oldest_kept_backup_replays_and_never_the_newest(
    server: MongoProcess, client: MongoClient, tmp_path: Path
):
    db = "arc_prune"
    archive = OplogArchive(Repository(LocalStore(tmp_path / "repo")), TARGET, settings_for(server, db, size=4096))
    client[db].docs.insert_many([{"_id": i, "pad": PAD} for i in range(100)])
    archive.ship()
    records = archive.records()
    assert len(records) >= 6
    at_end_of_second = backup_at(records[1].end.ts, 0)
    inside_fourth = backup_at(records[3].first_ts, 1)
    after_all = backup_at(records[-1].end.ts, 2)

    assert archive.log_start(at_end_of_second).unit == records[2].name, "the slice holding the next entry"
    assert archive.log_start(inside_fourth).unit == records[3].name
    assert archive.log_start(after_all).unit == "", "nothing archived past it yet"
    assert archive.prunable([inside_fourth, at_end_of_second]).units == (records[0].name, records[1].name)
    plan = archive.prunable([inside_fourth])
    assert plan.units == tuple(r.name for r in records[:3]) and inside_fourth.id in plan.reason
    assert archive.prunable([after_all]).units == tuple(r.name for r in records[:-1]), "the newest stays"
    assert archive.prunable([]).units == ()

    assert archive.delete(plan.units) == 3
    assert archive.units() == [r.name for r in records[3:]]
    assert archive.continuity([inside_fourth]).ok
    [broken] = archive.continuity([at_end_of_second]).broken
    assert broken.gaps[0].reason == "not archived"
    client[db].docs.insert_many([{"_id": i, "pad": PAD} for i in range(100, 130)])
    assert archive.ship().shipped and archive.records()[-1].after is not None, "shipping resumes after pruning"


def test_fetch_checks_every_byte_and_names_a_corrupted_slice(server: MongoProcess, client: MongoClient, tmp_path: Path):
    db = "arc_fetch"
    archive = OplogArchive(Repository(LocalStore(tmp_path / "repo")), TARGET, settings_for(server, db, size=4096))
    client[db].docs.insert_many([{"_id": i, "pad": PAD} for i in range(40)])
    archive.ship()
    first, second = archive.units()[:2]
    dest = tmp_path / "slice.archive"
    assert archive.fetch(first, dest) is True
    from vaultflow.engines.mongodb.oplog import read_oplog_archive

    with open(dest, "rb") as handle:
        assert list(read_oplog_archive(handle)) == list(archive.slice_entries(first))
    assert archive.fetch("0000000001-0000000001", tmp_path / "nothing") is False

    stored = tmp_path / "repo" / archive.object_key(second)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    broken = tmp_path / "broken"
    with pytest.raises(IntegrityError, match=second):
        archive.fetch(second, broken)
    assert not broken.exists() and not list(tmp_path.glob(".vaultflow-tmp-*"))
    with pytest.raises(IntegrityError, match=second):
        list(archive.slice_entries(second))
    stored.unlink()
    with pytest.raises(IntegrityError, match=f"{second}.*object is missing"):
        archive.fetch(second, broken)


def test_one_shipper_at_a_time(server: MongoProcess, client: MongoClient, tmp_path: Path):
    db = "arc_lock"
    repo = Repository(LocalStore(tmp_path / "repo"))
    archive = OplogArchive(repo, TARGET, settings_for(server, db, size=1000))
    client[db].docs.insert_many([{"_id": i, "pad": PAD} for i in range(10)])
    other = repo.acquire_lock(ENGINE, TARGET, LOCK_PURPOSE)  # another run shipping
    try:
        with pytest.raises(LockHeldError, match="another archive-logs run"):
            archive.ship()
        assert archive.units() == []
    finally:
        other.release()
    assert archive.ship().shipped


def test_the_lag_stays_small_under_a_steady_write_load(server: MongoProcess, client: MongoClient, tmp_path: Path):
    """A writer inserts ~1,000 entries/s for 8 s while archive-logs follows with 1-second slices;
    afterwards the archive holds exactly the server's entries, none twice."""
    db = "arc_load"
    archive = OplogArchive(
        Repository(LocalStore(tmp_path / "repo")), TARGET, settings_for(server, db, seconds=1, size=256 << 10)
    )
    client[db].docs.insert_one({"_id": "start"})
    archive.ship()
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        with server.client() as own:
            n = 0
            while not stop.is_set():
                own[db].docs.insert_many([{"_id": n + i, "pad": PAD} for i in range(50)])
                n += 50
                written[0] = n
                time.sleep(0.05)

    thread = threading.Thread(target=writer)
    thread.start()
    started = time.monotonic()
    try:
        samples = []
        report = ship_following(archive, 8.0, poll_seconds=0.5)
        samples.append(archive.lag())
    finally:
        stop.set()
        thread.join()
    elapsed = time.monotonic() - started
    time.sleep(1.1)
    final = archive.ship()
    rate = written[0] / elapsed
    print(
        f"\nwrite load {rate:.0f} entries/s for {elapsed:.1f} s: {len(report.shipped)} slices shipped while "
        f"following ({report.raw_bytes / 1e6:.1f} MB raw, {report.stored_bytes / 1e6:.2f} MB stored), "
        f"max lag {report.max_lag_units} entries ({report.max_lag_units / rate:.1f} s of writes), "
        f"lag at the end of following {samples[0].units} entries / {samples[0].seconds:.1f} s"
    )
    assert written[0] > 2000 and len(report.shipped) >= 5
    assert report.max_lag_units < rate * 4, "at most about two 1-second windows plus a ship behind"
    assert final.lag_units == 0 and archive.lag().units == 0
    got, oracle = archived(archive), oplog_of(client, db)
    assert len(got) == len(oracle) == written[0] + 1 and got == oracle


def test_a_backlog_ships_at_a_measured_rate(server: MongoProcess, client: MongoClient, tmp_path: Path):
    db = "arc_rate"
    archive = OplogArchive(
        Repository(LocalStore(tmp_path / "repo")), TARGET, settings_for(server, db, seconds=1, size=4 << 20)
    )
    client[db].docs.insert_many([{"_id": i, "pad": PAD, "n": i} for i in range(20_000)])
    time.sleep(1.1)
    started = time.monotonic()
    report = archive.ship()
    seconds = time.monotonic() - started
    entries = sum(r.count for r in archive.records())
    print(
        f"\nbacklog of {entries} entries ({report.raw_bytes / 1e6:.1f} MB) shipped in {seconds:.2f} s: "
        f"{entries / seconds:.0f} entries/s, {report.raw_bytes / 1e6 / seconds:.1f} MB/s raw, "
        f"{len(report.shipped)} slices, stored {report.stored_bytes / 1e6:.2f} MB"
    )
    assert entries == 20_000 and report.lag_units == 0
    assert archive.records()[-1].end == Position(archive.records()[-1].end.ts, 0)


def test_a_following_ship_reads_only_new_entries_unless_another_run_shipped_meanwhile(
    server: MongoProcess, client: MongoClient, tmp_path: Path
):
    db = "arc_follow"
    # The slice window must outlast two ships and an insert: 4 s did not, once, on a loaded
    # 2-core machine (the window closed between the ships and the second found no lag).
    window = 8
    settings = settings_for(server, db, seconds=window)
    following = OplogArchive(Repository(LocalStore(tmp_path / "repo")), TARGET, settings)
    settle(following, client, db, window)
    client[db].docs.insert_many([{"_id": f"a{i}", "pad": PAD} for i in range(5)])
    assert following.ship().lag_units == 5
    client[db].docs.insert_many([{"_id": f"b{i}", "pad": PAD} for i in range(5)])
    assert following.ship().lag_units == 10
    pending = following._pending
    assert pending is not None and len(pending.cut.entries) == 10
    assert pending.read.ts == oplog_of(client, db)[-1]["ts"], "the next ship reads from here, not from the archive"

    time.sleep(window + 0.1)
    other = OplogArchive(Repository(LocalStore(tmp_path / "repo")), TARGET, settings)
    shipped = other.ship().shipped  # another run ships the same window first
    assert [r.count for r in other.records() if r.count] == [1, 10]
    client[db].docs.insert_many([{"_id": f"c{i}", "pad": PAD} for i in range(5)])
    assert following.ship().shipped == [], "its unfinished slice is dropped: it starts again from the archive"
    time.sleep(window + 0.1)
    more = following.ship().shipped
    records = following.records()
    assert [r.name for r in records][-len(more) - len(shipped) :] == shipped + more
    assert all(later.after == earlier.end for earlier, later in zip(records, records[1:], strict=False))
    assert archived(following) == oplog_of(client, db)
