"""PostgreSQL 15 file-level incremental and differential physical backups (pg_backup_start/stop +
changed files of the data directory) against Debian's system PostgreSQL 15 with archive_mode on
and the real wal-push archive_command: a chain full -> incremental -> incremental -> differential,
every backup restored, started and compared; sizes; broken chains refused leaving nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.postgres import restored_instance, system_bin_dir_below, traversable_tmp_dir
from tests.fixtures.wal import ArchivingServer
from tests.integration.test_pg_incremental import Chain as IncrementalChain
from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.chain import restore_chain
from vaultflow.engines.postgres.cluster import stop_cluster
from vaultflow.engines.postgres.engine import PostgresEngine, fingerprint_tables
from vaultflow.engines.postgres.filelevel import FILELIST_OBJECT, FILES_OBJECT, METHOD
from vaultflow.engines.postgres.incremental import ChainBrokenError, physical_incremental_backup
from vaultflow.engines.postgres.physical import BASE_OBJECT, UNLOGGED_SQL
from vaultflow.engines.postgres.recovery import start_restored_cluster
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.errors import ConfigError, IntegrityError
from vaultflow.manifest import BackupKind, Fingerprint
from vaultflow.proc import short_temp_root
from vaultflow.repository import MANIFEST, Repository
from vaultflow.stores import LocalStore
from vaultflow.testing.postgres_server import PostgresInstance, running_postgres
from vaultflow.testing.service_python import ServicePython
from vaultflow.testing.unprivileged import SERVICE_USER, give_to_service_user, running_as_root

RUN_AS = SERVICE_USER if running_as_root() else None
TARGET = "pg15-filelevel"
STATIC_ROWS = 300_000
Prints = dict[str, dict[str, Fingerprint]]


def config_for(
    server: PostgresInstance, *, data_directory: Path | None | str = "same", name: str = TARGET
) -> PostgresSettings:
    directory = server.data_dir if data_directory == "same" else data_directory
    return PostgresSettings(
        target_name=name,
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        physical_fingerprints=True,
        mode="physical",
        bin_dir=str(server.client_bin_dir),
        server_bin_dir=str(server.bin_dir),
        restore_os_user=RUN_AS,
        data_directory=str(directory) if directory else None,
    )


def fingerprints(conninfo) -> Prints:
    """Every user table of every database; unlogged ones as empty (a physical copy resets them)."""
    with psycopg.connect(conninfo("postgres"), autocommit=True) as conn:
        databases = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1"
            ).fetchall()
        ]
    result = {}
    for database in databases:
        with psycopg.connect(conninfo(database), autocommit=True) as conn:
            prints = fingerprint_tables(conn)
            for schema, table in conn.execute(UNLOGGED_SQL).fetchall():
                name = f"{schema}.{table}"
                prints[name] = Fingerprint(count=0, digest="0", method=prints[name].method)
            result[database] = prints
    return result


def without(prints: Prints, tables: set[tuple[str, str]]) -> Prints:
    return {db: {t: f for t, f in p.items() if (db, t) not in tables} for db, p in prints.items()}


def run(server: PostgresInstance, db: str, *statements: str) -> None:
    with psycopg.connect(server.conninfo(db), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


def relation_path(server: PostgresInstance, db: str, table: str) -> str:
    return server.execute(f"SELECT pg_relation_filepath('{table}')", db)[0][0]


@dataclass
class Chain(IncrementalChain):
    gone: list[str] = field(default_factory=list)  # data-dir paths dropped before incr2


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with traversable_tmp_dir("vffile-") as path:
        yield path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, service_python: ServicePython) -> Iterator[ArchivingServer]:
    """PostgreSQL 15 with archive_mode on and wal-push into a spool: pg_backup_stop(true) waits
    for the archiver, as in production."""
    spool_parent = Path(tempfile.mkdtemp(prefix="vfwal15-", dir=short_temp_root()))
    give_to_service_user(spool_parent)
    spool = spool_parent / "spool"
    settings = {
        "archive_mode": "on",
        "archive_command": service_python.command("push", "%p", "--spool", str(spool)),
        "wal_recycle": "off",
        "wal_level": "replica",
    }
    try:
        with running_postgres(
            system_bin_dir_below(17), tmp_path_factory.mktemp("pg15file"), name="pg15file", settings=settings
        ) as pg:
            yield ArchivingServer(pg, spool, service_python)
    finally:
        shutil.rmtree(spool_parent, ignore_errors=True)


@pytest.fixture(scope="module")
def chain(server: ArchivingServer, workdir: Path) -> Chain:
    """full -> change -> incremental -> change -> incremental -> change -> differential. Nothing
    writes while a backup runs, so the fingerprints recorded after each describe what it holds."""
    pg = server.pg
    result = Chain(pg, workdir / "repo")
    engine = PostgresEngine(config_for(pg))
    ctx = BackupContext(result.repo, log=lambda line: None)
    pg.execute("CREATE DATABASE shop")
    run(
        pg,
        "shop",
        "CREATE TABLE static (id int PRIMARY KEY, payload text NOT NULL)",
        f"INSERT INTO static SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, {STATIC_ROWS}) g",
        "CREATE TABLE accounts AS SELECT g AS id, g * 10 AS balance FROM generate_series(1, 1000) g",
        "CREATE TABLE doomed AS SELECT g FROM generate_series(1, 500) g",
        "CREATE TABLE emptied AS SELECT g, md5(g::text) AS h FROM generate_series(1, 500) g",
        "CREATE UNLOGGED TABLE scratch AS SELECT g FROM generate_series(1, 100) g",
        "VACUUM (FREEZE, ANALYZE)",
        "CHECKPOINT",
    )
    # The loaded files must be clearly older than the full's start: files written within a second
    # or two of it (the backup_manifest's whole-second Last-Modified, plus a margin) count as
    # "racy" and travel again in the first incremental.
    time.sleep(2.5)
    changes = [
        (
            "incremental",
            [
                "UPDATE accounts SET balance = balance + 1 WHERE id % 3 = 0",
                "INSERT INTO accounts SELECT g, g FROM generate_series(1001, 1200) g",
                "CREATE TABLE newcomer AS SELECT g, g::text AS t FROM generate_series(1, 3000) g",
            ],
        ),
        ("incremental", ["DELETE FROM accounts WHERE id % 10 = 0", "DROP TABLE doomed"]),
        ("differential", ["TRUNCATE emptied", "UPDATE newcomer SET t = 'changed' WHERE g <= 100"]),
    ]
    t0 = time.monotonic()
    result.backups.append(engine.full_backup(ctx))
    result.seconds["full"] = time.monotonic() - t0
    result.recorded[result.backups[0].id] = fingerprints(pg.conninfo)
    for number, (kind, statements) in enumerate(changes, 1):
        if number == 2:  # dropped before incr2: their files must be gone from its restore
            result.gone = [
                relation_path(pg, "shop", "doomed"),
                "base/" + str(pg.execute("SELECT oid FROM pg_database WHERE datname = 'annex'")[0][0]),
            ]
            pg.execute("DROP DATABASE annex")
        run(pg, "shop", *statements)
        if number == 1:  # a database born after the full, dropped again before incr2
            pg.execute("CREATE DATABASE annex")
            run(
                pg,
                "annex",
                "CREATE TABLE notes AS SELECT g FROM generate_series(1, 2000) g",
                'CREATE UNLOGGED TABLE "Notes Cache" AS SELECT g FROM generate_series(1, 50) g',
            )
        t0 = time.monotonic()
        backup = engine.incremental_backup(ctx, BackupKind(kind))
        result.seconds[f"{kind} {number}"] = time.monotonic() - t0
        result.backups.append(backup)
        result.recorded[backup.id] = fingerprints(pg.conninfo)
    return result


def test_chain_manifests(chain: Chain) -> None:
    full_backup, incr1, incr2, diff = chain.backups
    assert [m.kind for m in chain.backups] == [
        BackupKind.FULL,
        BackupKind.INCREMENTAL,
        BackupKind.INCREMENTAL,
        BackupKind.DIFFERENTIAL,
    ]
    assert [m.parent_id for m in chain.backups] == [None, full_backup.id, incr1.id, full_backup.id]
    assert full_backup.consistency.method == "pg_basebackup"
    system = chain.server.execute("SELECT system_identifier::text FROM pg_control_system()")[0][0]
    for parent, backup in ((full_backup, incr1), (incr1, incr2), (full_backup, diff)):
        c = backup.consistency
        assert c.method == METHOD and backup.mode == "physical"
        assert [(o.key, o.role) for o in backup.objects] == [(FILES_OBJECT, "base"), (FILELIST_OBJECT, "file-list")]
        assert c.system_identifier == system and c.timeline == 1
        assert c.start_wal_file > parent.consistency.start_wal_file
        assert c.stop_wal_file >= c.start_wal_file and c.start_lsn != c.stop_lsn
        files = c.files
        assert files.copied + files.unchanged == files.listed and files.unchanged > files.copied
        # recorded (what a restore holds) counts unlogged tables as empty; the backup took their live rows
        unlogged = {(db, t) for db, tables in c.unlogged_tables.items() for t in tables}
        assert without(backup.fingerprints, unlogged) == without(chain.recorded[backup.id], unlogged)
        assert backup.fingerprints["shop"]["public.scratch"].rows == 100
        assert all(check.ok for check in chain.repo.verify_backup(backup))
    # unlogged tables listed per database as by a full (a restore brings them back empty), as they
    # stood at each backup: annex (with its own) existed only for incr1
    assert full_backup.consistency.unlogged_tables == {"shop": ["public.scratch"]}
    assert incr1.consistency.unlogged_tables == {"annex": ["public.Notes Cache"], "shop": ["public.scratch"]}
    assert incr2.consistency.unlogged_tables == diff.consistency.unlogged_tables == {"shop": ["public.scratch"]}
    catalog = chain.repo.catalog("postgres", TARGET)
    assert [m.id for m in catalog.chain(incr2)] == [full_backup.id, incr1.id, incr2.id]
    assert [m.id for m in catalog.chain(diff)] == [full_backup.id, diff.id]
    recorded = [chain.recorded[m.id] for m in chain.backups]
    assert "annex" not in recorded[0] and "annex" in recorded[1] and "annex" not in recorded[2]
    assert "public.newcomer" in recorded[1]["shop"] and "public.doomed" not in recorded[2]["shop"]
    assert recorded[3]["shop"]["public.emptied"].rows == 0
    assert len({r["shop"]["public.accounts"] for r in recorded[:3]}) == 3


def test_incremental_is_much_smaller(chain: Chain) -> None:
    full_backup, incr1, incr2, diff = chain.backups
    print(
        f"\nstored: full {full_backup.stored_size / 2**20:.2f} MiB (raw {full_backup.raw_size / 2**20:.1f}), "
        + ", ".join(
            f"{m.kind.value} {m.stored_size / 2**20:.2f} MiB (raw {m.raw_size / 2**20:.1f}, "
            f"{m.consistency.files.copied} files copied)"
            for m in (incr1, incr2, diff)
        )
        + f"; ratio {incr1.stored_size / full_backup.stored_size:.1%}"
    )
    print(
        "backup seconds: "
        + ", ".join(f"{k} {v:.2f}" for k, v in chain.seconds.items())
        + f"; phases {[m.timings for m in chain.backups]}"
    )
    for backup in (incr1, incr2, diff):  # the static table (most of the data) never travels again
        assert backup.stored_size < 0.2 * full_backup.stored_size, backup.id


def test_every_backup_of_the_chain_restores(chain: Chain, workdir: Path) -> None:
    server, repo = chain.server, chain.repo
    catalog = repo.catalog("postgres", TARGET)
    for number, backup in enumerate(chain.backups):
        dest = workdir / f"restored-{backup.id}"
        restore_chain(
            BackupContext(repo, log=lambda line: None), backup, dest, bin_dir=server.client_bin_dir, catalog=catalog
        )
        assert dest.stat().st_mode & 0o777 == 0o700
        assert not any(p.name.startswith(".vfchain-") for p in workdir.iterdir())
        assert "archive_mode = 'off'" in (dest / "postgresql.auto.conf").read_text()
        if backup.kind != BackupKind.FULL:
            assert f"vaultflow-{backup.id}" in (dest / "backup_label").read_text()  # the newest label
            assert not (dest / "backup_manifest").exists()  # the full's, pruned
            wal = sorted(p.name for p in (dest / "pg_wal").iterdir() if p.is_file())
            assert wal[0] == backup.consistency.start_wal_file and wal[-1] == backup.consistency.stop_wal_file
        if number == 2:
            assert chain.gone and not any((dest / path).exists() for path in chain.gone)
        cluster = start_restored_cluster(dest, server.bin_dir, run_as=RUN_AS, env=server._env)
        try:
            copy = restored_instance(server, cluster, dest)
            assert copy.execute("SELECT pg_is_in_recovery()") == [(False,)]
            restored = fingerprints(copy.conninfo)
            assert restored == chain.recorded[backup.id], backup.id
            assert copy.execute("SELECT count(*) FROM scratch", "shop") == [(0,)]  # unlogged: reset, as a full
        finally:
            stop_cluster(cluster)
        shutil.rmtree(dest)


def test_engine_restore_compares_the_differential(chain: Chain, workdir: Path) -> None:
    diff = chain.backups[3]
    engine = PostgresEngine(config_for(chain.server))
    dest = workdir / "engine-restore" / "data"
    dest.parent.mkdir()
    os.chmod(dest.parent, 0o711)
    try:
        result = engine.restore(BackupContext(chain.repo, log=lambda line: None), diff, into=str(dest))
        assert result.comparison.ok, result.comparison.summary()
        assert {t.table for t in result.comparison.tables if t.database == "shop"} >= {
            "public.static",
            "public.newcomer",
        }
    finally:
        shutil.rmtree(dest.parent, ignore_errors=True)


def test_pruned_or_corrupt_parent_refused_leaving_nothing(chain: Chain, workdir: Path) -> None:
    full_backup, incr1, incr2, diff = chain.backups
    root = workdir / "repo-broken"
    repo = chain.copy_repo(root)
    bin_dir = chain.server.client_bin_dir
    try:
        # a corrupt link: IntegrityError naming it, no data directory, no work directory
        path = root / repo.object_key(incr1, FILES_OBJECT)
        good = path.read_bytes()
        data = bytearray(good)
        data[len(data) // 2] ^= 0x55
        path.write_bytes(bytes(data))
        dest = workdir / "broken" / "data"
        with pytest.raises(IntegrityError, match=f"{incr1.id}/{FILES_OBJECT}"):
            restore_chain(
                BackupContext(repo, log=lambda line: None),
                incr2,
                dest,
                bin_dir=bin_dir,
                catalog=repo.catalog("postgres", TARGET),
            )
        assert not dest.exists() and list(dest.parent.iterdir()) == []
        path.write_bytes(good)
        # a pruned link: refused before anything is written
        repo.store.delete(repo.object_key(incr1, MANIFEST))
        catalog = repo.catalog("postgres", TARGET)
        with pytest.raises(ChainBrokenError, match=f"backup {incr1.id} \\(the parent of {incr2.id}\\)"):
            restore_chain(BackupContext(repo), incr2, dest, bin_dir=bin_dir, catalog=catalog)
        assert list(dest.parent.iterdir()) == []
        assert [m.id for m in catalog.chain(diff)] == [full_backup.id, diff.id]  # not through it
        # with the full pruned too, the engine refuses to extend the latest (broken) chain: the flow takes a full
        repo.store.delete(repo.object_key(full_backup, MANIFEST))
        with pytest.raises(ChainBrokenError, match=f"backup {full_backup.id} \\(the parent of {diff.id}\\)"):
            PostgresEngine(config_for(chain.server)).incremental_backup(BackupContext(repo), BackupKind.INCREMENTAL)
        # a parent pruned after the flow picked it, and a corrupt parent file list
        config = config_for(chain.server)
        version = chain.server.execute("SHOW server_version")[0][0]
        repo.delete_backup(diff)
        before = sorted(root.rglob("*.zst"))
        with pytest.raises(ChainBrokenError, match=f"parent backup {diff.id} was deleted"):
            physical_incremental_backup(
                config, BackupContext(repo), diff, BackupKind.INCREMENTAL, bin_dir=bin_dir, server_version=version
            )
        listing = root / repo.object_key(incr2, FILELIST_OBJECT)
        listing.write_bytes(listing.read_bytes()[:-9] + b"corrupted")
        with pytest.raises(IntegrityError, match=f"{incr2.id}/{FILELIST_OBJECT}"):
            physical_incremental_backup(
                config, BackupContext(repo), incr2, BackupKind.INCREMENTAL, bin_dir=bin_dir, server_version=version
            )
        assert sorted(root.rglob("*.zst")) == before  # no partial payload of the refused backups
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(workdir / "broken", ignore_errors=True)


def test_parent_from_another_cluster_or_timeline(chain: Chain, pg15: PostgresInstance, workdir: Path) -> None:
    """The session's other PostgreSQL 15 cluster took the parent under the same target name."""
    root = workdir / "repo-other"
    repo = Repository(LocalStore(root))
    version = chain.server.execute("SHOW server_version")[0][0]
    other_full = PostgresEngine(config_for(pg15)).full_backup(BackupContext(repo, log=lambda line: None))
    config = config_for(chain.server)
    try:
        with pytest.raises(ChainBrokenError, match="system identifier") as broken:
            physical_incremental_backup(
                config,
                BackupContext(repo),
                other_full,
                BackupKind.INCREMENTAL,
                bin_dir=chain.server.client_bin_dir,
                server_version=version,
            )
        assert other_full.consistency.system_identifier in str(broken.value)
        full_backup = chain.backups[0]
        moved = full_backup.model_copy(
            update={"consistency": full_backup.consistency.model_copy(update={"timeline": 7})}
        )
        with pytest.raises(ChainBrokenError, match="timeline switched from 7 to 1"):
            physical_incremental_backup(
                config,
                BackupContext(chain.repo),
                moved,
                BackupKind.DIFFERENTIAL,
                bin_dir=chain.server.client_bin_dir,
                server_version=version,
            )
        assert repo.catalog("postgres", TARGET).manifests == [other_full]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_data_directory_problems_are_config_errors(chain: Chain, pg15: PostgresInstance) -> None:
    full_backup = chain.backups[0]
    server, repo = chain.server, chain.repo
    version = server.execute("SHOW server_version")[0][0]
    before = sorted(p.relative_to(chain.root) for p in chain.root.rglob("*"))

    def attempt(data_directory) -> None:
        physical_incremental_backup(
            config_for(server, data_directory=data_directory),
            BackupContext(repo),
            full_backup,
            BackupKind.INCREMENTAL,
            bin_dir=server.client_bin_dir,
            server_version=version,
        )

    with pytest.raises(ConfigError, match=f"target {TARGET} has no data_directory.*PostgresTarget"):
        attempt(None)
    with pytest.raises(ConfigError, match="data_directory /nonexistent/pgdata .*does not exist"):
        attempt("/nonexistent/pgdata")
    with pytest.raises(ConfigError, match=f"data_directory {pg15.data_dir} holds cluster"):
        attempt(pg15.data_dir)
    assert sorted(p.relative_to(chain.root) for p in chain.root.rglob("*")) == before
    assert BASE_OBJECT in {o.key for o in full_backup.objects}


