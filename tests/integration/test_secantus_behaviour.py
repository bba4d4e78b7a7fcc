"""What SecantusDB 0.7.0b3 really does where vaultflow's MongoDB engine depends on mongod semantics.

Each test asserts the behaviour observed (matching mongod or not); docs/mongodb-secantus.md
lists the findings and what the engine must do about them. A test that fails after a SecantusDB
upgrade means a finding changed: update the doc and the engine with it.

Most tests share one server (`probe`, its own so the oplog is short: SecantusDB scans the whole
oplog for every query on it). Tests that roll the oplog or restart start their own.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from bson import Binary, Timestamp, encode
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import CursorType, MongoClient
from pymongo.database import Database
from pymongo.errors import OperationFailure, WriteError
from pymongo.read_concern import ReadConcern

from vaultflow.testing.mongo_server import OPLOG_MAX_ENTRIES, MongoProcess, running_mongo, scratch_database

pytestmark = pytest.mark.timeout(90)  # every probe takes seconds; a hang fails, never stalls


# -- helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe() -> Iterator[MongoProcess]:
    with running_mongo("probe") as server:
        yield server


@pytest.fixture(scope="module")
def client(probe: MongoProcess) -> Iterator[MongoClient]:
    with probe.client(socketTimeoutMS=30_000) as connection:
        yield connection


@pytest.fixture
def db(client: MongoClient) -> Iterator[Database]:
    with scratch_database(client, "probe") as name:
        yield client[name]


def last_ts(client: MongoClient) -> Timestamp:
    """ts of the newest oplog entry."""
    return client.local.oplog.rs.find().sort("$natural", -1).limit(1).next()["ts"]


def entries_after(client: MongoClient, ts: Timestamp) -> list[dict[str, Any]]:
    return list(client.local.oplog.rs.find({"ts": {"$gt": ts}}))


def shape(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry without its per-run values (ts, wall, ui, lsid)."""
    return {k: v for k, v in entry.items() if k not in ("ts", "wall", "ui", "lsid")}


def logged(client: MongoClient, action) -> list[dict[str, Any]]:
    """The shapes of the oplog entries `action()` wrote."""
    before = last_ts(client)
    action()
    return [shape(e) for e in entries_after(client, before)]


def error_of(call) -> tuple[int | None, str | None, str]:
    """(code, codeName, errmsg) of the OperationFailure `call()` raises."""
    with pytest.raises(OperationFailure) as failed:
        call()
    details = failed.value.details or {}
    return failed.value.code, details.get("codeName"), details.get("errmsg", str(failed.value))


def poll(cursor) -> dict[str, Any] | None:
    """Next document of a tailable cursor, or None when it has nothing yet."""
    try:
        return next(cursor)
    except StopIteration:
        return None


def uuid_of(db: Database, name: str) -> Binary:
    (info,) = db.command("listCollections", filter={"name": name})["cursor"]["firstBatch"]
    return info["info"]["uuid"]


# -- 1. handshake ------------------------------------------------------------------------------


def test_hello_build_info_and_server_status(client: MongoClient, probe: MongoProcess) -> None:
    hello = client.admin.command("hello")
    assert hello["setName"] == "secantus"  # a one-node replica set, so there is an oplog
    assert hello["isWritablePrimary"] is True and hello["secondary"] is False
    assert hello["hosts"] == [f"127.0.0.1:{probe.port}"]
    assert (hello["minWireVersion"], hello["maxWireVersion"]) == (0, 27)  # 27 = MongoDB 8.2
    assert client.admin.command("isMaster")["ismaster"] is True
    build = client.admin.command("buildInfo")
    assert build["version"] == "8.2.11" and build["versionArray"] == [8, 2, 11, 0]
    assert build["secantusVersion"] == "0.7.0b3"
    status = client.admin.command("serverStatus")
    assert status["process"] == "secantus" and status["storageEngine"]["name"] == "wiredTiger"
    assert status["storageEngine"]["supportsSnapshotReadConcern"] is True  # claimed; see test 4
    assert client.admin.command("replSetGetStatus")["myState"] == 1


def test_hello_times_are_minted_not_the_last_write(client: MongoClient, db: Database) -> None:
    """hello's lastWrite.opTime and every reply's operationTime come from a clock that each
    hello advances: they are later than the newest oplog entry, never equal to it."""
    db.docs.insert_one({})
    newest = last_ts(client)
    first, second = (client.admin.command("hello")["lastWrite"]["opTime"]["ts"] for _ in range(2))
    assert newest < first < second
    assert last_ts(client) == newest  # no oplog entry was written for them


# -- 2. oplog entries --------------------------------------------------------------------------


def test_standalone_writes_no_oplog() -> None:
    with running_mongo("standalone", extra_args=("--standalone",)) as server, server.client() as client:
        assert "setName" not in client.admin.command("hello")
        client.p.docs.insert_one({"_id": 1})
        assert client.local.oplog.rs.count_documents({}) == 0


