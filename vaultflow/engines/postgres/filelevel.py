"""PostgreSQL 15/16 file-level incremental and differential physical backups.

Servers before 17 cannot send changed blocks (no WAL summaries), so the worker runs on the
database host and reads the data directory itself (`data_directory` on the target), the
seed's `rsync --link-dest` idea made consistent with the non-exclusive backup API:

    SELECT pg_create_physical_replication_slot(<temp>, true, true)   -- WAL start..stop is kept
    SELECT pg_backup_start(label, true)                              -- checkpoint; session stays open
    walk the data directory (pg_basebackup's exclusions), stat each file, and copy the files
        whose size or mtime differ from the parent's record (or are "racy": see pg_filestate)
    SELECT * FROM pg_backup_stop(false)                              -- backup_label, stop LSN
    append backup_label and the WAL segments start..stop read from pg_wal

all as ONE tar streamed through zstd into `files.tar.zst` (a generator feeds the pipeline: no
staging copy), plus `filelist.json.zst`: every file present at backup time with size, mtime
and sha256 and the backup whose tar holds its content. The next incremental compares with
that list; after a pg_basebackup full it derives the list from the full's backup_manifest.
Each backup carries the WAL from its start to its stop, so a chain restores without the
archive. The temporary slot (dropped with the session) keeps that WAL from being recycled
until it is read; for the same reason pg_backup_stop does not wait for the archiver (as
pg_basebackup -X fetch does not: waiting costs at least a second, PostgreSQL polls once a
second). The archiver still ships every segment for point-in-time restores.

Restore: pg_filelevel_restore (the full, then each link's tar laid over it, then what the
newest file list does not name deleted), dispatched by pg_incremental.restore_chain.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import pwd
import re
import stat
import tarfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from vaultflow.engines.base import BackupContext, BackupPlan, commit_unless_planned, planned_identity
from vaultflow.engines.postgres.client import connect
from vaultflow.engines.postgres.consistency import FileLevelCounts, PostgresPhysicalConsistency
from vaultflow.engines.postgres.filestate import (
    CONTROL_FILE,
    FILELIST_OBJECT,
    FILES_OBJECT,
    METHOD,
    Entry,
    FileState,
    dump_state,
    load_state,
    state_from_backup_manifest,
    unchanged,
    walk,
)
from vaultflow.engines.postgres.parent import check_identity, fetch_parent_manifest, validate_parent
from vaultflow.engines.postgres.physical import ENGINE, MANIFEST_OBJECT, fingerprints_and_unlogged, parse_backup_label
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.errors import ChainBrokenError, ConfigError, RefusedError, ToolError
from vaultflow.fsutil import directory_problem
from vaultflow.manifest import BackupKind, BackupMode, Manifest
from vaultflow.pipeline import compress_into_store
from vaultflow.proc import temporary_directory
from vaultflow.stores.base import CHUNK_SIZE

MAX_SERVER_VERSION_NUM = 170000  # 17+ takes the native path (pg_incremental)
_END_OF_ARCHIVE = bytes(1024)


# -- the data directory --------------------------------------------------------------------


def data_directory(config: PostgresSettings) -> Path:
    """The target's data_directory, checked to be a readable PostgreSQL data directory."""
    if not config.data_directory:
        raise ConfigError(
            f"target {config.name} has no data_directory: incremental and differential backups of "
            "PostgreSQL 15/16 read the server's data directory. Set data_directory on the PostgresTarget "
            "(its path on the database host: SHOW data_directory) and run the worker on that host"
        )
    path = Path(config.data_directory)
    problem = directory_problem(path)
    if problem:
        raise ConfigError(
            f"data_directory {path} of target {config.name} {problem} on this worker's host "
            f"({os.uname().nodename}): the worker must run on the database host, as its postgres user"
        )
    try:
        with open(path / CONTROL_FILE, "rb") as handle:
            handle.read(8)
        os.listdir(path / "base")
    except PermissionError:
        raise ConfigError(
            f"cannot read data_directory {path} of target {config.name} as OS user {_whoami()}: the worker "
            "must run as the postgres OS user or a member of its group with group read access "
            "(initdb -g / --allow-group-access, i.e. data_directory_mode 0750)"
        ) from None
    except FileNotFoundError:
        raise ConfigError(
            f"data_directory {path} of target {config.name} is not a PostgreSQL data directory "
            f"(no {CONTROL_FILE}); set it to the server's SHOW data_directory"
        ) from None
    return path


