"""PostgreSQL logical backups: pg_dump per database in one exported snapshot, plus globals.

Consistency: for each database we open a REPEATABLE READ transaction, export its snapshot,
and hand it to `pg_dump --snapshot`. The per-table fingerprints are computed in that same
transaction, concurrently with the dump, so they describe exactly the rows in the dump.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from vaultflow.engines.base import (
    BackupContext,
    BackupPlan,
    BackupUnit,
    RestoreResult,
    UnitResult,
    backup_in_steps,
    commit_unit_manifest,
    new_plan,
    options_for,
)
from vaultflow.engines.postgres.client import (
    ClientEnv,
    choose_bin_dir,
    client_env,
    connect,
    dump_command,
    globals_command,
    server_bin_dir,
)
from vaultflow.engines.postgres.consistency import DatabaseProperties, PostgresLogicalConsistency
from vaultflow.engines.postgres.db_properties import create_database, read_properties

# Fingerprint code lives in pg_fingerprint.py; these names stay importable from here.
from vaultflow.engines.postgres.fingerprint import ROW_HASH, TABLES_SQL, fingerprint_table, fingerprint_tables  # noqa: E402,F401
from vaultflow.engines.postgres.incremental import physical_incremental_backup
from vaultflow.engines.postgres.logical_restore import (  # noqa: F401
    default_restore_name,
    drill_logical,
    drop_database,
    restore_logical,
)
from vaultflow.engines.postgres.physical import physical_full_backup
from vaultflow.engines.postgres.recovery import RecoveryTarget, base_for_point, default_fetch_command, recover
from vaultflow.engines.postgres.settings import PostgresRestoreOptions, PostgresSettings
from vaultflow.engines.postgres.snapshot import LockWatch, catalog_changed, open_snapshot  # noqa: E402
from vaultflow.errors import (
    ChainBrokenError,
    ConfigError,
    NotFoundError,
    RefusedError,
    TransientError,  # noqa: E402
    VaultflowError,
)
from vaultflow.keys import encode_name
from vaultflow.manifest import BackupKind, BackupMode, Fingerprint, Manifest
from vaultflow.pipeline import dump_into_store
from vaultflow.proc import mkdtemp, remove
from vaultflow.source import source_text
from vaultflow.stores.local import LocalStore
from vaultflow.tools import tool_version


def dump_object_name(database: str) -> str:
    """The object key of `database`'s dump within its backup: `db/<encoded name>.dump.zst`
    (percent-encoded, vaultflow.keys: `a/b`, `..` and `Sales`/`sales` stay distinct files).
    Restores read the key recorded in the manifest, so older backups keep theirs."""
    return f"db/{encode_name(database, 'database name')}.dump.zst"


class PostgresEngine:
    """The PostgreSQL engine (vaultflow.engines.base.Engine): logical and physical backups of
    the server that `config` (PostgresSettings, or the PostgresTarget block) names."""

    name = "postgres"
    restore_options = PostgresRestoreOptions

    def __init__(self, config: PostgresSettings):
        self.config = config
        self._server_major: int | None = None

    # -- server facts -------------------------------------------------------------------
    def check(self) -> str:
        with connect(self.config) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            self._server_major = conn.info.server_version // 10000
        return version

    def source_identity(self) -> str:
        """Logical: 'host:port, databases a, b' (or ', every database'); physical: 'cluster
        <system identifier>' (the same cluster wherever it moved, another one after initdb)."""
        if self.config.mode == "physical":
            with connect(self.config) as conn:
                system = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()[0]
            return f"cluster {system}"
        return source_text(f"{self.config.host}:{self.config.port}", self.config.databases)

    @property
    def bin_dir(self):
        if self._server_major is None:
            self.check()
        return choose_bin_dir(self.config, self._server_major)

    def list_databases(self) -> list[str]:
        with connect(self.config) as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY 1"
            ).fetchall()
        return [r[0] for r in rows]

    def database_exists(self, name: str) -> bool:
        with connect(self.config) as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None

    def databases_to_back_up(self) -> list[str]:
        existing = self.list_databases()
        wanted = list(self.config.databases) or existing
        missing = [d for d in wanted if d not in existing]
        if missing:
            raise NotFoundError(
                f"database(s) {', '.join(missing)} do not exist on "
                f"{self.config.host}:{self.config.port} (it has: {', '.join(existing)}); "
                f"fix {self.config.setting_hint('databases')}"
            )
        return wanted

    def fingerprint(self, database: str, methods: dict[str, str] | None = None) -> dict[str, Fingerprint]:
        with connect(self.config, database) as conn:
            return fingerprint_tables(conn, methods)

    # -- backup: plan -> dump each unit -> finish (base.backup_in_steps) -------------------
    def full_backup(self, ctx: BackupContext) -> Manifest:
        return backup_in_steps(self, ctx, BackupKind.FULL)

    def incremental_backup(self, ctx: BackupContext, kind: BackupKind) -> Manifest:
        """Incremental (parent: the latest backup) or differential (parent: the latest full).

        Raises ChainBrokenError when there is no usable parent; the flow then takes a full.
        """
        return backup_in_steps(self, ctx, kind)

    def plan_backup(self, ctx: BackupContext, kind: BackupKind) -> BackupPlan:
        """Logical: the globals, then each database (PostgresTarget.databases, or every database
        that accepts connections), their properties read now. Physical: one unit, the cluster;
        INCREMENTAL/DIFFERENTIAL find and check their parent here (ChainBrokenError when none is
        usable, or the target is logical). NotFoundError for a listed database that does not exist."""
        version = self.check()
        if kind != BackupKind.FULL:
            if self.config.mode != "physical":
                raise ChainBrokenError(
                    f"{self.config.name} takes logical backups (pg_dump), which have no "
                    "incremental form; set mode='physical' for incremental and differential"
                )
            catalog = ctx.repository.catalog(self.name, self.config.name)
            parent = catalog.parent_for(kind, f"{self.config.name} (physical)", lambda m: m.mode == "physical")
            catalog.chain(parent)  # never extend an already-broken chain
            return new_plan(
                self.name,
                self.config.name,
                kind,
                [BackupUnit("cluster")],
                parent=parent,
                server_version=version,
                bin_dir=self.bin_dir,
            )
        if self.config.mode == "physical":
            return new_plan(
                self.name, self.config.name, kind, [BackupUnit("cluster")], server_version=version, bin_dir=self.bin_dir
            )
        databases = self.databases_to_back_up()
        with connect(self.config) as conn:  # recreated by restores under any name (pg_db_properties)
            properties = {db: read_properties(conn, db) for db in databases}
        units = [BackupUnit("globals"), *(BackupUnit("database", db) for db in databases)]
        return new_plan(
            self.name,
            self.config.name,
            kind,
            units,
            server_version=version,
            bin_dir=self.bin_dir,
            properties=properties,
        )

    def dump(self, ctx: BackupContext, plan: BackupPlan, unit: BackupUnit) -> UnitResult:
        """globals: pg_dumpall --globals-only; database: pg_dump in its own snapshot, fingerprinted
        concurrently (_dump_database); cluster: pg_basebackup (full or incremental), its manifest
        built but not committed. Each streams straight into the store under the plan's id."""
        repo, bin_dir = ctx.repository, plan.facts["bin_dir"]
        prefix = repo.backup_prefix(self.name, self.config.name, plan.backup_id)
        t0 = time.monotonic()
        if unit.kind == "globals":
            with client_env(self.config, ["postgres"]) as env:  # each tool finds only its own database
                written = dump_into_store(
                    globals_command(bin_dir, self.config.role_passwords),
                    env,
                    repo.store,
                    prefix + "globals.sql.zst",
                    level=repo.compression_level,
                    on_stderr=ctx.log,
                    pass_fds=env.pass_fds,
                )
            obj = written.as_object("globals.sql.zst", "globals", "sql")
            return UnitResult(unit, objects=(obj,), timings={"globals": time.monotonic() - t0})
        if unit.kind == "database":
            with client_env(self.config, [unit.name]) as env:
                obj, prints, snapshot = self._dump_database(ctx, env, bin_dir, prefix, unit.name)
            return UnitResult(
                unit,
                objects=(obj,),
                fingerprints={unit.name: prints},
                facts={"snapshot": snapshot},
                timings={f"dump:{unit.name}": time.monotonic() - t0},
            )
        if unit.kind == "cluster" and plan.kind == BackupKind.FULL:
            return UnitResult(
                unit,
                manifest=physical_full_backup(
                    self.config, ctx, bin_dir=bin_dir, server_version=plan.facts["server_version"], plan=plan
                ),
            )
        if unit.kind == "cluster":
            return UnitResult(
                unit,
                manifest=physical_incremental_backup(
                    self.config,
                    ctx,
                    plan.parent,
                    plan.kind,
                    bin_dir=bin_dir,
                    server_version=plan.facts["server_version"],
                    plan=plan,
                ),
            )
        raise ValueError(f"PostgreSQL backups have no unit {unit.label!r}")

    def finish_backup(self, ctx: BackupContext, plan: BackupPlan, results: list[UnitResult]) -> Manifest:
        """Logical: one manifest from every unit's objects, fingerprints and snapshot ids, committed
        last (Repository.commit checks each object first). Physical: commit the cluster's manifest."""
        if any(r.manifest is not None for r in results):
            return commit_unit_manifest(ctx.repository, plan, results)
        done = {r.unit for r in results}
        missing = [u.label for u in plan.units if u not in done]
        if missing:
            raise ValueError(f"backup {plan.backup_id}: units {', '.join(missing)} were not dumped")
        bin_dir, properties = plan.facts["bin_dir"], plan.facts["properties"]
        objects = [o for r in results for o in r.objects]
        fingerprints = {db: prints for r in results for db, prints in r.fingerprints.items()}
        snapshots = {r.unit.name: r.facts["snapshot"] for r in results if r.unit.kind == "database"}
        timings = {k: v for r in results for k, v in r.timings.items()}
        manifest = Manifest(
            id=plan.backup_id,
            engine=self.name,
            target=self.config.name,
            source=plan.source,
            kind=BackupKind.FULL,
            mode=BackupMode.LOGICAL,
            started_at=plan.started_at,
            finished_at=datetime.now(UTC),
            consistency=PostgresLogicalConsistency(
                snapshots=snapshots, database_properties={db: p for db, p in properties.items() if p is not None}
            ),
            objects=objects,
            fingerprints=fingerprints,
            server_version=plan.facts["server_version"],
            tool_versions={"pg_dump": tool_version(bin_dir / "pg_dump")},
            timings=timings,
            lineage=ctx.lineage,
        )
        ctx.repository.commit(manifest)
        return manifest

    def _dump_database(self, ctx: BackupContext, env: ClientEnv, bin_dir, prefix: str, database: str):
        """pg_dump of `database` in a snapshot that holds ACCESS SHARE on every table, fingerprinted
        concurrently in that same snapshot (pg_snapshot.py says why, and how lock waits stay bounded
        by lock_timeout_s). Returns (StoredObject, fingerprints, pg_current_snapshot text).

        Raises LockWaitError (retryable; names the table and the sessions) when a lock wait
        involving the backup passes lock_timeout_s, TransientError when the tables changed under
        the snapshot, ToolError when pg_dump fails; nothing is committed then."""
        name = dump_object_name(database)
        snap = open_snapshot(self.config, database)
        conn = snap.conn
        watch = LockWatch(self.config, database, conn.info.backend_pid)
        try:
            expected = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            prints: dict[str, Fingerprint] = {}
            failure: list[BaseException] = []

            def take_fingerprints() -> None:
                try:
                    # No parallel workers: pg_dump and zstd need the cores more.
                    conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
                    prints.update(fingerprint_tables(conn))
                except BaseException as exc:  # re-raised in the caller's thread below
                    failure.append(exc)

            worker = threading.Thread(target=take_fingerprints, name=f"fingerprint-{database}")
            watch.start()
            worker.start()
            progress = (lambda done: ctx.progress(name, done, expected)) if ctx.progress else None
            try:  # pg_dump runs under the watch's application_name: that is how the watch finds it
                written = dump_into_store(
                    dump_command(bin_dir, database, snap.id, self.config.lock_timeout_s),
                    dict(env, PGAPPNAME=watch.pg_dump_appname),
                    ctx.repository.store,
                    prefix + name,
                    level=ctx.repository.compression_level,
                    progress=progress,
                    on_stderr=ctx.log,
                    pass_fds=env.pass_fds,
                )
            except BaseException as exc:
                watch.stop()
                watch.end_snapshot_session()  # stop fingerprinting now; release the locks
                worker.join()
                explained = watch.explain(exc)
                if explained is not None:
                    raise explained from exc
                raise
            finally:
                worker.join()  # the snapshot must stay open until both readers finish
                watch.stop()
            if watch.error is not None:
                raise watch.error
            if failure:
                raise VaultflowError(f"fingerprinting {database} failed: {failure[0]}") from failure[0]
            changed = catalog_changed(self.config, database, snap)
            if changed:  # cannot happen while the locks hold; never commit a dump its prints disagree with
                raise TransientError(
                    f"tables {', '.join(changed)} of database {database!r} changed during the "
                    "backup; nothing was committed. Retry the backup"
                )
        finally:
            conn.close()
        obj = written.as_object(name, "database-dump", "pg_dump-custom", database=database)
        return obj, prints, snap.visible

    # -- restore ------------------------------------------------------------------------
    def restore(
        self,
        ctx: BackupContext,
        manifest: Manifest,
        *,
        into: str | None = None,
        overwrite: bool = False,
        databases: list[str] | None = None,
        options: PostgresRestoreOptions | None = None,
    ) -> RestoreResult:
        """Physical: recover into the directory `into`, to the point the options name (to_time,
        to_lsn, to_name, to_timeline; default: the backup's own consistent point), from `manifest`
        or, when it ended after the point, the newest backup that did not
        (recovery.base_for_point; the result's backup_id and first note say which). Logical: see
        logical_restore.restore_logical (`no_owner` / `no_privileges` for a restoring role that
        is not a superuser). Raises ConfigError for options the backup's mode cannot honour."""
        opts = options_for(self, options, self.config.name)
        target = RecoveryTarget(time=opts.to_time, lsn=opts.to_lsn, name=opts.to_name, timeline=opts.to_timeline)
        if manifest.mode == "physical":
            if overwrite or databases:
                raise RefusedError(
                    "a physical backup restores a whole cluster into a NEW data directory "
                    "(`into`); overwrite and databases apply to logical backups only"
                )
            if not into:
                raise ConfigError(
                    "restoring a physical backup needs `into`: an empty directory for the new "
                    "data directory, on this worker's host"
                )
            catalog = partial(ctx.repository.catalog, self.name, self.config.name)
            base, note = base_for_point(catalog, manifest, target)
            result = self.recover(ctx, base, Path(into), target)
            if note:
                result.notes.insert(0, note)
            return result
        if not target.immediate:
            raise ConfigError(
                f"backup {manifest.id} is a logical dump: point-in-time restore needs a physical "
                "backup and the WAL archive (mode='physical' on the target)"
            )
        return restore_logical(
            self,
            ctx,
            manifest,
            into=into,
            overwrite=overwrite,
            databases=databases,
            no_owner=opts.no_owner,
            no_privileges=opts.no_privileges,
        )

    # -- physical: start restored clusters ----------------------------------------------------
    def recover(self, ctx: BackupContext, manifest: Manifest, dest: Path, target) -> RestoreResult:
        """Restore a physical backup into `dest`, replay WAL to `target`, promote, compare.

        pg_recovery.recover picks the timeline, archives a new timeline's history file, and
        names the first missing WAL segment when recovery stops short (NotFoundError)."""
        major = int(str(manifest.server_version).split(".")[0])
        fetch, fetch_store = self.config.wal_fetch_command, None
        if fetch is None and not target.immediate:
            root = local_root(ctx.repository)
            if root is not None:  # a plain directory: restore_command names it
                fetch = default_fetch_command(root, self.config.name)
            else:  # S3 or a mirror: a private spec file read by restore_command, deleted after recovery
                fetch_store = ctx.repository.store
        result, _ = recover(
            ctx,
            manifest,
            dest,
            bin_dir=server_bin_dir(self.config, major),
            user=self.config.user,
            target=target,
            fetch_command=fetch,
            fetch_store=fetch_store,
            run_as=self._cluster_os_user(),
        )
        return result

    def _cluster_os_user(self) -> str | None:
        return (self.config.restore_os_user or "postgres") if os.geteuid() == 0 else None

    def drill(self, ctx: BackupContext, manifest: Manifest) -> RestoreResult:
        """Logical: each database into vaultflow_drill_<db>_<time>_<random>, compared, dropped.
        Physical: the recovery path into a scratch data directory, compared, removed."""
        if manifest.mode == "physical":
            work = mkdtemp("vfdrill-")  # removed even if this process is killed (proc.remove_on_death)
            os.chmod(work, 0o711)  # the cluster's OS user must reach data/ inside
            try:
                return self.recover(ctx, manifest, work / "data", RecoveryTarget())
            finally:
                remove(work)
        return drill_logical(self, ctx, manifest)

    def create_database(self, name: str, properties: DatabaseProperties | None = None) -> None:
        """CREATE DATABASE `name` from template0, with the encoding and locale of `properties`."""
        with connect(self.config) as conn:
            create_database(conn, name, properties, name)

    def drop_database(self, name: str) -> None:
        """Drop `name` if it exists, its subscriptions first (see pg_logical_restore.drop_database)."""
        drop_database(self.config, name)


def local_root(repository) -> Path | None:
    """The directory of a repository that is one local store, for restore_command's --repo-path;
    None for S3 and mirrors (their restore_command reads a private spec file instead)."""
    return repository.store.root if isinstance(repository.store, LocalStore) else None
