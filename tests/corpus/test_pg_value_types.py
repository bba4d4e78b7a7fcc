"""Corpus: column types whose binary hash depends on OIDs, storage or session settings.

Each case is backed up, restored into a new database, and judged twice: vaultflow's own
comparison must say "match" and the oracle must agree. A fingerprint that matches everything
proves nothing, so the change cases alter one value in the restored copy and require the
fingerprint to see it — including changes the types' own hashes cannot see (1.50 -> 1.5).
"""

from __future__ import annotations

import psycopg
import pytest

from tests.corpus.conftest import pg_engine
from tests.corpus.oracle import assert_pg_restored
from tests.fixtures.postgres import quote_ident
from vaultflow.engines.postgres.fingerprint import fingerprint_tables

ENUM = "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');\n"

CASES = {
    "enum": ENUM
    + """
CREATE TABLE t (id int, x mood);
INSERT INTO t VALUES (1, 'ok'), (2, 'happy'), (3, NULL)""",
    "enum_array": ENUM
    + """
CREATE TABLE t (id int, x mood[]);
INSERT INTO t VALUES (1, '{ok,sad}'), (2, '{{happy},{ok}}'), (3, '{}')""",
    "domain_over_enum": ENUM
    + """
CREATE DOMAIN good_mood AS mood CHECK (VALUE <> 'sad');
CREATE DOMAIN moods AS mood[];
CREATE TABLE t (id int, x good_mood, y moods);
INSERT INTO t VALUES (1, 'ok', '{sad}'), (2, 'happy', NULL)""",
    "composite_with_enum": ENUM
    + """
CREATE TYPE feeling AS (m mood, since date, weight int);
CREATE TABLE t (id int, x feeling, y feeling[]);
INSERT INTO t VALUES (1, ROW('ok', '2024-01-02', 3), ARRAY[ROW('sad', NULL, 1)::feeling]), (2, NULL, '{}')""",
    "range_over_enum": ENUM
    + """
CREATE TYPE mood_range AS RANGE (subtype = mood);
CREATE TABLE t (id int, r mood_range, m mood_multirange);
INSERT INTO t VALUES (1, '[sad,happy)', '{[sad,ok), [happy,happy]}'), (2, 'empty', '{}')""",
    "reg_types": ENUM
    + """
CREATE SCHEMA s;
CREATE TABLE s.target (id int);
CREATE FUNCTION s.f(int) RETURNS int LANGUAGE sql AS 'SELECT $1';
CREATE FUNCTION s.neg(int, int) RETURNS bool LANGUAGE sql AS 'SELECT $1 <> $2';
CREATE OPERATOR s.<~> (LEFTARG = int, RIGHTARG = int, FUNCTION = s.neg);
CREATE TEXT SEARCH CONFIGURATION s.cfg (COPY = english);
CREATE TEXT SEARCH DICTIONARY s.dict (TEMPLATE = simple);
CREATE COLLATION s.coll FROM "C";
CREATE TABLE t (c regclass, ty regtype, p regproc, pp regprocedure, o regoper, oo regoperator,
  n regnamespace, r regrole, cfg regconfig, d regdictionary, co regcollation);
INSERT INTO t VALUES
  ('s.target', 'mood', 's.f', 's.f(int)', 's.<~>', 's.<~>(int,int)', 's', CURRENT_USER::text::regrole,
   's.cfg', 's.dict', 's.coll'),
  ('pg_class', 'int4', 'now', 'abs(int)', NULL, '+(int,int)', 'public', NULL, 'english', 'simple', '"C"')""",
    "oid_and_aclitem": """
CREATE TABLE target (id int);
CREATE TABLE t (o oid, acl aclitem[]);
INSERT INTO t SELECT 'target'::regclass::oid,
  ARRAY[makeaclitem(0, (SELECT oid FROM pg_roles WHERE rolname = CURRENT_USER), 'SELECT', false)]""",
    "session_dependent_text": ENUM
    + """
CREATE TABLE t (m mood, at timestamptz, d date, span interval, f float8, r real, cash money, raw bytea,
  n numeric, j jsonb, js json, b bit(3), v varbit, p point, c char(3), bc bpchar, tags text[]);
INSERT INTO t VALUES
  ('ok', '2024-03-01 12:00:00.123456+05', '2024-03-01', '1 mon 2 days 03:04:05.5', 0.1, '-0', 12.34, '\\x00ff',
   1.50, '{"a": 1.0}', '{"b": [1, 2]}', B'101', B'1', '(1,2)', 'ab', 'x  ', '[0:1]={a,b}'),
  (NULL, NULL, NULL, NULL, 'NaN', 'Infinity', NULL, NULL, 'NaN', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)""",
}


