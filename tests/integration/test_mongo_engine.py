"""The MongoDB engine against a real server (SecantusDB, a MongoDB-wire server): full backups as
one mongodump archive per database, restores into new databases judged by the oracle (documents
sorted by _id, options, indexes; tests/corpus/oracle.py), drills, refusals, and bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pymongo.monitoring
import pytest
import zstandard
from bson import Timestamp

from tests.corpus.oracle import mongo_differences, mongo_state
from vaultflow.blocks import MongoTarget
from vaultflow.engines.base import BackupContext
from vaultflow.engines.mongodb.archive import ArchiveReader
from vaultflow.engines.mongodb.consistency import parse_ts
from vaultflow.engines.mongodb.settings import MongoRestoreOptions
from vaultflow.errors import AuthenticationError, ConfigError, IntegrityError, RefusedError, ServerUnavailableError
from vaultflow.ports import free_port
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore


def target_for(server, databases: list[str], name: str = "mongo", **fields) -> MongoTarget:
    return MongoTarget(host=server.host, port=server.port, databases=databases, target_name=name, **fields)


def context(tmp_path: Path) -> BackupContext:
    return BackupContext(Repository(LocalStore(tmp_path / "repo")), log=lambda line: None)


def fill(client, db: str) -> None:
    d = client[db]
    d.users.insert_many(
        [{"_id": i, "name": f"user {i}", "score": i * 0.5, "tags": ["a", "b"][: i % 3]} for i in range(500)]
    )
    d.users.create_index("name", unique=True)
    d.users.create_index([("score", -1)], partialFilterExpression={"score": {"$gt": 100}})
    d.users.create_index("expires", expireAfterSeconds=3600, sparse=True)
    d.create_collection("events", capped=True, size=1 << 20)
    d.events.insert_many([{"n": n} for n in range(50)])
    d.create_collection("strict", validator={"$jsonSchema": {"required": ["k"]}})
    d.strict.insert_one({"k": 1})
    d.create_collection("empty")
    d.command({"create": "top_users", "viewOn": "users", "pipeline": [{"$match": {"score": {"$gt": 200}}}]})


def test_full_backup_restores_every_collection_view_and_index(mongo_source, mongo_client, fresh_mongo_db, tmp_path):
    fill(mongo_client, fresh_mongo_db)
    source = mongo_state(mongo_client, fresh_mongo_db)
    engine = target_for(mongo_source, [fresh_mongo_db]).engine()
    ctx = context(tmp_path)
    manifest = engine.full_backup(ctx)

    assert [o.database for o in manifest.objects] == [fresh_mongo_db]
    assert manifest.consistency.type == "mongodb-dump" and manifest.consistency.method in ("snapshot", "unchanged")
    assert manifest.fingerprints[fresh_mongo_db]["users"].count == 500
    prints = manifest.fingerprints[fresh_mongo_db]
    assert set(prints) == {"users", "events", "strict", "empty", "$admin.system.users", "$admin.system.roles"}
    assert prints["$admin.system.users"].count == prints["$admin.system.roles"].count == 0  # read: none

    result = engine.restore(ctx, manifest)
    copy = result.restored[fresh_mongo_db]
    try:
        assert copy == f"{fresh_mongo_db}_restore_{manifest.id[:15].lower()}"
        assert result.comparison.ok, result.comparison.summary()
        assert mongo_differences(source, mongo_state(mongo_client, copy)) == []
    finally:
        mongo_client.drop_database(copy)

    drilled = engine.drill(ctx, manifest)
    assert drilled.comparison.ok and not [n for n in mongo_client.list_database_names() if "vaultflow_drill" in n]
    assert not list(ctx.repository.store.list("mongodb/mongo/scratch/")), "scratch records are removed"


def test_the_archive_is_mongodumps_format_with_every_namespace(mongo_source, mongo_client, fresh_mongo_db, tmp_path):
    fill(mongo_client, fresh_mongo_db)
    ctx = context(tmp_path)
    manifest = target_for(mongo_source, [fresh_mongo_db]).engine().full_backup(ctx)
    (obj,) = manifest.objects
    path = tmp_path / "repo" / ctx.repository.backup_prefix("mongodb", "mongo", manifest.id) / obj.key
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as plain:
        archive = ArchiveReader(plain, name=obj.key)
        declared = {(e.collection, e.type) for e in archive.prelude.collections}
        counts: dict[str, int] = {}
        for _db, collection, _doc in archive:
            counts[collection] = counts.get(collection, 0) + 1
    assert declared == {
        ("users", "collection"),
        ("events", "collection"),
        ("strict", "collection"),
        ("empty", "collection"),
        ("top_users", "view"),
    }
    assert counts == {"users": 500, "events": 50, "strict": 1}


def test_overwrite_replaces_a_database_only_after_the_copy_compared(
    mongo_source, mongo_client, fresh_mongo_db, tmp_path
):
    fill(mongo_client, fresh_mongo_db)
    source = mongo_state(mongo_client, fresh_mongo_db)
    engine = target_for(mongo_source, [fresh_mongo_db]).engine()
    ctx = context(tmp_path)
    manifest = engine.full_backup(ctx)
    mongo_client[fresh_mongo_db].users.delete_many({"_id": {"$lt": 100}})
    mongo_client[fresh_mongo_db].drop_collection("events")

    with pytest.raises(RefusedError, match="exists .* pass overwrite=True"):
        engine.restore(ctx, manifest, into=fresh_mongo_db)
    assert mongo_client[fresh_mongo_db].users.count_documents({}) == 400, "a refused restore changes nothing"

    result = engine.restore(ctx, manifest, into=fresh_mongo_db, overwrite=True)
    assert result.restored == {fresh_mongo_db: fresh_mongo_db} and result.comparison.ok
    assert mongo_differences(source, mongo_state(mongo_client, fresh_mongo_db)) == []
    assert not [n for n in mongo_client.list_database_names() if "_vf_" in n]


def test_restoring_one_backup_twice_says_to_drop_the_earlier_copy_rename_or_overwrite(
    mongo_source, mongo_client, fresh_mongo_db, tmp_path
):
    """As PostgreSQL does: the default name <db>_restore_<backup time> is refused once taken,
    nothing written; the message names the earlier copy and the three ways on."""
    fill(mongo_client, fresh_mongo_db)
    engine = target_for(mongo_source, [fresh_mongo_db]).engine()
    ctx = context(tmp_path)
    manifest = engine.full_backup(ctx)
    copy = engine.restore(ctx, manifest).restored[fresh_mongo_db]
    try:
        mongo_client[copy].users.delete_many({"_id": {"$lt": 10}})
        before = mongo_state(mongo_client, copy)
        with pytest.raises(RefusedError) as refused:
            engine.restore(ctx, manifest)
        message = str(refused.value)
        assert f"database '{copy}' already exists on {mongo_source.host}:{mongo_source.port}" in message
        assert "the name a restore gives its copy of this backup" in message
        assert f"db.getSiblingDB('{copy}').dropDatabase()" in message and "into='<name>'" in message
        assert "overwrite=True" in message
        assert mongo_differences(before, mongo_state(mongo_client, copy)) == [], "nothing was written"
        again = engine.restore(ctx, manifest, overwrite=True)
        assert again.restored == {fresh_mongo_db: copy} and again.comparison.ok
        assert mongo_client[copy].users.count_documents({}) == 500
    finally:
        mongo_client.drop_database(copy)


def test_a_corrupt_archive_is_named_and_nothing_moves_into_place(mongo_source, mongo_client, fresh_mongo_db, tmp_path):
    fill(mongo_client, fresh_mongo_db)
    engine = target_for(mongo_source, [fresh_mongo_db]).engine()
    ctx = context(tmp_path)
    manifest = engine.full_backup(ctx)
    (obj,) = manifest.objects
    path = tmp_path / "repo" / ctx.repository.backup_prefix("mongodb", "mongo", manifest.id) / obj.key
    original = path.read_bytes()
    before = set(mongo_client.list_database_names())
    # a flipped byte anywhere: in zstd's frame, in a literal block the BSON or JSON decoder reads
    # before the sha256 is compared at the end, or deep in the documents
    for offset in (20, 212, 415, 600, len(original) // 2, len(original) - 10):
        data = bytearray(original)
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))
        for attempt in (lambda: engine.restore(ctx, manifest), lambda: engine.drill(ctx, manifest)):
            with pytest.raises(IntegrityError) as caught:
                attempt()
            assert obj.key in str(caught.value) and manifest.id in str(caught.value), (offset, caught.value)
            assert "use another backup" in str(caught.value), (offset, caught.value)  # and what to do
        assert set(mongo_client.list_database_names()) == before, f"the scratch database is dropped ({offset})"


def test_databases_filter_and_names_with_unicode(mongo_source, mongo_client, tmp_path):
    names = ["vf_ünïcode_db", "vf_second_db"]
    try:
        for name in names:
            mongo_client[name]["coll with spaces.and.dots"].insert_many([{"_id": i, "v": "é" * i} for i in range(20)])
        engine = target_for(mongo_source, names).engine()
        ctx = context(tmp_path)
        manifest = engine.full_backup(ctx)
        assert sorted(o.database for o in manifest.objects) == sorted(names)
        result = engine.restore(ctx, manifest, databases=["vf_ünïcode_db"], into="vf_unicode_copy")
        assert result.restored == {"vf_ünïcode_db": "vf_unicode_copy"} and result.comparison.ok
        assert (
            mongo_differences(mongo_state(mongo_client, names[0]), mongo_state(mongo_client, "vf_unicode_copy")) == []
        )
        with pytest.raises(ConfigError, match="holds no database 'nope'"):
            engine.restore(ctx, manifest, databases=["nope"])
        with pytest.raises(ConfigError, match="names one database"):
            engine.restore(ctx, manifest, into="x")
    finally:
        for name in [*names, "vf_unicode_copy"]:
            mongo_client.drop_database(name)


class LoginAttempts(pymongo.monitoring.CommandListener):
    """Counts refused logins (saslStart, saslContinue: the SCRAM handshake) while active."""

    def __init__(self) -> None:
        self.active, self.refused = True, 0

    def started(self, event) -> None:  # noqa: ANN001 - pymongo's event types
        pass

    def succeeded(self, event) -> None:  # noqa: ANN001
        pass

    def failed(self, event) -> None:  # noqa: ANN001
        if self.active and event.command_name in ("saslStart", "saslContinue", "authenticate"):
            self.refused += 1


def test_missing_database_wrong_password_and_unreachable_server_fail_clearly(mongo_with_password, tmp_path):
    ctx = context(tmp_path)
    good = target_for(
        mongo_with_password, ["nope"], username=mongo_with_password.username, password=mongo_with_password.password
    )
    with pytest.raises(Exception, match="has no database 'nope'"):
        good.engine().full_backup(ctx)
    wrong = target_for(mongo_with_password, [], username=mongo_with_password.username, password="wrong")
    logins = LoginAttempts()
    pymongo.monitoring.register(logins)  # every client made from here on reports its commands
    try:
        with pytest.raises(AuthenticationError, match="refused the login of user 'vaultflow-admin'"):
            wrong.engine().check()
    finally:
        logins.active = False  # pymongo cannot unregister a global listener
    assert logins.refused == 1, f"a wrong password is one login attempt, not a retry loop: {logins.refused}"
    anonymous = target_for(mongo_with_password, [])
    with pytest.raises(
        AuthenticationError,
        match="requires authentication .*: give a user with the built-in 'backup' role .*and its password",
    ):
        anonymous.engine().full_backup(ctx)
    port = free_port()
    closed = MongoTarget(host="127.0.0.1", port=port, target_name="gone", connect_timeout=1)
    with pytest.raises(
        ServerUnavailableError, match=f"cannot reach MongoDB at 127.0.0.1:{port} within connect_timeout=1 s"
    ):
        closed.engine().check()


def test_writes_during_the_dump_are_replayed_from_the_oplog_to_one_point(
    mongo_source, mongo_client, fresh_mongo_db, tmp_path
):
    """On a server that keeps snapshot history the dump reads at the cluster time; on one that
    does not (SecantusDB), a database written during its dump gets the oplog of the dump's window
    stored with it ('oplog', mongodump --oplog), replayed on restore: either way the restore is
    the source at the backup's point. Judged without vaultflow's digest: the writer only inserts,
    so the source at the point is today's documents minus those the oplog shows inserted later."""
    db = mongo_client[fresh_mongo_db]
    db.big.insert_many([{"_id": i, "pad": "x" * 200} for i in range(20000)])
    engine = target_for(mongo_source, [fresh_mongo_db]).engine()
    ctx = context(tmp_path)
    wrote = threading.Event()

    def write() -> None:  # a burst: about a second of inserts and updates while the dump runs
        for n in range(100000, 100100):
            db.big.insert_one({"_id": n})
            db.big.update_one({"_id": n - 100000}, {"$set": {"pad": "changed"}})
            wrote.set()
            time.sleep(0.005)

    writer = threading.Thread(target=write)
    writer.start()
    assert wrote.wait(30), "the writer never wrote"
    try:
        manifest = engine.full_backup(ctx)
    finally:
        writer.join()
    point = manifest.consistency
    assert point.method in ("snapshot", "oplog"), "the burst wrote while the dump read"
    if point.method == "oplog":
        assert point.oplog_entries > 0 and [o.key for o in manifest.objects][-1] == "oplog.archive.zst"
    later = list(
        mongo_client.local["oplog.rs"].find(
            {"ns": f"{fresh_mongo_db}.big", "ts": {"$gt": Timestamp(*parse_ts(point.cluster_time))}}
        )
    )
    assert all(entry["op"] in ("i", "u") for entry in later)
    late_inserts = {entry["o"]["_id"] for entry in later if entry["op"] == "i"}
    late_updates = {entry["o2"]["_id"] for entry in later if entry["op"] == "u"}
    result = engine.restore(ctx, manifest)
    copy = result.restored[fresh_mongo_db]
    try:
        assert result.comparison.ok, result.comparison.summary()
        restored = {d["_id"]: d for d in mongo_client[copy].big.find()}
        source = {d["_id"]: d for d in db.big.find() if d["_id"] not in late_inserts}
        assert restored.keys() == source.keys()
        differing = {key for key in source if source[key] != restored[key]}
        assert differing <= late_updates, "only documents changed after the point differ"
        assert all(restored[key]["pad"] != "changed" for key in differing), "and they are as before the change"
    finally:
        mongo_client.drop_database(copy)


