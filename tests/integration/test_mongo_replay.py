"""Oplog replay (vaultflow/engines/mongodb/replay.py) against SecantusDB: each test builds the same
starting state in a source and a copy database, changes the source while its oplog entries are
captured (local.oplog.rs by ts range, filtered by namespace), replays them onto the copy under its
own name (`rename`), and judges the copy with the independent oracle (tests/corpus/oracle.py:
documents by _id as canonical Extended JSON, field order and types included, options, indexes)."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable, Iterator

import pytest
from bson import Binary, Decimal128, Int64, ObjectId, Regex, Timestamp
from pymongo import IndexModel

from tests.corpus.oracle import mongo_differences, mongo_state
from vaultflow.engines.mongodb.consistency import ts_text
from vaultflow.engines.mongodb.replay import ReplayError, apply_entries, until
from vaultflow.engines.mongodb.replay_units import UnknownCommandError
from vaultflow.testing.mongo_server import running_mongo, scratch_database

START = [
    {
        "_id": 1,
        "x": 1,
        "n": 5,
        "f": 2.0,
        "sub": {"k": 1, "deep": {"z": [1, {"q": 1}]}},
        "arr": [1, 2, 3],
        "objs": [{"v": 1}, {"v": 2}, {"v": 3}],
        "num": {"0": "a"},
    },
    {"_id": 2, "x": 2, "n": 6, "arr": [], "objs": []},
    {"_id": "three", "x": None, "arr": [[1, 2], [3]], "sub": {}},
]


def newest_ts(client) -> Timestamp:
    return client.local["oplog.rs"].find_one({}, {"ts": 1}, sort=[("$natural", -1)])["ts"]


def captured(client, database: str, after: Timestamp) -> list[dict]:
    """The oplog entries after `after` on `database`'s namespaces, in oplog order."""
    query = {"ts": {"$gt": after}, "ns": {"$regex": "^" + re.escape(database) + r"\."}}
    return list(client.local["oplog.rs"].find(query).sort("$natural", 1))


def assert_same(client, source: str, copy: str) -> None:
    problems = mongo_differences(mongo_state(client, source), mongo_state(client, copy))
    assert not problems, "oracle: the replayed copy differs:\n" + "\n".join(problems)


@pytest.fixture
def copy_db(mongo_client) -> Iterator[str]:
    with scratch_database(mongo_client, "copy") as name:
        yield name


def start_state(db) -> None:
    db.docs.insert_many([dict(d) for d in START])
    db.docs.create_index("x")


def replay_changes(client, source: str, copy: str, change: Callable, setup: Callable = start_state, **replay):
    """setup() both databases, change() the source, replay its entries onto the copy, judge it."""
    setup(client[source])
    setup(client[copy])
    start = newest_ts(client)
    change(client[source])
    entries = captured(client, source, start)
    assert entries, "the change wrote no oplog entry"
    report = apply_entries(client, entries, rename={f"{source}.*": f"{copy}.*"}, **replay)
    assert_same(client, source, copy)
    return entries, report


def pipeline_set_field(name: str, value) -> list[dict]:
    return [{"$replaceWith": {"$setField": {"field": {"$literal": name}, "input": "$$ROOT", "value": value}}}]


