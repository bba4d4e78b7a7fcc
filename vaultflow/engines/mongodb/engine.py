"""MongoDB: full backups as one mongodump archive per database, every document read at one cluster
time (dump.py); restores into new databases, compared by count and digest per collection and by
indexes and options per database (restore.py).

A backup in steps (vaultflow.engines.base.backup_in_steps): plan_backup connects, lists the
databases and their collections and fixes the cluster time (the newest oplog entry); dump streams
one database's archive; finish_backup writes the manifest last.
"""

from __future__ import annotations

import fnmatch
import time
from datetime import UTC, datetime

from bson import Timestamp

from vaultflow.engines.base import (
    BackupContext,
    BackupPlan,
    BackupUnit,
    RestoreResult,
    UnitResult,
    backup_in_steps,
    new_plan,
    options_for,
)
from vaultflow.engines.mongodb.client import (
    connected,
    excluded,
    newest_oplog_ts,
    server_facts,
    user_databases,
)
from vaultflow.engines.mongodb.consistency import (
    MongoDumpConsistency,
    MongoOplogConsistency,
    consistency_point,
    format_ts,
    parse_ts,
    ts_text,
)
from vaultflow.engines.mongodb.dump import (
    ArchiveChunks,
    DatabaseDump,
    changes_since,
    database_archive,
    list_collection_specs,
)
from vaultflow.engines.mongodb.incremental import (
    OPLOG_FORMAT,
    OPLOG_KEY,
    OPLOG_ROLE,
    QUIET_ATTEMPTS,
    QUIET_WAIT_SECONDS,
    StoredRange,
    Touched,
    excluded_entry,
    expected_fingerprints,
)
from vaultflow.engines.mongodb.names import RenameRules
from vaultflow.engines.mongodb.oplog import check_reaches, oplog_archive_chunks, read_range
from vaultflow.engines.mongodb.oplog_archive import OplogArchive
from vaultflow.engines.mongodb.oplog_scan import scan_entries
from vaultflow.engines.mongodb.pitr import chain_point, point_stamp, restore_point, restore_sources
from vaultflow.engines.mongodb.replayed_restore import add_scanned_databases, plan_replay
from vaultflow.engines.mongodb.restore import (
    ARCHIVE_ROLE,
    archive_objects,
    default_restore_name,
    prepare_restore,
    scratch_name,
)
from vaultflow.engines.mongodb.restore_plan import plan_restore
from vaultflow.engines.mongodb.restore_run import RestoreRun
from vaultflow.engines.mongodb.settings import SYSTEM_DATABASES, MongoRestoreOptions, MongoSettings
from vaultflow.errors import ChainBrokenError, ConfigError, TransientError
from vaultflow.manifest import BackupKind, BackupMode, Fingerprint, Manifest
from vaultflow.pipeline import compress_into_store
from vaultflow.source import source_text

ARCHIVE_FORMAT = "mongodump-archive"


def archive_key(index: int, database: str) -> str:
    """The object key of a database's archive: numbered, so any database name makes a valid key."""
    return f"db/{index:04d}.archive.zst"


