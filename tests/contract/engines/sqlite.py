"""The test-only SQLite engine (tests/contract/toy_engine.py) in the contract suite: registered
for the contract's lifetime, forgotten at close. Oracle: the sorted lines of sqlite3's own
iterdump (schema and every row as SQL), not the engine's fingerprints."""

from __future__ import annotations

import difflib
import sqlite3
from collections.abc import Mapping
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

from tests.contract.harness import EngineContract
from tests.contract.toy_engine import ENGINE, sqlite_engine_registered


def dump_lines(path: Path) -> list[str]:
    """Schema and rows of the database file `path` as SQL lines, sorted (row order is no content)."""
    with closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as conn:
        return sorted(conn.iterdump())


class SqliteFile(EngineContract):
    id = "sqlite-toy"
    engine = ENGINE
    incremental = False
    no_incremental = f"a {ENGINE} target has no incremental form"

    def __init__(self, servers: Mapping[str, Any], work: Path):
        super().__init__(servers, work)
        self._stack = ExitStack()
        self.kind = self._stack.enter_context(sqlite_engine_registered())
        self.path = work / "app.db"

    def target(self):
        return self.kind(path=str(self.path), target_name="contract-sqlite")

    def _run(self, sql: str, rows: list[tuple] | None = None, statement: str | None = None) -> None:
        with closing(sqlite3.connect(self.path)) as conn, conn:
            conn.executescript(sql)
            if rows:
                conn.executemany(statement, rows)

    def write(self) -> None:
        self._run(
            "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, data BLOB);"
            "CREATE TABLE notes (body TEXT);",
            [(i, f"item {i}", i * 1.25, bytes([i % 256]) * 3) for i in range(1, 301)],
            "INSERT INTO items VALUES (?, ?, ?, ?)",
        )
        self._run("INSERT INTO notes VALUES ('first')")

    def change(self) -> None:
        self._run(
            "UPDATE items SET price = price + 1 WHERE id % 10 = 0; DELETE FROM items WHERE id % 7 = 0;"
            "INSERT INTO items VALUES (1001, 'late', 9.99, NULL); INSERT INTO notes VALUES ('second');"
        )

    def read_source(self):
        return dump_lines(self.path)

    def restore_parameters(self, label: str) -> dict[str, Any]:
        return {"into": str(self.work / f"restored-{label}.db")}

    def read_restored(self, restored: Mapping[str, str]):
        path = Path(restored["main"])
        try:
            return dump_lines(path)
        finally:
            path.unlink(missing_ok=True)

    def differences(self, expected, actual) -> list[str]:
        if expected == actual:
            return []
        return [
            "dumps differ:\n"
            + "\n".join(list(difflib.unified_diff(expected, actual, "source", "restored", lineterm="", n=0))[:40])
        ]

    def close(self) -> None:
        self._stack.close()


CONTRACTS = [SqliteFile]