DOCUMENT_CHANGES: dict[str, Callable] = {
    "insert_types": lambda db: db.docs.insert_many(
        [
            {
                "_id": ObjectId(),
                "i32": 7,
                "i64": Int64(7),
                "dec": Decimal128("1.10"),
                "d": datetime.datetime(2026, 1, 2, 3, 4, 5, 678000),
                "bin": Binary(b"\x00\x01", 0),
                "uuid": Binary(b"0123456789abcdef", 4),
                "re": Regex("^a", "i"),
                "ts": Timestamp(5, 6),
                "nested": [{"a": [None, True, -0.0]}],
            },
            {"_id": Decimal128("2.5"), "k": "decimal id"},
            {"_id": {"compound": 1, "b": [1]}, "k": "document id"},
        ]
    ),
    "set_nested": lambda db: db.docs.update_one({"_id": 1}, {"$set": {"sub.k": 9, "sub.new.deep": 1, "f": 3.5}}),
    "set_whole_subdocument": lambda db: db.docs.update_one({"_id": 1}, {"$set": {"sub": {"k": 2, "other": [1]}}}),
    "set_new_fields_in_spec_order": lambda db: db.docs.update_one({"_id": 2}, {"$set": {"z": 1, "b": 2, "m": 3}}),
    "unset": lambda db: db.docs.update_one({"_id": 1}, {"$unset": {"x": "", "sub.k": "", "missing": ""}}),
    "inc_mul_min_max": lambda db: db.docs.update_one(
        {"_id": 1}, {"$inc": {"n": 2, "sub.counter": 1}, "$mul": {"f": 1.5}, "$min": {"x": 0}, "$max": {"y": 4}}
    ),
    "push": lambda db: db.docs.update_many({}, {"$push": {"arr": 9}}),
    "push_each_sort_slice": lambda db: db.docs.update_one(
        {"_id": 1}, {"$push": {"arr": {"$each": [0, 7], "$sort": -1, "$slice": 3}}}
    ),
    "pop_last_and_first": lambda db: (
        db.docs.update_one({"_id": 1}, {"$pop": {"arr": 1}}),
        db.docs.update_one({"_id": 1}, {"$pop": {"objs": -1}}),
    ),
    "pull_and_pull_all": lambda db: db.docs.update_one(
        {"_id": 1}, {"$pull": {"objs": {"v": 2}}, "$pullAll": {"arr": [1, 3]}}
    ),
    "add_to_set": lambda db: db.docs.update_one({"_id": 1}, {"$addToSet": {"arr": {"$each": [2, 8]}}}),
    "array_elements": lambda db: db.docs.update_one(
        {"_id": 1}, {"$set": {"arr.1": 20, "objs.0.v": 10, "sub.deep.z.1.q": 2, "arr.5": "past the end"}}
    ),
    "positional_operators": lambda db: (
        db.docs.update_one({"_id": 1, "objs.v": 2}, {"$set": {"objs.$.v": 20}}),
        db.docs.update_one({"_id": 1}, {"$inc": {"objs.$[].v": 1}}),
        db.docs.update_one({"_id": 1}, {"$set": {"objs.$[e].w": True}}, array_filters=[{"e.v": {"$gt": 2}}]),
    ),
    "nested_arrays": lambda db: db.docs.update_one({"_id": "three"}, {"$set": {"arr.0.1": 5}, "$push": {"arr.1": 4}}),
    "rename_field": lambda db: db.docs.update_one({"_id": 1}, {"$rename": {"x": "xx", "sub.k": "kk"}}),
    "numeric_field_name": lambda db: db.docs.update_one({"_id": 1}, {"$set": {"num.0": "zero", "num.1": "one"}}),
    "replacement": lambda db: db.docs.replace_one({"_id": 1}, {"only": "this", "arr": [1]}),
    "pipeline_small_change": lambda db: db.docs.update_one({"_id": 1}, [{"$set": {"y": {"$add": ["$n", 1]}}}]),
    "pipeline_moves_a_field": lambda db: db.docs.update_one({"_id": 1}, [{"$unset": "x"}, {"$set": {"x": "last"}}]),
    "pipeline_truncates_array": lambda db: (  # logged as truncatedArrays: [{field: "arr", newSize: 45}]
        db.docs.update_one({"_id": 1}, {"$set": {"arr": list(range(50))}}),
        db.docs.update_one({"_id": 1}, [{"$set": {"arr": {"$slice": ["$arr", 45]}}}]),
    ),
    "dollar_field_name": lambda db: db.docs.update_one({"_id": 2}, pipeline_set_field("$price", 5)),
    "upsert": lambda db: db.docs.update_one({"_id": 99}, {"$set": {"u": 1}}, upsert=True),
    "update_many_and_no_op": lambda db: (
        db.docs.update_many({}, {"$inc": {"n": 1}}),
        db.docs.update_one({"_id": 2}, {"$set": {"x": 2}}),  # changes nothing: no entry
    ),
    "deletes": lambda db: (db.docs.delete_one({"_id": 1}), db.docs.delete_many({"x": {"$gte": 2}})),
    "insert_update_delete_same_document": lambda db: (
        db.docs.insert_one({"_id": 7, "v": 1}),
        db.docs.update_one({"_id": 7}, {"$set": {"v": 2}}),
        db.docs.delete_one({"_id": 7}),
        db.docs.insert_one({"_id": 7, "v": 3}),
    ),
}


@pytest.mark.parametrize("change", list(DOCUMENT_CHANGES), ids=list(DOCUMENT_CHANGES))
def test_document_changes_replay_exactly(mongo_client, fresh_mongo_db, copy_db, change):
    entries, report = replay_changes(mongo_client, fresh_mongo_db, copy_db, DOCUMENT_CHANGES[change])
    assert report.entries == len(entries)
    assert sum(report.ops.values()) == len(entries)
    assert report.first_ts == entries[0]["ts"] and report.last_ts == entries[-1]["ts"]