def _whoami() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def control_system_identifier(data_dir: Path) -> str:
    """pg_control starts with the cluster's 64-bit system identifier (little-endian here)."""
    with open(data_dir / CONTROL_FILE, "rb") as handle:
        return str(int.from_bytes(handle.read(8), "little"))


# -- backup --------------------------------------------------------------------------------


def wal_segment_names(timeline: int, start_file: str, stop_lsn: str, segment_size: int) -> list[str]:
    """Segment files from `start_file` through the one holding the byte before `stop_lsn`."""
    per_id = 0x100000000 // segment_size
    start = int(start_file[8:16], 16) * per_id + int(start_file[16:24], 16)
    high, low = stop_lsn.split("/")
    stop = ((int(high, 16) << 32 | int(low, 16)) - 1) // segment_size
    return [f"{timeline:08X}{seg // per_id:08X}{seg % per_id:08X}" for seg in range(start, stop + 1)]


def _header(name: str, size: int, mtime: float, *, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode, info.size, info.mtime = (0o700 if directory else 0o600), (0 if directory else size), int(mtime)
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _member(name: str, handle, size: int, mtime: float, digest) -> Iterator[bytes]:
    """One regular member: exactly `size` bytes (a file that shrank meanwhile is padded with
    zeros, one that grew is cut, as pg_basebackup does; WAL replay repairs both)."""
    yield _header(name, size, mtime)
    left = size
    while left:
        chunk = handle.read(min(CHUNK_SIZE, left)) or bytes(min(CHUNK_SIZE, left))
        digest.update(chunk)
        left -= len(chunk)
        yield chunk
    yield bytes(-size % tarfile.BLOCKSIZE)


class _Copy:
    """The data files part of the tar, recording the new file state as it goes."""

    def __init__(self, data_dir: Path, parent: FileState, backup_id: str, log):
        self.data_dir, self.parent, self.backup_id, self.log = data_dir, parent, backup_id, log
        self.state = FileState(time.time_ns(), {}, set())
        self.copied = self.copied_bytes = self.kept = 0

    def chunks(self) -> Iterator[bytes]:
        for rel, info in walk(str(self.data_dir), self.log):
            if stat.S_ISDIR(info.st_mode):
                self.state.dirs.add(rel)
                yield _header(rel, 0, info.st_mtime, directory=True)
                continue
            recorded = self.parent.files.get(rel)
            if unchanged(info.st_size, info.st_mtime_ns, recorded, self.parent.started_ns):
                self.state.files[rel] = Entry(info.st_size, info.st_mtime_ns, recorded.checksum, recorded.source)
                self.kept += 1
                continue
            try:
                handle = open(self.data_dir / rel, "rb")
            except FileNotFoundError:
                continue  # dropped since the walk listed it
            except PermissionError:
                raise ConfigError(
                    f"cannot read {self.data_dir / rel}: the worker must run as the postgres OS user "
                    "or a member of its group (initdb -g, data_directory_mode 0750)"
                ) from None
            digest = hashlib.sha256()
            with handle:
                yield from _member(rel, handle, info.st_size, info.st_mtime, digest)
            self.state.files[rel] = Entry(
                info.st_size, info.st_mtime_ns, "sha256:" + digest.hexdigest(), self.backup_id
            )
            self.copied += 1
            self.copied_bytes += info.st_size


class _ChunkReader:
    """A readable over a generator of byte chunks (what compress_into_store pulls from)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self._buffer = chunks, b""

    def read(self, size: int = -1) -> bytes:
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._buffer = bytes(chunk)
        if size is None or size < 0 or size >= len(self._buffer):
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


def _parent_state(ctx: BackupContext, parent: Manifest, tmp: Path) -> FileState:
    keys = {o.key for o in parent.objects}
    key = FILELIST_OBJECT if FILELIST_OBJECT in keys else MANIFEST_OBJECT
    if key == MANIFEST_OBJECT and (parent.kind != BackupKind.FULL or PostgresPhysicalConsistency.of(parent).file_level):
        raise ChainBrokenError(
            f"backup {parent.id} has no {FILELIST_OBJECT}: a file-level incremental cannot "
            "build on it; take a full backup"
        )
    fetch_parent_manifest(ctx, parent, tmp / "parent", key=key)
    data = (tmp / "parent").read_bytes()
    try:
        if key == FILELIST_OBJECT:
            return load_state(data, f"{parent.id}/{key}")
        return state_from_backup_manifest(data, parent.id, int(parent.started_at.timestamp() * 1e9))
    except ValueError as exc:
        raise ChainBrokenError(f"{exc}: take a full backup") from None


def _start(conn: psycopg.Connection, config: PostgresSettings, backup_id: str) -> None:
    slot = "vaultflow_" + re.sub(r"[^a-z0-9]", "_", backup_id.lower())
    try:
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true, true)", (slot,))
        conn.execute("SELECT pg_backup_start(%s, true)", (f"vaultflow-{backup_id}",))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(
            f"role {config.user} on {config.host}:{config.port} may not take a file-level backup "
            f"({exc}): it needs REPLICATION and EXECUTE on pg_backup_start/pg_backup_stop "
            "(or superuser)"
        ) from None
    except psycopg.Error as exc:
        raise ConfigError(
            f"cannot start a file-level backup on {config.host}:{config.port}: {exc}".strip()
            + " (max_replication_slots must be >= 1 and wal_level replica)"
        ) from None


def _stop_and_wal(conn: psycopg.Connection, data_dir: Path, facts: dict) -> Iterator[bytes]:
    """pg_backup_stop, then backup_label and the WAL start..stop as the tar's last members."""
    t0 = time.monotonic()
    stop_lsn, label_text, map_text = conn.execute(
        "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
    ).fetchone()
    if map_text and map_text.strip():
        raise ConfigError(
            "a tablespace was created during the backup: servers with extra tablespaces are not "
            "supported by physical backups yet; use mode 'logical' for this target"
        )
    label = parse_backup_label(label_text)
    facts.update(label=label, stop_lsn=stop_lsn, label_text=label_text, stop_seconds=time.monotonic() - t0)
    raw = label_text.encode()
    yield _header("backup_label", len(raw), time.time())
    yield raw + bytes(-len(raw) % tarfile.BLOCKSIZE)
    names = wal_segment_names(label.timeline, label.start_wal_file, stop_lsn, facts["segment_size"])
    if label.timeline > 1:
        names.insert(0, f"{label.timeline:08X}.history")
    facts["wal_files"] = names
    for name in names:
        path = data_dir / "pg_wal" / name
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            raise ToolError(
                f"WAL file {name} that backup needs vanished from {path.parent} before it was read; "
                "take the backup again"
            ) from None
        with handle:
            size = os.fstat(handle.fileno()).st_size
            yield from _member(f"pg_wal/{name}", handle, size, time.time(), hashlib.sha256())


def filelevel_backup(
    config: PostgresSettings,
    ctx: BackupContext,
    parent: Manifest,
    kind: BackupKind,
    *,
    server_version: str,
    plan: BackupPlan | None = None,
) -> Manifest:
    """An incremental (parent: the latest backup) or differential (parent: the latest full)
    file-level backup of a PostgreSQL 15/16 cluster, committed to ctx.repository.

    Raises ConfigError (no or unreadable data_directory, another cluster's directory, missing
    privileges, tablespaces), RefusedError (a parent the caller should not have passed),
    ChainBrokenError (take a full instead) and IntegrityError (a corrupt parent object).
    With `plan` (the dump step of a backup in steps): the plan's id and start, manifest returned
    uncommitted for finish_backup.
    """
    validate_parent(config, parent, kind, required=(FILELIST_OBJECT, MANIFEST_OBJECT))
    data_dir = data_directory(config)
    repo, where = ctx.repository, f"{config.host}:{config.port}"
    with connect(config) as conn:
        if conn.info.server_version >= MAX_SERVER_VERSION_NUM:
            raise RefusedError(f"{where} runs PostgreSQL 17 or later: use its native incremental backups")
        on_disk = control_system_identifier(data_dir)
        try:
            system = str(conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])
            timeline = int(conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0])
        except psycopg.Error:
            system, timeline = on_disk, None
        if system != on_disk:
            raise ConfigError(
                f"data_directory {data_dir} holds cluster {on_disk} but {where} is cluster {system}: "
                "set data_directory to the server's own (SHOW data_directory)"
            )
        check_identity(parent, system, timeline, where)
        if conn.execute(
            "SELECT count(*) FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global')"
        ).fetchone()[0]:
            raise ConfigError(
                f"PostgreSQL at {where} has extra tablespaces: physical backups do not support "
                "them yet; use mode 'logical' for this target"
            )
        facts: dict[str, Any] = {
            "segment_size": int(
                conn.execute("SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'").fetchone()[0]
            )
        }
        with temporary_directory("vaultflow-files-") as tmp:  # removed even if this process is killed
            parent_state = _parent_state(ctx, parent, Path(tmp))
        started, backup_id = planned_identity(plan, kind)
        prefix = repo.backup_prefix(ENGINE, config.name, backup_id)
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fingerprints")
        try:
            with repo.uncommitted(ENGINE, config.name, backup_id, ctx.log):
                copy = _Copy(data_dir, parent_state, backup_id, ctx.log)
                t0 = time.monotonic()
                _start(conn, config, backup_id)
                start_seconds = time.monotonic() - t0
                fingerprinting = pool.submit(fingerprints_and_unlogged, config)
                t0 = time.monotonic()
                chunks = itertools.chain(copy.chunks(), _stop_and_wal(conn, data_dir, facts), [_END_OF_ARCHIVE])
                progress = (lambda done: ctx.progress(FILES_OBJECT, done, None)) if ctx.progress else None
                written = compress_into_store(
                    _ChunkReader(chunks),
                    repo.store,
                    prefix + FILES_OBJECT,
                    level=repo.compression_level,
                    progress=progress,
                )
                timings = {
                    "pg_backup_start": start_seconds,
                    "copy": time.monotonic() - t0,
                    "pg_backup_stop": facts["stop_seconds"],
                }
                listing = compress_into_store(
                    _ChunkReader(iter([dump_state(copy.state, backup_id)])),
                    repo.store,
                    prefix + FILELIST_OBJECT,
                    level=repo.compression_level,
                )
                t0 = time.monotonic()
                fingerprints, unlogged = fingerprinting.result()
                timings["fingerprints_wait"] = time.monotonic() - t0
                label = facts["label"]
                manifest = Manifest(
                    id=backup_id,
                    engine=ENGINE,
                    target=config.name,
                    kind=kind,
                    mode=BackupMode.PHYSICAL,
                    parent_id=parent.id,
                    started_at=started,
                    finished_at=datetime.now(UTC),
                    consistency=PostgresPhysicalConsistency(
                        method=METHOD,
                        start_lsn=label.start_lsn,
                        stop_lsn=facts["stop_lsn"],
                        timeline=label.timeline,
                        start_wal_file=label.start_wal_file,
                        stop_wal_file=facts["wal_files"][-1],
                        checkpoint_lsn=label.checkpoint_lsn,
                        wal_ranges=[
                            {"Timeline": label.timeline, "Start-LSN": label.start_lsn, "End-LSN": facts["stop_lsn"]}
                        ],
                        label=label.label,
                        system_identifier=system,
                        unlogged_tables=unlogged,  # like a full's: a restore brings them back empty (and says so)
                        files=FileLevelCounts(
                            copied=copy.copied,
                            copied_bytes=copy.copied_bytes,
                            unchanged=copy.kept,
                            listed=len(copy.state.files),
                        ),
                    ),
                    objects=[
                        written.as_object(FILES_OBJECT, "base", "tar"),
                        listing.as_object(FILELIST_OBJECT, "file-list", "json"),
                    ],
                    fingerprints=fingerprints,
                    server_version=server_version,
                    timings=timings,
                    lineage=ctx.lineage,
                )
                commit_unless_planned(repo, manifest, plan)
        finally:
            pool.shutdown(wait=True)
    ctx.log(
        f"file-level {kind.value} backup {backup_id}: {copy.copied} files copied "
        f"({copy.copied_bytes / 2**20:.1f} MiB), {copy.kept} unchanged since {parent.id}"
    )
    return manifest


__all__ = ["FILELIST_OBJECT", "FILES_OBJECT", "METHOD", "data_directory", "filelevel_backup", "wal_segment_names"]