def test_oplog_collection_and_first_entry(client: MongoClient) -> None:
    (info,) = client.local.command("listCollections", filter={"name": "oplog.rs"})["cursor"]["firstBatch"]
    assert info["options"] == {"capped": True, "size": OPLOG_MAX_ENTRIES * 16 * 1024, "max": OPLOG_MAX_ENTRIES}
    assert isinstance(info["info"]["uuid"], Binary)
    first = client.local.oplog.rs.find().sort("$natural", 1).limit(1).next()
    assert shape(first) == {"op": "n", "ns": "", "o": {"msg": "initiating set"}}


def test_insert_entry(client: MongoClient, db: Database) -> None:
    before = last_ts(client)
    db.docs.insert_one({"_id": 1, "x": "a"})
    (entry,) = entries_after(client, before)
    assert set(entry) == {"op", "ns", "o", "o2", "ts", "ui", "wall"}  # no v, t, h, stmtId
    assert shape(entry) == {"op": "i", "ns": f"{db.name}.docs", "o": {"_id": 1, "x": "a"}, "o2": {"_id": 1}}
    assert entry["ui"] == uuid_of(db, "docs") and entry["ui"].subtype == 4
    assert isinstance(entry["wall"], dt.datetime) and isinstance(entry["ts"], Timestamp)


def test_implicit_create_by_insert_is_not_logged(client: MongoClient, db: Database) -> None:
    """mongod logs a create before the first insert into a new collection; SecantusDB does not
    (createIndexes on a new collection does log one, test_ddl_entries)."""
    entries = logged(client, lambda: db.fresh.insert_one({"_id": 1}))
    assert entries == [{"op": "i", "ns": f"{db.name}.fresh", "o": {"_id": 1}, "o2": {"_id": 1}}]
    before = last_ts(client)
    with client.start_session() as session, session.start_transaction():
        db.in_txn.insert_one({"_id": 1}, session=session)
    assert [(e["op"], e["ns"]) for e in entries_after(client, before)] == [("i", f"{db.name}.in_txn")]


def test_replacement_and_delete_entries(client: MongoClient, db: Database) -> None:
    db.docs.insert_one({"_id": 1, "x": 1})
    ns = f"{db.name}.docs"
    assert logged(client, lambda: db.docs.replace_one({"_id": 1}, {"y": [1, 2]})) == [
        {"op": "u", "ns": ns, "o": {"_id": 1, "y": [1, 2]}, "o2": {"_id": 1}}
    ]
    assert logged(client, lambda: db.docs.delete_one({"_id": 1})) == [
        {"op": "d", "ns": ns, "o": {"_id": 1}, "o2": {"_id": 1}}
    ]
    # upserts log inserts; an update that changes nothing logs nothing
    assert logged(client, lambda: db.docs.update_one({"_id": 2}, {"$set": {"z": 1}}, upsert=True)) == [
        {"op": "i", "ns": ns, "o": {"_id": 2, "z": 1}, "o2": {"_id": 2}}
    ]
    assert logged(client, lambda: db.docs.update_one({"_id": 2}, {"$set": {"z": 1}})) == []


def diff(updated: dict | None = None, removed: list | None = None, **extra: Any) -> dict[str, Any]:
    """SecantusDB's `$v: 2` update: a change stream's updateDescription, not mongod's delta."""
    return {
        "$v": 2,
        "diff": {"updatedFields": updated or {}, "removedFields": removed or [], "truncatedArrays": [], **extra},
    }


@pytest.mark.parametrize(
    ("update", "expected_o"),
    [
        (
            {"$set": {"x": 3, "sub.k": 2}, "$unset": {"y": ""}, "$inc": {"n": 2}},
            diff({"n": 7, "sub.k": 2, "x": 3}, ["y"]),
        ),
        ({"$set": {"new.deep": 1}}, diff({"new": {"deep": 1}})),  # a new parent: the whole subdocument
        ({"$push": {"arr": 9}}, diff({"arr.3": 9})),  # appends: one path per new element
        ({"$set": {"arr.0": 9}}, diff({"arr.0": 9})),
        ({"$pop": {"arr": 1}}, diff({"arr": [1, 2]})),  # other array changes: the whole array
        ({"$pull": {"arr": 1}}, diff({"arr": [2, 3]})),
        ({"$rename": {"x": "xx"}}, diff({"xx": 1}, ["x"])),
        ({"$set": {"num.0": "zero"}}, diff({"num.0": "zero"}, disambiguatedPaths={"num.0": ["num", "0"]})),
        ([{"$set": {"p": {"$add": ["$n", 1]}}}], diff({"p": 6})),  # small pipeline change: a diff
        ([{"$replaceWith": {"_id": 1, "all": "new"}}], {"_id": 1, "all": "new"}),  # else the document
        # a field NAMED "a.b" (MongoDB 5+ allows it) logs the same path as field b inside a: ambiguous
        ([{"$replaceWith": {"$setField": {"field": "a.b", "input": "$$ROOT", "value": 7}}}], diff({"a.b": 7})),
    ],
    ids=[
        "set-unset-inc",
        "set-new-parent",
        "push",
        "set-array-index",
        "pop",
        "pull",
        "rename",
        "numeric-key-in-subdocument",
        "pipeline-small",
        "pipeline-replace",
        "dotted-field-name",
    ],
)
def test_update_entries(client: MongoClient, db: Database, update: Any, expected_o: dict) -> None:
    db.docs.insert_one({"_id": 1, "x": 1, "y": 1, "n": 5, "sub": {"k": 1}, "arr": [1, 2, 3], "num": {"0": "a"}})
    (entry,) = logged(client, lambda: db.docs.update_one({"_id": 1}, update))
    assert entry == {"op": "u", "ns": f"{db.name}.docs", "o": expected_o, "o2": {"_id": 1}}


