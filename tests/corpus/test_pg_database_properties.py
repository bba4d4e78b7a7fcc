"""Corpus: a database's own properties survive a logical restore under a new name.

pg_dump's archive holds what is inside a database; encoding, locale, owner, ACL, connection
limit, comment and ALTER DATABASE / ALTER ROLE ... IN DATABASE settings belong to the database
itself. Each case is backed up, restored under the default new name and drilled; the oracle
compares pg_database (and the role settings) of source and copy, and a query whose answer
depends on the property shows the user-visible difference.
"""

from __future__ import annotations

import json
import secrets

import psycopg
import pytest
from typer.testing import CliRunner

from tests.corpus.conftest import pg_engine
from tests.corpus.oracle import assert_pg_restored, pg_state
from tests.fixtures.postgres import quote_ident
from vaultflow.blocks import PostgresTarget
from vaultflow.cli import app
from vaultflow.engines.postgres.db_properties import PROPERTIES_ROW, setting_clause
from vaultflow.errors import ConfigError
from vaultflow.manifest import parse_manifest


@pytest.fixture
def roles(pg_server):
    """make(prefix) -> a new role name on pg_server; roles are dropped at teardown."""
    made: list[str] = []

    def make(prefix: str, options: str = "") -> str:
        name = f"{prefix}_{secrets.token_hex(4)}"
        pg_server.execute(f"CREATE ROLE {quote_ident(name)} {options}")
        made.append(name)
        return name

    yield make
    for name in reversed(made):
        pg_server.execute(f"DROP OWNED BY {quote_ident(name)} CASCADE")  # privileges in the postgres db
        pg_server.execute(f"DROP ROLE IF EXISTS {quote_ident(name)}")


def back_up_restore_and_drill(server, db: str, ctx) -> tuple[object, str]:
    """Full backup of `db`, restore under the default name, drill; returns (restore result, new name).
    The restored database is the caller's to drop."""
    engine = pg_engine(server, [db])
    manifest = engine.full_backup(ctx)
    result = engine.restore(ctx, manifest)
    restored = result.restored[db]
    drill = engine.drill(ctx, manifest)
    assert drill.comparison.ok, drill.comparison.summary()
    assert any(t.table == PROPERTIES_ROW for t in drill.comparison.tables)
    assert server.execute("SELECT datname FROM pg_database WHERE datname LIKE 'vaultflow\\_drill\\_%'") == []
    return result, restored


def created_db(server, request, sql: str) -> str:
    """Run `sql` (with {db} for the quoted name) to create a database; dropped at teardown."""
    name = f"props_{secrets.token_hex(5)}"
    server.execute(sql.format(db=quote_ident(name)))
    request.addfinalizer(lambda: drop_all(server, name))
    return name


def drop_all(server, prefix: str) -> None:
    for (name,) in server.execute(f"SELECT datname FROM pg_database WHERE datname LIKE {prefix + '%'!r}"):
        server.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


