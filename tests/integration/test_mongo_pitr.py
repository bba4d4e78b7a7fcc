"""MongoDB point-in-time restores: the newest backup at or before the point, then archived oplog
slices replayed up to it (to_ts or to_time), judged by the oracle against the source as it was at
that point; a slice missing or corrupted past the start fails naming it, earlier points restore."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bson import Timestamp

from tests.corpus.oracle import mongo_differences, mongo_state
from tests.integration.test_mongo_engine import context, fill, target_for
from tests.integration.test_mongo_incremental import write_changes
from vaultflow.engines.mongodb.client import newest_oplog_ts
from vaultflow.engines.mongodb.consistency import parse_ts, ts_text
from vaultflow.engines.mongodb.oplog_archive import OplogArchive
from vaultflow.engines.mongodb.settings import MongoRestoreOptions
from vaultflow.errors import ConfigError, IntegrityError, NotFoundError
from vaultflow.manifest import BackupKind

WINDOW = 1  # seconds an oplog slice spans at most


@pytest.fixture(scope="module")
def pitr_db(mongo_client) -> Iterator[str]:
    name = f"pitr_{secrets.token_hex(4)}"
    yield name
    mongo_client.drop_database(name)


@pytest.fixture(scope="module")
def timeline(mongo_source, mongo_client, pitr_db, tmp_path_factory):
    """A full backup, then two rounds of changes (A, B) with the oplog archived in small slices:
    (engine, ctx, archive, full, {label: (ts text, wall time, oracle state)}). Built once for the
    module: tests that damage the repository put back what they damaged."""
    fresh_mongo_db, tmp_path = pitr_db, tmp_path_factory.mktemp("pitr")
    fill(mongo_client, fresh_mongo_db)
    engine = target_for(mongo_source, [fresh_mongo_db], oplog_slice_seconds=WINDOW, oplog_slice_bytes=4096).engine()
    ctx = context(tmp_path)
    archive = OplogArchive(ctx.repository, "mongo", engine.config)
    full = engine.full_backup(ctx)
    points = {}
    for label, step in (("A", 1), ("B", 2)):
        write_changes(mongo_client, fresh_mongo_db, step)
        points[label] = (ts_text(newest_oplog_ts(mongo_client)), None, mongo_state(mongo_client, fresh_mongo_db))
        time.sleep(1.1)  # the next round is at least a second later: to_time can tell them apart
        points[label] = (points[label][0], datetime.now(UTC), points[label][2])
        time.sleep(0.1)
    mongo_client[fresh_mongo_db].users.insert_one({"_id": "after B"})
    time.sleep(WINDOW + 0.2)  # every window is over: the slices up to B are archived
    archive.ship()
    return engine, ctx, archive, full, points


@contextmanager
def put_back(*paths: Path) -> Iterator[None]:
    """Whatever a test does to these repository files, they are as they were afterwards."""
    saved = {path: path.read_bytes() for path in paths}
    try:
        yield
    finally:
        for path, data in saved.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


def restore_to(engine, ctx, full, client, database: str, **point):
    result = engine.restore(ctx, full, options=MongoRestoreOptions(**point))
    copy = result.restored[database]
    try:
        return result, mongo_state(client, copy)
    finally:
        client.drop_database(copy)


def test_restores_to_a_timestamp_and_to_a_time_between_backups(timeline, mongo_client, pitr_db):
    fresh_mongo_db = pitr_db
    engine, ctx, archive, full, points = timeline
    assert len(archive.units()) > 2, "the changes span several slices"
    for label in ("A", "B"):
        ts, wall, state = points[label]
        result, copy = restore_to(engine, ctx, full, mongo_client, fresh_mongo_db, to_ts=ts)
        assert mongo_differences(state, copy) == [], f"to_ts at {label}"
        assert result.comparison.tables == [] and any("nothing was compared" in n for n in result.notes)
        assert any(f"restored to oplog timestamp {ts}" in n for n in result.notes), result.notes
        assert any("replayed" in n for n in result.notes)
        result, copy = restore_to(engine, ctx, full, mongo_client, fresh_mongo_db, to_time=wall)
        assert mongo_differences(state, copy) == [], f"to_time at {label}"
    result, copy = restore_to(engine, ctx, full, mongo_client, fresh_mongo_db, to_ts=full.consistency.cluster_time)
    assert result.comparison.ok and result.comparison.tables, "exactly a backup's point: its fingerprints compared"


def test_the_newest_backup_before_the_point_is_the_start(timeline, mongo_client, pitr_db):
    fresh_mongo_db = pitr_db
    engine, ctx, archive, full, points = timeline
    incremental = engine.incremental_backup(ctx, BackupKind.INCREMENTAL)  # stands after B
    ts, _wall, state = points["B"]
    result, copy = restore_to(engine, ctx, incremental, mongo_client, fresh_mongo_db, to_ts=ts)
    assert result.backup_id == full.id or result.backup_id == incremental.id
    assert mongo_differences(state, copy) == []
    with pytest.raises(ConfigError, match="no backup of mongo stands at or before"):
        engine.restore(ctx, full, options=MongoRestoreOptions(to_ts="1000:1"))


def test_a_missing_slice_fails_points_past_it_and_earlier_points_restore(timeline, mongo_client, pitr_db):
    fresh_mongo_db = pitr_db
    engine, ctx, archive, full, points = timeline
    ts_a, _, state_a = points["A"]
    ts_b, _, _ = points["B"]
    point_a = Timestamp(*parse_ts(ts_a))
    later = [r for r in archive.records() if r.count and r.first_ts > point_a]
    assert later, "some slice holds entries after A"
    root = Path(ctx.repository.store.root)
    with put_back(root / archive.record_key(later[0].name), root / archive.object_key(later[0].name)):
        archive.delete([later[0].name])
        with pytest.raises(NotFoundError, match="lacks the oplog after") as caught:
            engine.restore(ctx, full, options=MongoRestoreOptions(to_ts=ts_b))
        assert "points at or before" in str(caught.value)
        _result, copy = restore_to(engine, ctx, full, mongo_client, fresh_mongo_db, to_ts=ts_a)
        assert mongo_differences(state_a, copy) == []
        assert not [n for n in mongo_client.list_database_names() if "_restore_" in n]


def test_a_corrupted_or_lost_slice_object_is_named_and_leaves_no_database(timeline, mongo_client, pitr_db):
    engine, ctx, archive, full, points = timeline
    store = ctx.repository.store
    point_b = Timestamp(*parse_ts(points["B"][0]))
    record = [r for r in archive.records() if r.count and r.first_ts <= point_b][-1]  # needed to reach B
    path = Path(store.root) / archive.object_key(record.name)
    with put_back(path):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        before = set(mongo_client.list_database_names())
        with pytest.raises(IntegrityError, match=record.name):
            engine.restore(ctx, full, options=MongoRestoreOptions(to_ts=points["B"][0]))
        path.unlink()
        with pytest.raises(IntegrityError, match=f"{record.name}.*missing"):
            engine.restore(ctx, full, options=MongoRestoreOptions(to_ts=points["B"][0]))
        assert set(mongo_client.list_database_names()) == before, "the half-restored copy was dropped"


def test_a_point_past_the_archive_names_how_far_it_reaches(timeline):
    engine, ctx, archive, full, _points = timeline
    with pytest.raises(NotFoundError, match="past the end of the oplog archive"):
        engine.restore(ctx, full, options=MongoRestoreOptions(to_ts=f"{int(time.time()) + 3600}:1"))
    with pytest.raises(ConfigError, match="not both"):
        engine.restore(ctx, full, options=MongoRestoreOptions(to_ts="1:1", to_time=datetime.now(UTC)))
