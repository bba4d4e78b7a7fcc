"""Replaying inserts into timeseries collections that a server keeps as plain collections
(SecantusDB: listCollections type "collection" with options {timeseries: ...}; mongod's bucketed
timeseries are refused before any replay: dump.timeseries_refusal, and their bucket entries by
replay.py).

Why not the replay's usual insert (an upsert by _id): measurements need not have distinct _ids
(mongod's timeseries collections do not index _id either; SecantusDB stores equal _ids side by
side), so an upsert by _id would replace a measurement instead of adding one; and SecantusDB looks
a timeseries _id up by scanning the collection, so an upsert per entry costs a scan per entry.
Instead:

- an entry after the point the restored data stands at (`settled`: the full's cluster time; its
  archives hold nothing written later) is a plain insert: exact, and one bulk write;
- an entry at or before it (a full's dump window, mongodump --oplog semantics: the archive may
  already hold the measurement) is an upsert matching the whole document (`$expr` `$eq` of
  `$$ROOT` and the document: MongoDB's comparison, numbers by value): the measurement is added
  unless an equal one is there. Two equal measurements inserted within one window are
  indistinguishable, and may come back as one; the restore's comparison with the backup's
  fingerprints names the collection then.

Updates and deletes stay matched by _id, as the oplog names them (SecantusDB writes `{_id}` alone
for a deleted measurement): in a collection holding several measurements with that _id the
replay's choice may differ from the server's (docs/mongodb.md, Timeseries collections).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bson import Timestamp
from pymongo import InsertOne, MongoClient, ReplaceOne


class TimeseriesTargets:
    """Which target collections are timeseries collections, asked of the target server once each
    (listCollections, outside any transaction: SecantusDB, like mongod, refuses it inside one);
    `forget()` after every command, which may create, drop or rename one."""

    def __init__(self, client: MongoClient):
        self._client = client
        self._known: dict[tuple[str, str], bool] = {}

    def __contains__(self, target: tuple[str, str]) -> bool:
        if target not in self._known:
            database, collection = target
            infos = list(self._client[database].list_collections(filter={"name": collection}))
            options = (infos[0].get("options") or {}) if infos else {}
            self._known[target] = "timeseries" in options
        return self._known[target]

    def forget(self) -> None:
        self._known.clear()


def insert_measurement(document: Mapping[str, Any], ts: Timestamp, settled: Timestamp | None):
    """The write for an insert entry (`document`, at `ts`) into a timeseries collection: a plain
    insert when `ts` is after `settled`, else an upsert matching the whole document (module doc).
    `settled` None: every entry may already be there."""
    if settled is not None and ts > settled:
        return InsertOne(document)
    same = {"$expr": {"$eq": ["$$ROOT", {"$literal": document}]}}
    return ReplaceOne({"_id": document["_id"], **same}, document, upsert=True)
