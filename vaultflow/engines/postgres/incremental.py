"""PostgreSQL 17+ native incremental and differential physical backups.

Backup (`physical_incremental_backup`): the parent's `backup_manifest` (stored by every
physical backup as backup_manifest.zst) is fetched, sha256-verified, into a private temp file
and handed to

    pg_basebackup --pgdata=- --format=tar --wal-method=fetch --checkpoint=fast
                  --manifest-checksums=<target's> --incremental=<parent's backup_manifest>

whose tar is streamed exactly like a full one (pg_physical's streaming + TarSniffer): one
pass into base.tar.zst, the backup's own backup_manifest also stored as backup_manifest.zst
(the parent of the next incremental). `--pgdata=-` is accepted together with
`--incremental` (verified on PostgreSQL 18): no local staging copy is needed. Unchanged
relation blocks travel as tiny `INCREMENTAL.<relfilenode>` stubs; everything else (new
relations, non-relation files, the fetched WAL) travels whole.

  INCREMENTAL   parent = the latest backup of any kind (the flow picks it)
  DIFFERENTIAL  parent = the latest FULL

The server must be 17+ with `summarize_wal = on`: it decides which blocks changed from its
WAL summaries (pg_wal/summaries, kept `wal_summary_keep_time`, default 10 days). A chain
that cannot continue — another cluster behind the same target (system identifier), a
promotion (timeline), summaries that no longer cover the parent's WAL range — raises
`ChainBrokenError`; the flow catches it and takes a full backup instead.

PostgreSQL 15/16 servers are handed to pg_filelevel (file-level backups under
pg_backup_start/stop), and so are their chains at restore.

Restore: pg_chain.restore_chain.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg

from vaultflow.engines.base import BackupContext, BackupPlan
from vaultflow.engines.postgres.client import (
    PostgresSettings,
    connect,
    tool_major,
)
from vaultflow.engines.postgres.filelevel import filelevel_backup
from vaultflow.engines.postgres.parent import check_identity, fetch_parent_manifest, validate_parent

# pg_physical's run_basebackup is the one streaming path for full and incremental backups.
from vaultflow.engines.postgres.physical import (
    basebackup_command,
    classify_basebackup_error,
    run_basebackup,
    server_facts,
)
from vaultflow.errors import (
    ConfigError,
    ToolError,
    VaultflowError,
)
from vaultflow.manifest import BackupKind, Manifest
from vaultflow.proc import temporary_directory

MIN_SERVER_VERSION_NUM = 170000


# ChainBrokenError lives in vaultflow.errors (every engine's chains raise it); re-exported here.
from vaultflow.errors import ChainBrokenError  # noqa: E402,F401

# -- backup --------------------------------------------------------------------------------


def incremental_command(
    bin_dir: Path, label: str, parent_manifest: Path, manifest_checksums: str = "CRC32C"
) -> list[str]:
    """The full's command (tar on stdout, WAL fetched, manifest checksums) plus --incremental."""
    return [*basebackup_command(bin_dir, label, manifest_checksums), f"--incremental={parent_manifest}"]


def _where(config: PostgresSettings) -> str:
    return f"{config.host}:{config.port}"


def _check_server(config: PostgresSettings) -> tuple[str | None, int | None]:
    """Version >= 17 and summarize_wal = on, else ConfigError. Returns (system identifier,
    current timeline), each None when this role may not read pg_control (the server's own
    checks and the label's timeline still apply)."""
    with connect(config) as conn:
        version_num = conn.info.server_version
        if version_num < MIN_SERVER_VERSION_NUM:
            version = conn.execute("SHOW server_version").fetchone()[0]
            raise ConfigError(
                f"PostgreSQL at {_where(config)} is version {version}: incremental and differential "
                "physical backups need PostgreSQL 17 or later; take full backups of this target"
            )
        if conn.execute("SHOW summarize_wal").fetchone()[0] != "on":
            raise ConfigError(
                f"PostgreSQL at {_where(config)} has summarize_wal = off: incremental and differential "
                "backups need WAL summaries. Set `summarize_wal = on` in postgresql.conf (or ALTER SYSTEM "
                "SET summarize_wal = on) and reload, then take a full backup: the chain starts there"
            )
        system = timeline = None
        try:
            system = str(conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])
            timeline = int(conn.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()[0])
        except psycopg.Error:
            pass
    return system, timeline


# pg_basebackup / server messages that mean "this chain cannot continue" (PostgreSQL 17/18).
_CHAIN_FAILURES = [
    (
        "WAL summaries are required",
        (
            "the server's WAL summaries no longer cover the parent's WAL range "
            "(summarize_wal was off for a while, or the summaries are older than "
            "wal_summary_keep_time)"
        ),
    ),
    ("system identifier in backup manifest", "the parent was taken from another cluster"),
    ("not in this server's history", "the parent's timeline is not in this server's history"),
    ("manifest requires WAL from", "the parent's WAL range does not fit this server's timeline history"),
    ("backup manifest version 1 does not support incremental", "the parent's backup_manifest is version 1"),
]


