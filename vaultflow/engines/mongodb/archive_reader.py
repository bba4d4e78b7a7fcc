"""Reading a mongodump archive: ArchiveReader, checking what mongorestore checks and the CRCs
(the format: archive.py's docstring and docs/mongodb-archive-format.md)."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import bson
from bson.int64 import Int64

from vaultflow.engines.mongodb.archive_format import (
    MAGIC,
    MAX_BSON_SIZE,
    MIN_BSON_SIZE,
    TERMINATOR,
    ArchiveHeader,
    CollectionEntry,
    Prelude,
    data_collection,
    namespace_name,
    parse_server_version,
)
from vaultflow.engines.mongodb.crc64 import Crc64, from_int64
from vaultflow.errors import IntegrityError

_CRC_BATCH = 1 << 20  # documents are hashed in batches this large (fewer calls into fastcrc)


class ArchiveReader:
    """Reads a mongodump archive from `stream` (anything with `read(n)`), checking it the way
    mongorestore does, and every namespace's CRC-64 at its EOF.

    The constructor reads the magic number, header and prelude (`header`, `prelude`); iterating
    yields `(db, collection, raw_document_bytes)` in archive order, where `collection` is the
    name the data segments carry ('system.buckets.<name>' for pre-8.3 timeseries data:
    `prelude.entry(db, collection)` maps it back). One document is held at a time, plus up to
    1 MiB waiting to be hashed. `name` (an object key, a path) goes into messages.

    IntegrityError, naming the namespace and byte offset, for: a bad magic number, a truncated
    stream, a segment that never terminates, a malformed header or document, data for a
    namespace the prelude does not list or after its EOF, a CRC mismatch, or an archive that ends
    before every declared namespace has ended. `document_counts[(db, collection)]` counts what
    was read, per data namespace."""

    def __init__(self, stream: BinaryIO, *, name: str = "archive"):
        self._in = stream
        self._name = name
        self._offset = 0
        self.document_counts: dict[tuple[str, str], int] = {}
        magic = self._read(4)
        if magic != MAGIC:
            raise self._error(
                f"is not a mongodump archive (starts with {magic.hex() or 'nothing'}, not {MAGIC.hex()})", 0
            )
        header_doc = self._read_item("the archive header")
        if header_doc is None or header_doc is _EOF:
            raise self._error("has a terminator where its header should be", 4)
        self.header = self._parse_header(header_doc)
        try:
            server_version = parse_server_version(self.header.server_version)
        except ValueError:
            server_version = (0, 0, 0)  # mongorestore: archives without a version predate 8.3
        entries: list[CollectionEntry] = []
        seen: set[tuple[str, str]] = set()
        while (doc := self._read_item("the prelude")) is not None:
            entry = self._parse_entry(doc, server_version)
            key = (entry.db, entry.data_collection)
            if key in seen:
                raise self._error(f"declares namespace {entry.namespace!r} twice in its prelude", None)
            seen.add(key)
            entries.append(entry)
        self.prelude = Prelude(self.header, tuple(entries))
        self._iterated = False

    def __iter__(self) -> Iterator[tuple[str, str, bytes]]:
        if self._iterated:
            raise RuntimeError("an ArchiveReader can be iterated once")
        self._iterated = True
        return self._documents()

    def _documents(self) -> Iterator[tuple[str, str, bytes]]:
        status = {(e.db, e.data_collection): "unopened" for e in self.prelude.collections}
        crcs: dict[tuple[str, str], Crc64] = {}
        while True:
            block_at = self._offset
            header = self._read_item("a block header", allow_eof=True)
            if header is _EOF:
                break
            if header is None:
                raise self._error("has two terminators in a row (a block without a header)", block_at)
            db, collection, eof, crc = self._parse_namespace_header(header, block_at)
            key = (db, collection)
            where = namespace_name(db, collection)
            if key not in status:
                raise self._error(f"has data for namespace {where!r}, which its prelude does not list", block_at)
            if status[key] == "ended":
                raise self._error(f"has a header for namespace {where!r} after that namespace's EOF", block_at)
            running = crcs.setdefault(key, Crc64())
            if eof:
                status[key] = "ended"
                if running.value != crc:
                    raise self._error(
                        f"fails the CRC check of namespace {where!r}: its documents hash to "
                        f"{running.value:#018x}, its EOF header says {crc:#018x}",
                        block_at,
                    )
                if self._read_item(f"the end of namespace {where!r}") is not None:
                    raise self._error(f"has documents after the EOF header of namespace {where!r}", block_at)
                continue
            status[key] = "open"
            count = self.document_counts.setdefault(key, 0)
            pending = bytearray()
            while (document := self._read_item(f"a segment of namespace {where!r}")) is not None:
                pending += document
                if len(pending) >= _CRC_BATCH:
                    running.update(pending)
                    pending = bytearray()
                count += 1
                self.document_counts[key] = count
                yield db, collection, document
            running.update(pending)
        unfinished = [namespace_name(*key) for key, state in status.items() if state == "open"]
        if unfinished:
            raise self._error(f"ends before the EOF of {', '.join(repr(ns) for ns in unfinished)} (truncated?)", None)
        unseen = [namespace_name(*key) for key, state in status.items() if state == "unopened"]
        if unseen:
            raise self._error(
                f"ends before all collections were seen: never ended {', '.join(repr(ns) for ns in unseen)}", None
            )

    # -- parsing --

    def _parse_header(self, doc: bytes) -> ArchiveHeader:
        fields = self._decode(doc, "the archive header", 4)
        try:
            concurrent = fields.get("concurrent_collections", 0)
            if isinstance(concurrent, bool) or not isinstance(concurrent, int):
                raise TypeError(f"concurrent_collections is a {type(concurrent).__name__}")
            return ArchiveHeader(
                concurrent_collections=int(concurrent),
                version=_string(fields, "version"),
                server_version=_string(fields, "server_version"),
                tool_version=_string(fields, "tool_version"),
            )
        except (TypeError, ValueError) as exc:
            raise self._error(f"has a malformed header ({exc})", 4) from None

    def _parse_entry(self, doc: bytes, server_version: tuple[int, int, int]) -> CollectionEntry:
        at = self._offset - len(doc)
        fields = self._decode(doc, "a prelude document", at)
        try:
            db, collection = _string(fields, "db"), _string(fields, "collection")
            kind = _string(fields, "type")
            size = fields.get("size", 0)
            if isinstance(size, bool) or not isinstance(size, int):
                raise TypeError(f"size is a {type(size).__name__}")
            entry = CollectionEntry(
                db,
                collection,
                _string(fields, "metadata"),
                int(size),
                kind,
                data_collection(collection, kind, server_version),
            )
        except (TypeError, ValueError) as exc:
            raise self._error(f"has a malformed prelude document ({exc})", at) from None
        if not collection:
            raise self._error("has a prelude document without a collection name", at)
        return entry

    def _parse_namespace_header(self, doc: bytes, at: int) -> tuple[str, str, bool, int]:
        """mongo-tools archive.go NamespaceHeader.UnmarshalBSON: db, collection (strings), EOF
        (bool), CRC (int64 only); any other field is an error."""
        fields = self._decode(doc, "a namespace header", at)
        unknown = sorted(set(fields) - {"db", "collection", "EOF", "CRC"})
        db, collection, eof, crc = (
            fields.get("db", ""),
            fields.get("collection", ""),
            fields.get("EOF", False),
            fields.get("CRC", Int64(0)),
        )
        problem = None
        if unknown:
            problem = f"unknown fields {unknown}"
        elif not isinstance(db, str) or not isinstance(collection, str):
            problem = "db and collection must be strings"
        elif not isinstance(eof, bool):
            problem = "EOF must be a boolean"
        elif not isinstance(crc, Int64):
            problem = f"CRC must be an int64, not {type(crc).__name__}"
        elif not collection:
            problem = "no collection name"
        if problem:
            raise self._error(f"has a malformed namespace header ({problem})", at)
        return db, collection, eof, from_int64(crc)

    def _decode(self, doc: bytes, what: str, at: int) -> dict[str, Any]:
        try:
            return bson.decode(doc)
        except Exception as exc:  # bson.errors.InvalidBSON and friends
            raise self._error(f"has {what} that is not valid BSON ({exc})", at) from None

    # -- bytes --

    def _read_item(self, what: str, allow_eof: bool = False) -> Any:
        """The next BSON document (bytes), None for a terminator, or _EOF when the stream ends
        cleanly here and `allow_eof`. Sizes and the final NUL as mongo-tools parser.go checks."""
        at = self._offset
        prefix = self._read(4)
        if not prefix and allow_eof:
            return _EOF
        if len(prefix) < 4:
            raise self._error(f"is truncated in {what}: the stream ends {len(prefix)} bytes into a length", at)
        if prefix == TERMINATOR:
            return None
        size = struct.unpack("<I", prefix)[0]
        if size < MIN_BSON_SIZE or size > MAX_BSON_SIZE:
            raise self._error(f"has {size} where {what} needs a BSON length or a terminator", at)
        document = prefix + self._read(size - 4)
        if len(document) < size:
            raise self._error(
                f"is truncated in {what}: the stream ends {len(document)} bytes into a {size}-byte document", at
            )
        if document[-1] != 0:
            raise self._error(f"has a document in {what} that does not end with a NUL byte", at)
        return document

    def _read(self, count: int) -> bytes:
        """Up to `count` bytes: fewer only where the stream ends."""
        chunks = []
        wanted = count
        while wanted:
            chunk = self._in.read(wanted)
            if not chunk:
                break
            chunks.append(chunk)
            wanted -= len(chunk)
        data = b"".join(chunks)
        self._offset += len(data)
        return data

    def _error(self, problem: str, at: int | None) -> IntegrityError:
        where = f" at byte {at}" if at is not None else ""
        return IntegrityError(f"{self._name} {problem}{where}")


_EOF = object()  # _read_item's "the stream ended cleanly here" (None is a terminator)


def _string(fields: Mapping[str, Any], key: str) -> str:
    value = fields.get(key, "")
    if not isinstance(value, str):
        raise TypeError(f"{key} is a {type(value).__name__}, not a string")
    return value
