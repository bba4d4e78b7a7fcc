"""Compare fingerprints taken at backup time with those of a restored copy."""

from __future__ import annotations

from dataclasses import dataclass

from vaultflow.manifest import Fingerprint

# How a physical restore lists an unlogged table that came back empty: a base backup copies
# only their init fork and recovery resets them (PostgreSQL docs, CREATE TABLE "UNLOGGED");
# neither "match" (it may have held rows) nor "mismatch" (it is right).
UNLOGGED_EMPTY = "expected empty (unlogged)"
CORRECT = ("match", UNLOGGED_EMPTY)


@dataclass(frozen=True)
class TableComparison:
    database: str
    table: str
    expected_rows: int | None
    actual_rows: int | None
    status: str  # "match", UNLOGGED_EMPTY, "mismatch", "missing", "unexpected"

    @property
    def is_table(self) -> bool:
        """False for rows that check something else: "(database properties)", or a whole-cluster
        check such as pg_verifybackup (database "(cluster)")."""
        return not (self.table.startswith("(") or self.database.startswith("("))

    def as_row(self) -> dict:
        return {
            "database": self.database,
            "table": self.table,
            "expected_rows": self.expected_rows,
            "actual_rows": self.actual_rows,
            "status": self.status,
        }


@dataclass(frozen=True)
class Comparison:
    """Rows comparing a restored copy with its backup. `tables`: one row per compared unit
    (whatever the engine compares: tables, databases, key patterns), plus whole-copy checks
    (rows whose table or database starts with '('). `noun`: what a unit is called in the
    summary, the engine's own word (PostgreSQL 'tables', Redis 'databases'); 'units' when
    the engine does not say."""

    tables: list[TableComparison]
    noun: str = "units"

    @property
    def ok(self) -> bool:
        return all(t.status in CORRECT for t in self.tables)

    @property
    def mismatches(self) -> list[TableComparison]:
        return [t for t in self.tables if t.status not in CORRECT]

    def rows(self) -> list[dict]:
        return [t.as_row() for t in self.tables]

    def as_dataframe(self):
        import pandas  # only callers that want a DataFrame pay for importing pandas

        return pandas.DataFrame(self.rows())

    def summary(self) -> str:
        """'3 tables match', '3 tables and database properties match (1 unlogged: expected
        empty)', or '1 of 3 tables and pg_verifybackup: 812 files differ: db.public.t (mismatch)'
        ('tables' is the comparison's noun)."""
        tables = [t for t in self.tables if t.is_table]
        checks = list(dict.fromkeys(t.table.strip("()") for t in self.tables if not t.is_table))
        noun = singular(self.noun) if len(tables) == 1 else self.noun  # '1 table match'
        what = f"{len(tables)} {noun}" + "".join(f" and {c}" for c in checks)
        empty = sum(1 for t in tables if t.status == UNLOGGED_EMPTY)
        note = f" ({empty} unlogged: expected empty)" if empty else ""
        if self.ok:
            return f"{what} match{note}"
        names = ", ".join(f"{t.database}.{t.table} ({t.status})" for t in self.mismatches[:5])
        return f"{len(self.mismatches)} of {what} differ: {names}{note}"


def singular(noun: str) -> str:
    """'tables' -> 'table', 'key patterns' -> 'key pattern', 'tables and partitions' -> 'table and
    partitions': the plural nouns comparisons use, for a count of one."""
    head, sep, rest = noun.partition(" and ")
    words = head.split(" ")
    words[-1] = words[-1].removesuffix("s")
    return " ".join(words) + sep + rest


def compare_database(
    database: str, expected: dict[str, Fingerprint], actual: dict[str, Fingerprint]
) -> list[TableComparison]:
    result: list[TableComparison] = []
    for table in sorted(set(expected) | set(actual)):
        exp, act = expected.get(table), actual.get(table)
        if exp is None:
            status = "unexpected"
        elif act is None:
            status = "missing"
        else:
            status = "match" if exp == act else "mismatch"
        result.append(TableComparison(database, table, exp.count if exp else None, act.count if act else None, status))
    return result