def test_latin1_encoding_and_its_text(pg_server, corpus_ctx, request):
    db = created_db(
        pg_server, request, "CREATE DATABASE {db} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    )
    pg_server.execute("CREATE TABLE t (id int, name text); INSERT INTO t VALUES (1, 'café'), (2, 'Ærø')", dbname=db)
    result, restored = back_up_restore_and_drill(pg_server, db, corpus_ctx)
    assert result.comparison.ok, result.comparison.summary()
    assert pg_server.execute(f"SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = '{restored}'") == [
        ("LATIN1",)
    ]
    assert_pg_restored(pg_server, db, pg_server, restored)


def test_collation_provider_and_locale_order_rows(pg_server, corpus_ctx, request):
    if pg_server.version >= 17:  # the embedded 18 has no ICU; its builtin provider has Unicode case rules
        db = created_db(
            pg_server,
            request,
            "CREATE DATABASE {db} LOCALE_PROVIDER builtin BUILTIN_LOCALE 'C.UTF-8' "
            "LC_COLLATE 'C.utf8' LC_CTYPE 'C.utf8' TEMPLATE template0",
        )
        probe, expected = "SELECT upper('é')", [("É",)]
    else:  # Debian's 15 has ICU: de-DE sorts a < B < c, where C sorts B < a < c
        db = created_db(
            pg_server,
            request,
            "CREATE DATABASE {db} LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LOCALE 'C' TEMPLATE template0",
        )
        probe, expected = "SELECT string_agg(x, '' ORDER BY x) FROM t", [("aBc",)]
    pg_server.execute("CREATE TABLE t (x text); INSERT INTO t VALUES ('c'), ('B'), ('a')", dbname=db)
    assert pg_server.execute(probe, dbname=db) == expected
    result, restored = back_up_restore_and_drill(pg_server, db, corpus_ctx)
    assert result.comparison.ok, result.comparison.summary()
    assert pg_server.execute(probe, dbname=restored) == expected
    assert_pg_restored(pg_server, db, pg_server, restored)


def test_owner_acl_limit_comment_and_settings(pg_server, corpus_ctx, request, roles):
    owner, reader, delegate, helper = roles("owner"), roles("reader"), roles("delegate"), roles("helper")
    db = created_db(pg_server, request, f"CREATE DATABASE {{db}} OWNER {quote_ident(owner)}")
    q = quote_ident(db)
    pg_server.execute("CREATE SCHEMA app; CREATE TABLE app.t (id int); INSERT INTO app.t VALUES (1), (2)", dbname=db)
    pg_server.execute(f"""
        REVOKE CONNECT ON DATABASE {q} FROM PUBLIC;
        GRANT CONNECT ON DATABASE {q} TO {quote_ident(reader)};
        GRANT TEMPORARY ON DATABASE {q} TO {quote_ident(delegate)} WITH GRANT OPTION;
        SET ROLE {quote_ident(delegate)}; GRANT TEMPORARY ON DATABASE {q} TO {quote_ident(helper)}; RESET ROLE;
        ALTER DATABASE {q} CONNECTION LIMIT 7;
        COMMENT ON DATABASE {q} IS 'billing, do not drop';
        ALTER DATABASE {q} SET search_path = app, "My Schema", public;
        ALTER DATABASE {q} SET work_mem = '8MB';
        ALTER DATABASE {q} SET session_preload_libraries = 'auto_explain';
        ALTER ROLE {quote_ident(reader)} IN DATABASE {q} SET statement_timeout = '5s';
        ALTER DATABASE {q} SET default_transaction_read_only = on""")
    result, restored = back_up_restore_and_drill(pg_server, db, corpus_ctx)
    assert result.comparison.ok, result.comparison.summary()
    source, copy = pg_state(pg_server, db).properties, pg_state(pg_server, restored).properties
    assert copy["acl"] == source["acl"] and "=Tc/" not in str(copy["acl"])  # PUBLIC did not regain CONNECT
    assert copy["connection_limit"] == 7 and copy["comment"] == "billing, do not drop"
    assert pg_server.execute("SHOW search_path", dbname=restored) == [('app, "My Schema", public',)]
    assert_pg_restored(pg_server, db, pg_server, restored)


def test_comparison_sees_a_lost_property_and_old_manifests_restore(pg_server, corpus_ctx, request):
    db = created_db(pg_server, request, "CREATE DATABASE {db}")
    pg_server.execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)", dbname=db)
    pg_server.execute(f"COMMENT ON DATABASE {quote_ident(db)} IS 'kept'")
    engine = pg_engine(pg_server, [db])
    manifest = engine.full_backup(corpus_ctx)
    assert manifest.consistency.database_properties[db].comment == "kept"

    # A recorded setting the server cannot hold in that form (it stores 'a, b'): the property
    # comparison reads the copy back and must see the difference.
    props = manifest.consistency.database_properties[db].model_copy(update={"settings": ["search_path=a,b"]})
    altered = manifest.model_copy(
        update={"consistency": manifest.consistency.model_copy(update={"database_properties": {db: props}})}
    )
    result = engine.restore(corpus_ctx, altered, into=f"{db}_altered")
    assert [(t.table, t.status) for t in result.comparison.mismatches] == [
        ("(database properties: settings)", "mismatch")
    ]

    # Written before properties were recorded: no such field; still loads and restores.
    doc = manifest.model_dump(mode="json")
    del doc["consistency"]["database_properties"]
    old = parse_manifest(json.dumps(doc).encode(), "old manifest")
    assert old.consistency.database_properties is None
    result = engine.restore(corpus_ctx, old, into=f"{db}_old")
    assert result.comparison.ok and [t.table for t in result.comparison.tables] == ["public.t"]


