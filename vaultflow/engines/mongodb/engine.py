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

from vaultflow.compare import Comparison
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
from vaultflow.engines.mongodb.consistency import MongoDumpConsistency, parse_ts, ts_text
from vaultflow.engines.mongodb.dump import (
    ArchiveChunks,
    DatabaseDump,
    changes_since,
    database_archive,
    list_collection_specs,
)
from vaultflow.engines.mongodb.names import RenameRules
from vaultflow.engines.mongodb.restore import (
    ARCHIVE_ROLE,
    AuthToCreate,
    archive_objects,
    default_restore_name,
    drop_quietly,
    prepare_restore,
    restore_target,
    scratch_name,
)
from vaultflow.engines.mongodb.restore_plan import RestorePlan, TargetDatabase, plan_restore
from vaultflow.engines.mongodb.settings import MongoRestoreOptions, MongoSettings
from vaultflow.engines.mongodb.users import compare_auth, create_auth, refuse_existing
from vaultflow.errors import ChainBrokenError, ConfigError, RefusedError, TransientError, note_cleanup_failure
from vaultflow.manifest import BackupKind, BackupMode, Manifest
from vaultflow.pipeline import compress_into_store

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

    # -- backup ---------------------------------------------------------------------------
    def full_backup(self, ctx: BackupContext) -> Manifest:
        return backup_in_steps(self, ctx, BackupKind.FULL)

    def incremental_backup(self, ctx: BackupContext, kind: BackupKind) -> Manifest:
        """Not built yet for MongoDB: ChainBrokenError, so the flows take a full and say why."""
        raise ChainBrokenError(
            f"{self.config.name}: MongoDB {kind.value} backups (the oplog since the parent) are not built yet"
        )

    def plan_backup(self, ctx: BackupContext, kind: BackupKind) -> BackupPlan:
        """One unit per included database, in name order; the cluster time every unit reads at is
        the newest oplog entry now. ChainBrokenError for an incremental or differential."""
        if kind != BackupKind.FULL:
            self.incremental_backup(ctx, kind)
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

    def _excluded(self, database: str, collection: str) -> bool:
        return excluded(self.config, database, collection)

    def dump(self, ctx: BackupContext, plan: BackupPlan, unit: BackupUnit) -> UnitResult:
        """Stream one database's archive at the plan's cluster time into the repository."""
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
            if not result.snapshot:
                self._require_unchanged(client, database, Timestamp(seconds, increment))
        return UnitResult(
            unit,
            objects=(written.as_object(key, ARCHIVE_ROLE, ARCHIVE_FORMAT, database=database),),
            fingerprints={database: result.fingerprints},
            facts={"views": result.views, "snapshot": result.snapshot},
            timings={f"dump {database}": time.monotonic() - started},
        )

    def _require_unchanged(self, client, database: str, cluster_time: Timestamp) -> None:
        """A server that ignored the snapshot read gave the documents as they were while they
        streamed: they are the state at `cluster_time` only if nothing changed `database` since.
        TransientError naming the database and the changes otherwise (a later attempt, in a
        quieter moment, can succeed; replaying the dump's oplog window comes with incrementals)."""
        changes = changes_since(client, database, cluster_time, newest_oplog_ts(client))
        if changes:
            raise TransientError(
                f"database {database!r} on {self.config.where} changed during its dump ({changes} oplog "
                f"entries after {ts_text(cluster_time)}), and the server does not read at a past cluster "
                "time (snapshot reads at atClusterTime): the dump would be no single point in time, so "
                "nothing was recorded; retry when it is quieter"
            )

    def finish_backup(self, ctx: BackupContext, plan: BackupPlan, results: list[UnitResult]) -> Manifest:
        """Build and commit the manifest (every object checked for presence and size first)."""
        with connected(self.config) as client:
            end_ts = ts_text(newest_oplog_ts(client))
        timings: dict[str, float] = {}
        for result in results:
            timings.update(result.timings)
        manifest = Manifest(
            id=plan.backup_id,
            engine=self.name,
            target=self.config.name,
            kind=plan.kind,
            mode=BackupMode.LOGICAL,
            started_at=plan.started_at,
            finished_at=datetime.now(UTC),
            consistency=MongoDumpConsistency(
                method="snapshot" if all(r.facts.get("snapshot", True) for r in results) else "unchanged",
                cluster_time=plan.facts["cluster_time"],
                start_ts=plan.facts["cluster_time"],
                end_ts=end_ts,
                set_name=plan.facts["set_name"],
            ),
            objects=[o for r in results for o in r.objects],
            fingerprints={db: prints for r in results for db, prints in r.fingerprints.items()},
            server_version=plan.facts["server_version"],
            tool_versions={"pymongo": _pymongo_version()},
            timings=timings,
            lineage=ctx.lineage,
        )
        ctx.repository.commit(manifest)
        return manifest

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
        collections, options.rename then moves them (restore_plan.py), options.users_and_roles
        recreates the databases' users and roles on their targets (users.py)."""
        opts = options_for(self, options, self.config.name)
        if opts.to_time or opts.to_ts:
            given = [name for name in ("to_time", "to_ts") if getattr(opts, name)]
            raise ConfigError(
                f"restore option {', '.join(given)} is not built yet for MongoDB targets; restore whole databases"
            )
        rules = RenameRules.parse(opts.rename)
        if rules and into is not None:
            raise ConfigError(
                f"into={into!r} and rename both say where collections go: use rename alone "
                "(e.g. {'app.*': 'app_copy.*'}; collections no rule matches go to <db>_restore_<time>)"
            )
        objects = archive_objects(manifest, databases)
        if opts.namespaces:
            objects = [o for o in objects if _may_match(opts.namespaces, o.database or "")]
            if not objects:
                raise ConfigError(
                    f"no database of backup {manifest.id} has a collection matching {opts.namespaces} "
                    "(namespaces are 'db.collection' globs, e.g. 'app.orders', 'app.*', '*.orders')"
                )
        if into is not None and len(objects) != 1:
            raise ConfigError(
                f"into={into!r} names one database, but backup {manifest.id} restores {len(objects)}; "
                "choose one with databases=[...]"
            )
        plan, auth = prepare_restore(
            ctx,
            manifest,
            objects,
            lambda database: into or default_restore_name(database, manifest.id),
            rules=rules,
            namespaces=opts.namespaces,
            users_and_roles=opts.users_and_roles,
        )
        return self._restore(ctx, manifest, plan, overwrite=overwrite, keep=True, namespaces=opts.namespaces, auth=auth)

    def drill(self, ctx: BackupContext, manifest: Manifest) -> RestoreResult:
        """Restore every database into scratch databases, compare, drop them."""
        objects = archive_objects(manifest, None)
        plan = plan_restore(objects, lambda database: scratch_name(f"vaultflow_drill_{database}"))
        return self._restore(ctx, manifest, plan, overwrite=False, keep=False)

    def _restore(
        self,
        ctx,
        manifest,
        plan: RestorePlan,
        *,
        overwrite: bool,
        keep: bool,
        namespaces: list[str] | None = None,
        auth: dict[str, AuthToCreate] | None = None,
    ):
        """Each target database of `plan` restored from its parts, compared. A name that does
        not exist is restored into directly (recorded as scratch until it compared equal); an
        existing one (overwrite) only after a scratch copy compared equal: it is dropped and
        restored into again, and compared again. (Not renameCollection: across databases
        MongoDB copies the data anyway, and SecantusDB drops collection options.) `auth`: users
        and roles to create on a target once its data compared equal (every one checked absent
        before anything is written). keep=False (drills): every copy is dropped after its
        comparison."""
        started = time.monotonic()
        rows: list = []
        notes: list[str] = []
        done: set[str] = set()
        auth = auth or {}
        with connected(self.config) as client:
            self._drop_dead_scratch(ctx, client)
            present = set(client.list_database_names())
            taken = [target.name for target in plan.targets if target.name in present]
            if taken and not overwrite:
                raise RefusedError(
                    f"database {', '.join(map(repr, taken))} exists on {self.config.where}: restore into a new "
                    "name (into=..., rename=...), or pass overwrite=True to replace it after the copy compared equal"
                )
            for name, wanted in auth.items():
                refuse_existing(client, name, wanted.users, wanted.roles)
            for target in plan.targets:
                final = target.name
                if final in present:
                    copy_rows = self._restore_one(
                        ctx, client, manifest, target, scratch_name(final), drop=True, namespaces=namespaces
                    )
                    if not _all_match(copy_rows):
                        rows += copy_rows
                        continue  # the original stays as it was
                    client.drop_database(final)
                table_rows = self._restore_one(
                    ctx, client, manifest, target, final, drop=not keep, namespaces=namespaces
                )
                rows += table_rows
                if _all_match(table_rows) and final in auth:
                    wanted = auth[final]
                    notes += create_auth(client, final, wanted.users, wanted.roles)
                    rows.append(compare_auth(client, target.label, final, wanted.users, wanted.roles))
                if _all_match(table_rows) or not keep:
                    done.add(final)
        notes += [note for wanted in auth.values() for note in wanted.notes]
        return RestoreResult(
            backup_id=manifest.id,
            restored=plan.restored_into(done),
            seconds=time.monotonic() - started,
            comparison=Comparison(rows, noun="collections"),
            notes=notes,
        )

    def _restore_one(
        self, ctx, client, manifest, target: TargetDatabase, into: str, *, drop: bool, namespaces=None
    ) -> list:
        """Restore `target`'s parts into `into` (recorded as a scratch database meanwhile),
        compare each collection with its source collection's fingerprint in the backup, and the
        database's indexes, options and views; drop it afterwards when `drop`, and on any error.
        Returns the comparison rows."""
        repo = ctx.repository
        record = repo.put_scratch(self.name, self.config.name, into, self.config.where)
        try:
            table_rows = restore_target(client, ctx, manifest, target, into, namespaces)
        except BaseException as exc:
            try:
                drop_quietly(client, into, ctx.log)
                repo.delete_scratch(record)
            except Exception as cleanup:  # noqa: BLE001 - noted on the original error
                note_cleanup_failure(exc, f"removing scratch database {into}: {cleanup}", ctx.log)
            raise
        if drop or not _all_match(table_rows):  # a copy that differs is never left to be mistaken for the backup
            drop_quietly(client, into, ctx.log)
        repo.delete_scratch(record)
        return table_rows

    def _drop_dead_scratch(self, ctx: BackupContext, client) -> None:
        """Drop the databases that killed restores or drills of this target left on its server
        (their scratch records' holders are gone), and their records."""
        for key, record in ctx.repository.dead_scratch(self.name, self.config.name):
            if record.get("server") != self.config.where:
                continue
            ctx.log(f"dropping {record['database']!r}, left by a restore that died at {record['since']:%Y-%m-%d %H:%M}")
            client.drop_database(record["database"])
            ctx.repository.delete_scratch(key)


def _may_match(patterns: list[str], database: str) -> bool:
    """Whether some 'db.collection' glob of `patterns` can match a collection of `database`."""
    return any(fnmatch.fnmatchcase(database, pattern.split(".", 1)[0]) for pattern in patterns)


def _all_match(rows) -> bool:
    return all(row.status == "match" for row in rows)


def _pymongo_version() -> str:
    import pymongo

    return pymongo.version