class MongoEngine:
    """The MongoDB engine (vaultflow.engines.base.Engine) for the deployment `config`
    (MongoSettings, or the MongoTarget block) names."""

    name = "mongodb"
    restore_options = MongoRestoreOptions

    def __init__(self, config: MongoSettings):
        self.config = config

    def check(self) -> str:
        with connected(self.config) as client:
            return server_facts(client)["version"]

    def source_identity(self) -> str:
        """'replica set <name>' (host:port when the server names none) and the databases listed:
        'replica set rs0, databases app' or 'replica set rs0, every database'."""
        with connected(self.config) as client:
            set_name = server_facts(client)["set_name"]
        where = f"replica set {set_name}" if set_name else f"{self.config.host}:{self.config.port}"
        return source_text(where, self.config.databases)

    # -- backup ---------------------------------------------------------------------------
    def full_backup(self, ctx: BackupContext) -> Manifest:
        return backup_in_steps(self, ctx, BackupKind.FULL)

    def incremental_backup(self, ctx: BackupContext, kind: BackupKind) -> Manifest:
        """The oplog since the latest backup (INCREMENTAL) or full (DIFFERENTIAL): ChainBrokenError
        (the flows then take a full, saying why) when there is no parent or the oplog no longer
        reaches back to its point."""
        return backup_in_steps(self, ctx, kind)

    def plan_backup(self, ctx: BackupContext, kind: BackupKind) -> BackupPlan:
        """A full: one unit per included database, in name order, all read at one cluster time (the
        newest oplog entry now). An incremental or differential: one unit, the oplog after the
        parent's cluster time up to the newest entry now. ChainBrokenError when no backup can be
        the parent, the replica set is another, a listed database is not in the chain's full, or
        the oplog rolled past the parent's point (OplogGap)."""
        if kind != BackupKind.FULL:
            return self._plan_oplog_range(ctx, kind)
        with connected(self.config) as client:
            facts = server_facts(client)
            databases = user_databases(client, self.config)
            cluster_time = newest_oplog_ts(client)
        units = [BackupUnit("database", name) for name in databases]
        return new_plan(
            self.name,
            self.config.name,
            kind,
            units,
            server_version=facts["version"],
            set_name=facts["set_name"],
            cluster_time=ts_text(cluster_time),
            index={name: i for i, name in enumerate(databases)},
        )

    def _plan_oplog_range(self, ctx: BackupContext, kind: BackupKind) -> BackupPlan:
        catalog = ctx.repository.catalog(self.name, self.config.name)
        parent = catalog.parent_for(kind, self.config.name, lambda m: consistency_point(m) is not None)
        full = catalog.chain(parent)[0]
        held = {o.database for o in archive_objects(full, None)}
        missing = [name for name in self.config.databases if name not in held]
        if missing:
            raise ChainBrokenError(
                f"database {', '.join(map(repr, missing))} of {self.config.name} is not in its full backup {full.id}"
            )
        after = parse_ts(consistency_point(parent) or "")
        with connected(self.config) as client:
            facts = server_facts(client)
            parent_set = getattr(parent.consistency, "set_name", None)
            if parent_set and facts["set_name"] and parent_set != facts["set_name"]:
                raise ChainBrokenError(
                    f"{self.config.where} is replica set {facts['set_name']!r}, but the parent backup "
                    f"{parent.id} is of {parent_set!r}: an oplog range cannot continue it"
                )
            check_reaches(client, Timestamp(*after))
            point = newest_oplog_ts(client)
        return new_plan(
            self.name,
            self.config.name,
            kind,
            [BackupUnit("oplog")],
            parent=parent,
            server_version=facts["version"],
            set_name=facts["set_name"],
            parent_ts=format_ts(*after),
            cluster_time=ts_text(point),
        )

    def _excluded(self, database: str, collection: str) -> bool:
        return excluded(self.config, database, collection)

    def dump(self, ctx: BackupContext, plan: BackupPlan, unit: BackupUnit) -> UnitResult:
        """Stream one database's archive at the plan's cluster time into the repository."""
        if unit.kind == "oplog":
            return self._dump_oplog(ctx, plan, unit)
        if unit.kind != "database":
            raise ValueError(f"MongoDB backups have no unit {unit.label!r}")
        database = unit.name
        key = archive_key(plan.facts["index"][database], database)
        prefix = ctx.repository.backup_prefix(self.name, self.config.name, plan.backup_id)
        seconds, increment = parse_ts(plan.facts["cluster_time"])
        started = time.monotonic()
        result = DatabaseDump(database)
        with connected(self.config) as client:
            # Collections made after the plan are listed too; at the cluster time they hold nothing.
            specs = list_collection_specs(client, database, self._excluded)
            chunks = database_archive(
                client, database, specs, Timestamp(seconds, increment), plan.facts["server_version"], result
            )
            progress = (lambda done: ctx.progress(key, done, None)) if ctx.progress else None
            written = compress_into_store(
                ArchiveChunks(chunks),
                ctx.repository.store,
                prefix + key,
                level=ctx.repository.compression_level,
                progress=progress,
            )
        return UnitResult(
            unit,
            objects=(written.as_object(key, ARCHIVE_ROLE, ARCHIVE_FORMAT, database=database),),
            fingerprints={database: result.fingerprints},
            facts={"views": result.views, "snapshot": result.snapshot},
            timings={f"dump {database}": time.monotonic() - started},
        )

    def _dump_oplog(self, ctx: BackupContext, plan: BackupPlan, unit: BackupUnit) -> UnitResult:
        """An incremental's or differential's one unit: the oplog range (parent point, plan point]
        and the fingerprints at its end (_store_oplog_range)."""
        assert plan.parent is not None
        started = time.monotonic()
        key = ctx.repository.backup_prefix(self.name, self.config.name, plan.backup_id) + OPLOG_KEY
        with connected(self.config) as client:
            stored = self._store_oplog_range(
                ctx,
                client,
                key,
                Timestamp(*parse_ts(plan.facts["parent_ts"])),
                Timestamp(*parse_ts(plan.facts["cluster_time"])),
                plan.parent.fingerprints,
                plan.facts["server_version"],
            )
        return UnitResult(
            unit,
            objects=(stored.written.as_object(OPLOG_KEY, OPLOG_ROLE, OPLOG_FORMAT),),
            fingerprints=stored.fingerprints,
            facts={"cluster_time": ts_text(stored.point), "entries": stored.entries},
            timings={"oplog": time.monotonic() - started},
        )

    def _store_oplog_range(
        self,
        ctx: BackupContext,
        client,
        key: str,
        after: Timestamp,
        point: Timestamp,
        before: dict[str, dict[str, Fingerprint]],
        server_version: str,
    ) -> StoredRange:
        """Stream the oplog entries of the included databases with after < ts <= point into object
        `key` (an oplog-only mongodump archive), then take the fingerprints at `point`: `before`
        (valid at `after`), with the collections the range touched read again
        (incremental.expected_fingerprints). A server that ignored the snapshot read and was
        written meanwhile: the range is read again up to a newer point (QUIET_ATTEMPTS times, after
        waits of 0.5, 1, 2, 4 s: a burst of writes may pass), then TransientError (nothing recorded). OplogGap when the oplog no longer reaches `after`."""
        selection = self.config.databases or None
        included = set(user_databases(client, self.config))

        def collections_of(database: str) -> list[str]:
            if database not in included and (self.config.databases or database in SYSTEM_DATABASES):
                return []
            specs = list_collection_specs(client, database, self._excluded)
            return [spec.name for spec in specs if spec.has_documents]

        for attempt in range(QUIET_ATTEMPTS):
            if attempt:
                time.sleep(QUIET_WAIT_SECONDS * 2 ** (attempt - 1))  # a burst of writes may pass
            touched = Touched()
            entries = (
                raw for raw in read_range(client, after, point, selection) if not excluded_entry(raw, self._excluded)
            )
            chunks = oplog_archive_chunks(touched.passing(entries), server_version)
            written = compress_into_store(
                ArchiveChunks(chunks), ctx.repository.store, key, level=ctx.repository.compression_level
            )
            prints, exact = expected_fingerprints(client, before, touched, point, collections_of)
            if exact:
                return StoredRange(written, prints, point, touched.entries)
            newest = newest_oplog_ts(client)
            changed = sorted(db for db in touched.database_names() if changes_since(client, db, point, newest))
            if not changed:
                return StoredRange(written, prints, point, touched.entries)
            ctx.log(
                f"{', '.join(changed)} changed while their fingerprints at {ts_text(point)} were read (the server "
                f"keeps no snapshot history): reading the oplog again, up to {ts_text(newest)}"
            )
            point = newest
        raise TransientError(
            f"{self.config.where} was written to every time the collections the oplog after {ts_text(after)} "
            "changes were read, and the server does not read at a past cluster time (snapshot reads at "
            "atClusterTime): their state at one point could not be read, so nothing was recorded; retry when "
            "it is quieter"
        )

    def finish_backup(self, ctx: BackupContext, plan: BackupPlan, results: list[UnitResult]) -> Manifest:
        """Build and commit the manifest (every object checked for presence and size first). A
        full's consistency point is the plan's cluster time when every database was read there
        (snapshot reads), or when the oplog shows none of them changed while they were read
        ('unchanged'); otherwise ('oplog', mongodump --oplog semantics) the oplog from the plan's
        cluster time to now is stored with it (`oplog.archive.zst`), replayed on restore, and the
        point is its end. An oplog range's point is where its dump ended up (_dump_oplog)."""
        timings: dict[str, float] = {}
        for result in results:
            timings.update(result.timings)
        objects = [o for r in results for o in r.objects]
        fingerprints = {db: prints for r in results for db, prints in r.fingerprints.items()}
        consistency: MongoDumpConsistency | MongoOplogConsistency
        if plan.kind == BackupKind.FULL:
            consistency = self._full_consistency(ctx, plan, results, objects, fingerprints)
        else:
            (facts,) = (r.facts for r in results)
            consistency = MongoOplogConsistency(
                parent_ts=plan.facts["parent_ts"],
                end_ts=facts["cluster_time"],
                cluster_time=facts["cluster_time"],
                oplog_entries=facts["entries"],
                set_name=plan.facts["set_name"],
            )
        manifest = Manifest(
            id=plan.backup_id,
            engine=self.name,
            target=self.config.name,
            source=plan.source,
            kind=plan.kind,
            mode=BackupMode.LOGICAL,
            started_at=plan.started_at,
            finished_at=datetime.now(UTC),
            parent_id=plan.parent.id if plan.parent else None,
            consistency=consistency,
            objects=objects,
            fingerprints=fingerprints,
            server_version=plan.facts["server_version"],
            tool_versions={"pymongo": _pymongo_version()},
            timings=timings,
            lineage=ctx.lineage,
        )
        ctx.repository.commit(manifest)
        return manifest

    def _full_consistency(self, ctx, plan: BackupPlan, results, objects: list, fingerprints: dict):
        """The consistency of a full (see finish_backup); for the 'oplog' method, stores the oplog
        object (appended to `objects`) and replaces `fingerprints` with those at its end."""
        start = Timestamp(*parse_ts(plan.facts["cluster_time"]))
        with connected(self.config) as client:
            end = newest_oplog_ts(client)
            snapshot = all(r.facts.get("snapshot", True) for r in results)
            changed = [] if snapshot else [db for db in fingerprints if changes_since(client, db, start, end)]
            if not changed:
                return MongoDumpConsistency(
                    method="snapshot" if snapshot else "unchanged",
                    cluster_time=ts_text(start),
                    start_ts=ts_text(start),
                    end_ts=ts_text(end),
                    set_name=plan.facts["set_name"],
                )
            ctx.log(
                f"{', '.join(changed)} changed while being dumped, and the server does not read at a past cluster "
                f"time: storing the oplog from {ts_text(start)} on, to be replayed on restore (mongodump --oplog)"
            )
            key = ctx.repository.backup_prefix(self.name, self.config.name, plan.backup_id) + OPLOG_KEY
            stored = self._store_oplog_range(ctx, client, key, start, end, fingerprints, plan.facts["server_version"])
        objects.append(stored.written.as_object(OPLOG_KEY, OPLOG_ROLE, OPLOG_FORMAT))
        fingerprints.clear()
        fingerprints.update(stored.fingerprints)
        return MongoDumpConsistency(
            method="oplog",
            cluster_time=ts_text(stored.point),
            start_ts=ts_text(start),
            end_ts=ts_text(stored.point),
            oplog_entries=stored.entries,
            set_name=plan.facts["set_name"],
        )

    # -- restore --------------------------------------------------------------------------
    def restore(
        self,
        ctx: BackupContext,
        manifest: Manifest,
        *,
        into: str | None = None,
        overwrite: bool = False,
        databases: list[str] | None = None,
        options: MongoRestoreOptions | None = None,
    ) -> RestoreResult:
        """Each database of the backup into a new database <db>_restore_<backup time> (or `into`,
        for a backup or selection of one database), compared; with overwrite an existing
        target is replaced, only after the restored copy matched. options.namespaces selects
        collections, options.rename then moves them (restore_plan.py; with an oplog replay the
        oplog's namespaces too, replay_landing.py), options.users_and_roles recreates the
        databases' users and roles on their targets (users.py). ConfigError for what cannot land,
        before anything is written."""
        opts = options_for(self, options, self.config.name)
        rules = RenameRules.parse(opts.rename)
        if rules and into is not None:
            raise ConfigError(
                f"into={into!r} and rename both say where collections go: use rename alone "
                "(e.g. {'app.*': 'app_copy.*'}; collections no rule matches go to <db>_restore_<time>)"
            )
        point = restore_point(
            ctx.repository,
            ctx.repository.catalog(self.name, self.config.name),
            OplogArchive(ctx.repository, self.config.name, self.config),
            manifest,
            to_ts=opts.to_ts,
            to_time=opts.to_time,
        )
        point.excluded = self._excluded if self.config.exclude_collections else None
        sources = restore_sources(point, databases)
        # The oplog is read once before anything is written: what it names must land somewhere.
        scan = scan_entries(point.decoded()) if point.replays else None
        if scan is not None and point.expected is None and (into is None or databases):
            add_scanned_databases(sources, scan, databases or self.config.databases)  # made after the full
        missing = [name for name in databases or () if name not in sources]
        if missing:
            where = f"backup {manifest.id}" + (f" at {point.describe()}" if point.expected is None else "")
            raise ConfigError(
                f"{where} holds no database {', '.join(map(repr, missing))} "
                f"(it holds: {', '.join(sorted(set(restore_sources(point, None)) | set(sources))) or 'none'})"
            )
        if opts.namespaces:
            sources = {db: obj for db, obj in sources.items() if _may_match(opts.namespaces, db)}
            if not sources:
                raise ConfigError(
                    f"no database of backup {manifest.id} has a collection matching {opts.namespaces} "
                    "(namespaces are 'db.collection' globs, e.g. 'app.orders', 'app.*', '*.orders')"
                )
        if into is not None and len(sources) != 1:
            raise ConfigError(
                f"into={into!r} names one database, but backup {manifest.id} restores {len(sources)}; "
                "choose one with databases=[...]"
            )
        stamp = point_stamp(point) if point.expected is None else manifest.id
        default = lambda database: into or default_restore_name(database, stamp)  # noqa: E731
        plan, auth = prepare_restore(
            ctx,
            point.base,
            [obj for obj in sources.values() if obj is not None],
            default,
            rules=rules,
            namespaces=opts.namespaces,
            users_and_roles=opts.users_and_roles,
            allow_empty=None in sources.values() or scan is not None,
        )
        landing = None
        if scan is not None:
            landing = plan_replay(point, plan, sources, rules, default, opts.namespaces, scan)
        if not plan.targets:
            raise ConfigError(
                f"nothing of backup {manifest.id} matches {opts.namespaces}: nothing to restore "
                "(namespaces are 'db.collection' globs, e.g. 'app.orders', 'app.*')"
            )
        run = RestoreRun(self.config, ctx, point, plan, opts.namespaces, landing)
        return run.run(overwrite=overwrite, keep=True, auth=auth)

    def drill(self, ctx: BackupContext, manifest: Manifest) -> RestoreResult:
        """Restore every database (the full, then the chain's oplog replayed) into scratch
        databases, compare with the backup's fingerprints, drop them."""
        point = chain_point(ctx.repository, ctx.repository.catalog(self.name, self.config.name), manifest)
        sources = restore_sources(point, None)
        names: dict[str, str] = {}
        name = lambda database: names.setdefault(database, scratch_name(f"vaultflow_drill_{database}"))  # noqa: E731
        plan = plan_restore([obj for obj in sources.values() if obj is not None], name)
        landing = None
        if point.replays:
            landing = plan_replay(point, plan, sources, RenameRules(), name, None, scan_entries(point.decoded()))
        return RestoreRun(self.config, ctx, point, plan, landing=landing).run(overwrite=False, keep=False)


def _may_match(patterns: list[str], database: str) -> bool:
    """Whether some 'db.collection' glob of `patterns` can match a collection of `database`."""
    return any(fnmatch.fnmatchcase(database, pattern.split(".", 1)[0]) for pattern in patterns)


def _pymongo_version() -> str:
    import pymongo

    return pymongo.version