@pytest.mark.usefixtures("prefect_api")
def test_non_superuser_restores_with_no_owner_and_no_privileges(pg_server, request, roles, tmp_path):
    """As a user would: `vaultflow restore` as a role with CREATEDB only. Without the options it
    fails before creating anything, with an error that names them; with them the data comes back,
    owned by that role."""
    restorer, reader = roles("restorer", "LOGIN CREATEDB"), roles("reader")
    db = created_db(pg_server, request, "CREATE DATABASE {db}")
    pg_server.execute(
        f"CREATE TABLE t (id int, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b'); "
        f"GRANT SELECT ON t TO {quote_ident(reader)}",
        dbname=db,
    )
    pg_server.execute(
        f"REVOKE CONNECT ON DATABASE {quote_ident(db)} FROM PUBLIC; COMMENT ON DATABASE {quote_ident(db)} IS 'kept'"
    )
    common = dict(
        host=pg_server.host,
        port=pg_server.port,
        databases=[db],
        target_name=f"owners{pg_server.version}",
        bin_dir=str(pg_server.client_bin_dir),
    )
    PostgresTarget(user=pg_server.user, **common).save("corpus-owner-admin", overwrite=True)
    PostgresTarget(user=restorer, **common).save("corpus-owner-restorer", overwrite=True)
    repo, runner = str(tmp_path / "repo"), CliRunner()
    assert runner.invoke(app, ["backup", "-t", "corpus-owner-admin", "--repo-path", repo]).exit_code == 0
    existing = pg_server.execute("SELECT datname FROM pg_database ORDER BY 1")

    refused = runner.invoke(app, ["restore", "-t", "corpus-owner-restorer", "--repo-path", repo])
    assert refused.exit_code == 1
    assert "--no-owner" in refused.output and "--no-privileges" in refused.output and db in refused.output
    assert pg_server.execute("SELECT datname FROM pg_database ORDER BY 1") == existing  # nothing was made

    restored = runner.invoke(
        app, ["restore", "-t", "corpus-owner-restorer", "--repo-path", repo, "--no-owner", "--no-privileges"]
    )
    assert restored.exit_code == 0, restored.output
    (copy,) = [n for (n,) in pg_server.execute("SELECT datname FROM pg_database ORDER BY 1") if (n,) not in existing]
    source, result = pg_state(pg_server, db), pg_state(pg_server, copy)
    assert result.rows == source.rows
    assert {k: v for k, v in result.properties.items() if k not in ("owner", "acl")} == {
        k: v for k, v in source.properties.items() if k not in ("owner", "acl")
    }
    assert result.properties["owner"] == restorer
    assert pg_server.execute("SELECT tableowner FROM pg_tables WHERE tablename = 't'", dbname=copy) == [(restorer,)]


def test_a_locale_the_server_lacks_is_named_before_anything_is_restored(pg15, pg18, corpus_ctx, request):
    """An ICU database backed up on PostgreSQL 15 cannot be recreated by the embedded 18 (no ICU):
    a clear error naming the database and its locale, and no database left behind."""
    db = created_db(
        pg15, request, "CREATE DATABASE {db} LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LOCALE 'C' TEMPLATE template0"
    )
    manifest = pg_engine(pg15, [db]).full_backup(corpus_ctx)
    existing = pg18.execute("SELECT datname FROM pg_database ORDER BY 1")
    with pytest.raises(ConfigError, match=rf"{db}.*icu locale 'de-DE'.*install the locale or ICU"):
        pg_engine(pg18, [db], name=manifest.target).restore(corpus_ctx, manifest)
    assert pg18.execute("SELECT datname FROM pg_database ORDER BY 1") == existing


@pytest.mark.parametrize(
    "stored, clause",
    [
        ('search_path=app, "My Schema", public', "SET \"search_path\" = 'app', 'My Schema', 'public'"),
        ('search_path="a""b"', 'SET "search_path" = \'a"b\''),
        ('search_path=""', "SET \"search_path\" = ''"),
        ("work_mem=8MB", "SET \"work_mem\" = '8MB'"),
        ("app.tenant=it's", "SET \"app\".\"tenant\" = 'it''s'"),
    ],
)
def test_setting_clauses_store_the_same_value_again(pg18, fresh_db, stored, clause):
    db = fresh_db(pg18)
    with psycopg.connect(pg18.conninfo()) as conn:
        assert setting_clause(stored).as_string(conn) == clause
    pg18.execute(f"ALTER DATABASE {quote_ident(db)} {clause}")
    assert pg18.execute(
        f"SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        f"WHERE d.datname = '{db}'"
    ) == [([stored],)]
