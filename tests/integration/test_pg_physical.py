"""Physical backups (pg_basebackup) against real servers: back up, restore into a new data
directory, start it on a free port and compare; corruption, refusals, secrecy."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.postgres import MakeDb, restored_instance, traversable_tmp_dir
from tests.fixtures.secret_watch import SecretWatch
from tests.integration.test_postgres_engine import SCHEMA, contents, load
from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.cluster import RunningCluster, stop_cluster
from vaultflow.engines.postgres.consistency import PostgresPhysicalConsistency
from vaultflow.engines.postgres.engine import fingerprint_tables
from vaultflow.engines.postgres.physical import (
    BASE_OBJECT,
    MANIFEST_OBJECT,
    physical_full_backup,
)
from vaultflow.engines.postgres.physical_restore import restore_physical
from vaultflow.engines.postgres.recovery import drill_physical, start_restored_cluster
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.engines.postgres.verify import verify_restored
from vaultflow.errors import ConfigError, IntegrityError, RefusedError, ToolError
from vaultflow.manifest import Manifest
from vaultflow.pipeline import open_verified
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
from vaultflow.stores.base import CHUNK_SIZE
from vaultflow.testing.postgres_server import PostgresInstance, embedded_bin_dir
from vaultflow.testing.unprivileged import (
    SERVICE_USER,
    give_to_service_user,
    running_as_root,
)

RUN_AS = SERVICE_USER if running_as_root() else None


def config_for(server: PostgresInstance) -> PostgresSettings:
    return PostgresSettings(
        target_name=f"pg{server.version}-physical",
        host=server.host,
        port=server.port,
        physical_fingerprints=True,
        user=server.user,
        password=server.password,
    )


def backup(server: PostgresInstance, repo: Repository, logs: list[str] | None = None) -> Manifest:
    version = server.execute("SHOW server_version")[0][0]
    ctx = BackupContext(repo, log=(logs.append if logs is not None else lambda line: None))
    return physical_full_backup(config_for(server), ctx, bin_dir=server.client_bin_dir, server_version=version)


def lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def read_object(repo: Repository, manifest: Manifest, key: str) -> bytes:
    obj = next(o for o in manifest.objects if o.key == key)
    reader, verifying, raw = open_verified(repo.store, repo.object_key(manifest, key), obj.sha256, obj.stored_size)
    with raw:
        data = b"".join(iter(lambda: reader.read(CHUNK_SIZE), b""))
        verifying.check()
    return data


@pytest.fixture
def scratch() -> Iterator[Path]:
    with traversable_tmp_dir("vfphys-") as path:
        yield path


@pytest.fixture
def clusters() -> Iterator[list[RunningCluster]]:
    """Restored clusters the test started; stopped at teardown whatever happened."""
    started: list[RunningCluster] = []
    yield started
    for cluster in started:
        stop_cluster(cluster, "immediate", timeout=10)


def test_backup_restore_start_compare(
    pg_server: PostgresInstance, fresh_db: MakeDb, scratch: Path, clusters: list[RunningCluster]
) -> None:
    db = fresh_db(pg_server)
    load(pg_server, db, SCHEMA)
    pg_server.execute("CREATE UNLOGGED TABLE scribbles AS SELECT g FROM generate_series(1, 100) g", db)
    before = contents(pg_server, db)
    system_id = pg_server.execute("SELECT system_identifier::text FROM pg_control_system()")[0][0]
    repo, logs = Repository(LocalStore(scratch / "repo")), []
    # Production archives WAL; a restored copy must not (it would write into the same archive).
    pg_server.execute("ALTER SYSTEM SET archive_mode = 'on'")  # no restart: only the file changes
    try:
        t0 = time.monotonic()
        manifest = backup(pg_server, repo, logs)
        seconds = time.monotonic() - t0
    finally:
        pg_server.execute("ALTER SYSTEM RESET archive_mode")

    # -- the manifest and the repository
    assert manifest.mode == "physical" and manifest.kind.value == "full"
    assert [(o.key, o.role, o.format) for o in manifest.objects] == [
        (BASE_OBJECT, "base", "tar"),
        (MANIFEST_OBJECT, "backup-manifest", "json"),
    ]
    c = manifest.consistency
    assert c.method == "pg_basebackup" and c.timeline == 1
    assert lsn(c.start_lsn) <= lsn(c.checkpoint_lsn) < lsn(c.stop_lsn)
    assert len(c.start_wal_file) == 24 and c.start_wal_file.startswith("00000001")
    assert c.system_identifier == system_id
    assert c.wal_ranges == [{"Timeline": 1, "Start-LSN": c.start_lsn, "End-LSN": c.stop_lsn}]
    assert manifest.tool_versions["pg_basebackup"].startswith("pg_basebackup (PostgreSQL)")
    assert manifest.server_version.startswith(str(pg_server.version))
    assert manifest.fingerprints[db]["public.people"].rows == 3003
    # unlogged: fingerprinted live, listed per database; a base backup brings it back empty
    assert manifest.fingerprints[db]["public.scribbles"].rows == 100
    assert c.unlogged_tables == {db: ["public.scribbles"]}
    assert "postgres" in manifest.fingerprints and "template1" not in manifest.fingerprints
    assert repo.catalog("postgres", config_for(pg_server).name).manifests == [manifest]
    assert all(check.ok for check in repo.verify_backup(manifest))
    assert any("base backup completed" in line for line in logs)
    server_manifest = read_object(repo, manifest, MANIFEST_OBJECT)
    doc = json.loads(server_manifest)
    assert doc["WAL-Ranges"] == [{"Timeline": 1, "Start-LSN": c.start_lsn, "End-LSN": c.stop_lsn}]
    assert {"backup_label", "global/pg_control"} <= {f["Path"] for f in doc["Files"]}
    base = next(o for o in manifest.objects if o.key == BASE_OBJECT)
    print(
        f"\nPG {pg_server.version}: backup {seconds:.2f}s, tar {base.raw_size / 2**20:.1f} MiB -> "
        f"{base.stored_size / 2**20:.1f} MiB stored, backup_manifest {len(server_manifest) / 1024:.0f} KiB, "
        f"timings { ({k: round(v, 2) for k, v in manifest.timings.items()}) }"
    )

    # -- restore into a new data directory
    dest = scratch / "restored"
    t0 = time.monotonic()
    restore_physical(BackupContext(repo), manifest, dest)
    restore_seconds = time.monotonic() - t0
    assert dest.stat().st_mode & 0o777 == 0o700
    assert (dest / "backup_manifest").read_bytes() == server_manifest  # travelled inside the tar
    assert "vaultflow-" + manifest.id in (dest / "backup_label").read_text()
    assert any((dest / "pg_wal").glob(c.start_wal_file))  # -X fetch: the WAL came along
    assert "archive_mode = 'off'" in (dest / "postgresql.auto.conf").read_text()
    verify = subprocess.run(
        [str(pg_server.client_bin_dir / "pg_verifybackup"), str(dest)], check=False, capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # -- refusals before anything starts
    if running_as_root():  # the extracted tree belongs to root, which PostgreSQL refuses
        with pytest.raises(ConfigError, match="root"):
            start_restored_cluster(dest, pg_server.bin_dir, env=pg_server._env)
    if pg_server.version != 18:
        with pytest.raises(ConfigError, match=f"PostgreSQL {pg_server.version} cluster"):
            start_restored_cluster(dest, embedded_bin_dir(), run_as=RUN_AS)

    # -- start the copy and compare
    t0 = time.monotonic()
    cluster = start_restored_cluster(dest, pg_server.bin_dir, run_as=RUN_AS, env=pg_server._env)
    clusters.append(cluster)
    start_seconds = time.monotonic() - t0
    print(f"PG {pg_server.version}: restore {restore_seconds:.2f}s, start (recovery) {start_seconds:.2f}s")
    assert cluster.port != pg_server.port and cluster.socket_dir.is_dir()
    copy = restored_instance(pg_server, cluster, dest)
    assert copy.execute("SHOW archive_mode") == [("off",)]
    assert copy.execute("SHOW port") == [(str(cluster.port),)]
    assert copy.execute("SELECT pg_is_in_recovery()") == [(False,)]
    assert copy.execute("SELECT system_identifier::text FROM pg_control_system()") == [(system_id,)]
    with psycopg.connect(host=str(cluster.socket_dir), port=cluster.port, user=pg_server.user) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the private socket dir works too
    for database, expected in manifest.fingerprints.items():
        restored_empty = {
            t: f.model_copy(update={"count": 0, "digest": "0"})
            for t, f in expected.items()
            if t in c.unlogged_tables.get(database, [])
        }
        with psycopg.connect(copy.conninfo(database)) as conn:
            assert fingerprint_tables(conn, {t: f.method for t, f in expected.items()}) == {
                **expected,
                **restored_empty,
            }, database
    assert contents(copy, db) == before
    assert copy.execute("SELECT count(*) FROM scribbles", db) == [(0,)]
    assert copy.execute("INSERT INTO people (name) VALUES ('after restore') RETURNING id", db) == [(3004,)]

    stop_cluster(cluster)
    assert cluster.proc.returncode == 0
    assert not cluster.socket_dir.exists()
    assert not (dest / "postmaster.pid").exists()


@pytest.mark.parametrize("where", ["middle", "end"])
def test_corrupt_base_object_restores_nothing(pg18: PostgresInstance, scratch: Path, where: str) -> None:
    repo = Repository(LocalStore(scratch / "repo"))
    manifest = backup(pg18, repo)
    path = scratch / "repo" / repo.object_key(manifest, BASE_OBJECT)
    data = bytearray(path.read_bytes())
    at = len(data) // 2 if where == "middle" else len(data) - 40
    data[at] ^= 0x55
    path.write_bytes(bytes(data))

    new_dest = scratch / "new"
    with pytest.raises(IntegrityError, match=f"{manifest.id}/{BASE_OBJECT}"):
        restore_physical(BackupContext(repo), manifest, new_dest)
    assert not new_dest.exists()  # created by the restore: removed again

    empty_dest = scratch / "empty"
    empty_dest.mkdir()
    with pytest.raises(IntegrityError, match=f"{manifest.id}/{BASE_OBJECT}"):
        restore_physical(BackupContext(repo), manifest, empty_dest)
    assert empty_dest.is_dir() and list(empty_dest.iterdir()) == []


def test_refuses_a_non_empty_destination(pg18: PostgresInstance, scratch: Path) -> None:
    repo = Repository(LocalStore(scratch / "repo"))
    manifest = backup(pg18, repo)
    dest = scratch / "occupied"
    dest.mkdir()
    (dest / "keep.me").write_text("precious")
    with pytest.raises(RefusedError, match=str(dest)):
        restore_physical(BackupContext(repo), manifest, dest)
    assert [p.name for p in dest.iterdir()] == ["keep.me"]
    assert (dest / "keep.me").read_text() == "precious"


def test_extra_tablespace_is_refused(pg18: PostgresInstance, scratch: Path) -> None:
    location = pg18.runtime_dir / "ts_physical"
    location.mkdir()
    give_to_service_user(location)
    pg18.execute(f"CREATE TABLESPACE ts_physical LOCATION '{location}'")
    try:
        repo = Repository(LocalStore(scratch / "repo"))
        with pytest.raises(ConfigError, match="ts_physical.*not supported yet"):
            backup(pg18, repo)
        assert not (scratch / "repo").exists() or not any((scratch / "repo").rglob("*.zst"))
    finally:
        pg18.execute("DROP TABLESPACE ts_physical")


def test_password_never_reaches_argv(pg_with_password: PostgresInstance, scratch: Path) -> None:
    server, password = pg_with_password, pg_with_password.password
    assert password
    server.execute(
        "CREATE TABLE IF NOT EXISTS ballast AS SELECT g, md5(g::text) AS h FROM generate_series(1, 200000) g"
    )
    repo, logs = Repository(LocalStore(scratch / "repo")), []
    with SecretWatch(password) as watch:
        manifest = backup(server, repo, logs)
    assert "pg_basebackup" in watch.tools, "the sampler never saw pg_basebackup"
    assert watch.leaks == []
    assert password not in manifest.to_json().decode()
    assert not any(password in line for line in logs)
    files = [p for p in (scratch / "repo").rglob("*") if p.is_file()]
    assert len(files) == len(manifest.objects) + 1
    for path in files:
        assert password.encode() not in path.read_bytes(), path
    assert password.encode() not in read_object(repo, manifest, BASE_OBJECT)  # the raw tar either


@pytest.mark.parametrize("server_name", ["pg18", "pg15"])
def test_missing_replication_privilege_is_a_config_error(
    server_name: str, request: pytest.FixtureRequest, scratch: Path
) -> None:
    server: PostgresInstance = request.getfixturevalue(server_name)
    server.execute("CREATE ROLE vf_norepl LOGIN NOREPLICATION IN ROLE pg_read_all_data, pg_monitor")
    try:
        config = config_for(server).model_copy(update={"user": "vf_norepl"})
        repo = Repository(LocalStore(scratch / "repo"))
        with pytest.raises(ConfigError, match="REPLICATION attribute"):
            physical_full_backup(
                config, BackupContext(repo, log=lambda line: None), bin_dir=server.client_bin_dir, server_version="x"
            )
        assert not any((scratch / "repo").rglob("*.zst"))  # the partial payload was discarded
    finally:
        server.execute("DROP ROLE vf_norepl")


def test_drill_compares_a_scratch_cluster_and_removes_it(
    pg18: PostgresInstance, fresh_db: MakeDb, scratch: Path
) -> None:
    db = fresh_db(pg18)
    pg18.execute("CREATE TABLE drilled AS SELECT g, md5(g::text) AS h FROM generate_series(1, 5000) g", db)
    repo = Repository(LocalStore(scratch / "repo"))
    manifest = backup(pg18, repo)
    work = scratch / "drills"
    work.mkdir()
    os.chmod(work, 0o711)

    result = drill_physical(
        BackupContext(repo), manifest, bin_dir=pg18.bin_dir, user=pg18.user, run_as=RUN_AS, work_dir=work, env=pg18._env
    )
    assert result.comparison.ok, result.comparison.summary()
    assert {t.table for t in result.comparison.tables if t.database == db} == {"public.drilled"}
    [verified] = [t for t in result.comparison.tables if t.database == "(cluster)"]
    assert verified.table.startswith("pg_verifybackup") and verified.expected_rows > 100
    assert set(result.restored) == set(manifest.fingerprints) and result.seconds > 0
    assert list(work.iterdir()) == []  # data dir, socket and log are gone

    tampered = dict(manifest.fingerprints[db])
    tampered["public.drilled"] = tampered["public.drilled"].model_copy(update={"count": 4999})
    forged = manifest.model_copy(update={"fingerprints": {**manifest.fingerprints, db: tampered}})
    result = drill_physical(
        BackupContext(repo), forged, bin_dir=pg18.bin_dir, user=pg18.user, run_as=RUN_AS, work_dir=work, env=pg18._env
    )
    assert [(t.database, t.table, t.status) for t in result.comparison.mismatches] == [
        (db, "public.drilled", "mismatch")
    ]
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("has_data_filter", [True, False], ids=["tarfile-filter", "own-checks"])
@pytest.mark.parametrize(
    "evil", ["../escaped", "pg_wal/../../escaped", "/tmp/vf-absolute-escape", "link-out", "hardlink-out", "device"]
)
def test_restore_refuses_paths_that_escape(
    scratch: Path, evil: str, has_data_filter: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile (or broken) tar cannot write outside the destination: tarfile's data filter, or
    on Python 3.11.0-3.11.3 (no tarfile.data_filter, no extract(filter=)) the same checks of
    safe_extract, forced here by its feature probe."""
    import io
    import tarfile
    from datetime import UTC, datetime

    from vaultflow.engines.postgres import safe_extract
    from vaultflow.manifest import BackupKind, StoredObject
    from vaultflow.pipeline import compress_into_store

    if not has_data_filter:
        monkeypatch.setattr(safe_extract, "HAS_DATA_FILTER", False)
        monkeypatch.delattr(tarfile, "data_filter")  # as on 3.11.2: the fallback must not need it
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (("PG_VERSION", b"18\n"), (evil, b"owned")):
            info = tarfile.TarInfo(name)
            if name == "link-out":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            elif name == "hardlink-out":
                info.type, info.linkname = tarfile.LNKTYPE, "../../../etc/passwd"
                tar.addfile(info)
            elif name == "device":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3  # /dev/null's numbers
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    repo = Repository(LocalStore(scratch / "repo"))
    now = datetime.now(UTC)
    manifest = Manifest(
        id="20261126T000000.000Z-F",
        engine="postgres",
        target="evil",
        kind=BackupKind.FULL,
        mode="physical",
        started_at=now,
        finished_at=now,
        objects=[],
        consistency=PostgresPhysicalConsistency(
            start_lsn="0/2000028",
            stop_lsn="0/2000100",
            timeline=1,
            start_wal_file="000000010000000000000002",
            checkpoint_lsn="0/2000060",
        ),
    )
    written = compress_into_store(io.BytesIO(out.getvalue()), repo.store, repo.object_key(manifest, BASE_OBJECT))
    manifest = manifest.model_copy(
        update={
            "objects": [
                StoredObject(
                    key=BASE_OBJECT,
                    role="base",
                    format="tar",
                    raw_size=written.raw_size,
                    stored_size=written.stored_size,
                    sha256=written.sha256,
                )
            ]
        }
    )
    dest = scratch / "victim" / "data"
    if evil.startswith("/"):  # the filter strips the leading slash: it lands inside dest
        restore_physical(BackupContext(repo, log=lambda line: None), manifest, dest)
        assert (dest / evil.lstrip("/")).read_bytes() == b"owned"
    else:
        with pytest.raises(ToolError, match="cannot extract"):
            restore_physical(BackupContext(repo, log=lambda line: None), manifest, dest)
        assert not dest.exists()
    assert not (scratch / "victim" / "escaped").exists()
    assert not Path("/tmp/vf-absolute-escape").exists()


