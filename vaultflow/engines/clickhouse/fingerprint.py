"""Per-table (and per-partition) fingerprints of a ClickHouse database (what a restored copy must
give again), and the cheap state of its tables that tells whether any of them changed between two
moments.

    count   count() of the table
    digest  '<sum>:<schema>': the sum of cityHash64(tuple(*)) over every row, modulo 2^64 (order
            independent; ClickHouse's UInt64 sum wraps). The row is hashed as one tuple because
            cityHash64(*) of a row holding a NULL is NULL, and sum() skips it: such rows counted
            but were not digested (LEGACY_METHOD, backups taken before Nov 30 2026, compared
            the way they were taken). The tuple's hash tells NULL from '' and from 0, and equals
            cityHash64(*) for rows without NULLs. Then the first 16 hex digits of the sha256
            of the table's schema: its engine clause (engine_full: ORDER BY, PARTITION BY, TTL,
            settings) and each column's name, type, default and codec in order. The schema
            leaves the database name out, so a copy restored under another name compares equal.
    state   the table's uuid, engine, schema digest and, for a *MergeTree table, its active parts
            (name and hash_of_all_files): system tables only, no row is read. MergeTree parts are
            immutable and every write (INSERT, mutation, lightweight DELETE/UPDATE, TRUNCATE,
            ATTACH) makes parts of new names, so equal states mean equal rows. A merge makes new
            parts of the same rows: it counts as a change (on the safe side). Tables of other
            engines (Log, Memory, ...) have no parts to compare (`parts` is None): their rows
            are digested instead.

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
from dataclasses import dataclass
from typing import Any

from vaultflow.engines.clickhouse.client import quote_name, quote_text, rows
from vaultflow.engines.clickhouse.settings import ClickHouseSettings
from vaultflow.manifest import Fingerprint

METHOD = "count+sum(cityHash64(tuple))+schema"
PARTITION_METHOD = f"{METHOD} of one partition"
# Backups taken before Nov 30 2026 hashed cityHash64(*): rows holding a NULL left out of the sum.
LEGACY_METHOD = "count+sum(cityHash64)+schema"
LEGACY_PARTITION_METHOD = f"{LEGACY_METHOD} of one partition"
PARTITION_METHODS = frozenset({PARTITION_METHOD, LEGACY_PARTITION_METHOD})
NO_DATA_ENGINES = ("View", "MaterializedView", "LiveView", "WindowView", "Dictionary")
WRAP = 1 << 64


def partition_unit(table: str, partition_id: str) -> str:
    """The fingerprint unit of one partition of `table`, as ClickHouse's SQL names it."""
    return f"{table} PARTITION ID {quote_text(partition_id)}"


def table_units(fingerprints: dict[str, Fingerprint]) -> dict[str, Fingerprint]:
    """The whole-table units of one database's fingerprints (partition units left out)."""
    return {unit: fp for unit, fp in fingerprints.items() if fp.method not in PARTITION_METHODS}


def is_legacy(fingerprints: dict[str, Fingerprint]) -> bool:
    """Whether one database's fingerprints were taken with LEGACY_METHOD (a copy is then digested
    the same way to be compared with them)."""
    return any(fp.method in (LEGACY_METHOD, LEGACY_PARTITION_METHOD) for fp in fingerprints.values())


def partitions_of(fingerprints: dict[str, Fingerprint], table: str) -> dict[str, Fingerprint]:
    """partition id -> fingerprint of `table`'s partitions in one database's fingerprints."""
    prefix = f"{table} PARTITION ID "
    found = {}
    for unit, fp in fingerprints.items():
        if fp.method in PARTITION_METHODS and unit.startswith(prefix):
            partition_id = unit[len(prefix) + 1 : -1]
            if unit == partition_unit(table, partition_id):  # not a longer table name's unit
                found[partition_id] = fp
    return found


@dataclass(frozen=True)
class TableState:
    """What system tables say about one table: equal states at two moments mean equal rows."""

    uuid: str
    engine: str
    schema: str  # schema digest (16 hex digits)
    parts: tuple[tuple[str, str], ...] | None  # (part name, hash_of_all_files); None: not a MergeTree

    @property
    def pinned(self) -> bool:
        """True when the parts pin the rows (a *MergeTree table): no digest is needed to see a change."""
        return self.parts is not None


def _holds_rows(name: str, engine: str) -> bool:
    return engine not in NO_DATA_ENGINES and not name.startswith(".inner")