def _classify_incremental(exc: ToolError, config: PostgresSettings, parent: Manifest) -> VaultflowError:
    text = str(exc)
    detail = next(
        (ln.strip() for ln in text.splitlines() if "ERROR:" in ln or "error:" in ln),
        text.strip().splitlines()[-1] if text.strip() else "",
    )
    for needle, reason in _CHAIN_FAILURES:
        if needle in text:
            return ChainBrokenError(
                f"cannot take an incremental backup of {_where(config)} on top of "
                f"{parent.id}: {reason} ({detail}); take a full backup"
            )
    if "cannot be taken unless WAL summarization is enabled" in text:
        return ConfigError(
            f"PostgreSQL at {_where(config)} has summarize_wal = off: set `summarize_wal = "
            "on` in postgresql.conf and reload, then take a full backup"
        )
    return classify_basebackup_error(exc, config)


_INCREMENTAL_LABEL = {
    "incremental_from_lsn": re.compile(r"^INCREMENTAL FROM LSN: ([0-9A-F]+/[0-9A-F]+)$", re.MULTILINE),
    "incremental_from_timeline": re.compile(r"^INCREMENTAL FROM TLI: (\d+)$", re.MULTILINE),
}


def physical_incremental_backup(
    config: PostgresSettings,
    ctx: BackupContext,
    parent: Manifest,
    kind: BackupKind,
    *,
    bin_dir: Path,
    server_version: str,
    plan: BackupPlan | None = None,
) -> Manifest:
    """An incremental (parent: the latest backup) or differential (parent: the latest full)
    physical backup of the whole cluster, committed to ctx.repository.

    Objects and fingerprints as physical_full_backup (fingerprints after the backup, on the
    live server: exact only without concurrent writes); `parent_id` = parent.id.
    Raises ConfigError (server < 17, summarize_wal off, extra tablespaces), RefusedError
    (a parent the caller should not have passed), ChainBrokenError (take a full instead),
    IntegrityError (the parent's backup_manifest.zst is corrupt) and pg_physical's errors.
    PostgreSQL 15/16 servers take pg_filelevel's file-level path instead. With `plan` (the dump
    step of a backup in steps): the plan's id, manifest returned uncommitted for finish_backup.
    """
    major = re.match(r"\d+", server_version or "")
    if major and int(major.group()) * 10000 < MIN_SERVER_VERSION_NUM:
        return filelevel_backup(config, ctx, parent, kind, server_version=server_version, plan=plan)
    validate_parent(config, parent, kind)
    if (tools_major := tool_major(bin_dir, "pg_basebackup")) < 17:
        raise ConfigError(
            f"pg_basebackup in {bin_dir} is version {tools_major}: incremental backups need "
            "PostgreSQL 17 or later client tools; set bin_dir"
        )
    system, timeline = _check_server(config)
    check_identity(parent, system, timeline, _where(config))
    facts = server_facts(config)

    def inspect(label_text: str, manifest_system: str | None, label) -> dict:
        incremental = {key: rx.search(label_text) for key, rx in _INCREMENTAL_LABEL.items()}
        if incremental["incremental_from_lsn"] is None:
            raise ToolError(
                "pg_basebackup was asked for an incremental backup but its backup_label has "
                f"no INCREMENTAL FROM LSN: {label_text[:300]!r}"
            )
        # The same checks once more, from what the backup itself says (a role that may not
        # read pg_control, or a failover between our query and the backup's start).
        check_identity(parent, manifest_system, label.timeline, _where(config))
        from_timeline = incremental["incremental_from_timeline"]
        return {
            "system_identifier": system or manifest_system,
            "incremental_from_lsn": incremental["incremental_from_lsn"].group(1),
            "incremental_from_timeline": int(from_timeline.group(1)) if from_timeline else None,
        }

    with temporary_directory("vaultflow-incr-") as tmp:  # removed even if this process is killed
        parent_manifest = Path(tmp) / "parent_backup_manifest"
        fetch_parent_manifest(ctx, parent, parent_manifest)
        return run_basebackup(
            config,
            ctx,
            kind,
            facts=facts,
            bin_dir=bin_dir,
            server_version=server_version,
            parent_id=parent.id,
            command=lambda backup_id: incremental_command(
                bin_dir, f"vaultflow-{backup_id}", parent_manifest, config.manifest_checksums
            ),
            classify=lambda exc: _classify_incremental(exc, config, parent),
            inspect=inspect,
            plan=plan,
        )


__all__ = ["ChainBrokenError", "incremental_command", "physical_incremental_backup"]
