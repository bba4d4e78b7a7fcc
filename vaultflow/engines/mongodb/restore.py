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

import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import bson
from bson import json_util
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

from vaultflow.compare import TableComparison, compare_database
from vaultflow.engines.base import BackupContext
from vaultflow.engines.mongodb.archive import ArchiveReader
from vaultflow.engines.mongodb.archive_format import is_special_namespace
from vaultflow.engines.mongodb.client import RAW
from vaultflow.engines.mongodb.dump import DocumentDigest, split_raw_batch
from vaultflow.engines.mongodb.names import RenameRules
from vaultflow.engines.mongodb.restore_plan import ArchivedCollection, RestorePlan, TargetDatabase, plan_restore
from vaultflow.engines.mongodb.settings import namespace_matches
from vaultflow.engines.mongodb.users import AUTH_NAMESPACES, ROLES, USERS, AuthRenamer
from vaultflow.errors import ConfigError, IntegrityError
from vaultflow.manifest import Fingerprint, Manifest, StoredObject
from vaultflow.pipeline import open_verified

ENGINE = "mongodb"
ARCHIVE_ROLE = "database-archive"
INSERT_BATCH_BYTES = 8 << 20  # raw bytes per insert_many: well under the 48 MB message limit
MAX_NAME_BYTES = 63  # MongoDB's database name limit (bytes)
PROPERTIES = "(indexes and options)"
ADVICE_DAMAGED = "restore refused: use another backup, or repair the store from a mirror"  # the comparison row of a database's metadata
DEFAULT_NAME = re.compile(r"_restore_\d{8}t\d{6}$")  # what default_restore_name appends


def fit_name(stem: str, suffix: str) -> str:
    """`stem + suffix`, the stem cut at a character boundary so the whole fits 63 bytes."""
    room = MAX_NAME_BYTES - len(suffix.encode())
    return stem.encode()[:room].decode("utf-8", "ignore") + suffix


def default_restore_name(database: str, backup_id: str) -> str:
    """<db>_restore_<backup time>: a new database that says where it came from."""
    return fit_name(database, f"_restore_{backup_id[:15].lower()}")


def name_taken(taken: list[str], where: str) -> str:
    """The refusal when restore targets `taken` already exist on the server at `where`, saying
    what to do: restore under another name or overwrite; for a default name (<db>_restore_<time>,
    an earlier restore's copy of the same backup or point) also: drop that copy."""
    names = ", ".join(map(repr, taken))
    exists = f"database {names} already exists" if len(taken) == 1 else f"databases {names} already exist"
    earlier = [name for name in taken if DEFAULT_NAME.search(name)]
    why, steps = "", []
    if earlier:
        why = f" ({', '.join(map(repr, earlier))}: the name a restore gives its copy of this backup or point)"
        steps.append(
            f"drop the earlier copy if it is no longer needed (mongosh: db.getSiblingDB({earlier[0]!r}).dropDatabase())"
        )
    steps.append("restore under another name (into='<name>' with one database; or rename)")
    steps.append("pass overwrite=True to replace it once the new copy compared equal")
    return f"{exists} on {where}{why}; nothing was written. Either {', or '.join(steps)}"


def scratch_name(database: str) -> str:
    """<db>_vf_<random>: where a restore works before it moves into place."""
    return fit_name(database, f"_vf_{secrets.token_hex(4)}")


