"""The ClickHouse engine: ClickHouse's own BACKUP DATABASE ... TO Disk, every file of it checked and
streamed into the repository; restores copy the files back (checked again) and RESTORE into a
new database, compared with the backup's fingerprints before anything else happens.

  backup   one unit per database: the tables' state (system tables only: uuid, schema, active
           parts), BACKUP DATABASE db TO Disk(backup_disk, 'vaultflow/<target>/<backup id>/<db>'),
           the state again, then every file of the backup directory streamed into the repository
           (several at once), each checked against the size and checksum its `.backup` metadata
           lists, while another thread digests every table's rows (the fingerprints); then the
           state a third time. A table that changed anywhere in between fails the unit, retryable
           (fingerprint.py says why equal states mean equal rows). The manifest is committed last
           and the staging directory removed then.
  restore  the database's files materialised from the repository into the backup disk (every
           file checked first: sha256 of the stored object and ClickHouse's checksum), then
           RESTORE DATABASE db AS <db>_restore_<time>, compared; into an existing name only with
           overwrite, and only after the copy compared equal (DROP, then RENAME DATABASE).
  chains   incrementals/differentials: the parent's chain is written back on the disk under the
           names it was taken under (vaultflow.engines.clickhouse.chain, shared by concurrent users
           of the chain on one host), then BACKUP ... SETTINGS base_backup = the parent; restores
           write the whole chain back before RESTORE.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from vaultflow.compare import Comparison, TableComparison
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
from vaultflow.engines.clickhouse.chain import chain_on_disk, discard_staging, native_name, target_staging
from vaultflow.engines.clickhouse.client import (
    BACKUP_NOT_FOUND,
    connected,
    error_code,
    quote_name,
    quote_text,
    rows,
    run,
    server_version,
    user_databases,
)
from vaultflow.engines.clickhouse.consistency import ClickHouseBackupConsistency, NativeBackup
from vaultflow.engines.clickhouse.fingerprint import changed_tables, fingerprint_database, table_states
from vaultflow.engines.clickhouse.restore import check_partitions, chosen_databases, drop_dead_scratch, restore_database
from vaultflow.engines.clickhouse.settings import ClickHouseRestoreOptions, ClickHouseSettings
from vaultflow.engines.clickhouse.staging import ingest, remove_staging
from vaultflow.errors import (
    ChainBrokenError,
    ConfigError,
    IntegrityError,
    NotFoundError,
    RefusedError,
    ToolError,
    TransientError,
)
from vaultflow.keys import encode_name
from vaultflow.manifest import BackupKind, BackupMode, Manifest
from vaultflow.source import source_text

UNIT = "database"
R = TypeVar("R")


def _timed(fn: Callable[..., R], *args: Any) -> tuple[R, float]:
    """fn(*args) and the seconds it took."""
    t0 = time.monotonic()
    return fn(*args), time.monotonic() - t0


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


class ClickHouseEngine:
    """The ClickHouse engine (vaultflow.engines.base.Engine) of the server or embedded engine that
    `config` (ClickHouseSettings, or the ClickHouseTarget block) names."""

    name = "clickhouse"
    restore_options = ClickHouseRestoreOptions

    def __init__(self, config: ClickHouseSettings):
        self.config = config
        # Called with (statement, database, where to) right before each BACKUP ('BACKUP', after the
        # first fingerprints, the base chain on the disk; to its name on the disk) and RESTORE
        # ('RESTORE', the chain on the disk; to the new database): where a test changes a table,
        # removes a base or takes a name at exactly that moment. None in runs.
        self.before_statement: Callable[[str, str, str], None] | None = None

    # -- names on the backup disk ---------------------------------------------------------
    def _staging(self, backup_id: str, database: str | None = None) -> str:
        """'vaultflow/<target>/<backup id>[/<database>]': where a backup is written on the disk."""
        base = f"{target_staging(self.config.name)}/{backup_id}"
        return f"{base}/{encode_name(database, 'database name')}" if database else base

    def disk(self, name: str) -> str:
        """The SQL naming backup `name` on the target's backup disk: Disk('<disk>', '<name>')."""
        return f"Disk({quote_text(self.config.backup_disk)}, {quote_text(name)})"

    # -- backup ----------------------------------------------------------------------------
    def check(self) -> str:
        with connected(self.config) as client:
            return server_version(client, self.config)

    def source_identity(self) -> str:
        """'host:port' or 'chdb:<path>' and the databases listed ('..., databases sales' or
        '..., every database')."""
        return source_text(self.config.where, self.config.databases)

    def full_backup(self, ctx: BackupContext) -> Manifest:
        return backup_in_steps(self, ctx, BackupKind.FULL)

    def incremental_backup(self, ctx: BackupContext, kind: BackupKind) -> Manifest:
        """BACKUP with base_backup = the latest backup (INCREMENTAL) or full (DIFFERENTIAL) of each
        database; ChainBrokenError (the flows take a full) when no usable parent exists."""
        return backup_in_steps(self, ctx, kind)

    def plan_backup(self, ctx: BackupContext, kind: BackupKind) -> BackupPlan:
        """One unit per database (the target's `databases`, else every user database). NotFoundError
        for a database that does not exist; for incremental/differential, ChainBrokenError when no
        parent exists, its chain is broken, or it lacks one of the databases."""
        config = self.config
        config.staging_root()
        with connected(config) as client:
            found = server_version(client, config)
            databases = user_databases(client, config)
        if not databases:
            raise NotFoundError(f"{config.name} ({config.where}) has no user database to back up")
        units = [BackupUnit(UNIT, db) for db in databases]
        if kind == BackupKind.FULL:
            return new_plan(self.name, config.name, kind, units, server_version=found)
        catalog = ctx.repository.catalog(self.name, config.name)
        parent = catalog.parent_for(kind, config.name)
        chain = catalog.chain(parent)
        held = ClickHouseBackupConsistency.of(parent).databases
        missing = [db for db in databases if db not in held]
        if missing:
            raise ChainBrokenError(
                f"database {', '.join(map(repr, missing))} of {config.name} is not in the parent backup {parent.id}"
            )
        return new_plan(self.name, config.name, kind, units, parent=parent, server_version=found, chain=chain)

    def dump(self, ctx: BackupContext, plan: BackupPlan, unit: BackupUnit) -> UnitResult:
        """BACKUP one database to the backup disk, then stream its files into the repository while its
        tables' rows are digested; TransientError when a table changed between the state taken
        before BACKUP and the one after the digest (the fingerprints would not be the backup's)."""
        if unit.kind != UNIT:
            raise ValueError(f"ClickHouse backups have no unit {unit.label!r}")
        config, database = self.config, unit.name
        name = self._staging(plan.backup_id, database)
        root = config.staging_root()
        directory = root / name
        shutil.rmtree(directory, ignore_errors=True)  # a retried unit starts again
        timings: dict[str, float] = {}
        try:
            with connected(config) as client:
                with ExitStack() as base_held:
                    base = self._base_on_disk(ctx, plan, database, base_held)
                    before = table_states(client, config, database)
                    # Tables without parts (Log, Memory, ...) have no cheap state: their rows are
                    # digested before BACKUP too, and compared with the digest after it.
                    unpinned = [t for t, state in before.items() if not state.pinned]
                    early = fingerprint_database(client, config, database, only=unpinned) if unpinned else {}
                    if self.before_statement:
                        self.before_statement("BACKUP", database, name)
                    t0 = time.monotonic()
                    self._backup(client, database, name, base)
                    timings[f"backup:{database}"] = time.monotonic() - t0
                self._unchanged(database, changed_tables(before, table_states(client, config, database)))
                if not directory.is_dir():
                    raise ConfigError(
                        f"{config.name}: BACKUP wrote {name} on disk {config.backup_disk!r}, but the worker does not "
                        f"see it at {directory}: set backup_dir to where that disk's path is on the worker"
                    )
                prefix = ctx.repository.backup_prefix(self.name, plan.target, plan.backup_id)
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vaultflow-clickhouse-digest") as side:
                    digest = side.submit(_timed, fingerprint_database, client, config, database)
                    t0 = time.monotonic()
                    listing, objects = ingest(ctx, prefix, database, directory)
                    timings[f"ingest:{database}"] = time.monotonic() - t0
                    prints, timings[f"fingerprint:{database}"] = digest.result()
                after = table_states(client, config, database)
            self._unchanged(
                database, changed_tables(before, after) + [t for t in unpinned if early.get(t) != prints.get(t)]
            )
        except BaseException:
            remove_staging(directory, root)  # what a failed BACKUP wrote; finish_backup removes the rest
            raise
        native = NativeBackup(
            name=name,
            uuid=listing.uuid,
            timestamp=listing.timestamp,
            files=len(listing.entries),
            base_backup_uuid=listing.base_backup_uuid,
        )
        ctx.log(f"{config.name}: database {database}: {len(objects)} files of BACKUP {listing.uuid} stored and checked")
        return UnitResult(
            unit, objects=tuple(objects), fingerprints={database: prints}, facts={"native": native}, timings=timings
        )

    def _unchanged(self, database: str, changed: list[str]) -> None:
        """TransientError naming the `changed` tables, if any (the caller removes the staging directory)."""
        if not changed:
            return
        raise TransientError(
            f"{self.config.name}: tables {', '.join(sorted(set(changed)))} of database {database} were written, "
            "altered, merged or dropped while BACKUP ran or while their rows were digested after it, so the backup "
            "cannot be checked against one fingerprint; nothing was recorded. Retry when writes pause "
            "(ClickHouse's BACKUP is consistent per table, not across tables written meanwhile: docs/clickhouse.md)"
        )

    def _base_on_disk(self, ctx: BackupContext, plan: BackupPlan, database: str, held: ExitStack) -> str | None:
        """For an incremental/differential: the parent's chain of `database` on the backup disk
        (checked; given up when `held` closes), and the parent's name there; None for a full.
        ChainBrokenError when a link's object is damaged (the flows take a full then)."""
        if plan.parent is None:
            return None
        try:
            held.enter_context(chain_on_disk(ctx, plan.facts["chain"], database, self.config.staging_root()))
        except IntegrityError as exc:
            raise ChainBrokenError(f"the parent chain of {plan.parent.id} cannot be used: {exc}") from exc
        return native_name(plan.parent, database)

    def _backup(self, client: Any, database: str, name: str, base: str | None) -> None:
        settings = f" SETTINGS base_backup = {self.disk(base)}" if base else ""
        try:
            run(client, f"BACKUP DATABASE {quote_name(database)} TO {self.disk(name)}{settings}", self.config, database)
        except ToolError as exc:
            if base and error_code(exc.__cause__) == BACKUP_NOT_FOUND:
                raise ChainBrokenError(
                    f"the base backup {base} is missing or incomplete on the disk (error 599): {exc}"
                ) from exc
            raise

    def finish_backup(self, ctx: BackupContext, plan: BackupPlan, results: list[UnitResult]) -> Manifest:
        """The manifest of every database's result, committed last; then the staging directory goes."""
        if sorted(r.unit.name for r in results) != sorted(u.name for u in plan.units):
            raise ValueError(f"backup {plan.backup_id}: finish_backup needs the result of every database")
        manifest = Manifest(
            id=plan.backup_id,
            engine=self.name,
            target=plan.target,
            source=plan.source,
            kind=plan.kind,
            mode=BackupMode.NATIVE,
            parent_id=plan.parent.id if plan.parent else None,
            started_at=plan.started_at,
            finished_at=datetime.now(UTC),
            consistency=ClickHouseBackupConsistency(
                backup_disk=self.config.backup_disk, databases={r.unit.name: r.facts["native"] for r in results}
            ),
            objects=[o for r in results for o in r.objects],
            fingerprints={db: fp for r in results for db, fp in r.fingerprints.items()},
            server_version=plan.facts["server_version"],
            tool_versions={k: v for k in ("clickhouse-connect", "chdb-core") if (v := _package_version(k)) is not None},
            timings={k: v for r in results for k, v in r.timings.items()},
            lineage=ctx.lineage,
        )
        ctx.repository.commit(manifest)
        root = self.config.staging_root()
        discard_staging(root, plan.target, [root / self._staging(plan.backup_id, r.unit.name) for r in results])
        return manifest

    # -- restore ---------------------------------------------------------------------------
    def restore(
        self,
        ctx: BackupContext,
        manifest: Manifest,
        *,
        into: str | None = None,
        overwrite: bool = False,
        databases: list[str] | None = None,
        options: ClickHouseRestoreOptions | None = None,
    ) -> RestoreResult:
        """Restore the backup's databases (or `databases`) into `<db>_restore_<time>`, or into `into`
        (one database). An existing database is replaced only with overwrite=True, and only after
        the restored copy compared equal. RefusedError when `into` exists without overwrite (nothing
        is touched); IntegrityError for a corrupt object (named, before RESTORE runs) or a copy that
        differs from the backup's fingerprints (dropped, nothing put in place)."""
        opts = options_for(self, options, self.config.name)
        chosen = chosen_databases(manifest, databases)
        if into and len(chosen) != 1:
            raise ConfigError(f"into={into!r} names one database, but the restore has {len(chosen)}: {chosen}")
        for db in chosen:
            check_partitions(manifest, db, opts.partitions)
        stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S_%f")[:-3]
        places = {db: into or f"{db}_restore_{stamp}" for db in chosen}
        started = time.monotonic()
        compared: list[TableComparison] = []
        notes: list[str] = []
        with connected(self.config) as client:
            existing = {r[0] for r in rows(client, "SELECT name FROM system.databases", self.config)}
            for place in places.values():
                if place in existing and opts.restored_tables():
                    raise ConfigError(
                        f"{self.config.name}: database {place!r} exists, and a restore of chosen tables or partitions "
                        "replaces whole databases only: restore them into a new database, then move them "
                        "(EXCHANGE TABLES, or ALTER TABLE ... REPLACE PARTITION ... FROM)"
                    )
                if place in existing and not overwrite:
                    raise RefusedError(
                        f"{self.config.name}: database {place!r} exists: restore into another name (into=...), or "
                        "pass overwrite=True to replace it once the restored copy compared equal; nothing was touched"
                    )
            drop_dead_scratch(self, ctx, client)
            restored: dict[str, str] = {}
            for db, place in places.items():
                scratch = place if place not in existing else f"{place}_vaultflow_{secrets.token_hex(3)}"
                scratch, rows_compared = restore_database(
                    self, ctx, client, manifest, db, scratch, opts, keep=True, chosen_name=scratch == into
                )
                compared += rows_compared
                # the name it got: `<db>_restore_<time>_2`, ... when a concurrent restore took it first
                restored[db] = scratch if place not in existing else place
                if place in existing:
                    self._put_in_place(client, scratch, place)
                    notes.append(f"database {place} replaced by the restored copy (overwrite), after it compared equal")
        return RestoreResult(
            backup_id=manifest.id,
            restored=restored,
            seconds=time.monotonic() - started,
            comparison=Comparison(compared, noun="tables and partitions" if opts.partitions else "tables"),
            notes=notes,
        )

    def _put_in_place(self, client: Any, copy: str, place: str) -> None:
        """Replace database `place` by the compared `copy`: the old one renamed aside first, the copy
        renamed into its name, then the old one dropped, so `place` is never missing while a copy
        exists. ToolError naming every database where a step fails (and putting the old one back
        when the copy could not take its name)."""
        aside = f"{place}_vaultflow_old_{secrets.token_hex(3)}"
        config = self.config
        run(client, f"RENAME DATABASE {quote_name(place)} TO {quote_name(aside)}", config, place)
        try:
            run(client, f"RENAME DATABASE {quote_name(copy)} TO {quote_name(place)}", config, place)
        except ToolError as exc:
            run(client, f"RENAME DATABASE {quote_name(aside)} TO {quote_name(place)}", config, place)
            raise ToolError(
                f"{config.name}: the restored copy {copy!r} could not take the name {place!r} ({exc}); {place!r} "
                f"is as it was, and the compared copy stays as {copy!r}: rename it yourself, or drop it"
            ) from exc
        try:
            run(client, f"DROP DATABASE {quote_name(aside)} SYNC", config, aside)
        except ToolError as exc:
            raise ToolError(
                f"{config.name}: {place!r} now holds the restored copy, but the old database, renamed to "
                f"{aside!r}, could not be dropped ({exc}): drop it yourself once you no longer need it"
            ) from exc

    def drill(self, ctx: BackupContext, manifest: Manifest) -> RestoreResult:
        """Restore every database into a scratch database, compare, drop the scratch databases."""
        stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S_%f")[:-3]
        started = time.monotonic()
        compared: list[TableComparison] = []
        held = chosen_databases(manifest, None)
        with connected(self.config) as client:
            drop_dead_scratch(self, ctx, client)
            for db in held:
                compared += restore_database(
                    self, ctx, client, manifest, db, f"{db}_drill_{stamp}", ClickHouseRestoreOptions(), keep=False
                )[1]
        return RestoreResult(
            backup_id=manifest.id,
            restored=dict.fromkeys(held, "scratch database (dropped)"),
            seconds=time.monotonic() - started,
            comparison=Comparison(compared, noun="tables"),
        )
