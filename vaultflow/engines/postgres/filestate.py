"""The pure parts of PostgreSQL 15/16 file-level incrementals (pg_filelevel.py): which files of
a data directory a backup copies, what a backup recorded about each, and whether a file
changed since.

A *file state* maps every file a backup saw (path relative to the data directory) to its
size, mtime (ns) and checksum and to the backup whose tar holds its content, plus the
directories. File-level incrementals store theirs as `filelist.json.zst`; for a full taken by
pg_basebackup it is derived from the full's `backup_manifest` (Path, Size, Last-Modified with
one-second precision, SHA256 checksum).

Changed-file decision (the "racy git" rule): a file is copied again unless its size and mtime
equal the recorded ones AND it was last modified clearly before the recording backup started.
File timestamps tick coarsely (a jiffy, or a whole second in a backup_manifest), so a file
written in the same tick after the recording backup read it would look unchanged; such files
were necessarily modified after that backup started, and are copied again.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

# pg_basebackup's exclusions (basebackup.c, PostgreSQL 15/16): directories whose *contents*
# are not copied (the directory itself is), at the top of the data directory ...
EXCLUDED_DIR_CONTENTS = frozenset(
    {"pg_wal", "pg_stat_tmp", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_subtrans"}
)
# ... file names skipped in any directory ...
EXCLUDED_FILES = frozenset(
    {
        "postgresql.auto.conf.tmp",
        "current_logfiles.tmp",
        "backup_label",
        "tablespace_map",
        "backup_manifest",
        "postmaster.pid",
        "postmaster.opts",
    }
)
# ... and prefixes skipped in any directory (relcache init files, temporary files and dirs).
EXCLUDED_PREFIXES = ("pg_internal.init", "pgsql_tmp")
WAL_SUBDIRS = frozenset({"archive_status", "summaries"})  # kept (empty), like pg_basebackup does
METHOD: Final = "pg_backup_start/stop file-level"  # consistency.method of a file-level backup
FILES_OBJECT = "files.tar.zst"  # the changed files, backup_label and WAL start..stop
FILELIST_OBJECT = "filelist.json.zst"  # the file state (dump_state)
CONTROL_FILE = "global/pg_control"  # copied last, as pg_basebackup does
RACY_MARGIN_NS = 1_000_000_000  # coarse file clocks, second-precision Last-Modified, small skew

_DB_DIR = re.compile(r"^(base/\d+|pg_tblspc/\d+/[^/]+/\d+)$")
_RELATION = re.compile(r"^(\d+)(?:_(?:fsm|vm|init))?(?:\.\d+)?$")
_INIT_FORK = re.compile(r"^(\d+)_init$")
_TEMP_RELATION = re.compile(r"^t\d+_\d+(?:_(?:fsm|vm|init))?(?:\.\d+)?$")


@dataclass(frozen=True)
class Entry:
    size: int
    mtime_ns: int
    checksum: str | None = None  # "sha256:<hex>" of the copied bytes (or the full's "crc32c:<hex>")
    source: str | None = None  # id of the backup whose tar holds this content
    precise: bool = True  # False: mtime from a backup_manifest (whole seconds)


@dataclass
class FileState:
    started_ns: int  # before the recording backup read any file: later mtimes are "racy"
    files: dict[str, Entry]
    dirs: set[str]


def excluded(rel_dir: str, name: str, sibling_names: frozenset[str] | set[str]) -> bool:
    """True when pg_basebackup would not copy `rel_dir/name` (a file or directory).
    `sibling_names`: the other names in rel_dir (unlogged relations are recognised by the
    init fork next to them)."""
    if name in EXCLUDED_FILES or name.startswith(EXCLUDED_PREFIXES):
        return True
    if rel_dir in EXCLUDED_DIR_CONTENTS:
        return True
    if _DB_DIR.match(rel_dir):
        if _TEMP_RELATION.match(name):
            return True  # temporary relations die with their session
        match = _RELATION.match(name)
        if match and not _INIT_FORK.match(name) and f"{match.group(1)}_init" in sibling_names:
            return True  # unlogged relation: only its init fork is copied (recovery resets it)
    return False


def walk(data_dir: str, log=lambda line: None) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of every directory and regular file a backup copies, depth first,
    sorted, global/pg_control last. Each file is stat'ed here, right before it is read. Files
    that vanish while we look are skipped (WAL replay recreates what matters)."""
    control: list[os.stat_result] = []
    yield from _walk_dir(data_dir, "", control, log)
    if control:
        yield CONTROL_FILE, control[0]


