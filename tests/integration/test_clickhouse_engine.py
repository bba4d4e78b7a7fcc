"""The ClickHouse engine on the session's embedded engine (chDB through clickhouse-connect), without
Prefect: full backup (every file checked against `.backup`), restore judged by the oracle
(tests/corpus/clickhouse_oracle.py), and the errors: disk not allowed, unknown database, a corrupt
part file in the repository or in the staging directory, an existing target without overwrite."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.corpus.clickhouse_oracle import clickhouse_differences, clickhouse_state
from vaultflow.blocks import ClickHouseTarget
from vaultflow.engines.base import BackupContext
from vaultflow.engines.clickhouse.fingerprint import table_units
from vaultflow.engines.clickhouse.listing import METADATA, parse_listing
from vaultflow.engines.clickhouse.settings import ClickHouseRestoreOptions
from vaultflow.engines.clickhouse.staging import ROLE_FILE, ingest
from vaultflow.errors import ConfigError, IntegrityError, NotFoundError, RefusedError
from vaultflow.manifest import Manifest
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
from vaultflow.testing.chdb_instance import UNLISTED_DISK, ChdbInstance


def fill(client: Any, db: str, rows: int = 200) -> None:
    client.command(
        f"CREATE TABLE {db}.events (id UInt64, kind LowCardinality(String), amount Decimal(12, 2), "
        "payload Map(String, UInt32)) ENGINE = MergeTree PARTITION BY kind ORDER BY id"
    )
    client.command(
        f"INSERT INTO {db}.events SELECT number, ['a', 'b', 'c'][number % 3 + 1], number / 7, "
        f"map('k', toUInt32(number)) FROM numbers({rows})"
    )
    client.command(f"CREATE TABLE {db}.flags (name String, on Bool) ENGINE = MergeTree ORDER BY name")
    client.command(f"INSERT INTO {db}.flags VALUES ('x', true), ('y', false)")


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository(LocalStore(tmp_path / "repo"))


def ctx(repo: Repository) -> BackupContext:
    return BackupContext(repository=repo, log=lambda line: None)


def target(instance: ChdbInstance, db: str, **fields: Any) -> ClickHouseTarget:
    return ClickHouseTarget(**{**instance.target_fields(), **fields}, databases=[db], target_name=f"ch-{db}")


def backed_up(instance: ChdbInstance, client: Any, db: str, root: Path, rows: int) -> tuple[Repository, Any, Manifest]:
    """`db` filled (fill, `rows` events), a repository under `root`, the target's engine, and the
    full backup it took."""
    repo = Repository(LocalStore(root / "repo"))
    fill(client, db, rows=rows)
    engine = target(instance, db).engine()
    return repo, engine, engine.full_backup(ctx(repo))


def test_full_backup_stores_every_file_checked_and_restores_what_the_oracle_saw(
    clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str, repo: Repository
):
    db = fresh_clickhouse_db
    fill(clickhouse_client, db)
    engine = target(clickhouse_source, db).engine()
    manifest = engine.full_backup(ctx(repo))
    at_backup = clickhouse_state(clickhouse_client, db)

    listing_obj = next(o for o in manifest.objects if o.role != ROLE_FILE)
    assert listing_obj.key.endswith(f"{METADATA}.zst")
    with repo.store.open(repo.object_key(manifest, listing_obj.key)) as handle:
        import zstandard

        listing = parse_listing(zstandard.ZstdDecompressor().stream_reader(handle).read(), "test")
    stored = {o.key.split("/", 1)[1].removesuffix(".zst") for o in manifest.objects if o.role == ROLE_FILE}
    assert stored == set(listing.data_files()) and any(p.endswith("data.bin") or ".bin" in p for p in stored)
    assert set(table_units(manifest.fingerprints[db])) == {"events", "flags"}
    assert manifest.fingerprints[db]["events"].count == 200
    assert not (clickhouse_source.backup_dir / "vaultflow" / f"ch-{db}").exists(), (
        "the staging copy is removed after the commit"
    )

    clickhouse_client.command(f"INSERT INTO {db}.flags VALUES ('z', true)")
    result = engine.restore(ctx(repo), manifest)
    restored = result.restored[db]
    assert re.fullmatch(rf"{db}_restore_\d{{8}}_\d{{6}}_\d{{3}}", restored), restored
    assert result.comparison.ok and len(result.comparison.tables) == 2
    assert clickhouse_differences(at_backup, clickhouse_state(clickhouse_client, restored)) == []
    assert clickhouse_differences(at_backup, clickhouse_state(clickhouse_client, db)), "the source moved on"
    assert list((clickhouse_source.backup_dir / "vaultflow").rglob("*.bin")) == [], "materialised files are removed"

    drill = engine.drill(ctx(repo), manifest)
    assert drill.comparison.ok and drill.restored == {db: "scratch database (dropped)"}
    left = clickhouse_client.query(f"SELECT name FROM system.databases WHERE startsWith(name, '{db}_drill')")
    assert left.result_rows == []


def test_restore_refuses_an_existing_database_without_overwrite_and_replaces_it_with(
    clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str, repo: Repository
):
    db = fresh_clickhouse_db
    fill(clickhouse_client, db, rows=50)
    engine = target(clickhouse_source, db).engine()
    manifest = engine.full_backup(ctx(repo))
    at_backup = clickhouse_state(clickhouse_client, db)
    clickhouse_client.command(f"TRUNCATE TABLE {db}.events")
    damaged = clickhouse_state(clickhouse_client, db)

    with pytest.raises(RefusedError, match=f"database '{db}' exists.*overwrite=True"):
        engine.restore(ctx(repo), manifest, into=db)
    assert clickhouse_state(clickhouse_client, db) == damaged, "nothing touched"

    result = engine.restore(ctx(repo), manifest, into=db, overwrite=True)
    assert result.restored == {db: db} and result.notes
    assert clickhouse_differences(at_backup, clickhouse_state(clickhouse_client, db)) == []


def test_partial_restore_of_chosen_tables_and_of_the_structure_alone(
    clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str, repo: Repository
):
    db = fresh_clickhouse_db
    fill(clickhouse_client, db, rows=30)
    engine = target(clickhouse_source, db).engine()
    manifest = engine.full_backup(ctx(repo))
    at_backup = clickhouse_state(clickhouse_client, db)
    result = engine.restore(ctx(repo), manifest, options=ClickHouseRestoreOptions(tables=["flags"]))
    copy = clickhouse_state(clickhouse_client, result.restored[db])
    assert set(copy) == {"flags"} and copy["flags"] == at_backup["flags"]
    assert [t.table for t in result.comparison.tables] == ["flags"]

    bare = engine.restore(ctx(repo), manifest, options=ClickHouseRestoreOptions(structure_only=True))
    assert bare.comparison.ok and len(bare.comparison.tables) == 2
    shape = clickhouse_state(clickhouse_client, bare.restored[db])
    assert {t: (v["engine"], v["columns"], v["rows"]) for t, v in shape.items()} == {
        t: (v["engine"], v["columns"], []) for t, v in at_backup.items()
    }


def test_a_corrupt_part_file_in_the_repository_is_named_before_restore_runs(
    clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str, repo: Repository
):
    db = fresh_clickhouse_db
    fill(clickhouse_client, db, rows=100)
    engine = target(clickhouse_source, db).engine()
    manifest = engine.full_backup(ctx(repo))
    victim = next(o for o in manifest.objects if o.role == ROLE_FILE and ".bin" in o.key)
    path = Path(repo.store.root) / repo.object_key(manifest, victim.key)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(IntegrityError, match=re.escape(victim.key)):
        engine.restore(ctx(repo), manifest)
    copies = clickhouse_client.query(f"SELECT name FROM system.databases WHERE startsWith(name, '{db}_')")
    assert copies.result_rows == [], "RESTORE never ran"
    assert list((clickhouse_source.backup_dir / "vaultflow").rglob("*.bin")) == [], "materialised files are removed"


def test_a_file_changed_on_the_backup_disk_is_caught_against_dot_backup(
    clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str, repo: Repository
):
    """ClickHouse's own checksum (CityHash128 over 2 KiB blocks) as `.backup` lists it: an untouched
    backup passes, one byte changed in one file is named."""
    db = fresh_clickhouse_db
    fill(clickhouse_client, db, rows=100)
    name = f"manual/{db}"
    clickhouse_client.command(f"BACKUP DATABASE {db} TO Disk('backups', '{name}')")
    directory = clickhouse_source.backup_dir / name
    try:
        listing, objects = ingest(ctx(repo), "clean/", db, directory)
        assert len(objects) == len(listing.data_files()) + 1

        victim = next(p for p in sorted(directory.rglob("*.bin")))
        data = bytearray(victim.read_bytes())
        data[-1] ^= 0x01
        victim.write_bytes(bytes(data))
        with pytest.raises(IntegrityError, match=re.escape(victim.name) + ".*ClickHouse checksum"):
            ingest(ctx(repo), "dirty/", db, directory)
    finally:
        shutil.rmtree(clickhouse_source.backup_dir / "manual", ignore_errors=True)


def test_a_disk_the_server_does_not_allow_names_the_setting(
    clickhouse_source: ChdbInstance, fresh_clickhouse_db: str, repo: Repository
):
    engine = target(
        clickhouse_source,
        fresh_clickhouse_db,
        backup_disk=UNLISTED_DISK,
        backup_dir=str(clickhouse_source.unlisted_dir),
    ).engine()
    with pytest.raises(ConfigError, match=rf"<allowed_disk>{UNLISTED_DISK}</allowed_disk>"):
        engine.full_backup(ctx(repo))
    assert not (Path(repo.store.root)).exists() or not list(Path(repo.store.root).rglob("manifest.json"))


def test_a_database_that_does_not_exist_is_named(clickhouse_source: ChdbInstance, repo: Repository):
    engine = target(clickhouse_source, "no_such_db").engine()
    with pytest.raises(NotFoundError, match="database 'no_such_db' does not exist"):
        engine.full_backup(ctx(repo))


def test_an_unreachable_server_is_retryable_and_the_password_stays_out(tmp_path: Path):
    """Nothing listens on the port: a retryable error naming the target, without the password."""
    from vaultflow.errors import ServerUnavailableError, is_transient
    from vaultflow.ports import free_port

    secret = "pw-" + "x7Q2" * 4
    engine = ClickHouseTarget(
        host="127.0.0.1", port=free_port(), password=secret, backup_dir=str(tmp_path), target_name="gone"
    ).engine()
    with pytest.raises(ServerUnavailableError, match="gone \\(127.0.0.1:\\d+\\): cannot reach ClickHouse") as caught:
        engine.check()
    assert is_transient(caught.value) and secret not in str(caught.value) and secret not in repr(engine.config)