def test_collections_created_with_options_and_dropped(mongo_client, fresh_mongo_db, copy_db):
    def change(db):
        db.create_collection("capped", capped=True, size=1 << 16, max=100)
        db.capped.insert_many([{"n": n} for n in range(3)])
        db.create_collection("strict", validator={"$jsonSchema": {"required": ["k"]}}, validationAction="error")
        db.strict.insert_one({"k": 1})
        db.create_collection("gone")
        db.gone.insert_one({"a": 1})
        db.drop_collection("gone")
        db.implicit.insert_one({"created": "by the insert"})
        db.drop_collection("docs")

    entries, report = replay_changes(mongo_client, fresh_mongo_db, copy_db, change)
    assert report.commands["create"] == 3 and report.commands["drop"] == 2
    assert set(mongo_client[copy_db].list_collection_names()) == {"capped", "strict", "implicit"}


def test_indexes_created_dropped_and_modified(mongo_client, fresh_mongo_db, copy_db):
    def change(db):
        db.docs.create_indexes(
            [
                IndexModel("n", unique=True, name="n_unique"),
                IndexModel([("x", 1), ("f", -1)], partialFilterExpression={"f": {"$gt": 1}}),
                IndexModel("expires", expireAfterSeconds=3600),
                IndexModel("sparse_field", sparse=True),
            ]
        )
        db.docs.drop_index("x_1")
        db.command("collMod", "docs", index={"keyPattern": {"expires": 1}, "expireAfterSeconds": 60})
        db.command("collMod", "docs", validator={"n": {"$type": "int"}}, validationLevel="moderate")
        db.fresh.create_index("a")  # on a new collection: a create entry first

    entries, report = replay_changes(mongo_client, fresh_mongo_db, copy_db, change)
    assert report.commands["createIndexes"] == 5 and report.commands["dropIndexes"] == 1
    assert report.commands["collMod"] == 2


def test_rename_collections_with_and_without_drop_target(mongo_client, fresh_mongo_db, copy_db):
    def setup(db):
        start_state(db)
        db.other.insert_many([{"_id": i} for i in range(3)])

    def change(db):
        db.docs.rename("renamed")
        db.renamed.insert_one({"_id": "after the rename"})
        db.other.rename("renamed", dropTarget=True)
        db.renamed.rename("dotted.name")

    entries, report = replay_changes(mongo_client, fresh_mongo_db, copy_db, change, setup=setup)
    assert report.commands["renameCollection"] == 3
    assert mongo_client[copy_db]["dotted.name"].count_documents({}) == 3


def test_views_created_changed_and_dropped(mongo_client, fresh_mongo_db, copy_db):
    def change(db):
        db.command({"create": "big", "viewOn": "docs", "pipeline": [{"$match": {"n": {"$gt": 5}}}]})
        db.command({"create": "small", "viewOn": "docs", "pipeline": [{"$match": {"n": {"$lt": 5}}}]})
        db.command({"collMod": "big", "viewOn": "docs", "pipeline": [{"$project": {"n": 1}}]})
        db.drop_collection("small")

    entries, report = replay_changes(mongo_client, fresh_mongo_db, copy_db, change)
    views = {c["name"]: c for c in mongo_client[copy_db].list_collections() if c["type"] == "view"}
    assert set(views) == {"big"} and views["big"]["options"]["viewOn"] == "docs"
    # SecantusDB accepts collMod of a view, ignores viewOn/pipeline and logs {collMod: "big"} alone
    # (mongod logs an update of <db>.system.views: test_mongo_replay_mongod_shapes.py replays one).
    assert [e["o"] for e in entries if "collMod" in e["o"]] == [{"collMod": "big"}]
    assert views["big"]["options"]["pipeline"] == [{"$match": {"n": {"$gt": 5}}}]
    assert report.commands == {"create": 2, "collMod": 1, "drop": 1}


def test_drop_database_and_recreate(mongo_client, fresh_mongo_db, copy_db):
    def change(db):
        db.more.insert_one({"a": 1})
        db.client.drop_database(db.name)
        db.after.insert_one({"_id": "written after dropDatabase"})

    entries, report = replay_changes(mongo_client, fresh_mongo_db, copy_db, change)
    assert report.commands["dropDatabase"] == 1
    assert mongo_client[copy_db].list_collection_names() == ["after"]


