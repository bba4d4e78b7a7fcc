"""Compare fingerprints taken at backup time with those of a restored copy."""

from __future__ import annotations

from dataclasses import dataclass

from vaultflow.manifest import TableFingerprint


@dataclass(frozen=True)
class TableComparison:
    database: str
    table: str
    expected_rows: int | None
    actual_rows: int | None
    status: str  # "match", "mismatch", "missing", "unexpected"

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
    tables: list[TableComparison]

    @property
    def ok(self) -> bool:
        return all(t.status == "match" for t in self.tables)

    @property
    def mismatches(self) -> list[TableComparison]:
        return [t for t in self.tables if t.status != "match"]

    def rows(self) -> list[dict]:
        return [t.as_row() for t in self.tables]

    def as_dataframe(self):
        import pandas  # only callers that want a DataFrame pay for importing pandas

        return pandas.DataFrame(self.rows())

    def summary(self) -> str:
        if self.ok:
            return f"{len(self.tables)} tables match"
        names = ", ".join(f"{t.database}.{t.table} ({t.status})" for t in self.mismatches[:5])
        return f"{len(self.mismatches)} of {len(self.tables)} tables differ: {names}"


def compare_database(database: str, expected: dict[str, TableFingerprint],
                     actual: dict[str, TableFingerprint]) -> list[TableComparison]:
    result: list[TableComparison] = []
    for table in sorted(set(expected) | set(actual)):
        exp, act = expected.get(table), actual.get(table)
        if exp is None:
            status = "unexpected"
        elif act is None:
            status = "missing"
        else:
            status = "match" if exp == act else "mismatch"
        result.append(TableComparison(database, table, exp.rows if exp else None,
                                      act.rows if act else None, status))
    return result