@pytest.mark.skipif(shutil.which("mongorestore") is None, reason="stock mongorestore is not installed here")
def test_stock_mongorestore_restores_the_archive(mongo_source, mongo_client, fresh_mongo_db, tmp_path):
    fill(mongo_client, fresh_mongo_db)
    source = mongo_state(mongo_client, fresh_mongo_db)
    ctx = context(tmp_path)
    manifest = target_for(mongo_source, [fresh_mongo_db]).engine().full_backup(ctx)
    (obj,) = manifest.objects
    path = tmp_path / "repo" / ctx.repository.backup_prefix("mongodb", "mongo", manifest.id) / obj.key
    copy = f"{fresh_mongo_db}_stock"
    plain = zstandard.ZstdDecompressor().decompress(path.read_bytes(), max_output_size=1 << 30)
    done = subprocess.run(
        ["mongorestore", f"--uri={mongo_source.uri}", "--archive", f"--nsFrom={fresh_mongo_db}.*", f"--nsTo={copy}.*"],
        input=plain,
        capture_output=True,
        timeout=120,
        env={**os.environ},
    )
    try:
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert mongo_differences(source, mongo_state(mongo_client, copy)) == []
    finally:
        mongo_client.drop_database(copy)


def test_a_partial_restore_takes_only_the_chosen_namespaces(mongo_source, mongo_client, fresh_mongo_db, tmp_path):
    fill(mongo_client, fresh_mongo_db)
    source = mongo_state(mongo_client, fresh_mongo_db)
    engine = target_for(mongo_source, [fresh_mongo_db]).engine()
    ctx = context(tmp_path)
    manifest = engine.full_backup(ctx)

    options = MongoRestoreOptions(namespaces=[f"{fresh_mongo_db}.users", f"{fresh_mongo_db}.ev*"])
    result = engine.restore(ctx, manifest, into=f"{fresh_mongo_db}_part", options=options)
    try:
        assert result.comparison.ok, result.comparison.summary()
        assert sorted(r["table"] for r in result.comparison.rows()) == ["(indexes and options)", "events", "users"]
        copy = mongo_state(mongo_client, f"{fresh_mongo_db}_part")
        assert sorted(copy) == ["events", "users"]
        assert mongo_differences({k: source[k] for k in ("events", "users")}, copy) == []
    finally:
        mongo_client.drop_database(f"{fresh_mongo_db}_part")
    with pytest.raises(ConfigError, match="no database of backup .* has a collection matching"):
        engine.restore(ctx, manifest, options=MongoRestoreOptions(namespaces=["otherdb.*"]))


def test_a_copy_that_differs_from_the_backup_is_not_left_behind(mongo_source, mongo_client, fresh_mongo_db, tmp_path):
    fill(mongo_client, fresh_mongo_db)
    engine = target_for(mongo_source, [fresh_mongo_db]).engine()
    ctx = context(tmp_path)
    manifest = engine.full_backup(ctx)
    prints = dict(manifest.fingerprints[fresh_mongo_db])
    prints["users"] = prints["users"].model_copy(update={"digest": "0" * 32})
    wrong = manifest.model_copy(update={"fingerprints": {fresh_mongo_db: prints}})
    result = engine.restore(ctx, wrong, into=f"{fresh_mongo_db}_differs")
    assert not result.comparison.ok and [t.table for t in result.comparison.mismatches] == ["users"]
    assert result.restored == {}, "nothing is named as restored"
    assert f"{fresh_mongo_db}_differs" not in mongo_client.list_database_names()
