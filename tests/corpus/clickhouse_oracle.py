"""The independent judge of ClickHouse restores: plain SQL through a plain client, no vaultflow code.

A database's state: per table its engine clause (engine_full), its columns (DESCRIBE TABLE) and
every row, exported sorted by the table's ORDER BY key (sorting_key; ORDER BY ALL when it has
none), as Python values. Views are listed with their engine only.
"""

from __future__ import annotations

from typing import Any


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def clickhouse_state(client: Any, database: str, partitions: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """table -> {'engine', 'columns', 'rows'} of `database`; with `partitions` (table -> partition
    ids), only those tables, each with the rows of those partitions (`_partition_id`)."""
    state: dict[str, Any] = {}
    literal = _literal(database)
    tables = client.query(
        f"SELECT name, engine, engine_full, sorting_key FROM system.tables WHERE database = {literal} ORDER BY name"
    ).result_rows
    for name, engine, engine_full, sorting_key in tables:
        if partitions is not None and name not in partitions:
            continue
        qualified = f"`{database}`.`{name}`"
        where = f" WHERE _partition_id IN ({', '.join(map(_literal, partitions[name]))})" if partitions else ""
        columns = [tuple(r[:2]) for r in client.query(f"DESCRIBE TABLE {qualified}").result_rows]
        entry: dict[str, Any] = {"engine": engine_full or engine, "columns": columns}
        if engine not in ("View", "MaterializedView"):
            order = sorting_key or "ALL"
            entry["rows"] = [
                tuple(r) for r in client.query(f"SELECT * FROM {qualified}{where} ORDER BY {order}").result_rows
            ]
        state[name] = entry
    return state


def clickhouse_differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Every difference between two states, as sentences; [] when equal."""
    found = []
    for table in sorted(set(expected) | set(actual)):
        if table not in actual:
            found.append(f"table {table} is missing")
        elif table not in expected:
            found.append(f"table {table} is unexpected")
        else:
            for part in ("engine", "columns", "rows"):
                exp, act = expected[table].get(part), actual[table].get(part)
                if exp != act:
                    detail = ""
                    if part == "rows" and exp is not None and act is not None:
                        detail = f": {len(exp)} rows expected, {len(act)} found"
                        detail += f", first difference {next((pair for pair in zip(exp, act, strict=False) if pair[0] != pair[1]), None)}"
                    found.append(f"table {table}: {part} differ{detail}")
    return found