def test_dotted_field_name_diff_is_lossy(client: MongoClient, db: Database) -> None:
    """Replaying {"updatedFields": {"a.b": 7}} as $set gives {a: {b: 7}}, not the field "a.b"."""
    db.docs.insert_one({"_id": 1})
    db.docs.update_one({"_id": 1}, [{"$replaceWith": {"$setField": {"field": "a.b", "input": "$$ROOT", "value": 7}}}])
    assert db.docs.find_one({"_id": 1}) == {"_id": 1, "a.b": 7}
    db.replayed.insert_one({"_id": 1})
    db.replayed.update_one({"_id": 1}, {"$set": {"a.b": 7}})
    assert db.replayed.find_one({"_id": 1}) == {"_id": 1, "a": {"b": 7}}


def test_ddl_entries(client: MongoClient, db: Database) -> None:
    cmd = f"{db.name}.$cmd"
    id_index = {"v": 2, "key": {"_id": 1}, "name": "_id_"}
    assert logged(client, lambda: db.create_collection("a")) == [
        {"op": "c", "ns": cmd, "o": {"create": "a", "idIndex": id_index}}
    ]
    assert logged(client, lambda: db.create_collection("c", capped=True, size=4096)) == [
        {"op": "c", "ns": cmd, "o": {"create": "c", "capped": True, "size": 4096, "idIndex": id_index}}
    ]
    assert logged(client, lambda: db.create_collection("v", validator={"x": {"$type": "int"}})) == [
        {"op": "c", "ns": cmd, "o": {"create": "v", "validator": {"x": {"$type": "int"}}, "idIndex": id_index}}
    ]
    # mongod inserts into <db>.system.views; SecantusDB logs a create (with an idIndex a view has not)
    assert logged(client, lambda: db.command("create", "view", viewOn="a", pipeline=[])) == [
        {"op": "c", "ns": cmd, "o": {"create": "view", "viewOn": "a", "viewPipeline": [], "idIndex": id_index}}
    ]
    # one entry for all the indexes of a createIndexes, specs in a list (mongod: one entry per index)
    assert logged(client, lambda: db.a.create_index("x", unique=True)) == [
        {
            "op": "c",
            "ns": cmd,
            "o": {
                "createIndexes": "a",
                "indexes": [{"v": 2, "key": {"x": 1}, "name": "x_1", "unique": True, "entryFormat": 4}],
            },
        }
    ]
    assert logged(client, lambda: db.a.drop_index("x_1")) == [
        {"op": "c", "ns": cmd, "o": {"dropIndexes": "a", "index": "x_1", "key": {"x": 1}}}
    ]
    (coll_mod,) = logged(client, lambda: db.command("collMod", "v", validationLevel="off"))
    assert coll_mod["o"] == {"collMod": "v", "validationLevel": "off"}
    assert coll_mod["o2"] == {"collectionOptions_old": {"uuid": uuid_of(db, "v"), "validator": {"x": {"$type": "int"}}}}
    assert logged(client, lambda: db.a.rename("b")) == [
        {"op": "c", "ns": cmd, "o": {"renameCollection": f"{db.name}.a", "to": f"{db.name}.b"}}
    ]
    # dropTarget: a drop of the target first, then the rename naming the dropped collection's uuid
    target_uuid = uuid_of(db, "c")
    assert logged(client, lambda: db.b.rename("c", dropTarget=True)) == [
        {"op": "c", "ns": cmd, "o": {"drop": "c"}},
        {
            "op": "c",
            "ns": cmd,
            "o": {"renameCollection": f"{db.name}.b", "to": f"{db.name}.c", "dropTarget": target_uuid},
        },
    ]
    assert logged(client, lambda: db.v.drop()) == [{"op": "c", "ns": cmd, "o": {"drop": "v"}}]
    # dropDatabase: one drop per collection (views too), then dropDatabase, which has no ui
    before = last_ts(client)
    db.client.drop_database(db.name)
    entries = entries_after(client, before)
    assert [shape(e) for e in entries] == [
        {"op": "c", "ns": cmd, "o": {"drop": "c"}},
        {"op": "c", "ns": cmd, "o": {"drop": "view"}},
        {"op": "c", "ns": cmd, "o": {"dropDatabase": 1}},
    ]
    assert "ui" not in entries[-1] and all("ui" in e for e in entries[:-1])


