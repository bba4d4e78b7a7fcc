"""Restoring one database of a ClickHouse backup into a new database on the target's server: the
chain written back on the backup disk (every file checked), RESTORE ... AS the new name, the
fingerprints compared. The new database is recorded as scratch (Repository.put_scratch) while it
is made, so what a killed restore leaves is dropped by the next restore or drill of the target.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol

from vaultflow.compare import Comparison, TableComparison, compare_database
from vaultflow.engines.base import BackupContext
from vaultflow.engines.clickhouse.chain import chain_on_disk, native_name
from vaultflow.engines.clickhouse.client import (
    BACKUP_ENTRY_NOT_FOUND,
    DATABASE_ALREADY_EXISTS,
    error_code,
    quote_name,
    quote_text,
    run,
)
from vaultflow.engines.clickhouse.consistency import ClickHouseBackupConsistency
from vaultflow.engines.clickhouse.fingerprint import (
    fingerprint_database,
    is_legacy,
    partition_unit,
    partitions_of,
    table_units,
)
from vaultflow.engines.clickhouse.settings import ClickHouseRestoreOptions, ClickHouseSettings
from vaultflow.errors import ConfigError, IntegrityError, RefusedError, ToolError, note_cleanup_failure
from vaultflow.manifest import Fingerprint, Manifest


class RestoringEngine(Protocol):
    """What a restore needs of the engine (vaultflow.engines.clickhouse.engine.ClickHouseEngine)."""

    name: str
    config: ClickHouseSettings
    before_statement: Callable[[str, str, str], None] | None

    def disk(self, name: str) -> str: ...


def chosen_databases(manifest: Manifest, databases: list[str] | None) -> list[str]:
    """`databases` (default: every database of the backup). ConfigError naming one it does not hold."""
    held = list(ClickHouseBackupConsistency.of(manifest).databases)
    unknown = [d for d in databases or [] if d not in held]
    if unknown:
        raise ConfigError(f"backup {manifest.id} holds no database {unknown[0]!r} (it holds {', '.join(held)})")
    return list(databases) if databases else held


def drop(engine: RestoringEngine, client: Any, database: str) -> None:
    run(client, f"DROP DATABASE IF EXISTS {quote_name(database)} SYNC", engine.config, database)


def drop_dead_scratch(engine: RestoringEngine, ctx: BackupContext, client: Any) -> None:
    """Drop the databases killed restores or drills of the target left on its server, and their records."""
    ctx.repository.drop_dead_scratch(
        engine.name, engine.config.name, engine.config.where, lambda database: drop(engine, client, database), ctx.log
    )


def check_partitions(manifest: Manifest, db: str, partitions: dict[str, list[str]] | None) -> None:
    """ConfigError naming a table or partition of `partitions` that `db` of the backup does not hold,
    with the partitions it does hold (the restore then starts nothing)."""
    held = manifest.fingerprints.get(db, {})
    for table, chosen in (partitions or {}).items():
        if table not in table_units(held):
            raise ConfigError(f"backup {manifest.id} holds no table {table!r} in database {db!r}")
        there = partitions_of(held, table)
        if not there:
            raise ConfigError(
                f"backup {manifest.id} recorded no partitions of {db}.{table} (the table has no partition key, or "
                "the backup was taken before vaultflow recorded partitions): restore the whole table"
            )
        missing = [p for p in chosen if p not in there]
        if missing:
            raise ConfigError(
                f"backup {manifest.id} holds no partition {missing[0]!r} of {db}.{table}; it holds partitions "
                f"{', '.join(sorted(there))} (partition ids, as system.parts.partition_id names them)"
            )


class NameTaken(RefusedError):
    """The new database's name was taken meanwhile (error 82, by a concurrent restore or a user):
    that database is not ours, so nothing drops it."""


def restore_database(
    engine: RestoringEngine,
    ctx: BackupContext,
    client: Any,
    manifest: Manifest,
    db: str,
    scratch: str,
    opts: ClickHouseRestoreOptions,
    *,
    keep: bool,
    chosen_name: bool = False,
) -> tuple[str, list[TableComparison]]:
    """Restore `db` of `manifest` (the tables and partitions `opts` chooses, or its structure only)
    as the new database `scratch` and compare it with the backup; keep it (keep=True) or drop it (a
    drill). Returns the name it got and the comparison: `scratch`, or `scratch_2`, `scratch_3`, ...
    when a concurrent restore created that name first (RefusedError instead when the user chose
    it: `chosen_name`). IntegrityError naming the object for a damaged file (before RESTORE runs)
    or when the copy differs (then dropped). The copy is dropped on any error."""
    repo = ctx.repository
    for attempt in range(1, 101):
        name = scratch if attempt == 1 else f"{scratch}_{attempt}"
        record = repo.put_scratch(engine.name, engine.config.name, name, engine.config.where)
        try:
            result = _restore_and_compare(engine, ctx, client, manifest, db, name, opts)
            if not keep:
                drop(engine, client, name)
            return name, result
        except NameTaken as exc:  # not ours: nothing to drop
            if chosen_name:
                raise RefusedError(f"{engine.config.name}: {exc}; nothing was touched") from None
        except BaseException as exc:
            try:
                drop(engine, client, name)
            except Exception as cleanup:  # noqa: BLE001 - noted on the original error
                note_cleanup_failure(exc, f"dropping scratch database {name}: {cleanup}", ctx.log)
            raise
        finally:
            repo.delete_scratch(record)
    raise RefusedError(f"{engine.config.name}: databases {scratch} to {scratch}_100 all exist; drop the old copies")


def restore_statement(
    engine: RestoringEngine, manifest: Manifest, db: str, scratch: str, opts: ClickHouseRestoreOptions
) -> str:
    """RESTORE of `db` of `manifest` as `scratch`: the whole database, or the chosen tables, each
    limited to its chosen partitions (`PARTITIONS ID '...'`)."""
    tables, partitions = opts.restored_tables(), opts.partitions or {}
    if tables:
        what = ", ".join(
            f"TABLE {quote_name(db)}.{quote_name(t)} AS {quote_name(scratch)}.{quote_name(t)}"
            + (f" PARTITIONS {', '.join(f'ID {quote_text(p)}' for p in partitions[t])}" if t in partitions else "")
            for t in tables
        )
    else:
        what = f"DATABASE {quote_name(db)} AS {quote_name(scratch)}"
    # 'create': RESTORE fails (error 82) rather than restore into a database that exists
    settings = ["structure_only = 1"] if opts.structure_only else []
    settings += [] if tables else ["create_database = 'create'"]
    clause = f" SETTINGS {', '.join(settings)}" if settings else ""
    return f"RESTORE {what} FROM {engine.disk(native_name(manifest, db))}{clause}"


def chosen_units(
    fingerprints: dict[str, Fingerprint], opts: ClickHouseRestoreOptions, *, every_partition: bool = False
) -> dict[str, Fingerprint]:
    """The units a restore with `opts` compares: each restored table's own unit, or for a table
    restored by partitions its chosen partitions' units (every_partition: all it has, for the copy,
    so a partition that should not be there shows as unexpected)."""
    tables, partitions = opts.restored_tables(), opts.partitions or {}
    chosen: dict[str, Fingerprint] = {}
    for table, fp in table_units(fingerprints).items():
        if tables is not None and table not in tables:
            continue
        if table not in partitions:
            chosen[table] = fp
            continue
        for partition, part in partitions_of(fingerprints, table).items():
            if every_partition or partition in partitions[table]:
                chosen[partition_unit(table, partition)] = part
    return chosen


def _restore_and_compare(
    engine: RestoringEngine,
    ctx: BackupContext,
    client: Any,
    manifest: Manifest,
    db: str,
    scratch: str,
    opts: ClickHouseRestoreOptions,
) -> list[TableComparison]:
    config, root = engine.config, engine.config.staging_root()
    chain = ctx.repository.catalog(engine.name, manifest.target).chain(manifest)
    with chain_on_disk(ctx, chain, db, root):
        if opts.restored_tables():
            _create(client, config, f"CREATE DATABASE {quote_name(scratch)}", scratch)
        if engine.before_statement:
            engine.before_statement("RESTORE", db, scratch)
        try:
            _create(client, config, restore_statement(engine, manifest, db, scratch, opts), scratch)
        except ToolError as exc:
            if error_code(exc.__cause__) == BACKUP_ENTRY_NOT_FOUND:
                raise ConfigError(_not_in_backup(manifest, db, opts, str(exc.__cause__))) from exc
            raise
    expected = chosen_units(manifest.fingerprints.get(db, {}), opts)
    legacy = is_legacy(manifest.fingerprints.get(db, {}))  # digested as the backup was
    actual = chosen_units(fingerprint_database(client, config, scratch, legacy=legacy), opts, every_partition=True)
    if opts.structure_only:
        result = compare_structure(db, expected, actual)
    else:
        result = compare_database(db, expected, actual)
    comparison = Comparison(result, noun="tables")
    if not comparison.ok:
        raise IntegrityError(
            f"the restored copy of database {db} (backup {manifest.id}) differs from the backup: "
            f"{comparison.summary()}; it was dropped, nothing was put in place"
        )
    ctx.log(f"restored {db} of {manifest.id} as {scratch}: {comparison.summary()}")
    return result


def _not_in_backup(manifest: Manifest, db: str, opts: ClickHouseRestoreOptions, said: str) -> str:
    """The message for RESTORE's error 605: which chosen table the backup lacks and what it holds.
    (Checked by RESTORE, not up front: views and dictionaries have no fingerprint to look up.)"""
    found = re.search(r"Table (\S+) not found in backup", said)
    missing = found.group(1) if found else f"one of {opts.restored_tables()}"
    held = ", ".join(sorted(table_units(manifest.fingerprints.get(db, {})))) or "none"
    return (
        f"backup {manifest.id} holds no table {missing} (the restore chose tables {opts.restored_tables()} of "
        f"database {db!r}); its tables with rows: {held}, plus any views and dictionaries; nothing was restored"
    )


def _create(client: Any, config: ClickHouseSettings, sql: str, scratch: str) -> None:
    """Run a statement that creates database `scratch`; NameTaken when it exists already."""
    try:
        run(client, sql, config, scratch)
    except ToolError as exc:
        if error_code(exc.__cause__) == DATABASE_ALREADY_EXISTS:
            raise NameTaken(f"database {scratch!r} was created by someone else meanwhile") from exc
        raise


def compare_structure(
    database: str, expected: dict[str, Fingerprint], actual: dict[str, Fingerprint]
) -> list[TableComparison]:
    """compare_database for a structure-only restore: each table's schema (the digest's part after
    ':'), and no rows in the copy."""

    def schema(fp: Fingerprint) -> Fingerprint:
        return Fingerprint(count=0, digest=fp.digest.partition(":")[2], method=fp.method)

    rows = compare_database(
        database, {t: schema(fp) for t, fp in expected.items()}, {t: schema(fp) for t, fp in actual.items()}
    )
    counts = {t: fp.count for t, fp in actual.items()}
    return [
        TableComparison(r.database, r.table, r.expected_rows, counts.get(r.table), r.status)
        if counts.get(r.table, 0) == 0
        else TableComparison(r.database, r.table, r.expected_rows, counts[r.table], "mismatch")
        for r in rows
    ]
