"""Restoring MongoDB archives: into new databases by default, compared with the backup's
fingerprints; into the original names only with overwrite, and only after the copy compared equal.

Each database's archive streams from the repository (sha256 checked while it streams, every
namespace's CRC-64 at its end) into a scratch database: collections created with their options,
documents inserted in raw batches (validation bypassed: they passed it when written), indexes
built after the data, views last. The scratch database is recorded in the repository before it
is made (Repository.put_scratch), so a killed restore's leftovers are dropped by the next
restore or drill of the target.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from bson import json_util
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from vaultflow.compare import TableComparison
from vaultflow.engines.base import BackupContext
from vaultflow.engines.mongodb.archive import ArchiveReader
from vaultflow.engines.mongodb.client import RAW
from vaultflow.engines.mongodb.dump import DocumentDigest, split_raw_batch
from vaultflow.engines.mongodb.settings import namespace_matches
from vaultflow.errors import ConfigError
from vaultflow.manifest import Fingerprint, Manifest, StoredObject
from vaultflow.pipeline import open_verified

ENGINE = "mongodb"
ARCHIVE_ROLE = "database-archive"
INSERT_BATCH_BYTES = 8 << 20  # raw bytes per insert_many: well under the 48 MB message limit
MAX_NAME_BYTES = 63  # MongoDB's database name limit (bytes)
PROPERTIES = "(indexes and options)"  # the comparison row of a database's metadata


def fit_name(stem: str, suffix: str) -> str:
    """`stem + suffix`, the stem cut at a character boundary so the whole fits 63 bytes."""
    room = MAX_NAME_BYTES - len(suffix.encode())
    return stem.encode()[:room].decode("utf-8", "ignore") + suffix


def default_restore_name(database: str, backup_id: str) -> str:
    """<db>_restore_<backup time>: a new database that says where it came from."""
    return fit_name(database, f"_restore_{backup_id[:15].lower()}")


def scratch_name(database: str) -> str:
    """<db>_vf_<random>: where a restore works before it moves into place."""
    return fit_name(database, f"_vf_{secrets.token_hex(4)}")


@dataclass
class RestoredDatabase:
    """One database's restore: the archive's collections (name -> metadata) and views, where it
    went, and its fingerprints read back."""

    source: str
    into: str
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    fingerprints: dict[str, Fingerprint] = field(default_factory=dict)


def archive_objects(manifest: Manifest, databases: list[str] | None) -> list[StoredObject]:
    """The manifest's database archives, in manifest order, only `databases` when given.
    ConfigError naming a requested database the backup does not hold."""
    objects = [o for o in manifest.objects if o.role == ARCHIVE_ROLE]
    held = [o.database or "" for o in objects]
    if databases:
        missing = [name for name in databases if name not in held]
        if missing:
            raise ConfigError(
                f"backup {manifest.id} holds no database {', '.join(map(repr, missing))} (it holds: {', '.join(held)})"
            )
        objects = [o for o in objects if o.database in databases]
    return objects


def restore_archive(
    client: MongoClient,
    ctx: BackupContext,
    manifest: Manifest,
    obj: StoredObject,
    into: str,
    namespaces: list[str] | None = None,
) -> RestoredDatabase:
    """Stream one database archive of `manifest` into database `into` (which must be empty):
    collections with their options, documents in raw batches, indexes, views; only those whose
    'db.collection' (the source database's name) matches a glob of `namespaces` when given (the
    whole archive is still read: every checksum is checked). IntegrityError naming the object
    when its bytes or a namespace's CRC do not match (raised before the last batch is inserted)."""
    restored = RestoredDatabase(source=obj.database or "", into=into)
    key = ctx.repository.backup_prefix(manifest.engine, manifest.target, manifest.id) + obj.key
    reader, verifying, raw = open_verified(ctx.repository.store, key, obj.sha256, obj.stored_size, obj.key)
    target = client.get_database(into, codec_options=RAW)
    views: list[tuple[str, dict[str, Any]]] = []
    with raw:
        archive = ArchiveReader(reader, name=obj.key)
        wanted = {
            entry.collection
            for entry in archive.prelude.collections
            if namespaces is None or namespace_matches(namespaces, restored.source, entry.collection)
        }
        for entry in archive.prelude.collections:
            if entry.collection not in wanted:
                continue
            metadata = json_util.loads(entry.metadata) if entry.metadata else {}
            options = dict(metadata.get("options") or {})
            if entry.type == "view":
                views.append((entry.collection, options))
            else:
                restored.metadata[entry.collection] = metadata
                target.create_collection(entry.collection, **options)
        batch: list[RawBSONDocument] = []
        size, current = 0, ""
        for _db, collection, document in archive:
            if collection not in wanted:
                continue
            if batch and (collection != current or size >= INSERT_BATCH_BYTES):
                target[current].insert_many(batch, ordered=True, bypass_document_validation=True)
                batch, size = [], 0
            current = collection
            batch.append(RawBSONDocument(document))
            size += len(document)
        verifying.check()  # every byte read: a corrupt object never gets its last batch in
        if batch:
            target[current].insert_many(batch, ordered=True, bypass_document_validation=True)
    for collection, metadata in restored.metadata.items():
        indexes = [_index_spec(i) for i in metadata.get("indexes") or [] if i.get("name") != "_id_"]
        if indexes:
            target.command({"createIndexes": collection, "indexes": indexes})
    for name, options in views:
        target.command({"create": name, "viewOn": options["viewOn"], "pipeline": options.get("pipeline", [])})
        restored.metadata[name] = {"options": options, "indexes": []}
    return restored


