"""Between the backup disk and the repository: a native backup's directory streamed into the
repository file by file (each checked against `.backup` as it passes), and back again before a
RESTORE (each checked against the repository's sha256 and against `.backup`).

Object keys: `<encoded database>/<path inside the backup>.zst`, the `.backup` document included
(`<db>/.backup.zst`), so `zstd -d` of every object of a database rebuilds its backup directory.

Files move on FILE_THREADS threads at once, the biggest first: zstd, sha256, the reads and the
store's writes (and fsyncs) release the GIL, so one file's wait for the disk overlaps another's
compression; ClickHouse's checksum (Python over CityHash) is what holds the GIL. Each thread holds
about two chunk buffers plus its zstd context.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from functools import partial
from pathlib import Path
from typing import TypeVar

from vaultflow.engines.base import BackupContext
from vaultflow.engines.clickhouse.listing import (
    METADATA,
    BackupListing,
    ChecksumReader,
    check_entry,
    parse_listing,
)
from vaultflow.errors import IntegrityError
from vaultflow.keys import encode_name
from vaultflow.manifest import Manifest, StoredObject
from vaultflow.pipeline import compress_into_store, write_verified

ROLE_FILE, ROLE_METADATA = "backup-file", "backup-metadata"
FORMAT = "clickhouse-backup"
FILE_THREADS = max(2, min(4, os.cpu_count() or 1))  # files at once (measured: docs/clickhouse.md, Performance)
ZSTD_THREADS = 0  # per file: the files themselves run in parallel (0 = zstd's single-threaded mode)
T = TypeVar("T")


def object_key(database: str, path: str) -> str:
    """The manifest key of file `path` (relative, '/'-separated) of `database`'s native backup."""
    return f"{encode_name(database, 'database name')}/{path}.zst"


def disk_files(directory: Path) -> set[str]:
    """Every file under `directory`, as '/'-separated relative paths."""
    found = set()
    for root, _, names in os.walk(directory):
        for name in names:
            found.add(Path(root, name).relative_to(directory).as_posix())
    return found


def ingest(ctx: BackupContext, prefix: str, database: str, directory: Path) -> tuple[BackupListing, list[StoredObject]]:
    """Stream every file of the native backup in `directory` into the repository under `prefix` (the
    backup's key prefix), each checked against the size and checksum `.backup` lists for it while it
    streams, `.backup` itself last. IntegrityError naming the file when one differs, is missing, or
    is not listed. Returns the listing and the objects written."""
    metadata = directory / METADATA
    if not metadata.is_file():
        raise IntegrityError(f"{directory} holds no {METADATA}: BACKUP did not finish writing there")
    listing = parse_listing(metadata.read_bytes(), str(metadata))
    expected = listing.data_files()
    present = disk_files(directory) - {METADATA}
    if present != set(expected):
        missing, extra = sorted(set(expected) - present), sorted(present - set(expected))
        raise IntegrityError(
            f"the backup of {database} in {directory} does not match its {METADATA}: "
            f"missing {missing[:5] or 'none'}, not listed {extra[:5] or 'none'}"
        )
    paths = sorted(expected)
    total = sum(entry.stored_here for entry in expected.values())
    done = 0

    def report(index: int, obj: StoredObject) -> None:  # in the calling thread: ctx.progress need not be thread-safe
        nonlocal done
        done += obj.raw_size
        if ctx.progress:
            ctx.progress(f"{database}: {len(paths)} files", done, total)

    objects = in_threads(
        [partial(_put, ctx, prefix, database, directory, path, expected[path]) for path in paths],
        [expected[path].stored_here for path in paths],
        report,
    )
    objects.append(_put(ctx, prefix, database, directory, METADATA, None))
    return listing, objects


