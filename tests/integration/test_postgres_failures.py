"""How the PostgreSQL engine fails, against real servers: every error names what is wrong,
and no failure leaves a half-made backup or database that looks real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest

from tests.fixtures.postgres import MakeDb, quote_ident
from tests.fixtures.processes import descendants, named
from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.errors import (
    ConfigError,
    IntegrityError,
    NotFoundError,
    RefusedError,
    ServerUnavailableError,
    TransientError,
    is_transient,
)
from vaultflow.manifest import BackupKind, new_backup_id
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore, put_bytes
from vaultflow.testing.postgres_server import PostgresInstance
from vaultflow.testing.unprivileged import free_port


def engine_for(server: PostgresInstance, databases: list[str] | None = None) -> PostgresEngine:
    return PostgresEngine(
        PostgresSettings(
            target_name=f"pg{server.version}",
            host=server.host,
            port=server.port,
            user=server.user,
            password=server.password,
            databases=databases or [],
        )
    )


def databases(server: PostgresInstance) -> set[str]:
    return {row[0] for row in server.execute("SELECT datname FROM pg_database")}


def repo_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def backed_up(pg_server: PostgresInstance, fresh_db: MakeDb, tmp_path: Path):
    """A database with 100 rows and a committed backup of it: (server, db, engine, repo, manifest)."""
    db = fresh_db(pg_server)
    pg_server.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", db)
    pg_server.execute("INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 100) g", db)
    engine, repo = engine_for(pg_server, [db]), Repository(LocalStore(tmp_path / "repo"))
    return pg_server, db, engine, repo, engine.full_backup(BackupContext(repo))


def test_unreachable_host_is_transient(tmp_path: Path) -> None:
    port = free_port()
    engine = PostgresEngine(PostgresSettings(target_name="gone", host="127.0.0.1", port=port, connect_timeout=3))
    with pytest.raises(ServerUnavailableError) as info:
        engine.full_backup(BackupContext(Repository(LocalStore(tmp_path / "repo"))))
    assert is_transient(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert repo_files(tmp_path / "repo") == []


def test_missing_database_is_named_and_leaves_nothing(
    pg_server: PostgresInstance, fresh_db: MakeDb, tmp_path: Path
) -> None:
    db = fresh_db(pg_server)
    engine = engine_for(pg_server, [db, "no_such_db_42"])
    with pytest.raises(NotFoundError) as info:
        engine.full_backup(BackupContext(Repository(LocalStore(tmp_path / "repo"))))
    assert not is_transient(info.value)
    assert "no_such_db_42" in str(info.value) and f"{pg_server.host}:{pg_server.port}" in str(info.value)
    assert repo_files(tmp_path / "repo") == []


def test_unwritable_repository_is_config_error(pg_server: PostgresInstance, fresh_db: MakeDb, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file where the repository's parent should be")
    engine = engine_for(pg_server, [fresh_db(pg_server)])
    with pytest.raises(ConfigError) as info:
        engine.full_backup(BackupContext(Repository(LocalStore(blocker / "repo"))))
    assert str(blocker) in str(info.value) and "is a file, not a directory" in str(info.value)
    assert named(descendants(psutil.Process()), "pg_dump") == []


def test_restore_refuses_existing_database_unless_overwrite(backed_up) -> None:
    server, db, engine, repo, manifest = backed_up
    server.execute("DELETE FROM t WHERE id > 10", db)
    server.execute("INSERT INTO t VALUES (1000, 'changed after the backup')", db)
    changed = server.execute("SELECT * FROM t ORDER BY id", db)
    existing = databases(server)

    with pytest.raises(RefusedError) as info:
        engine.restore(BackupContext(repo), manifest, into=db)
    assert db in str(info.value) and "overwrite" in str(info.value)
    assert server.execute("SELECT * FROM t ORDER BY id", db) == changed
    assert databases(server) == existing

    with pytest.raises(NotFoundError, match="has no database nope"):
        engine.restore(BackupContext(repo), manifest, databases=["nope"])

    result = engine.restore(BackupContext(repo), manifest, into=db, overwrite=True)
    assert result.restored == {db: db} and result.comparison.ok
    assert server.execute("SELECT count(*), max(id) FROM t", db) == [(100, 100)]
    assert databases(server) == existing  # no scratch copy left behind


def test_corrupted_payload_refuses_restore(backed_up) -> None:
    server, db, engine, repo, manifest = backed_up
    obj = next(o for o in manifest.objects if o.database == db)
    path = repo.store.root / repo.object_key(manifest, obj.key)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    existing = databases(server)
    before = server.execute("SELECT * FROM t ORDER BY id", db)

    with pytest.raises(IntegrityError) as info:
        engine.restore(BackupContext(repo), manifest)
    assert f"{manifest.id}/{obj.key}" in str(info.value)
    assert databases(server) == existing  # neither the target nor a scratch copy remains

    with pytest.raises(IntegrityError, match=f"{manifest.id}/{obj.key}"):
        engine.restore(BackupContext(repo), manifest, into=db, overwrite=True)
    assert server.execute("SELECT * FROM t ORDER BY id", db) == before
    assert databases(server) == existing

    checks = {c.key: c for c in repo.verify_backup(manifest)}
    assert not checks[obj.key].ok and "sha256" in checks[obj.key].detail and obj.sha256 in checks[obj.key].detail
    assert checks["globals.sql.zst"].ok
    assert not repo.verify_object(manifest, obj.key, deep=True).ok


def test_unreadable_manifests_do_not_hide_good_backups(backed_up, drop_later_db) -> None:
    server, db, engine, repo, manifest = backed_up
    later = datetime.now(UTC) + timedelta(minutes=1)
    broken_id = new_backup_id(BackupKind.FULL, later)
    future_id = new_backup_id(BackupKind.FULL, later + timedelta(seconds=1))
    prefix = repo.target_prefix("postgres", manifest.target) + "backups/"
    put_bytes(repo.store, f"{prefix}{broken_id}/manifest.json", manifest.to_json()[:57])
    future = json.loads(manifest.to_json())
    future.update(id=future_id, schema_version=99)
    put_bytes(repo.store, f"{prefix}{future_id}/manifest.json", json.dumps(future).encode())

    catalog = repo.catalog("postgres", manifest.target)
    assert catalog.manifests == [manifest] and catalog.latest() == manifest
    problems = {p.key: p.message for p in catalog.problems}
    assert set(problems) == {f"{prefix}{broken_id}/manifest.json", f"{prefix}{future_id}/manifest.json"}
    assert "not valid JSON" in problems[f"{prefix}{broken_id}/manifest.json"]
    assert "schema_version 99" in problems[f"{prefix}{future_id}/manifest.json"]
    with pytest.raises(NotFoundError, match=f"backup {future_id} is unreadable"):
        catalog.get(future_id)
    # Unreadable is not orphaned: nothing may offer to delete them.
    assert repo.orphans("postgres", manifest.target, timedelta(0), datetime.now(UTC)) == []

    # 'latest' would silently mean an older backup than the newest one: refused, naming both; the
    # good backup restores by its id.
    with pytest.raises(RefusedError, match=f"(?s)the newest backup {future_id} cannot be read.*{manifest.id}"):
        catalog.resolve("latest")
    result = engine.restore(BackupContext(repo), catalog.resolve(manifest.id), into=f"{db}_good")
    drop_later_db(server, f"{db}_good")
    assert result.comparison.ok
    assert server.execute("SELECT count(*) FROM t", f"{db}_good") == [(100,)]


@pytest.fixture
def drop_later_db():
    created: list[tuple[PostgresInstance, str]] = []
    yield lambda server, name: created.append((server, name))
    for server, name in created:
        server.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


KILLED_RUN = """
import sys
from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
engine = PostgresEngine(PostgresSettings.model_validate_json(sys.argv[1]))
engine.full_backup(BackupContext(Repository(LocalStore(sys.argv[2])), log=lambda line: None))
print("finished")
"""


def test_backup_killed_mid_stream_leaves_only_orphans(
    pg_server: PostgresInstance, fresh_db: MakeDb, tmp_path: Path
) -> None:
    db = fresh_db(pg_server)
    pg_server.execute(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 500000) g",
        db,
    )  # ~55 MB: over a second to dump
    engine, root = engine_for(pg_server, [db]), tmp_path / "repo"
    backups = root / "postgres" / engine.config.name / "backups"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN, engine.config.model_dump_json(), str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            partial = (
                [p for p in backups.glob("*/db/.tmp-*") if p.stat().st_size > 1_000_000] if backups.exists() else []
            )
            if partial:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the backup ended before it could be killed: {proc.stdout.read()!r}"
        tools = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # pg_dump loses its reader and dies of SIGPIPE; make sure none outlives the test.
    _, alive = psutil.wait_procs(tools, timeout=15)
    for tool in alive:
        tool.kill()
    assert proc.returncode == -signal.SIGKILL and not alive

    [backup_dir] = list(backups.iterdir())
    assert not list(root.rglob("manifest.json"))
    repo = Repository(LocalStore(root))
    catalog = repo.catalog("postgres", engine.config.name)
    assert catalog.manifests == [] and catalog.problems == []
    with pytest.raises(NotFoundError, match="no complete backup"):
        catalog.resolve("latest")

    prefix = repo.backup_prefix("postgres", engine.config.name, backup_dir.name)
    orphans = repo.orphans("postgres", engine.config.name, grace=timedelta(0), now=datetime.now(UTC))
    assert orphans and all(o.key.startswith(prefix) for o in orphans)
    assert prefix + "globals.sql.zst" in {o.key for o in orphans}
    # ...but not while they may still belong to a running backup.
    assert repo.orphans("postgres", engine.config.name, grace=timedelta(hours=1), now=datetime.now(UTC)) == []
    assert repo.discard_payload("postgres", engine.config.name, backup_dir.name) == len(orphans)
    assert repo.orphans("postgres", engine.config.name, timedelta(0), datetime.now(UTC)) == []
    # The object being streamed when the run died is a temp file: prune's sweep removes it.
    assert list(backups.rglob(".tmp-*"))
    assert repo.sweep_partial("postgres", engine.config.name, datetime.now(UTC) + timedelta(seconds=1)) >= 1
    assert not list(backups.rglob(".tmp-*"))


def test_sweep_partial_removes_only_old_interrupted_writes(tmp_path: Path) -> None:
    repo = Repository(LocalStore(tmp_path))
    backup_dir = tmp_path / "postgres" / "t" / "backups" / "20261126T020000.000Z-F" / "db"
    backup_dir.mkdir(parents=True)
    old, fresh = backup_dir / ".tmp-old", backup_dir / ".tmp-fresh"
    old.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    cutoff = datetime.now(UTC) - timedelta(hours=1)
    assert repo.sweep_partial("postgres", "t", cutoff) == 1
    assert not old.exists() and fresh.exists()


def test_a_refusal_by_the_server_itself_is_permanent(pg18: PostgresInstance, fresh_db: MakeDb, tmp_path: Path) -> None:
    """No CONNECT privilege (the server says FATAL) answers the same on every retry: ConfigError naming
    the database, not a transient ServerUnavailableError."""
    db = fresh_db(pg18)
    role = f"noconnect_{db[-6:]}"
    pg18.execute(
        f"CREATE ROLE {role} LOGIN IN ROLE pg_read_all_data; REVOKE CONNECT ON DATABASE {quote_ident(db)} FROM PUBLIC"
    )
    try:
        engine = PostgresEngine(
            PostgresSettings(target_name="refused", host=pg18.host, port=pg18.port, user=role, databases=[db])
        )
        with pytest.raises(ConfigError, match=f"{db}.*CONNECT privilege") as info:
            engine.full_backup(BackupContext(Repository(LocalStore(tmp_path / "repo"))))
        assert not is_transient(info.value)
    finally:
        pg18.execute(f"DROP ROLE {role}")


def test_a_database_dropped_while_a_physical_backup_lists_the_cluster_is_retryable(pg_server: PostgresInstance) -> None:
    """A database in pg_database that is gone when the physical backup connects to fingerprint it
    (a drill's scratch database, a user's DROP) retries the step instead of failing it for good."""
    from vaultflow.engines.postgres.physical import _listed_database

    config = PostgresSettings(target_name="listed", host=pg_server.host, port=pg_server.port, user=pg_server.user)
    with pytest.raises(TransientError, match="database 'vf_dropped_meanwhile' on .* was dropped while"):
        with _listed_database(config, "vf_dropped_meanwhile"):
            pass
    with _listed_database(config, "postgres") as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("postgres",)
