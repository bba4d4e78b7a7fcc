"""WAL file names and the repository layout of archived WAL.

Standard library only: imported by `python -m vaultflow.engines.postgres.wal.cli` on every WAL segment.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, cast

from vaultflow.keys import encode_name  # standard library only, like this module

if TYPE_CHECKING:
    from vaultflow.repository import Repository
    from vaultflow.stores.base import Store

ENGINE = "postgres"
DEFAULT_SEGMENT_SIZE = 16 << 20

_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_HISTORY = re.compile(r"^[0-9A-F]{8}\.history$")
_BACKUP_LABEL = re.compile(r"^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$")
_PARTIAL = re.compile(r"^[0-9A-F]{24}\.partial$")


# -- names ---------------------------------------------------------------------------------
def is_segment(name: str) -> bool:
    return bool(_SEGMENT.match(name))


def is_history(name: str) -> bool:
    return bool(_HISTORY.match(name))


def is_wal_file(name: str) -> bool:
    """Anything PostgreSQL archives: segments, .partial segments, .history and .backup files."""
    return bool(_SEGMENT.match(name) or _HISTORY.match(name) or _BACKUP_LABEL.match(name) or _PARTIAL.match(name))


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
    """`postgres/<encoded target>/logs/wal/` (the target name encoded as in Repository.target_prefix)."""
    return f"{ENGINE}/{encode_name(target, 'target name')}/logs/wal/"


def object_key(target: str, name: str) -> str:
    return f"{wal_prefix(target)}{name}.zst"


def record_key(target: str, name: str) -> str:
    return f"{wal_prefix(target)}{name}.json"


def store_of(repo: Repository | Store) -> Store:
    """Functions take a Repository; a bare Store is accepted too (the fetch fast path)."""
    return cast("Store", getattr(repo, "store", repo))


def archived_names(repo: Repository | Store, target: str) -> list[str]:
    """Names of completely archived WAL files (those with a record), in WAL order."""
    prefix = wal_prefix(target)
    names = [
        info.key[len(prefix) : -len(".json")] for info in store_of(repo).list(prefix) if info.key.endswith(".json")
    ]
    return sorted((n for n in names if is_wal_file(n)), key=wal_order)
