"""A native backup's `.backup` metadata (the list of its files with sizes and checksums, written by
ClickHouse's BackupImpl) and ClickHouse's file checksum, so every file is checked independently of
ClickHouse: when it is copied into the repository and again when it is copied back.

The `.backup` document (XML, root <config>): <version>, <deduplicate_files>, <timestamp>, <uuid>,
optionally <base_backup> and <base_backup_uuid>, then <contents> with one <file> per entry:
<name>, <size>, and when size > 0 <checksum> (128 bits, 32 hex digits), <use_base> (true: the
first base_size bytes come from the base backup; base_size defaults to size), <base_size>,
<base_checksum>, <data_file> (the file in this backup that holds the entry's data when it is not
<name>: deduplicated entries share one), <encrypted_by_disk>.

The checksum: CityHash128 v1.0.2 chained over 2048-byte blocks (each block hashed with the
previous state as seed, starting from 0; a short last block hashed the same way), as ClickHouse's
HashingWriteBuffer computes it for checksums.txt and backups; checked against chDB 26.9's
`.backup` files (tests/integration/test_clickhouse_engine.py).
"""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from vaultflow.errors import IntegrityError

BLOCK = 2048
METADATA = ".backup"


@dataclass(frozen=True)
class BackupEntry:
    """One file of a native backup as `.backup` lists it."""

    name: str
    size: int
    checksum: str | None  # 32 hex digits; None for an empty file
    base_size: int = 0  # bytes that come from the base backup
    data_file: str | None = None  # the file in this backup holding the rest; None: nothing here

    @property
    def stored_here(self) -> int:
        """Bytes of this entry that the backup's own data file holds."""
        return self.size - self.base_size


@dataclass(frozen=True)
class BackupListing:
    uuid: str
    timestamp: str
    version: int
    base_backup: str | None
    base_backup_uuid: str | None
    entries: tuple[BackupEntry, ...]

    def data_files(self) -> dict[str, BackupEntry]:
        """The files this backup's directory holds besides `.backup`: data file name -> the first
        entry stored in it (deduplicated entries share it; their sizes and checksums are equal)."""
        found: dict[str, BackupEntry] = {}
        for entry in self.entries:
            if entry.data_file is not None and entry.data_file not in found:
                found[entry.data_file] = entry
        return found


def _text(node: ET.Element, tag: str, default: str | None = None) -> str | None:
    child = node.find(tag)
    return child.text if child is not None and child.text is not None else default


def parse_listing(data: bytes, where: str) -> BackupListing:
    """Parse a `.backup` document. IntegrityError naming `where` when it is not one."""
    try:
        root = ET.fromstring(data)
        contents = root.find("contents")
        if root.tag != "config" or contents is None:
            raise ValueError("no <config><contents>")
        entries = []
        for node in contents.findall("file"):
            name = _text(node, "name") or ""
            size = int(_text(node, "size") or "0")
            checksum = _text(node, "checksum") if size else None
            use_base = (_text(node, "use_base", "false") or "").lower() == "true"
            base_size = int(_text(node, "base_size") or (size if use_base else 0)) if size else 0
            data_file = (_text(node, "data_file") or name) if size > base_size else None
            entries.append(BackupEntry(name, size, checksum.lower() if checksum else None, base_size, data_file))
        return BackupListing(
            uuid=_text(root, "uuid") or "",
            timestamp=_text(root, "timestamp") or "",
            version=int(_text(root, "version") or "0"),
            base_backup=_text(root, "base_backup"),
            base_backup_uuid=_text(root, "base_backup_uuid"),
            entries=tuple(entries),
        )
    except (ET.ParseError, ValueError) as exc:
        raise IntegrityError(f"{where} is not a ClickHouse .backup document ({exc})") from exc


# CityHash v1.0.2's k3: CityHash128(s) of 16 bytes or more is CityHash128WithSeed(s[16:], seed) with
# seed = (Fetch64(s) ^ K3, Fetch64(s + 8)), so a seeded hash is the plain one of 16 bytes + data.
# (clickhouse_cityhash's own CityHash128WithSeed ignores its seed argument: measured, every seed
# gives the same result, so it cannot chain.)
K3 = 0xC949D7C7509E6557
LOW64 = (1 << 64) - 1


class ClickHouseChecksum:
    """ClickHouse's 128-bit file checksum, fed in pieces of any size (update), read at the end
    (hexdigest). The state is CityHash's uint128 pair (first, second), (0, 0) at the start."""

    def __init__(self) -> None:
        from clickhouse_cityhash.cityhash import CityHash128

        self._hash = CityHash128
        self._first = self._second = 0
        self._pending = b""
        self.size = 0

    def _seeded(self, data: bytes | memoryview) -> tuple[int, int]:
        value = self._hash(struct.pack("<QQ", self._first ^ K3, self._second) + bytes(data))
        return value >> 64, value & LOW64

    def update(self, data: bytes) -> None:
        self.size += len(data)
        view = memoryview(data)
        if self._pending:
            need = BLOCK - len(self._pending)
            self._pending += bytes(view[:need])
            view = view[need:]
            if len(self._pending) < BLOCK:
                return
            self._first, self._second = self._seeded(self._pending)
            self._pending = b""
        full = len(view) - len(view) % BLOCK
        for start in range(0, full, BLOCK):
            self._first, self._second = self._seeded(view[start : start + BLOCK])
        self._pending = bytes(view[full:])

    def hexdigest(self) -> str:
        """The checksum as `.backup` writes it: 32 lowercase hex digits, the high 64 bits (CityHash's
        `second`) first."""
        first, second = self._seeded(self._pending) if self._pending else (self._first, self._second)
        return f"{second:016x}{first:016x}"


class ChecksumReader:
    """Pass-through reader that computes ClickHouse's checksum of what is read (`checksum`)."""

    def __init__(self, source) -> None:
        self.source = source
        self.checksum = ClickHouseChecksum()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.checksum.update(data)
        return data


def check_entry(entry: BackupEntry, size: int, checksum: str | None, where: str) -> None:
    """IntegrityError naming `where` when a data file's `size` (and, for files held whole here, its
    `checksum`) differ from what `.backup` lists for `entry`."""
    if size != entry.stored_here:
        raise IntegrityError(f"{where}: {size} bytes, but the backup's .backup lists {entry.stored_here} for it")
    if entry.base_size == 0 and checksum is not None and entry.checksum is not None and checksum != entry.checksum:
        raise IntegrityError(
            f"{where}: ClickHouse checksum {checksum}, but the backup's .backup lists {entry.checksum} for it"
        )
