"""The lock protocol (vaultflow.locks) on a real local store, within one process.

Other processes (real concurrent holders, SeaweedFS S3) are in tests/integration/test_locks.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vaultflow.errors import LockHeldError, LockLostError, is_transient
from vaultflow.locks import LockRecord, LockSettings, conflicts, holder_alive, read_locks
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore, get_bytes, put_bytes

FAST = LockSettings(wait=timedelta(0), refresh_every=None, settle=timedelta(0))


def repo_at(path: Path, **settings) -> Repository:
    return Repository(LocalStore(path), lock_settings=LockSettings(**{**FAST.__dict__, **settings}))


def keys(repo: Repository) -> list[str]:
    return sorted(info.key for info in repo.store.list("pg/t/locks/"))


def forge(
    repo: Repository,
    purpose: str,
    exclusive: bool,
    host: str = "far-away",
    pid: int = 1,
    age: timedelta = timedelta(0),
    holder: str = "e" * 32,
) -> str:
    key = f"pg/t/locks/{purpose}-{holder}.json"
    put_bytes(
        repo.store,
        key,
        json.dumps(
            {
                "purpose": purpose,
                "exclusive": exclusive,
                "host": host,
                "pid": pid,
                "holder": holder,
                "time": (datetime.now(UTC) - age).isoformat(),
            }
        ).encode(),
    )
    return key


def dead_pid() -> int:
    return int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
        ).stdout
    )


def test_the_lock_object_names_its_holder(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    lock = repo.acquire_lock("pg", "t", "prune", exclusive=True)
    doc = json.loads(get_bytes(repo.store, lock.key))
    assert lock.key == f"pg/t/locks/prune-{doc['holder']}.json" and len(doc["holder"]) == 32
    assert doc["purpose"] == "prune" and doc["exclusive"] is True
    assert doc["host"] == socket.gethostname() and doc["pid"] == os.getpid()
    assert abs(datetime.fromisoformat(doc["time"]) - datetime.now(UTC)) < timedelta(seconds=5)
    repo.release_lock(lock)
    assert keys(repo) == []


@pytest.mark.parametrize(
    "first, second, coexist",
    [
        (("verify", False), ("restore", False), True),  # shared beside shared
        (("backup", False), ("verify", False), True),
        (("backup", False), ("drill", False), True),
        (("backup", False), ("backup", False), False),  # one backup per target at a time
        (("backup", False), ("prune", True), False),  # exclusive waits for shared
        (("prune", True), ("verify", False), False),  # shared waits for exclusive
        (("prune", True), ("prune", True), False),
    ],
)
def test_which_locks_coexist(tmp_path: Path, first, second, coexist: bool) -> None:
    repo = repo_at(tmp_path)
    held = repo.acquire_lock("pg", "t", *first)
    if coexist:
        other = repo.acquire_lock("pg", "t", *second)
        assert keys(repo) == sorted([held.key, other.key])
        repo.release_lock(other)
    else:
        with pytest.raises(LockHeldError) as info:
            repo.acquire_lock("pg", "t", *second)
        assert is_transient(info.value) and info.value.holder.key == held.key
        assert f"a {first[0]}, {'exclusive' if first[1] else 'shared'} lock" in str(info.value)
        assert keys(repo) == [held.key]  # the refused run withdrew its own object
    repo.release_lock(held)
    assert keys(repo) == []


def test_conflict_rule() -> None:
    shared = LockRecord("k", "verify", False)
    assert not conflicts("backup", False, shared) and conflicts("prune", True, shared)
    assert conflicts("backup", False, LockRecord("k", "backup", False))
    assert conflicts("verify", False, LockRecord("k", "prune", True))


def test_held_error_names_holder_kind_time_and_what_to_do(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    key = forge(repo, "backup", False, host="db-worker-7", pid=4242, age=timedelta(minutes=3))
    with pytest.raises(LockHeldError) as info:
        repo.acquire_lock("pg", "t", "prune", exclusive=True)
    text = str(info.value)
    assert "pg/t is locked by host db-worker-7 pid 4242 (a backup, shared lock) since " in text
    # transient, without promising a retry: a command line's run has none (a deployment's may)
    assert "transient: run it again later" in text and "is retried" not in text
    assert f"delete {key}" in text and "stale at" in text


def test_waiting_is_bounded_and_a_freed_lock_is_taken(tmp_path: Path) -> None:
    repo = repo_at(tmp_path, wait=timedelta(seconds=1.5), retry_start=timedelta(seconds=0.2))
    held = repo.acquire_lock("pg", "t", "backup")
    logged: list[str] = []
    started = time.monotonic()
    with pytest.raises(LockHeldError, match=r"waited [\d.]+ s"):
        repo.acquire_lock("pg", "t", "prune", exclusive=True, log=logged.append)
    assert time.monotonic() - started >= 1.4  # it waited its bound (a wait without one: the suite's timeout)
    assert len(logged) == 1 and "waiting up to 1.5 s" in logged[0] and "a backup, shared lock" in logged[0]
    # Released while another run waits: the waiter gets it.
    timer = threading.Timer(0.5, held.release)
    timer.start()
    lock = repo.acquire_lock("pg", "t", "prune", exclusive=True, wait=timedelta(seconds=10))
    timer.join()
    assert keys(repo) == [lock.key]
    repo.release_lock(lock)


def test_stale_locks_are_removed_dead_pid_and_expired_ttl(tmp_path: Path) -> None:
    repo = repo_at(tmp_path, stale_after=timedelta(minutes=30))
    dead = forge(repo, "backup", False, host=socket.gethostname(), pid=dead_pid(), holder="a" * 32)
    old = forge(repo, "verify", False, host="far-away", age=timedelta(minutes=31), holder="b" * 32)
    alive = forge(repo, "verify", False, host=socket.gethostname(), pid=os.getpid(), holder="c" * 32)
    elsewhere = forge(repo, "restore", False, host="far-away", age=timedelta(minutes=29), holder="d" * 32)
    assert not holder_alive(json.loads(get_bytes(repo.store, dead)))
    lock = repo.acquire_lock("pg", "t", "backup")  # shared: the live shared ones stay
    assert keys(repo) == sorted([alive, elsewhere, lock.key])
    repo.release_lock(lock)
    with pytest.raises(LockHeldError, match="host far-away pid 1 .a restore"):
        repo.acquire_lock("pg", "t", "prune", exclusive=True)
    assert dead not in keys(repo) and old not in keys(repo)


def test_unreadable_lock_counts_as_exclusive_until_stale(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    put_bytes(repo.store, "pg/t/locks/backup-" + "f" * 32 + ".json", b"{half a")
    with pytest.raises(LockHeldError, match="unreadable lock object"):
        repo.acquire_lock("pg", "t", "verify")
    assert [r.exclusive for r in read_locks(repo.store, "pg/t/locks/")] == [True]
    stale = repo_at(tmp_path, stale_after=timedelta(0))
    stale.release_lock(stale.acquire_lock("pg", "t", "verify"))
    assert keys(repo) == []


def test_release_deletes_only_its_own_object(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    mine = repo.acquire_lock("pg", "t", "verify")
    theirs = forge(repo, "verify", False, holder="9" * 32)
    repo.store.delete(mine.key)  # removed by a run that judged it stale...
    forged = json.loads(get_bytes(repo.store, theirs))
    put_bytes(repo.store, mine.key, json.dumps(forged).encode())  # ...and its key reused by something else
    repo.release_lock(mine)
    assert keys(repo) == sorted([mine.key, theirs])


def test_refresh_rewrites_the_time_and_notices_a_removed_lock(tmp_path: Path) -> None:
    repo = repo_at(tmp_path, refresh_every=timedelta(seconds=0.2))
    logged: list[str] = []
    lock = repo.acquire_lock("pg", "t", "backup", log=logged.append)
    first = json.loads(get_bytes(repo.store, lock.key))["time"]
    # Waited for, not timed: on a loaded machine the 0.2 s refresh thread may run late.
    deadline = time.monotonic() + 60  # hang guard only
    while json.loads(get_bytes(repo.store, lock.key))["time"] == first:
        assert time.monotonic() < deadline, "the refresh never rewrote the lock's time"
        time.sleep(0.05)
    assert json.loads(get_bytes(repo.store, lock.key))["time"] > first
    lock.check()
    repo.store.delete(lock.key)  # another run judged it stale and removed it
    while not lock.lost:
        assert time.monotonic() < deadline, "the refresh never noticed its lock was removed"
        time.sleep(0.05)
    time.sleep(0.5)  # a few more refresh periods: a lost lock is not written again
    assert "removed by another run" in lock.lost and keys(repo) == []
    with pytest.raises(LockLostError, match="retry the run"):
        lock.check()
    assert any("this run should stop" in line for line in logged)
    repo.release_lock(lock)


def test_locked_yields_the_lock_and_releases_on_error(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    with pytest.raises(RuntimeError):
        with repo.locked("pg", "t", "prune", exclusive=True) as lock:
            assert keys(repo) == [lock.key]
            raise RuntimeError("boom")
    assert keys(repo) == []


def test_old_backup_locks_are_shared_backup_locks(tmp_path: Path) -> None:
    """Locks written before shared/exclusive (no purpose or exclusive field) are backups."""
    repo = repo_at(tmp_path)
    put_bytes(
        repo.store,
        f"pg/t/locks/backup-{'1' * 32}.json",
        json.dumps({"host": "far-away", "pid": 1, "time": datetime.now(UTC).isoformat(), "holder": "1" * 32}).encode(),
    )
    repo.release_lock(repo.acquire_lock("pg", "t", "verify"))
    with pytest.raises(LockHeldError, match="a backup, shared lock"):
        repo.acquire_lock("pg", "t", "prune", exclusive=True)
