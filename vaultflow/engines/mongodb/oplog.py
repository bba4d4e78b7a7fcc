"""Reading the oplog: ranges of `local.oplog.rs` for the included databases, gaps detected, and
oplog-only mongodump archives (what incrementals and archived oplog slices store).

    read_range(client, after, until, databases)          raw entries, after < ts <= until
    read_range(client, after, until, databases, after_count=2)
                                                         resuming: the first 2 included entries
                                                         at ts == after were stored already
    scan_range(...)                                      the same read, every entry with its
                                                         facts and whether it is included
    write_oplog_archive(out, entries, server_version)    an archive declaring only the oplog
    read_oplog_archive(stream, name)                     its entries back, CRC checked

Timestamps are BSON Timestamps (seconds, increment). A ts is not unique on every server: on
SecantusDB every entry of a multi-document transaction carries the commit's ts (mongod writes
one applyOps entry), and a large transaction may be split across two reads. A position is
therefore (ts, how many included entries at that ts were read), the `after_count`.

Gaps. mongod raises CappedPositionLost (136) or OplogQueryMinTsMissing (326) when a read loses
its place; other servers (SecantusDB) start silently at the oldest entry still kept. Neither is
trusted: the read asks for the entry at `after` itself, and when the first entry returned is not
at `after`, the oplog's oldest entry decides (newer than `after`: OplogGap). Every range is
one forward cursor, one query: a SecantusDB oplog query scans the whole oplog.

The archive format is mongodump's with the oplog namespace only (db "", collection "oplog"), what
`mongodump --oplog` writes after its collections (docs/mongodb-archive-format.md).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import bson
from bson import Timestamp
from pymongo import MongoClient
from pymongo import errors as mongo_errors

from vaultflow.engines.mongodb.archive import OPLOG, ArchiveReader, ArchiveWriter
from vaultflow.engines.mongodb.client import OPLOG_NS, RAW, oldest_oplog_ts
from vaultflow.engines.mongodb.consistency import ts_text
from vaultflow.engines.mongodb.settings import SYSTEM_DATABASES
from vaultflow.errors import ChainBrokenError, IntegrityError
from vaultflow.stores.base import Readable

TOOL_VERSION = "vaultflow"
LOST_POSITION_CODES = {136: "CappedPositionLost", 326: "OplogQueryMinTsMissing"}
# Transaction commands in admin.$cmd that name no namespace themselves: the commit and abort of
# a prepared transaction (sharded clusters). Kept for every selection: the replayer decides.
TRANSACTION_COMMANDS = ("commitTransaction", "abortTransaction")


class OplogGap(ChainBrokenError):
    """The oplog no longer reaches back to `after`: entries after it were overwritten before they
    were read (`oldest`: the oldest entry the server keeps, None when it keeps none). A
    ChainBrokenError: an incremental falls back to a full backup."""

    def __init__(self, message: str, after: Timestamp, oldest: Timestamp | None):
        super().__init__(message)
        self.after = after
        self.oldest = oldest


def gap_message(where: str, after: Timestamp, oldest: Timestamp | None) -> str:
    """What OplogGap says: the missing range and what to do."""
    if oldest is None:
        lost = f"the oplog of MongoDB at {where} is empty, so it no longer holds the entries after {ts_text(after)}"
    else:
        lost = (
            f"the oplog of MongoDB at {where} no longer reaches back to {ts_text(after)}: its oldest entry is "
            f"{ts_text(oldest)}, so the entries after {ts_text(after)} and before {ts_text(oldest)} were "
            "overwritten before they were read"
        )
    return (
        f"{lost}. Keep more oplog (replSetResizeOplog, storage.oplogMinRetentionHours) or read it more "
        "often (archive-logs with a shorter schedule), and take a full backup: nothing restores across the gap."
    )


# -- one entry's facts, without decoding its document --------------------------------------------
@dataclass(frozen=True)
class EntryFacts:
    """The top-level fields of an oplog entry that reading needs: ts, op, ns, and wall (ms since
    the epoch, None when the server writes none)."""

    ts: Timestamp
    op: str
    ns: str
    wall_ms: int | None


# Bytes taken by a BSON value of each fixed-size type (bsonspec.org/spec.html).
_FIXED = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16, 0xFF: 0, 0x7F: 0}
_LENGTH_PREFIXED = {0x02: 4, 0x0D: 4, 0x0E: 4}  # string, JavaScript code, symbol: int32 length + bytes
_DOCUMENT_LIKE = (0x03, 0x04, 0x0F)  # document, array, code with scope: int32 total length first


def entry_facts(raw: bytes) -> EntryFacts:
    """ts, op, ns and wall of an oplog entry's raw BSON, reading only the top level (a large `o`
    is skipped, not decoded). IntegrityError when the bytes are not such a document."""
    end = len(raw) - 1
    at = 4
    ts: Timestamp | None = None
    op = ns = ""
    wall: int | None = None
    try:
        while at < end:
            kind = raw[at]
            name_end = raw.index(b"\x00", at + 1)
            name = raw[at + 1 : name_end]
            at = name_end + 1
            if kind in _FIXED:
                size = _FIXED[kind]
            elif kind in _LENGTH_PREFIXED or kind == 0x05:  # binary: int32 length, subtype, bytes
                size = 4 + struct.unpack_from("<i", raw, at)[0] + (kind == 0x05)
            elif kind in _DOCUMENT_LIKE:
                size = struct.unpack_from("<i", raw, at)[0]
            elif kind == 0x0B:  # regex: two cstrings
                size = raw.index(b"\x00", raw.index(b"\x00", at) + 1) + 1 - at
            elif kind == 0x0C:  # DBPointer: string + 12-byte id
                size = 4 + struct.unpack_from("<i", raw, at)[0] + 12
            else:
                raise ValueError(f"unknown BSON type {kind:#04x}")
            if name == b"ts" and kind == 0x11:
                increment, seconds = struct.unpack_from("<II", raw, at)
                ts = Timestamp(seconds, increment)
            elif name == b"op" and kind == 0x02:
                op = raw[at + 4 : at + size - 1].decode()
            elif name == b"ns" and kind == 0x02:
                ns = raw[at + 4 : at + size - 1].decode()
            elif name == b"wall" and kind == 0x09:
                wall = struct.unpack_from("<q", raw, at)[0]
            at += size
    except (ValueError, struct.error, IndexError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"an oplog entry is not a readable BSON document ({exc})") from None
    if ts is None:
        raise IntegrityError("an oplog entry has no ts (BSON Timestamp)")
    return EntryFacts(ts, op, ns, wall)


# -- which entries a backup of some databases needs ----------------------------------------------
def _database_of(ns: str) -> str:
    return ns.partition(".")[0]


class Selection:
    """Which oplog entries belong to `databases` (None: every database but admin, local and
    config): entries whose ns is `<db>.<collection>` or `<db>.$cmd`, a renameCollection into
    one of them, and transaction entries in `admin.$cmd` (applyOps) whose inner operations
    touch one of them, plus the commit/abort of prepared transactions. `query()` is the same
    rule for the server (a superset is fine: `includes` decides)."""

    def __init__(self, databases: Iterable[str] | None):
        self.databases = None if databases is None else frozenset(databases)

    def describe(self) -> str:
        return "every user database" if self.databases is None else ", ".join(sorted(self.databases)) or "nothing"

    def includes_database(self, db: str) -> bool:
        if db in SYSTEM_DATABASES or not db:
            return False
        return self.databases is None or db in self.databases

    def includes(self, facts: EntryFacts, raw: bytes) -> bool:
        """Whether the entry (its facts and raw bytes) belongs to the selection."""
        db, _, rest = facts.ns.partition(".")
        if db == "admin" and rest == "$cmd":
            command = bson.decode(raw).get("o") or {}
            if any(name in command for name in TRANSACTION_COMMANDS):
                return True
            inner = command.get("applyOps")
            return isinstance(inner, list) and any(
                isinstance(op, dict) and self.includes_database(_database_of(str(op.get("ns", "")))) for op in inner
            )
        if not rest:
            return False  # ns "" (noops) or no collection
        if self.includes_database(db):
            return True
        if rest == "$cmd" and facts.op == "c" and self.databases is not None:
            target = (bson.decode(raw).get("o") or {}).get("to")
            return isinstance(target, str) and self.includes_database(_database_of(target))
        return False

    def _ns_pattern(self) -> str:
        if self.databases is None:
            system = "|".join(re.escape(name) for name in SYSTEM_DATABASES)
            return f"^(?!(?:{system})\\.)[^.]+\\."
        return "^(?:" + "|".join(re.escape(name) for name in sorted(self.databases)) + ")\\."

    def query(self) -> dict[str, Any]:
        """A server-side filter matching at least the included entries."""
        if self.databases is not None and not self.databases:
            return {"$or": [{"ns": "admin.$cmd", f"o.{name}": {"$exists": True}} for name in TRANSACTION_COMMANDS]}
        pattern = {"$regex": self._ns_pattern()}
        clauses: list[dict[str, Any]] = [
            {"ns": pattern},
            {"ns": "admin.$cmd", "o.applyOps.ns": pattern},
            *({"ns": "admin.$cmd", f"o.{name}": {"$exists": True}} for name in TRANSACTION_COMMANDS),
        ]
        if self.databases is not None:
            clauses.append({"op": "c", "o.to": pattern})
        return {"$or": clauses}


# -- reading a range ------------------------------------------------------------------------------
@dataclass(frozen=True)
class OplogEntry:
    """One entry as read: its raw BSON, its facts, and whether the selection includes it."""

    raw: bytes
    facts: EntryFacts
    included: bool

    @property
    def ts(self) -> Timestamp:
        return self.facts.ts


def _where(client: MongoClient) -> str:
    try:
        address = client.address
    except mongo_errors.PyMongoError:
        address = None
    return f"{address[0]}:{address[1]}" if address else "(unknown address)"


def check_reaches(client: MongoClient, after: Timestamp) -> None:
    """OplogGap (naming the range lost and what to do) unless the oplog's oldest entry is at or
    before `after`."""
    oldest = oldest_oplog_ts(client)
    if oldest is None or oldest > after:
        raise OplogGap(gap_message(_where(client), after, oldest), after, oldest)


def scan_range(
    client: MongoClient,
    after: Timestamp | None,
    until: Timestamp | None,
    databases: Iterable[str] | None,
    *,
    after_count: int = 0,
    server_filter: bool = True,
) -> Iterator[OplogEntry]:
    """Every entry of local.oplog.rs after the position (`after`, `after_count`) up to and
    including `until` (None: the newest), in oplog order, as OplogEntry (raw bytes, facts,
    included or not). With `server_filter` the server leaves out most entries the selection
    excludes (what is yielded is still marked); without it every entry comes, so a reader sees
    how far the oplog was read even when nothing included happened.

    Position: `after` None reads from the oldest entry kept. Else `after_count` 0 reads the
    entries with ts > after; n > 0 also the included entries at ts == after past the first n
    (they were stored already: a transaction's entries share one ts on some servers).

    One query, one forward cursor. OplogGap when the oplog no longer reaches back to `after`
    (checked against the entry at `after` itself, then the oplog's oldest entry), or when the
    server says the read lost its place (CappedPositionLost, OplogQueryMinTsMissing)."""
    selection = Selection(databases)
    query: dict[str, Any] = {}
    bounds: dict[str, Timestamp] = {}
    if after is not None:
        bounds["$gte"] = after
    if until is not None:
        bounds["$lte"] = until
    if bounds:
        query["ts"] = bounds
    if server_filter:
        wanted = selection.query()
        query["$or"] = ([{"ts": after}] if after is not None else []) + wanted["$or"]
    oplog = client[OPLOG_NS[0]].get_collection(OPLOG_NS[1], codec_options=RAW)
    cursor = oplog.find(query, sort=[("$natural", 1)])
    first = True
    skipping = after is not None
    skipped = 0
    try:
        for document in cursor:
            raw = bytes(document.raw)
            facts = entry_facts(raw)
            if first:
                first = False
                if after is not None and facts.ts != after:
                    check_reaches(client, after)
            included = selection.includes(facts, raw)
            if skipping:
                if facts.ts == after:
                    if after_count == 0 or skipped < after_count:
                        skipped += included
                        continue
                skipping = False
            yield OplogEntry(raw, facts, included)
        if first and after is not None:
            check_reaches(client, after)  # nothing at or after `after`: rolled away, or just quiet
    except mongo_errors.OperationFailure as exc:
        if exc.code in LOST_POSITION_CODES and after is not None:
            oldest = oldest_oplog_ts(client)
            raise OplogGap(
                f"{gap_message(_where(client), after, oldest)} (the server said {LOST_POSITION_CODES[exc.code]})",
                after,
                oldest,
            ) from exc
        raise
    finally:
        cursor.close()


def read_range(
    client: MongoClient,
    after: Timestamp | None,
    until: Timestamp | None,
    databases: Iterable[str] | None,
    *,
    after_count: int = 0,
) -> Iterator[bytes]:
    """The raw BSON of the oplog entries of `databases` (None: every user database) with
    after < ts <= until, in oplog order; with `after_count` n > 0, also those at ts == after past
    the first n included ones (see scan_range). OplogGap when the oplog no longer reaches back to
    `after`: the message names the lost range and says to keep more oplog and take a full."""
    for entry in scan_range(client, after, until, databases, after_count=after_count):
        if entry.included:
            yield entry.raw


# -- oplog-only mongodump archives ---------------------------------------------------------------
class _Sink:
    """Where ArchiveWriter writes: a buffer drained by the generator below."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.buffer += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def oplog_archive_chunks(
    entries: Iterable[bytes], server_version: str, *, on_entry: Callable[[bytes], None] | None = None
) -> Iterator[bytes]:
    """The mongodump archive of `entries` (raw BSON oplog entries, in order) as byte chunks of
    about 1 MiB: header, a prelude declaring only the oplog namespace, its segments and EOF (an
    empty oplog still gets an empty segment before its EOF, as mongorestore needs).
    `on_entry` sees each entry as it is written."""
    sink = _Sink()
    writer = ArchiveWriter(sink, server_version=server_version, tool_version=TOOL_VERSION, concurrent_collections=1)
    writer.add_collection(*OPLOG, "", type="")
    writer.begin()
    batch: list[bytes] = []
    batch_bytes = 0
    for raw in entries:
        if on_entry is not None:
            on_entry(raw)
        batch.append(raw)
        batch_bytes += len(raw)
        if batch_bytes >= 1 << 20:
            writer.write_documents(*OPLOG, batch)
            batch, batch_bytes = [], 0
            yield sink.take()
    if batch:
        writer.write_documents(*OPLOG, batch)
    writer.end_collection(*OPLOG)
    writer.close()
    yield sink.take()


def write_oplog_archive(out: Any, entries: Iterable[bytes], server_version: str) -> int:
    """Write the oplog-only archive of `entries` to `out` (anything with write(bytes)); returns
    the bytes written."""
    written = 0
    for chunk in oplog_archive_chunks(entries, server_version):
        out.write(chunk)
        written += len(chunk)
    return written


def read_oplog_archive(stream: Readable, name: str = "oplog archive") -> Iterator[bytes]:
    """The raw entries of an oplog-only archive, in order, its CRC checked at the end.
    IntegrityError (naming `name`) when it is not a mongodump archive, declares any namespace
    but the oplog, or fails the checks ArchiveReader makes."""
    reader = ArchiveReader(cast(BinaryIO, stream), name=name)
    declared = [entry.namespace for entry in reader.prelude.collections]
    if [(entry.db, entry.collection) for entry in reader.prelude.collections] != [OPLOG]:
        raise IntegrityError(f"{name} is not an oplog archive: it declares {declared or 'nothing'}")
    for _db, _collection, document in reader:
        yield document
