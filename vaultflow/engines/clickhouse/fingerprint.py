"""Per-table fingerprints of a ClickHouse database (what a restored copy must give again), and the
cheap state of its tables that tells whether any of them changed between two moments.

    count   count() of the table
    digest  '<sum>:<schema>': the sum of cityHash64 over every row's columns, modulo 2^64 (order
            independent; ClickHouse's UInt64 sum wraps), and the first 16 hex digits of the sha256
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

METHOD = "count+sum(cityHash64)+schema"
NO_DATA_ENGINES = ("View", "MaterializedView", "LiveView", "WindowView", "Dictionary")


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


def _tables_info(client: Any, config: ClickHouseSettings, database: str) -> dict[str, tuple[str, str, str]]:
    """table -> (engine, uuid, engine_full) of the database's tables that hold rows."""
    found = rows(
        client,
        f"SELECT name, engine, toString(uuid), engine_full FROM system.tables "
        f"WHERE database = {quote_text(database)} AND NOT is_temporary",
        config,
        database,
    )
    return {name: (engine, uuid, full) for name, engine, uuid, full in found if _holds_rows(name, engine)}


def _schema_digests(
    client: Any, config: ClickHouseSettings, database: str, info: dict[str, tuple[str, str, str]]
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
    parts: dict[str, list[tuple[str, str]]] = {t: [] for t, (engine, _, _) in info.items() if "MergeTree" in engine}
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
        for t, (engine, uuid, _) in info.items()
    }


def changed_tables(before: dict[str, TableState], after: dict[str, TableState]) -> list[str]:
    """The tables whose state differs between two table_states (made, dropped or changed), sorted."""
    return sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t))


def fingerprint_database(
    client: Any, config: ClickHouseSettings, database: str, only: list[str] | None = None
) -> dict[str, Fingerprint]:
    """table -> Fingerprint for every table of `database` that holds rows (or only those in `only`):
    one query per table for the rows (count and digest), one for all the schemas."""
    info = _tables_info(client, config, database)
    names = sorted(t for t in info if only is None or t in only)
    if not names:
        return {}
    schemas = _schema_digests(client, config, database, {t: info[t] for t in names})
    prints = {}
    for table in names:
        qualified = f"{quote_name(database)}.{quote_name(table)}"
        count, total = rows(client, f"SELECT count(), sum(cityHash64(*)) FROM {qualified}", config, database)[0]
        prints[table] = Fingerprint(count=int(count), digest=f"{int(total or 0):016x}:{schemas[table]}", method=METHOD)
    return prints
