"""PostgreSQL logical backups: pg_dump per database in one exported snapshot, plus globals.

Consistency: for each database we open a REPEATABLE READ transaction, export its snapshot,
and hand it to `pg_dump --snapshot`. The per-table fingerprints are computed in that same
transaction, concurrently with the dump, so they describe exactly the rows in the dump.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import psycopg
from psycopg import sql

from vaultflow.compare import Comparison, compare_database
from vaultflow.engines.base import BackupContext, RestoreResult
from vaultflow.engines.pg_client import (PostgresConfig, choose_bin_dir, client_env, connect,
                                         dump_command, globals_command, restore_command,
                                         tool_version)
from vaultflow.errors import IntegrityError, NotFoundError, RefusedError, VaultflowError
from vaultflow.manifest import (BackupKind, Manifest, StoredObject, TableFingerprint,
                                new_backup_id)
from vaultflow.pipeline import dump_into_store, feed_process, open_verified

TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
ORDER BY 1, 2
"""


# Row hashes, cheapest first: hash_record_extended uses each column type's own hash (about
# twice as fast as hashing the row's text form) but some types (json, xml, point...) have no
# extended hash; those tables fall back to the text form. The method is recorded per table so
# a restored copy is hashed the same way.
ROW_HASH = {
    "record": "hash_record_extended(t, 0)",
    "text": "hashtextextended(t::text, 0)",
}


def fingerprint_table(conn: psycopg.Connection, schema: str, table: str, method: str | None = None) -> TableFingerprint:
    """Row count and an order-independent digest (sum of 64-bit row hashes, exact numeric)."""
    for candidate in ([method] if method else ["record", "text"]):
        query = sql.SQL("SELECT count(*), coalesce(sum({}), 0)::text FROM ONLY {}.{} AS t").format(
            sql.SQL(ROW_HASH[candidate]), sql.Identifier(schema), sql.Identifier(table))
        try:
            with conn.transaction():  # a savepoint inside the snapshot's transaction
                rows, digest = conn.execute(query).fetchone()
            return TableFingerprint(rows=rows, digest=digest, method=candidate)
        except psycopg.errors.UndefinedFunction:
            if method:
                raise
    raise AssertionError("unreachable: the text method hashes every type")


def fingerprint_tables(conn: psycopg.Connection, methods: dict[str, str] | None = None) -> dict[str, TableFingerprint]:
    """Fingerprints of every user table; `methods` (from a manifest) fixes how each is hashed."""
    methods = methods or {}
    result: dict[str, TableFingerprint] = {}
    for schema, table in conn.execute(TABLES_SQL).fetchall():
        name = f"{schema}.{table}"
        result[name] = fingerprint_table(conn, schema, table, methods.get(name))
    return result


def dump_object_name(database: str) -> str:
    return f"db/{database}.dump.zst"


