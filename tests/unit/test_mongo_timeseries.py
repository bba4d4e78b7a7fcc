"""mongod's bucketed timeseries collections, without a server (none of the test servers has them:
SecantusDB keeps a timeseries collection as a plain one, tests/integration/test_mongo_timeseries.py):
the refusal names the collection and the setting that leaves it out, and leaving it out leaves out
its buckets and their oplog entries too. The shapes are mongod's: listCollections answers as
mongo-tools' mongorestore/testdata/timeseries_tests prelude records them (mongodump 100.3.1,
MongoDB 5.0), and a bucket update copied from that directory's ts_dump_with_oplog/oplog.bson."""

from __future__ import annotations

import datetime

import bson
import pytest
from bson import Binary, ObjectId, Timestamp

from vaultflow.engines.mongodb.dump import select_collections
from vaultflow.engines.mongodb.incremental import excluded_entry
from vaultflow.engines.mongodb.restore import default_restore_name, name_taken
from vaultflow.engines.mongodb.settings import namespace_matches
from vaultflow.errors import ConfigError

DB = "timeseries_test"
SERIES = {"timeField": "ts", "metaField": "meta", "granularity": "seconds", "bucketMaxSpanSeconds": 3600}
LISTED = [
    {"name": "foo_ts", "type": "timeseries", "options": {"timeseries": SERIES}, "info": {"readOnly": False}},
    {
        "name": "system.buckets.foo_ts",
        "type": "collection",
        "options": {"validator": {"$jsonSchema": {}}, "clusteredIndex": True, "timeseries": SERIES},
        "info": {"readOnly": False, "uuid": Binary(bytes(16), 4)},
    },
    {"name": "system.views", "type": "collection", "options": {}, "info": {"readOnly": False}},
    {"name": "plain", "type": "collection", "options": {}, "info": {"readOnly": False}},
]
# ts_dump_with_oplog/oplog.bson's first entry (lsid, ui and the prevOpTime left out)
BUCKET_UPDATE = {
    "txnNumber": 1293,
    "op": "u",
    "ns": "timeseries_test.system.buckets.foo_ts",
    "o": {
        "$v": 2,
        "diff": {
            "scontrol": {
                "smax": {
                    "u": {
                        "_id": ObjectId("60c7df3b15caf5ee94e01f7e"),
                        "ts": datetime.datetime(2021, 6, 14, 22, 59, 7, 966000),
                    }
                }
            },
            "sdata": {
                "sts": {"i": {"129": datetime.datetime(2021, 6, 14, 22, 59, 7, 966000)}},
                "smeasurement": {"i": {"129": 292}},
                "s_id": {"i": {"129": ObjectId("60c7df3b15caf5ee94e01f7e")}},
            },
        },
    },
    "o2": {"_id": ObjectId("60c7df2bf4549c58ea9377ec")},
    "ts": Timestamp(1623711547, 72),
    "t": 4,
    "v": 2,
    "wall": datetime.datetime(2021, 6, 14, 22, 59, 7, 968000),
    "stmtId": 0,
}


def excluding(*patterns: str):
    return lambda database, collection: namespace_matches(list(patterns), database, collection)


def test_a_bucketed_timeseries_collection_is_refused_naming_it_and_the_setting():
    with pytest.raises(ConfigError) as refused:
        select_collections(DB, LISTED, excluding())
    message = str(refused.value)
    assert "collection timeseries_test.foo_ts is a timeseries collection" in message
    assert "timeseries_test.system.buckets.foo_ts before MongoDB 8.3" in message
    assert "does not back up bucketed timeseries collections yet" in message
    assert "exclude_collections=['timeseries_test.foo_ts']" in message


def test_leaving_it_out_leaves_out_its_buckets():
    selected = select_collections(DB, LISTED, excluding("timeseries_test.foo_ts"))
    assert [info["name"] for info in selected] == ["plain"]


def test_a_timeseries_collection_kept_as_a_plain_one_is_included():
    """SecantusDB's shape: type "collection" with options {timeseries}."""
    secantus = [{"name": "weather", "type": "collection", "options": {"timeseries": {"timeField": "t"}}}]
    assert select_collections(DB, secantus, excluding()) == secantus


def raw(entry: dict) -> bytes:
    return bson.encode(entry)


def test_an_excluded_timeseries_collection_leaves_its_bucket_writes_out_of_incrementals():
    assert excluded_entry(raw(BUCKET_UPDATE), excluding("timeseries_test.foo_ts"))
    assert excluded_entry(raw(BUCKET_UPDATE), excluding("timeseries_test.*"))
    assert not excluded_entry(raw(BUCKET_UPDATE), excluding("timeseries_test.plain"))
    create = {
        "op": "c",
        "ns": "timeseries_test.$cmd",
        "o": {"create": "system.buckets.foo_ts", "clusteredIndex": True, "timeseries": SERIES},
        "ts": Timestamp(1623711500, 1),
    }
    assert excluded_entry(raw(create), excluding("timeseries_test.foo_ts"))
    drop = {"op": "c", "ns": "timeseries_test.$cmd", "o": {"drop": "foo_ts"}, "ts": Timestamp(1623711600, 1)}
    assert excluded_entry(raw(drop), excluding("timeseries_test.foo_ts"))


def test_mongods_view_documents_count_as_the_view():
    """mongod writes a view (a timeseries collection's too, before 8.3) as a document of
    '<db>.system.views' whose _id is 'db.view'."""
    view = {"_id": "timeseries_test.foo_ts", "viewOn": "system.buckets.foo_ts", "pipeline": []}
    insert = {"op": "i", "ns": "timeseries_test.system.views", "o": view, "ts": Timestamp(1623711500, 2)}
    update = {
        "op": "u",
        "ns": "timeseries_test.system.views",
        "o": {"$v": 2, "diff": {"u": {"pipeline": [{"$match": {}}]}}},
        "o2": {"_id": "timeseries_test.foo_ts"},
        "ts": Timestamp(1623711500, 3),
    }
    delete = {"op": "d", "ns": "timeseries_test.system.views", "o": {"_id": "timeseries_test.foo_ts"}}
    for entry in (insert, update, delete):
        entry.setdefault("ts", Timestamp(1623711500, 4))
        assert excluded_entry(raw(entry), excluding("timeseries_test.foo_ts")), entry["op"]
        assert not excluded_entry(raw(entry), excluding("timeseries_test.other")), entry["op"]


def test_a_second_restore_of_one_backup_is_told_what_to_do():
    copy = default_restore_name("app", "20261130T020000.123Z-F")
    message = name_taken([copy], "db1:27017")
    assert message.startswith(f"database '{copy}' already exists on db1:27017 (")
    assert "the name a restore gives its copy of this backup or point" in message
    assert f"db.getSiblingDB('{copy}').dropDatabase()" in message
    assert "into='<name>'" in message and "pass overwrite=True to replace" in message
    other = name_taken(["app", "crm"], "db1:27017")
    assert other.startswith("databases 'app', 'crm' already exist on db1:27017; nothing was written. Either restore")
    assert "dropDatabase" not in other, "a database a restore did not name is never suggested for dropping"