def test_transaction_entries_share_one_ts(client: MongoClient, db: Database) -> None:
    """No applyOps entry (mongod writes one): each statement is its own entry, all with the
    commit's ts and the session's lsid and txnNumber; the ts ordinals the statements would have
    had are skipped."""
    db.docs.insert_one({"_id": 5})
    other = client[db.name + "_other"]
    before = last_ts(client)
    with client.start_session() as session, session.start_transaction():
        db.docs.insert_one({"_id": 1}, session=session)
        other.docs.insert_one({"_id": 1}, session=session)
        db.docs.update_one({"_id": 1}, {"$set": {"x": 2}}, session=session)
        db.docs.delete_one({"_id": 5}, session=session)
    db.docs.insert_one({"_id": "after"})
    client.drop_database(other.name)
    entries = entries_after(client, before)[:5]
    txn, after = entries[:4], entries[4]
    assert [(e["op"], e["ns"]) for e in txn] == [
        ("i", f"{db.name}.docs"),
        ("i", f"{other.name}.docs"),
        ("u", f"{db.name}.docs"),
        ("d", f"{db.name}.docs"),
    ]
    assert len({e["ts"] for e in txn}) == 1
    assert all(set(e["lsid"]) == {"id"} and e["txnNumber"] == txn[0]["txnNumber"] for e in txn)
    committed = txn[0]["ts"]
    assert after["ts"] > committed
    if after["ts"].time == committed.time:  # the statements' own ordinals were used up
        assert after["ts"].inc >= committed.inc + len(txn) + 1
    assert "lsid" not in after and "txnNumber" not in after  # retryable writes carry neither


def test_insert_many_and_concurrent_writers_get_unique_increasing_ts(
    client: MongoClient, probe: MongoProcess, db: Database
) -> None:
    db.create_collection("other")
    before = last_ts(client)
    db.docs.insert_many([{"_id": i} for i in range(100)])

    def writer(k: int) -> None:
        with probe.client() as own:
            for i in range(100):
                own[db.name].other.insert_one({"k": k, "i": i})

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    entries = entries_after(client, before)
    assert len(entries) == 100 + 400  # one per document
    stamps = [e["ts"] for e in entries]
    assert all(a < b for a, b in zip(stamps, stamps[1:], strict=False))  # $natural order is ts order, no ties


# -- 3. tailing the oplog ----------------------------------------------------------------------


def test_tailable_await_cursor(client: MongoClient, db: Database) -> None:
    db.docs.insert_one({"_id": 0})
    start = last_ts(client)
    cursor = client.local.oplog.rs.find(
        {"ts": {"$gte": start}}, cursor_type=CursorType.TAILABLE_AWAIT, oplog_replay=True
    ).max_await_time_ms(300)
    assert next(cursor)["ts"] == start
    began = time.monotonic()
    assert poll(cursor) is None and cursor.alive
    assert 0.25 < time.monotonic() - began < 3  # getMore waited maxAwaitTimeMS
    db.docs.insert_one({"_id": 1})
    assert poll(cursor)["o"] == {"_id": 1}
    cursor.close()


def test_oplog_roll_is_silent() -> None:
    """Pruning runs every 1000 oplog writes (or secantusAdmin.pruneOplog), not at the cap. A
    cursor whose position was pruned goes on at the new floor with no error (mongod: 136
    CappedPositionLost), and a new query from a pruned ts starts at the floor."""
    with running_mongo("roll", oplog_max_entries=100) as server, server.client() as client:
        oplog = client.local.oplog.rs
        client.p.docs.insert_one({"_id": 0})
        start = last_ts(client)
        cursor = oplog.find({"ts": {"$gte": start}}, cursor_type=CursorType.TAILABLE_AWAIT).max_await_time_ms(100)
        assert next(cursor)["ts"] == start
        client.p.docs.insert_many([{"_id": i} for i in range(1, 900)])
        assert oplog.count_documents({}) > 900  # over the cap of 100, not pruned yet
        assert client.admin.command("secantusAdmin.pruneOplog")["pruned"] > 800
        assert oplog.count_documents({}) == 100
        floor = oplog.find().sort("$natural", 1).limit(1).next()
        assert floor["ts"] > start
        read = []
        while (entry := poll(cursor)) is not None:
            read.append(entry)
        assert cursor.alive and read[0]["ts"] == floor["ts"] and len(read) == 100  # 800 entries skipped
        fresh = oplog.find({"ts": {"$gte": start}}, cursor_type=CursorType.TAILABLE_AWAIT)
        assert next(fresh)["ts"] == floor["ts"]  # no error either: compare with the ts asked for
        fresh.close()
        cursor.close()