def test_multi_document_transaction_is_one_unit(mongo_client, fresh_mongo_db, copy_db):
    def change(db):
        with db.client.start_session() as session, session.start_transaction():
            db.docs.insert_one({"_id": "txn"}, session=session)
            db.docs.update_one({"_id": 1}, {"$inc": {"n": 100}}, session=session)
            db.docs.delete_one({"_id": 2}, session=session)
            db.ledger.insert_one({"_id": 1, "moved": 100}, session=session)
        db.docs.insert_one({"_id": "after"})

    entries, report = replay_changes(mongo_client, fresh_mongo_db, copy_db, change)
    in_txn = [e for e in entries if "txnNumber" in e]
    assert len(in_txn) == 4 and len({e["ts"] for e in in_txn}) == 1  # SecantusDB: one ts, several entries
    assert report.transactions == 1 and report.ops == {"insert": 3, "update": 1, "delete": 1}


def workload(db) -> None:
    db.docs.insert_many([{"_id": 10 + i, "v": i, "tags": []} for i in range(20)])
    db.docs.update_many({"v": {"$lt": 10}}, {"$push": {"tags": "low"}, "$inc": {"v": 100}})
    db.docs.update_one({"_id": 1}, {"$pop": {"arr": 1}, "$set": {"sub.k": "changed"}})
    db.docs.replace_one({"_id": 2}, {"replaced": True})
    db.docs.delete_many({"v": {"$gte": 115}})
    db.docs.create_index([("v", -1)], name="v_desc")
    db.docs.drop_index("x_1")
    db.extra.insert_one({"_id": 1})
    db.drop_collection("extra")


def test_replaying_the_same_entries_twice_changes_nothing(mongo_client, fresh_mongo_db, copy_db):
    entries, first = replay_changes(mongo_client, fresh_mongo_db, copy_db, workload)
    second = apply_entries(mongo_client, entries, rename={f"{fresh_mongo_db}.*": f"{copy_db}.*"})
    assert second.ops == first.ops
    assert_same(mongo_client, fresh_mongo_db, copy_db)


def test_stop_at_a_timestamp_or_a_wall_time(mongo_client, fresh_mongo_db, copy_db):
    source = mongo_client[fresh_mongo_db]
    for db in (source, mongo_client[copy_db]):
        start_state(db)
    start = newest_ts(mongo_client)
    source.docs.insert_many([{"_id": 100 + i} for i in range(5)])
    source.docs.update_one({"_id": 1}, {"$set": {"phase": 1}})
    middle, middle_state = newest_ts(mongo_client), mongo_state(mongo_client, fresh_mongo_db)
    time.sleep(0.01)  # the next entries get a later wall time
    source.docs.delete_many({"_id": {"$gte": 100}})
    source.drop_collection("docs")
    entries = captured(mongo_client, fresh_mongo_db, start)

    rename = {f"{fresh_mongo_db}.*": f"{copy_db}.*"}
    report = apply_entries(mongo_client, until(entries, until_ts=middle), rename=rename)
    assert report.last_ts == middle and report.entries == 6
    assert not mongo_differences(middle_state, mongo_state(mongo_client, copy_db))

    middle_wall = next(e["wall"] for e in entries if e["ts"] == middle)
    with scratch_database(mongo_client, "copy") as by_time:
        start_state(mongo_client[by_time])
        apply_entries(
            mongo_client, until(entries, until_time=middle_wall), rename={f"{fresh_mongo_db}.*": f"{by_time}.*"}
        )
        assert not mongo_differences(middle_state, mongo_state(mongo_client, by_time))


def test_unknown_command_stops_the_replay_naming_it(mongo_client, fresh_mongo_db, copy_db):
    source = mongo_client[fresh_mongo_db]
    start_state(source)
    start_state(mongo_client[copy_db])
    start = newest_ts(mongo_client)
    source.docs.insert_one({"_id": "before"})
    source.docs.insert_one({"_id": "after"})
    before, after = captured(mongo_client, fresh_mongo_db, start)
    unknown = {
        "op": "c",
        "ns": f"{fresh_mongo_db}.$cmd",
        "ts": Timestamp(before["ts"].time, before["ts"].inc + 1),
        "o": {"frobnicate": "docs", "level": 3},
    }

    with pytest.raises(UnknownCommandError) as raised:
        apply_entries(mongo_client, [before, unknown, after], rename={f"{fresh_mongo_db}.*": f"{copy_db}.*"})
    message = str(raised.value)
    assert ts_text(unknown["ts"]) in message and f"{fresh_mongo_db}.$cmd" in message and "'frobnicate'" in message
    ids = {d["_id"] for d in mongo_client[copy_db].docs.find({}, {"_id": 1})}
    assert "before" in ids and "after" not in ids  # applied up to the unknown entry, nothing after it