def load(server, db: str, script: str) -> None:
    with psycopg.connect(server.conninfo(db), autocommit=True) as conn:
        for statement in filter(str.strip, script.split(";\n")):
            conn.execute(statement)  # type: ignore[arg-type]


@pytest.fixture
def backed_up(pg_server, fresh_db, corpus_ctx):
    """backed_up(script) -> (engine, manifest, source db, restored db): backup and restore of a
    fresh database built by `script`; the restored copy is dropped at teardown."""
    restored: list[str] = []

    def run(script: str):
        db = fresh_db(pg_server)
        load(pg_server, db, script)
        engine = pg_engine(pg_server, [db])
        manifest = engine.full_backup(corpus_ctx)
        copy = f"{db}_copy"
        restored.append(copy)
        result = engine.restore(corpus_ctx, manifest, into=copy)
        assert result.comparison.ok, result.comparison.summary()
        return engine, manifest, db, copy

    yield run
    for copy in restored:
        pg_server.execute(f"DROP DATABASE IF EXISTS {quote_ident(copy)} WITH (FORCE)")


@pytest.mark.parametrize("case", sorted(CASES))
def test_value_type_restores_and_matches(case, pg_server, backed_up):
    engine, manifest, db, copy = backed_up(CASES[case])
    assert_pg_restored(pg_server, db, pg_server, copy)
    expected = manifest.fingerprints[db]["public.t"]
    assert expected.method == "record+text" and expected.rows >= 1
    assert engine.fingerprint(copy, {"public.t": expected.method})["public.t"] == expected


def test_text_forms_are_pinned_against_session_settings(pg_server, backed_up):
    engine, manifest, db, copy = backed_up(CASES["session_dependent_text"])
    pg_server.execute(
        f"ALTER DATABASE {quote_ident(copy)} SET TimeZone = 'America/New_York'; "
        f"ALTER DATABASE {quote_ident(copy)} SET DateStyle = 'SQL, DMY'; "
        f"ALTER DATABASE {quote_ident(copy)} SET IntervalStyle = 'sql_standard'; "
        f"ALTER DATABASE {quote_ident(copy)} SET extra_float_digits = 0; "
        f"ALTER DATABASE {quote_ident(copy)} SET bytea_output = 'escape'"
    )
    assert (
        pg_server.execute("SELECT at::text, span::text FROM t WHERE m = 'ok'", copy)[0]
        != pg_server.execute("SELECT at::text, span::text FROM t WHERE m = 'ok'", db)[0]
    )
    assert engine.fingerprint(copy) == manifest.fingerprints[db]


def test_exact_types_keep_the_binary_hash(pg_server, backed_up):
    engine, manifest, db, copy = backed_up(
        "CREATE TYPE pair AS (a int, b text);\n"
        "CREATE TABLE t (id int8, name text, at timestamptz, u uuid, c char(2), p pair, r int4range);\n"
        "INSERT INTO t VALUES (1, 'a', now(), gen_random_uuid(), 'x', ROW(1, 'y'), '[1,5)'), (2, NULL, NULL, NULL,"
        " NULL, NULL, NULL)"
    )
    assert manifest.fingerprints[db]["public.t"].method == "record"
    assert_pg_restored(pg_server, db, pg_server, copy)


