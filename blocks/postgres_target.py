"""PostgresTarget: a PostgreSQL server to back up, as a Prefect block."""

from __future__ import annotations

from typing import Literal, Optional

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from blocks._common import LOGO_URL, target_name
from vaultflow.engines.postgres.client import PostgresConfig
from vaultflow.engines.postgres.engine import PostgresEngine


class PostgresTarget(Block):
    """A PostgreSQL server (and which of its databases) that vaultflow backs up.

    Example:
        ```python
        from blocks import PostgresTarget

        target = PostgresTarget.load("BLOCK_NAME")
        print(target.engine().check())
        ```
    """

    _block_type_name = "Postgres Target"
    _block_type_slug = "postgres-target"
    _description = "A PostgreSQL server backed up by vaultflow: where it is, how to log in, which databases."
    _logo_url = LOGO_URL
    _documentation_url = "https://github.com/vaultflow/vaultflow/blob/main/docs/postgres.md"

    host: str = Field(default="localhost", description="Host name or IP address of the server.")
    port: int = Field(default=5432, description="TCP port of the server.")
    user: str = Field(default="postgres", description="Role to log in as; needs to read every table "
                      "(a superuser, or pg_read_all_data for data plus superuser for role globals).")
    password: Optional[SecretStr] = Field(default=None, description="Password of the role; "
                                          "handed to tools through a temporary passfile, never argv.")
    databases: list[str] = Field(default_factory=list, description="Databases to back up; empty means "
                                 "every non-template database that accepts connections.")
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = Field(
        default="prefer", description="libpq sslmode for every connection.")
    bin_dir: Optional[str] = Field(default=None, description="Directory holding pg_dump/pg_restore; "
                                   "default: the client of the server's major version, else the newest found.")
    mode: Literal["logical", "physical"] = Field(default="logical", description="Full backups as "
                                                 "pg_dump per database (logical) or pg_basebackup of the cluster (physical).")
    wal_spool: Optional[str] = Field(default=None, description="Directory on the database host that "
                                     "archive_command spools WAL into (`vaultflow wal-push %p --spool DIR`); "
                                     "the archive-logs flow ships it.")
    server_bin_dir: Optional[str] = Field(default=None, description="Directory holding the `postgres` server "
                                          "binary used to start restored physical backups; default: found, "
                                          "same major version as the backup.")
    restore_os_user: Optional[str] = Field(default=None, description="OS user that runs a restored cluster "
                                           "when the worker runs as root; default 'postgres'.")
    wal_fetch_command: Optional[str] = Field(default=None, description="restore_command without ' %f %p' "
                                             "for point-in-time restores; default: this worker's "
                                             "`python -m vaultflow.engines.postgres.wal.cli fetch` on the repository (a local "
                                             "path, or a private spec file for S3 and mirrors).")
    manifest_checksums: Literal["CRC32C", "SHA256"] = Field(
        default="CRC32C", description="Per-file checksum algorithm of pg_basebackup's backup_manifest "
        "(physical mode), checked by pg_verifybackup and pg_combinebackup. CRC32C is fast; SHA256 is "
        "computed by the server in one process and made full backups ~1.7x slower. vaultflow's own "
        "SHA-256 of every stored object guards the repository either way.")
    data_directory: Optional[str] = Field(default=None, description="The server's data directory, readable "
                                          "by the worker; needed for file-level incremental and differential "
                                          "backups on PostgreSQL 15/16 (the worker then runs on the database "
                                          "host as the postgres OS user or a member of its group).")
    physical_fingerprints: bool = Field(default=False, description="Physical mode: also record row "
                                        "fingerprints of every table (full table scans on the server, concurrent "
                                        "with the copy; exact only when the tables are not written during the "
                                        "backup, so a busy table shows as a mismatch). Off (default): restores and "
                                        "drills check every file against the server's backup_manifest "
                                        "(pg_verifybackup), then recover and promote.")
    lock_timeout_s: float = Field(default=60.0, gt=0, description="Longest a backup waits for a table lock "
                                  "(seconds): vaultflow sessions set lock_timeout and pg_dump gets "
                                  "--lock-wait-timeout, so a session holding ACCESS EXCLUSIVE makes the backup "
                                  "fail with a retryable error naming the table instead of waiting without limit, "
                                  "and the backup never queues the application's queries behind it for longer.")
    role_passwords: bool = Field(default=True, description="Logical backups: keep every role's password hash "
                                 "(SCRAM) in the globals dump, so a restore recreates roles that can log in. "
                                 "The repository then holds the hashes: protect it. False: pg_dumpall "
                                 "--no-role-passwords (the roles come back without passwords; the globals "
                                 "then need neither superuser nor pg_read_all_data).")
    target_name: Optional[str] = Field(default=None, description="Name of this target in the repository "
                                       "layout; default: the block's name.")

    @property
    def name(self) -> str:
        return target_name(self)

    def to_config(self) -> PostgresConfig:
        return PostgresConfig(name=self.name, host=self.host, port=self.port, user=self.user,
                              password=self.password, databases=self.databases,
                              sslmode=self.sslmode, bin_dir=self.bin_dir, mode=self.mode,
                              server_bin_dir=self.server_bin_dir, restore_os_user=self.restore_os_user,
                              wal_fetch_command=self.wal_fetch_command, manifest_checksums=self.manifest_checksums,
                              data_directory=self.data_directory,
                              physical_fingerprints=self.physical_fingerprints,
                              lock_timeout_s=self.lock_timeout_s, role_passwords=self.role_passwords)

    def engine(self) -> PostgresEngine:
        return PostgresEngine(self.to_config())