@dataclass
class RestoredDatabase:
    """One database's restore: the archive's collections and views (name in `into` ->
    metadata), where it went, its fingerprints read back, and the users and roles the archive
    holds (namespace -> documents)."""

    source: str
    into: str
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    fingerprints: dict[str, Fingerprint] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # name in `into` -> source collection
    auth: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # users, roles (users.py)


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
    *,
    renamed: Mapping[str, str] | None = None,
    view_on: Mapping[str, str] | None = None,
) -> RestoredDatabase:
    """Stream one database archive of `manifest` into database `into`: collections with their
    options, documents in raw batches, indexes, views; only those whose 'db.collection' (the
    source database's name) matches a glob of `namespaces` when given, or, with `renamed`
    (source collection -> name in `into`, restore_plan.Part), only those, under their new names,
    views reading `view_on[view]` (the whole archive is still read: every checksum is checked).
    The archive's users and roles ('$admin.system.users'/'roles') are kept in the result, not
    written. IntegrityError naming the object when its bytes or a namespace's CRC do not match
    (raised before the last batch is inserted)."""
    restored = RestoredDatabase(source=obj.database or "", into=into)
    reader, verifying, raw = _open_archive(ctx, manifest, obj)
    target = client.get_database(into, codec_options=RAW)
    views: list[tuple[str, dict[str, Any]]] = []
    with raw, damaged_archive(manifest, obj):
        archive = ArchiveReader(reader, name=obj.key)
        if renamed is None:
            renamed = {
                entry.collection: entry.collection
                for entry in archive.prelude.collections
                if not is_special_namespace(entry.db, entry.collection)
                and (namespaces is None or namespace_matches(namespaces, restored.source, entry.collection))
            }
        for entry in archive.prelude.collections:
            if entry.collection not in renamed:
                continue
            metadata = json_util.loads(entry.metadata) if entry.metadata else {}
            options = dict(metadata.get("options") or {})
            name = renamed[entry.collection]
            restored.names[name] = entry.collection
            if entry.type == "view":
                options["viewOn"] = (view_on or {}).get(entry.collection, options.get("viewOn"))
                views.append((name, options))
            else:
                restored.metadata[name] = metadata
                target.create_collection(name, **options)
        batch: list[RawBSONDocument] = []
        size, current = 0, ""
        for _db, collection, document in archive:
            if collection in AUTH_NAMESPACES:
                restored.auth.setdefault(collection, []).append(bson.decode(document))
                continue
            if collection not in renamed:
                continue
            if batch and (renamed[collection] != current or size >= INSERT_BATCH_BYTES):
                target[current].insert_many(batch, ordered=True, bypass_document_validation=True)
                batch, size = [], 0
            current = renamed[collection]
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


@contextmanager
def damaged_archive(manifest: Manifest, obj: StoredObject) -> Iterator[None]:
    """Parse errors while an archive streams (a damaged byte reaches the BSON or JSON decoder
    before the object's sha256 is compared at its end) as IntegrityError naming the object and
    the backup."""
    try:
        yield
    except IntegrityError as exc:
        if manifest.id in str(exc) and ADVICE_DAMAGED in str(exc):
            raise
        where = "" if manifest.id in str(exc) else f"backup {manifest.id}: "
        advice = "" if ADVICE_DAMAGED in str(exc) else f"; {ADVICE_DAMAGED}"
        raise IntegrityError(f"{where}{exc}{advice}") from exc
    except (ValueError, bson.errors.BSONError, IndexError) as exc:
        raise IntegrityError(
            f"{obj.key} of backup {manifest.id} is damaged: it does not parse as a mongodump archive "
            f"({type(exc).__name__}: {exc}); {ADVICE_DAMAGED}"
        ) from exc


def _open_archive(ctx: BackupContext, manifest: Manifest, obj: StoredObject):
    """(reader, verifying, raw) over `obj`'s plain archive bytes (pipeline.open_verified)."""
    key = ctx.repository.backup_prefix(manifest.engine, manifest.target, manifest.id) + obj.key
    return open_verified(ctx.repository.store, key, obj.sha256, obj.stored_size, obj.key)


@dataclass
class ArchiveHead:
    """The start of a database archive: its collections and views (name, type, options) and the
    users and roles it holds (decoded documents; None when it records none)."""

    collections: list[ArchivedCollection]
    auth: dict[str, list[dict[str, Any]]]


def read_archive_head(ctx: BackupContext, manifest: Manifest, obj: StoredObject) -> ArchiveHead:
    """Read an archive's prelude and its users and roles (which come before every collection's
    data; their CRCs are checked), and stop there: the restore reads the rest (and checks the
    object's sha256) later. IntegrityError naming the object when what is read is damaged."""
    reader, _verifying, raw = _open_archive(ctx, manifest, obj)
    with raw, damaged_archive(manifest, obj):
        archive = ArchiveReader(reader, name=obj.key)
        collections = []
        for entry in archive.prelude.collections:
            metadata = json_util.loads(entry.metadata) if entry.metadata else {}
            collections.append(ArchivedCollection(entry.collection, entry.type, dict(metadata.get("options") or {})))
        auth: dict[str, list[dict[str, Any]]] = {}
        if any(entry.collection in AUTH_NAMESPACES for entry in archive.prelude.collections):
            for _db, collection, document in archive:
                if collection not in AUTH_NAMESPACES:
                    break
                auth.setdefault(collection, []).append(bson.decode(document))
    return ArchiveHead(collections, auth)


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


