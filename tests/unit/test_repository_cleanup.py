"""What failed and killed runs leave in a repository: directories, locks, and whose error wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vaultflow.errors import LockHeldError, StoreUnavailableError
from vaultflow.locks import LockSettings
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore, get_bytes, put_bytes
from vaultflow.stores.base import BytesReader

BACKUP = "20261126T020000.000Z-F"


class DyingReader(BytesReader):
    def read(self, size: int = -1) -> bytes:
        raise StoreUnavailableError("upload to the store failed mid-stream")


def dirs_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


def test_failed_put_removes_the_directories_it_created(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    put_bytes(store, "pg/t/backups/other/x", b"kept")
    with pytest.raises(StoreUnavailableError):
        store.put(f"pg/t/backups/{BACKUP}/db/shop.dump.zst", DyingReader(b""))
    assert dirs_under(tmp_path) == ["pg", "pg/t", "pg/t/backups", "pg/t/backups/other"]


def test_uncommitted_removes_payload_and_its_directories(tmp_path: Path) -> None:
    repo = Repository(LocalStore(tmp_path))
    with pytest.raises(StoreUnavailableError):
        with repo.uncommitted("pg", "t", BACKUP, log=lambda line: None):
            put_bytes(repo.store, f"pg/t/backups/{BACKUP}/globals.sql.zst", b"roles")
            repo.store.put(f"pg/t/backups/{BACKUP}/db/shop.dump.zst", DyingReader(b""))
    assert list(tmp_path.iterdir()) == []


def killed_run_leftovers(root: Path, age_s: float) -> Path:
    """What a SIGKILLed put leaves: a temp file in the directories it made, `age_s` old."""
    db_dir = root / "pg" / "t" / "backups" / BACKUP / "db"
    db_dir.mkdir(parents=True)
    (db_dir / ".tmp-shop.dump.zst-abc").write_bytes(b"half a dump")
    (root / "pg" / "t" / "backups" / BACKUP / "empty-sub").mkdir()
    past = time.time() - age_s
    for path in (db_dir / ".tmp-shop.dump.zst-abc", db_dir, db_dir.parent / "empty-sub", db_dir.parent):
        os.utime(path, (past, past))
    return db_dir


def test_sweep_removes_a_killed_runs_temp_files_and_empty_directories(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    put_bytes(store, "pg/t/backups/other/manifest.json", b"{}")
    killed_run_leftovers(tmp_path, age_s=7200)
    repo = Repository(store)
    assert repo.sweep_partial("pg", "t", datetime.now(UTC) - timedelta(hours=1)) == 1
    assert dirs_under(tmp_path) == ["pg", "pg/t", "pg/t/backups", "pg/t/backups/other"]


def test_prune_leaves_no_husk_when_it_deleted_orphans_first(tmp_path: Path) -> None:
    """prune deletes a killed run's orphans, then sweeps: the deletes make the directories
    look fresh, but what the sweep empties is the killed run's and goes too."""
    store = LocalStore(tmp_path)
    put_bytes(store, f"pg/t/backups/{BACKUP}/globals.sql.zst", b"roles")
    killed_run_leftovers(tmp_path, age_s=7200)
    repo = Repository(store)
    cutoff = datetime.now(UTC) - timedelta(hours=1)
    for info in repo.orphans("pg", "t", timedelta(0), datetime.now(UTC)):
        store.delete(info.key)
    assert repo.sweep_partial("pg", "t", cutoff) == 1
    assert list(tmp_path.iterdir()) == []