def _index_spec(index: dict[str, Any]) -> dict[str, Any]:
    """A listIndexes document as createIndexes takes it (without 'v' and 'ns', which the server sets)."""
    return {k: v for k, v in index.items() if k not in ("v", "ns")}


def read_fingerprints(client: MongoClient, database: str, collections: list[str]) -> dict[str, Fingerprint]:
    """count and digest of every collection in `collections` of `database` as it is now."""
    db = client.get_database(database, codec_options=RAW)
    prints = {}
    for name in collections:
        digest = DocumentDigest()
        for batch in db[name].find_raw_batches():
            for document in split_raw_batch(batch):
                digest.add(bytes(document))
        prints[name] = digest.fingerprint()
    return prints


def restored_collections(client: MongoClient, database: str) -> list[str]:
    """The collections (not views, not system collections) database `database` holds now."""
    return sorted(
        info["name"]
        for info in client[database].list_collections()
        if info.get("type", "collection") == "collection" and not info["name"].startswith("system.")
    )


def compare_metadata(client: MongoClient, restored: RestoredDatabase) -> TableComparison:
    """One row: the restored database's collections, their options and indexes (name, key,
    options), and its views, against what the archive declared."""

    def shape(metadata: dict[str, Any]) -> str:
        indexes = sorted((_index_spec(i) for i in metadata.get("indexes") or []), key=lambda i: i.get("name", ""))
        return json_util.dumps({"options": metadata.get("options") or {}, "indexes": indexes}, sort_keys=True)

    db = client[restored.into]
    actual: dict[str, dict[str, Any]] = {}
    for info in db.list_collections():
        if info["name"].startswith("system."):
            continue
        kind = info.get("type", "collection")
        indexes = list(db[info["name"]].list_indexes()) if kind == "collection" else []
        actual[info["name"]] = {"options": info.get("options") or {}, "indexes": [dict(i) for i in indexes]}
    expected = {name: shape(meta) for name, meta in restored.metadata.items()}
    got = {name: shape(meta) for name, meta in actual.items()}
    status = "match" if expected == got else "mismatch"
    return TableComparison(restored.source, PROPERTIES, len(expected), len(got), status)


def drop_quietly(client: MongoClient, database: str, log) -> None:
    try:
        client.drop_database(database)
    except Exception as exc:  # noqa: BLE001 - reported, the restore's own outcome stands
        log(f"could not drop scratch database {database}: {exc}")
