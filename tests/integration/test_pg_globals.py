"""What the globals dump of a logical backup holds (docs/postgres.md, "What the backup role needs").

On PostgreSQL 15 and 18: backed up as a superuser or as a role granted pg_read_all_data, the
globals object holds every role's SCRAM hash; with role_passwords=False it holds the roles
without them, and then a role with neither privilege can take the backup.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from vaultflow.blocks import BackupRepository, PostgresTarget
from vaultflow.engines.base import BackupContext
from vaultflow.testing.postgres_server import PostgresInstance

SCRAM = "PASSWORD 'SCRAM-SHA-256$4096:"


@pytest.fixture
def roles(pg_server: PostgresInstance, fresh_db) -> Iterator[dict[str, str]]:
    """A database with one table, an application role with a password, a pg_read_all_data
    role and a role with only CONNECT and SELECT; dropped afterwards (roles are cluster-wide)."""
    tag = secrets.token_hex(4)
    names = {"app": f"vf_app_{tag}", "reader": f"vf_reader_{tag}", "plain": f"vf_plain_{tag}"}
    database = fresh_db(pg_server)
    pg_server.execute(
        f"CREATE ROLE {names['app']} LOGIN PASSWORD 'app-{tag}'; "
        f"CREATE ROLE {names['reader']} LOGIN PASSWORD 'reader-{tag}'; "
        f"GRANT pg_read_all_data TO {names['reader']}; "
        f"CREATE ROLE {names['plain']} LOGIN PASSWORD 'plain-{tag}'"
    )
    pg_server.execute(
        f"CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2); GRANT SELECT ON t TO {names['plain']}",
        dbname=database,
    )
    try:
        yield {**names, "database": database}
    finally:
        pg_server.execute(f"DROP OWNED BY {names['plain']}", dbname=database)
        for name in names.values():
            pg_server.execute(f"DROP ROLE IF EXISTS {name}")


def globals_dump(server: PostgresInstance, user: str, database: str, repo_dir: Path, **fields) -> str:
    """Take a logical full backup as `user`; the text of its globals object."""
    target = PostgresTarget(
        host=server.host,
        port=server.port,
        user=user,
        databases=[database],
        bin_dir=str(server.client_bin_dir),
        target_name="globals",
        **fields,
    )
    repository = BackupRepository(local_path=str(repo_dir)).build()
    manifest = target.engine().full_backup(BackupContext(repository=repository))
    [key] = [o.key for o in manifest.objects if o.role == "globals"]
    [path] = repo_dir.rglob(f"{manifest.id}/{key}")
    return zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read().decode()


def role_line(dump: str, role: str) -> str:
    [line] = [line for line in dump.splitlines() if line.startswith(f"ALTER ROLE {role} WITH ")]
    return line


@pytest.mark.parametrize("as_role", ["superuser", "reader"])
def test_globals_hold_scram_hashes_for_superuser_and_pg_read_all_data(pg_server, roles, as_role, tmp_path):
    user = pg_server.user if as_role == "superuser" else roles["reader"]
    dump = globals_dump(pg_server, user, roles["database"], tmp_path / "repo")
    for role in ("app", "reader", "plain"):
        assert SCRAM in role_line(dump, roles[role]), role_line(dump, roles[role])


def test_role_passwords_false_leaves_the_hashes_out(pg_server, roles, tmp_path):
    # A role with neither superuser nor pg_read_all_data can then back up the globals too.
    dump = globals_dump(pg_server, roles["plain"], roles["database"], tmp_path / "repo", role_passwords=False)
    for role in ("app", "reader", "plain"):
        line = role_line(dump, roles[role])
        assert "LOGIN" in line and "PASSWORD" not in line, line
    assert "SCRAM-SHA-256" not in dump