class PostgresEngine:
    name = "postgres"

    def __init__(self, config: PostgresConfig):
        self.config = config
        self._server_major: int | None = None

    # -- server facts -------------------------------------------------------------------
    def check(self) -> str:
        with connect(self.config) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            self._server_major = conn.info.server_version // 10000
        return version

    @property
    def bin_dir(self):
        if self._server_major is None:
            self.check()
        return choose_bin_dir(self.config, self._server_major)

    def list_databases(self) -> list[str]:
        with connect(self.config) as conn:
            rows = conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate "
                                "AND datallowconn ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    def database_exists(self, name: str) -> bool:
        with connect(self.config) as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None

    def databases_to_back_up(self) -> list[str]:
        existing = self.list_databases()
        wanted = list(self.config.databases) or existing
        missing = [d for d in wanted if d not in existing]
        if missing:
            raise NotFoundError(f"database(s) {', '.join(missing)} do not exist on "
                                f"{self.config.host}:{self.config.port} (it has: {', '.join(existing)}); "
                                "fix the PostgresTarget's databases list")
        return wanted

    def fingerprint(self, database: str, methods: dict[str, str] | None = None) -> dict[str, TableFingerprint]:
        with connect(self.config, database) as conn:
            return fingerprint_tables(conn, methods)

    # -- backup -------------------------------------------------------------------------
    def full_backup(self, ctx: BackupContext) -> Manifest:
        repo = ctx.repository
        version = self.check()
        databases = self.databases_to_back_up()
        bin_dir = self.bin_dir
        started = datetime.now(timezone.utc)
        backup_id = new_backup_id(BackupKind.FULL, started)
        prefix = repo.backup_prefix(self.name, self.config.name, backup_id)
        objects: list[StoredObject] = []
        fingerprints: dict[str, dict[str, TableFingerprint]] = {}
        snapshots: dict[str, str] = {}
        timings: dict[str, float] = {}
        try:
            with client_env(self.config) as env:
                t0 = time.monotonic()
                written = dump_into_store(globals_command(bin_dir), env, repo.store, prefix + "globals.sql.zst",
                                          level=repo.compression_level, on_stderr=ctx.log)
                objects.append(StoredObject(key="globals.sql.zst", role="globals", format="sql",
                                            raw_size=written.raw_size, stored_size=written.stored_size,
                                            sha256=written.sha256))
                timings["globals"] = time.monotonic() - t0
                for database in databases:
                    t0 = time.monotonic()
                    obj, prints, snapshot = self._dump_database(ctx, env, bin_dir, prefix, database)
                    objects.append(obj)
                    fingerprints[database] = prints
                    snapshots[database] = snapshot
                    timings[f"dump:{database}"] = time.monotonic() - t0
            manifest = Manifest(
                id=backup_id, engine=self.name, target=self.config.name, kind=BackupKind.FULL,
                mode="logical", started_at=started, finished_at=datetime.now(timezone.utc),
                consistency={"method": "exported snapshot per database", "snapshots": snapshots},
                objects=objects, fingerprints=fingerprints, server_version=version,
                tool_versions={"pg_dump": tool_version(bin_dir, "pg_dump")},
                timings=timings, lineage=ctx.lineage)
            repo.commit(manifest)
        except BaseException:
            try:
                repo.discard_payload(self.name, self.config.name, backup_id)
            except Exception as cleanup:  # the run's error matters more; prune collects later
                ctx.log(f"could not remove partial payload of {backup_id}: {cleanup}")
            raise
        return manifest

    def _dump_database(self, ctx: BackupContext, env: dict, bin_dir, prefix: str, database: str):
        name = dump_object_name(database)
        with connect(self.config, database, autocommit=False) as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
            expected = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            visible = conn.execute("SELECT pg_current_snapshot()::text").fetchone()[0]
            prints: dict[str, TableFingerprint] = {}
            failure: list[BaseException] = []

            def take_fingerprints() -> None:
                try:
                    # No parallel workers: pg_dump and zstd need the cores more.
                    conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
                    prints.update(fingerprint_tables(conn))
                except BaseException as exc:  # re-raised in the caller's thread below
                    failure.append(exc)

            worker = threading.Thread(target=take_fingerprints, name=f"fingerprint-{database}")
            worker.start()
            progress = (lambda done: ctx.progress(name, done, expected)) if ctx.progress else None
            try:
                written = dump_into_store(dump_command(bin_dir, database, snapshot), env, ctx.repository.store,
                                          prefix + name, level=ctx.repository.compression_level,
                                          progress=progress, on_stderr=ctx.log)
            finally:
                worker.join()  # the snapshot must stay open until both readers finish
            if failure:
                raise VaultflowError(f"fingerprinting {database} failed: {failure[0]}") from failure[0]
            conn.rollback()
        obj = StoredObject(key=name, role="database-dump", database=database, format="pg_dump-custom",
                           raw_size=written.raw_size, stored_size=written.stored_size, sha256=written.sha256)
        return obj, prints, visible

    # -- restore ------------------------------------------------------------------------
    def restore(self, ctx: BackupContext, manifest: Manifest, *, into: str | None = None,
                overwrite: bool = False, databases: list[str] | None = None,
                no_owner: bool = False) -> RestoreResult:
        dumps = [o for o in manifest.objects if o.role == "database-dump"]
        if databases:
            unknown = set(databases) - {o.database for o in dumps}
            if unknown:
                raise NotFoundError(f"backup {manifest.id} has no database {', '.join(sorted(unknown))}")
            dumps = [o for o in dumps if o.database in databases]
        if into and len(dumps) != 1:
            raise RefusedError(f"`into` names one database but backup {manifest.id} holds {len(dumps)}; "
                               "pick one with `databases`")
        targets = {o.database: into or default_restore_name(o.database, manifest.id) for o in dumps}
        clashes = [t for t in targets.values() if self.database_exists(t)]
        if clashes and not overwrite:
            raise RefusedError(f"database(s) {', '.join(clashes)} already exist on {self.config.host}:"
                               f"{self.config.port}; nothing was touched. Restore under another name "
                               "(`into`) or pass overwrite=True to replace it")
        start = time.monotonic()
        results = []
        with client_env(self.config) as env:
            for obj in dumps:
                results += self._restore_database(ctx, manifest, obj, targets[obj.database], env, no_owner)
        return RestoreResult(backup_id=manifest.id, restored=targets, seconds=time.monotonic() - start,
                             comparison=Comparison(results))

    def _restore_database(self, ctx, manifest, obj, target: str, env: dict, no_owner: bool):
        """Restore into a scratch name, verify, then move into place: failure loses nothing."""
        scratch = f"{target[:40]}_vf_{int(time.time() * 1000) % 10**9}"
        self.create_database(scratch)
        try:
            reader, verifying, raw = open_verified(ctx.repository.store, ctx.repository.object_key(manifest, obj.key),
                                                   obj.sha256, obj.stored_size, name=f"{manifest.id}/{obj.key}")
            with raw:
                feed_process(reader, restore_command(self.bin_dir, scratch, no_owner), env, on_stderr=ctx.log)
                verifying.check()
            expected = manifest.fingerprints.get(obj.database, {})
            actual = self.fingerprint(scratch, {t: f.method for t, f in expected.items()})
            table_results = compare_database(obj.database, expected, actual)
            replacing = self.database_exists(target)
            if replacing and any(t.status != "match" for t in table_results):
                raise IntegrityError(f"restored copy of {obj.database} does not match backup {manifest.id}'s "
                                     f"fingerprints; {target} was left untouched")
            with connect(self.config) as conn:
                if replacing:
                    conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(target)))
                conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                    sql.Identifier(scratch), sql.Identifier(target)))
        except BaseException:
            self.drop_database(scratch)
            raise
        return table_results

    def drill(self, ctx: BackupContext, manifest: Manifest) -> RestoreResult:
        """Each database into vaultflow_drill_<db>_<time>, compared, then dropped."""
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        tables, seconds, restored = [], 0.0, {}
        for database in sorted({o.database for o in manifest.objects if o.database}):
            scratch = f"vaultflow_drill_{database[:30]}_{stamp}"
            try:
                result = self.restore(ctx, manifest, into=scratch, databases=[database])
                tables += result.comparison.tables
                seconds += result.seconds
                restored.update(result.restored)
            finally:
                self.drop_database(scratch)
        return RestoreResult(backup_id=manifest.id, restored=restored, seconds=seconds,
                             comparison=Comparison(tables))

    def create_database(self, name: str) -> None:
        with connect(self.config) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        with connect(self.config) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def default_restore_name(database: str, backup_id: str) -> str:
    """A new database name that says where it came from: <db>_restore_20261126t020000."""
    return f"{database[:40]}_restore_{backup_id[:15].lower()}"
