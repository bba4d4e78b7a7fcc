"""Writing a mongodump archive: ArchiveWriter (the format: archive.py's docstring and
docs/mongodb-archive-format.md)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from typing import Any, Protocol

import bson
from bson.int64 import Int64

from vaultflow.engines.mongodb.archive_format import (
    COLLECTION_TYPES,
    FORMAT_VERSION,
    MAGIC,
    MAX_BSON_SIZE,
    MIN_BSON_SIZE,
    OPLOG,
    SEGMENT_BYTES,
    TERMINATOR,
    ArchiveHeader,
    ArchiveUsageError,
    CollectionEntry,
    check_db_name,
    data_collection,
    is_special_namespace,
    namespace_name,
    parse_server_version,
)
from vaultflow.engines.mongodb.crc64 import Crc64, to_int64


class Writable(Protocol):
    """Where an archive goes: a file, a socket, a buffer (anything with write(bytes))."""

    def write(self, data: bytes | bytearray, /) -> Any: ...


def _namespace_header(db: str, collection: str, eof: bool, crc: int) -> bytes:
    # Field order and types as mongo-tools archive.go NamespaceHeader.MarshalBSON: CRC is an
    # int64 even when 0 (mongorestore refuses any other type).
    return bson.encode({"db": db, "collection": collection, "EOF": eof, "CRC": Int64(to_int64(crc))})


def _document_bytes(document: Any, where: str) -> bytes | bytearray | memoryview:
    raw = getattr(document, "raw", document)  # bson.RawBSONDocument
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ArchiveUsageError(f"namespace {where!r}: documents must be raw BSON bytes, not {type(document).__name__}")
    size = len(raw)
    if size < MIN_BSON_SIZE or size > MAX_BSON_SIZE:
        raise ArchiveUsageError(
            f"namespace {where!r}: a document of {size} bytes is outside BSON's {MIN_BSON_SIZE}..{MAX_BSON_SIZE}"
        )
    if struct.unpack_from("<i", raw)[0] != size or raw[-1] != 0:
        raise ArchiveUsageError(f"namespace {where!r}: a document's length prefix or final NUL is wrong")
    return raw


class _Namespace:
    __slots__ = ("entry", "state", "crc", "documents", "bytes")

    def __init__(self, entry: CollectionEntry):
        self.entry = entry
        self.state = "declared"  # -> "open" (a segment written) -> "ended" (EOF written)
        self.crc = Crc64()
        self.documents = 0
        self.bytes = 0


class ArchiveWriter:
    """Writes one mongodump archive to `out` (anything with `write(bytes)`; never closed here).

    Order of calls: `add_collection` for every collection (the prelude is written before any
    data, so all must be known), `begin()`, then any interleaving of `write_documents` and
    `end_collection` (every declared collection ends exactly once, the oplog last), `close()`.

    Memory: one segment buffer of at most `segment_bytes` (default 16 MiB, mongodump's own
    buffer) plus one document. `concurrent_collections` goes into the header: mongorestore runs
    at least that many collection restores at once, so at most that many namespaces may be in
    progress (a segment written, no EOF yet) at any time, or it would wait forever.
    Every refusal is an ArchiveUsageError naming the namespace."""

    def __init__(
        self,
        out: Writable,
        *,
        server_version: str,
        tool_version: str,
        concurrent_collections: int = 4,
        segment_bytes: int = SEGMENT_BYTES,
    ):
        try:
            self._server_version = parse_server_version(server_version)
        except ValueError as exc:
            raise ArchiveUsageError(f"{exc}: mongorestore could not read such an archive") from None
        if not 1 <= concurrent_collections < 2**31:
            raise ArchiveUsageError(f"concurrent_collections must be 1..2**31-1, not {concurrent_collections}")
        if segment_bytes < 1:
            raise ArchiveUsageError(f"segment_bytes must be positive, not {segment_bytes}")
        self._out = out
        self.header = ArchiveHeader(concurrent_collections, FORMAT_VERSION, server_version, tool_version)
        self._segment_bytes = segment_bytes
        self._namespaces: dict[tuple[str, str], _Namespace] = {}
        self._by_data: dict[tuple[str, str], _Namespace] = {}
        self._state = "declaring"  # -> "writing" (begin) -> "closed"
        self._others_started = False  # a non-special namespace has a segment or EOF
        self.bytes_written = 0

    # -- declaring --

    def add_collection(
        self, db: str, collection: str, metadata_json: str, type: str | None = None, size: int = 0
    ) -> CollectionEntry:
        """Declare a collection for the prelude. `metadata_json` is its .metadata.json text
        (`metadata_json()`; "" for the oplog); `type` is listCollections' type, "collection"
        by default ("" for the oplog, as mongodump writes it); `size` goes in as is (mongodump
        writes 0). Returns the entry; ArchiveUsageError for a second declaration, after
        begin(), or for names, types or metadata mongorestore would refuse."""
        where = namespace_name(db, collection)
        if self._state != "declaring":
            raise ArchiveUsageError(f"namespace {where!r}: collections are declared before begin()")
        if not isinstance(db, str) or not isinstance(collection, str) or not collection:
            raise ArchiveUsageError(f"namespace {where!r}: db must be a string and collection a non-empty one")
        check_db_name(db, collection)
        if type is None:
            type = "" if (db, collection) == OPLOG else "collection"
        if type not in COLLECTION_TYPES:
            raise ArchiveUsageError(f"namespace {where!r}: type {type!r} is none of {COLLECTION_TYPES}")
        if not isinstance(metadata_json, str):
            raise ArchiveUsageError(f"namespace {where!r}: metadata must be the .metadata.json text")
        if metadata_json:
            try:
                json.loads(metadata_json)
            except ValueError as exc:
                raise ArchiveUsageError(f"namespace {where!r}: metadata is not JSON ({exc})") from None
        if not 0 <= size < 2**63:
            raise ArchiveUsageError(f"namespace {where!r}: size must be 0..2**63-1, not {size}")
        if (db, collection) in self._namespaces:
            raise ArchiveUsageError(f"namespace {where!r} is declared twice")
        entry = CollectionEntry(
            db, collection, metadata_json, size, type, data_collection(collection, type, self._server_version)
        )
        data_key = (db, entry.data_collection)
        if data_key in self._by_data:
            other = self._by_data[data_key].entry.namespace
            raise ArchiveUsageError(
                f"namespace {where!r}: its data would share the name {namespace_name(*data_key)!r} with {other!r}"
            )
        namespace = _Namespace(entry)
        self._namespaces[(db, collection)] = namespace
        self._by_data[data_key] = namespace
        return entry

    def begin(self) -> None:
        """Write the magic number, the header, every declared collection's prelude document and
        the terminator."""
        if self._state != "declaring":
            raise ArchiveUsageError("begin() was already called")
        header = self.header
        parts = [
            MAGIC,
            bson.encode(
                {
                    "concurrent_collections": header.concurrent_collections,
                    "version": header.version,
                    "server_version": header.server_version,
                    "tool_version": header.tool_version,
                }
            ),
        ]
        for namespace in self._namespaces.values():
            entry = namespace.entry
            # Go's `int` marshals as int32 when it fits, else int64 (mongo-driver
            # bson/default_value_encoders.go intEncodeValue); Python ints do the same.
            parts.append(
                bson.encode(
                    {
                        "db": entry.db,
                        "collection": entry.collection,
                        "metadata": entry.metadata,
                        "size": entry.size,
                        "type": entry.type,
                    }
                )
            )
        parts.append(TERMINATOR)
        self._write(b"".join(parts))
        self._state = "writing"

    # -- data --

    def write_documents(self, db: str, collection: str, documents: Iterable[Any]) -> int:
        """Append documents (raw BSON: bytes, bytearray, memoryview or bson.RawBSONDocument) to
        the declared collection (db, collection), in segments of at most `segment_bytes` (a
        larger single document gets a segment of its own). Address a timeseries collection by its
        own name: its segments carry 'system.buckets.<name>' when the server needs that.
        Returns how many documents were written; nothing is written for none."""
        namespace = self._namespace_for_data(db, collection)
        where = namespace.entry.namespace
        if namespace.entry.type == "view":
            raise ArchiveUsageError(f"namespace {where!r} is a view: views carry no documents")
        buffer = bytearray()
        count = 0
        for document in documents:
            raw = _document_bytes(document, where)
            if buffer and len(buffer) + len(raw) > self._segment_bytes:
                self._write_segment(namespace, buffer)
                buffer = bytearray()  # a new one: `out` may still hold the last
            buffer += raw
            count += 1
        if buffer:
            self._write_segment(namespace, buffer)
        namespace.documents += count
        return count

    def end_collection(self, db: str, collection: str) -> None:
        """Write the collection's EOF header (the CRC-64 of all its documents) and terminator.
        Every declared collection needs one, even an empty one or a view: mongorestore waits for
        it (and restores a view when it sees it). A collection without documents first gets an
        empty segment (a header and a terminator), as mongodump writes it: mongorestore takes a
        namespace on its first header, and for the oplog it then skips the rest of that header,
        so an oplog whose first header were its EOF would never end ("archive io error")."""
        namespace = self._namespace_for_data(db, collection)
        entry = namespace.entry
        if namespace.state == "declared":
            self._start(namespace)
            namespace.state = "open"
            self._write(_namespace_header(entry.db, entry.data_collection, False, 0) + TERMINATOR)
        self._write(_namespace_header(entry.db, entry.data_collection, True, namespace.crc.value) + TERMINATOR)
        namespace.state = "ended"

    def close(self) -> None:
        """Finish: ArchiveUsageError naming the collections that never ended (mongorestore would
        stop with 'archive finished before all collections were seen'). Flushes `out` if it
        can; does not close it."""
        if self._state == "declaring":
            raise ArchiveUsageError("close() before begin(): no archive was written")
        if self._state == "closed":
            return
        unfinished = [ns.entry.namespace for ns in self._namespaces.values() if ns.state != "ended"]
        if unfinished:
            raise ArchiveUsageError(f"collections never ended: {', '.join(repr(name) for name in unfinished)}")
        self._state = "closed"
        flush = getattr(self._out, "flush", None)
        if flush is not None:
            flush()

    def totals(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(documents, bytes of documents) written so far per declared (db, collection)."""
        return {key: (ns.documents, ns.bytes) for key, ns in self._namespaces.items()}

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()

    # -- internals --

    def _namespace_for_data(self, db: str, collection: str) -> _Namespace:
        where = namespace_name(db, collection)
        if self._state != "writing":
            raise ArchiveUsageError(
                f"namespace {where!r}: data is written after begin() and before close() (now: {self._state})"
            )
        namespace = self._namespaces.get((db, collection))
        if namespace is None:
            raise ArchiveUsageError(f"namespace {where!r} was not declared with add_collection() before begin()")
        if namespace.state == "ended":
            raise ArchiveUsageError(f"namespace {where!r} already ended: nothing may follow its EOF")
        return namespace

    def _start(self, namespace: _Namespace) -> None:
        """Checks before a namespace's first segment or its EOF."""
        entry = namespace.entry
        where = entry.namespace
        if namespace.state == "open":
            return
        if (entry.db, entry.collection) == OPLOG:
            pending = [
                ns.entry.namespace for ns in self._namespaces.values() if ns is not namespace and ns.state != "ended"
            ]
            if pending:
                raise ArchiveUsageError(
                    f"namespace {where!r}: the oplog comes after every other collection has ended "
                    f"(mongorestore stops handing out collections when it sees the oplog); not ended: "
                    f"{', '.join(repr(name) for name in pending[:5])}{' ...' if len(pending) > 5 else ''}"
                )
        if is_special_namespace(entry.db, entry.collection):
            if self._others_started:
                raise ArchiveUsageError(
                    f"namespace {where!r}: users, roles and the auth version come before every other collection"
                )
        else:
            self._others_started = True
        open_now = sum(1 for ns in self._namespaces.values() if ns.state == "open")
        if open_now >= self.header.concurrent_collections:
            raise ArchiveUsageError(
                f"namespace {where!r}: {open_now} collections are already in progress, the header's "
                f"concurrent_collections ({self.header.concurrent_collections}); end one first, or "
                "mongorestore waits forever for data it has no worker to receive"
            )

    def _write_segment(self, namespace: _Namespace, documents: bytearray) -> None:
        if namespace.state != "open":
            self._start(namespace)
            namespace.state = "open"
        entry = namespace.entry
        namespace.crc.update(documents)
        namespace.bytes += len(documents)
        self._write(_namespace_header(entry.db, entry.data_collection, False, 0))
        self._write(documents)
        self._write(TERMINATOR)

    def _write(self, data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            written = self._out.write(view)
            if written is None or written >= len(view):  # None: a writer that returns nothing
                break
            view = view[written:]
        self.bytes_written += len(data)
