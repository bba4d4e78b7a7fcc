"""Continuous WAL archiving: spool locally, ship to the repository, fetch back, check gaps.

    PostgreSQL --archive_command--> wal_push   -> <spool>/<name>            (local, fsynced)
    archive-logs flow ------------> ship_spool -> postgres/<target>/logs/wal/<name>.zst
                                                  postgres/<target>/logs/wal/<name>.json  LAST
    PostgreSQL --restore_command--> wal_fetch  <- the record, then the verified .zst

Archiving is split in two so that PostgreSQL never waits for (or fails because of) the
repository: `wal_push` only copies the file into a local spool directory atomically, which is
fast and works while S3 is down. `ship_spool` moves spooled files to the repository in WAL
order and deletes a spooled file only after its JSON record is written, so a crash anywhere
loses nothing (at worst a segment is shipped twice; the second time is recognised and skipped).

This module is imported by `python -m vaultflow.wal_cli push` on every WAL segment: keep its
top-level imports to the standard library. Store, pipeline and zstd imports happen inside the
functions that need them (importing `vaultflow.stores` pulls in boto3).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaultflow.errors import IntegrityError, NotFoundError, RefusedError, VaultflowError
from vaultflow.fsutil import fsync_dir

if TYPE_CHECKING:
    from vaultflow.repository import Repository
    from vaultflow.stores.base import Store

ENGINE = "postgres"
DEFAULT_SEGMENT_SIZE = 16 << 20
TMP_PREFIX = ".tmp-"
LOCK_NAME = ".ship.lock"
RECORD_FIELDS = ("name", "raw_size", "stored_size", "sha256", "raw_sha256", "archived_at")
_COPY_CHUNK = 1 << 20

_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_HISTORY = re.compile(r"^[0-9A-F]{8}\.history$")
_BACKUP_LABEL = re.compile(r"^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$")
_PARTIAL = re.compile(r"^[0-9A-F]{24}\.partial$")


class WalError(VaultflowError):
    """A WAL file could not be spooled or fetched (the message names the file)."""


# -- names ---------------------------------------------------------------------------------
def is_segment(name: str) -> bool:
    return bool(_SEGMENT.match(name))


def is_history(name: str) -> bool:
    return bool(_HISTORY.match(name))


def is_wal_file(name: str) -> bool:
    """Anything PostgreSQL archives: segments, .partial segments, .history and .backup files."""
    return bool(_SEGMENT.match(name) or _HISTORY.match(name) or _BACKUP_LABEL.match(name)
                or _PARTIAL.match(name))


def _segments_per_id(segment_size: int) -> int:
    if segment_size <= 0 or segment_size & (segment_size - 1) or not (1 << 20) <= segment_size <= (1 << 30):
        raise ValueError(f"invalid WAL segment size {segment_size}: a power of two from 1 MiB to 1 GiB")
    return (1 << 32) // segment_size


def parse_segment(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> tuple[int, int]:
    """'000000010000000A000000FF' -> (timeline 1, segment number 0xA * 256 + 0xFF)."""
    if not is_segment(name):
        raise ValueError(f"{name!r} is not a WAL segment name (24 upper-case hex digits)")
    per_id = _segments_per_id(segment_size)
    log, seg = int(name[8:16], 16), int(name[16:24], 16)
    if seg >= per_id:
        raise ValueError(f"{name!r} is not a valid segment name for {segment_size}-byte segments")
    return int(name[:8], 16), log * per_id + seg


def segment_name(timeline: int, segno: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """Inverse of parse_segment (PostgreSQL's XLogFileName)."""
    per_id = _segments_per_id(segment_size)
    return f"{timeline:08X}{segno // per_id:08X}{segno % per_id:08X}"


def next_segment(name: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    timeline, segno = parse_segment(name, segment_size)
    return segment_name(timeline, segno + 1, segment_size)


def parse_lsn(text: str) -> int:
    """'0/3000158' -> 0x3000158."""
    high, _, low = text.strip().partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def parse_history(text: str) -> list[tuple[int, int]]:
    """A timeline history file -> [(parent timeline, switch point LSN)], oldest first."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(None, 2)
        if len(fields) < 2:
            raise ValueError(f"invalid timeline history line {line!r}")
        entries.append((int(fields[0]), parse_lsn(fields[1])))
    return entries


def wal_order(name: str) -> tuple[int, str]:
    """Shipping order: timeline history files first, then by name (timeline, then position)."""
    return (0 if is_history(name) else 1, name)


# -- repository layout ---------------------------------------------------------------------
def wal_prefix(target: str) -> str:
    return f"{ENGINE}/{target}/logs/wal/"


def object_key(target: str, name: str) -> str:
    return f"{wal_prefix(target)}{name}.zst"


def record_key(target: str, name: str) -> str:
    return f"{wal_prefix(target)}{name}.json"


def _store_of(repo: Repository | Store) -> Store:
    """Functions take a Repository; a bare Store is accepted too (the fetch fast path)."""
    return getattr(repo, "store", repo)


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


def _copy_fd(src: int, dst: int) -> None:
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
            view = view[os.write(dst, view):]


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


def _sha256_file(path: Path) -> str:
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
        raise WalError(f"refusing to spool {source}: {name!r} is not a WAL segment, .partial, "
                       ".history or .backup file name")
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
            _copy_fd(src_fd, dst_fd)
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
        return {"shipped": list(self.shipped), "already_stored": list(self.already_stored),
                "remaining": self.remaining, "lag_segments": self.lag_segments,
                "lag_seconds": self.lag_seconds, "raw_bytes": self.raw_bytes,
                "stored_bytes": self.stored_bytes}


def _measure_lag(spool_dir: Path, result: ShipResult, now: float | None = None) -> None:
    files = spooled(spool_dir)
    result.remaining = len(files)
    result.lag_segments = sum(1 for f in files if is_segment(f.name) or f.name.endswith(".partial"))
    mtimes = []
    for path in files:
        try:
            mtimes.append(path.stat().st_mtime)
        except FileNotFoundError:
            continue
    now = time.time() if now is None else now
    result.lag_seconds = max(0.0, now - min(mtimes)) if mtimes else 0.0


def read_record(repo: Repository | Store, target: str, name: str) -> dict | None:
    """The JSON record of an archived WAL file, or None when it is not (completely) archived."""
    from vaultflow.stores.base import get_bytes

    key = record_key(target, name)
    try:
        raw = get_bytes(_store_of(repo), key)
    except NotFoundError:
        return None
    try:
        record = json.loads(raw)
        missing = [f for f in RECORD_FIELDS if f not in record]
    except (ValueError, TypeError) as exc:
        raise IntegrityError(f"WAL record {key} in {_store_of(repo).description} is unreadable: {exc}") from exc
    if missing:
        raise IntegrityError(f"WAL record {key} in {_store_of(repo).description} lacks {', '.join(missing)}")
    if record["name"] != name:
        raise IntegrityError(f"WAL record {key} names {record['name']!r}, not {name!r}")
    return record


def _verify_stored(store: Store, key: str, name: str, stored_size: int, sha256: str) -> None:
    """Re-read what was just stored: right size and sha256, or IntegrityError."""
    from vaultflow.pipeline import HashingReader
    from vaultflow.stores.base import CHUNK_SIZE

    info = store.stat(key)
    if info is None or info.size != stored_size:
        raise IntegrityError(
            f"WAL segment {name}: stored object {key} is "
            f"{'missing' if info is None else f'{info.size} bytes'} right after writing "
            f"{stored_size} bytes to {store.description}"
        )
    with store.open(key) as stream:
        reader = HashingReader(stream)
        while reader.read(CHUNK_SIZE):
            pass
    if reader.count != stored_size or reader.sha256 != sha256:
        raise IntegrityError(
            f"WAL segment {name}: stored object {key} reads back with sha256 {reader.sha256} "
            f"({reader.count} bytes), not the {sha256} ({stored_size} bytes) written to {store.description}"
        )


def _ship_one(path: Path, store: Store, target: str, level: int, result: ShipResult) -> None:
    from vaultflow.pipeline import HashingReader, compress_into_store
    from vaultflow.stores.base import put_bytes

    name = path.name
    existing = read_record(store, target, name)
    if existing is not None:
        if existing["raw_sha256"] != _sha256_file(path):
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
    _verify_stored(store, key, name, written.stored_size, written.sha256)
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
    message = (f"shipping WAL file {name} to {store.description} failed: {exc}; it and every "
               f"later file stay in the spool ({len(result.shipped)} shipped before it)")
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
    store = _store_of(repo)
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


# -- fetch: restore_command ----------------------------------------------------------------
def _install(dest: Path, write) -> None:
    """Write `dest` through a temp file in its directory + rename; nothing left on failure."""
    tmp = dest.with_name(f"{TMP_PREFIX}{dest.name}-{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def wal_fetch(name: str, dest: Path, repo: Repository | Store, target: str,
              spool_dir: Path | None = None) -> bool:
    """Restore WAL file `name` into `dest`; False when it is not archived (end of archive).

    A spooled (not yet shipped) copy in `spool_dir` wins. From the repository, a file exists
    only once its JSON record does; its bytes are checked against the record's sha256 (stored)
    and raw_sha256 while streaming, and a mismatch raises IntegrityError naming the file.
    """
    dest = Path(dest)
    if spool_dir is not None and is_wal_file(name):
        spooled_copy = Path(spool_dir) / name
        if spooled_copy.is_file():
            def copy_spooled(out) -> None:
                with open(spooled_copy, "rb") as src:
                    _copy_fd(src.fileno(), out.fileno())
            _install(dest, copy_spooled)
            return True
    record = read_record(repo, target, name)
    if record is None:
        return False
    from vaultflow.pipeline import open_verified
    from vaultflow.stores.base import CHUNK_SIZE

    store = _store_of(repo)
    key = object_key(target, name)
    label = f"WAL file {name} ({key})"

    def copy_verified(out) -> None:
        try:
            reader, verifying, raw = open_verified(store, key, record["sha256"], record["stored_size"], label)
        except NotFoundError as exc:
            raise IntegrityError(f"{label} has a record but its object is missing from {store.description}") from exc
        digest, size = hashlib.sha256(), 0
        with raw:
            while chunk := reader.read(CHUNK_SIZE):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            verifying.check()
        if size != record["raw_size"] or digest.hexdigest() != record["raw_sha256"]:
            raise IntegrityError(
                f"{label} decompresses to {size} bytes with sha256 {digest.hexdigest()}, not the "
                f"archived {record['raw_size']} bytes with sha256 {record['raw_sha256']}"
            )

    _install(dest, copy_verified)
    return True


# -- continuity ----------------------------------------------------------------------------
def archived_names(repo: Repository | Store, target: str) -> list[str]:
    """Names of completely archived WAL files (those with a record), in WAL order."""
    prefix = wal_prefix(target)
    names = [info.key[len(prefix):-len(".json")] for info in _store_of(repo).list(prefix)
             if info.key.endswith(".json")]
    return sorted((n for n in names if is_wal_file(n)), key=wal_order)


def _read_history(repo: Repository | Store, target: str, timeline: int) -> list[tuple[int, int]] | None:
    """The archived history file of `timeline`, parsed; None when it is not archived."""
    name = f"{timeline:08X}.history"
    record = read_record(repo, target, name)
    if record is None:
        return None
    from vaultflow.pipeline import open_verified

    reader, verifying, raw = open_verified(_store_of(repo), object_key(target, name), record["sha256"],
                                           record["stored_size"], f"WAL file {name}")
    chunks = []
    with raw:
        while chunk := reader.read(1 << 16):
            chunks.append(chunk)
        verifying.check()
    return parse_history(b"".join(chunks).decode())


def check_continuity(repo: Repository | Store, target: str, start_wal_file: str,
                     timeline: int | None = None, *,
                     segment_size: int = DEFAULT_SEGMENT_SIZE) -> list[str]:
    """Segments missing between `start_wal_file` and the newest archived one (empty: no gap).

    The chain follows `timeline` (default: the newest archived timeline) back through its
    `.history` file the way recovery does: a segment is read from the newest timeline of the
    history that had begun by that segment. A missing history file is itself reported.
    """
    names = archived_names(repo, target)
    segments = {n for n in names if is_segment(n)}
    start_tli, start_segno = parse_segment(start_wal_file, segment_size)
    if timeline is None:
        timelines = [parse_segment(n, segment_size)[0] for n in segments]
        timelines += [int(n[:8], 16) for n in names if is_history(n)]
        timeline = max([start_tli, *timelines])
    missing: list[str] = []
    # begins: [(timeline, first segment number it owns)], newest first
    begins: list[tuple[int, int]] = [(timeline, 0)]
    if timeline != start_tli:
        history = _read_history(repo, target, timeline)
        if history is None:
            missing.append(f"{timeline:08X}.history")
            on_new = [parse_segment(n, segment_size)[1] for n in segments
                      if parse_segment(n, segment_size)[0] == timeline]
            begins = [(timeline, min(on_new) if on_new else 1 << 64), (start_tli, 0)]
        else:
            begins, begin = [], 0
            for parent, switch_lsn in history:
                begins.append((parent, begin))
                begin = switch_lsn // segment_size
            begins.append((timeline, begin))
            begins.reverse()
    chain = {tli for tli, _ in begins}
    ends = [parse_segment(n, segment_size)[1] for n in segments if parse_segment(n, segment_size)[0] in chain]
    if not ends:
        return missing + [segment_name(start_tli, start_segno, segment_size)]
    for segno in range(start_segno, max(ends) + 1):
        tli = next(t for t, begin in begins if begin <= segno)
        name = segment_name(tli, segno, segment_size)
        if name not in segments:
            missing.append(name)
    return missing


# -- retention ---------------------------------------------------------------------------------
def wal_not_needed(names: list[str], oldest_start: str, segment_size: int = DEFAULT_SEGMENT_SIZE) -> list[str]:
    """WAL files no kept backup can use: segments (and .backup/.partial files) before the start
    segment of the oldest kept physical backup, on any timeline. History files are kept: they
    are tiny and recovery follows them from any later timeline."""
    _, start_segno = parse_segment(oldest_start, segment_size)
    older = []
    for name in names:
        if is_history(name):
            continue
        head = name[:24]
        if is_segment(head) and parse_segment(head, segment_size)[1] < start_segno:
            older.append(name)
    return older


def delete_wal(repo: Repository | Store, target: str, names: list[str]) -> int:
    """Record first (the file stops being archived), then the object: never a record without data."""
    store = _store_of(repo)
    for name in names:
        store.delete(record_key(target, name))
        store.delete(object_key(target, name))
    return len(names)