def in_threads(jobs: Sequence[Callable[[], T]], weights: Sequence[int], done: Callable[[int, T], None]) -> list[T]:
    """Run `jobs` on FILE_THREADS threads, the heaviest (`weights`) first; their results in the jobs'
    order. `done(index, result)` runs in the calling thread as each job ends. The first error stops
    the jobs not yet started, waits for the running ones and is raised."""
    order = sorted(range(len(jobs)), key=lambda i: -weights[i])
    results: list = [None] * len(jobs)
    with ThreadPoolExecutor(max_workers=FILE_THREADS, thread_name_prefix="vaultflow-clickhouse") as pool:
        pending: dict[Future[T], int] = {pool.submit(jobs[i]): i for i in order}
        try:
            while pending:
                finished, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for future in sorted(finished, key=lambda f: pending[f]):
                    index = pending.pop(future)
                    results[index] = future.result()
                    done(index, results[index])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


def _put(ctx: BackupContext, prefix: str, database: str, directory: Path, path: str, entry) -> StoredObject:
    """Stream one file into the repository; with `entry` (a data file), check it against .backup."""
    key = object_key(database, path)
    repo = ctx.repository
    size = entry.stored_here if entry is not None else None
    with open(directory / path, "rb") as handle:
        reader = ChecksumReader(handle)
        written = compress_into_store(
            reader, repo.store, prefix + key, level=repo.compression_level, threads=ZSTD_THREADS, size_hint=size
        )
    if entry is not None:
        check_entry(entry, reader.checksum.size, reader.checksum.hexdigest(), f"{directory / path}")
    return written.as_object(key, ROLE_METADATA if entry is None else ROLE_FILE, FORMAT, database)


def materialise(ctx: BackupContext, manifest: Manifest, database: str, directory: Path) -> BackupListing:
    """Write `database`'s native backup of `manifest` from the repository into `directory` (created;
    must not exist): `.backup` first, then every file, each checked against the repository's sha256
    while it streams and then against the size and checksum `.backup` lists. IntegrityError naming
    the object at the first difference, before anything is restored from it."""
    objects = [o for o in manifest.objects if o.database == database]
    meta = [o for o in objects if o.role == ROLE_METADATA]
    if len(meta) != 1:
        raise IntegrityError(f"backup {manifest.id} holds no {METADATA} object of database {database!r}")
    directory.mkdir(parents=True)
    _fetch(ctx, manifest, meta[0], directory / METADATA)
    listing = parse_listing((directory / METADATA).read_bytes(), f"{manifest.id}/{meta[0].key}")
    expected = listing.data_files()
    files = {o.key: o for o in objects if o.role == ROLE_FILE}
    work = []
    for path, entry in sorted(expected.items()):
        obj = files.pop(object_key(database, path), None)
        if obj is None:
            raise IntegrityError(
                f"backup {manifest.id}: {METADATA} of {database} lists {path}, which the manifest does not hold"
            )
        work.append((directory / path, entry, obj))
    if files:
        raise IntegrityError(f"backup {manifest.id}: objects {sorted(files)[:5]} are not listed in {METADATA}")

    def fetch_and_check(target: Path, entry, obj: StoredObject) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        size, checksum = _fetch(ctx, manifest, obj, target)
        check_entry(entry, size, checksum, f"{manifest.id}/{obj.key}")

    in_threads([partial(fetch_and_check, *w) for w in work], [w[2].raw_size for w in work], lambda i, r: None)
    return listing


class _ChecksumWriter:
    def __init__(self, out) -> None:
        from vaultflow.engines.clickhouse.listing import ClickHouseChecksum

        self.out = out
        self.checksum = ClickHouseChecksum()

    def write(self, data: bytes) -> int:
        self.checksum.update(data)
        return self.out.write(data)


def _fetch(ctx: BackupContext, manifest: Manifest, obj: StoredObject, target: Path) -> tuple[int, str]:
    """Decompress `obj` into `target`, its sha256 checked; returns the bytes written and ClickHouse's
    checksum of them."""
    repo = ctx.repository
    with open(target, "wb") as out:
        writer = _ChecksumWriter(out)
        write_verified(repo.store, repo.object_key(manifest, obj.key), obj.sha256, obj.stored_size, writer, obj.key)
    return writer.checksum.size, writer.checksum.hexdigest()


def remove_staging(directory: Path, root: Path) -> None:
    """Remove `directory`, then its parents up to (not including) `root` while they are empty."""
    shutil.rmtree(directory, ignore_errors=True)
    parent = directory.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent
