"""vaultflow.transfer on real local stores: copy, resume, corrupt and missing objects, chains."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vaultflow.engines.postgres.consistency import PostgresPhysicalConsistency
from vaultflow.errors import IntegrityError, NotFoundError, RefusedError
from vaultflow.manifest import BackupKind, BackupMode, Manifest, StoredObject, new_backup_id
from vaultflow.repository import MANIFEST, Repository
from vaultflow.stores.base import put_bytes
from vaultflow.stores.local import LocalStore
from vaultflow.stores.mirror import MirrorStore
from vaultflow.transfer import backups_to_copy, copy_backup

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
POINT = PostgresPhysicalConsistency(
    start_lsn="0/2000028",
    stop_lsn="0/2000100",
    timeline=1,
    start_wal_file="000000010000000000000002",
    checkpoint_lsn="0/2000060",
)


def make_backup(
    repo: Repository,
    kind: BackupKind = BackupKind.FULL,
    parent: str | None = None,
    at: datetime = T0,
    objects: dict[str, bytes] | None = None,
) -> Manifest:
    """A committed backup whose objects are `objects` (name -> stored bytes)."""
    objects = objects or {
        "globals.sql.zst": b"g" * 1000,
        "db/a.dump.zst": os.urandom(3 << 20),
        "db/b.dump.zst": b"b" * 5000,
    }
    backup_id = new_backup_id(kind, at)
    stored = []
    for name, data in objects.items():
        put_bytes(repo.store, repo.backup_prefix("postgres", "prod", backup_id) + name, data)
        stored.append(
            StoredObject(
                key=name,
                role="database-dump",
                format="pg_dump-custom",
                raw_size=len(data),
                stored_size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    manifest = Manifest(
        id=backup_id,
        engine="postgres",
        target="prod",
        kind=kind,
        parent_id=parent,
        mode=BackupMode.PHYSICAL,
        consistency=POINT,
        started_at=at,
        finished_at=at + timedelta(seconds=5),
        objects=stored,
    )
    repo.commit(manifest)
    return manifest


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Repository, Repository]:
    return Repository(LocalStore(tmp_path / "local")), Repository(LocalStore(tmp_path / "offsite"))


def path_of(repo: Repository, manifest: Manifest, name: str) -> Path:
    return repo.store.root / repo.object_key(manifest, name)


def test_copy_writes_same_bytes_and_manifest_last(repos):
    src, dst = repos
    manifest = make_backup(src)
    progress: list[tuple[str, int, int | None]] = []
    result = copy_backup(src, dst, manifest, log=lambda line: None, progress=lambda *a: progress.append(a))
    assert result.copied == ("globals.sql.zst", "db/a.dump.zst", "db/b.dump.zst") and result.skipped == ()
    assert result.bytes_copied == manifest.stored_size
    assert dst.catalog("postgres", "prod").get(manifest.id) == manifest
    for obj in manifest.objects:
        assert path_of(dst, manifest, obj.key).read_bytes() == path_of(src, manifest, obj.key).read_bytes()
    assert progress[-1][0] == "db/b.dump.zst" and progress[-1][1] == 5000
    again = copy_backup(src, dst, manifest, log=lambda line: None)
    assert again.already_there and again.copied == () and again.skipped == ()


def test_interrupted_copy_resumes_skipping_intact_objects(repos):
    src, dst = repos
    manifest = make_backup(src)
    last = path_of(src, manifest, "db/b.dump.zst")
    aside = last.with_name("aside")
    last.rename(aside)  # the copy dies at the last object
    with pytest.raises(NotFoundError):
        copy_backup(src, dst, manifest, log=lambda line: None)
    assert dst.catalog("postgres", "prod").manifests == [], "no manifest before every object is there"
    assert dst.store.stat(dst.object_key(manifest, MANIFEST)) is None
    assert path_of(dst, manifest, "db/a.dump.zst").exists()
    aside.rename(last)

    corrupt = path_of(dst, manifest, "db/a.dump.zst")
    data = bytearray(corrupt.read_bytes())
    data[1000] ^= 0xFF
    corrupt.write_bytes(bytes(data))  # same size, other bytes: only a re-hash notices
    logs: list[str] = []
    result = copy_backup(src, dst, manifest, log=logs.append)
    assert result.skipped == ("globals.sql.zst",)
    assert result.copied == ("db/a.dump.zst", "db/b.dump.zst")
    assert any("db/a.dump.zst" in line and "sha256" in line for line in logs), logs
    assert corrupt.read_bytes() == path_of(src, manifest, "db/a.dump.zst").read_bytes()
    assert all(c.ok for c in dst.verify_backup(manifest))


def test_missing_object_at_destination_is_sent_again(repos):
    src, dst = repos
    manifest = make_backup(src)
    copy_backup(src, dst, manifest, log=lambda line: None)
    dst.store.delete(dst.object_key(manifest, MANIFEST))  # as if the copy died before its manifest
    path_of(dst, manifest, "globals.sql.zst").unlink()
    result = copy_backup(src, dst, manifest, log=lambda line: None)
    assert result.copied == ("globals.sql.zst",) and len(result.skipped) == 2
    assert all(c.ok for c in dst.verify_backup(manifest))


def test_corrupt_source_object_is_refused_by_name(repos):
    src, dst = repos
    manifest = make_backup(src)
    bad = path_of(src, manifest, "db/a.dump.zst")
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"object db/a\.dump\.zst of backup .* does not match its manifest"):
        copy_backup(src, dst, manifest, log=lambda line: None)
    assert dst.store.stat(dst.object_key(manifest, "db/a.dump.zst")) is None, "nothing stored under its key"
    assert dst.catalog("postgres", "prod").manifests == []
    assert not [p for p in (dst.store.root).rglob("*") if p.is_file() and "a.dump" in p.name]


def test_truncated_source_object_is_refused(repos):
    src, dst = repos
    manifest = make_backup(src)
    bad = path_of(src, manifest, "db/b.dump.zst")
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(IntegrityError, match=r"db/b\.dump\.zst"):
        copy_backup(src, dst, manifest, log=lambda line: None)
    assert dst.catalog("postgres", "prod").manifests == []


def test_same_repository_and_different_backup_under_same_id_are_refused(repos, tmp_path: Path):
    src, dst = repos
    manifest = make_backup(src)
    with pytest.raises(RefusedError, match="same repository"):
        copy_backup(src, Repository(LocalStore(tmp_path / "local")), manifest)
    other = make_backup(dst, objects={"globals.sql.zst": b"other"})
    assert other.id == manifest.id
    with pytest.raises(RefusedError, match="different backup"):
        copy_backup(src, dst, manifest, log=lambda line: None)
    assert path_of(dst, manifest, "globals.sql.zst").read_bytes() == b"other"


def test_mirror_destination_resends_what_one_member_lacks(tmp_path: Path):
    src = Repository(LocalStore(tmp_path / "local"))
    first, second = LocalStore(tmp_path / "m1"), LocalStore(tmp_path / "m2")
    dst = Repository(MirrorStore([first, second]))
    manifest = make_backup(src)
    copy_backup(src, dst, manifest, log=lambda line: None)
    dst.store.delete(dst.object_key(manifest, MANIFEST))
    second.delete(dst.object_key(manifest, "db/b.dump.zst"))  # one member lost one object
    result = copy_backup(src, dst, manifest, log=lambda line: None)
    assert result.copied == ("db/b.dump.zst",)
    assert all(c.ok for c in dst.verify_backup(manifest)), "each member checked"


def test_backups_to_copy_puts_missing_parents_first(repos):
    src, dst = repos
    full = make_backup(src, at=T0)
    incr1 = make_backup(src, BackupKind.INCREMENTAL, full.id, at=T0 + timedelta(days=1))
    incr2 = make_backup(src, BackupKind.INCREMENTAL, incr1.id, at=T0 + timedelta(days=2))
    other = make_backup(src, at=T0 + timedelta(days=3))
    catalog = src.catalog("postgres", "prod")
    assert [m.id for m in backups_to_copy(catalog, dst.catalog("postgres", "prod"), incr2.id)] == [
        full.id,
        incr1.id,
        incr2.id,
    ]
    copy_backup(src, dst, full, log=lambda line: None)
    assert [m.id for m in backups_to_copy(catalog, dst.catalog("postgres", "prod"), incr2.id)] == [incr1.id, incr2.id]
    assert [m.id for m in backups_to_copy(catalog, dst.catalog("postgres", "prod"))] == [incr1.id, incr2.id, other.id]
    assert [m.id for m in backups_to_copy(catalog, dst.catalog("postgres", "prod"), "latest")] == [other.id]
    with pytest.raises(NotFoundError):
        backups_to_copy(catalog, dst.catalog("postgres", "prod"), "20260101T000000.000Z-F")
