"""PostgresSettings: every field of a PostgreSQL target, defined once (the PostgresTarget block
subclasses it), and PostgresRestoreOptions: what a PostgreSQL restore takes beyond the generic
parameters.

Kept free of heavy imports (no psycopg): blocks and flows import it to build forms and check fits.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from vaultflow.engines.settings import (
    ARCHIVE_LOGS,
    DIFFERENTIAL,
    INCREMENTAL,
    OptionalSecret,
    RestoreOptions,
    TargetSettings,
)

SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class PostgresSettings(TargetSettings):
    """A PostgreSQL server (and which of its databases) that vaultflow backs up.

    Defaults chosen once for block and core (they had drifted): `host` "localhost" (what saved
    blocks and docs show), `sslmode` one of libpq's six values."""

    engine_name = "postgres"
    url_schemes = ("postgresql", "postgres")
    url_user_field = "user"
    password_env = ("PGPASSWORD",)
    passfile_hint = "the password file (PGPASSFILE, else ~/.pgpass)"
    strategy_fits = {
        INCREMENTAL: "a physical PostgreSQL target (mode='physical')",
        DIFFERENTIAL: "a physical PostgreSQL target (mode='physical')",
        ARCHIVE_LOGS: "a physical PostgreSQL target with a wal_spool",
    }

    @classmethod
    def passfile_password(cls, fields: Mapping[str, Any]) -> str | None:
        """The password libpq's passfile (PGPASSFILE, else ~/.pgpass) holds for these fields' host,
        port, first database (else 'postgres') and user (vaultflow.engines.postgres.passfile)."""
        from vaultflow.engines.postgres.passfile import passfile_password

        return passfile_password(
            str(fields.get("host", "localhost")),
            int(fields.get("port", 5432)),
            (fields.get("databases") or ["postgres"])[0],
            str(fields.get("user", "postgres")),
        )

    host: str = Field(default="localhost", description="Host name or IP address of the server.")
    port: int = Field(default=5432, description="TCP port of the server.")
    user: str = Field(
        default="postgres",
        description="Role to log in as; needs to read every table "
        "(a superuser, or pg_read_all_data for data plus superuser for role globals).",
    )
    password: OptionalSecret = Field(
        default=None, description="Password of the role; handed to tools through a temporary passfile, never argv."
    )
    databases: list[str] = Field(
        default_factory=list,
        description="Databases to back up; empty means every non-template database that accepts connections.",
    )
    sslmode: SslMode = Field(default="prefer", description="libpq sslmode for every connection.")
    connect_timeout: int = Field(
        default=10,
        gt=0,
        description="Seconds to wait for a connection (libpq connect_timeout) before the attempt fails as retryable.",
    )
    bin_dir: str | None = Field(
        default=None,
        description="Directory holding pg_dump/pg_restore; "
        "default: the client of the server's major version, else the newest found.",
    )
    mode: Literal["logical", "physical"] = Field(
        default="logical",
        description="Full backups as pg_dump per database (logical) or pg_basebackup of the cluster (physical).",
    )
    wal_spool: str | None = Field(
        default=None,
        description="Directory on the database host that "
        "archive_command spools WAL into (`vaultflow wal-push %p --spool DIR`); "
        "the archive-logs flow ships it.",
    )
    server_bin_dir: str | None = Field(
        default=None,
        description="Directory holding the `postgres` server "
        "binary used to start restored physical backups; default: found, "
        "same major version as the backup.",
    )
    restore_os_user: str | None = Field(
        default=None,
        description="OS user that runs a restored cluster when the worker runs as root; default 'postgres'.",
    )
    wal_fetch_command: str | None = Field(
        default=None,
        description="restore_command without ' %f %p' "
        "for point-in-time restores; default: this worker's "
        "`python -m vaultflow.engines.postgres.wal.cli fetch` on the repository (a local "
        "path, or a private spec file for S3 and mirrors).",
    )
    manifest_checksums: Literal["CRC32C", "SHA256"] = Field(
        default="CRC32C",
        description="Per-file checksum algorithm of pg_basebackup's backup_manifest "
        "(physical mode), checked by pg_verifybackup and pg_combinebackup. CRC32C is fast; SHA256 is "
        "computed by the server in one process and made full backups ~1.7x slower. vaultflow's own "
        "SHA-256 of every stored object guards the repository either way.",
    )
    data_directory: str | None = Field(
        default=None,
        description="The server's data directory, readable "
        "by the worker; needed for file-level incremental and differential "
        "backups on PostgreSQL 15/16 (the worker then runs on the database "
        "host as the postgres OS user or a member of its group).",
    )
    physical_fingerprints: bool = Field(
        default=False,
        description="Physical mode: also record row "
        "fingerprints of every table (full table scans on the server, concurrent "
        "with the copy; exact only when the tables are not written during the "
        "backup, so a busy table shows as a mismatch). Off (default): restores and "
        "drills check every file against the server's backup_manifest "
        "(pg_verifybackup), then recover and promote.",
    )
    lock_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Longest a backup waits for a table lock "
        "(seconds): vaultflow sessions set lock_timeout and pg_dump gets "
        "--lock-wait-timeout, so a session holding ACCESS EXCLUSIVE makes the backup "
        "fail with a retryable error naming the table instead of waiting without limit, "
        "and the backup never queues the application's queries behind it for longer.",
    )
    role_passwords: bool = Field(
        default=True,
        description="Logical backups: keep every role's password hash "
        "(SCRAM) in the globals dump, so a restore recreates roles that can log in. "
        "The repository then holds the hashes: protect it. False: pg_dumpall "
        "--no-role-passwords (the roles come back without passwords; the globals "
        "then need neither superuser nor pg_read_all_data).",
    )

    @property
    def where(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    def misfit(self, strategy: str, parameters: Mapping[str, Any] | None = None) -> str | None:
        """Incremental and differential need mode='physical' (pg_basebackup chains); archive-logs
        also needs a WAL spool (the wal_spool field or a spool_dir flow parameter)."""
        if strategy == ARCHIVE_LOGS:
            has_spool = bool((parameters or {}).get("spool_dir") or self.wal_spool)
            if self.mode != "physical":
                spool = "" if has_spool else " and has no wal_spool"
                return (
                    f"{self.name} takes logical backups (pg_dump){spool}: WAL archiving needs a physical "
                    "target (mode='physical', wal_spool, archive_command = 'vaultflow wal-push %p --spool DIR')"
                )
            if not has_spool:
                return (
                    f"{self.name} has no wal_spool: set it on the PostgresTarget block to the directory "
                    "archive_command spools into (vaultflow wal-push %p --spool DIR), or pass spool_dir"
                )
            return None
        if strategy in (INCREMENTAL, DIFFERENTIAL) and self.mode != "physical":
            return f"{self.name} takes logical backups, which have no {strategy} form"
        return super().misfit(strategy, parameters)

    def local_access(self, strategy: str, parameters: Mapping[str, Any] | None = None) -> str | None:
        """archive-logs reads the WAL spool archive_command fills; physical incrementals and
        differentials with a data_directory read it (file-level, PostgreSQL 15/16). pg_dump and
        pg_basebackup (fulls, 17+ incrementals) work over the network."""
        if strategy == ARCHIVE_LOGS:
            spool = (parameters or {}).get("spool_dir") or self.wal_spool
            return f"the WAL spool {spool}" if spool else None
        if strategy in (INCREMENTAL, DIFFERENTIAL) and self.mode == "physical" and self.data_directory:
            return f"the data directory {self.data_directory}"
        return None


Timeline = int | Literal["latest", "current"]


class PostgresRestoreOptions(RestoreOptions):
    """What a PostgreSQL restore takes beyond backup_id, into, overwrite and databases.

    Point in time (physical backups and the WAL archive): at most one of to_time, to_lsn,
    to_name; to_timeline alone replays that timeline's archived WAL to its end."""

    model_config = ConfigDict(title="PostgreSQL restore options")

    to_time: datetime | None = Field(
        default=None,
        description="PostgreSQL physical: replay archived WAL up to this time (recovery_target_time), then promote.",
    )
    to_lsn: str | None = Field(
        default=None,
        description="PostgreSQL physical: replay archived WAL up to "
        "this WAL location, e.g. '0/3000060' (recovery_target_lsn).",
    )
    to_name: str | None = Field(
        default=None,
        description="PostgreSQL physical: replay archived WAL up to "
        "this restore point made by pg_create_restore_point (recovery_target_name).",
    )
    to_timeline: Timeline | None = Field(
        default=None,
        description="PostgreSQL physical: the timeline "
        "recovery follows: a number, 'latest', or 'current' (the backup's own); "
        "alone, replays that timeline's archived WAL to its end.",
    )
    no_owner: bool = Field(
        default=False,
        description="PostgreSQL logical: objects and the database belong to "
        "the restoring role (pg_restore --no-owner); needed when it is not a superuser.",
    )
    no_privileges: bool = Field(
        default=False,
        description="PostgreSQL logical: restore no GRANTs, database ACL "
        "or role-specific settings (pg_restore --no-privileges); with no_owner.",
    )


# What vaultflow.engines.registry.restore_options("postgres") answers without importing the engine.
RESTORE_OPTIONS = PostgresRestoreOptions
