"""Timeseries collections as SecantusDB keeps them (listCollections type "collection" with options
{timeseries, expireAfterSeconds}, no system.buckets collection; measurements may share an _id):
full backups, incrementals and point-in-time restores, each restore judged by the oracle
(documents sorted by _id, options, indexes; tests/corpus/oracle.py) against the source as it was
at that point. mongod's bucketed timeseries (type "timeseries") are refused: tests/unit/
test_mongo_timeseries.py."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bson import Timestamp

from tests.corpus.oracle import mongo_differences, mongo_state
from tests.integration.test_mongo_engine import context, target_for
from tests.integration.test_mongo_replay import captured, newest_ts
from vaultflow.engines.mongodb.client import newest_oplog_ts
from vaultflow.engines.mongodb.consistency import ts_text
from vaultflow.engines.mongodb.oplog_archive import OplogArchive
from vaultflow.engines.mongodb.replay import apply_entries
from vaultflow.engines.mongodb.settings import MongoRestoreOptions
from vaultflow.manifest import BackupKind
from vaultflow.testing.mongo_server import scratch_database

SERIES = {"timeField": "t", "metaField": "m", "granularity": "minutes"}
EXPIRE = 100 * 365 * 86400  # collection-level TTL: kept as an option, never reached by these dates
WINDOW = 1  # seconds an oplog slice spans at most
NOW = datetime.now(UTC).replace(microsecond=0, tzinfo=None)


def readings(sensor: str, count: int, start: int = 0) -> list[dict]:
    """`count` measurements of `sensor`, a minute apart, without _id (the driver adds ObjectIds)."""
    return [
        {"t": NOW + timedelta(minutes=start + i), "m": {"sensor": sensor}, "v": float(start + i)} for i in range(count)
    ]


def make_weather(client, database: str) -> None:
    """A timeseries collection with 300 measurements, two of which share the _id 'twin', and a
    plain collection beside it."""
    db = client[database]
    db.create_collection("weather", timeseries=SERIES, expireAfterSeconds=EXPIRE)
    db.weather.insert_many(readings("north", 150) + readings("south", 148))
    db.weather.insert_many([{**reading, "_id": "twin"} for reading in readings("east", 2)])
    db.stations.insert_many([{"_id": name, "lat": lat} for name, lat in (("north", 60.1), ("south", -33.9))])


def restored(engine, ctx, manifest, client, database: str, **point):
    """(result, oracle state of the copy) of restoring `manifest` (to a point when given) into a
    new database; the copy is dropped."""
    result = engine.restore(ctx, manifest, options=MongoRestoreOptions(**point) if point else None)
    assert database in result.restored, f"not restored: {result.comparison.summary()}"
    copy = result.restored[database]
    try:
        return result, mongo_state(client, copy)
    finally:
        client.drop_database(copy)


def test_a_full_backup_restores_a_timeseries_collection_as_it_was(
    mongo_source, mongo_client, fresh_mongo_db, tmp_path: Path
):
    make_weather(mongo_client, fresh_mongo_db)
    source = mongo_state(mongo_client, fresh_mongo_db)
    assert source["weather"]["type"] == "collection" and '"timeseries"' in source["weather"]["options"]
    engine = target_for(mongo_source, [fresh_mongo_db]).engine()
    ctx = context(tmp_path)
    manifest = engine.full_backup(ctx)
    assert manifest.fingerprints[fresh_mongo_db]["weather"].count == 300

    result, copy = restored(engine, ctx, manifest, mongo_client, fresh_mongo_db)
    assert result.comparison.ok, result.comparison.summary()
    assert mongo_differences(source, copy) == [], "documents (both twins), timeseries options, indexes"


def test_measurements_inserted_later_come_back_through_incrementals_and_points_in_time(
    mongo_source, mongo_client, fresh_mongo_db, tmp_path: Path
):
    """The oplog inserts measurements into the timeseries collection (one more 'twin', and a
    timeseries collection made after the full); an incremental and archived slices replay them.
    A collection the target excludes is written to as well, and no restore brings it back."""
    make_weather(mongo_client, fresh_mongo_db)
    db = mongo_client[fresh_mongo_db]
    engine = target_for(
        mongo_source,
        [fresh_mongo_db],
        exclude_collections=[f"{fresh_mongo_db}.scratch"],
        oplog_slice_seconds=WINDOW,
        oplog_slice_bytes=8192,
    ).engine()
    ctx = context(tmp_path)
    archive = OplogArchive(ctx.repository, "mongo", engine.config)
    full = engine.full_backup(ctx)

    db.weather.insert_many(readings("north", 40, start=150))
    db.weather.insert_one({**readings("west", 1)[0], "_id": "twin"})  # a third measurement with that _id
    db.create_collection("pressure", timeseries={"timeField": "t", "metaField": "m"})
    db.pressure.insert_many(readings("north", 25))
    db.scratch.insert_many([{"_id": i} for i in range(5)])
    incremental = engine.incremental_backup(ctx, BackupKind.INCREMENTAL)
    at_incremental = mongo_state(mongo_client, fresh_mongo_db)
    assert incremental.fingerprints[fresh_mongo_db]["weather"].count == 341
    result, copy = restored(engine, ctx, incremental, mongo_client, fresh_mongo_db)
    assert result.comparison.ok, result.comparison.summary()
    expected = {name: state for name, state in at_incremental.items() if name != "scratch"}
    assert mongo_differences(expected, copy) == [], "the full, then the incremental's oplog replayed"

    db.weather.insert_many(readings("south", 30, start=148))
    db.pressure.insert_one({**readings("east", 1)[0], "_id": "twin"})
    db.scratch.insert_one({"_id": "later"})
    point = ts_text(newest_oplog_ts(mongo_client))
    at_point = {name: state for name, state in mongo_state(mongo_client, fresh_mongo_db).items() if name != "scratch"}
    db.weather.insert_many(readings("north", 10, start=190))  # after the point: not restored
    time.sleep(WINDOW + 0.2)  # every slice's window up to the point is over
    archive.ship()
    for start in (full, incremental):  # from the full: every slice since; from the incremental: fewer
        result, copy = restored(engine, ctx, start, mongo_client, fresh_mongo_db, to_ts=point)
        assert mongo_differences(at_point, copy) == [], f"point in time {point} from {start.kind.value}"
        assert any("replayed" in note for note in result.notes), result.notes


def test_replayed_inserts_add_measurements_and_skip_those_the_dump_already_read(mongo_client):
    """Within a full's dump window (at or before `settled`) an insert may already be in the
    archive: it is added unless an identical measurement is there. After it, every insert is a
    new measurement, even one identical to another (a plain insert)."""
    with scratch_database(mongo_client, "tsrc") as source, scratch_database(mongo_client, "tcopy") as copy:
        for name in (source, copy):
            mongo_client[name].create_collection("weather", timeseries=SERIES)
        first = {"_id": 1, "t": NOW, "m": {"sensor": "a"}, "v": 1.0}
        mongo_client[copy].weather.insert_one(first)  # what the dump read
        before = newest_ts(mongo_client)
        mongo_client[source].weather.insert_one(first)
        mongo_client[source].weather.insert_one({**first, "v": 2.0})  # another measurement, the same _id
        mongo_client[source].weather.insert_one(first)  # identical to the first: a measurement too
        entries = captured(mongo_client, source, before)
        assert [entry["op"] for entry in entries] == ["i", "i", "i"]

        def replay(settled: Timestamp | None) -> list[float]:
            mongo_client[copy].weather.delete_many({})
            mongo_client[copy].weather.insert_one(first)
            apply_entries(mongo_client, entries, rename={f"{source}.*": f"{copy}.*"}, settled=settled)
            return sorted(doc["v"] for doc in mongo_client[copy].weather.find())

        assert replay(None) == [1.0, 2.0], "all in the window: the dump's copy is not doubled"
        assert replay(entries[0]["ts"]) == [1.0, 1.0, 2.0], "after the window's first entry every insert adds one"
        assert replay(Timestamp(before.time - 1, 0)) == [1.0, 1.0, 1.0, 2.0], "none in the window: plain inserts"