def test_restart_keeps_oplog_and_ts_increasing() -> None:
    with running_mongo("restart-oplog") as server:
        with server.client() as client:
            client.p.docs.insert_one({"_id": 1})
            before = last_ts(client)
            count = client.local.oplog.rs.count_documents({})
        server.restart()
        with server.client() as client:
            assert client.local.oplog.rs.count_documents({}) == count  # no new "initiating set"
            client.p.docs.insert_one({"_id": 2})
            assert last_ts(client) > before


# -- 4. snapshot reads -------------------------------------------------------------------------


def test_snapshot_reads_are_not_point_in_time(client: MongoClient, db: Database) -> None:
    """readConcern snapshot is accepted on find/aggregate/distinct and atClusterTime is echoed,
    but reads are not pinned: they see later writes, and any atClusterTime (ancient, future) reads
    the current data. There is no history window, so no SnapshotTooOld (239)."""
    db.a.insert_many([{"_id": i} for i in range(3)])
    client[db.name + "_2"].b.insert_one({"_id": 1})
    with client.start_session(snapshot=True) as session:
        assert db.a.count_documents({}, session=session) == 3
        db.a.insert_one({"_id": 99})
        client[db.name + "_2"].b.insert_one({"_id": 2})
        assert db.a.count_documents({}, session=session) == 4  # mongod: still 3
        assert client[db.name + "_2"].b.count_documents({}, session=session) == 2
    client.drop_database(db.name + "_2")
    newest = last_ts(client)
    for at in (Timestamp(1, 0), Timestamp(newest.time - 3600, 1), Timestamp(newest.time + 3600, 1)):
        reply = db.command("find", "a", readConcern={"level": "snapshot", "atClusterTime": at})
        assert len(reply["cursor"]["firstBatch"]) == 4
        assert reply["cursor"]["atClusterTime"] >= newest  # the current cluster time, not `at`
    reply = db.command(
        "aggregate", "a", pipeline=[], cursor={}, readConcern={"level": "snapshot", "atClusterTime": Timestamp(1, 0)}
    )
    assert len(reply["cursor"]["firstBatch"]) == 4
    snapshot = {"level": "snapshot"}
    assert error_of(lambda: db.command("count", "a", readConcern=snapshot))[:2] == (246, "SnapshotUnavailable")
    assert error_of(lambda: db.command("listCollections", readConcern=snapshot))[:2] == (246, "SnapshotUnavailable")
    assert "minSnapshotHistoryWindowInSeconds" not in client.admin.command(
        "getParameter", 1, minSnapshotHistoryWindowInSeconds=1
    )
    code, name, _ = error_of(lambda: client.admin.command("setParameter", 1, minSnapshotHistoryWindowInSeconds=600))
    assert (code, name) == (72, "InvalidOptions")


def test_transaction_reads_are_a_snapshot_but_not_of_the_oplog(
    client: MongoClient, probe: MongoProcess, db: Database
) -> None:
    """Inside a multi-document transaction reads see one WiredTiger snapshot across databases
    (its idle timeout is 60 s since the last statement, not since the start); the oplog read in
    the same transaction is not part of that snapshot (mongod refuses to read `local` in one)."""
    db.a.insert_many([{"_id": i} for i in range(3)])
    db.big.insert_many([{"_id": i} for i in range(3000)])
    with probe.client() as writer, client.start_session() as session:
        session.start_transaction(read_concern=ReadConcern("snapshot"))
        assert db.a.count_documents({}, session=session) == 3
        writer[db.name].a.insert_one({"_id": 99})
        writer[db.name + "_new"].c.insert_one({"_id": 1})
        newest = last_ts(writer)
        assert db.a.count_documents({}, session=session) == 3
        assert client[db.name + "_new"].c.find_one({}, session=session) is None
        assert last_ts_in(client, session) == newest  # the oplog is read live
        seen = 0
        for seen, _doc in enumerate(db.big.find({}, session=session, batch_size=500), 1):
            if seen == 10:
                writer[db.name].big.delete_many({})
        assert seen == 3000
        session.commit_transaction()
    client.drop_database(db.name + "_new")
    with client.start_session() as session:
        session.start_transaction()
        code, name, _ = error_of(lambda: db.command("listCollections", session=session))
        assert (code, name) == (263, "OperationNotSupportedInTransaction")
        session.abort_transaction()  # the error ended it on the server already


def last_ts_in(client: MongoClient, session) -> Timestamp:
    return client.local.oplog.rs.find(session=session).sort("$natural", -1).limit(1).next()["ts"]


def test_a_cursor_keeps_the_results_it_had_when_opened(client: MongoClient, db: Database) -> None:
    """find materializes its whole result in server memory when it opens."""
    db.docs.insert_many([{"_id": i} for i in range(1000)])
    cursor = db.docs.find({}, batch_size=10)
    next(cursor)
    db.docs.delete_many({})
    assert 1 + sum(1 for _ in cursor) == 1000


# -- 5. catalog, indexes, users ----------------------------------------------------------------