def test_sweep_keeps_directories_younger_than_the_grace_period(tmp_path: Path) -> None:
    db_dir = killed_run_leftovers(tmp_path, age_s=60)
    repo = Repository(LocalStore(tmp_path))
    assert repo.sweep_partial("pg", "t", datetime.now(UTC) - timedelta(hours=1)) == 0
    assert (db_dir / ".tmp-shop.dump.zst-abc").exists() and (db_dir.parent / "empty-sub").is_dir()
    # With no grace left, everything the killed run made goes, up to (not including) the root.
    assert repo.sweep_partial("pg", "t", datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert list(tmp_path.iterdir()) == []


def lock_keys(repo: Repository) -> list[str]:
    return [info.key for info in repo.store.list("pg/t/locks/")]


NO_WAIT = LockSettings(wait=timedelta(0), refresh_every=None)


def test_lock_refuses_a_second_holder_and_release_frees_it(tmp_path: Path) -> None:
    repo = Repository(LocalStore(tmp_path), lock_settings=NO_WAIT)
    key = repo.acquire_lock("pg", "t").key
    with pytest.raises(LockHeldError, match=rf"pg/t is locked by host .* pid {os.getpid()}.*delete {key}"):
        repo.acquire_lock("pg", "t")
    assert lock_keys(repo) == [key]
    repo.release_lock(key)
    assert lock_keys(repo) == [] and not (tmp_path / "pg").exists()  # no empty locks/ left
    repo.release_lock(repo.acquire_lock("pg", "t"))


def test_release_deletes_only_its_own_lock(tmp_path: Path) -> None:
    repo = Repository(LocalStore(tmp_path), lock_settings=NO_WAIT)
    mine = repo.acquire_lock("pg", "t").key
    repo.store.delete(mine)  # e.g. judged stale and removed by another run
    theirs = repo.acquire_lock("pg", "t").key
    repo.release_lock(mine)
    assert lock_keys(repo) == [theirs]
    # A key that does not carry the holder id of the lock it holds is not ours either.
    put_bytes(repo.store, mine, get_bytes(repo.store, theirs))
    repo.release_lock(mine)
    assert sorted(lock_keys(repo)) == sorted([mine, theirs])


class RacingStore(LocalStore):
    """A real local store where another run's lock lands between our check and our write
    (the interleaving a second worker produces by starting at the same moment)."""

    def __init__(self, root: Path, rival: dict):
        super().__init__(root)
        self.rival, self.raced = rival, False

    def put(self, key, reader, size_hint=None):
        if "/locks/" in key and not self.raced:
            self.raced = True
            super().put(f"pg/t/locks/backup-{self.rival['holder']}.json", BytesReader(json.dumps(self.rival).encode()))
        return super().put(key, reader, size_hint)


def test_acquire_rechecks_after_writing_and_backs_off(tmp_path: Path) -> None:
    rival = {"host": "other-host", "pid": 1, "time": datetime.now(UTC).isoformat(), "holder": "b" * 32}
    repo = Repository(RacingStore(tmp_path, rival), lock_settings=NO_WAIT)
    with pytest.raises(LockHeldError, match="locked by host other-host pid 1"):
        repo.acquire_lock("pg", "t")
    assert lock_keys(repo) == [f"pg/t/locks/backup-{'b' * 32}.json"]  # ours withdrawn, theirs intact


def test_stale_locks_are_removed_and_legacy_locks_honoured(tmp_path: Path) -> None:
    repo = Repository(LocalStore(tmp_path), lock_settings=NO_WAIT)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    now = datetime.now(UTC)
    put_bytes(
        repo.store,
        f"pg/t/locks/backup-{'c' * 32}.json",
        json.dumps(
            {"host": os.uname().nodename, "pid": int(dead), "time": now.isoformat(), "holder": "c" * 32}
        ).encode(),
    )
    put_bytes(
        repo.store,
        f"pg/t/locks/backup-{'d' * 32}.json",
        json.dumps(
            {
                "host": "far-away",
                "pid": 1,
                "time": (now - NO_WAIT.stale_after - timedelta(minutes=1)).isoformat(),
                "holder": "d" * 32,
            }
        ).encode(),
    )
    key = repo.acquire_lock("pg", "t").key
    assert lock_keys(repo) == [key]
    repo.release_lock(key)
    put_bytes(
        repo.store,
        "pg/t/locks/backup.json",
        json.dumps({"host": "far-away", "pid": 1, "time": now.isoformat()}).encode(),
    )  # an older vaultflow's lock
    with pytest.raises(LockHeldError, match="far-away"):
        repo.acquire_lock("pg", "t")
