"""Restoring one database of a ClickHouse backup into a new database on the target's server: the
chain written back on the backup disk (every file checked), RESTORE ... AS the new name, the
fingerprints compared. The new database is recorded as scratch (Repository.put_scratch) while it
is made, so what a killed restore leaves is dropped by the next restore or drill of the target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from vaultflow.compare import Comparison, TableComparison, compare_database
from vaultflow.engines.base import BackupContext
from vaultflow.engines.clickhouse.chain import materialise_chain, native_name
from vaultflow.engines.clickhouse.client import quote_name, run
from vaultflow.engines.clickhouse.consistency import ClickHouseBackupConsistency
from vaultflow.engines.clickhouse.fingerprint import fingerprint_database
from vaultflow.engines.clickhouse.settings import ClickHouseSettings
from vaultflow.engines.clickhouse.staging import remove_staging
from vaultflow.errors import ConfigError, IntegrityError, note_cleanup_failure
from vaultflow.manifest import Fingerprint, Manifest


class RestoringEngine(Protocol):
    """What a restore needs of the engine (vaultflow.engines.clickhouse.engine.ClickHouseEngine)."""

    name: str
    config: ClickHouseSettings

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


def restore_database(
    engine: RestoringEngine,
    ctx: BackupContext,
    client: Any,
    manifest: Manifest,
    db: str,
    scratch: str,
    tables: list[str] | None,
    *,
    keep: bool,
    structure_only: bool = False,
) -> list[TableComparison]:
    """Restore `db` of `manifest` as the new database `scratch` and compare it with the backup; keep
    it (keep=True) or drop it (a drill). IntegrityError naming the object for a damaged file (before
    RESTORE runs) or when the copy differs (then dropped). The copy is dropped on any error."""
    repo = ctx.repository
    record = repo.put_scratch(engine.name, engine.config.name, scratch, engine.config.where)
    try:
        result = _restore_and_compare(engine, ctx, client, manifest, db, scratch, tables, structure_only)
        if not keep:
            drop(engine, client, scratch)
    except BaseException as exc:
        try:
            drop(engine, client, scratch)
        except Exception as cleanup:  # noqa: BLE001 - noted on the original error
            note_cleanup_failure(exc, f"dropping scratch database {scratch}: {cleanup}", ctx.log)
        raise
    finally:
        repo.delete_scratch(record)
    return result


def _restore_and_compare(
    engine: RestoringEngine,
    ctx: BackupContext,
    client: Any,
    manifest: Manifest,
    db: str,
    scratch: str,
    tables: list[str] | None,
    structure_only: bool,
) -> list[TableComparison]:
    config, root = engine.config, engine.config.staging_root()
    chain = ctx.repository.catalog(engine.name, manifest.target).chain(manifest)
    made: list[Path] = []
    try:
        materialise_chain(ctx, chain, db, root, made)
        if tables:
            run(client, f"CREATE DATABASE {quote_name(scratch)}", config, scratch)
            what = ", ".join(
                f"TABLE {quote_name(db)}.{quote_name(t)} AS {quote_name(scratch)}.{quote_name(t)}" for t in tables
            )
        else:
            what = f"DATABASE {quote_name(db)} AS {quote_name(scratch)}"
        settings = " SETTINGS structure_only = 1" if structure_only else ""
        run(client, f"RESTORE {what} FROM {engine.disk(native_name(manifest, db))}{settings}", config, db)
    finally:
        for link in made:
            remove_staging(link, root)
    actual = fingerprint_database(client, config, scratch)
    expected = {t: fp for t, fp in manifest.fingerprints.get(db, {}).items() if tables is None or t in tables}
    result = compare_structure(db, expected, actual) if structure_only else compare_database(db, expected, actual)
    comparison = Comparison(result, noun="tables")
    if not comparison.ok:
        raise IntegrityError(
            f"the restored copy of database {db} (backup {manifest.id}) differs from the backup: "
            f"{comparison.summary()}; it was dropped, nothing was put in place"
        )
    ctx.log(f"restored {db} of {manifest.id} as {scratch}: {comparison.summary()}")
    return result


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
