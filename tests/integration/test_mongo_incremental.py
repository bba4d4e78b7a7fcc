"""MongoDB incrementals and differentials: the oplog since the parent, replayed on restore, each
restore judged by the oracle (documents sorted by _id, options, indexes; tests/corpus/oracle.py)
against the source as it was when that backup was taken; fallbacks when the chain cannot
continue."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pymongo import MongoClient

from tests.corpus.oracle import mongo_differences, mongo_state
from tests.integration.test_mongo_engine import context, fill, target_for
from vaultflow.engines.mongodb.incremental import OPLOG_KEY, OPLOG_ROLE
from vaultflow.engines.mongodb.oplog import OplogGap
from vaultflow.errors import ChainBrokenError, ConfigError
from vaultflow.manifest import BackupKind
from vaultflow.testing.mongo_server import running_mongo


def restored_state(engine, ctx, manifest, client: MongoClient, database: str):
    """Restore `manifest` into a new database, return (result, oracle state of the copy); the copy is dropped."""
    result = engine.restore(ctx, manifest)
    copy = result.restored[database]
    try:
        return result, mongo_state(client, copy)
    finally:
        client.drop_database(copy)


def write_changes(client: MongoClient, db: str, step: int) -> None:
    """Inserts, updates (replacement and field updates), deletes and DDL: a new collection, an
    index, a dropped collection and a renamed one."""
    d = client[db]
    d.users.insert_many([{"_id": 1000 * step + i, "name": f"new {step}.{i}", "score": i} for i in range(50)])
    d.users.update_many({"_id": {"$lt": 40}}, {"$inc": {"score": step}, "$set": {f"seen_{step}": True}})
    d.users.replace_one({"_id": 41}, {"name": f"replaced {step}", "score": -1})
    d.users.delete_many({"_id": {"$gte": 450, "$lt": 460 + step}})
    d[f"made_{step}"].insert_many([{"_id": i, "v": f"x{i}"} for i in range(30)])
    d[f"made_{step}"].create_index("v")
    d.events.insert_one({"n": 100 + step})
    if step == 1:
        d.empty.drop()
    if step == 2:
        d.made_1.rename("renamed_1")


def test_incrementals_and_differential_restore_each_point_exactly(
    mongo_source, mongo_client, fresh_mongo_db, tmp_path: Path
):
    fill(mongo_client, fresh_mongo_db)
    engine = target_for(mongo_source, [fresh_mongo_db]).engine()
    ctx = context(tmp_path)
    full = engine.full_backup(ctx)
    states = {full.id: mongo_state(mongo_client, fresh_mongo_db)}

    write_changes(mongo_client, fresh_mongo_db, 1)
    first = engine.incremental_backup(ctx, BackupKind.INCREMENTAL)
    states[first.id] = mongo_state(mongo_client, fresh_mongo_db)
    write_changes(mongo_client, fresh_mongo_db, 2)
    second = engine.incremental_backup(ctx, BackupKind.INCREMENTAL)
    states[second.id] = mongo_state(mongo_client, fresh_mongo_db)
    mongo_client[fresh_mongo_db].users.update_one({"_id": 3}, {"$unset": {"tags": 1}})
    diff = engine.incremental_backup(ctx, BackupKind.DIFFERENTIAL)
    states[diff.id] = mongo_state(mongo_client, fresh_mongo_db)

    assert (first.parent_id, second.parent_id, diff.parent_id) == (full.id, first.id, full.id)
    assert first.consistency.type == "mongodb-oplog" and first.consistency.parent_ts == full.consistency.cluster_time
    assert second.consistency.parent_ts == first.consistency.cluster_time
    assert [(o.key, o.role) for o in first.objects] == [(OPLOG_KEY, OPLOG_ROLE)]
    assert first.consistency.oplog_entries > 0
    assert diff.consistency.oplog_entries > second.consistency.oplog_entries, "a differential holds the whole range"
    # carried forward, read again where touched: the renamed collection and the dropped one follow
    assert "renamed_1" in second.fingerprints[fresh_mongo_db] and "made_1" not in second.fingerprints[fresh_mongo_db]
    assert "empty" not in first.fingerprints[fresh_mongo_db]
    assert second.fingerprints[fresh_mongo_db]["strict"] == full.fingerprints[fresh_mongo_db]["strict"]

    for manifest in (full, first, second, diff):
        result, copy = restored_state(engine, ctx, manifest, mongo_client, fresh_mongo_db)
        assert result.comparison.ok, f"{manifest.id}: {result.comparison.summary()}"
        assert mongo_differences(states[manifest.id], copy) == [], manifest.id
        drilled = engine.drill(ctx, manifest)
        assert drilled.comparison.ok, f"{manifest.id}: {drilled.comparison.summary()}"
    assert not [n for n in mongo_client.list_database_names() if "vaultflow_drill" in n or "_vf_" in n]


def test_a_quiet_incremental_holds_no_entries_and_restores_the_parents_state(
    mongo_source, mongo_client, fresh_mongo_db, tmp_path: Path
):
    fill(mongo_client, fresh_mongo_db)
    engine = target_for(mongo_source, [fresh_mongo_db]).engine()
    ctx = context(tmp_path)
    full = engine.full_backup(ctx)
    other = mongo_client[f"{fresh_mongo_db}_other"]
    try:
        other.noise.insert_many([{"n": n} for n in range(20)])  # another database's writes are not included
        quiet = engine.incremental_backup(ctx, BackupKind.INCREMENTAL)
    finally:
        mongo_client.drop_database(other.name)
    assert quiet.consistency.oplog_entries == 0
    assert quiet.fingerprints == full.fingerprints
    result, copy = restored_state(engine, ctx, quiet, mongo_client, fresh_mongo_db)
    assert result.comparison.ok and mongo_differences(mongo_state(mongo_client, fresh_mongo_db), copy) == []


def test_excluded_collections_stay_out_of_the_oplog_range(mongo_source, mongo_client, fresh_mongo_db, tmp_path: Path):
    fill(mongo_client, fresh_mongo_db)
    engine = target_for(mongo_source, [fresh_mongo_db], exclude_collections=[f"{fresh_mongo_db}.cache_*"]).engine()
    ctx = context(tmp_path)
    engine.full_backup(ctx)
    d = mongo_client[fresh_mongo_db]
    d.cache_a.insert_many([{"_id": i} for i in range(10)])
    d.cache_a.create_index("x")
    d.users.insert_one({"_id": 9999, "name": "kept"})
    incremental = engine.incremental_backup(ctx, BackupKind.INCREMENTAL)
    assert "cache_a" not in incremental.fingerprints[fresh_mongo_db]
    result = engine.restore(ctx, incremental)
    copy = result.restored[fresh_mongo_db]
    try:
        assert result.comparison.ok, result.comparison.summary()
        assert "cache_a" not in mongo_client[copy].list_collection_names()
        assert mongo_client[copy].users.find_one({"_id": 9999})["name"] == "kept"
    finally:
        mongo_client.drop_database(copy)


def test_no_parent_is_a_chain_break_and_so_is_a_database_the_full_lacks(
    mongo_source, mongo_client, fresh_mongo_db, tmp_path: Path
):
    fill(mongo_client, fresh_mongo_db)
    ctx = context(tmp_path)
    engine = target_for(mongo_source, [fresh_mongo_db]).engine()
    with pytest.raises(ChainBrokenError):
        engine.incremental_backup(ctx, BackupKind.INCREMENTAL)
    engine.full_backup(ctx)
    extra = f"{fresh_mongo_db}_x"
    mongo_client[extra].t.insert_one({"_id": 1})
    try:
        wider = target_for(mongo_source, [fresh_mongo_db, extra]).engine()
        with pytest.raises(ChainBrokenError, match=f"database '{extra}' of mongo is not in its full backup"):
            wider.incremental_backup(ctx, BackupKind.INCREMENTAL)
    finally:
        mongo_client.drop_database(extra)


def test_an_oplog_rolled_past_the_parent_breaks_the_chain_naming_the_lost_range(tmp_path: Path):
    with running_mongo("incr-roll", oplog_max_entries=200) as server, server.client() as client:
        client.app.docs.insert_many([{"_id": i} for i in range(50)])
        engine = target_for(server, ["app"]).engine()
        ctx = context(tmp_path)
        full = engine.full_backup(ctx)
        client.app.docs.insert_many([{"_id": 1000 + i} for i in range(400)])  # the oplog keeps 200
        client.admin.command("secantusAdmin.pruneOplog")  # SecantusDB's prune trigger (mongod: automatic)
        with pytest.raises(OplogGap, match=f"no longer reaches back to {full.consistency.cluster_time}"):
            engine.incremental_backup(ctx, BackupKind.INCREMENTAL)
        assert [m.id for m in ctx.repository.catalog("mongodb", "mongo").manifests] == [full.id], "nothing recorded"


def test_a_database_created_after_the_full_is_restored_from_the_oplog_alone(tmp_path: Path):
    """A target of every user database: a database made after the full exists only in the
    incremental's oplog, and its restore and drill still come back whole."""
    with running_mongo("incr-newdb") as server, server.client() as client:
        client.first.t.insert_many([{"_id": i} for i in range(10)])
        engine = target_for(server, []).engine()
        ctx = context(tmp_path)
        full = engine.full_backup(ctx)
        client.later.fresh.insert_many([{"_id": i, "v": i * i} for i in range(25)])
        client.later.fresh.create_index("v")
        client.first.t.delete_one({"_id": 3})
        expected = {name: mongo_state(client, name) for name in ("first", "later")}
        incremental = engine.incremental_backup(ctx, BackupKind.INCREMENTAL)
        assert [o.database for o in full.objects] == ["first"]
        assert incremental.fingerprints["later"]["fresh"].count == 25

        result = engine.restore(ctx, incremental)
        assert set(result.restored) == {"first", "later"}, result.restored
        assert result.comparison.ok, result.comparison.summary()
        for source, copy in result.restored.items():
            assert mongo_differences(expected[source], mongo_state(client, copy)) == [], source
        drilled = engine.drill(ctx, incremental)
        assert drilled.comparison.ok and len(drilled.comparison.tables) >= 2

        # chosen alone: the incremental holds it, though its full does not
        for copy in result.restored.values():
            client.drop_database(copy)
        alone = engine.restore(ctx, incremental, databases=["later"])
        assert list(alone.restored) == ["later"] and alone.comparison.ok, alone.comparison.summary()
        assert mongo_differences(expected["later"], mongo_state(client, alone.restored["later"])) == []
        with pytest.raises(ConfigError, match=f"backup {incremental.id} holds no database 'nope'"):
            engine.restore(ctx, incremental, databases=["nope"])  # the backup asked for, not its full


