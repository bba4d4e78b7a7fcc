"""What a PostgreSQL backup records about its consistency point (Manifest.consistency), and the
chain rules of physical backups (EngineSpec.chain_rules).

    postgres-logical    pg_dump per database, each in an exported snapshot; the databases' own
                        properties (recreated by every restore)
    postgres-physical   pg_basebackup (full, 17+ native incremental) or pg_backup_start/stop
                        file-level (15/16 incrementals): LSNs, timeline, WAL files, system
                        identifier, unlogged tables

Light on purpose (pydantic only): manifest parsing imports it through the registry.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final, Literal

from pydantic import Field

from vaultflow.engines.postgres.filestate import METHOD as FILE_LEVEL  # PostgreSQL 15/16 incrementals
from vaultflow.manifest import BackupMode, Consistency, Manifest, Strict

PG_BASEBACKUP: Final = "pg_basebackup"


class DatabaseProperties(Strict):
    """A PostgreSQL database's own properties (pg_database, pg_db_role_setting), recorded at
    backup time so a logical restore under any name recreates the database as it was."""

    encoding: str = Field(description="server encoding, e.g. 'UTF8', 'LATIN1'")
    collate: str = Field(description="LC_COLLATE")
    ctype: str = Field(description="LC_CTYPE")
    locale_provider: str = Field(default="libc", description="'libc', 'icu' or 'builtin'")
    locale: str | None = Field(default=None, description="ICU locale (icu) or builtin locale (builtin)")
    icu_rules: str | None = Field(default=None, description="ICU tailoring rules (PostgreSQL 16+)")
    owner: str = Field(description="role that owns the database")
    acl: list[str] | None = Field(
        default=None, description="aclitems in order ('=T/alice', 'bob=c/alice'); None = the default privileges"
    )
    connection_limit: int = -1
    comment: str | None = None
    settings: list[str] = Field(default_factory=list, description="ALTER DATABASE ... SET, as 'name=value'")
    role_settings: dict[str, list[str]] = Field(
        default_factory=dict, description="ALTER ROLE r IN DATABASE ... SET: role -> ['name=value', ...]"
    )


class PostgresLogicalConsistency(Consistency):
    """A logical backup: one pg_dump per database, each in its own exported snapshot."""

    MODE: ClassVar[BackupMode] = BackupMode.LOGICAL
    type: Literal["postgres-logical"] = "postgres-logical"
    method: str = "exported snapshot per database"
    snapshots: dict[str, str] = Field(
        default_factory=dict, description="database -> pg_current_snapshot() of its dump's transaction"
    )
    database_properties: dict[str, DatabaseProperties] | None = Field(
        default=None,
        description="database -> its properties at backup time; None in manifests written "
        "before vaultflow recorded them (restores then use the server's defaults)",
    )


class FileLevelCounts(Strict):
    """What a PostgreSQL 15/16 file-level incremental copied."""

    copied: int = Field(description="files copied whole (changed since the parent)")
    copied_bytes: int
    unchanged: int = Field(description="files left to the chain")
    listed: int = Field(description="files in the data directory's list")


class PostgresPhysicalConsistency(Consistency):
    """A physical backup of the whole cluster (any kind): where its WAL starts and stops."""

    MODE: ClassVar[BackupMode] = BackupMode.PHYSICAL
    type: Literal["postgres-physical"] = "postgres-physical"
    method: Literal["pg_basebackup", "pg_backup_start/stop file-level"] = PG_BASEBACKUP
    start_lsn: str
    stop_lsn: str
    timeline: int
    start_wal_file: str = Field(description="first WAL file a restore needs")
    stop_wal_file: str | None = Field(
        default=None, description="last WAL file the backup needs (file-level backups; else derived from stop_lsn)"
    )
    checkpoint_lsn: str
    wal_ranges: list[dict[str, Any]] = Field(default_factory=list, description="backup_manifest's WAL-Ranges, verbatim")
    label: str | None = None
    manifest_checksums: str | None = Field(
        default=None,
        description="backup_manifest's per-file checksum algorithm (absent: written before it was recorded, SHA256)",
    )
    system_identifier: str | None = None
    unlogged_tables: dict[str, list[str]] = Field(
        default_factory=dict,
        description="database -> unlogged tables ('schema.table'): a restore brings them back empty",
    )
    incremental_from_lsn: str | None = None
    incremental_from_timeline: int | None = None
    files: FileLevelCounts | None = Field(default=None, description="file-level incrementals: what was copied")

    @property
    def file_level(self) -> bool:
        """A PostgreSQL 15/16 file-level backup (restored by laying tars over its chain)."""
        return self.method == FILE_LEVEL


class PhysicalChainRules:
    """Links of a physical chain belong to one cluster (system identifier) and one timeline."""

    def check_link(self, parent: Manifest, child: Manifest) -> str | None:
        """None when `child` may follow `parent`, else why not (vaultflow.chain.ChainRules)."""
        p, c = parent.consistency, child.consistency
        if not isinstance(p, PostgresPhysicalConsistency) or not isinstance(c, PostgresPhysicalConsistency):
            return None  # the generic walk already refuses a chain that mixes modes
        if p.system_identifier and c.system_identifier and p.system_identifier != c.system_identifier:
            return (
                f"{child.id} is of system identifier {c.system_identifier}, its parent {parent.id} of "
                f"{p.system_identifier}: the chain mixes clusters"
            )
        if p.timeline != c.timeline:
            return (
                f"{child.id} is on timeline {c.timeline}, its parent {parent.id} on timeline {p.timeline}: "
                "an incremental never crosses a timeline switch"
            )
        return None


CONSISTENCY_MODELS = (PostgresLogicalConsistency, PostgresPhysicalConsistency)
CHAIN_RULES = PhysicalChainRules()
