"""Oplog replay without `applyOps`: decoded oplog entries applied to a server as ordinary writes
and commands, for point-in-time restores and oplog incrementals.

    report = apply_entries(client, until(entries, until_ts=T), rename={"app.*": "app_copy.*"},
                           namespaces=["app.*"])

What each entry becomes (docs/mongodb-oplog-replay.md has the whole table):

- `i` insert: `replace_one({_id}, o, upsert=True)`: replaying an insert twice leaves one copy (the
  idempotency `mongorestore --oplogReplay` relies on); into a timeseries collection (SecantusDB's),
  a plain insert or a whole-document upsert (replay_timeseries.py);
- `u` update: replacement, `$set`/`$unset`, or an update pipeline (replay_updates.py), matched
  on `o2._id`, without upsert except for replacements;
- `d` delete: `delete_one({_id})`; `n`: nothing;
- `c` commands: replay_commands.py; `applyOps` and transactions: grouped by replay_units.py.

Consecutive writes to one collection go to the server in ordered `bulk_write`s of up to
BATCH_OPS operations (the order of the oplog is kept; one round trip per batch), with document
validation bypassed (each write passed validation when it was made; a validator added later
must not refuse it now).

Transactions are applied in one client-session transaction when the server supports them (a
replica set member or mongos, as every server with an oplog is) and the transaction holds only
document writes; otherwise (a standalone target, or DDL inside the transaction) in order,
without one. Either way the result equals the source's once the replay ends; the session only
keeps a reader of the target from seeing half a transaction while the replay runs.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import bson
from bson import Timestamp
from pymongo import DeleteOne, MongoClient, ReplaceOne, UpdateOne
from pymongo.client_session import ClientSession
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from vaultflow.engines.mongodb.consistency import ts_text
from vaultflow.engines.mongodb.replay_commands import APPLIED, FILTERED, run_command, write_view
from vaultflow.engines.mongodb.replay_timeseries import TimeseriesTargets, insert_measurement
from vaultflow.engines.mongodb.replay_units import (
    Entry,
    NamespaceMap,
    Namespaces,
    ReplayError,
    Unit,
    entry_sort_key,
    split_ns,
    units,
    until,
)
from vaultflow.engines.mongodb.replay_updates import UntranslatableUpdate, dotted_name_conflict, translate_update
from vaultflow.summary import human_duration

__all__ = ["ReplayReport", "ReplayError", "apply_entries", "entry_sort_key", "until", "units"]

BATCH_OPS = 1000  # operations per bulk_write
INTERNAL_DATABASES = ("local", "config")  # server bookkeeping (sessions, transactions table)
OP_NAMES = {"i": "insert", "u": "update", "d": "delete", "c": "command", "n": "noop"}
VIEW_WRITES = {"i": "create view", "u": "change view", "d": "drop view"}  # <db>.system.views (mongod)
SKIPPED_OPS = {"cd", "ci", "cu", "km"}  # replicated record id bookkeeping (mongod 8): not data


@dataclass
class ReplayReport:
    """What a replay did. `entries`: oplog entries read; `ops`: operations applied by kind
    (insert, update, delete, command, noop; an applyOps counts its inner operations); `commands`:
    by command name; `transactions`: applied as units, `transactions_dropped`: aborted or not
    committed within the entries; `skipped_filtered`: operations outside `namespaces`;
    `skipped_internal`: operations without effect on user data (local/config databases, index
    build markers); `first_ts`/`last_ts`: first and last applied; `last_read`: the newest entry
    read, applied or not (how far the replay reached); `seconds`: wall time."""

    entries: int = 0
    ops: Counter[str] = field(default_factory=Counter)
    commands: Counter[str] = field(default_factory=Counter)
    transactions: int = 0
    transactions_dropped: int = 0
    skipped_filtered: int = 0
    skipped_internal: int = 0
    first_ts: Timestamp | None = None
    last_ts: Timestamp | None = None
    last_read: Timestamp | None = None
    seconds: float = 0.0

    @property
    def entries_per_second(self) -> float:
        return self.entries / self.seconds if self.seconds > 0 else 0.0

    def applied(self, ts: Timestamp) -> None:
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts

    def summary(self) -> str:
        ops = ", ".join(f"{count} {name}" for name, count in sorted(self.ops.items())) or "nothing"
        span = f" ({ts_text(self.first_ts)} .. {ts_text(self.last_ts)})" if self.first_ts and self.last_ts else ""
        return (
            f"replayed {self.entries} oplog entries{span}: {ops}; {self.skipped_filtered} outside the namespaces, "
            f"{self.skipped_internal} internal; {human_duration(self.seconds)}, {self.entries_per_second:.0f} entries/s"
        )


def apply_entries(
    client: MongoClient,
    entries: Iterable[Entry],
    *,
    rename: Mapping[str, str] | None = None,
    namespaces: Sequence[str] | None = None,
    names: NamespaceMap | None = None,
    settled: Timestamp | None = None,
) -> ReplayReport:
    """Apply decoded oplog `entries` (in ts order) to the server `client` talks to. `rename`:
    {source pattern: target pattern} with one '*' each ({"app.*": "app_copy.*"}); `namespaces`:
    glob patterns of source namespaces to apply (all when None); or, instead of both, `names`:
    any NamespaceMap (a restore's planned landing, replay_landing.ReplayNames). `settled`: the
    point the target's data stands at, none of the entries after it applied yet (None: any
    entry may already be; it decides how inserts into timeseries collections are written,
    replay_timeseries.py). Returns a ReplayReport.

    Raises ReplayError (UnknownCommandError for an unknown command) naming the entry's ts and
    namespace when an entry cannot be applied exactly or the server refuses it; the writes before
    it stay applied. ConfigError for malformed rename patterns. Driver errors that are not about
    one entry (connection lost) propagate as pymongo raises them."""
    if names is None:
        names = Namespaces(dict(rename or {}), list(namespaces) if namespaces is not None else None)
    elif rename or namespaces is not None:
        raise ValueError("apply_entries takes rename and namespaces, or names, not both")
    report = ReplayReport()
    replayer = Replayer(client, names, report, settled)
    started = time.monotonic()
    try:
        for unit in units(_counted(entries, report)):
            replayer.apply_unit(unit)
        replayer.flush()
    finally:
        report.seconds = time.monotonic() - started
    return report


def _counted(entries: Iterable[Entry], report: ReplayReport) -> Iterator[Entry]:
    for entry in entries:
        report.entries += 1
        report.last_read = entry.get("ts", report.last_read)
        yield entry


@dataclass
class _Write:
    """One queued write and what an error about it must say."""

    model: Any
    ts: Timestamp
    ns: str
    doc_id: Any
    dotted_paths: list[list[str]] = field(default_factory=list)


class Replayer:
    """Applies units (replay_units.Unit) to one server; queues document writes per collection."""

    def __init__(
        self, client: MongoClient, names: NamespaceMap, report: ReplayReport, settled: Timestamp | None = None
    ):
        self.client = client
        self.names = names
        self.report = report
        self.settled = settled
        self.timeseries = TimeseriesTargets(client)
        self.queue: list[_Write] = []
        self.queue_target: tuple[str, str] | None = None
        self._transactions: bool | None = None

    @property
    def transactions_supported(self) -> bool:
        """Whether the target runs multi-document transactions (replica set member or mongos)."""
        if self._transactions is None:
            hello = self.client.admin.command("hello")
            cluster = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
            self._transactions = cluster and "logicalSessionTimeoutMinutes" in hello
        return self._transactions

    def apply_unit(self, unit: Unit) -> None:
        if unit.dropped:
            self.report.transactions_dropped += 1
            return
        if unit.transaction:
            self.report.transactions += 1
            writes_only = all(op.get("op") in ("i", "u", "d") and not _is_view_ns(op.get("ns", "")) for op in unit.ops)
            if writes_only and len(unit.ops) > 1 and self.transactions_supported:
                self.flush()
                with self.client.start_session() as session, session.start_transaction():
                    for op in unit.ops:
                        self.apply_op(op, session)
                    self.flush(session)
                return
        for op in unit.ops:
            self.apply_op(op)

    def apply_op(self, op: Mapping[str, Any], session: ClientSession | None = None) -> None:
        kind, ns, ts = op.get("op"), op.get("ns", ""), op.get("ts")
        if kind == "n":
            self.report.ops["noop"] += 1
            return
        if kind in SKIPPED_OPS or split_ns(ns)[0] in INTERNAL_DATABASES:
            self.report.skipped_internal += 1
            return
        if kind == "c" or _is_view_ns(ns):
            self.flush(session)
            self.timeseries.forget()  # the command may have made, dropped or renamed one
            status = (
                run_command(self.client, self.names, op, session)
                if kind == "c"
                else write_view(self.client, self.names, op, session)
            )
            self._count_command(op, status)
            return
        if kind not in ("i", "u", "d"):
            raise ReplayError(f"unknown oplog operation {kind!r}", ts, ns)
        if not self.names.included(ns):
            self.report.skipped_filtered += 1
            return
        database, collection = split_ns(ns)
        if (database == "admin" and collection.startswith("system.")) or collection.startswith("system.buckets."):
            raise ReplayError(
                "users, roles and time-series buckets are not replayed: leave this namespace out (namespaces=...)",
                ts,
                ns,
            )
        target = split_ns(self.names.target(ns))
        if target != self.queue_target or len(self.queue) >= BATCH_OPS:
            self.flush(session)
            self.queue_target = target
        self.queue.extend(self._writes(op, target))
        self.report.ops[OP_NAMES[kind]] += 1
        self.report.applied(ts)

    def _count_command(self, op: Mapping[str, Any], status: str) -> None:
        if status == APPLIED:
            name = next(iter(op["o"])) if op.get("op") == "c" else VIEW_WRITES[op["op"]]
            self.report.commands[name] += 1
            self.report.ops["command" if op.get("op") == "c" else OP_NAMES[op["op"]]] += 1
            self.report.applied(op["ts"])
        elif status == FILTERED:
            self.report.skipped_filtered += 1
        else:
            self.report.skipped_internal += 1

    def _writes(self, op: Mapping[str, Any], target: tuple[str, str]) -> list[_Write]:
        kind, o, ts, ns = op["op"], op.get("o"), op["ts"], op["ns"]
        try:
            if kind == "i" and target in self.timeseries:
                return [_Write(insert_measurement(o, ts, self.settled), ts, ns, o["_id"])]
            if kind in ("i", "d"):
                doc_id = o["_id"]
                model = ReplaceOne({"_id": doc_id}, o, upsert=True) if kind == "i" else DeleteOne({"_id": doc_id})
                return [_Write(model, ts, ns, doc_id)]
            doc_id = op["o2"]["_id"]
            translation = translate_update(o)
        except UntranslatableUpdate as exc:
            raise ReplayError(f"update cannot be applied exactly: {exc}", ts, ns) from exc
        except (KeyError, TypeError) as exc:
            raise ReplayError(f"{OP_NAMES[kind]} entry without an _id: {dict(op)!r}", ts, ns) from exc
        if translation.replacement is not None:
            return [_Write(ReplaceOne({"_id": doc_id}, translation.replacement, upsert=True), ts, ns, doc_id)]
        if translation.guard is not None and translation.fallback is not None:
            guard = translation.guard
            return [
                _Write(UpdateOne({"_id": doc_id, "$expr": guard}, translation.updates[0]), ts, ns, doc_id),
                _Write(UpdateOne({"_id": doc_id, "$expr": {"$not": [guard]}}, translation.fallback), ts, ns, doc_id),
            ]
        writes = [_Write(UpdateOne({"_id": doc_id}, update), ts, ns, doc_id) for update in translation.updates]
        writes[-1].dotted_paths = translation.dotted_paths
        return writes

    def flush(self, session: ClientSession | None = None) -> None:
        """Send the queued writes (one ordered bulk_write, resumed after a fallback)."""
        queue, target = self.queue, self.queue_target
        self.queue, self.queue_target = [], None
        if not queue or target is None:
            return
        collection = self.client[target[0]][target[1]]
        try:
            collection.bulk_write(
                [write.model for write in queue], ordered=True, bypass_document_validation=True, session=session
            )
        except BulkWriteError as exc:
            error = exc.details["writeErrors"][0]
            failed = queue[error["index"]]
            message = error.get("errmsg", str(exc))
            raise ReplayError(
                f"the server refused the write: {message} (code {error.get('code')})", failed.ts, failed.ns
            ) from exc
        _check_dotted_names(collection, queue, session)


def _is_view_ns(ns: str) -> bool:
    return split_ns(ns)[1] == "system.views"


def _check_dotted_names(collection: Collection, writes: list[_Write], session: ClientSession | None) -> None:
    """Raise ReplayError when a document written through a SecantusDB dotted path holds a field
    whose name joins parts of that path (the path was ambiguous: see replay_updates)."""
    checked = [write for write in writes if write.dotted_paths]
    if not checked:
        return
    ids = {bson.encode({"_id": write.doc_id}): write.doc_id for write in checked}
    docs = {
        bson.encode({"_id": doc["_id"]}): doc
        for doc in collection.find({"_id": {"$in": list(ids.values())}}, session=session)
    }
    for write in checked:
        doc = docs.get(bson.encode({"_id": write.doc_id}))
        for segments in write.dotted_paths if doc is not None else []:
            name = dotted_name_conflict(doc, segments)
            if name is not None:
                raise ReplayError(
                    f"update path {'.'.join(segments)!r} of document _id {write.doc_id!r} is ambiguous: the "
                    f"document has a field named {name!r}, and SecantusDB's diff does not say which was meant",
                    write.ts,
                    write.ns,
                )
