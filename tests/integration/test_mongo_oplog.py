"""Reading oplog ranges from a real server (SecantusDB): the included databases only, bounds,
resuming inside a transaction whose entries share one ts, gaps after the oplog rolled over, and
the entries written as an oplog-only mongodump archive and read back.

The oracle is a plain query of local.oplog.rs decoded by pymongo and filtered here by namespace:
it shares nothing with vaultflow's raw reading and selection."""

from __future__ import annotations

import io
from collections.abc import Iterator

import bson
import pytest
from bson import Timestamp
from pymongo import MongoClient

from vaultflow.engines.mongodb.oplog import (
    OplogGap,
    read_oplog_archive,
    read_range,
    scan_range,
    write_oplog_archive,
)
from vaultflow.testing.mongo_server import MongoProcess, running_mongo


@pytest.fixture(scope="module")
def server() -> Iterator[MongoProcess]:
    with running_mongo("oplog-read") as process:
        yield process


@pytest.fixture(scope="module")
def client(server: MongoProcess) -> Iterator[MongoClient]:
    with server.client() as own:
        yield own


def newest_ts(client: MongoClient) -> Timestamp:
    return client.local.oplog.rs.find_one({}, sort=[("$natural", -1)])["ts"]


def oracle(client: MongoClient, after: Timestamp, until: Timestamp, databases: set[str]) -> list[bytes]:
    """Entries with after < ts <= until whose ns is in one of `databases`, as BSON, oplog order."""
    found = []
    for doc in client.local.oplog.rs.find({"ts": {"$gt": after, "$lte": until}}).sort("$natural", 1):
        if doc["ns"].split(".", 1)[0] in databases:
            found.append(doc)
    return [bson.encode(doc) for doc in found]


def decoded(entries) -> list[dict]:
    return [bson.decode(raw) for raw in entries]


def test_a_range_holds_the_included_databases_between_its_bounds(client: MongoClient):
    before = newest_ts(client)
    client.r_app.orders.insert_many([{"_id": i, "total": i} for i in range(20)])
    client.r_other.logs.insert_many([{"_id": i} for i in range(5)])
    client.r_app.orders.update_one({"_id": 3}, {"$set": {"total": 99}})
    client.r_app.create_collection("audit")
    middle = newest_ts(client)
    client.r_app.orders.delete_one({"_id": 4})
    client.r_third.x.insert_one({"_id": 1})
    until = newest_ts(client)
    client.r_app.orders.insert_one({"_id": "after until"})

    app = list(read_range(client, before, until, ["r_app"]))
    assert decoded(app) == decoded(oracle(client, before, until, {"r_app"}))
    assert [(e["op"], e["ns"]) for e in decoded(app)][-3:] == [
        ("u", "r_app.orders"),
        ("c", "r_app.$cmd"),
        ("d", "r_app.orders"),
    ]
    assert len(list(read_range(client, before, middle, ["r_app"]))) == 22, "20 inserts, update, create"
    every = decoded(read_range(client, before, until, None))
    assert every == decoded(oracle(client, before, until, {"r_app", "r_other", "r_third"}))
    assert list(read_range(client, until, until, None)) == [], "after < ts: nothing at the bound itself"
    assert all(bson.decode(raw)["ts"] > before for raw in app)


def test_resuming_inside_a_transaction_skips_exactly_the_entries_already_stored(client: MongoClient):
    client.r_txn.docs.insert_one({"_id": "seed"})
    client.r_txn_other.docs.insert_one({"_id": "seed"})
    before = newest_ts(client)
    with client.start_session() as session, session.start_transaction():
        client.r_txn.docs.insert_one({"_id": 1}, session=session)
        client.r_txn_other.docs.insert_one({"_id": 1}, session=session)  # interleaved, another db
        client.r_txn.docs.insert_one({"_id": 2}, session=session)
        client.r_txn.docs.update_one({"_id": 1}, {"$set": {"x": 1}}, session=session)
    shared = newest_ts(client)
    client.r_txn.docs.insert_one({"_id": 3})
    until = newest_ts(client)

    whole = decoded(read_range(client, before, until, ["r_txn"]))
    assert [e["ts"] for e in whole] == [shared] * 3 + [until], "the transaction's entries share one ts"
    resumed = decoded(read_range(client, shared, until, ["r_txn"], after_count=2))
    assert resumed == whole[2:], "the first two included entries at the shared ts were stored before"
    assert decoded(read_range(client, shared, until, ["r_txn"])) == whole[3:], "after_count 0: past the ts"
    both = decoded(read_range(client, shared, until, ["r_txn", "r_txn_other"], after_count=1))
    assert [e["ns"] for e in both] == ["r_txn_other.docs", "r_txn.docs", "r_txn.docs", "r_txn.docs"]


def test_scan_without_the_server_filter_marks_what_the_selection_excludes(client: MongoClient):
    before = newest_ts(client)
    client.r_scan.a.insert_one({"_id": 1})
    client.r_scan_not.a.insert_one({"_id": 1})
    until = newest_ts(client)
    scanned = list(scan_range(client, before, until, ["r_scan"], server_filter=False))
    assert [(e.facts.ns, e.included) for e in scanned] == [("r_scan.a", True), ("r_scan_not.a", False)]
    assert scanned[-1].ts == until


def test_a_read_past_a_rolled_over_oplog_is_a_named_gap():
    with running_mongo("oplog-roll", oplog_max_entries=100) as server, server.client() as client:
        client.roll.docs.insert_one({"_id": 0})
        start = newest_ts(client)
        assert list(read_range(client, start, None, ["roll"])) == []
        client.roll.docs.insert_many([{"_id": i} for i in range(1, 400)])
        client.admin.command("secantusAdmin.pruneOplog")  # SecantusDB's prune trigger (mongod: automatic)
        oldest = client.local.oplog.rs.find_one({}, sort=[("$natural", 1)])["ts"]
        assert oldest > start

        with pytest.raises(OplogGap) as caught:
            list(read_range(client, start, None, ["roll"]))
        gap = caught.value
        assert (gap.after, gap.oldest) == (start, oldest)
        text = str(gap)
        assert f"{start.time}:{start.inc}" in text and f"{oldest.time}:{oldest.inc}" in text
        assert "take a full backup" in text and "oplog" in text
        with pytest.raises(OplogGap):
            list(read_range(client, start, None, ["roll"], after_count=1))

        kept = list(read_range(client, None, None, ["roll"]))
        assert len(kept) == 100 and bson.decode(kept[0])["ts"] == oldest, "from the oldest entry kept"
        assert len(list(read_range(client, oldest, None, ["roll"]))) == 99, "a position still kept reads on"


def test_entries_written_as_an_oplog_archive_read_back_byte_for_byte(client: MongoClient):
    before = newest_ts(client)
    client.r_arch.docs.insert_many([{"_id": i, "text": "ünï" * i} for i in range(50)])
    entries = list(read_range(client, before, None, ["r_arch"]))
    out = io.BytesIO()
    write_oplog_archive(out, entries, str(client.admin.command("buildInfo")["version"]))
    assert list(read_oplog_archive(io.BytesIO(out.getvalue()))) == entries
