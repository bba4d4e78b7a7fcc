"""wal_push (PostgreSQL's archive_command): copy a WAL file into the local spool, durably.

Standard library only at import time: `python -m vaultflow.engines.postgres.wal.cli push` runs this on every
WAL segment.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

from vaultflow.engines.postgres.wal.names import is_wal_file, wal_order
from vaultflow.errors import RefusedError, VaultflowError
from vaultflow.fsutil import fsync_dir

TMP_PREFIX = ".tmp-"
_COPY_CHUNK = 1 << 20


class WalError(VaultflowError):
    """A WAL file could not be spooled or fetched (the message names the file)."""


# -- filesystem helpers --------------------------------------------------------------------
def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(path: Path) -> None:
    """Create `path` 0700 if missing (parents with default modes) and make that durable."""
    if path.is_dir():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        if not path.is_dir():
            raise WalError(f"spool {path} exists but is not a directory") from None
        return
    except OSError as exc:
        raise WalError(f"cannot create spool directory {path}: {exc.strerror or exc}") from exc
    fsync_dir(path.parent)


def copy_fd(src: int, dst: int) -> None:
    """Kernel-side copy (sendfile), falling back to read/write."""
    offset = 0
    try:
        while True:
            sent = os.sendfile(dst, src, offset, 8 << 20)
            if sent == 0:
                return
            offset += sent
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP) or offset:
            raise
    while chunk := os.read(src, _COPY_CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]


def _same_content(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            chunk_a, chunk_b = fa.read(_COPY_CHUNK), fb.read(_COPY_CHUNK)
            if chunk_a != chunk_b:
                return False
            if not chunk_a:
                return True


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# -- push: archive_command -----------------------------------------------------------------
def wal_push(source: Path, spool_dir: Path) -> Path:
    """Copy a WAL file into the spool atomically and durably; return its spool path.

    `.tmp-<name>` is written, fsynced and renamed to `<name>`, then the directory is fsynced:
    once this returns, the file survives a crash. A leftover `.tmp-<name>` from a crash is
    simply overwritten. Pushing a name that is already spooled succeeds if the content is
    identical (PostgreSQL retries after a crash) and raises RefusedError if it differs: an
    archived WAL file is never overwritten.
    """
    source, spool_dir = Path(source), Path(spool_dir)
    name = source.name
    if not is_wal_file(name):
        raise WalError(
            f"refusing to spool {source}: {name!r} is not a WAL segment, .partial, .history or .backup file name"
        )
    _ensure_dir(spool_dir)
    final = spool_dir / name
    if final.exists():
        if not _same_content(source, final):
            raise RefusedError(
                f"WAL file {name} is already spooled in {spool_dir} with different content; "
                "refusing to overwrite it. Is a second server archiving into this spool?"
            )
        _fsync_path(final)  # an earlier push may have died before its fsyncs
        fsync_dir(spool_dir)
        return final
    tmp = spool_dir / f"{TMP_PREFIX}{name}"
    try:
        src_fd = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise WalError(f"cannot read WAL file {source}: {exc.strerror or exc}") from exc
    try:
        dst_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(dst_fd, 0o600)  # a leftover temp file may have another mode
            copy_fd(src_fd, dst_fd)
            os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WalError(f"spooling WAL file {name} into {spool_dir} failed: {exc.strerror or exc}") from exc
    finally:
        os.close(src_fd)
    os.rename(tmp, final)
    fsync_dir(spool_dir)
    return final


def spooled(spool_dir: Path) -> list[Path]:
    """WAL files waiting in the spool, in shipping order (temp files and locks ignored)."""
    try:
        names = [n for n in os.listdir(spool_dir) if is_wal_file(n)]
    except FileNotFoundError:
        return []
    return [Path(spool_dir) / n for n in sorted(names, key=wal_order)]