CHANGES = {  # case -> an UPDATE in the copy that a user would see
    "enum": "UPDATE t SET x = 'sad' WHERE id = 1",
    "composite_with_enum": "UPDATE t SET x = ROW('happy', '2024-01-02', 3) WHERE id = 1",
    "range_over_enum": "UPDATE t SET r = '[sad,ok)' WHERE id = 1",
    "session_dependent_text": "UPDATE t SET n = 1.5 WHERE m = 'ok'",  # numeric's own hash ignores the scale
}
COARSE = {  # the types' own hashes cannot see these changes; the fingerprint must
    "numeric scale": ("n numeric", "1.50", "1.5"),
    "float sign of zero": ("f float8", "'0'", "'-0'"),
    "interval units": ("i interval", "'1 day'", "'24:00:00'"),
    "array bounds": ("a int[]", "'{1,2}'", "'[0:1]={1,2}'"),
    "jsonb number": ("j jsonb", "'[1.0]'", "'[1.00]'"),
    "bpchar spaces": ("b bpchar", "'x'", "'x '"),
}


@pytest.mark.parametrize("case", sorted(CHANGES))
def test_fingerprint_sees_a_changed_value(case, pg_server, backed_up):
    engine, manifest, db, copy = backed_up(CASES[case])
    pg_server.execute(CHANGES[case], copy)
    expected = manifest.fingerprints[db]["public.t"]
    actual = engine.fingerprint(copy, {"public.t": expected.method})["public.t"]
    assert actual.rows == expected.rows and actual.digest != expected.digest


@pytest.mark.parametrize("change", sorted(COARSE))
def test_fingerprint_sees_changes_the_type_hash_ignores(change, pg_server, fresh_db):
    column, before, after = COARSE[change]
    name = column.split()[0]
    db = fresh_db(pg_server)
    pg_server.execute(f"CREATE TABLE t ({column}); INSERT INTO t VALUES ({before})", db)
    with psycopg.connect(pg_server.conninfo(db), autocommit=True) as conn:
        kind = column.split(" ", 1)[1]
        blind = conn.execute(
            f"SELECT hash_record_extended(ROW({before}::{kind}), 0) = "  # type: ignore[arg-type]
            f"hash_record_extended(ROW({after}::{kind}), 0)"
        ).fetchone()
        assert blind == (True,), f"{kind}'s own hash does see {change}: the case tests nothing"
        first = fingerprint_tables(conn)["public.t"]
        conn.execute(f"UPDATE t SET {name} = {after}")  # type: ignore[arg-type]
        second = fingerprint_tables(conn)["public.t"]
    assert first.method == second.method == "record+text"
    assert first.digest != second.digest


def test_old_manifest_methods_are_still_read(pg_server, fresh_db):
    """Manifests written before this change name "record" (hash_record_extended of the whole
    row) or "text" (the row's text form): a copy is still hashed exactly as they were."""
    db = fresh_db(pg_server)
    pg_server.execute(
        "CREATE TABLE t (id int, v text, j json); CREATE TABLE dropped (a int, gone int, b text);"
        "INSERT INTO t SELECT g, 'v' || g, '{}' FROM generate_series(1, 50) g;"
        "INSERT INTO dropped SELECT g, g, 'x' FROM generate_series(1, 5) g;"
        "ALTER TABLE dropped DROP COLUMN gone",
        db,
    )
    old = {
        "public.t": ("text", "hashtextextended(t::text, 0)"),
        "public.dropped": ("record", "hash_record_extended(t, 0)"),
    }
    with psycopg.connect(pg_server.conninfo(db), autocommit=True) as conn:
        prints = fingerprint_tables(conn, {name: method for name, (method, _) in old.items()})
        for name, (method, expr) in old.items():
            digest = conn.execute(f"SELECT coalesce(sum({expr}), 0)::text FROM ONLY {name} AS t").fetchone()[0]
            assert (prints[name].method, prints[name].digest) == (method, digest), name
