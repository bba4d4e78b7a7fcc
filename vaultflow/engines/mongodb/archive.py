"""mongodump's archive format (`mongodump --archive`, `mongorestore --archive`), written and read
streaming, in bounded memory, without mongo-tools.

    6d e2 99 81                                  magic: uint32 0x8199e26d, little-endian
    {concurrent_collections: int32, version: "0.1", server_version, tool_version}
    {db, collection, metadata, size: int32, type}   one per collection: the prelude
    ff ff ff ff
    then, in any interleaving:
    {db, collection, EOF: false, CRC: int64 0}  document ...  ff ff ff ff    a data segment
    {db, collection, EOF: true, CRC: int64 crc}  ff ff ff ff                 a namespace's end

The full description, with what mongorestore checks and where each fact comes from in
mongo-tools (common/archive/spec.md, archive.go, prelude.go, parser.go, multiplexer.go,
demultiplexer.go; mongodump/metadata_dump.go, prepare.go; mongorestore/), is
docs/mongodb-archive-format.md.

This module is the codec's public face; the parts live beside it: archive_format.py (constants,
records, naming rules), archive_writer.py (`ArchiveWriter`), archive_reader.py
(`ArchiveReader`), metadata.py (`metadata_json`, the .metadata.json text), crc64.py (the CRC).

`ArchiveWriter` refuses what would make a stock `mongorestore --archive` fail or hang: data for a
namespace the prelude does not list, data after a namespace's end, a server version mongorestore
cannot parse, database names it rejects, more namespaces in progress at once than the header's
`concurrent_collections`, oplog data before every other collection has ended, users/roles
after other collections. `ArchiveReader` checks what mongorestore checks, and the CRCs.
"""

from vaultflow.engines.mongodb.archive_format import (
    FORMAT_VERSION,
    MAGIC,
    MAX_BSON_SIZE,
    OPLOG,
    SEGMENT_BYTES,
    TERMINATOR,
    ArchiveHeader,
    ArchiveUsageError,
    CollectionEntry,
    Prelude,
    data_collection,
    namespace_name,
    parse_server_version,
)
from vaultflow.engines.mongodb.archive_reader import ArchiveReader
from vaultflow.engines.mongodb.archive_writer import ArchiveWriter
from vaultflow.engines.mongodb.metadata import metadata_json

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_BSON_SIZE",
    "OPLOG",
    "SEGMENT_BYTES",
    "TERMINATOR",
    "ArchiveHeader",
    "ArchiveReader",
    "ArchiveUsageError",
    "ArchiveWriter",
    "CollectionEntry",
    "Prelude",
    "data_collection",
    "metadata_json",
    "namespace_name",
    "parse_server_version",
]