def test_list_collections_options(db: Database) -> None:
    db.create_collection("plain")
    db.create_collection("capped", capped=True, size=100_000, max=10)
    db.create_collection(
        "valid", validator={"$jsonSchema": {"required": ["x"]}}, validationLevel="moderate", validationAction="warn"
    )
    db.create_collection("coll", collation={"locale": "fr", "strength": 2})
    db.create_collection(
        "ts", timeseries={"timeField": "t", "metaField": "m", "granularity": "minutes"}, expireAfterSeconds=3600
    )
    db.create_collection("clustered", clusteredIndex={"key": {"_id": 1}, "unique": True})
    db.create_collection("images", changeStreamPreAndPostImages={"enabled": True})
    db.command("create", "view", viewOn="plain", pipeline=[{"$match": {"x": 1}}])
    listed = {c["name"]: c for c in db.list_collections()}
    assert {n: c["options"] for n, c in listed.items()} == {
        "plain": {},
        "capped": {"capped": True, "size": 100_000, "max": 10},
        "valid": {
            "validator": {"$jsonSchema": {"required": ["x"]}},
            "validationLevel": "moderate",
            "validationAction": "warn",
        },
        "coll": {"collation": {"locale": "fr", "strength": 2}},
        "ts": {
            "timeseries": {"timeField": "t", "metaField": "m", "granularity": "minutes"},
            "expireAfterSeconds": 3600,
        },
        "clustered": {"clusteredIndex": {"key": {"_id": 1}, "name": "_id_", "unique": True, "v": 2}},
        "images": {"changeStreamPreAndPostImages": {"enabled": True}},
        "view": {"viewOn": "plain", "pipeline": [{"$match": {"x": 1}}]},
    }
    assert listed["view"]["type"] == "view" and "idIndex" not in listed["view"]
    assert listed["view"]["info"]["readOnly"] is True and isinstance(listed["view"]["info"]["uuid"], Binary)
    assert all(
        c["type"] == "collection" and isinstance(c["info"]["uuid"], Binary) for n, c in listed.items() if n != "view"
    )
    assert "system.buckets.ts" not in listed  # a time series is one plain collection here
    # capped `max` is not enforced: all five documents stay (mongod keeps the newest two)
    db.create_collection("tiny", capped=True, size=100_000, max=2)
    db.tiny.insert_many([{"_id": i} for i in range(5)])
    assert db.tiny.count_documents({}) == 5


def test_list_indexes(db: Database) -> None:
    docs = db.docs
    docs.insert_one({"loc": {"type": "Point", "coordinates": [1, 2]}})
    docs.create_index("x", unique=True, name="ux")
    docs.create_index("t", expireAfterSeconds=60, name="ttl")
    docs.create_index("y", partialFilterExpression={"y": {"$gt": 5}}, name="partial")
    docs.create_index([("z", -1)], sparse=True, name="sparse")
    docs.create_index([("loc", "2dsphere")], name="geo")
    docs.create_index([("flat", "2d")], name="flat")
    docs.create_index("w", collation={"locale": "de"}, name="german")
    docs.create_index("h", hidden=True, name="hidden")
    docs.create_index([("wild.$**", 1)], name="wild")
    found = {i["name"]: {k: v for k, v in i.items() if k != "name"} for i in docs.list_indexes()}
    assert found == {
        "_id_": {"v": 2, "key": {"_id": 1}},
        "ux": {"v": 2, "key": {"x": 1}, "unique": True},
        "ttl": {"v": 2, "key": {"t": 1}, "expireAfterSeconds": 60},
        "partial": {"v": 2, "key": {"y": 1}, "partialFilterExpression": {"y": {"$gt": 5}}},
        "sparse": {"v": 2, "key": {"z": -1}, "sparse": True},
        "geo": {"v": 2, "key": {"loc": "2dsphere"}, "2dsphereIndexVersion": 3},
        "flat": {"v": 2, "key": {"flat": "2d"}},
        "german": {"v": 2, "key": {"w": 1}, "collation": {"locale": "de"}},
        "hidden": {"v": 2, "key": {"h": 1}, "hidden": True},
        "wild": {"v": 2, "key": {"wild.$**": 1}},
    }
    for kind in ("text", "hashed"):
        code, name, message = error_of(lambda kind=kind: docs.create_index([("k", kind)]))
        assert (code, name) == (67, "CannotCreateIndex")
        assert message == f"{kind} indexes are not supported by SecantusDB"


def test_list_databases(client: MongoClient, db: Database) -> None:
    db.docs.insert_one({})
    client.admin.command("createUser", f"lister-{db.name}", pwd="pw", roles=[])
    try:
        listed = {d["name"]: d for d in client.admin.command("listDatabases")["databases"]}
        assert db.name in listed and listed[db.name]["empty"] is False
        assert listed["local"]["empty"] is True and listed["local"]["sizeOnDisk"] == 0
        assert "admin" not in listed  # even with a user on admin
        names = [d["name"] for d in client.admin.command("listDatabases", nameOnly=True)["databases"]]
        assert sorted(names) == sorted(listed)
    finally:
        client.admin.command("dropUser", f"lister-{db.name}")


