"""The two file formats behind Redis 7 multi-part AOF backups: the AOF manifest and RESP cuts.

The AOF manifest (`<appenddirname>/<appendfilename>.manifest`) lists one file per line,

    file appendonly.aof.2.base.rdb seq 2 type b
    file appendonly.aof.2.incr.aof seq 2 type i

(`b` base, `i` increment, `h` history: a file a rewrite replaced, deleted soon after). Names
with spaces or odd bytes are quoted the way redis-server's sdssplitargs reads them.

An increment file is a sequence of RESP commands (`*N\\r\\n$len\\r\\n<bytes>\\r\\n...`), plus
`#...\\r\\n` annotation lines when aof-timestamp-enabled is on. Redis appends to it while we
read, so a backup cuts it at the last *complete* command at or before the size it saw — and
never inside MULTI ... EXEC (redis-server would drop the unfinished transaction on load, so
the restored server would not be the one the fingerprint was taken of). The next backup of
the chain continues exactly at that cut.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from vaultflow.errors import IntegrityError

MAX_LINE = 64 * 1024  # a RESP header or annotation longer than this means the file is not RESP
READ_SIZE = 1 << 20


# -- the AOF manifest --------------------------------------------------------------------------


@dataclass(frozen=True)
class AofFile:
    name: str
    seq: int
    type: str  # "b" base, "i" increment, "h" history
    line: str  # the line as redis-server wrote it (re-written verbatim on restore)


@dataclass(frozen=True)
class AofManifest:
    files: tuple[AofFile, ...]

    @property
    def base(self) -> AofFile | None:
        return next((f for f in self.files if f.type == "b"), None)

    @property
    def incrs(self) -> list[AofFile]:
        return [f for f in self.files if f.type == "i"]  # in manifest order = seq order

    def live_text(self) -> str:
        """The manifest without history entries: exactly the files a backup holds."""
        return "".join(f.line + "\n" for f in self.files if f.type in ("b", "i"))


def parse_aof_manifest(text: str, where: str = "AOF manifest") -> AofManifest:
    """Parse a Redis 7 AOF manifest; IntegrityError naming `where` and the line when malformed."""
    files = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line, posix=True)
        except ValueError as exc:
            raise IntegrityError(f"{where}, line {number}: cannot parse {line!r} ({exc})") from exc
        if len(words) % 2:
            raise IntegrityError(f"{where}, line {number}: expected key/value pairs, got {line!r}")
        fields = dict(zip(words[::2], words[1::2], strict=False))
        try:
            entry = AofFile(name=fields["file"], seq=int(fields["seq"]), type=fields["type"], line=line)
        except (KeyError, ValueError) as exc:
            raise IntegrityError(f"{where}, line {number}: needs file, seq and type, got {line!r}") from exc
        if entry.type not in ("b", "i", "h") or "/" in entry.name or entry.name in ("", ".", ".."):
            raise IntegrityError(f"{where}, line {number}: unexpected entry {line!r}")
        files.append(entry)
    manifest = AofManifest(tuple(files))
    if sum(f.type == "b" for f in files) > 1:
        raise IntegrityError(f"{where}: more than one base file")
    return manifest


# -- RESP cut ----------------------------------------------------------------------------------


class RespCutter:
    """Fed the bytes of an AOF increment from a command boundary on, tracks `boundary`: the
    number of bytes fed up to the end of the last complete command outside MULTI/EXEC.

    Bulk payloads are skipped by their length, never buffered, so memory stays bounded by
    one header line whatever the values' sizes."""

    def __init__(self, where: str = "AOF increment", start: int = 0):
        self.where = where
        self.offset = start  # absolute offset of the next byte to be fed
        self.boundary = start  # absolute offset just after the last usable command
        self._line = bytearray()  # a partial header line
        self._args_left = 0  # bulk strings still expected in the current command
        self._skip = 0  # payload + CRLF bytes still to skip
        self._name: bytearray | None = None  # the first argument, when it may be MULTI/EXEC
        self._first = False  # is the bulk being read the command's first argument
        self._in_multi = False
        self._command_name = b""

    def feed(self, data: bytes) -> None:
        data = bytes(data)
        pos, end = 0, len(data)
        while pos < end:
            if not (self._skip or self._line or self._args_left):
                pos = self._whole_commands(data, pos, end)
                if pos >= end:
                    return
            if self._skip:
                take = min(self._skip, end - pos)
                if self._name is not None:
                    self._name += data[pos : pos + take]
                self._skip -= take
                pos += take
                self.offset += take
                if not self._skip:
                    self._bulk_done()
                continue
            newline = data.find(b"\n", pos, min(end, pos + MAX_LINE))
            if newline < 0:
                self._line += data[pos : min(end, pos + MAX_LINE + 1)]
                self.offset += end - pos
                if len(self._line) > MAX_LINE:
                    self._bad("a header line without end")
                return
            self._line += data[pos : newline + 1]
            self.offset += newline + 1 - pos
            pos = newline + 1
            line = bytes(self._line)
            self._line.clear()
            self._header(line)

    def _whole_commands(self, data: bytes, pos: int, end: int) -> int:
        """Fast path: consume every command that lies whole in `data` from `pos` (a boundary).
        Stops, without judging, at anything else: the state machine then takes over (and
        reports malformed input)."""
        find = data.find
        while pos < end and data[pos] == 0x2A:  # '*'
            newline = find(b"\r\n", pos, pos + 32)
            try:
                count = int(data[pos + 1 : newline]) if newline > 0 else 0
            except ValueError:
                return pos
            if count <= 0:
                return pos
            cursor, name = newline + 2, b""
            for number in range(count):
                if cursor >= end or data[cursor] != 0x24:  # '$'
                    return pos
                newline = find(b"\r\n", cursor, cursor + 32)
                try:
                    length = int(data[cursor + 1 : newline]) if newline > 0 else -1
                except ValueError:
                    return pos
                start, cursor = newline + 2, newline + length + 4
                if length < 0 or cursor > end or data[cursor - 2 : cursor] != b"\r\n":
                    return pos
                if number == 0 and length <= 7:
                    name = data[start : start + length].upper()
            self.offset += cursor - pos
            pos = cursor
            self._command_done(name)
        return pos

    def _bad(self, what: str) -> None:
        raise IntegrityError(
            f"{self.where} is not valid RESP near offset {self.offset}: {what}. Check the "
            "file with redis-check-aof; take a full backup once the server's AOF is sound"
        )

    def _header(self, line: bytes) -> None:
        if not line.endswith(b"\r\n"):
            self._bad(f"line {line[:40]!r} does not end in CRLF")
        body = line[:-2]
        if self._args_left == 0:
            if body.startswith(b"#"):  # an annotation (aof-timestamp-enabled): a boundary of its own
                self._command_done(b"")
                return
            if not body.startswith(b"*"):
                self._bad(f"expected a command (*N), got {body[:40]!r}")
            count = self._number(body)
            if count <= 0:
                self._command_done(b"")
                return
            self._args_left = count
            self._first = True
            return
        if not body.startswith(b"$"):
            self._bad(f"expected a bulk string ($len), got {body[:40]!r}")
        length = self._number(body)
        if length < 0:
            self._bad("a null bulk string inside a command")
        self._skip = length + 2
        self._name = bytearray() if self._first and length <= 7 else None

    def _number(self, body: bytes) -> int:
        try:
            return int(body[1:])
        except ValueError:
            self._bad(f"bad length in {body[:40]!r}")
            raise  # unreachable: _bad raises

    def _bulk_done(self) -> None:
        name: bytes | bytearray | None = self._name
        self._name = None
        if name is not None:
            if bytes(name[-2:]) != b"\r\n":
                self._bad("a bulk string not followed by CRLF")
            name = bytes(name[:-2]).upper()
        if self._first:
            self._first = False
            self._command_name = name or b""
        self._args_left -= 1
        if self._args_left == 0:
            self._command_done(self._command_name)

    def _command_done(self, name: bytes) -> None:
        if name == b"MULTI":
            self._in_multi = True
        elif name in (b"EXEC", b"DISCARD"):
            self._in_multi = False
        if not self._in_multi:
            self.boundary = self.offset


def complete_prefix(data: bytes, where: str = "AOF increment") -> int:
    """How many leading bytes of `data` (starting at a command boundary) form complete commands."""
    cutter = RespCutter(where)
    cutter.feed(data)
    return cutter.boundary


def find_cut(fd: int, start: int, end: int, where: str) -> int:
    """The last usable command boundary in [start, end] of an open increment file; `start`
    must itself be a boundary (0, or the parent backup's cut)."""
    cutter = RespCutter(where, start)
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(READ_SIZE, end - pos), pos)
        if not chunk:
            raise IntegrityError(f"{where} shrank below {end} bytes while being read; take a full backup")
        cutter.feed(chunk)
        pos += len(chunk)
    return cutter.boundary
