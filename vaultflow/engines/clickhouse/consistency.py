"""What a ClickHouse backup records about itself (Manifest.consistency).

    clickhouse-backup   one native BACKUP per database, written to the backup disk and copied
                        into the repository file by file; consistent per table (each table's
                        parts are taken at one moment), not across tables written meanwhile.
                        Incrementals and differentials were taken with base_backup = the
                        parent's backup of the same database (CHAIN_RULES checks the uuids).

Light on purpose (pydantic only): manifest parsing imports it through the registry.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from vaultflow.manifest import BackupMode, Consistency, Manifest, Strict


class NativeBackup(Strict):
    """One database's BACKUP: the name it was written under on the backup disk and the uuid and
    time its `.backup` metadata records."""

    name: str = Field(description="the backup's path on the backup disk when it was taken (its staging name)")
    uuid: str = Field(description="the backup's uuid (.backup <uuid>)")
    timestamp: str = Field(description="the server's time of the backup (.backup <timestamp>, server local time)")
    files: int = Field(description="files the .backup metadata lists")
    base_backup_uuid: str | None = Field(default=None, description="the base backup's uuid (incrementals)")


class ClickHouseBackupConsistency(Consistency):
    """A backup of ClickHouse databases with BACKUP DATABASE ... TO Disk."""

    MODE: ClassVar[BackupMode] = BackupMode.NATIVE
    type: Literal["clickhouse-backup"] = "clickhouse-backup"
    method: str = Field(default="BACKUP DATABASE ... TO Disk", description="how the backup was taken")
    backup_disk: str = Field(description="the server disk BACKUP wrote to")
    databases: dict[str, NativeBackup] = Field(description="database -> its native backup")


class BaseBackupRules:
    """Each database of an incremental was taken on its parent's backup of that database: the
    base uuid its `.backup` records is the parent's uuid (ClickHouse writes no base uuid when no
    file came from the base: nothing to check then)."""

    def check_link(self, parent: Manifest, child: Manifest) -> str | None:
        """None when `child` may follow `parent`, else why not (vaultflow.chain.ChainRules)."""
        p, c = parent.consistency, child.consistency
        if not isinstance(p, ClickHouseBackupConsistency) or not isinstance(c, ClickHouseBackupConsistency):
            return None
        for database, native in c.databases.items():
            base = p.databases.get(database)
            if base is None:
                return f"backup {child.id} holds database {database}, which its parent {parent.id} does not"
            if native.base_backup_uuid and native.base_backup_uuid != base.uuid:
                return (
                    f"database {database} of backup {child.id} was taken on base backup {native.base_backup_uuid}, "
                    f"but its parent {parent.id} is {base.uuid}"
                )
        return None


CONSISTENCY_MODELS = (ClickHouseBackupConsistency,)
CHAIN_RULES = BaseBackupRules()
