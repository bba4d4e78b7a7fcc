"""ClickHouse in the contract suite: a target on the session's embedded engine (chDB through
clickhouse-connect; tests/fixtures/clickhouse.py), one database of its own with a partitioned
MergeTree table and a key-less one. Oracle: tests/corpus/clickhouse_oracle.py (rows sorted by the
table's ORDER BY key through plain SQL, columns, engine clause), no code shared with vaultflow's
digest. Incrementals are BACKUPs with base_backup = the parent, restored through the chain."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.contract.harness import EngineContract
from tests.corpus.clickhouse_oracle import clickhouse_differences, clickhouse_state
from vaultflow.blocks import ClickHouseTarget


class ClickHouseNative(EngineContract):
    id = "clickhouse"
    engine = "clickhouse"
    servers = ("clickhouse_source",)
    incremental = True

    def __init__(self, servers: Mapping[str, Any], work: Path):
        super().__init__(servers, work)
        self.instance = servers["clickhouse_source"]
        self.client = self.instance.client()
        self.db = f"contract_{secrets.token_hex(4)}"

    def target(self) -> ClickHouseTarget:
        return ClickHouseTarget(**self.instance.target_fields(), databases=[self.db], target_name="contract-clickhouse")

    def write(self) -> None:
        c, db = self.client, self.db
        c.command(f"CREATE DATABASE {db}")
        c.command(
            f"CREATE TABLE {db}.items (id UInt32, name String, price Float64, tags Array(String), "
            "at DateTime64(3, 'UTC'), note Nullable(String)) ENGINE = MergeTree PARTITION BY id % 3 ORDER BY id"
        )
        c.command(
            f"INSERT INTO {db}.items SELECT number, concat('item ', toString(number)), number * 1.25, "
            "[concat('t', toString(number % 3))], toDateTime64('2026-01-01 00:00:00', 3, 'UTC') + number, "
            "if(number % 4 = 0, NULL, 'n') FROM numbers(300)"
        )
        c.command(f"CREATE TABLE {db}.notes (body String) ENGINE = MergeTree ORDER BY tuple()")
        c.command(f"INSERT INTO {db}.notes VALUES ('first'), ('ünïcødé'), ('')")

    def change(self) -> None:
        c, db = self.client, self.db
        c.command(f"ALTER TABLE {db}.items UPDATE price = price + 1 WHERE id % 10 = 0 SETTINGS mutations_sync = 2")
        c.command(f"ALTER TABLE {db}.items DELETE WHERE id % 7 = 0 SETTINGS mutations_sync = 2")
        c.command(f"INSERT INTO {db}.items VALUES (1001, 'late', 9.99, [], '2026-02-01 00:00:00', NULL)")
        c.command(f"INSERT INTO {db}.notes VALUES ('second')")

    def read_source(self):
        return clickhouse_state(self.client, self.db)

    def read_restored(self, restored: Mapping[str, str]):
        name = restored[self.db]
        try:
            return clickhouse_state(self.client, name)
        finally:
            self.client.command(f"DROP DATABASE IF EXISTS `{name}` SYNC")

    def differences(self, expected, actual) -> list[str]:
        return clickhouse_differences(expected, actual)

    def close(self) -> None:
        self.client.command(f"DROP DATABASE IF EXISTS {self.db} SYNC")
        self.client.close()


CONTRACTS = [ClickHouseNative]
