"""Per-table fingerprints of a ClickHouse database: what a restored copy must give again.

    count   count() of the table
    digest  '<sum>:<schema>': the sum of cityHash64 over every row's columns, modulo 2^64 (order
            independent; ClickHouse's UInt64 sum wraps), and the first 16 hex digits of the sha256
            of the table's schema: its engine clause (engine_full: ORDER BY, PARTITION BY, TTL,
            settings) and each column's name, type, default and codec in order. The schema
            leaves the database name out, so a copy restored under another name compares equal.

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
NO_DATA_ENGINES = ("View", "MaterializedView", "LiveView", "WindowView", "Dictionary")


def tables(client: Any, config: ClickHouseSettings, database: str) -> list[str]:
    """The database's tables that hold rows, sorted (views, dictionaries and inner tables left out)."""
    found = rows(
        client,
        f"SELECT name, engine FROM system.tables WHERE database = {quote_text(database)} AND NOT is_temporary",
        config,
        database,
    )
    return sorted(name for name, engine in found if engine not in NO_DATA_ENGINES and not name.startswith(".inner"))


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


def fingerprint_table(client: Any, config: ClickHouseSettings, database: str, table: str) -> Fingerprint:
    qualified = f"{quote_name(database)}.{quote_name(table)}"
    count, total = rows(client, f"SELECT count(), sum(cityHash64(*)) FROM {qualified}", config, database)[0]
    digest = f"{int(total or 0):016x}:{schema_digest(client, config, database, table)}"
    return Fingerprint(count=int(count), digest=digest, method=METHOD)


def fingerprint_database(
    client: Any, config: ClickHouseSettings, database: str, only: list[str] | None = None
) -> dict[str, Fingerprint]:
    """table -> Fingerprint for every table of `database` that holds rows (or only those in `only`)."""
    names = [t for t in tables(client, config, database) if only is None or t in only]
    return {table: fingerprint_table(client, config, database, table) for table in names}
