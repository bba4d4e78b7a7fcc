"""Oplog incrementals and differentials: the oplog entries of the included databases after the
parent's consistency point, stored as one oplog-only mongodump archive (`oplog.archive.zst`),
and the fingerprints of the state they lead to.

    touched = Touched()                          which collections and databases entries change
    prints = expected_fingerprints(client, ...)  the parent's fingerprints, with every touched
                                                 collection read again at the new point

Why fingerprints are carried forward, not read whole: a collection no oplog entry of the range
touched is what it was at the parent's point, so its fingerprint is the parent's; only touched
collections are read, at the backup's point (a snapshot read at `atClusterTime`). A database a
command touched (create, drop, rename, collMod, ...) is read whole, its collections listed anew.

A server without snapshot history (SecantusDB) answers with current data: the read is the state
at the point only if the oplog shows no change to the touched databases from the point to the end
of the read. `expected_fingerprints` says when a read was of current data; the engine then checks
the oplog, moves its point forward and tries again, and gives up with a retryable error
(MongoEngine._store_oplog_range; docs/mongodb.md, consistency).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import bson
from bson import Timestamp
from pymongo import MongoClient

from vaultflow.engines.mongodb.archive_format import TIMESERIES_BUCKETS
from vaultflow.engines.mongodb.dump import DocumentDigest, SnapshotIgnored, snapshot_batches
from vaultflow.engines.mongodb.oplog import entry_facts
from vaultflow.engines.mongodb.restore import read_fingerprints
from vaultflow.engines.mongodb.settings import SYSTEM_DATABASES
from vaultflow.manifest import Fingerprint

OPLOG_KEY = "oplog.archive.zst"
OPLOG_ROLE = "oplog-range"
OPLOG_FORMAT = "mongodump-archive-oplog"


@dataclass
class Touched:
    """What a stretch of oplog changes: `collections` (database -> collection names written by
    inserts, updates and deletes) and `databases` whose commands (DDL) ran, read whole again.
    `entries`: how many entries were seen."""

    collections: dict[str, set[str]] = field(default_factory=dict)
    databases: set[str] = field(default_factory=set)
    entries: int = 0

    def add(self, raw: bytes) -> None:
        """Note one raw oplog entry."""
        facts = entry_facts(raw)
        self.entries += 1
        db, _, rest = facts.ns.partition(".")
        if db == "admin" and rest == "$cmd":
            for op in (bson.decode(raw).get("o") or {}).get("applyOps") or []:
                if isinstance(op, dict):
                    self._note(str(op.get("op", "")), str(op.get("ns", "")))
            return
        if facts.op == "c":
            target = (bson.decode(raw).get("o") or {}).get("to")  # renameCollection into another database
            if isinstance(target, str):
                self.databases.add(target.partition(".")[0])
        self._note(facts.op, facts.ns)

    def _note(self, op: str, ns: str) -> None:
        db, _, collection = ns.partition(".")
        if not db or db in SYSTEM_DATABASES or not collection:
            return
        if op == "c" or collection == "$cmd" or collection.startswith("system."):
            self.databases.add(db)
        elif op in ("i", "u", "d"):
            self.collections.setdefault(db, set()).add(collection)

    def passing(self, entries: Iterable[bytes]) -> Iterable[bytes]:
        """`entries` unchanged, each noted on its way."""
        for raw in entries:
            self.add(raw)
            yield raw

    def database_names(self) -> set[str]:
        return self.databases | set(self.collections)


def read_collection(
    client: MongoClient, database: str, collection: str, point: Timestamp | None
) -> tuple[Fingerprint, bool]:
    """The fingerprint of `database.collection` at `point` (a snapshot read), or as it is now
    when `point` is None or the server ignores snapshot reads. Returns (fingerprint, whether it
    is of `point` for certain)."""
    digest = DocumentDigest()
    if point is not None:
        try:
            with client.start_session(causal_consistency=False) as session:
                for batch in snapshot_batches(client, session, database, collection, point):
                    for document in batch:
                        digest.add(document.raw)
            return digest.fingerprint(), True
        except SnapshotIgnored:
            pass
    return read_fingerprints(client, database, [collection])[collection], False


def expected_fingerprints(
    client: MongoClient,
    parent: dict[str, dict[str, Fingerprint]],
    touched: Touched,
    point: Timestamp,
    collections_of: Callable[[str], list[str]],
) -> tuple[dict[str, dict[str, Fingerprint]], bool]:
    """Database -> collection -> fingerprint at `point`: `parent`'s, with each touched collection
    read again (dropped ones removed) and each database a command touched listed anew by
    `collections_of(database)` (its included collections now, [] when it is gone) and read whole.
    Returns (fingerprints, exact): exact is False when some read was of current data (a server
    that ignored the snapshot read), which the caller must prove unchanged since `point`."""
    prints = {db: dict(colls) for db, colls in parent.items()}
    exact = True
    for database in sorted(touched.database_names()):
        present = collections_of(database)
        if database in touched.databases:
            wanted = set(present)
            prints[database] = {}
        else:
            wanted = touched.collections.get(database, set()) & set(present)
            current = prints.setdefault(database, {})
            for gone in touched.collections.get(database, set()) - set(present):
                current.pop(gone, None)
        for collection in sorted(wanted):
            fingerprint, at_point = read_collection(client, database, collection, point)
            prints[database][collection] = fingerprint
            exact = exact and at_point
        if not prints[database]:
            prints.pop(database)
    return prints, exact


# -- one oplog range into the repository -------------------------------------------------------
QUIET_ATTEMPTS = 5  # reads of the touched collections before a server without snapshots gives up
QUIET_WAIT_SECONDS = 0.5  # the first wait between them; doubled each time (7.5 s in all)


def excluded_entry(raw: bytes, excluded: Callable[[str, str], bool]) -> bool:
    """Whether an oplog entry writes to or runs a command on a collection `excluded(db, name)`
    leaves out of backups (inserts, updates, deletes, and commands naming the collection first:
    create, drop, collMod, createIndexes, ...). A timeseries collection's buckets count as the
    collection ('<db>.system.buckets.<name>' is <name>), and a mongod view write (an entry on
    '<db>.system.views', whose _id is 'db.view') as the view. Transactions' applyOps are kept whole."""
    facts = entry_facts(raw)
    db, _, collection = facts.ns.partition(".")
    if facts.op in ("i", "u", "d") and collection == "system.views":
        entry = bson.decode(raw)
        view = ((entry.get("o2") if facts.op == "u" else entry.get("o")) or {}).get("_id")
        return isinstance(view, str) and view.startswith(db + ".") and excluded(db, view[len(db) + 1 :])
    if facts.op in ("i", "u", "d"):
        return excluded(db, logical_name(collection))
    if facts.op == "c" and collection == "$cmd":
        command = bson.decode(raw).get("o") or {}
        first = next(iter(command.values()), None)
        if isinstance(first, str):
            name = first.partition(".")[2] if first.startswith(db + ".") else first
            return excluded(db, logical_name(name))
    return False


def logical_name(collection: str) -> str:
    """The collection a name stands for: a timeseries collection for its buckets
    ('system.buckets.<name>' -> '<name>', as mongorestore trims them), else the name itself."""
    return collection.removeprefix(TIMESERIES_BUCKETS)


@dataclass(frozen=True)
class StoredRange:
    """An oplog range stored in the repository: the object written (pipeline.WrittenObject), the
    fingerprints at its end, that end (`point`), and how many entries it holds."""

    written: Any
    fingerprints: dict[str, dict[str, Fingerprint]]
    point: Timestamp
    entries: int
