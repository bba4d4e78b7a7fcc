"""Redis: full backups as RDB (remote over the replication protocol, or a local BGSAVE copy),
AOF-anchored fulls plus incremental/differential increments (redis_aof), restores proven in
a scratch server (redis_restore).

  remote  `redis-cli --rdb -` (password on stdin via --askpass): the server forks and streams a
          snapshot as it would to a replica; works without filesystem access.
  local   data_dir set, worker on the Redis host: BGSAVE, wait, copy the RDB it wrote; with
          appendonly yes the full is AOF-anchored instead (see redis_aof) so that increments
          can follow it.

Every RDB is proven while it streams (redis_rdb.RdbTee): redis-check-rdb parses it and checks
its CRC64, and the per-db key and expire counts read from its RESIZEDB records must match
redis-check-rdb's count; the manifest is written only then. No scratch server at backup time:
restores and drills compare exactly (redis_compare).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Literal

from vaultflow.engines.base import (
    BackupContext,
    BackupPlan,
    BackupUnit,
    RestoreResult,
    UnitResult,
    backup_in_steps,
    commit_unit_manifest,
    commit_unless_planned,
    new_plan,
    options_for,
    planned_identity,
)
from vaultflow.engines.redis.aof import aof_full_backup, aof_incremental_backup
from vaultflow.engines.redis.client import cli_args, cli_env, cli_stdin, connect, require_local
from vaultflow.engines.redis.compare import facts_fingerprints
from vaultflow.engines.redis.consistency import RedisRdbConsistency
from vaultflow.engines.redis.rdb import RdbTee, bgsave_and_wait
from vaultflow.engines.redis.restore import restore_redis
from vaultflow.engines.redis.server import find_binary
from vaultflow.engines.redis.settings import RedisRestoreOptions, RedisSettings
from vaultflow.errors import ChainBrokenError, ConfigError, ServerUnavailableError, ToolError, VaultflowError, clause
from vaultflow.manifest import BackupKind, BackupMode, Manifest
from vaultflow.pipeline import compress_into_store, dump_into_store
from vaultflow.summary import human_size
from vaultflow.tools import tool_version

RDB_OBJECT = "dump.rdb.zst"


class RedisEngine:
    """The Redis engine (vaultflow.engines.base.Engine): RDB and AOF backups of the server that
    `config` (RedisSettings, or the RedisTarget block) names."""

    name = "redis"
    restore_options = RedisRestoreOptions

    def __init__(self, config: RedisSettings):
        self.config = config
        self._info: dict | None = None

    # -- server facts -------------------------------------------------------------------
    def check(self) -> str:
        with connect(self.config) as conn:
            self._info = conn.info("server")
        return str(self._info.get("redis_version"))

    def source_identity(self) -> str:
        """'host:port' (remote mode), 'host:port, dir <data_dir>' (local mode: the files copied)."""
        where = f"{self.config.host}:{self.config.port}"
        return f"{where}, dir {self.config.data_dir}" if self.config.local else where

    def aof_enabled(self) -> bool:
        with connect(self.config) as conn:
            return bool(conn.info("persistence").get("aof_enabled"))

    # -- backup: plan -> dump the one unit -> finish (base.backup_in_steps) ---------------
    def full_backup(self, ctx: BackupContext) -> Manifest:
        return backup_in_steps(self, ctx, BackupKind.FULL)

    def incremental_backup(self, ctx: BackupContext, kind: BackupKind) -> Manifest:
        """Increments of the AOF since the latest backup (INCREMENTAL) or full (DIFFERENTIAL)."""
        return backup_in_steps(self, ctx, kind)

    def plan_backup(self, ctx: BackupContext, kind: BackupKind) -> BackupPlan:
        """One unit: `aof` (local mode with appendonly yes: an AOF-anchored full, or the increments
        since the parent) or `rdb` (a BGSAVE copy or a replication snapshot). ChainBrokenError for
        an incremental/differential of a remote target or without a usable parent."""
        version = self.check()
        if kind != BackupKind.FULL:
            if not self.config.local:
                raise ChainBrokenError(
                    f"{self.config.name} is backed up remotely (no data_dir): incremental and "
                    "differential backups copy the AOF files, which needs data_dir and the "
                    "worker on the Redis host"
                )
            parent = ctx.repository.catalog(self.name, self.config.name).parent_for(kind, self.config.name)
            return new_plan(
                self.name, self.config.name, kind, [BackupUnit("aof")], parent=parent, server_version=version
            )
        unit = "rdb"
        if self.config.local:
            require_local(self.config, "a local-mode backup")
            if self.aof_enabled():
                unit = "aof"
        return new_plan(self.name, self.config.name, kind, [BackupUnit(unit)], server_version=version)

    def dump(self, ctx: BackupContext, plan: BackupPlan, unit: BackupUnit) -> UnitResult:
        """Stream the unit under the plan's id, proven as it passes; the manifest is built, not committed."""
        if unit.kind == "aof" and plan.kind == BackupKind.FULL:
            return UnitResult(unit, manifest=aof_full_backup(self.config, ctx, plan))
        if unit.kind == "aof":
            return UnitResult(unit, manifest=aof_incremental_backup(self.config, ctx, plan.parent, plan.kind, plan))
        if unit.kind == "rdb":
            return UnitResult(unit, manifest=self._rdb_backup(ctx, plan.facts["server_version"], plan))
        raise ValueError(f"Redis backups have no unit {unit.label!r}")

    def finish_backup(self, ctx: BackupContext, plan: BackupPlan, results: list[UnitResult]) -> Manifest:
        """Commit the manifest the one unit built (objects checked first, manifest written last)."""
        return commit_unit_manifest(ctx.repository, plan, results)

    def _rdb_backup(self, ctx: BackupContext, version: str, plan: BackupPlan | None = None) -> Manifest:
        repo, config = ctx.repository, self.config
        started, backup_id = planned_identity(plan, BackupKind.FULL)
        prefix = repo.backup_prefix(self.name, config.name, backup_id)
        timings: dict[str, float] = {}
        with repo.uncommitted(self.name, config.name, backup_id, ctx.log), RdbTee(config, ctx.log) as tee:
            t0 = time.monotonic()
            progress = (lambda done: ctx.progress(RDB_OBJECT, done, None)) if ctx.progress else None
            method: Literal["BGSAVE + copy", "replication snapshot (redis-cli --rdb)"]
            if config.local:
                method, tool = "BGSAVE + copy", {}
                written = self._copy_local_rdb(ctx, tee, prefix + RDB_OBJECT, progress)
            else:
                cli = find_binary("redis-cli", config.bin_dir)
                method, tool = "replication snapshot (redis-cli --rdb)", {"redis-cli": tool_version(cli)}
                try:
                    written = dump_into_store(
                        [*cli_args(config, cli), "--rdb", "-"],
                        cli_env(config),
                        repo.store,
                        prefix + RDB_OBJECT,
                        level=repo.compression_level,
                        progress=progress,
                        on_stderr=None,
                        wrap=tee.wrap,
                        stdin_data=cli_stdin(config),
                    )
                except ToolError as exc:
                    raise self._explain_transfer_failure(exc) from exc
            timings["transfer"] = time.monotonic() - t0
            ctx.log(f"{config.where}: {human_size(written.raw_size)} of RDB stored; waiting for redis-check-rdb")
            t0 = time.monotonic()
            proven = tee.finish()
            timings["verify"] = time.monotonic() - t0
            facts, fingerprints = proven.header, facts_fingerprints(proven.databases)
            if written.raw_size != proven.length:
                raise ToolError(
                    f"stored {written.raw_size} bytes of the RDB from {config.where} but proved "
                    f"{proven.length}; no backup was recorded"
                )
            consistency = RedisRdbConsistency(
                method=method,
                rdb_version=facts.get("rdb-version"),
                repl_id=facts.get("repl-id"),
                repl_offset=_int(facts.get("repl-offset")),
                snapshot_unix_time=_int(facts.get("ctime")),
                aof_preamble=facts.get("aof-base"),
                rdb_crc64=proven.crc64,
            )
            manifest = Manifest(
                id=backup_id,
                engine=self.name,
                target=config.name,
                kind=BackupKind.FULL,
                mode=BackupMode.RDB,
                started_at=started,
                finished_at=datetime.now(UTC),
                consistency=consistency,
                objects=[written.as_object(RDB_OBJECT, "rdb", "rdb")],
                fingerprints=fingerprints,
                server_version=facts.get("redis-ver") or version,
                tool_versions={"redis-check-rdb": tool_version(find_binary("redis-check-rdb", config.bin_dir)), **tool},
                timings=timings,
                lineage=ctx.lineage,
            )
            commit_unless_planned(repo, manifest, plan)
        return manifest

    def _explain_transfer_failure(self, exc: ToolError) -> VaultflowError:
        """redis-cli failed mid-stream: a server that went away (crash, restart, failover) is worth
        retrying later; one still answering failed for another reason, said by redis-cli."""
        try:
            connect(self.config).close()
        except ServerUnavailableError as gone:
            return ServerUnavailableError(
                f"Redis at {self.config.where} went away during the backup ({exc}); "
                f"nothing was recorded, a later attempt can succeed: {gone}"
            )
        except VaultflowError:
            pass
        return exc

    def _copy_local_rdb(self, ctx: BackupContext, tee: RdbTee, key: str, progress):
        data_dir = require_local(self.config, "a local-mode backup")
        with connect(self.config) as conn:
            try:
                dbfilename = conn.config_get("dbfilename").get("dbfilename") or "dump.rdb"
            except Exception:  # CONFIG may be denied to a backup user: the default name then
                dbfilename = "dump.rdb"
            bgsave_and_wait(conn, self.config.where, ctx.log)
        path = data_dir / dbfilename
        try:
            handle = open(path, "rb")  # an open handle survives the next BGSAVE's rename
        except OSError as exc:
            raise ConfigError(
                f"cannot read {path} (the RDB BGSAVE wrote on {self.config.where}): {clause(exc)}. "
                "Is data_dir the server's `dir`, and can the worker read it?"
            ) from exc
        with handle:
            return compress_into_store(
                tee.wrap(handle), ctx.repository.store, key, level=ctx.repository.compression_level, progress=progress
            )

    # -- restore ------------------------------------------------------------------------
    def restore(
        self,
        ctx: BackupContext,
        manifest: Manifest,
        *,
        into: str | None = None,
        overwrite: bool = False,
        databases: list[str] | None = None,
        options: RedisRestoreOptions | None = None,
    ) -> RestoreResult:
        """Default: a scratch server on a free port (or options.port), left running, compared.
        into=DIR: the files (dump.rdb or appendonlydir) in DIR, proven by a scratch start.
        into="original": replay into the target server (needs overwrite=True, or key_pattern
        for a partial restore of matching keys into `into_db`)."""
        opts = options_for(self, options, self.config.name)
        return restore_redis(
            self,
            ctx,
            manifest,
            into=into,
            overwrite=overwrite,
            databases=databases,
            key_pattern=opts.key_pattern,
            into_db=opts.into_db,
            port=opts.port,
            keep_running=True,
        )

    def drill(self, ctx: BackupContext, manifest: Manifest) -> RestoreResult:
        """Restore into a scratch server, compare, stop it and remove its files."""
        return restore_redis(
            self,
            ctx,
            manifest,
            into=None,
            overwrite=False,
            databases=None,
            key_pattern=None,
            into_db=None,
            port=None,
            keep_running=False,
        )


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