def test_users_and_roles(client: MongoClient, db: Database) -> None:
    before = last_ts(client)
    db.command("createUser", "carol", pwd="pw", roles=[{"role": "readWrite", "db": db.name}], customData={"k": 1})
    db.command(
        "createRole",
        "reader",
        privileges=[{"resource": {"db": db.name, "collection": "c"}, "actions": ["find"]}],
        roles=[],
    )
    try:
        assert entries_after(client, before) == []  # users and roles are not in the oplog
        (carol,) = db.command("usersInfo", "carol", showCredentials=True, showCustomData=True)["users"]
        assert set(carol) == {"_id", "user", "db", "roles", "mechanisms", "credentials"}  # no customData
        scram = carol["credentials"]["SCRAM-SHA-256"]
        assert set(scram) == {"iterationCount", "salt", "storedKey", "serverKey"} and scram["iterationCount"] == 15000
        assert client.admin.command("usersInfo", {"forAllDBs": True})["users"] == []  # mongod: every user
        stored = client.admin.system.users.find_one({"_id": f"{db.name}.carol"})
        assert stored is not None and "credentials" not in stored  # a read-only view without hashes
        code, _, message = error_of(lambda: client.admin.system.users.insert_one(dict(carol, _id="x.y")))
        assert code == 13 and "synthetic read-only view" in message
        assert error_of(lambda: client.admin.command("_mergeAuthzCollections", 1))[0] == 59
        (role,) = db.command("rolesInfo", "reader", showPrivileges=True)["roles"]
        assert role["privileges"] == [{"resource": {"db": db.name, "collection": "c"}, "actions": ["find"]}]
        assert list(client.admin.system.roles.find()) == []  # mongod keeps roles there
        builtin = client.admin.command(
            "rolesInfo", [{"role": r, "db": "admin"} for r in ("backup", "restore")], showBuiltinRoles=True
        )
        assert [(r["role"], r["isBuiltin"]) for r in builtin["roles"]] == [("backup", True), ("restore", True)]
    finally:
        db.command("dropAllUsersFromDatabase")
        db.command("dropAllRolesFromDatabase")


def test_backup_and_restore_roles(mongo_with_password: MongoProcess) -> None:
    server = mongo_with_password
    with server.client() as admin:
        admin.admin.command("createUser", "probe-backup", pwd="b-pw", roles=["backup"])
        admin.admin.command("createUser", "probe-restore", pwd="r-pw", roles=["restore"])
        admin.roles_probe.docs.insert_one({"_id": 1})
    try:
        with server.client(username="probe-backup", password="b-pw") as backup:
            assert backup.roles_probe.docs.find_one() == {"_id": 1}
            assert backup.local.oplog.rs.find_one() is not None
            assert "roles_probe" in backup.list_database_names()
            assert backup.admin.system.users.find_one({"user": "probe-backup"}) is not None
            assert error_of(lambda: backup.admin.command("usersInfo", 1, showCredentials=True))[0] == 13  # viewUser
            assert error_of(lambda: backup.roles_probe.docs.insert_one({"_id": 2}))[0] == 13
        with server.client(username="probe-restore", password="r-pw") as restore:
            restore.roles_probe.docs.insert_one({"_id": 3})
            restore.roles_probe.docs.create_index("x")
            restore.roles_probe.command("createUser", "restored", pwd="p", roles=[])
            restore.drop_database("roles_probe")
    finally:
        with server.client() as admin:
            for user in ("probe-backup", "probe-restore"):
                admin.admin.command("dropUser", user)
            admin.drop_database("roles_probe")


# -- 6. raw BSON -------------------------------------------------------------------------------


def test_raw_bson_batches_and_validation_bypass(client: MongoClient, db: Database) -> None:
    db.docs.insert_many([{"_id": i, "v": "x" * i} for i in range(3)])
    raw = client.get_database(db.name, codec_options=CodecOptions(document_class=RawBSONDocument)).docs
    got = list(raw.find().sort("_id", 1))
    assert all(isinstance(d, RawBSONDocument) for d in got)
    assert [d.raw for d in got] == [encode({"_id": i, "v": "x" * i}) for i in range(3)]
    db.copy.insert_many([RawBSONDocument(d.raw) for d in got])
    assert [d.raw for d in raw.database.copy.find().sort("_id", 1)] == [d.raw for d in got]
    db.create_collection("strict", validator={"x": {"$type": "int"}})
    with pytest.raises(WriteError) as refused:
        db.strict.insert_one({"x": "s"})
    assert refused.value.code == 121  # DocumentValidationFailure, with mongod's errInfo
    assert set(refused.value.details["errInfo"]) == {"failingDocumentId", "details"}
    db.strict.insert_many([RawBSONDocument(encode({"_id": 1, "x": "s"}))], bypass_document_validation=True)
    assert db.strict.find_one({"_id": 1}) == {"_id": 1, "x": "s"}


