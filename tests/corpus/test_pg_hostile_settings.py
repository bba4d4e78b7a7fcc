"""Corpus: settings of the source that would stop vaultflow's own sessions, and a database name
no passfile line can carry (issue 8, found by a newcomer's try).

- `ALTER DATABASE/ROLE ... SET statement_timeout = '1ms'` (and idle_in_transaction_session_timeout,
  default_transaction_read_only) must not cancel the fingerprints or kill the snapshot's open
  transaction: pg_dump overrides them for itself, and so must every vaultflow session.
- a database named with a line break (any role that may create databases can make one) must
  not stop the backup of all databases: it is backed up and restored like any other.
"""

from __future__ import annotations

import secrets

from tests.corpus.conftest import pg_engine
from tests.corpus.oracle import assert_pg_restored
from tests.fixtures.postgres import quote_ident


def test_timeouts_set_on_the_database_and_the_role_do_not_stop_backup_or_restore(pg_server, fresh_db, corpus_ctx):
    db = fresh_db(pg_server)
    role = f"bk_{secrets.token_hex(4)}"
    pg_server.execute(
        "CREATE TABLE t (id int PRIMARY KEY, v text); "
        "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 50000) g",
        dbname=db,
    )
    pg_server.execute(
        f"ALTER DATABASE {quote_ident(db)} SET statement_timeout = '1ms'; "
        f"ALTER DATABASE {quote_ident(db)} SET idle_in_transaction_session_timeout = '1ms'; "
        f"CREATE ROLE {role} LOGIN SUPERUSER; ALTER ROLE {role} SET statement_timeout = '1ms'; "
        f"ALTER ROLE {role} SET default_transaction_read_only = on"
    )
    restored = f"{db}_copy"
    try:
        engine = pg_engine(pg_server, [db], user=role, password=None)
        manifest = engine.full_backup(corpus_ctx)
        assert manifest.fingerprints[db]["public.t"].rows == 50000
        result = engine.restore(corpus_ctx, manifest, into=restored)
        assert result.comparison.ok, result.comparison.summary()
        assert_pg_restored(pg_server, db, pg_server, restored)
    finally:
        pg_server.execute(f"DROP DATABASE IF EXISTS {quote_ident(restored)} WITH (FORCE)")
        pg_server.execute(f"DROP ROLE IF EXISTS {role}")


def test_a_database_named_with_a_line_break_is_backed_up_with_the_others(pg_with_password, fresh_db, corpus_ctx):
    plain = fresh_db(pg_with_password)
    odd = fresh_db(pg_with_password, f"nl\nx_{secrets.token_hex(3)}")
    for db in (plain, odd):
        pg_with_password.execute("CREATE TABLE whoami AS SELECT current_database() AS name", dbname=db)
    engine = pg_engine(pg_with_password, [plain, odd])
    manifest = engine.full_backup(corpus_ctx)
    assert {o.database for o in manifest.objects if o.role == "database-dump"} == {plain, odd}
    restored = f"r_{secrets.token_hex(4)}"
    try:
        result = engine.restore(corpus_ctx, manifest, into=restored, databases=[odd])
        assert result.comparison.ok, result.comparison.summary()
        assert_pg_restored(pg_with_password, odd, pg_with_password, restored)
        assert pg_with_password.execute("SELECT name FROM whoami", dbname=restored) == [(odd,)]
    finally:
        pg_with_password.execute(f"DROP DATABASE IF EXISTS {quote_ident(restored)} WITH (FORCE)")
