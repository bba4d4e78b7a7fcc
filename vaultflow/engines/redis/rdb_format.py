"""What an RDB stream proves about itself, read as it passes, without parsing every value.

Format source: redis' src/rdb.h and rdb.c (rdbSaveRio, rdbSaveDb, rdbSaveLen; RDB version 9-11,
Redis 6.2-7.x). The parts used here:

    "REDIS" + 4 ASCII digits (RDB version)
    AUX fields: 0xFA <string key> <string value>            (redis-ver, ctime, repl-id, ...)
    per non-empty db: 0xFE SELECTDB <len dbid>
                      0xFB RESIZEDB <len keys> <len keys-with-expire>   (exact: the saving fork's
                                                                         dict sizes, one record per key follows)
                      key records ...
    0xFF EOF, then 8 bytes: CRC64 (Jones, little-endian) of everything before, 0 if disabled

Key records are not parsed (that would cost seconds per million keys in Python). Instead every
position that *could* be a SELECTDB followed by RESIZEDB is remembered (a regex over each chunk,
C speed; a few thousand false candidates per GB of binary data), and redis-check-rdb, which
parses every record anyway, says which ones are real: it prints `[offset N] Selecting DB ID d`
with N the offset of the RESIZEDB opcode. Its totals (`[info] K keys read`, `E expires`) must
equal the sums of the confirmed RESIZEDB counts: per-db counts read from the stream, proven
by an independent full parse.

Under diskless replication (what `redis-cli --rdb` asks for) the server ends the transfer with a
40-character random hex mark (`$EOF:<mark>` in the bulk header); redis-cli truncates it from a
file but cannot from a pipe. An RDB ends with 0xFF and a binary CRC64, never with 40 hex
characters after that, so `RdbStreamScanner` holds the last 40 bytes back and drops them only
when they are such a mark right after an EOF opcode + CRC; redis-check-rdb's final offset
must then equal the stored length exactly.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from vaultflow.errors import IntegrityError, VaultflowError

HEADER_BYTES = 1 << 16
EOF_MARK_SIZE = 40  # RDB_EOF_MARK_SIZE in redis' replication.c
_HEX = frozenset(b"0123456789abcdef")
_OVERLAP = 32  # bytes a SELECTDB + RESIZEDB candidate needs: 1 + 9 + 1 + 9 + 9, rounded up
MAX_CANDIDATES = 1 << 16
# 0xFE <length of 1, 2, 5 or 9 bytes> 0xFB. It starts with a literal, so re scans for it at
# memchr speed (a lookahead pattern measured 25x slower); overlaps are found by searching again
# from the byte after each match.
_CANDIDATE = re.compile(rb"\xfe(?:[\x00-\x3f]|[\x40-\x7f].|\x80.{4}|\x81.{8})\xfb", re.DOTALL)
_CHECK_SELECT = re.compile(r"^\[offset (\d+)\] Selecting DB ID (\d+)$", re.M)
_CHECK_END = re.compile(r"^\[offset (\d+)\] \\o/ RDB looks OK! \\o/$", re.M)
_CHECK_INFO = re.compile(r"^\[info\] (\d+) (keys read|expires)$", re.M)


class RdbFormatError(VaultflowError):
    """The stream does not start like an RDB file."""


def read_length(data: bytes, pos: int) -> tuple[int | None, int, int | None]:
    """(length, new position, special encoding) of an RDB length at `pos` (rdbLoadLenByRef).
    IndexError when `data` ends inside it."""
    first = data[pos]
    kind = first >> 6
    if kind == 0:
        return first & 0x3F, pos + 1, None
    if kind == 1:
        return ((first & 0x3F) << 8) | data[pos + 1], pos + 2, None
    if kind == 2:
        if first == 0x80:
            if pos + 5 > len(data):
                raise IndexError("length cut off")
            return struct.unpack(">I", data[pos + 1 : pos + 5])[0], pos + 5, None
        if first == 0x81:
            if pos + 9 > len(data):
                raise IndexError("length cut off")
            return struct.unpack(">Q", data[pos + 1 : pos + 9])[0], pos + 9, None
        raise RdbFormatError(f"unknown RDB length encoding 0x{first:02x}")
    return None, pos + 1, first & 0x3F


def _string(data: bytes, pos: int) -> tuple[str, int]:
    length, pos, special = read_length(data, pos)
    if special is None:
        if pos + length > len(data):
            raise IndexError("string cut off")  # a slice would silently return part of it
        return data[pos : pos + length].decode(errors="replace"), pos + length
    size = {0: 1, 1: 2, 2: 4}.get(special)
    if size is None:
        raise RdbFormatError("compressed aux field in the RDB header")
    if pos + size > len(data):
        raise IndexError("integer cut off")
    return str(int.from_bytes(data[pos : pos + size], "little", signed=True)), pos + size


def parse_header(data: bytes) -> dict[str, str]:
    """RDB version and the AUX fields before the first database (redis-ver, repl-id, ...).
    RdbFormatError when `data` does not start like an RDB."""
    if len(data) < 9 or data[:5] != b"REDIS" or not data[5:9].isdigit():
        raise RdbFormatError(f"not an RDB file (starts with {data[:9]!r})")
    facts = {"rdb-version": str(int(data[5:9]))}
    pos = 9
    try:
        while pos < len(data) and data[pos] == 0xFA:
            key, pos = _string(data, pos + 1)
            value, pos = _string(data, pos)
            facts[key] = value
    except (IndexError, struct.error):
        pass  # the header continues beyond what we kept: the fields so far are complete
    return facts


@dataclass
class RdbFacts:
    """What the stream and redis-check-rdb proved: header AUX facts, per-db (keys, expires),
    the CRC64 footer (16 hex digits, or "disabled"), the RDB's exact length in bytes."""

    header: dict[str, str]
    databases: dict[int, tuple[int, int]]
    crc64: str
    length: int
    eof_mark_dropped: bool = False
    notes: list[str] = field(default_factory=list)