def test_a_collection_dropped_and_documents_expired_during_the_full_restore_as_at_its_point(tmp_path: Path):
    """While the full dumps 12 collections, one is dropped and another loses documents the way a
    TTL index deletes them: whenever that lands (before the listing, during the dump or after),
    the backup restores to the source as it is once the writes stopped (they are its point or
    before it)."""
    with running_mongo("full-drop") as server, server.client() as client:
        d = client.app
        for n in range(12):
            d[f"c{n:02d}"].insert_many([{"_id": i, "at": i, "pad": "y" * 100} for i in range(3000)])
        d.c11.create_index("at", expireAfterSeconds=3600)
        engine = target_for(server, ["app"]).engine()
        ctx = context(tmp_path)
        started = threading.Event()

        def interfere() -> None:
            started.wait(30)
            time.sleep(0.2)
            d.c09.drop()
            d.c11.delete_many({"at": {"$lt": 500}})  # what the TTL monitor does to expired documents

        thread = threading.Thread(target=interfere)
        thread.start()
        started.set()
        try:
            manifest = engine.full_backup(ctx)
        finally:
            thread.join()
        expected = mongo_state(client, "app")
        result = engine.restore(ctx, manifest)
        copy = result.restored["app"]
        assert result.comparison.ok, result.comparison.summary()
        assert mongo_differences(expected, mongo_state(client, copy)) == [], manifest.consistency.method
        assert "c09" not in manifest.fingerprints["app"]
        assert manifest.fingerprints["app"]["c11"].count == 2500
