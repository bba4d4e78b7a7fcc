"""MongoSettings: every field of a MongoDB target, defined once (the MongoTarget block subclasses
it), and MongoRestoreOptions: what a MongoDB restore takes beyond the generic parameters.

Kept free of heavy imports (no pymongo): blocks and flows import it to build forms and check fits.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from vaultflow.engines.settings import (
    ARCHIVE_LOGS,
    DIFFERENTIAL,
    INCREMENTAL,
    OptionalSecret,
    RestoreOptions,
    TargetSettings,
)

ReadPreference = Literal["primary", "primaryPreferred", "secondary", "secondaryPreferred", "nearest"]

# Databases no backup includes: the server's own (admin holds users and roles, which a backup
# reads through usersInfo/rolesInfo instead; local holds the oplog; config is sharding state).
SYSTEM_DATABASES = ("admin", "local", "config")


def namespace_matches(patterns: list[str], database: str, collection: str) -> bool:
    """Whether 'database.collection' matches one of the glob `patterns` (exact names match too)."""
    namespace = f"{database}.{collection}"
    return any(fnmatch.fnmatchcase(namespace, pattern) for pattern in patterns)


class MongoSettings(TargetSettings):
    """A MongoDB replica set (or a single-node one: the oplog is needed) that vaultflow backs up
    with logical dumps in mongodump's archive format, oplog ranges as incrementals, and oplog
    slices for point-in-time restore."""

    engine_name = "mongodb"
    url_schemes = ("mongodb",)
    # Incrementals and differentials are oplog ranges, archive-logs ships oplog slices: all need
    # only a server that keeps an oplog, which the run itself checks (runtime_condition).
    strategy_fits: ClassVar[dict[str, str]] = {
        INCREMENTAL: "a MongoDB target (oplog ranges)",
        DIFFERENTIAL: "a MongoDB target (oplog ranges)",
        ARCHIVE_LOGS: "a MongoDB target (oplog slices)",
    }

    host: str = Field(default="localhost", description="Host name or IP address of a replica set member.")
    port: int = Field(default=27017, description="TCP port of the server.")
    username: str | None = Field(
        default=None,
        description="User to authenticate as (SCRAM); empty: no authentication. "
        "Backups need the built-in 'backup' role, restores 'restore' (docs/mongodb.md).",
    )
    password: OptionalSecret = Field(
        default=None, description="Password of the user; handed to the driver in memory, never argv or environment."
    )
    auth_source: str = Field(default="admin", description="Database the user is defined in.")
    tls: bool = Field(default=False, description="Connect with TLS.")
    tls_ca_file: str | None = Field(
        default=None, description="CA certificate file (PEM) that signed the server's certificate; with tls."
    )
    databases: list[str] = Field(
        default_factory=list,
        description="Databases to back up; empty means every user database (not admin, local, config).",
    )
    exclude_collections: list[str] = Field(
        default_factory=list,
        description="Collections to leave out, as 'db.collection' or a glob over it ('app.cache_*', '*.tmp').",
    )
    read_preference: ReadPreference = Field(
        default="primary",
        description="Which member the dump reads from: the primary (default), or a secondary to spare it.",
    )
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to find a server before the attempt fails as retryable."
    )
    oplog_slice_seconds: int = Field(
        default=600,
        gt=0,
        description="archive-logs: the longest an oplog slice spans (seconds) before it is cut (default 10 minutes).",
    )
    oplog_slice_bytes: int = Field(
        default=64 << 20,
        gt=0,
        description="archive-logs: the most BSON bytes one oplog slice holds before it is cut (default 64 MiB).",
    )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def misfit(self, strategy: str, parameters: Mapping[str, Any] | None = None) -> str | None:
        """Every MongoDB target can run every strategy; the server must keep an oplog (a replica
        set member), which the backup itself checks."""
        return super().misfit(strategy, parameters) if strategy not in self.strategy_fits else None

    def runtime_condition(self, strategy: str) -> str | None:
        return "its server keeps an oplog (a replica set member)" if strategy in self.strategy_fits else None


class MongoRestoreOptions(RestoreOptions):
    """What a MongoDB restore takes beyond backup_id, into, overwrite and databases.

    Point in time: at most one of to_time, to_ts; the newest full before it, then the oplog (from
    incrementals and archived slices) replayed up to it."""

    model_config = ConfigDict(title="MongoDB restore options")

    to_time: datetime | None = Field(
        default=None,
        description="MongoDB: replay the oplog up to this time (entries with wall time at or before it).",
    )
    to_ts: str | None = Field(
        default=None,
        description="MongoDB: replay the oplog up to and including this oplog timestamp, 'SECONDS:INCREMENT' "
        "(e.g. '1764400000:3').",
    )
    namespaces: list[str] | None = Field(
        default=None,
        description="MongoDB: restore only these namespaces, 'db.collection' or globs ('app.*', '*.orders').",
    )
    rename: dict[str, str] | None = Field(
        default=None,
        description="MongoDB: restore namespaces under new names, pattern -> replacement with one '*' each "
        "(e.g. {'app.*': 'app_copy.*'}) or none ('app.orders': 'archive.orders'), as mongorestore "
        "--nsFrom/--nsTo; the first matching rule wins, collections no rule matches go to <db>_restore_<time>.",
    )
    users_and_roles: bool = Field(
        default=False,
        description="MongoDB: also create each restored database's users and roles (from the backup) on the "
        "database it was restored into, their role references rewritten; an existing one is an error.",
    )


# What vaultflow.engines.registry.restore_options("mongodb") answers without importing the engine.
RESTORE_OPTIONS = MongoRestoreOptions