class RdbStreamScanner:
    """Feed it every chunk of an RDB in order (`feed` returns the bytes to pass on, holding the
    last 40 back), then `end()` (the final bytes to pass on), then `facts(check_output)`."""

    def __init__(self) -> None:
        self.header = bytearray()
        self._held = b""  # the last EOF_MARK_SIZE bytes seen, not yet passed on
        self._tail = b""  # the last 9 bytes passed on (EOF opcode + CRC64)
        self._pending = b""  # the last _OVERLAP bytes passed on, not yet scanned as a start
        self._pending_at = 0  # stream offset of _pending[0]
        self.length = 0  # bytes passed on
        self.candidates: dict[int, tuple[int, int, int]] = {}  # RESIZEDB offset -> (dbid, keys, expires)
        self.overflow = False
        self.eof_mark_dropped = False

    def feed(self, chunk: bytes) -> bytes:
        if len(chunk) < EOF_MARK_SIZE:
            data = self._held + chunk
            out, self._held = data[:-EOF_MARK_SIZE], data[-EOF_MARK_SIZE:]
        else:  # one copy of the chunk, not three: this runs for every MiB of the backup
            cut = len(chunk) - EOF_MARK_SIZE
            out = bytearray(self._held)
            out += memoryview(chunk)[:cut]
            self._held = chunk[cut:]
        self._pass(out, final=False)
        return out

    def end(self) -> bytes:
        held, self._held = self._held, b""
        if len(held) == EOF_MARK_SIZE and _HEX.issuperset(held) and len(self._tail) == 9 and self._tail[0] == 0xFF:
            self.eof_mark_dropped, held = True, b""
        self._pass(held, final=True)
        return held

    def _pass(self, out: bytes, *, final: bool) -> None:
        if len(self.header) < HEADER_BYTES and out:
            self.header += out[: HEADER_BYTES - len(self.header)]
        self.length += len(out)
        self._tail = (self._tail + bytes(out[-9:]))[-9:]
        if len(out) <= 2 * _OVERLAP or final:  # small: one buffer
            self._scan(self._pending + bytes(out), self._pending_at, final)
            return
        # candidates starting in the bytes kept from before, then in `out` itself (no big copy)
        at, pending = self._pending_at, self._pending
        self._scan(pending + bytes(out[:_OVERLAP]), at, False, limit=len(pending))
        self._scan(out, at + len(pending), False)

    def _scan(self, buf, at: int, final: bool, limit: int | None = None) -> None:
        """Candidates starting before `limit` (default: all that have _OVERLAP bytes after them);
        what is left unscanned becomes _pending."""
        if limit is None:
            limit = len(buf) if final else max(len(buf) - _OVERLAP, 0)
        pos = 0
        while (match := _CANDIDATE.search(buf, pos)) is not None and match.start() < limit:
            self._candidate(buf, match.start(), at)
            pos = match.start() + 1
        self._pending_at = at + limit
        self._pending = bytes(buf[limit:])

    def _candidate(self, buf: bytes, start: int, at: int) -> None:
        try:
            dbid, pos, special = read_length(buf, start + 1)
            keys, after, s1 = read_length(buf, pos + 1)
            expires, _, s2 = read_length(buf, after)
        except (IndexError, RdbFormatError):
            return
        if special is not None or s1 is not None or s2 is not None:
            return
        if len(self.candidates) >= MAX_CANDIDATES:
            self.overflow = True
            return
        self.candidates[at + pos] = (dbid, keys, expires)

    def facts(self, check_output: str, where: str) -> RdbFacts:
        """The proven facts, given redis-check-rdb's output for the same bytes; IntegrityError
        when the stream and redis-check-rdb disagree (length, counts, checksum)."""
        header = parse_header(bytes(self.header))
        end = _CHECK_END.search(check_output)
        if end is None or int(end.group(1)) != self.length:
            raise IntegrityError(
                f"the RDB from {where} is {self.length} bytes but redis-check-rdb found its end at "
                f"{end.group(1) if end else 'no offset'}; no backup was recorded"
            )
        if "Checksum OK" in check_output:
            crc64 = self._tail[1:].hex()
        elif "checksum disabled" in check_output:
            crc64 = "disabled"
        else:
            raise IntegrityError(
                f"redis-check-rdb did not confirm the CRC64 of the RDB from {where}; no backup was recorded"
            )
        info = {kind: int(n) for n, kind in _CHECK_INFO.findall(check_output)}
        databases: dict[int, tuple[int, int]] = {}
        notes: list[str] = []
        for offset, dbid in _CHECK_SELECT.findall(check_output):
            found = self.candidates.get(int(offset))
            if found is None or found[0] != int(dbid):
                if self.overflow:
                    notes.append("per-db counts unavailable (too many SELECTDB look-alikes in the data)")
                    databases = {}
                    break
                raise IntegrityError(
                    f"the RDB from {where}: db {dbid} at offset {offset} (redis-check-rdb) has no "
                    "RESIZEDB record in the stream; no backup was recorded"
                )
            databases[int(dbid)] = found[1:]
        keys_read, expires = info.get("keys read"), info.get("expires")
        if databases and (
            sum(k for k, _ in databases.values()) != keys_read or sum(e for _, e in databases.values()) != expires
        ):
            raise IntegrityError(
                f"the RDB from {where} announces {sum(k for k, _ in databases.values())} keys in "
                f"its RESIZEDB records but redis-check-rdb read {keys_read}; no backup was recorded"
            )
        if not databases and keys_read:
            databases = {-1: (keys_read, expires or 0)}  # totals only, see notes
        return RdbFacts(
            header=header,
            databases=databases,
            crc64=crc64,
            length=self.length,
            eof_mark_dropped=self.eof_mark_dropped,
            notes=notes,
        )
