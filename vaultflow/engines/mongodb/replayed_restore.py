"""Restores that replay the oplog (a chain of incrementals, or a point in time): the full's
archives restored, then the oplog replayed over them in one pass for every target database the
pass writes, each collection landing where replay_landing.py planned it; then each collection is
compared with its source collection's fingerprint in the expected backup.

    landing = plan_replay(point, plan, sources, rules, default_target, namespaces, scan)
    replayed = restore_replayed(client, ctx, point, landing, [(target, into), ...], namespaces, notes)
    replayed.rows      target database -> comparison rows (none for a point between backups)
    replayed.landed    source namespace -> 'db.collection' it landed in (collections and views)
    replayed.last_read the newest oplog entry read: how far the restore reached
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from bson import Timestamp
from pymongo import MongoClient

from vaultflow.compare import TableComparison, compare_database
from vaultflow.engines.mongodb.names import RenameRules, split_ns
from vaultflow.engines.mongodb.oplog_scan import OplogScan
from vaultflow.engines.mongodb.pitr import RestorePoint
from vaultflow.engines.mongodb.replay import apply_entries
from vaultflow.engines.mongodb.replay_landing import Landing, ReplayNames, plan_landing
from vaultflow.engines.mongodb.restore import read_fingerprints, restore_archive, restored_collections
from vaultflow.engines.mongodb.restore_plan import Part, RestorePlan, TargetDatabase
from vaultflow.engines.mongodb.settings import SYSTEM_DATABASES
from vaultflow.engines.mongodb.users import AUTH_NAMESPACES
from vaultflow.manifest import Fingerprint, Manifest, StoredObject


def add_scanned_databases(sources: dict[str, StoredObject | None], scan: OplogScan, wanted: Sequence[str]) -> None:
    """Add to `sources` (database -> its archive, None: none) the databases the oplog names that
    the full does not hold (made after it), only `wanted` ones when given; never admin, local,
    config. For a point between backups, where no backup lists the databases that exist there."""
    for database in scan.databases():
        if database not in sources and database not in SYSTEM_DATABASES and (not wanted or database in wanted):
            sources[database] = None


def plan_replay(
    point: RestorePoint,
    plan: RestorePlan,
    sources: dict[str, StoredObject | None],
    rules: RenameRules,
    default_target: Callable[[str], str],
    namespaces: list[str] | None,
    scan: OplogScan,
) -> Landing:
    """The landing of a replaying restore of `sources` (replay_landing.plan_landing: ConfigError
    for what cannot land), and `plan` completed with the target databases only the replay
    fills. With rules, `plan.restored` is emptied: restore_replayed reports what landed."""
    expected: Iterable[str] = ()
    if point.expected is not None:
        expected = [
            f"{database}.{name}"
            for database in sources
            for name in point.expected.fingerprints.get(database, {})
            if name not in AUTH_NAMESPACES
        ]
    landing = plan_landing(
        rules,
        default_target,
        list(sources),
        namespaces,
        scan,
        planned=plan.restored if plan.renamed else None,
        expected=expected,
    )
    if not plan.renamed:
        add_replay_only(plan, sources, default_target)
        return landing
    held = {target.name for target in plan.targets}
    plan.targets += [TargetDatabase(name) for name in landing.targets() if name not in held]
    plan.restored.clear()
    return landing


def add_replay_only(plan: RestorePlan, sources: dict[str, StoredObject | None], name: Callable[[str], str]) -> None:
    """Add to `plan` (without rules) a target for each database of `sources` without an archive
    (made after the full: only the oplog replay fills it), named `name(database)`."""
    for database, obj in sources.items():
        if obj is None:
            target = TargetDatabase(name(database), [Part(None, database=database)])
            plan.targets.append(target)
            plan.restored[database] = target.name


@dataclass
class Replayed:
    """What one pass of a replaying restore made: comparison rows per target database (none
    when the point lies between backups: no fingerprints exist for it) and where each source
    namespace landed (source -> 'target db.collection', collections and views present);
    `last_read`: the newest oplog entry the replay read (None: it read none)."""

    rows: dict[str, list[TableComparison]] = field(default_factory=dict)
    landed: dict[str, str] = field(default_factory=dict)
    last_read: Timestamp | None = None


def restore_replayed(
    client: MongoClient,
    ctx,
    point: RestorePoint,
    landing: Landing,
    targets: Sequence[tuple[TargetDatabase, str]],
    namespaces: list[str] | None,
    notes: list[str],
) -> Replayed:
    """Restore each (target, into) pair: the target's archive parts into database `into`, then
    the point's oplog replayed once for all of them (namespaces landing in other target databases
    are left alone); the replay's summary goes to `notes`. Compare every collection of each
    `into` with the expected backup's fingerprints under its source name. Indexes and options are
    not compared (the archives' are the full's, not the point's). ReplayError naming the entry
    that cannot be applied; IntegrityError naming an object or slice whose checksums fail."""
    for target, into in targets:
        for part in target.parts:
            if part.obj is not None:
                restore_archive(
                    client, ctx, point.base, part.obj, into, namespaces, renamed=part.names, view_on=part.view_on
                )
    names = ReplayNames(landing, {target.name: into for target, into in targets})
    report = apply_entries(client, point.decoded(), names=names, settled=point.settled)
    written = ", ".join(name if name == into else f"{name} (copy {into})" for name, into in names.into.items())
    ctx.log(f"oplog into {written}: {report.summary()}")
    notes.append(f"{written}: {report.summary()}")
    replayed = Replayed(last_read=report.last_read)
    for target, into in targets:
        for name in client[into].list_collection_names():
            source = None if name.startswith("system.") else landing.source_of(target.name, name)
            if source is not None:
                replayed.landed[source] = f"{target.name}.{name}"
        replayed.rows[target.name] = (
            [] if point.expected is None else compare_landed(client, landing, point.expected, target.name, into)
        )
    return replayed


def compare_landed(
    client: MongoClient, landing: Landing, expected: Manifest, target: str, into: str
) -> list[TableComparison]:
    """Each collection of database `into` (target database `target`'s copy) against the
    fingerprint of its source collection in `expected`, rows named by the source database and
    collection: one expected there and absent is 'missing', one no restored source explains is
    'unexpected' (named by `target`)."""
    wanted: dict[str, dict[str, Fingerprint]] = {}
    for database in landing.databases:
        for name, prints in expected.fingerprints.get(database, {}).items():
            ns = f"{database}.{name}"
            if name not in AUTH_NAMESPACES and landing.selected(ns) and landing.land(ns)[0] == target:
                wanted.setdefault(database, {})[name] = prints
    actual: dict[str, dict[str, Fingerprint]] = {}
    for name, prints in read_fingerprints(client, into, restored_collections(client, into)).items():
        source = landing.source_of(target, name)
        database, collection = split_ns(source) if source is not None else (target, name)
        actual.setdefault(database, {})[collection] = prints
    rows: list[TableComparison] = []
    for database in dict.fromkeys([*landing.databases, *actual]):
        if database in wanted or database in actual:
            rows += compare_database(database, wanted.get(database, {}), actual.get(database, {}))
    return rows
