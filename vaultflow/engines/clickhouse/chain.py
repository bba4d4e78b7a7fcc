"""A backup chain on the backup disk: every link's native backup of one database written back from
the repository (checked) under the name it was taken under, because each incremental's `.backup`
names its base by that name (`<base_backup>Disk('backups', 'vaultflow/<target>/<id>/<db>')`).

Those names are shared: two restores, drills or incrementals of one chain on one worker host
need the same directories at once. So a written-back link is reference counted with flock(2)
(docs/architecture.md, "ClickHouse: chains on the backup disk"):

    vaultflow/<target>.lock       the target's mutex, held (exclusive, briefly) while links are
                                  written back or given up; never deleted
    <link directory>.users        each user of the link holds a shared flock on it while it
                                  needs the link; the user that finds no other holder (an
                                  exclusive try-lock succeeds) writes the link afresh when it
                                  starts and removes it when it ends

Every open of a `.users` file happens under the mutex, so removing one there is safe; flock
belongs to the open file, so two threads of one process exclude each other as two processes do;
a killed user's locks go with its process, and what it left is written again by the next user.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vaultflow.engines.base import BackupContext
from vaultflow.engines.clickhouse.consistency import ClickHouseBackupConsistency
from vaultflow.engines.clickhouse.staging import materialise, remove_staging
from vaultflow.errors import ChainBrokenError
from vaultflow.keys import encode_name
from vaultflow.manifest import Manifest

STAGING = "vaultflow"  # vaultflow's directory on the backup disk: <STAGING>/<target>/<backup id>/<db>


def target_staging(target: str) -> str:
    """'vaultflow/<encoded target>': where the target's backups are written on the backup disk."""
    return f"{STAGING}/{encode_name(target, 'target name')}"


def native_name(manifest: Manifest, database: str) -> str:
    """The name `database`'s native backup of `manifest` was taken under on the backup disk.
    ChainBrokenError when the backup does not hold that database."""
    native = ClickHouseBackupConsistency.of(manifest).databases.get(database)
    if native is None:
        raise ChainBrokenError(f"backup {manifest.id} holds no database {database!r}")
    return native.name


@contextmanager
def _mutex(root: Path, target: str) -> Iterator[None]:
    path = root / f"{target_staging(target)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _users(directory: Path) -> Path:
    return directory.with_name(directory.name + ".users")


def _open_users(directory: Path) -> int:
    directory.parent.mkdir(parents=True, exist_ok=True)
    return os.open(_users(directory), os.O_RDWR | os.O_CREAT, 0o600)


def _alone(fd: int) -> bool:
    """Whether this open file can lock exclusively now: no other user holds the link (a shared
    lock held through `fd` itself is given up either way)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def _drop(directory: Path, root: Path) -> None:
    """Remove a link nobody uses (the caller holds the mutex and the link's exclusive lock)."""
    shutil.rmtree(directory, ignore_errors=True)
    _users(directory).unlink(missing_ok=True)
    remove_staging(directory, root)


def _use(ctx: BackupContext, link: Manifest, database: str, directory: Path, root: Path) -> int:
    """Become a user of one link (the caller holds the mutex); returns the `.users` descriptor
    holding the shared lock. The first user writes the link (IntegrityError naming a bad object)."""
    fd = _open_users(directory)
    try:
        if _alone(fd):  # nobody uses it: whatever is there is a killed run's leftover
            shutil.rmtree(directory, ignore_errors=True)
            try:
                materialise(ctx, link, database, directory)
            except BaseException:
                _drop(directory, root)
                raise
        fcntl.flock(fd, fcntl.LOCK_SH)  # no wait: outside the mutex, only shared locks are held
    except BaseException:
        os.close(fd)
        raise
    return fd


def _give_up(directory: Path, fd: int, root: Path) -> None:
    """Stop using one link (the caller holds the mutex); the last user removes it."""
    try:
        if _alone(fd):
            _drop(directory, root)
    finally:
        os.close(fd)


@contextmanager
def chain_on_disk(ctx: BackupContext, chain: list[Manifest], database: str, root: Path) -> Iterator[None]:
    """Every link of `chain` ([full, ..., newest], one target's) of `database` on the backup disk
    (`root`) at its own name while the block runs: written from the repository, every file checked
    (vaultflow.engines.clickhouse.staging.materialise), by the first of its concurrent users, and
    removed by the last. IntegrityError naming the first bad object (nothing is left then)."""
    if not chain:
        yield
        return
    target = chain[0].target
    held: list[tuple[Path, int]] = []
    try:
        with _mutex(root, target):
            for link in chain:
                directory = root / native_name(link, database)
                held.append((directory, _use(ctx, link, database, directory, root)))
        yield
    finally:
        with _mutex(root, target):
            for directory, fd in reversed(held):
                _give_up(directory, fd, root)


def discard_staging(root: Path, target: str, directories: list[Path]) -> None:
    """Remove a committed backup's staging directories (BACKUP's own output), except one that a
    restore already uses as a link (it is the same backup, written back: its last user removes it)."""
    with _mutex(root, target):
        for directory in directories:
            fd = _open_users(directory)
            try:
                if _alone(fd):
                    _drop(directory, root)
            finally:
                os.close(fd)
