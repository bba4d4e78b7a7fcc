"""Corpus: names vaultflow derives (restore targets, scratch and drill databases) fit 63 bytes.

A database named with 31 x 'ü' (62 bytes) used to fail its restore with a raw server error: the
derived `<db>[:40]_restore_<time>` was 97 bytes, which PostgreSQL cut where vaultflow did not.
Derived names are cut at a character boundary and carry a short hash of the full name, so two
long names with the same first bytes stay apart.
"""

from __future__ import annotations

import pytest

from tests.corpus.conftest import pg_engine
from tests.corpus.oracle import assert_pg_restored
from tests.fixtures.postgres import quote_ident
from vaultflow.engines.postgres.engine import default_restore_name as reexported
from vaultflow.engines.postgres.logical_restore import (
    MAX_NAME_BYTES,
    default_restore_name,
    drill_name,
    fit_name,
    scratch_name,
)

UMLAUTS = "ü" * 31  # 62 bytes
FULL = "ü" * 31 + "x"  # 63 bytes, the longest name PostgreSQL keeps
BACKUP_ID = "20261129T101500.123Z-F"


@pytest.mark.parametrize("database", [UMLAUTS, FULL, "a" * 63, "€" * 21, "plain"])
def test_derived_names_fit_and_keep_whole_characters(database):
    names = [
        default_restore_name(database, BACKUP_ID),
        scratch_name(database),
        drill_name(database),
        scratch_name(default_restore_name(database, BACKUP_ID)),
    ]
    for name in names:
        assert len(name.encode()) <= MAX_NAME_BYTES, name
        assert name.encode().decode("utf-8") == name  # no character cut in half
    assert names[0].endswith("_restore_20261129t101500")
    assert names[2].startswith("vaultflow_drill_")
    assert reexported is default_restore_name


def test_cut_names_stay_apart():
    assert default_restore_name(UMLAUTS, BACKUP_ID) != default_restore_name(FULL, BACKUP_ID)
    assert fit_name("x" * 70) != fit_name("x" * 71)
    assert fit_name("short", "_s") == "short_s"  # names that fit are left alone
    assert len({scratch_name(FULL) for _ in range(20)}) == 20
    assert len({drill_name(FULL) for _ in range(20)}) == 20


def test_long_unicode_names_back_up_restore_and_drill(pg_server, corpus_ctx, request):
    for name in (UMLAUTS, FULL):
        pg_server.execute(f"CREATE DATABASE {quote_ident(name)}")
        pg_server.execute("CREATE TABLE t (id int, v text); INSERT INTO t VALUES (1, 'ä'), (2, 'ß')", dbname=name)
    engine = pg_engine(pg_server, [UMLAUTS, FULL])
    request.addfinalizer(
        lambda: [
            engine.drop_database(n)
            for (n,) in pg_server.execute("SELECT datname FROM pg_database WHERE datname LIKE 'üüü%'")
        ]
    )
    manifest = engine.full_backup(corpus_ctx)

    drill = engine.drill(corpus_ctx, manifest)
    assert drill.comparison.ok, drill.comparison.summary()
    assert {t.database for t in drill.comparison.tables} == {UMLAUTS, FULL}
    assert pg_server.execute("SELECT datname FROM pg_database WHERE datname LIKE 'vaultflow\\_drill\\_%'") == []

    result = engine.restore(corpus_ctx, manifest)
    assert result.comparison.ok, result.comparison.summary()
    assert result.restored == {db: default_restore_name(db, manifest.id) for db in (UMLAUTS, FULL)}
    assert len(set(result.restored.values())) == 2
    for source, copy in result.restored.items():
        assert pg_server.execute(f"SELECT 1 FROM pg_database WHERE datname = '{copy}'") == [(1,)]
        assert_pg_restored(pg_server, source, pg_server, copy)
