"""Full backups of MongoDB databases: one mongodump archive per database, every document read at
one cluster time (snapshot reads with `atClusterTime`), streamed into the repository.

Why one archive per database (not one per backup): a database is the unit a dump step retries
and a partial restore reads, and each archive alone is what `mongorestore --archive` takes (a
database restores without reading the others' bytes). The cluster time is shared, so the
archives together are one consistent point.

The stream is pulled: the repository's store reads the compressor, which reads `ArchiveChunks`,
which takes the next MiB of archive from `database_archive`. The server's batches come from a
thread of their own one batch ahead (vaultflow.prefetch), so the server reads the next batch
while this process digests, frames and compresses the last one: a dump takes about as long as
the slower of the two, not their sum. Memory: getMore asks for about BATCH_BYTES (4 MiB) a
batch, at most three batches are held (queued, arriving, being written), and the writer and
the store see the documents 1 MiB at a time.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import bson
from bson import SON, Timestamp
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo.client_session import ClientSession

from vaultflow.engines.mongodb.archive import ArchiveWriter, metadata_json
from vaultflow.engines.mongodb.archive_format import TIMESERIES_BUCKETS
from vaultflow.engines.mongodb.client import RAW
from vaultflow.engines.mongodb.users import read_auth
from vaultflow.errors import ConfigError
from vaultflow.manifest import Fingerprint
from vaultflow.prefetch import prefetched

DIGEST_METHOD = "bson-blake2b128-sum"  # Fingerprint.method of every MongoDB collection
DIGEST_MODULUS = 1 << 128
SKIPPED_SYSTEM = ("system.profile", "system.views", "system.indexes", "system.namespaces")
TOOL_VERSION = "vaultflow"
FIRST_BATCH_DOCUMENTS = 1000
BATCH_BYTES = 4 << 20  # what a getMore asks for: a few MiB, not the server's 16 MiB
WRITE_BYTES = 1 << 20  # documents handed to the archive writer (and on to the store) at a time


@dataclass(frozen=True)
class CollectionSpec:
    """One collection (or view) of a database as listCollections and listIndexes describe it.

    `info` is the listCollections document ({name, type, options, info: {uuid, ...}}), decoded;
    `indexes` its listIndexes documents in server order ([] for a view)."""

    name: str
    type: str
    info: dict[str, Any]
    indexes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def has_documents(self) -> bool:
        return self.type == "collection"

    def metadata(self) -> str:
        return metadata_json(self.info, self.indexes)


class DocumentDigest:
    """An order-independent digest of a collection's documents: the sum, modulo 2**128, of the
    BLAKE2b-128 of each document's BSON bytes as the server returns them (a document with its
    fields in another order digests differently, as BSON compares them). With the count: the
    collection's Fingerprint."""

    __slots__ = ("count", "_sum")

    def __init__(self) -> None:
        self.count = 0
        self._sum = 0

    def add(self, raw: bytes) -> None:
        self.count += 1
        self._sum += int.from_bytes(hashlib.blake2b(raw, digest_size=16).digest(), "big")

    def fingerprint(self) -> Fingerprint:
        return Fingerprint(count=self.count, digest=f"{self._sum % DIGEST_MODULUS:032x}", method=DIGEST_METHOD)


def list_collection_specs(client: MongoClient, database: str, excluded) -> list[CollectionSpec]:
    """The collections and views of `database` a backup includes (select_collections), each with
    its indexes, collections before views. ConfigError as select_collections raises it."""
    specs = []
    for info in select_collections(database, client[database].list_collections(), excluded):
        name, kind = info["name"], info.get("type", "collection")
        indexes = list(client[database][name].list_indexes()) if kind == "collection" else []
        specs.append(CollectionSpec(name=name, type=kind, info=dict(info), indexes=[dict(i) for i in indexes]))
    return sorted(specs, key=lambda s: (s.type != "collection", s.name))  # views after what they read


def select_collections(database: str, infos: Iterable[Mapping[str, Any]], excluded) -> list[Mapping[str, Any]]:
    """The listCollections documents `infos` of `database` a backup includes: not the system
    collections the server maintains (profile, views, timeseries buckets, ...), not those
    `excluded(database, name)` leaves out. ConfigError (timeseries_refusal) for a collection the
    server reports as type "timeseries" (mongod's bucketed timeseries): not built yet. A
    timeseries collection a server keeps as a plain collection (type "collection" with options
    {timeseries}, as SecantusDB does) is included like any other."""
    selected = []
    for info in infos:
        name, kind = info["name"], info.get("type", "collection")
        if name in SKIPPED_SYSTEM or name.startswith(TIMESERIES_BUCKETS) or excluded(database, name):
            continue
        if kind == "timeseries":
            raise timeseries_refusal(database, name)
        selected.append(info)
    return selected


