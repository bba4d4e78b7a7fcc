"""A tar sniffer: a reader in the pipeline chain that watches a tar stream go by.

It passes every byte through unchanged and, on the way, parses the 512-byte tar headers
(ustar and its prefix field, GNU long names 'L', pax 'x' headers with `path`/`size`,
base-256 sizes) to capture the *content* of a few named members, e.g. pg_basebackup's
`backup_label` and `backup_manifest`. Nothing else is buffered: memory is one header block
plus the captured members, which spill to a temporary file beyond `spool_limit` bytes
(a backup_manifest grows with the number of files in the cluster).

At the end of the stream it checks that the archive was complete (no member cut short, an
end-of-archive block seen), so a truncated producer cannot pass for a good archive.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Iterable
from typing import BinaryIO, cast

from vaultflow.errors import VaultflowError
from vaultflow.stores.base import Readable

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
META_LIMIT = 1 << 20  # GNU long names and pax headers are tiny; refuse absurd ones
# Types whose size field does not announce data (as tarfile reads them).
_NO_DATA_TYPES = frozenset(b"123456")
_UNSIGNED = struct.Struct("148B8x356B")
_SIGNED = struct.Struct("148b8x356b")


class TarFormatError(VaultflowError):
    """The stream is not a well-formed tar archive (or ended before the archive did)."""


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    """Octal (NUL/space terminated) or GNU base-256 (first byte 0x80 / 0xff)."""
    if field[0] in (0x80, 0xFF):
        value = int.from_bytes(field[1:], "big")
        return value - (256 ** (len(field) - 1)) if field[0] == 0xFF else value
    digits = field.replace(b"\0", b" ").strip()
    try:
        return int(digits, 8) if digits else 0
    except ValueError:
        raise TarFormatError(f"bad number field {field!r} in a tar header") from None


def _checksum_ok(block: bytes) -> bool:
    """The header sum with the checksum field as spaces; some old tars summed signed chars."""
    stored = _number(block[148:156])
    unsigned = 256 + sum(_UNSIGNED.unpack_from(block))
    signed = 256 + sum(_SIGNED.unpack_from(block))
    return stored in (unsigned, signed)


def normalize(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _pax_records(data: bytes) -> dict[str, str]:
    """'%d key=value\\n' records; the length counts the whole record."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos : pos + 1] != b"\0":
        space = data.find(b" ", pos)
        if space < 0:
            raise TarFormatError("malformed pax header")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError("malformed pax header length") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError("malformed pax header record")
        key, value = record[:-1].split(b"=", 1)
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class TarSniffer:
    """`read()` passes the tar stream through and captures the members named in `capture`.

    After EOF: `captured` maps each captured member name to a file object positioned at 0
    (use `captured_bytes(name)` for small ones), `members` counts entries, `data_bytes`
    counts member content bytes.
    """

    def __init__(self, source: Readable, capture: Iterable[str], *, spool_limit: int = 1 << 20):
        self._source = source
        self._wanted = {normalize(n) for n in capture}
        self._spool_limit = spool_limit
        self.captured: dict[str, BinaryIO] = {}
        self.members = 0
        self.data_bytes = 0
        self._header = bytearray()
        self._data_left = 0  # content bytes of the current entry still to come
        self._pad_left = 0  # padding up to the next 512-byte boundary
        self._sink: BinaryIO | None = None  # where the current member's content goes
        self._meta: bytearray | None = None  # content of a GNU 'L' or pax 'x' entry
        self._meta_type = b""
        self._next_name: str | None = None  # from 'L' or pax path, for the next header
        self._next_size: int | None = None  # from pax size
        self._current = ""
        self._zero_blocks = 0
        self._done = False

    # -- the reader ---------------------------------------------------------------------
    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if data:
            if not self._done:
                self._feed(memoryview(data))
        else:
            self._at_eof()
        return data

    def captured_bytes(self, name: str) -> bytes | None:
        handle = self.captured.get(normalize(name))
        if handle is None:
            return None
        handle.seek(0)
        data = handle.read()
        handle.seek(0)
        return data

    def close(self) -> None:
        for handle in self.captured.values():
            handle.close()
        if self._sink is not None:
            self._sink.close()

    # -- the state machine ---------------------------------------------------------------
    def _feed(self, view: memoryview) -> None:
        pos, end = 0, len(view)
        while pos < end and not self._done:
            if self._data_left:
                take = min(self._data_left, end - pos)
                if self._sink is not None:
                    self._sink.write(view[pos : pos + take])
                elif self._meta is not None:
                    self._meta += view[pos : pos + take]
                self._data_left -= take
                pos += take
                if not self._data_left:
                    self._end_of_content()
            elif self._pad_left:
                take = min(self._pad_left, end - pos)
                self._pad_left -= take
                pos += take
            else:
                take = min(BLOCK - len(self._header), end - pos)
                self._header += view[pos : pos + take]
                pos += take
                if len(self._header) == BLOCK:
                    block = bytes(self._header)
                    self._header.clear()
                    self._on_header(block)

    def _on_header(self, block: bytes) -> None:
        if block == ZERO_BLOCK:
            self._zero_blocks += 1
            if self._zero_blocks == 2:
                self._done = True  # anything after the end-of-archive blocks is padding
            return
        if self._zero_blocks:
            raise TarFormatError("a tar header follows an end-of-archive block")
        if not _checksum_ok(block):
            raise TarFormatError(f"bad tar header checksum after member {self._current!r}")
        kind = block[156:157] or b"0"
        size = _number(block[124:136])
        if size < 0:
            raise TarFormatError("negative member size in a tar header")
        if kind in (b"L", b"K", b"x", b"g"):
            if size > META_LIMIT:
                raise TarFormatError(f"tar {kind.decode()} header of {size} bytes is too large")
            self._meta, self._meta_type = bytearray(), kind
            self._start_content(size)
            return
        name = _text(block[0:100])
        if block[257:263] == b"ustar\0":  # POSIX ustar: a prefix field may hold leading dirs
            prefix = _text(block[345:500])
            if prefix:
                name = f"{prefix}/{name}"
        if self._next_name is not None:
            name = self._next_name
        if self._next_size is not None:
            size = self._next_size
        self._next_name = self._next_size = None
        if kind == b"S":
            raise TarFormatError(f"GNU sparse member {name!r} is not supported")
        if kind[0] in _NO_DATA_TYPES:
            size = 0
        self._current = normalize(name)
        self.members += 1
        self.data_bytes += size
        if self._current in self._wanted:
            self._sink = cast(BinaryIO, tempfile.SpooledTemporaryFile(max_size=self._spool_limit))  # a binary file
        self._start_content(size)

    def _start_content(self, size: int) -> None:
        self._data_left = size
        self._pad_left = -size % BLOCK
        if not size:
            self._end_of_content()

    def _end_of_content(self) -> None:
        if self._meta is not None:
            meta, kind = bytes(self._meta), self._meta_type
            self._meta = None
            if kind == b"L":
                self._next_name = _text(meta)
            elif kind == b"x":
                records = _pax_records(meta)
                if "path" in records:
                    self._next_name = records["path"]
                if "size" in records:
                    try:
                        self._next_size = int(records["size"])
                    except ValueError:
                        raise TarFormatError("bad pax size record") from None
            return  # 'K' (long link name) and 'g' (global pax) do not matter here
        if self._sink is not None:
            self._sink.seek(0)
            old = self.captured.pop(self._current, None)
            if old is not None:  # a later copy of a member wins, as on extraction
                old.close()
            self.captured[self._current] = self._sink
            self._sink = None

    def _at_eof(self) -> None:
        if self._done or (self._zero_blocks and not self._header):
            return  # GNU tar accepts a single zero block; so do we
        if self._data_left or self._pad_left or self._header or self._meta is not None:
            where = "mid-header" if self._header else f"inside member {self._current!r}"
            raise TarFormatError(f"tar stream ended {where}: the archive is truncated")
        raise TarFormatError("tar stream ended without an end-of-archive block: the archive is truncated")
