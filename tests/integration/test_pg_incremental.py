"""PostgreSQL 17+ incremental and differential physical backups against embedded PostgreSQL 18:
a chain full -> incremental -> incremental -> differential, every backup restored through
pg_combinebackup, started and compared; sizes; broken chains refused before anything is
written."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.postgres import restored_instance, traversable_tmp_dir
from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.chain import restore_chain
from vaultflow.engines.postgres.cluster import stop_cluster
from vaultflow.engines.postgres.engine import fingerprint_tables
from vaultflow.engines.postgres.incremental import ChainBrokenError, physical_incremental_backup
from vaultflow.engines.postgres.physical import (
    BASE_OBJECT,
    MANIFEST_OBJECT,
    physical_full_backup,
)
from vaultflow.engines.postgres.recovery import start_restored_cluster
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.errors import ConfigError, IntegrityError, RefusedError
from vaultflow.manifest import BackupKind, Fingerprint, Manifest
from vaultflow.repository import MANIFEST, Repository
from vaultflow.stores import LocalStore
from vaultflow.testing.postgres_server import (
    PostgresInstance,
    embedded_bin_dir,
    running_postgres,
)
from vaultflow.testing.unprivileged import SERVICE_USER, running_as_root

RUN_AS = SERVICE_USER if running_as_root() else None
TARGET = "pg18-incremental"
# wal_recycle off: new WAL segments are zero-filled instead of recycled old ones, so the
# segment every backup fetches (-X fetch) compresses to what was actually written whatever
# ran before (a guard for the size assertion; this module measured the same sizes with it on).
SETTINGS = {"summarize_wal": "on", "wal_level": "replica", "wal_recycle": "off"}
BIG_ROWS = 400_000

Prints = dict[str, dict[str, Fingerprint]]


def config_for(server: PostgresInstance, name: str = TARGET) -> PostgresSettings:
    return PostgresSettings(
        target_name=name,
        host=server.host,
        port=server.port,
        user=server.user,
        physical_fingerprints=True,
        password=server.password,
    )


def version_of(server: PostgresInstance) -> str:
    return server.execute("SHOW server_version")[0][0]


def full(server: PostgresInstance, repo: Repository, name: str = TARGET) -> Manifest:
    return physical_full_backup(
        config_for(server, name),
        BackupContext(repo, log=lambda line: None),
        bin_dir=server.client_bin_dir,
        server_version=version_of(server),
    )


def incremental(
    server: PostgresInstance,
    repo: Repository,
    parent: Manifest,
    kind: BackupKind,
    name: str = TARGET,
    logs: list[str] | None = None,
) -> Manifest:
    ctx = BackupContext(repo, log=logs.append if logs is not None else lambda line: None)
    return physical_incremental_backup(
        config_for(server, name), ctx, parent, kind, bin_dir=server.client_bin_dir, server_version=version_of(server)
    )


def fingerprints(conninfo) -> Prints:
    """Every user table of every connectable database (conninfo: dbname -> connection string)."""
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
            result[database] = fingerprint_tables(conn)
    return result


def run(server: PostgresInstance, db: str, *statements: str) -> None:
    with psycopg.connect(server.conninfo(db), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # type: ignore[arg-type]


@dataclass
class Chain:
    server: PostgresInstance
    root: Path  # the LocalStore's directory
    backups: list[Manifest] = field(default_factory=list)  # full, incr1, incr2, differential
    recorded: dict[str, Prints] = field(default_factory=dict)  # backup id -> right after it
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def repo(self) -> Repository:
        return Repository(LocalStore(self.root))

    def copy_repo(self, where: Path) -> Repository:
        shutil.copytree(self.root, where)
        return Repository(LocalStore(where))


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with traversable_tmp_dir("vfincr-") as path:
        yield path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresInstance]:
    with running_postgres(
        embedded_bin_dir(), tmp_path_factory.mktemp("pgincr"), name="pgincr", settings=SETTINGS
    ) as pg:
        yield pg


@pytest.fixture(scope="module")
def chain(server: PostgresInstance, workdir: Path) -> Chain:
    """full -> change -> incremental -> change -> incremental -> change -> differential (of the
    full). Nothing writes while a backup runs, so the fingerprints recorded right after each
    backup describe exactly what it holds."""
    result = Chain(server, workdir / "repo")
    server.execute("CREATE DATABASE shop")
    # synchronous_commit on for the load (the test servers default to off): otherwise VACUUM
    # may not set hint bits on rows whose commit record is not flushed yet, and the first scan
    # after the full would set them on every page -- with data checksums (PG 18's default)
    # each such page is WAL-logged and rightly travels in the next incremental.
    run(
        server,
        "shop",
        "SET synchronous_commit = on",
        "CREATE TABLE big (id int PRIMARY KEY, payload text NOT NULL, n bigint)",
        f"INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text), g FROM generate_series(1, {BIG_ROWS}) g",
        "CREATE TABLE accounts AS SELECT g AS id, g * 10 AS balance FROM generate_series(1, 1000) g",
        "CREATE TABLE doomed AS SELECT g FROM generate_series(1, 500) g",
        "CREATE TABLE emptied AS SELECT g, md5(g::text) AS h FROM generate_series(1, 500) g",
        "VACUUM (FREEZE, ANALYZE)",
    )
    conninfo = server.conninfo
    changes = [
        (
            "incremental",
            [  # ~1% of the big table's rows, contiguous: ~1% of its pages
                f"UPDATE big SET payload = md5(payload), n = -n WHERE id <= {BIG_ROWS // 100}",
                "UPDATE accounts SET balance = balance + 1 WHERE id % 3 = 0",
            ],
        ),
        (
            "incremental",
            [
                "INSERT INTO big SELECT g, 'late ' || g, g FROM generate_series(1000001, 1002000) g",
                "DELETE FROM accounts WHERE id % 10 = 0",
                "CREATE TABLE newcomer AS SELECT g, g::text AS t FROM generate_series(1, 3000) g",
            ],
        ),
        (
            "differential",
            [
                "DROP TABLE doomed",
                "TRUNCATE emptied",
                "UPDATE big SET n = 0 WHERE id BETWEEN 200000 AND 200999",
                "VACUUM big",
            ],
        ),
    ]
    t0 = time.monotonic()
    result.backups.append(full(server, result.repo))
    result.seconds["full"] = time.monotonic() - t0
    result.recorded[result.backups[0].id] = fingerprints(conninfo)
    for number, (kind, statements) in enumerate(changes, 1):
        run(server, "shop", *statements)
        if number == 2:  # a database born mid-chain travels whole in the incremental
            server.execute("CREATE DATABASE annex")
            run(
                server,
                "annex",
                "CREATE TABLE notes AS SELECT g, repeat('n', g % 50) AS body FROM generate_series(1, 2000) g",
            )
        parent = result.backups[0] if kind == "differential" else result.backups[-1]
        t0 = time.monotonic()
        backup = incremental(server, result.repo, parent, BackupKind(kind))
        result.seconds[f"{kind} {number}"] = time.monotonic() - t0
        result.backups.append(backup)
        result.recorded[backup.id] = fingerprints(conninfo)
    return result


def test_chain_manifests(chain: Chain) -> None:
    full_backup, incr1, incr2, diff = chain.backups
    assert [m.kind for m in chain.backups] == [
        BackupKind.FULL,
        BackupKind.INCREMENTAL,
        BackupKind.INCREMENTAL,
        BackupKind.DIFFERENTIAL,
    ]
    assert [m.id[-1] for m in chain.backups] == ["F", "I", "I", "D"]
    assert [m.parent_id for m in chain.backups] == [None, full_backup.id, incr1.id, full_backup.id]
    system = chain.server.execute("SELECT system_identifier::text FROM pg_control_system()")[0][0]
    for parent, backup in ((full_backup, incr1), (incr1, incr2), (full_backup, diff)):
        c = backup.consistency
        assert backup.mode == "physical" and backup.engine == "postgres" and backup.target == TARGET
        assert [(o.key, o.role) for o in backup.objects] == [
            (BASE_OBJECT, "base"),
            (MANIFEST_OBJECT, "backup-manifest"),
        ]
        assert c.system_identifier == system and c.timeline == 1
        assert c.incremental_from_lsn == parent.consistency.start_lsn
        assert c.incremental_from_timeline == 1
        assert backup.fingerprints == chain.recorded[backup.id]  # nothing wrote meanwhile
        assert all(check.ok for check in chain.repo.verify_backup(backup))
    catalog = chain.repo.catalog("postgres", TARGET)
    assert catalog.manifests == chain.backups
    assert [m.id for m in catalog.chain(incr2)] == [full_backup.id, incr1.id, incr2.id]
    assert [m.id for m in catalog.chain(diff)] == [full_backup.id, diff.id]
    assert catalog.chain(full_backup) == [full_backup]
    # what changed between the backups, so the comparisons below mean something
    recorded = [chain.recorded[m.id] for m in chain.backups]
    assert "annex" not in recorded[1] and "annex" in recorded[2]
    assert "public.doomed" in recorded[2]["shop"] and "public.doomed" not in recorded[3]["shop"]
    assert recorded[3]["shop"]["public.emptied"].rows == 0
    assert len({r["shop"]["public.big"] for r in recorded}) == 4


def test_incremental_is_much_smaller(chain: Chain) -> None:
    full_backup, incr1, incr2, diff = chain.backups
    sizes = {m.id: m.stored_size for m in chain.backups}
    print(
        f"\nstored sizes: full {sizes[full_backup.id] / 2**20:.2f} MiB "
        f"(raw {full_backup.raw_size / 2**20:.1f} MiB), "
        f"incremental after 1% change {sizes[incr1.id] / 2**20:.2f} MiB "
        f"(raw {incr1.raw_size / 2**20:.1f} MiB), incremental 2 {sizes[incr2.id] / 2**20:.2f} MiB, "
        f"differential {sizes[diff.id] / 2**20:.2f} MiB; "
        f"ratio {sizes[incr1.id] / sizes[full_backup.id]:.1%}"
    )
    print("backup seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in chain.seconds.items()))
    assert sizes[incr1.id] < 0.30 * sizes[full_backup.id]
    assert sizes[diff.id] < sizes[full_backup.id]


def test_every_backup_of_the_chain_restores(chain: Chain, workdir: Path) -> None:
    server = chain.server
    catalog = chain.repo.catalog("postgres", TARGET)
    for backup in chain.backups:
        dest = workdir / f"restored-{backup.id}"
        if backup.kind == BackupKind.DIFFERENTIAL:
            dest.mkdir()  # an empty directory that exists is fine too
        t0 = time.monotonic()
        logs: list[str] = []
        restore_chain(
            BackupContext(chain.repo, log=logs.append), backup, dest, bin_dir=server.client_bin_dir, catalog=catalog
        )
        restore_seconds = time.monotonic() - t0
        assert dest.stat().st_mode & 0o777 == 0o700
        assert not any(p.name.startswith(".vfchain-") for p in workdir.iterdir())  # work dirs removed
        assert "archive_mode = 'off'" in (dest / "postgresql.auto.conf").read_text()
        assert not list(dest.rglob("INCREMENTAL.*"))  # every incremental file was reconstructed
        verify = subprocess.run(
            [str(server.client_bin_dir / "pg_verifybackup"), str(dest)], check=False, capture_output=True, text=True
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr  # pg_combinebackup's manifest
        t0 = time.monotonic()
        cluster = start_restored_cluster(dest, server.bin_dir, run_as=RUN_AS, env=server._env)
        try:
            start_seconds = time.monotonic() - t0
            copy = restored_instance(server, cluster, dest)
            assert copy.execute("SELECT pg_is_in_recovery()") == [(False,)]
            assert copy.execute("SELECT system_identifier FROM pg_control_system()") == server.execute(
                "SELECT system_identifier FROM pg_control_system()"
            )
            expected = chain.recorded[backup.id]
            restored = fingerprints(copy.conninfo)
            assert restored.keys() == expected.keys(), backup.id
            for database, tables in expected.items():
                assert restored[database] == tables, f"{backup.id} {database}"
            assert restored == backup.fingerprints
        finally:
            stop_cluster(cluster)
        print(
            f"\n{backup.kind.value} {backup.id}: restore {restore_seconds:.2f}s, start {start_seconds:.2f}s "
            f"{[line for line in logs if line.startswith('restored')]}"
        )
        shutil.rmtree(dest)


def test_deleted_parent_breaks_the_chain_before_anything_is_written(chain: Chain, workdir: Path) -> None:
    _, incr1, incr2, diff = chain.backups
    repo = chain.copy_repo(workdir / "repo-deleted-parent")
    try:
        repo.store.delete(repo.object_key(incr1, MANIFEST))
        catalog = repo.catalog("postgres", TARGET)
        dest = workdir / "deleted-parent" / "data"
        with pytest.raises(ChainBrokenError, match=f"backup {incr1.id} \\(the parent of {incr2.id}\\)") as broken:
            restore_chain(BackupContext(repo), incr2, dest, bin_dir=chain.server.client_bin_dir, catalog=catalog)
        print(f"\n{broken.value}")
        assert not dest.exists() and not dest.parent.exists()
        # the differential's chain does not go through it
        assert [m.id for m in catalog.chain(diff)] == [chain.backups[0].id, diff.id]
    finally:
        shutil.rmtree(workdir / "repo-deleted-parent", ignore_errors=True)


def test_corrupt_parent_is_an_integrity_error_and_leaves_nothing(chain: Chain, workdir: Path) -> None:
    full_backup, incr1 = chain.backups[:2]
    repo = chain.copy_repo(workdir / "repo-corrupt-parent")
    try:
        path = workdir / "repo-corrupt-parent" / repo.object_key(full_backup, BASE_OBJECT)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x55
        path.write_bytes(bytes(data))
        dest = workdir / "corrupt-parent"
        with pytest.raises(IntegrityError, match=f"{full_backup.id}/{BASE_OBJECT}"):
            restore_chain(
                BackupContext(repo, log=lambda line: None),
                incr1,
                dest,
                bin_dir=chain.server.client_bin_dir,
                catalog=repo.catalog("postgres", TARGET),
            )
        assert not dest.exists()
        assert not any(p.name.startswith(".vfchain-") for p in workdir.iterdir())
        # an empty destination that was there stays, empty
        dest.mkdir()
        with pytest.raises(IntegrityError):
            restore_chain(
                BackupContext(repo, log=lambda line: None),
                incr1,
                dest,
                bin_dir=chain.server.client_bin_dir,
                catalog=repo.catalog("postgres", TARGET),
            )
        assert dest.is_dir() and list(dest.iterdir()) == []
    finally:
        shutil.rmtree(workdir / "repo-corrupt-parent", ignore_errors=True)
        shutil.rmtree(workdir / "corrupt-parent", ignore_errors=True)


def test_refusals_that_write_nothing(chain: Chain, workdir: Path) -> None:
    full_backup, incr1 = chain.backups[:2]
    server, repo = chain.server, chain.repo
    before = sorted(p.relative_to(chain.root) for p in chain.root.rglob("*"))
    # a failover: the parent was taken on another timeline
    moved = full_backup.model_copy(update={"consistency": full_backup.consistency.model_copy(update={"timeline": 7})})
    with pytest.raises(ChainBrokenError, match="timeline switched from 7 to 1"):
        incremental(server, repo, moved, BackupKind.INCREMENTAL)
    with pytest.raises(RefusedError, match="must be a full backup"):
        incremental(server, repo, incr1, BackupKind.DIFFERENTIAL)
    with pytest.raises(RefusedError, match="physical_full_backup"):
        incremental(server, repo, full_backup, BackupKind.FULL)
    with pytest.raises(RefusedError, match="belongs to postgres/"):
        incremental(server, repo, full_backup, BackupKind.INCREMENTAL, name="another-target")
    occupied = workdir / "occupied"
    occupied.mkdir()
    (occupied / "keep.me").write_text("precious")
    with pytest.raises(RefusedError, match="not an empty directory"):
        restore_chain(
            BackupContext(repo),
            incr1,
            occupied,
            bin_dir=server.client_bin_dir,
            catalog=repo.catalog("postgres", TARGET),
        )
    assert [p.name for p in occupied.iterdir()] == ["keep.me"]
    shutil.rmtree(occupied)
    assert sorted(p.relative_to(chain.root) for p in chain.root.rglob("*")) == before


@pytest.fixture(scope="module")
def other_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresInstance]:
    """A second cluster, with summarize_wal off to begin with."""
    with running_postgres(
        embedded_bin_dir(),
        tmp_path_factory.mktemp("pgincr2"),
        name="pgincr2",
        settings={**SETTINGS, "summarize_wal": "off"},
    ) as pg:
        yield pg


def test_chain_cannot_continue(chain: Chain, other_server: PostgresInstance, workdir: Path) -> None:
    other = other_server
    repo = Repository(LocalStore(workdir / "repo-other"))
    other.execute("CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g")
    other_full = full(other, repo)  # under the same target name: the target was re-pointed

    def payload() -> list[str]:
        return sorted(str(p.relative_to(workdir / "repo-other")) for p in (workdir / "repo-other").rglob("*.zst"))

    only_full = payload()
    # 1. another cluster behind the target: the parent's system identifier differs
    with pytest.raises(ChainBrokenError, match="system identifier") as broken:
        incremental(chain.server, repo, other_full, BackupKind.INCREMENTAL)
    assert other_full.consistency.system_identifier in str(broken.value)
    print(f"\n{broken.value}")

    # 2. summarize_wal off: a configuration error naming the setting
    with pytest.raises(ConfigError, match="summarize_wal = on.*postgresql.conf"):
        incremental(other, repo, other_full, BackupKind.INCREMENTAL)

    # 3. summaries that no longer cover the parent's range (as after wal_summary_keep_time)
    other.execute("ALTER SYSTEM SET summarize_wal = on")
    other.execute("SELECT pg_reload_conf()")
    other.execute("UPDATE t SET h = 'x' WHERE g < 100")
    other.execute("SELECT pg_switch_wal()")
    other.execute("CHECKPOINT")
    covered = other_full.consistency.stop_lsn  # summaries reach past the parent's backup
    deadline = time.monotonic() + 30
    while not other.execute(f"SELECT count(*) FROM pg_available_wal_summaries() WHERE end_lsn > '{covered}'")[0][0]:
        assert time.monotonic() < deadline, "the WAL summarizer did not catch up"
        time.sleep(0.1)
    for summary in (other.data_dir / "pg_wal" / "summaries").glob("*.summary"):
        summary.unlink()
    logs: list[str] = []
    with pytest.raises(ChainBrokenError, match="WAL summaries") as broken:
        incremental(other, repo, other_full, BackupKind.INCREMENTAL, logs=logs)
    assert other_full.id in str(broken.value)
    print(broken.value)
    assert payload() == only_full  # the failed backup's partial payload was discarded
    assert repo.catalog("postgres", TARGET).manifests == [other_full]


def test_parent_backup_manifest_object_problems(chain: Chain, workdir: Path) -> None:
    full_backup = chain.backups[0]
    root = workdir / "repo-parent-object"
    repo = chain.copy_repo(root)
    try:

        def payload() -> list[Path]:
            return sorted(root.rglob("*.zst"))

        before = payload()
        path = root / repo.object_key(full_backup, MANIFEST_OBJECT)
        good = path.read_bytes()
        data = bytearray(good)
        data[len(data) // 2] ^= 0x55
        path.write_bytes(bytes(data))
        with pytest.raises(IntegrityError, match=f"{full_backup.id}/{MANIFEST_OBJECT}"):
            incremental(chain.server, repo, full_backup, BackupKind.DIFFERENTIAL)
        path.unlink()  # gone although its backup is committed: a damaged repository
        with pytest.raises(IntegrityError, match="repository is damaged"):
            incremental(chain.server, repo, full_backup, BackupKind.DIFFERENTIAL)
        repo.store.delete(repo.object_key(full_backup, MANIFEST))  # pruned after the flow picked it
        with pytest.raises(ChainBrokenError, match=f"parent backup {full_backup.id} was deleted"):
            incremental(chain.server, repo, full_backup, BackupKind.DIFFERENTIAL)
        assert payload() == [p for p in before if p != path]
    finally:
        shutil.rmtree(root, ignore_errors=True)