def test_chain_restores_with_stock_tools(chain: Chain, workdir: Path) -> None:
    """docs/postgres.md's by-hand procedure (zstd, tar, jq, find) restores incremental 2."""
    full_backup, incr1, incr2, _ = chain.backups
    server = chain.server
    data = workdir / "by-hand"
    backups = chain.root / "postgres" / TARGET / "backups"
    script = f"""set -euo pipefail
D={data}; B={backups}
mkdir -m 700 $D
zstd -qdc $B/{full_backup.id}/base.tar.zst | tar -x -C $D
for id in {incr1.id} {incr2.id}; do zstd -qdc $B/$id/files.tar.zst | tar -x -C $D; done
{{ zstd -qdc $B/{incr2.id}/filelist.json.zst | jq -r '(.files | keys[]), .dirs[]'
  zstd -qdc $B/{incr2.id}/files.tar.zst | tar -t | sed 's:/$::'; }} > {workdir}/keep
(cd $D && find . -mindepth 1 -depth | sed 's:^\\./::' | grep -vxFf {workdir}/keep \\
   | grep -vx -e postgresql.conf -e postgresql.auto.conf -e pg_hba.conf -e pg_ident.conf | xargs -r rm -rf --)
echo "archive_mode = off" >> $D/postgresql.auto.conf
"""
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    try:
        assert not (data / "backup_manifest").exists() and not any((data / p).exists() for p in chain.gone)
        cluster = start_restored_cluster(data, server.bin_dir, run_as=RUN_AS, env=server._env)
        try:
            copy = restored_instance(server, cluster, data)
            assert fingerprints(copy.conninfo) == chain.recorded[incr2.id]
        finally:
            stop_cluster(cluster)
    finally:
        shutil.rmtree(data, ignore_errors=True)
