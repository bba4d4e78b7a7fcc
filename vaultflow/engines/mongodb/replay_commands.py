"""Oplog command entries (`op: "c"`, ns `<db>.$cmd`) and view definitions, run as the commands
that made them, renamed and filtered like the documents.

| entry `o` (mongod / SecantusDB) | run |
|---|---|
| `{create, ...options}` (`idIndex` dropped; SecantusDB views: `viewOn`, `viewPipeline`) | `create` (exists already: left as is) |
| `{drop}` | `drop` (absent: nothing) |
| mongod `{createIndexes: c, v, key, name, ...}` (one index); SecantusDB `{createIndexes, indexes: [spec + entryFormat]}`; mongod 4.4+ `{commitIndexBuild, indexes}` | `createIndexes` |
| `{dropIndexes | deleteIndexes | dropIndex | deleteIndex: c, index}` | `dropIndexes` (absent: nothing) |
| `{renameCollection: "db.a", to: "db.b", dropTarget}` | `renameCollection` (dropTarget true when it is a UUID) |
| `{dropDatabase: 1}` | the names' `drop_database`: the renamed database dropped (only the filtered collections when `namespaces` is given); in a restore, every collection of that source database wherever it landed |
| `{collMod, ...}` (validator, validationLevel/Action, index TTL/hidden, viewOn/pipeline, ...) | `collMod` with the same options |
| `{convertToCapped, size}`, `{emptycapped}` | the same / delete every document |
| `startIndexBuild`, `abortIndexBuild`, `setMultikeyMetadata`, `dbCheck` | nothing (mongo-tools skips them too) |

mongod writes views as documents of `<db>.system.views` (`{_id: "db.view", viewOn, pipeline,
collation?}`), inserted, updated and deleted by ordinary `i`/`u`/`d` entries: these become
`create`/`collMod`/`drop` of the view. A view's `viewOn` is renamed with the database; a
`$lookup` inside its pipeline is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo import MongoClient
from pymongo.client_session import ClientSession
from pymongo.errors import OperationFailure

from vaultflow.engines.mongodb.replay_delta import DocDiff, UntranslatableUpdate, parse_diff
from vaultflow.engines.mongodb.replay_units import NamespaceMap, ReplayError, UnknownCommandError, split_ns

SKIPPED_COMMANDS = {"startIndexBuild", "abortIndexBuild", "setMultikeyMetadata", "dbCheck"}
DROPPED_OPTIONS = {"idIndex", "recordIdsReplicated", "noPadding", "usePowerOf2Sizes"}  # server-internal
VIEW_OPTIONS = ("viewOn", "pipeline", "collation")
INDEX_DROP_COMMANDS = {"dropIndexes", "deleteIndexes", "dropIndex", "deleteIndex"}
NAMESPACE_EXISTS, NAMESPACE_NOT_FOUND, INDEX_NOT_FOUND = 48, 26, 27
APPLIED, FILTERED, SKIPPED = "applied", "filtered", "skipped"


def run_command(client: MongoClient, names: NamespaceMap, op: Mapping[str, Any], session: ClientSession | None) -> str:
    """Run command entry `op`; returns APPLIED, FILTERED (outside `names`) or SKIPPED (no effect
    on data). Raises UnknownCommandError for a command not in the table above, ReplayError when the
    server refuses one."""
    o, ns, ts = op.get("o"), op.get("ns", ""), op.get("ts")
    if not isinstance(o, Mapping) or not o:
        raise ReplayError(f"command entry without a command: {o!r}", ts, ns)
    name = next(iter(o))
    if name in SKIPPED_COMMANDS:
        return SKIPPED
    handler = HANDLERS.get(name)
    if handler is None:
        raise UnknownCommandError(
            f"unknown command {name!r} ({dict(o)!r}): not applied, and the replay stops here", ts, ns
        )
    database = split_ns(ns)[0]
    try:
        return handler(client, names, database, o, session)
    except OperationFailure as exc:
        detail = str(exc).split(", full error:")[0]
        raise ReplayError(f"command {name} failed: {detail} (code {exc.code})", ts, ns) from exc
    except (UntranslatableUpdate, KeyError, TypeError) as exc:
        raise ReplayError(f"command {name} cannot be applied: {exc!r}", ts, ns) from exc


def _collection(names: NamespaceMap, database: str, collection: Any) -> tuple[str, str] | None:
    source = f"{database}.{collection}"
    return split_ns(names.target(source)) if names.included(source) else None


def _create(client, names, database, o, session) -> str:
    target = _collection(names, database, o["create"])
    if target is None:
        return FILTERED
    options = {k: v for k, v in o.items() if k != "create" and k not in DROPPED_OPTIONS}
    if "viewPipeline" in options:  # SecantusDB's name for a view's pipeline
        options["pipeline"] = options.pop("viewPipeline")
    if "viewOn" in options:
        options["viewOn"] = view_source(names, database, options["viewOn"], target[0])
    return _create_as(client, target, options, session)


def _create_as(client, target: tuple[str, str], options: dict[str, Any], session) -> str:
    try:
        client[target[0]].command({"create": target[1], **options}, session=session)
    except OperationFailure as exc:
        if exc.code != NAMESPACE_EXISTS:  # replayed twice: it is there already
            raise
    return APPLIED


def view_source(names: NamespaceMap, database: str, view_on: str, target_database: str) -> str:
    """The renamed collection a view reads; it must land in the view's own database."""
    landed_db, landed = split_ns(names.target(f"{database}.{view_on}"))
    if landed_db != target_database:
        raise UntranslatableUpdate(
            f"the view reads {database}.{view_on}, renamed into database {landed_db}, not the view's {target_database}"
        )
    return landed


