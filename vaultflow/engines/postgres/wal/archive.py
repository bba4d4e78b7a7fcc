"""The archive read back: wal_fetch (PostgreSQL's restore_command), continuity, WAL retention.

Standard library only at import time: `python -m vaultflow.engines.postgres.wal.cli fetch` runs this for every
WAL file recovery asks for; store and pipeline imports happen inside the functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from vaultflow.engines.postgres.wal.names import (
    DEFAULT_SEGMENT_SIZE,
    archived_names,
    is_history,
    is_segment,
    is_wal_file,
    object_key,
    parse_segment,
    record_key,
    store_of,
)
from vaultflow.engines.postgres.wal.push import TMP_PREFIX, copy_fd
from vaultflow.engines.postgres.wal.ship import read_record
from vaultflow.engines.postgres.wal.timelines import plan_timeline, wal_gaps
from vaultflow.errors import NotFoundError

if TYPE_CHECKING:
    from vaultflow.repository import Repository
    from vaultflow.stores.base import Store


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


def wal_fetch(name: str, dest: Path, repo: Repository | Store, target: str, spool_dir: Path | None = None) -> bool:
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
                    copy_fd(src.fileno(), out.fileno())

            _install(dest, copy_spooled)
            return True
    record = read_record(repo, target, name)
    if record is None:
        return False
    from vaultflow.pipeline import verified_chunks

    store = store_of(repo)
    key = object_key(target, name)
    label = f"WAL file {name} ({key})"

    def copy_verified(out) -> None:
        for chunk in verified_chunks(
            store,
            key,
            sha256=record["sha256"],
            stored_size=record["stored_size"],
            raw_sha256=record["raw_sha256"],
            raw_size=record["raw_size"],
            label=label,
        ):
            out.write(chunk)

    _install(dest, copy_verified)
    return True


# -- continuity ----------------------------------------------------------------------------
def check_continuity(
    repo: Repository | Store,
    target: str,
    start_wal_file: str,
    timeline: int | None = None,
    *,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> list[str]:
    """Segments missing between `start_wal_file` and the newest archived one (empty: no gap).

    The chain follows `timeline` (default: the timeline a restore would follow, see
    timelines.plan_timeline: the newest one descending from the start with archived segments)
    back through its `.history` file the way recovery does. A missing history file of a newer
    timeline that has segments is itself reported, first.
    """
    names = archived_names(repo, target)
    start_tli, start_segno = parse_segment(start_wal_file, segment_size)
    missing: list[str] = []
    try:
        plan = plan_timeline(
            repo,
            target,
            start_tli,
            start_segno * segment_size,
            names=names,
            requested=timeline,
            segment_size=segment_size,
        )
    except NotFoundError as exc:
        history_file = getattr(exc, "history_file", None)
        if history_file is None:
            raise
        missing.append(history_file)
        plan = plan_timeline(
            repo,
            target,
            start_tli,
            start_segno * segment_size,
            requested=start_tli,
            names=[n for n in names if not is_segment(n) or parse_segment(n, segment_size)[0] <= start_tli],
            segment_size=segment_size,
        )
    return missing + wal_gaps(plan, names, start_wal_file)


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
    store = store_of(repo)
    for name in names:
        store.delete(record_key(target, name))
        store.delete(object_key(target, name))
    return len(names)