def _walk_dir(data_dir: str, rel_dir: str, control: list, log) -> Iterator[tuple[str, os.stat_result]]:
    try:
        names = set(os.listdir(os.path.join(data_dir, rel_dir)))
    except FileNotFoundError:
        return
    for name in sorted(names):
        rel = f"{rel_dir}/{name}" if rel_dir else name
        if rel_dir == "pg_wal":  # segments are added by the backup itself (start..stop only)
            if name in WAL_SUBDIRS and os.path.isdir(os.path.join(data_dir, rel)):
                yield rel, os.stat(os.path.join(data_dir, rel))
            continue
        if excluded(rel_dir, name, names):
            continue
        try:
            info = os.lstat(os.path.join(data_dir, rel))
            if rel == "pg_wal" and stat.S_ISLNK(info.st_mode):  # initdb --waldir: a link to elsewhere
                info = os.stat(os.path.join(data_dir, rel))
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(info.st_mode):
            yield rel, info
            yield from _walk_dir(data_dir, rel, control, log)
        elif stat.S_ISREG(info.st_mode):
            if rel == CONTROL_FILE:
                control.append(info)
            else:
                yield rel, info
        else:
            log(f"skipping {rel}: neither a regular file nor a directory (tablespaces are not supported)")


def unchanged(size: int, mtime_ns: int, recorded: Entry | None, started_ns: int) -> bool:
    """May the parent chain's copy of this file stand in for it? (see the module docstring)"""
    if recorded is None or recorded.size != size:
        return False
    if recorded.precise:
        if recorded.mtime_ns != mtime_ns:
            return False
    elif recorded.mtime_ns // 1_000_000_000 != mtime_ns // 1_000_000_000:
        return False
    return mtime_ns < started_ns - RACY_MARGIN_NS


# -- stored forms --------------------------------------------------------------------------

FILELIST_FORMAT = "vaultflow-pg-filelist"


def dump_state(state: FileState, backup_id: str) -> bytes:
    """filelist.json: {"files": {path: [size, mtime_ns, checksum, source backup id]}, "dirs": [...]}."""
    doc = {
        "format": FILELIST_FORMAT,
        "version": 1,
        "backup_id": backup_id,
        "started_ns": state.started_ns,
        "dirs": sorted(state.dirs),
        "files": {p: [e.size, e.mtime_ns, e.checksum, e.source] for p, e in sorted(state.files.items())},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def load_state(data: bytes, where: str) -> FileState:
    try:
        doc = json.loads(data)
        if doc.get("format") != FILELIST_FORMAT or doc.get("version") != 1:
            raise ValueError(f"not a version 1 {FILELIST_FORMAT}")
        files = {p: Entry(int(v[0]), int(v[1]), v[2], v[3]) for p, v in doc["files"].items()}
        return FileState(int(doc["started_ns"]), files, set(doc["dirs"]))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"{where} is not a readable file list ({exc})") from None


def _manifest_path(item: dict) -> str:
    if "Path" in item:
        return item["Path"]
    return bytes.fromhex(item["Encoded-Path"]).decode("utf-8", "surrogateescape")


def _manifest_time(text: str) -> int:
    """'2026-11-26 02:00:00 GMT' -> ns since the epoch."""
    when = datetime.strptime(text.removesuffix(" GMT"), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000_000


def state_from_backup_manifest(data: bytes, backup_id: str, started_ns: int) -> FileState:
    """The file state of a pg_basebackup full from its backup_manifest. `started_ns`: when the
    full began; the backup_label's Last-Modified (the server's clock when it began sending
    files) lowers it further if earlier. pg_wal contents are left out, as in our own lists."""
    try:
        doc = json.loads(data)
        items = doc["Files"]
        files: dict[str, Entry] = {}
        for item in items:
            path = _manifest_path(item)
            if path == "backup_label":
                started_ns = min(started_ns, _manifest_time(item["Last-Modified"]))
            parts = path.split("/")
            if parts[0] == "pg_wal" or excluded("/".join(parts[:-1]), parts[-1], set()):
                continue
            algorithm = item.get("Checksum-Algorithm")
            checksum = f"{algorithm.lower()}:{item['Checksum']}" if algorithm and item.get("Checksum") else None
            files[path] = Entry(
                int(item["Size"]), _manifest_time(item["Last-Modified"]), checksum, backup_id, precise=False
            )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"the backup_manifest of {backup_id} is unreadable ({exc})") from None
    dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    return FileState(started_ns, files, dirs)


__all__ = [
    "CONTROL_FILE",
    "FILELIST_OBJECT",
    "FILES_OBJECT",
    "METHOD",
    "Entry",
    "FileState",
    "dump_state",
    "excluded",
    "load_state",
    "state_from_backup_manifest",
    "unchanged",
    "walk",
]