def timeseries_refusal(database: str, collection: str) -> ConfigError:
    """The error for a collection the server reports as type "timeseries": mongod keeps its
    measurements in buckets ('<db>.system.buckets.<name>' before 8.3, raw data from 8.3 on),
    which vaultflow does not dump or restore yet (docs/mongodb.md, "Timeseries collections")."""
    return ConfigError(
        f"collection {database}.{collection} is a timeseries collection, whose measurements the server keeps in "
        f"buckets ({database}.{TIMESERIES_BUCKETS}{collection} before MongoDB 8.3): vaultflow does not back up "
        f"bucketed timeseries collections yet. Leave it out with the MongoTarget's "
        f"exclude_collections=['{database}.{collection}'] (its buckets and their oplog entries go with it), and "
        "back it up another way meanwhile (mongodump)"
    )


def snapshot_batches(
    client: MongoClient, session: ClientSession, database: str, collection: str, cluster_time: Timestamp
) -> Iterator[list[RawBSONDocument]]:
    """Every document of `database.collection` as the server held it at `cluster_time`, in raw
    batches (find + getMore with readConcern {level: snapshot, atClusterTime}, MongoDB 5.0+).
    Raises pymongo's OperationFailure SnapshotTooOld (code 239) when the server no longer keeps
    that point's history, SnapshotIgnored when it answers at another time."""
    read_concern = {"level": "snapshot", "atClusterTime": cluster_time}
    return _find_batches(client, session, database, collection, read_concern, expect_time=cluster_time)


def current_batches(
    client: MongoClient, session: ClientSession, database: str, collection: str
) -> Iterator[list[RawBSONDocument]]:
    """Every document of `database.collection` as it is now, in raw batches."""
    return _find_batches(client, session, database, collection, None, expect_time=None)