@dataclass
class AuthToCreate:
    """Users and roles to create on one target database (renamed: users.AuthRenamer), and notes
    for the restore's result."""

    users: list[dict[str, Any]] = field(default_factory=list)
    roles: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def prepare_restore(
    ctx: BackupContext,
    manifest: Manifest,
    objects: list[StoredObject],
    default_target: Callable[[str], str],
    *,
    rules: RenameRules,
    namespaces: list[str] | None,
    users_and_roles: bool,
    allow_empty: bool = False,
) -> tuple[RestorePlan, dict[str, AuthToCreate]]:
    """The restore's plan (restore_plan.plan_restore) and the users and roles to create per
    target database (empty unless `users_and_roles`). Reads the start of each archive when
    renaming or restoring users (its prelude, users and roles). ConfigError when the selection
    takes nothing, or when users must go with a database whose collections land in several."""
    heads = {o.database or "": read_archive_head(ctx, manifest, o) for o in objects} if rules or users_and_roles else {}
    archived = {database: head.collections for database, head in heads.items()}
    plan = plan_restore(
        objects, default_target, rules=rules, namespaces=namespaces, archived=archived if rules else None
    )
    if not plan.targets and not allow_empty:  # allow_empty: databases only an oplog replay creates follow
        raise ConfigError(
            f"no collection of backup {manifest.id} matches {namespaces}: nothing to restore "
            "(namespaces are 'db.collection' globs, e.g. 'app.orders', 'app.*')"
        )
    auth: dict[str, AuthToCreate] = {}
    if not users_and_roles:
        return plan, auth
    split = {db: into for db, into in plan.users_into.items() if into is None and heads[db].auth}
    if split:
        raise ConfigError(
            f"the collections of database {', '.join(map(repr, split))} land in several databases, so its users "
            "and roles have no one database to go to: rename whole databases ('app.*': 'app_copy.*'), or restore "
            "without users_and_roles"
        )
    renamer = AuthRenamer({db: into for db, into in plan.users_into.items() if into}, plan.landed)
    for database, head in heads.items():
        into = plan.users_into.get(database)
        if into is None:
            continue
        wanted = auth.setdefault(into, AuthToCreate())
        if USERS not in manifest.fingerprints.get(database, {}):
            wanted.notes.append(
                f"backup {manifest.id} recorded no users or roles of {database} (the backing-up user could not "
                "read them, or the backup predates their recording)"
            )
        wanted.users += [renamer.user(u) for u in head.auth.get(USERS, [])]
        wanted.roles += [renamer.role(r) for r in head.auth.get(ROLES, [])]
    return plan, {into: wanted for into, wanted in auth.items() if wanted.users or wanted.roles or wanted.notes}


def restore_target(
    client: MongoClient,
    ctx: BackupContext,
    manifest: Manifest,
    target: TargetDatabase,
    into: str,
    namespaces: list[str] | None = None,
) -> list[TableComparison]:
    """Restore every part of `target` into database `into` (restore_archive) and compare: each
    collection with its source collection's fingerprint in the backup (rows named by the source
    database and collection), then the database's collections, options, indexes and views (one
    row). Returns the rows; IntegrityError as restore_archive raises it."""
    rows: list[TableComparison] = []
    combined = RestoredDatabase(source=target.label, into=into)
    for part in target.parts:
        if part.obj is None:
            raise ValueError(f"restore_target: {part.source} has no archive; only an oplog replay restores it")
        done = restore_archive(
            client, ctx, manifest, part.obj, into, namespaces, renamed=part.names, view_on=part.view_on
        )
        collections = [c for c, m in done.metadata.items() if "viewOn" not in (m.get("options") or {})]
        actual = {done.names[name]: prints for name, prints in read_fingerprints(client, into, collections).items()}
        selected = set(done.names.values()) if part.names is not None else None
        expected = {
            name: prints
            for name, prints in manifest.fingerprints.get(part.source, {}).items()
            if name not in AUTH_NAMESPACES
            and (selected is None or name in selected)
            and (selected is not None or namespaces is None or namespace_matches(namespaces, part.source, name))
        }
        rows += compare_database(part.source, expected, actual)
        combined.metadata.update(done.metadata)
    rows.append(compare_metadata(client, combined))
    return rows