def _drop(client, names, database, o, session) -> str:
    target = _collection(names, database, o["drop"])
    if target is None:
        return FILTERED
    client[target[0]].drop_collection(target[1], session=session)
    return APPLIED


def index_specs(o: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Index specs of a createIndexes/commitIndexBuild entry, in both servers' shapes, without the
    entry-only fields (`entryFormat`, `ns`)."""
    specs = o["indexes"] if "indexes" in o else [{k: v for k, v in o.items() if k != "createIndexes"}]
    return [{k: v for k, v in spec.items() if k not in ("entryFormat", "ns")} for spec in specs]


def _create_indexes(client, names, database, o, session) -> str:
    target = _collection(names, database, next(iter(o.values())))
    if target is None:
        return FILTERED
    client[target[0]].command({"createIndexes": target[1], "indexes": index_specs(o)}, session=session)
    return APPLIED


def _drop_indexes(client, names, database, o, session) -> str:
    target = _collection(names, database, next(iter(o.values())))
    if target is None:
        return FILTERED
    try:
        client[target[0]].command({"dropIndexes": target[1], "index": o["index"]}, session=session)
    except OperationFailure as exc:
        if exc.code not in (NAMESPACE_NOT_FOUND, INDEX_NOT_FOUND):
            raise
    return APPLIED


def _coll_mod(client, names, database, o, session) -> str:
    target = _collection(names, database, o["collMod"])
    if target is None:
        return FILTERED
    options = {k: v for k, v in o.items() if k != "collMod" and k not in DROPPED_OPTIONS}
    if "viewOn" in options:
        options["viewOn"] = view_source(names, database, options["viewOn"], target[0])
    if options:
        client[target[0]].command({"collMod": target[1], **options}, session=session)
    return APPLIED


def _rename(client, names, database, o, session) -> str:
    source, to = o["renameCollection"], o["to"]
    keep_source, keep_to = names.included(source), names.included(to)
    if not keep_source and not keep_to:
        return FILTERED
    if not keep_to:  # the collection leaves the replayed namespaces: gone from the copy
        db, coll = split_ns(names.target(source))
        client[db].drop_collection(coll, session=session)
        return APPLIED
    if not keep_source:
        raise UntranslatableUpdate(
            f"{to} is renamed from {source}, which is outside the replayed namespaces: its documents are unknown"
        )
    command = {"renameCollection": names.target(source), "to": names.target(to)}
    if o.get("dropTarget"):  # mongod and SecantusDB write the dropped target's UUID here
        command["dropTarget"] = True
    client.admin.command(command, session=session)
    return APPLIED


def _drop_database(client, names, database, o, session) -> str:
    return APPLIED if names.drop_database(client, database, session) else FILTERED


def _convert_to_capped(client, names, database, o, session) -> str:
    target = _collection(names, database, o["convertToCapped"])
    if target is None:
        return FILTERED
    client[target[0]].command({"convertToCapped": target[1], "size": o["size"]}, session=session)
    return APPLIED


def _empty_capped(client, names, database, o, session) -> str:
    target = _collection(names, database, o["emptycapped"])
    if target is None:
        return FILTERED
    client[target[0]][target[1]].delete_many({}, session=session)
    return APPLIED


HANDLERS = {
    "create": _create,
    "drop": _drop,
    "createIndexes": _create_indexes,
    "commitIndexBuild": _create_indexes,
    **{name: _drop_indexes for name in INDEX_DROP_COMMANDS},
    "collMod": _coll_mod,
    "renameCollection": _rename,
    "dropDatabase": _drop_database,
    "convertToCapped": _convert_to_capped,
    "emptycapped": _empty_capped,
}


def write_view(client: MongoClient, names: NamespaceMap, op: Mapping[str, Any], session: ClientSession | None) -> str:
    """A mongod `i`/`u`/`d` entry on `<db>.system.views` as create/collMod/drop of the view.
    An update is taken as a replacement or as a diff of whole top-level fields (viewOn, pipeline,
    collation); anything finer raises ReplayError."""
    kind, ts, ns = op.get("op"), op.get("ts"), op.get("ns")
    view_id = (op.get("o2") if kind == "u" else op.get("o")) or {}
    view_name = view_id.get("_id") if isinstance(view_id, Mapping) else None
    if not isinstance(view_name, str) or "." not in view_name:
        raise ReplayError(f"system.views entry without a view name: {dict(op)!r}", ts, ns)
    database, view = split_ns(view_name)
    target = _collection(names, database, view)
    if target is None:
        return FILTERED
    try:
        if kind == "d":
            client[target[0]].drop_collection(target[1], session=session)
            return APPLIED
        definition = view_definition(op["o"]) if kind == "u" else dict(op["o"])
        options = {k: v for k, v in definition.items() if k in VIEW_OPTIONS}
        if "viewOn" in options:
            options["viewOn"] = view_source(names, database, options["viewOn"], target[0])
        if kind == "u":  # drop and create again: SecantusDB ignores collMod of a view; views hold no data
            current = client[target[0]].list_collections(filter={"name": target[1]}, session=session)
            existing = next(iter(current), {}).get("options", {})
            options = {**{k: v for k, v in existing.items() if k in VIEW_OPTIONS}, **options}
            client[target[0]].drop_collection(target[1], session=session)
        return _create_as(client, target, options, session)
    except OperationFailure as exc:
        raise ReplayError(f"view {view_name} could not be written: {exc} (code {exc.code})", ts, ns) from exc
    except UntranslatableUpdate as exc:
        raise ReplayError(f"view {view_name}: {exc}", ts, ns) from exc


def view_definition(o: Mapping[str, Any]) -> dict[str, Any]:
    """The fields a `system.views` update entry `o` sets (a replacement, a `$set` of whole
    fields, or a diff of top-level fields); UntranslatableUpdate for anything finer."""
    if not any(str(k).startswith("$") for k in o) and "diff" not in o:
        return dict(o)
    if set(o) <= {"$v", "$set"} and "$set" in o and all("." not in k for k in o["$set"]):
        return dict(o["$set"])
    diff = parse_diff(o.get("diff") or {})
    if isinstance(diff, DocDiff) and not (diff.deletes or diff.subs):
        return {**diff.updates, **diff.inserts}
    raise UntranslatableUpdate(f"a change of a view definition this replayer cannot read: {dict(o)!r}")
