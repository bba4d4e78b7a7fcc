"""The mongodump archive format's constants, records and naming rules, shared by
archive_writer.py and archive_reader.py (archive.py is the package's public face and says what
the format is; docs/mongodb-archive-format.md cites mongo-tools for every fact used here)."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from vaultflow.errors import VaultflowError

MAGIC = struct.pack("<I", 0x8199E26D)  # b"\x6d\xe2\x99\x81"
TERMINATOR = b"\xff\xff\xff\xff"
FORMAT_VERSION = "0.1"
MAX_BSON_SIZE = 16 * 1024 * 1024  # mongo-tools common/db/db.go MaxBSONSize: the parser's limit
MIN_BSON_SIZE = 5
SEGMENT_BYTES = MAX_BSON_SIZE  # mongodump buffers this much of a namespace before writing it
OPLOG = ("", "oplog")  # mongodump's oplog namespace (mongodump/prepare.go CreateOplogIntents)
TIMESERIES_BUCKETS = "system.buckets."
# mongo-tools common/util/mongo.go InvalidDBChars; ValidateDBName also caps names at 63 bytes.
INVALID_DB_CHARS = '/\\. "\x00$'
COLLECTION_TYPES = ("collection", "view", "timeseries", "")


class ArchiveUsageError(VaultflowError, ValueError):
    """ArchiveWriter was asked for something that would make an archive mongorestore refuses or
    hangs on (the message names the namespace and the rule); nothing about it is transient."""


@dataclass(frozen=True)
class ArchiveHeader:
    """The archive's first document. `server_version` is the source server's "X.Y.Z[-…]"."""

    concurrent_collections: int
    version: str
    server_version: str
    tool_version: str


@dataclass(frozen=True)
class CollectionEntry:
    """One prelude document. `metadata` is the collection's .metadata.json text ("" for the
    oplog); `type` is listCollections' type ("collection", "view", "timeseries"; "" for the
    oplog and in archives older than mongo-tools 100.3); `size` is 0 as mongodump writes it.
    `data_collection` is the collection name its data segments carry: "system.buckets.<name>"
    for a timeseries collection from a server before 8.3, else the name itself."""

    db: str
    collection: str
    metadata: str
    size: int
    type: str
    data_collection: str

    @property
    def namespace(self) -> str:
        return namespace_name(self.db, self.collection)


@dataclass(frozen=True)
class Prelude:
    """The header and the collections the archive declares, in archive order."""

    header: ArchiveHeader
    collections: tuple[CollectionEntry, ...]

    @property
    def databases(self) -> list[str]:
        """Database names in order of first appearance ("" for the oplog's)."""
        return list(dict.fromkeys(entry.db for entry in self.collections))

    def entry(self, db: str, collection: str) -> CollectionEntry | None:
        """The entry declared as (db, collection), or whose data segments carry that name."""
        for entry in self.collections:
            if entry.db == db and collection in (entry.collection, entry.data_collection):
                return entry
        return None


def namespace_name(db: str, collection: str) -> str:
    """'db.collection' as mongo-tools names it in messages; the oplog is '.oplog'."""
    return f"{db}.{collection}"


def parse_server_version(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) the way mongorestore reads the header's server_version
    (mongo-tools common/db/version.go StrToVersion: drop '-…' and '+…', then exactly three
    integers). ValueError if mongorestore could not parse it."""
    core = version.split("-", 1)[0].split("+", 1)[0]
    parts = core.split(".")
    if len(parts) != 3 or not all(re.fullmatch(r"[+-]?\d+", part) for part in parts):
        raise ValueError(f"server version {version!r} is not 'major.minor.patch'")
    major, minor, patch = (int(part) for part in parts)
    return major, minor, patch


def data_collection(collection: str, type: str, server_version: tuple[int, int, int]) -> str:
    """The collection name a namespace's data segments carry: timeseries data lives in
    'system.buckets.<name>' on servers before 8.3 (mongo-tools common/intents/intent.go
    DataCollection, common/db/version.go SupportsRawData)."""
    if type == "timeseries" and server_version < (8, 3, 0):
        return TIMESERIES_BUCKETS + collection
    return collection


def check_db_name(db: str, collection: str) -> None:
    """ArchiveUsageError unless mongorestore accepts `db` (mongo-tools common/util/mongo.go
    ValidateDBName, called by mongorestore/filepath.go CreateAllIntents); "" only for the oplog."""
    where = namespace_name(db, collection)
    if db == "":
        if (db, collection) != OPLOG:
            raise ArchiveUsageError(f"namespace {where!r}: an empty database name is the oplog's alone")
        return
    if len(db.encode("utf-8")) > 63:
        raise ArchiveUsageError(f"namespace {where!r}: mongorestore refuses database names over 63 bytes")
    bad = sorted({char for char in db if char in INVALID_DB_CHARS})
    if bad:
        raise ArchiveUsageError(
            f"namespace {where!r}: mongorestore refuses database names containing {''.join(bad)!r} "
            f"(none of {INVALID_DB_CHARS!r} may appear)"
        )


def is_special_namespace(db: str, collection: str) -> bool:
    """Users, roles and the auth version: mongorestore caches them apart and expects them before
    every other namespace of the archive (mongo-tools common/intents/intent.go IsUsers/IsRoles/
    IsAuthVersion; mongorestore/mongorestore.go reads them off the front of the archive)."""
    names = ("system.users", "system.roles", "system.version")
    return collection in tuple("$admin." + name for name in names) or (db == "admin" and collection in names)