def _tables_info(client: Any, config: ClickHouseSettings, database: str) -> dict[str, tuple[str, str, str, bool]]:
    """table -> (engine, uuid, engine_full, has a partition key) of the database's tables that hold rows."""
    found = rows(
        client,
        f"SELECT name, engine, toString(uuid), engine_full, partition_key FROM system.tables "
        f"WHERE database = {quote_text(database)} AND NOT is_temporary",
        config,
        database,
    )
    return {
        name: (engine, uuid, full, bool(key)) for name, engine, uuid, full, key in found if _holds_rows(name, engine)
    }


def _schema_digests(
    client: Any, config: ClickHouseSettings, database: str, info: dict[str, tuple[str, str, str, bool]]
) -> dict[str, str]:
    """table -> first 16 hex digits of the sha256 of its engine clause and column definitions (one
    query on system.columns for the whole database)."""
    columns: dict[str, list[tuple]] = {name: [] for name in info}
    for table, *column in rows(
        client,
        f"SELECT table, name, type, default_kind, default_expression, compression_codec FROM system.columns "
        f"WHERE database = {quote_text(database)} ORDER BY table, position",
        config,
        database,
    ):
        if table in columns:
            columns[table].append(tuple(column))
    return {table: hashlib.sha256(repr((info[table][2], columns[table])).encode()).hexdigest()[:16] for table in info}


def table_states(client: Any, config: ClickHouseSettings, database: str) -> dict[str, TableState]:
    """table -> TableState for every table of `database` that holds rows: three queries on system
    tables (tables, columns, parts), whatever the size of the data."""
    info = _tables_info(client, config, database)
    schemas = _schema_digests(client, config, database, info)
    parts: dict[str, list[tuple[str, str]]] = {t: [] for t, (engine, *_) in info.items() if "MergeTree" in engine}
    for table, name, digest in rows(
        client,
        f"SELECT table, name, toString(hash_of_all_files) FROM system.parts "
        f"WHERE database = {quote_text(database)} AND active ORDER BY table, name",
        config,
        database,
    ):
        if table in parts:
            parts[table].append((name, digest))
    return {
        t: TableState(uuid, engine, schemas[t], tuple(parts[t]) if t in parts else None)
        for t, (engine, uuid, *_) in info.items()
    }


def changed_tables(before: dict[str, TableState], after: dict[str, TableState]) -> list[str]:
    """The tables whose state differs between two table_states (made, dropped or changed), sorted."""
    return sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t))


def _fingerprint_table(
    client: Any,
    config: ClickHouseSettings,
    database: str,
    table: str,
    schema: str,
    partitioned: bool,
    legacy: bool = False,
) -> dict[str, Fingerprint]:
    """unit -> Fingerprint of one table: the table's own unit, and with `partitioned` one unit per
    partition (partition_unit) from the same query. `legacy`: digested as LEGACY_METHOD."""
    qualified = f"{quote_name(database)}.{quote_name(table)}"
    digest = "sum(cityHash64(*))" if legacy else "sum(cityHash64(tuple(*)))"
    method, partition_method = (LEGACY_METHOD, LEGACY_PARTITION_METHOD) if legacy else (METHOD, PARTITION_METHOD)
    if not partitioned:
        count, total = rows(client, f"SELECT count(), {digest} FROM {qualified}", config, database)[0]
        return {table: Fingerprint(count=int(count), digest=f"{int(total or 0):016x}:{schema}", method=method)}
    parts = rows(
        client,
        f"SELECT _partition_id, count(), {digest} FROM {qualified} GROUP BY _partition_id",
        config,
        database,
    )
    units = {
        partition_unit(table, str(pid)): Fingerprint(
            count=int(count), digest=f"{int(total or 0) % WRAP:016x}:{schema}", method=partition_method
        )
        for pid, count, total in parts
    }
    total = sum(int(t or 0) for _, _, t in parts) % WRAP
    units[table] = Fingerprint(count=sum(int(c) for _, c, _ in parts), digest=f"{total:016x}:{schema}", method=method)
    return units


def fingerprint_database(
    client: Any, config: ClickHouseSettings, database: str, only: list[str] | None = None, legacy: bool = False
) -> dict[str, Fingerprint]:
    """unit -> Fingerprint for every table of `database` that holds rows (or only those in `only`),
    and each partition of the partitioned ones: one query per table for the rows (count and
    digest), one for all the schemas."""
    info = _tables_info(client, config, database)
    names = sorted(t for t in info if only is None or t in only)
    if not names:
        return {}
    schemas = _schema_digests(client, config, database, {t: info[t] for t in names})
    prints: dict[str, Fingerprint] = {}
    for table in names:
        prints.update(_fingerprint_table(client, config, database, table, schemas[table], info[table][3], legacy))
    return prints