def _find_batches(
    client: MongoClient,
    session: ClientSession,
    database: str,
    collection: str,
    read_concern: dict[str, Any] | None,
    *,
    expect_time: Timestamp | None,
) -> Iterator[list[RawBSONDocument]]:
    """find + getMore, each getMore asking for about BATCH_BYTES (its batchSize from the mean
    document size so far), so a batch holds a few MiB whatever the documents' size: the server's
    default is 16 MiB, held several times over while it passes through a dump."""
    db = client.get_database(database, codec_options=RAW)
    command = SON([("find", collection), ("batchSize", FIRST_BATCH_DOCUMENTS)])
    if read_concern is not None:
        command["readConcern"] = read_concern
    reply = db.command(command, session=session, codec_options=RAW)
    cursor = reply["cursor"]
    answered = cursor.get("atClusterTime")
    if expect_time is not None and answered is not None and answered != expect_time:
        raise SnapshotIgnored(answered)
    batch = list(cursor["firstBatch"])
    documents, size = len(batch), sum(len(document.raw) for document in batch)
    yield batch
    cursor_id = cursor["id"]
    while cursor_id:
        batch_size = max(1, BATCH_BYTES * documents // size) if size else FIRST_BATCH_DOCUMENTS
        reply = db.command(
            SON([("getMore", cursor_id), ("collection", collection), ("batchSize", batch_size)]),
            session=session,
            codec_options=RAW,
        )
        cursor = reply["cursor"]
        batch = list(cursor["nextBatch"])
        documents += len(batch)
        size += sum(len(document.raw) for document in batch)
        yield batch
        cursor_id = cursor["id"]


class SnapshotIgnored(Exception):
    """The server answered a snapshot read at another cluster time than asked (`answered`): it
    read current data, not the point asked for (a server without snapshot history)."""

    def __init__(self, answered: Timestamp):
        super().__init__(f"the server read at {answered} instead")
        self.answered = answered


class ArchiveChunks:
    """A Readable (read(size) -> bytes, b'' at the end) over a generator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buffer = bytearray()
        self._done = False

    def read(self, size: int = -1) -> bytes:
        while not self._done and (size is None or size < 0 or len(self._buffer) < size):
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                self._done = True
        if size is None or size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data


class _Sink:
    """Where the ArchiveWriter writes: a buffer the generator drains."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data) -> int:
        self.buffer += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


@dataclass
class DatabaseDump:
    """What dumping one database produced, filled in while its archive streams. `snapshot`:
    False once the server answered a snapshot read at another time than asked (it read current
    data; finish_backup then checks the oplog: MongoEngine._full_consistency)."""

    database: str
    fingerprints: dict[str, Fingerprint] = field(default_factory=dict)
    collections: list[str] = field(default_factory=list)
    views: list[str] = field(default_factory=list)
    snapshot: bool = True


def collection_batches(
    client: MongoClient,
    session: ClientSession,
    database: str,
    collection: str,
    cluster_time: Timestamp,
    result: DatabaseDump,
) -> Iterator[list[RawBSONDocument]]:
    """snapshot_batches, or, from a server that does not keep snapshot history (it answers a
    snapshot read at another time), the collection's current documents, noted in `result`."""
    if result.snapshot:
        try:
            yield from snapshot_batches(client, session, database, collection, cluster_time)
            return
        except SnapshotIgnored:
            result.snapshot = False
    yield from current_batches(client, session, database, collection)


def split_raw_batch(batch: bytes) -> Iterator[memoryview]:
    """The BSON documents of a raw batch (concatenated documents, each length-prefixed)."""
    view = memoryview(batch)
    at = 0
    while at < len(view):
        size = int.from_bytes(view[at : at + 4], "little")
        yield view[at : at + size]
        at += size


def changes_since(client: MongoClient, database: str, after: Timestamp, until: Timestamp) -> int:
    """How many oplog entries touch `database` (its collections and its commands) with
    after < ts <= until."""
    namespace = {"$regex": f"^{re.escape(database)}\\."}
    return client["local"]["oplog.rs"].count_documents({"ts": {"$gt": after, "$lte": until}, "ns": namespace})


def _write_auth(writer: ArchiveWriter, database: str, namespace: str, documents: list) -> Fingerprint:
    """Write users or roles (users.py) as namespace `namespace` of `database`; their fingerprint."""
    digest = DocumentDigest()
    encoded = [bson.encode(document) for document in documents]
    for raw in encoded:
        digest.add(raw)
    if encoded:
        writer.write_documents(database, namespace, encoded)
        writer.end_collection(database, namespace)
    return digest.fingerprint()


def database_archive(
    client: MongoClient,
    database: str,
    specs: list[CollectionSpec],
    cluster_time: Timestamp,
    server_version: str,
    result: DatabaseDump,
) -> Iterator[bytes]:
    """The mongodump archive of `database` (its collections `specs`) at `cluster_time`, as byte
    chunks; fills `result` with each collection's fingerprint as its documents pass. The
    database's users and roles go first (users.py), as they are when the dump starts."""
    sink = _Sink()
    writer = ArchiveWriter(sink, server_version=server_version, tool_version=TOOL_VERSION, concurrent_collections=1)
    auth = read_auth(client, database)
    for namespace, documents in auth.items():
        if documents:
            writer.add_collection(database, namespace, "", type="")
    for spec in specs:
        writer.add_collection(database, spec.name, spec.metadata(), type=spec.type)
    writer.begin()
    for namespace, documents in auth.items():
        result.fingerprints[namespace] = _write_auth(writer, database, namespace, documents)
    yield sink.take()
    with client.start_session(causal_consistency=False) as session:
        for spec in specs:
            if spec.has_documents:
                digest = DocumentDigest()
                batches = collection_batches(client, session, database, spec.name, cluster_time, result)
                for batch in prefetched(batches, name=f"dump {database}.{spec.name}"):
                    pending: list[bytes] = []
                    pending_bytes = 0
                    for document in batch:
                        raw = document.raw
                        digest.add(raw)
                        pending.append(raw)
                        pending_bytes += len(raw)
                        if pending_bytes >= WRITE_BYTES:
                            writer.write_documents(database, spec.name, pending)
                            pending, pending_bytes = [], 0
                            yield sink.take()
                    if pending:
                        writer.write_documents(database, spec.name, pending)
                    if len(sink.buffer) >= WRITE_BYTES:
                        yield sink.take()
                result.fingerprints[spec.name] = digest.fingerprint()
                result.collections.append(spec.name)
            else:
                result.views.append(spec.name)
            writer.end_collection(database, spec.name)
            yield sink.take()
    writer.close()
    yield sink.take()
