"""ship_spool: move spooled WAL files into the repository, in WAL order; the JSON records.

Store, pipeline and zstd imports happen inside the functions that need them (importing
`vaultflow.stores` pulls in boto3).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaultflow.engines.postgres.wal.names import is_segment, object_key, record_key, store_of
from vaultflow.engines.postgres.wal.push import sha256_file, spooled
from vaultflow.errors import IntegrityError, NotFoundError, RefusedError, VaultflowError
from vaultflow.fsutil import fsync_dir

if TYPE_CHECKING:
    from vaultflow.repository import Repository
    from vaultflow.stores.base import Store

LOCK_NAME = ".ship.lock"
RECORD_FIELDS = ("name", "raw_size", "stored_size", "sha256", "raw_sha256", "archived_at")


# -- ship: spool -> repository -------------------------------------------------------------
@dataclass
class ShipResult:
    """What one ship run did, and how far the repository lags behind the spool afterwards."""

    shipped: list[str] = field(default_factory=list)  # stored by this run, in order
    already_stored: list[str] = field(default_factory=list)  # repository had them: spool copy dropped
    remaining: int = 0  # WAL files (any kind) still in the spool after the run
    lag_segments: int = 0  # WAL segments (not .history/.backup) still in the spool
    lag_seconds: float = 0.0  # age of the oldest spooled file; 0 when the spool is empty
    raw_bytes: int = 0
    stored_bytes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "shipped": list(self.shipped),
            "already_stored": list(self.already_stored),
            "remaining": self.remaining,
            "lag_segments": self.lag_segments,
            "lag_seconds": self.lag_seconds,
            "raw_bytes": self.raw_bytes,
            "stored_bytes": self.stored_bytes,
        }


def spool_lag(spool_dir: Path, now: float | None = None) -> tuple[int, int, float]:
    """(WAL files of any kind in the spool, of which segments and .partial segments, age in
    seconds of the oldest spooled file: 0.0 when the spool is empty)."""
    files = spooled(spool_dir)
    segments = sum(1 for f in files if is_segment(f.name) or f.name.endswith(".partial"))
    mtimes = []
    for path in files:
        try:
            mtimes.append(path.stat().st_mtime)
        except FileNotFoundError:
            continue
    now = time.time() if now is None else now
    return len(files), segments, (max(0.0, now - min(mtimes)) if mtimes else 0.0)


def _measure_lag(spool_dir: Path, result: ShipResult) -> None:
    result.remaining, result.lag_segments, result.lag_seconds = spool_lag(spool_dir)


def read_record(repo: Repository | Store, target: str, name: str) -> dict | None:
    """The JSON record of an archived WAL file, or None when it is not (completely) archived."""
    from vaultflow.stores.base import get_bytes

    key = record_key(target, name)
    try:
        raw = get_bytes(store_of(repo), key)
    except NotFoundError:
        return None
    try:
        record = json.loads(raw)
        missing = [f for f in RECORD_FIELDS if f not in record]
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"WAL record {key} in {store_of(repo).description} is unreadable: {exc}") from exc
    if missing:
        raise IntegrityError(f"WAL record {key} in {store_of(repo).description} lacks {', '.join(missing)}")
    if record["name"] != name:
        raise IntegrityError(f"WAL record {key} names {record['name']!r}, not {name!r}")
    return record


def _ship_one(path: Path, store: Store, target: str, level: int, result: ShipResult) -> None:
    from vaultflow.pipeline import HashingReader, check_stored, compress_into_store
    from vaultflow.stores.base import put_bytes

    name = path.name
    existing = read_record(store, target, name)
    if existing is not None:
        if existing["raw_sha256"] != sha256_file(path):
            raise RefusedError(
                f"WAL file {name} is already archived in {store.description} with different "
                f"content (raw sha256 {existing['raw_sha256']}); refusing to overwrite it and "
                f"keeping the spooled copy {path}. Is a second server archiving as target {target!r}?"
            )
        result.already_stored.append(name)
        return
    key = object_key(target, name)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = HashingReader(handle)
        written = compress_into_store(raw, store, key, level=level, size_hint=size)
    check_stored(store, key, written.stored_size, written.sha256, f"WAL segment {name}")
    record = {
        "name": name,
        "raw_size": written.raw_size,
        "stored_size": written.stored_size,
        "sha256": written.sha256,
        "raw_sha256": raw.sha256,
        "archived_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    put_bytes(store, record_key(target, name), json.dumps(record, indent=1).encode() + b"\n")  # LAST
    result.shipped.append(name)
    result.raw_bytes += written.raw_size
    result.stored_bytes += written.stored_size


def _failure(exc: Exception, name: str, store: Store, result: ShipResult) -> VaultflowError:
    """The same kind of error (transient stays transient), naming the segment at fault."""
    message = (
        f"shipping WAL file {name} to {store.description} failed: {exc}; it and every "
        f"later file stay in the spool ({len(result.shipped)} shipped before it)"
    )
    cls = type(exc) if isinstance(exc, VaultflowError) else VaultflowError
    try:
        error = cls(message)
    except TypeError:  # a subclass with another constructor
        error = VaultflowError(message)
    error.segment = name  # type: ignore[attr-defined]
    error.ship_result = result  # type: ignore[attr-defined]
    return error


def ship_spool(spool_dir: Path, repo: Repository | Store, target: str, *, level: int = 3) -> ShipResult:
    """Move every spooled WAL file into the repository, in WAL order; returns what happened.

    Per file: compress into `<name>.zst`, re-read it and check its size and sha256, write
    `<name>.json` (the record, LAST), then delete the spooled file and fsync the spool. The
    first failure stops the run (never a hole in the archive) and is raised as the same
    error class, naming the file, with `.segment` and `.ship_result` attached; that file and
    every later one stay in the spool. Only one ship runs per spool at a time (flock).
    """
    spool_dir = Path(spool_dir)
    store = store_of(repo)
    result = ShipResult()
    if not spool_dir.is_dir():
        return result
    with _ShipLock(spool_dir):
        for path in spooled(spool_dir):
            try:
                _ship_one(path, store, target, level, result)
                path.unlink()  # only now: the record says the repository holds it
                fsync_dir(spool_dir)
            except Exception as exc:
                _measure_lag(spool_dir, result)
                raise _failure(exc, path.name, store, result) from exc
        _measure_lag(spool_dir, result)
    return result


def archive_file(path: Path, repo: Repository | Store, target: str, *, level: int = 3) -> bool:
    """Store one WAL file (e.g. a new timeline's `0000000N.history` from a restored cluster's
    pg_wal) straight into the archive of `target`, as ship_spool would: object, read-back
    check, record last. True when stored, False when the archive already held it with the
    same content; RefusedError naming the file when it holds different content."""
    result = ShipResult()
    _ship_one(Path(path), store_of(repo), target, level, result)
    return bool(result.shipped)


class _ShipLock:
    """An exclusive flock on <spool>/.ship.lock: two shippers would race on the same files."""

    def __init__(self, spool_dir: Path):
        self._path = spool_dir / LOCK_NAME
        self._fd = -1

    def __enter__(self) -> None:
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise RefusedError(f"another ship of WAL spool {self._path.parent} is running") from None

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._fd)  # closing releases the lock
