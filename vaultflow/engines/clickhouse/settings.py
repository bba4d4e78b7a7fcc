"""ClickHouseSettings: every field of a ClickHouse target, defined once (the ClickHouseTarget block
subclasses it), and ClickHouseRestoreOptions.

Kept free of heavy imports (no clickhouse_connect): blocks and flows import it to build forms.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, ConfigDict, Field, model_validator

from vaultflow.engines.settings import (
    DIFFERENTIAL,
    DRILL,
    FULL,
    INCREMENTAL,
    RESTORE,
    OptionalSecret,
    RestoreOptions,
    TargetSettings,
)
from vaultflow.errors import ConfigError
from vaultflow.fsutil import directory_problem

# Databases no backup includes: the server's own.
SYSTEM_DATABASES = ("system", "information_schema", "INFORMATION_SCHEMA")


class ClickHouseSettings(TargetSettings):
    """A ClickHouse server (HTTP or HTTPS through clickhouse-connect) or an embedded chDB data path,
    backed up with ClickHouse's own `BACKUP DATABASE ... TO Disk(backup_disk, ...)`. The worker
    reads what BACKUP wrote from `backup_dir`: it runs where that disk is mounted."""

    engine_name = "clickhouse"
    url_schemes = ("clickhouse",)
    password_env = ("CLICKHOUSE_PASSWORD",)
    # Incrementals and differentials are BACKUPs with base_backup = the parent's backup.
    strategy_fits: ClassVar[dict[str, str]] = {
        INCREMENTAL: "a ClickHouse target (BACKUP with base_backup)",
        DIFFERENTIAL: "a ClickHouse target (BACKUP with base_backup)",
    }

    interface: Literal["http", "https", "chdb"] = Field(
        default="http",
        description="How to reach ClickHouse: 'http' or 'https' (a server), or 'chdb' (the embedded "
        "engine in the worker's own process, on chdb_path).",
    )
    host: str = Field(default="localhost", description="Host name or IP address of the server (http/https).")
    port: int | None = Field(default=None, description="HTTP(S) port; default 8123 for http, 8443 for https.")
    username: str = Field(default="default", description="User to log in as (http/https).")
    password: OptionalSecret = Field(
        default=None,
        description="Password of the user; handed to the client in memory, never argv, environment or logs.",
    )
    databases: list[str] = Field(
        default_factory=list,
        description="Databases to back up; empty means every user database (not system, information_schema).",
    )
    chdb_path: str | None = Field(
        default=None,
        description="interface='chdb': the embedded engine's data directory (one per worker process).",
    )
    chdb_config_file: str | None = Field(
        default=None,
        description="interface='chdb': a ClickHouse configuration file for the embedded engine; default: "
        "one vaultflow writes beside chdb_path that declares backup_disk at backup_dir and allows it.",
    )
    backup_disk: str = Field(
        default="backups",
        description="The server's disk that BACKUP writes to (storage_configuration.disks, listed in "
        "backups.allowed_disk).",
    )
    backup_dir: str | None = Field(
        default=None,
        description="Where backup_disk's path is on the worker's filesystem: the worker reads the files "
        "BACKUP wrote there and writes restores' files there (docs/clickhouse.md).",
    )
    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to connect before failing as retryable.")

    @property
    def where(self) -> str:
        """Where the target is, for messages: 'host:port', or 'chdb:<path>'."""
        if self.interface == "chdb":
            return f"chdb:{self.chdb_path}"
        return f"{self.host}:{self.effective_port}"

    @property
    def effective_port(self) -> int:
        return self.port or (8443 if self.interface == "https" else 8123)

    def default_name(self) -> str:
        if self.interface == "chdb":
            raise ConfigError("a clickhouse target with interface='chdb' needs a target_name")
        return f"{self.host}-{self.effective_port}"

    def local_access(self, strategy: str, parameters: Mapping[str, Any] | None = None) -> str | None:
        """Backups read the files BACKUP wrote on backup_disk, restores and drills write there (at
        backup_dir); with interface='chdb' ClickHouse itself runs in the worker's process on
        chdb_path."""
        if strategy not in (FULL, INCREMENTAL, DIFFERENTIAL, DRILL, RESTORE):
            return None
        if self.interface == "chdb":
            return f"the chDB data directory {self.chdb_path} (ClickHouse runs in the worker's process)"
        return f"the backup disk {self.backup_disk!r} at {self.backup_dir or '(backup_dir not set)'}"

    def staging_root(self) -> Path:
        """backup_dir as a Path. ConfigError when it is not set or not a directory."""
        if not self.backup_dir:
            raise ConfigError(
                f"{self.name}: set backup_dir to where the disk {self.backup_disk!r} is on the worker's "
                "filesystem (the worker reads the files BACKUP writes there)"
            )
        root = Path(self.backup_dir)
        problem = directory_problem(root)
        if problem:
            raise ConfigError(
                f"{self.name}: backup_dir {root} {problem} on this worker; mount the disk "
                f"{self.backup_disk!r} there (readable by the worker) or fix backup_dir"
            )
        return root


def _as_list(value: Any) -> Any:
    """Partition ids given as one text (the command line's `table=id id2`): split at spaces (an id
    is letters, digits, '_' and '-')."""
    return value.split() if isinstance(value, str) else value


class ClickHouseRestoreOptions(RestoreOptions):
    """What a ClickHouse restore takes beyond backup_id, into, overwrite and databases."""

    model_config = ConfigDict(title="ClickHouse restore options")

    tables: list[str] | None = Field(
        default=None,
        description="ClickHouse: restore only these tables of each restored database (names, not globs).",
    )
    structure_only: bool = Field(
        default=False,
        description="ClickHouse: restore the databases and tables without their rows (RESTORE ... "
        "SETTINGS structure_only = 1); each table's schema is compared, not its rows.",
    )
    partitions: dict[str, Annotated[list[str], BeforeValidator(_as_list)]] | None = Field(
        default=None,
        description="ClickHouse: restore only these partitions of these tables, table -> partition ids "
        "(system.parts.partition_id; e.g. {'events': ['202401', '202402']}, on the command line also "
        "'events=202401 202402'); each partition is compared with its own fingerprint. Without `tables`, "
        "only the tables named here are restored.",
    )

    @model_validator(mode="after")
    def _partitions_fit(self) -> ClickHouseRestoreOptions:
        if self.partitions is not None:
            if self.structure_only:
                raise ValueError("partitions and structure_only exclude each other (structure_only restores no rows)")
            empty = [t for t, ids in self.partitions.items() if not ids]
            if empty or not self.partitions:
                raise ValueError(
                    f"partitions names no partition of {empty or 'any table'}; leave it out to restore whole tables"
                )
            outside = [t for t in self.partitions if self.tables is not None and t not in self.tables]
            if outside:
                raise ValueError(f"partitions names table {outside[0]!r}, which tables={self.tables} leaves out")
        return self

    def restored_tables(self) -> list[str] | None:
        """The tables to restore: `tables`, else the tables `partitions` names, else None (all)."""
        if self.tables is not None:
            return list(self.tables)
        return list(self.partitions) if self.partitions else None


# What vaultflow.engines.registry.restore_options("clickhouse") answers without importing the engine.
RESTORE_OPTIONS = ClickHouseRestoreOptions
