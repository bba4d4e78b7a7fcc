"""Comparison summaries say what was compared, in the engine's own word: units (tables,
databases) apart from other checks."""

from vaultflow.compare import UNLOGGED_EMPTY, Comparison, TableComparison, singular


def row(table: str, status: str = "match", database: str = "shop") -> TableComparison:
    return TableComparison(database, table, 1, 1, status)


def test_summary_counts_tables_and_names_the_other_checks() -> None:
    logical = Comparison([row("public.t"), row("(database properties)", database="shop")], noun="tables")
    assert logical.ok and logical.summary() == "1 table and database properties match"
    physical = Comparison(
        [row("public.cache", UNLOGGED_EMPTY), row("public.t"), row("pg_verifybackup: 812 files", database="(cluster)")],
        noun="tables",
    )
    assert physical.ok
    assert physical.summary() == "2 tables and pg_verifybackup: 812 files match (1 unlogged: expected empty)"


def test_a_difference_is_named_and_not_ok() -> None:
    bad = Comparison([row("public.t", "mismatch"), row("(database properties: owner)", "mismatch")], noun="tables")
    assert not bad.ok and [t.table for t in bad.mismatches] == ["public.t", "(database properties: owner)"]
    assert bad.summary().startswith("2 of 1 table and database properties: owner differ: shop.public.t (mismatch)")


def test_the_noun_is_the_engines_own_or_generic() -> None:
    """Not every engine compares tables: Redis compares databases; an engine that names no
    noun gets 'units', never 'tables'."""
    redis = Comparison([row("keys", database="db0"), row("keys", database="db1")], noun="databases")
    assert redis.summary() == "2 databases match"
    generic = Comparison([row("ledger", "missing")])
    assert generic.summary() == "1 of 1 unit differ: shop.ledger (missing)"
    assert "tables" not in generic.summary()


def test_a_count_of_one_takes_the_singular_noun():
    assert [singular(n) for n in ("tables", "key patterns", "tables and partitions", "collections")] == [
        "table",
        "key pattern",
        "table and partitions",
        "collection",
    ]
