"""Per-table (and per-partition) fingerprints of a ClickHouse database: what a restored copy must
give again.

    count   count() of the table
    digest  '<sum>:<schema>': the sum of cityHash64 over every row's columns, modulo 2^64 (order
            independent; ClickHouse's UInt64 sum wraps), and the first 16 hex digits of the sha256
            of the table's schema: its engine clause (engine_full: ORDER BY, PARTITION BY, TTL,
            settings) and each column's name, type, default and codec in order. The schema
            leaves the database name out, so a copy restored under another name compares equal.

A table with a partition key also gets one unit per partition, keyed
`<table> PARTITION ID '<partition id>'` (partition_unit) with method PARTITION_METHOD: the same
count and digest over that partition's rows (`_partition_id`), so a restore of chosen partitions
compares exactly those. One `GROUP BY _partition_id` query gives both: the table's unit is the
sum of its partitions'. Which kind a unit is, is told by its `method`, never by parsing its key.

Tables only: views hold no rows of their own, and a materialized view's inner table gets a new
name when restored (both are restored, neither is compared).
"""

from __future__ import annotations

import hashlib
from typing import Any

from vaultflow.engines.clickhouse.client import quote_name, quote_text, rows
from vaultflow.engines.clickhouse.settings import ClickHouseSettings
from vaultflow.manifest import Fingerprint

METHOD = "count+sum(cityHash64)+schema"
PARTITION_METHOD = "count+sum(cityHash64)+schema of one partition"
NO_DATA_ENGINES = ("View", "MaterializedView", "LiveView", "WindowView", "Dictionary")
WRAP = 1 << 64


def partition_unit(table: str, partition_id: str) -> str:
    """The fingerprint unit of one partition of `table`, as ClickHouse's SQL names it."""
    return f"{table} PARTITION ID {quote_text(partition_id)}"


def table_units(fingerprints: dict[str, Fingerprint]) -> dict[str, Fingerprint]:
    """The whole-table units of one database's fingerprints (partition units left out)."""
    return {unit: fp for unit, fp in fingerprints.items() if fp.method != PARTITION_METHOD}


def partitions_of(fingerprints: dict[str, Fingerprint], table: str) -> dict[str, Fingerprint]:
    """partition id -> fingerprint of `table`'s partitions in one database's fingerprints."""
    prefix = f"{table} PARTITION ID "
    found = {}
    for unit, fp in fingerprints.items():
        if fp.method == PARTITION_METHOD and unit.startswith(prefix):
            partition_id = unit[len(prefix) + 1 : -1]
            if unit == partition_unit(table, partition_id):  # not a longer table name's unit
                found[partition_id] = fp
    return found


def tables(client: Any, config: ClickHouseSettings, database: str) -> dict[str, bool]:
    """The database's tables that hold rows (views, dictionaries and inner tables left out), sorted:
    table -> whether it has a partition key."""
    found = rows(
        client,
        f"SELECT name, engine, partition_key FROM system.tables WHERE database = {quote_text(database)} "
        "AND NOT is_temporary ORDER BY name",
        config,
        database,
    )
    return {
        name: bool(key)
        for name, engine, key in found
        if engine not in NO_DATA_ENGINES and not name.startswith(".inner")
    }


def schema_digest(client: Any, config: ClickHouseSettings, database: str, table: str) -> str:
    """First 16 hex digits of the sha256 of the table's engine clause and column definitions."""
    where = f"database = {quote_text(database)} AND table = {quote_text(table)}"
    columns = rows(
        client,
        f"SELECT name, type, default_kind, default_expression, compression_codec FROM system.columns "
        f"WHERE {where} ORDER BY position",
        config,
        database,
    )
    engine = rows(
        client,
        f"SELECT engine_full FROM system.tables WHERE database = {quote_text(database)} AND name = {quote_text(table)}",
        config,
        database,
    )
    text = repr((engine[0][0] if engine else "", columns))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint_table(
    client: Any, config: ClickHouseSettings, database: str, table: str, partitioned: bool = False
) -> dict[str, Fingerprint]:
    """unit -> Fingerprint of one table: the table's own unit, and with `partitioned` one unit per
    partition (partition_unit) from the same query."""
    qualified = f"{quote_name(database)}.{quote_name(table)}"
    schema = schema_digest(client, config, database, table)
    if not partitioned:
        count, total = rows(client, f"SELECT count(), sum(cityHash64(*)) FROM {qualified}", config, database)[0]
        return {table: Fingerprint(count=int(count), digest=f"{int(total or 0):016x}:{schema}", method=METHOD)}
    parts = rows(
        client,
        f"SELECT _partition_id, count(), sum(cityHash64(*)) FROM {qualified} GROUP BY _partition_id",
        config,
        database,
    )
    units = {
        partition_unit(table, str(pid)): Fingerprint(
            count=int(count), digest=f"{int(total) % WRAP:016x}:{schema}", method=PARTITION_METHOD
        )
        for pid, count, total in parts
    }
    total = sum(int(t) for _, _, t in parts) % WRAP
    units[table] = Fingerprint(count=sum(int(c) for _, c, _ in parts), digest=f"{total:016x}:{schema}", method=METHOD)
    return units


def fingerprint_database(
    client: Any, config: ClickHouseSettings, database: str, only: list[str] | None = None
) -> dict[str, Fingerprint]:
    """unit -> Fingerprint for every table of `database` that holds rows (or only those in `only`),
    and each partition of the partitioned ones."""
    found: dict[str, Fingerprint] = {}
    for table, partitioned in tables(client, config, database).items():
        if only is None or table in only:
            found.update(fingerprint_table(client, config, database, table, partitioned))
    return found
