"""MongoDB in the contract suite: a target on the session's SecantusDB server (a MongoDB-wire
server; tests/fixtures/mongo.py), one database of its own holding a collection with indexes, a
capped collection and a view. Incrementals are the oplog since the parent, replayed on restore.
Oracle: tests/corpus/oracle.py mongo_state (documents sorted by _id as canonical Extended JSON,
options, indexes), which shares no code with vaultflow's digest."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.contract.harness import EngineContract
from tests.corpus.oracle import mongo_differences, mongo_state
from vaultflow.blocks import MongoTarget


class MongoFull(EngineContract):
    id = "mongodb"
    engine = "mongodb"
    servers = ("mongo_source",)
    incremental = True

    def __init__(self, servers: Mapping[str, Any], work: Path):
        super().__init__(servers, work)
        self.server = servers["mongo_source"]
        self.client = self.server.client()
        self.db = f"contract_{secrets.token_hex(4)}"

    def target(self) -> MongoTarget:
        return MongoTarget(
            host=self.server.host, port=self.server.port, databases=[self.db], target_name="contract-mongodb"
        )

    def write(self) -> None:
        db = self.client[self.db]
        db.items.insert_many(
            [{"_id": i, "name": f"item {i}", "price": i * 1.25, "tags": [f"t{i % 3}"]} for i in range(300)]
        )
        db.items.create_index("name", unique=True)
        db.items.create_index([("price", -1)], partialFilterExpression={"price": {"$gt": 10}})
        db.create_collection("log", capped=True, size=1 << 20)
        db.log.insert_many([{"n": n} for n in range(20)])
        db.command({"create": "cheap", "viewOn": "items", "pipeline": [{"$match": {"price": {"$lt": 5}}}]})

    def change(self) -> None:
        db = self.client[self.db]
        db.items.update_many({"_id": {"$mod": [10, 0]}}, {"$inc": {"price": 1}})
        db.items.delete_many({"_id": {"$mod": [7, 0]}})
        db.items.insert_one({"_id": 1001, "name": "late", "price": 9.99, "tags": None})
        db.log.insert_one({"n": 20})

    def read_source(self):
        return mongo_state(self.client, self.db)

    def read_restored(self, restored: Mapping[str, str]):
        name = restored[self.db]
        try:
            return mongo_state(self.client, name)
        finally:
            self.client.drop_database(name)

    def differences(self, expected, actual) -> list[str]:
        return mongo_differences(expected, actual)

    def close(self) -> None:
        self.client.drop_database(self.db)
        self.client.close()


CONTRACTS = [MongoFull]
