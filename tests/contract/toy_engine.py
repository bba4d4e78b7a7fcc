"""A minimal engine defined only in tests: SQLite database files (stdlib sqlite3).

It proves the registry (issue 9): this module is the whole engine — its settings, its target
block, its restore options, its manifest consistency model, the engine and its registry entry — and the full-backup,
incremental-backup (falling back to a full), restore, restore-drill, verify and prune flows run
on it with no edit to flows/, tasks/, blocks/ or vaultflow/. tests/contract/test_toy_engine.py
asserts that property; the contract suite (tests/contract/test_engine_contract.py) runs on it
like on every other engine.

The "server" is a database file that applications write. A backup is one unit, `database`:
SQLite's online backup API copies the file into a scratch file (a consistent snapshot, while
writers go on), each table is fingerprinted on that copy (rows, and the sum of a 64-bit hash
of each row: independent of row order), and the copy streams into the repository as one zstd
object. SQLite has no incremental form here: the settings say so to the flows (kind_misfit,
so incremental-backup takes a full and says why) and plan_backup raises ChainBrokenError to a
direct caller. A restore streams the object back (sha256 and size checked), fingerprints the
copy and puts it in place by a rename only when it matches; a drill does the same in a scratch
directory and removes it.

    with sqlite_engine_registered() as SqliteTarget:
        full_backup(target=SqliteTarget(path="/srv/app.db"), repository=...)
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from tests.fixtures.engine_registration import defined_unregistered, registered
from vaultflow.blocks.registry import TargetBlock
from vaultflow.compare import Comparison, compare_database
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
from vaultflow.engines.registry import EngineSpec
from vaultflow.engines.settings import RestoreOptions, TargetSettings
from vaultflow.errors import ChainBrokenError, ConfigError, IntegrityError, NotFoundError, RefusedError
from vaultflow.manifest import BackupKind, BackupMode, Consistency, Fingerprint, Manifest, StoredObject
from vaultflow.pipeline import compress_into_store, write_verified

ENGINE = "sqlite"
OBJECT = "database.sqlite.zst"
GROUP = "main"  # SQLite's name for the database of a file: the fingerprints' group
UNIT = BackupUnit("database", GROUP)
FINGERPRINT_METHOD = "row-sha256-sum"
_MASK = (1 << 64) - 1


class SqliteSettings(TargetSettings):
    """A SQLite database file the worker can read. Full backups only."""

    engine_name: ClassVar[str] = ENGINE
    strategy_fits: ClassVar[dict[str, str]] = {}  # no incremental, differential or log archive

    path: str = Field(description="The SQLite database file to back up (the worker reads it).")

    def default_name(self) -> str:
        return Path(self.path).stem


@defined_unregistered  # known only inside sqlite_engine_registered()
class SqliteTarget(SqliteSettings, TargetBlock):
    """A SQLite database file, as a Prefect block: a target kind defined only in tests."""

    _block_type_name = "SQLite Target"
    _block_type_slug = "sqlite-target"


class SqliteRestoreOptions(RestoreOptions):
    """What a SQLite restore takes beyond backup_id, into, overwrite and databases."""

    integrity_check: bool = Field(
        default=False,
        description="SQLite: also run PRAGMA integrity_check on the restored copy before it is put in place.",
    )


class SqliteConsistency(Consistency):
    """The consistency point of a SQLite backup: the snapshot the online backup API copied (the
    manifest's `consistency`, listed in this engine's EngineSpec)."""

    MODE: ClassVar[BackupMode] = BackupMode.PHYSICAL  # a copy of the database file's pages
    type: Literal["sqlite-file"] = "sqlite-file"
    method: str = "sqlite3 online backup API"
    page_count: int = Field(description="pages in the copied database file")
    page_size: int = Field(description="bytes per page")


def read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to the database file `path` (never creates it)."""
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def fingerprint_tables(conn: sqlite3.Connection) -> dict[str, Fingerprint]:
    """table -> rows and the sum (mod 2**64) of the first 8 bytes of sha256(repr(row)) over its
    rows: equal for equal contents whatever the row order."""
    tables = [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    result = {}
    for table in tables:
        count = total = 0
        for row in conn.execute(f"SELECT * FROM {quote(table)}"):
            count += 1
            total = (total + int.from_bytes(hashlib.sha256(repr(row).encode()).digest()[:8], "big")) & _MASK
        result[table] = Fingerprint(count=count, digest=f"{total:016x}", method=FINGERPRINT_METHOD)
    return result


class SqliteEngine:
    """The SQLite engine (vaultflow.engines.base.Engine) of the database file `config.path`."""

    name = ENGINE
    restore_options = SqliteRestoreOptions

    def __init__(self, config: SqliteSettings):
        self.config = config

    # -- backup -----------------------------------------------------------------------------
    def check(self) -> str:
        """The SQLite library version; NotFoundError when the file is missing, ConfigError when it is
        not a SQLite database."""
        path = Path(self.config.path)
        if not path.is_file():
            raise NotFoundError(f"{self.config.name}: no SQLite database file at {path}; check the target's path")
        try:
            with closing(read_only(path)) as conn:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.config.name}: {path} is not a SQLite database ({exc})") from exc
        return sqlite3.sqlite_version

    def source_identity(self) -> str:
        """The database file's absolute path."""
        return str(Path(self.config.path).resolve())

    def plan_backup(self, ctx: BackupContext, kind: BackupKind) -> BackupPlan:
        """One unit, the database. ChainBrokenError for an incremental or differential: SQLite files
        have no incremental form here (the flows take a full instead)."""
        version = self.check()
        if kind != BackupKind.FULL:
            raise ChainBrokenError(f"{self.config.name}: a {ENGINE} target has no {kind.value} form; take full backups")
        return new_plan(self.name, self.config.name, kind, [UNIT], sqlite_version=version)

    def dump(self, ctx: BackupContext, plan: BackupPlan, unit: BackupUnit) -> UnitResult:
        """Snapshot the file with the online backup API, fingerprint the snapshot, stream it in."""
        if unit != UNIT:
            raise ValueError(f"{ENGINE} backups have no unit {unit.label!r}")
        repo = ctx.repository
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="vfsqlite-") as work:
            snapshot = Path(work) / "snapshot.db"
            with closing(read_only(Path(self.config.path))) as source, closing(sqlite3.connect(snapshot)) as copy:
                source.backup(copy)
                fingerprints = fingerprint_tables(copy)
                page_count = copy.execute("PRAGMA page_count").fetchone()[0]
                page_size = copy.execute("PRAGMA page_size").fetchone()[0]
            size = snapshot.stat().st_size
            progress = (lambda done: ctx.progress(OBJECT, done, size)) if ctx.progress else None
            with open(snapshot, "rb") as handle:
                written = compress_into_store(
                    handle,
                    repo.store,
                    repo.backup_prefix(self.name, plan.target, plan.backup_id) + OBJECT,
                    level=repo.compression_level,
                    size_hint=size,
                    progress=progress,
                )
        stored = StoredObject(
            key=OBJECT,
            role="database",
            database=GROUP,
            format="sqlite3",
            raw_size=written.raw_size,
            stored_size=written.stored_size,
            sha256=written.sha256,
        )
        return UnitResult(
            unit,
            objects=(stored,),
            fingerprints={GROUP: fingerprints},
            facts={"page_count": page_count, "page_size": page_size},
            timings={"dump": time.monotonic() - started},
        )

    def finish_backup(self, ctx: BackupContext, plan: BackupPlan, results: list[UnitResult]) -> Manifest:
        """The manifest of the one unit's result, committed last."""
        if [r.unit for r in results] != [UNIT]:
            raise ValueError(f"backup {plan.backup_id}: finish_backup needs the result of the database unit")
        (result,) = results
        manifest = Manifest(
            id=plan.backup_id,
            engine=self.name,
            target=plan.target,
            source=plan.source,
            kind=plan.kind,
            mode=BackupMode.PHYSICAL,
            started_at=plan.started_at,
            finished_at=datetime.now(UTC),
            consistency=SqliteConsistency(**result.facts),
            objects=list(result.objects),
            fingerprints=result.fingerprints,
            server_version=plan.facts["sqlite_version"],
            tool_versions={"sqlite3": sqlite3.sqlite_version},
            timings=result.timings,
            lineage=ctx.lineage,
        )
        ctx.repository.commit(manifest)
        return manifest

    def full_backup(self, ctx: BackupContext) -> Manifest:
        return backup_in_steps(self, ctx, BackupKind.FULL)

    def incremental_backup(self, ctx: BackupContext, kind: BackupKind) -> Manifest:
        """Always ChainBrokenError (no incremental form): the flows take a full backup instead."""
        return backup_in_steps(self, ctx, kind)

    # -- restore ----------------------------------------------------------------------------
    def restore(
        self,
        ctx: BackupContext,
        manifest: Manifest,
        *,
        into: str | None = None,
        overwrite: bool = False,
        databases: list[str] | None = None,
        options: SqliteRestoreOptions | None = None,
    ) -> RestoreResult:
        """Restore into the file `into` (default: `<stem>-<backup id>.db` beside the target's file).
        An existing `into` is replaced only with overwrite=True, and only by a copy that matched
        the backup. RefusedError when `into` exists without overwrite; IntegrityError for a
        corrupt object or a copy that differs from the backup's fingerprints (nothing is put in
        place then)."""
        opts = options_for(self, options, self.config.name)
        if databases not in (None, [GROUP]):
            raise ConfigError(f"a {ENGINE} backup holds one database, {GROUP!r}; databases={databases!r} names others")
        source = Path(self.config.path)
        dest = Path(into) if into else source.with_name(f"{source.stem}-{manifest.id}.db")
        if dest.exists() and not overwrite:
            raise RefusedError(f"{dest} exists: restore into a new file, or pass overwrite=True to replace it")
        started = time.monotonic()
        scratch = dest.with_name(f".{dest.name}.restoring-{os.getpid()}")
        try:
            comparison, notes = self._restore_file(ctx, manifest, scratch, opts.integrity_check)
            os.replace(scratch, dest)
        finally:
            scratch.unlink(missing_ok=True)
        return RestoreResult(
            backup_id=manifest.id,
            restored={GROUP: str(dest)},
            seconds=time.monotonic() - started,
            comparison=comparison,
            notes=notes,
        )

    def drill(self, ctx: BackupContext, manifest: Manifest) -> RestoreResult:
        """Restore into a scratch file, compare, remove it."""
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="vfsqlite-drill-") as work:
            comparison, notes = self._restore_file(ctx, manifest, Path(work) / "drill.db", integrity_check=True)
        return RestoreResult(
            backup_id=manifest.id,
            restored={GROUP: "scratch file (removed)"},
            seconds=time.monotonic() - started,
            comparison=comparison,
            notes=notes,
        )

    def _restore_file(
        self, ctx: BackupContext, manifest: Manifest, path: Path, integrity_check: bool
    ) -> tuple[Comparison, list[str]]:
        """Write the backup's database into `path` (checksums verified while streaming), compare it
        with the manifest's fingerprints. IntegrityError when it differs."""
        (obj,) = manifest.objects
        with open(path, "wb") as out:
            write_verified(
                ctx.repository.store,
                ctx.repository.object_key(manifest, obj.key),
                obj.sha256,
                obj.stored_size,
                out,
                name=obj.key,
            )
        notes = []
        with closing(read_only(path)) as conn:
            if integrity_check:
                verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
                if verdict != "ok":
                    raise IntegrityError(
                        f"restored copy of backup {manifest.id} fails PRAGMA integrity_check: {verdict}"
                    )
                notes.append("PRAGMA integrity_check: ok")
            actual = fingerprint_tables(conn)
        comparison = Comparison(compare_database(GROUP, manifest.fingerprints.get(GROUP, {}), actual))
        if not comparison.ok:
            raise IntegrityError(
                f"the restored copy of backup {manifest.id} differs from it: {comparison.summary()}; "
                "nothing was put in place"
            )
        ctx.log(f"restored copy of {manifest.id}: {comparison.summary()}")
        return comparison, notes


SPEC = EngineSpec(name=ENGINE, make_engine=SqliteEngine, consistency=(SqliteConsistency,))


@contextmanager
def sqlite_engine_registered() -> Iterator[type[SqliteTarget]]:
    """The SQLite engine and its target kind (yielded) known for the duration of the block, then
    forgotten, so tests outside see only the real engines and target kinds."""
    with registered(SPEC, SqliteTarget) as kind:
        yield kind
