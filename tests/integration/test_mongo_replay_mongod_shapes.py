"""Oplog entries in mongod's own shapes, which SecantusDB never writes, replayed onto SecantusDB:
`$v: 2` delta diffs, single-index createIndexes, commitIndexBuild, views as <db>.system.views
documents, transactions as applyOps entries (one, chained with partialTxn, prepared), classic
`$set`/`$unset` updates. The entries are written by hand after mongod's source.

The delta cases are mongod's own: pre-image, diff and expected post-image of each test in
mongodb/mongo src/mongo/db/update/document_diff_applier_test.cpp (the diffs written as
document_diff_serialization.cpp serializes them). As that test does, the result must be
byte-for-byte the expected document (field order and types), and applying the diff twice must
give the same bytes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import bson
import pytest
from bson import Binary, Int64, Timestamp

from tests.corpus.oracle import mongo_differences, mongo_state
from vaultflow.engines.mongodb.replay import ReplayError, apply_entries, until
from vaultflow.engines.mongodb.replay_delta import delta_pipeline, parse_diff
from vaultflow.testing.mongo_server import scratch_database

NULL_SUBOBJ = {"ssubObj": {"ssubObj": {"u": {"a": 1}}}}
ARRAY_OF_OBJECTS = {
    "d": {"dFieldA": False, "dFieldB": False},
    "u": {"uField": 999},
    "sarr": {"a": True, "s1": {"u": {"a": 1}}, "s2": {"u": {"b": 2}}, "s3": {"u": {"c": 3}}, "u4": {"x": 1}},
}
NON_CONTIGUOUS = {"sarr": {"a": True, "u1": 997, "u2": {"newVal": 998}, "u5": 999}}

# test name in document_diff_applier_test.cpp -> (diff, [(pre-image, expected post-image), ...])
APPLIER_CASES = {
    "DeleteSimple": (
        {"d": {"f1": False, "f2": False, "f3": False}},
        [({"f1": 1, "foo": 2, "f2": 3}, {"foo": 2})],
    ),
    "InsertSimple": (
        {"i": {"f1": 1, "newField": 2}},
        [({"f1": 1, "foo": 2, "f2": 3}, {"foo": 2, "f2": 3, "f1": 1, "newField": 2})],
    ),
    "UpdateSimple": (
        {"u": {"f1": 1, "newField": 2}},
        [({"f1": 0, "foo": 2, "f2": 3}, {"f1": 1, "foo": 2, "f2": 3, "newField": 2})],
    ),
    "SubObjDiffSimple": (
        {"sobj": {"d": {"dField": False}, "u": {"uField": 2}, "i": {"iField": 1}}},
        [
            (
                {"obj": {"dField": 0, "iField": 0, "uField": 0}, "otherField": 0},
                {"obj": {"uField": 2, "iField": 1}, "otherField": 0},
            )
        ],
    ),
    "SubArrayDiffSimpleWithAppend": (
        {"sarr": {"a": True, "u1": 1, "u4": 2}},
        [({"arr": [999, 999, 999, 999]}, {"arr": [999, 1, 999, 999, 2]})],
    ),
    "SubArrayDiffSimpleWithTruncate": (
        {"sarr": {"a": True, "l": 3, "u1": 1}},
        [({"arr": [999, 999, 999, 999]}, {"arr": [999, 1, 999]})],
    ),
    "SubArrayDiffSimpleWithNullPadding": (
        {"sarr": {"a": True, "u3": 1}},
        [({"arr": [0]}, {"arr": [0, None, None, 1]})],
    ),
    "NestedSubObjUpdateScalar": (
        NULL_SUBOBJ,
        [
            ({"subObj": {"subObj": {"a": 0}}}, {"subObj": {"subObj": {"a": 1}}}),
            ({"someOtherField": 1}, {"someOtherField": 1}),
            (
                {"dummyA": 1, "dummyB": 2, "subObj": "scalar!", "dummyC": 3, "dummyD": 4},
                {"dummyA": 1, "dummyB": 2, "subObj": None, "dummyC": 3, "dummyD": 4},
            ),
            (
                {
                    "dummyA": 1,
                    "dummyB": 2,
                    "subObj": {"subDummyA": 1, "subObj": "scalar!", "subDummyB": 2},
                    "dummyC": 3,
                },
                {"dummyA": 1, "dummyB": 2, "subObj": {"subDummyA": 1, "subObj": None, "subDummyB": 2}, "dummyC": 3},
            ),
        ],
    ),
    "UpdateArrayOfObjectsSubDiff": (
        ARRAY_OF_OBJECTS,
        [
            (
                {"uField": 1, "dFieldA": 1, "arr": [None, {"a": 0}, {"b": 0}, {"c": 0}], "dFieldB": 1},
                {"uField": 999, "arr": [None, {"a": 1}, {"b": 2}, {"c": 3}, {"x": 1}]},
            ),
            (
                {"uField": 1, "dFieldA": 1, "arr": [{"a": 0}, {"b": 0}, {"c": 0}, {}], "dFieldB": 1},
                {"uField": 999, "arr": [{"a": 0}, {"b": 0, "a": 1}, {"c": 0, "b": 2}, {"c": 3}, {"x": 1}]},
            ),
            (
                {"arr": [None, {"a": 1}, {"b": 2}, {"c": 3}, {"x": 1}], "uField": 999},
                {"arr": [None, {"a": 1}, {"b": 2}, {"c": 3}, {"x": 1}], "uField": 999},
            ),
            ({"arr": [0, 0, 0, 0, {"x": 2}], "uField": 1}, {"arr": [0, None, None, None, {"x": 1}], "uField": 999}),
            ({"arr": [], "uField": 1}, {"arr": [None, None, None, None, {"x": 1}], "uField": 999}),
            (
                {"arr": [0, {}, {}, {}, 4, 5, 6], "uField": 1},
                {"arr": [0, {"a": 1}, {"b": 2}, {"c": 3}, {"x": 1}, 5, 6], "uField": 999},
            ),
            ({"dummyA": 1, "arr": {"foo": 1}, "dummyB": 1}, {"dummyA": 1, "arr": None, "dummyB": 1, "uField": 999}),
            ({"dummyA": 1, "arr": 1, "dummyB": 1}, {"dummyA": 1, "arr": None, "dummyB": 1, "uField": 999}),
        ],
    ),
    "UpdateArrayOfObjectsWithUpdateOperationNonContiguous": (
        NON_CONTIGUOUS,
        [
            ({"arr": [None, {}, {}, {}, {}, {}]}, {"arr": [None, 997, {"newVal": 998}, {}, {}, 999]}),
            ({"arr": [{}, {}, {}, {}]}, {"arr": [{}, 997, {"newVal": 998}, {}, None, 999]}),
            ({"arr": [{}, 997, {"newVal": 998}, {}, {}, 999]}, {"arr": [{}, 997, {"newVal": 998}, {}, {}, 999]}),
            ({"arr": [0, 1, 2, 3, 4, 5, 6]}, {"arr": [0, 997, {"newVal": 998}, 3, 4, 999, 6]}),
            ({"arr": [0, 1, [], [], ["a", "b"], 5, 6]}, {"arr": [0, 997, {"newVal": 998}, [], ["a", "b"], 999, 6]}),
            ({"arr": [0, {"x": 1}, 2, 3, {"x": 1}, 5, 6]}, {"arr": [0, 997, {"newVal": 998}, 3, {"x": 1}, 999, 6]}),
            ({"arr": {"x": 1}}, {"arr": None}),
            ({"arr": "scalar!"}, {"arr": None}),
            ({"dummyA": 1, "arr": {"foo": 1}, "dummyB": 1}, {"dummyA": 1, "arr": None, "dummyB": 1}),
            ({"dummyA": 1, "arr": 1, "dummyB": 1}, {"dummyA": 1, "arr": None, "dummyB": 1}),
        ],
    ),
}
CASES = [(name, i) for name, (_, pairs) in APPLIER_CASES.items() for i in range(len(pairs))]


@pytest.fixture
def db(mongo_client, fresh_mongo_db):
    return mongo_client[fresh_mongo_db]


def entry(ns: str, n: int, op: str, o: dict, **fields) -> dict:
    return {"op": op, "ns": ns, "o": o, "ts": Timestamp(1_800_000_000, n), "wall": None, **fields}


def update(ns: str, n: int, diff: dict) -> dict:
    return entry(ns, n, "u", {"$v": 2, "diff": diff}, o2={"_id": 1})


def as_bytes(doc: dict) -> bytes:
    return bson.encode(doc)


@pytest.mark.parametrize(("case", "index"), CASES, ids=[f"{name}-{i}" for name, i in CASES])
def test_mongod_delta_diffs_apply_like_mongod(db, case, index):
    diff, pairs = APPLIER_CASES[case]
    pre, post = pairs[index]
    ns = f"{db.name}.docs"
    db.docs.insert_one({"_id": 1, **pre})

    apply_entries(db.client, [update(ns, 1, diff)])
    assert as_bytes(db.docs.find_one()) == as_bytes({"_id": 1, **post})
    apply_entries(db.client, [update(ns, 2, diff)])  # again: the same bytes (idempotent)
    assert as_bytes(db.docs.find_one()) == as_bytes({"_id": 1, **post})

    # The pipeline form alone (what runs where the $set form's guard fails) gives the same bytes.
    db.pipeline.insert_one({"_id": 1, **pre})
    db.pipeline.update_one({"_id": 1}, delta_pipeline(parse_diff(diff)))
    assert as_bytes(db.pipeline.find_one()) == as_bytes({"_id": 1, **post})


def test_odd_field_names_in_a_delta_diff(db):
    """Names with '.', a leading '$', digits or nothing are literal in a delta diff."""
    db.docs.insert_one({"_id": 1, "a.b": 1, "a": {"b": 2}, "$x": {"y": 1}, "": [1], "0": 0})
    diff = {"d": {"0": False}, "u": {"a.b": 10}, "i": {"$new": 1}, "s$x": {"u": {"y": 2}}, "s": {"a": True, "u1": 5}}
    apply_entries(db.client, [update(f"{db.name}.docs", 1, diff)])
    assert as_bytes(db.docs.find_one()) == as_bytes(
        {"_id": 1, "a.b": 10, "a": {"b": 2}, "$x": {"y": 2}, "": [1, 5], "$new": 1}
    )


def test_values_that_look_like_expressions_stay_values(db):
    db.docs.insert_one({"_id": 1, "x": 1, "arr": [{"k": 1}, 2, 3]})
    diff = {"i": {"s": "$arr"}, "sarr": {"a": True, "l": 2, "u1": "$x", "s0": {"u": {"k": {"$add": [1, 2]}}}}}
    apply_entries(db.client, [update(f"{db.name}.docs", 1, diff)])
    assert as_bytes(db.docs.find_one()) == as_bytes(
        {"_id": 1, "x": 1, "arr": [{"k": {"$add": [1, 2]}}, "$x"], "s": "$arr"}
    )


def test_classic_updates(db):
    ns = f"{db.name}.docs"
    db.docs.insert_one({"_id": 1, "a": 1, "b": {"c": 1}})
    apply_entries(
        db.client,
        [
            entry(ns, 1, "u", {"$v": 1, "$set": {"b.c": 2, "n": Int64(5)}}, o2={"_id": 1}),
            entry(ns, 2, "u", {"$unset": {"a": True}}, o2={"_id": 1}),
        ],
    )
    assert as_bytes(db.docs.find_one()) == as_bytes({"_id": 1, "b": {"c": 2}, "n": Int64(5)})
    with pytest.raises(ReplayError, match=r"1800000000:3 on .*\.docs: update cannot be applied exactly.*\$inc"):
        apply_entries(db.client, [entry(ns, 3, "u", {"$inc": {"n": 1}}, o2={"_id": 1})])


def test_mongod_index_entries(db):
    ns, cmd = f"{db.name}.docs", f"{db.name}.$cmd"
    build = Binary(uuid.uuid4().bytes, 4)
    entries = [
        entry(cmd, 1, "c", {"create": "docs", "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}),
        entry(ns, 2, "i", {"_id": 1, "a": 1, "b": 2}),
        entry(cmd, 3, "c", {"createIndexes": "docs", "v": 2, "key": {"a": 1}, "name": "a_1", "unique": True}),
        entry(
            cmd,
            4,
            "c",
            {"startIndexBuild": "docs", "indexBuildUUID": build, "indexes": [{"v": 2, "key": {"b": 1}, "name": "b_1"}]},
        ),
        entry(
            cmd,
            5,
            "c",
            {
                "commitIndexBuild": "docs",
                "indexBuildUUID": build,
                "indexes": [{"v": 2, "key": {"b": 1}, "name": "b_1"}],
            },
        ),
        entry(cmd, 6, "c", {"dropIndexes": "docs", "index": "a_1"}),
        entry(cmd, 7, "c", {"dropIndexes": "docs", "index": "a_1"}),  # already gone: nothing
    ]
    report = apply_entries(db.client, entries)
    assert sorted(i["name"] for i in db.docs.list_indexes()) == ["_id_", "b_1"]
    assert report.commands == {"create": 1, "createIndexes": 1, "commitIndexBuild": 1, "dropIndexes": 2}
    assert report.skipped_internal == 1  # startIndexBuild


def test_mongod_views_as_system_views_documents(db):
    views = f"{db.name}.system.views"
    view = f"{db.name}.big"
    entries = [
        entry(views, 1, "i", {"_id": view, "viewOn": "docs", "pipeline": [{"$match": {"n": {"$gt": 1}}}]}),
        entry(views, 2, "u", {"$v": 2, "diff": {"u": {"pipeline": [{"$match": {"n": 2}}]}}}, o2={"_id": view}),
        entry(views, 3, "i", {"_id": f"{db.name}.small", "viewOn": "docs", "pipeline": []}),
        entry(views, 4, "d", {"_id": f"{db.name}.small"}),
    ]
    with scratch_database(db.client, "copy") as copy:
        report = apply_entries(db.client, entries, rename={f"{db.name}.*": f"{copy}.*"})
        listed = {c["name"]: c["options"] for c in db.client[copy].list_collections()}
    assert listed == {"big": {"viewOn": "docs", "pipeline": [{"$match": {"n": 2}}]}}
    assert report.ops == {"insert": 2, "update": 1, "delete": 1}
    assert report.commands == {"create view": 2, "change view": 1, "drop view": 1}


def lsid() -> dict:
    return {"id": Binary(uuid.uuid4().bytes, 4), "uid": Binary(b"\x00" * 32, 0)}


NULL_PREV = {"ts": Timestamp(0, 0), "t": Int64(-1)}


def txn_entry(n: int, o: dict, session: dict, number: int, prev: Timestamp | None = None) -> dict:
    previous = {"ts": prev, "t": Int64(1)} if prev else NULL_PREV
    return entry("admin.$cmd", n, "c", o, lsid=session, txnNumber=Int64(number), prevOpTime=previous)


@pytest.fixture
def expected_and_copy(mongo_client) -> Iterator[tuple[str, str]]:
    with scratch_database(mongo_client, "expected") as expected, scratch_database(mongo_client, "copy") as copy:
        yield expected, copy


def test_mongod_transactions(mongo_client, expected_and_copy):
    """One applyOps, a partialTxn chain, a prepared transaction committed and one aborted, a
    user's applyOps with a nested one: applied at their commit, in oplog order."""
    expected, copy = expected_and_copy
    ns = f"{copy}.docs"
    a, b, c, d = lsid(), lsid(), lsid(), lsid()
    op_i = lambda n: {"op": "i", "ns": ns, "o": {"_id": n, "v": n}}  # noqa: E731
    entries = [
        txn_entry(1, {"applyOps": [op_i(1), op_i(2)]}, a, 1),
        txn_entry(2, {"applyOps": [op_i(3)], "partialTxn": True}, b, 1),
        txn_entry(3, {"applyOps": [op_i(4)], "prepare": True}, c, 7),
        txn_entry(
            4,
            {
                "applyOps": [{"op": "u", "ns": ns, "o": {"$v": 2, "diff": {"u": {"v": 30}}}, "o2": {"_id": 3}}],
                "count": 2,
            },
            b,
            1,
            Timestamp(1_800_000_000, 2),
        ),
        txn_entry(5, {"applyOps": [op_i(5)], "prepare": True}, d, 2),
        txn_entry(
            6,
            {"commitTransaction": 1, "commitTimestamp": Timestamp(1_800_000_000, 6)},
            c,
            7,
            Timestamp(1_800_000_000, 3),
        ),
        txn_entry(7, {"abortTransaction": 1}, d, 2, Timestamp(1_800_000_000, 5)),
        entry(
            "admin.$cmd",
            8,
            "c",
            {
                "applyOps": [
                    {"op": "d", "ns": ns, "o": {"_id": 1}},
                    {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": [op_i(6)]}},
                ]
            },
        ),
        entry("", 9, "n", {"msg": "periodic noop"}),
        entry("config.transactions", 10, "u", {"_id": a}, o2={"_id": a}),
    ]
    report = apply_entries(mongo_client, entries)
    mongo_client[expected].docs.insert_many(
        [{"_id": 2, "v": 2}, {"_id": 3, "v": 30}, {"_id": 4, "v": 4}, {"_id": 6, "v": 6}]
    )
    assert not mongo_differences(mongo_state(mongo_client, expected), mongo_state(mongo_client, copy))
    assert report.transactions == 4 and report.transactions_dropped == 1
    assert report.ops == {"insert": 5, "update": 1, "delete": 1, "noop": 1} and report.skipped_internal == 1

    # Cut between a chain's partial entry and its commit: none of that transaction is applied.
    mongo_client.drop_database(copy)
    cut = apply_entries(mongo_client, until(entries, until_ts=Timestamp(1_800_000_000, 3)))
    assert sorted(d["_id"] for d in mongo_client[copy].docs.find()) == [1, 2]
    assert cut.transactions_dropped == 2  # the chain (b) and the prepared one (c): not committed yet


def test_a_replay_that_starts_inside_a_transaction_refuses(mongo_client, fresh_mongo_db):
    ns = f"{fresh_mongo_db}.docs"
    session = lsid()
    chained = txn_entry(
        4, {"applyOps": [{"op": "i", "ns": ns, "o": {"_id": 1}}], "count": 2}, session, 1, Timestamp(1, 1)
    )
    with pytest.raises(ReplayError, match="precede the replayed range"):
        apply_entries(mongo_client, [chained])
    commit = txn_entry(6, {"commitTransaction": 1}, lsid(), 2, Timestamp(1, 1))
    with pytest.raises(ReplayError, match=r"1800000000:6 on admin\.\$cmd: commitTransaction"):
        apply_entries(mongo_client, [commit])


def test_users_and_time_series_buckets_are_refused(mongo_client):
    with pytest.raises(ReplayError, match="users, roles and time-series"):
        apply_entries(mongo_client, [entry("admin.system.users", 1, "i", {"_id": "app.someone", "user": "someone"})])
    with pytest.raises(ReplayError, match="unknown oplog operation 'x'"):
        apply_entries(mongo_client, [entry("app.docs", 1, "x", {})])