def test_namespace_filter_and_rename_to_another_collection(mongo_client, fresh_mongo_db, copy_db):
    source = mongo_client[fresh_mongo_db]
    start = newest_ts(mongo_client)
    source.keep.insert_many([{"_id": i} for i in range(3)])
    source.skip.insert_many([{"_id": i} for i in range(4)])
    source.create_collection("skipped_too")
    entries = captured(mongo_client, fresh_mongo_db, start)

    report = apply_entries(
        mongo_client,
        entries,
        namespaces=[f"{fresh_mongo_db}.keep"],
        rename={f"{fresh_mongo_db}.keep": f"{copy_db}.kept"},
    )
    assert mongo_client[copy_db].list_collection_names() == ["kept"]
    assert mongo_client[copy_db].kept.count_documents({}) == 3
    assert report.skipped_filtered == 5 and report.ops == {"insert": 3}


def test_dotted_field_names(mongo_client, fresh_mongo_db, copy_db):
    """SecantusDB writes a field named "a.b" as the path "a.b" (docs/mongodb-secantus.md). Replay
    reads paths as nested fields; a document that holds a dotted name along the path makes the
    replay stop (detected after the write); a dotted name created where none existed is replayed
    as nested fields, which the oracle sees: the one case that stays undetected."""

    def setup(db):
        db.docs.insert_one({"_id": 1, "a": {"b": 1}})
        db.docs.update_one({"_id": 1}, pipeline_set_field("a.b", "literal"))  # {a: {b: 1}, "a.b": "literal"}

    def change(db):
        db.docs.update_one({"_id": 1}, {"$set": {"a.b": 2}})

    with pytest.raises(ReplayError, match=r"ambiguous: the document has a field named 'a\.b'"):
        replay_changes(mongo_client, fresh_mongo_db, copy_db, change, setup=setup)

    mongo_client.drop_database(fresh_mongo_db)
    mongo_client.drop_database(copy_db)
    source = mongo_client[fresh_mongo_db]
    padded = {"_id": 1, "pad": "x" * 100}  # so that the pipeline update is logged as a diff, not a replacement
    source.docs.insert_one(dict(padded))
    mongo_client[copy_db].docs.insert_one(dict(padded))
    start = newest_ts(mongo_client)
    source.docs.update_one({"_id": 1}, pipeline_set_field("x.y", 7))
    entries = captured(mongo_client, fresh_mongo_db, start)
    assert (
        entries[0]["o"]["diff"]["updatedFields"] == {"x.y": 7} and "disambiguatedPaths" not in entries[0]["o"]["diff"]
    )
    apply_entries(mongo_client, entries, rename={f"{fresh_mongo_db}.*": f"{copy_db}.*"})
    assert source.docs.find_one() == {**padded, "x.y": 7}
    assert mongo_client[copy_db].docs.find_one() == {**padded, "x": {"y": 7}}


def test_many_inserts_and_updates_replay_exactly_across_write_batches():
    """2,500 inserts then 2,500 updates (more than two write batches each) replayed on a server of
    their own (the shared server's oplog stays small for the other tests). Replay rates are a
    benchmark figure, not asserted here."""
    count = 2_500
    with running_mongo("replay-rate") as server, server.client() as client:
        source = client.rate_source
        start = newest_ts(client)
        source.docs.insert_many([{"_id": i, "n": i, "pad": "x" * 100} for i in range(count)])
        middle = newest_ts(client)
        for i in range(count):
            source.docs.update_one({"_id": i}, {"$inc": {"n": 1}, "$set": {"tag": i % 7}})
        inserts = captured(client, "rate_source", start)
        updates = [e for e in inserts if e["ts"] > middle]
        inserts = [e for e in inserts if e["ts"] <= middle]
        assert len(inserts) == len(updates) == count

        rename = {"rate_source.*": "rate_copy.*"}
        first = apply_entries(client, inserts, rename=rename)
        second = apply_entries(client, updates, rename=rename)
        assert (first.ops["insert"], second.ops["update"]) == (count, count), (first, second)
        assert not mongo_differences(mongo_state(client, "rate_source"), mongo_state(client, "rate_copy"))