# -- 7. TTL ------------------------------------------------------------------------------------


def test_ttl_expiry_is_logged_as_deletes(client: MongoClient, db: Database) -> None:
    """Expired documents go at the next sweep (every 60 s, fixed: secantusd has no flag for it) or
    on secantusAdmin.pruneTtl; each removal is an ordinary 'd' entry in the oplog."""
    now = dt.datetime.now(dt.UTC)
    db.ttl.create_index("at", expireAfterSeconds=0)
    db.ttl.insert_many(
        [{"_id": 1, "at": now - dt.timedelta(hours=1)}, {"_id": 2, "at": now + dt.timedelta(hours=1)}, {"_id": 3}]
    )
    before = last_ts(client)
    client.admin.command("secantusAdmin.pruneTtl")
    assert sorted(d["_id"] for d in db.ttl.find()) == [2, 3]
    mine = [shape(e) for e in entries_after(client, before) if e["ns"] == f"{db.name}.ttl"]
    assert mine == [{"op": "d", "ns": f"{db.name}.ttl", "o": {"_id": 1}, "o2": {"_id": 1}}]


# -- 8. commands a backup tool might reach for -------------------------------------------------


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ({"applyOps": []}, (59, "CommandNotFound")),
        ({"fsync": 1, "lock": True}, (9, "FailedToParse")),
        ({"fsyncUnlock": 1}, (59, "CommandNotFound")),
        ({"dbHash": 1}, (59, "CommandNotFound")),
        ({"convertToCapped": "docs", "size": 4096}, (59, "CommandNotFound")),
        ({"listCommands": 1}, (59, "CommandNotFound")),
        ({"aggregate": 1, "pipeline": [{"$backupCursor": {}}], "cursor": {}}, (40324, "Location40324")),
        ({"aggregate": 1, "pipeline": [{"$backupCursorExtend": {}}], "cursor": {}}, (40324, "Location40324")),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_missing_commands(client: MongoClient, command: dict, expected: tuple[int, str]) -> None:
    code, name, _ = error_of(lambda: client.admin.command(command))
    assert (code, name) == expected


def test_fsync_without_lock_works(client: MongoClient) -> None:
    assert client.admin.command("fsync")["ok"] == 1.0


# -- 9. update pipelines and view changes (oplog replay builds on them) --------------------------


def test_coll_mod_of_a_view_is_ignored(client: MongoClient, db: Database) -> None:
    """Accepted, changes nothing, logged without the new definition (mongod changes the view and
    logs an update of <db>.system.views): replay re-creates a changed view instead."""
    db.command("create", "view", viewOn="docs", pipeline=[{"$match": {"a": 1}}])
    assert logged(client, lambda: db.command("collMod", "view", viewOn="docs", pipeline=[])) == [
        {
            "op": "c",
            "ns": f"{db.name}.$cmd",
            "o": {"collMod": "view"},
            "o2": {
                "collectionOptions_old": {
                    "uuid": uuid_of(db, "view"),
                    "viewOn": "docs",
                    "viewPipeline": [{"$match": {"a": 1}}],
                }
            },
        }
    ]
    (info,) = db.command("listCollections", filter={"name": "view"})["cursor"]["firstBatch"]
    assert info["options"] == {"viewOn": "docs", "pipeline": [{"$match": {"a": 1}}]}


def test_missing_values_in_expressions(db: Database) -> None:
    """mongod: a missing value has $type "missing" however it is read. SecantusDB differs for
    three readings; a field path of the document itself ("$x") and the key list ($objectToArray)
    are exact. And it has no $unsetField (mongod 5.0+ has)."""
    db.docs.insert_one({"_id": 1, "arr": [1]})
    get_field = {"$getField": {"field": {"$literal": "nope"}, "input": "$$ROOT"}}
    projection = {
        "path": {"$type": "$nope"},
        "get_field": {"$type": get_field},
        "variable_path": {"$let": {"vars": {"d": "$$ROOT"}, "in": {"$type": "$$d.nope"}}},
        "past_the_end": {"$type": {"$arrayElemAt": ["$arr", 5]}},
        "keys": {"$map": {"input": {"$objectToArray": "$$ROOT"}, "in": "$$this.k"}},
    }
    (row,) = db.docs.aggregate([{"$project": projection}])
    assert row == {
        "_id": 1,
        "path": "missing",
        "get_field": "object",  # mongod: "missing"
        "variable_path": "null",  # mongod: "missing"
        "past_the_end": "object",  # mongod: "missing"
        "keys": ["_id", "arr"],
    }
    code, _, message = error_of(
        lambda: db.docs.update_one({"_id": 1}, [{"$replaceWith": {"$unsetField": {"field": "arr", "input": "$$ROOT"}}}])
    )
    assert code == 168 and "$unsetField" in message