def test_restored_files_are_checked_against_the_servers_backup_manifest(
    pg_server: PostgresInstance, fresh_db: MakeDb, scratch: Path
) -> None:
    db = fresh_db(pg_server)
    pg_server.execute("CREATE TABLE checked AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g", db)
    relation = pg_server.execute("SELECT pg_relation_filepath('checked')", db)[0][0]
    repo = Repository(LocalStore(scratch / "repo"))
    manifest = backup(pg_server, repo)
    bin_dir = embedded_bin_dir() if pg_server.version >= 18 else pg_server.client_bin_dir

    pristine = scratch / "pristine"
    restore_physical(BackupContext(repo), manifest, pristine)
    row = verify_restored(pristine, bin_dir, manifest.id)
    assert row is not None and row.status == "match" and row.expected_rows > 100

    damaged = scratch / "damaged"
    restore_physical(BackupContext(repo), manifest, damaged)
    with open(damaged / relation, "r+b") as handle:  # a bit flip inside a page of the table
        handle.seek(8192 + 100)
        byte = handle.read(1)
        handle.seek(8192 + 100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(IntegrityError, match=relation.replace("/", ".")):
        verify_restored(damaged, bin_dir, manifest.id)


def test_without_row_fingerprints_the_drill_rests_on_pg_verifybackup(
    pg18: PostgresInstance, fresh_db: MakeDb, scratch: Path
) -> None:
    db = fresh_db(pg18)
    pg18.execute("CREATE TABLE quick AS SELECT g FROM generate_series(1, 1000) g", db)
    repo = Repository(LocalStore(scratch / "repo"))
    config = config_for(pg18).model_copy(update={"physical_fingerprints": False})
    ctx = BackupContext(repo, log=lambda line: None)
    manifest = physical_full_backup(
        config, ctx, bin_dir=pg18.client_bin_dir, server_version=pg18.execute("SHOW server_version")[0][0]
    )
    assert manifest.fingerprints == {}, "no table scans when the target turns fingerprints off"
    work = scratch / "drills"
    work.mkdir()
    os.chmod(work, 0o711)
    result = drill_physical(
        BackupContext(repo), manifest, bin_dir=pg18.bin_dir, user=pg18.user, run_as=RUN_AS, work_dir=work, env=pg18._env
    )
    assert result.comparison.ok
    assert [t.database for t in result.comparison.tables] == ["(cluster)"]


def test_default_drill_of_a_backup_taken_under_writes_passes(
    pg18: PostgresInstance, fresh_db: MakeDb, scratch: Path
) -> None:
    """Row fingerprints on a live server cannot describe the end-of-backup point of a table being
    written; the default proof (pg_verifybackup + recovery) holds under writes."""
    import threading

    db = fresh_db(pg18)
    pg18.execute("CREATE TABLE busy (id serial PRIMARY KEY, v text)", db)
    stop = threading.Event()
    written = []

    def writer() -> None:
        with psycopg.connect(pg18.conninfo(db), autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO busy (v) SELECT md5(g::text) FROM generate_series(1, 200) g")
                written.append(200)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        repo = Repository(LocalStore(scratch / "repo"))
        config = PostgresSettings(target_name="busy", host=pg18.host, port=pg18.port, user=pg18.user)
        assert config.physical_fingerprints is False, "off by default"
        manifest = physical_full_backup(
            config,
            BackupContext(repo, log=lambda line: None),
            bin_dir=pg18.client_bin_dir,
            server_version=pg18.execute("SHOW server_version")[0][0],
        )
    finally:
        stop.set()
        thread.join()
    assert len(written) > 3, "the writer ran during the backup"
    work = scratch / "drills"
    work.mkdir()
    os.chmod(work, 0o711)
    result = drill_physical(
        BackupContext(repo), manifest, bin_dir=pg18.bin_dir, user=pg18.user, run_as=RUN_AS, work_dir=work, env=pg18._env
    )
    assert result.comparison.ok and [t.database for t in result.comparison.tables] == ["(cluster)"]
