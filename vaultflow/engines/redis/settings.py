"""RedisSettings: every field of a Redis target, defined once (the RedisTarget block subclasses
it), and RedisRestoreOptions: what a Redis restore takes beyond the generic parameters.

Kept free of heavy imports (no redis-py): blocks and flows import it to build forms and check fits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ConfigDict, Field

from vaultflow.engines.settings import (
    ARCHIVE_LOGS,
    DIFFERENTIAL,
    FULL,
    INCREMENTAL,
    OptionalSecret,
    RestoreOptions,
    TargetSettings,
)
from vaultflow.errors import VaultflowError


class RedisSettings(TargetSettings):
    """A Redis server that vaultflow backs up: remotely over the replication protocol, or
    locally (data_dir set, worker on the Redis host) with AOF incrementals.

    Defaults chosen once for block and core (they had drifted): `host` "localhost" (what saved
    blocks and docs/redis.md show). The deprecated `fingerprint` field is gone from the
    definition; saved blocks that still carry it load (blocks accept and ignore unknown fields)."""

    engine_name = "redis"
    url_schemes = ("redis",)
    password_env = ("REDISCLI_AUTH",)
    strategy_fits = {
        INCREMENTAL: "a local-mode Redis target with appendonly yes",
        DIFFERENTIAL: "a local-mode Redis target with appendonly yes",
    }

    host: str = Field(default="localhost", description="Host name or IP address of the server.")
    port: int = Field(default=6379, description="TCP port of the server.")
    username: str | None = Field(
        default=None,
        description="ACL user (Redis 6+); empty for the default "
        "user. Needs +@all, or at least sync, bgsave, bgrewriteaof, info, config.",
    )
    password: OptionalSecret = Field(
        default=None,
        description="Password of the user; handed to redis-cli on its stdin (--askpass), never argv or environment.",
    )
    tls: bool = Field(default=False, description="Connect with TLS.")
    data_dir: str | None = Field(
        default=None,
        description="The server's `dir`, readable by the worker "
        "(worker on the Redis host). Set: local mode — BGSAVE copy, or with "
        "appendonly yes AOF-anchored fulls plus incremental/differential backups. "
        "Empty: remote mode (redis-cli --rdb), full backups only.",
    )
    bin_dir: str | None = Field(
        default=None,
        description="Directory holding redis-server, redis-cli and redis-check-rdb; default: found on PATH.",
    )
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to wait for a connection before the attempt fails as retryable."
    )

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def local(self) -> bool:
        return self.data_dir is not None

    @classmethod
    def kind_misfit(cls, strategy: str) -> str | None:
        if strategy == ARCHIVE_LOGS:
            return (
                "Redis has no continuous log to archive (its changes are kept by incremental-backup, as AOF increments)"
            )
        return super().kind_misfit(strategy)

    def misfit(self, strategy: str, parameters: Mapping[str, Any] | None = None) -> str | None:
        """Incremental and differential copy AOF increments on the Redis host: local mode
        (data_dir) needed. Redis has no continuous log archive of its own (archive-logs)."""
        if strategy == ARCHIVE_LOGS:
            return f"{self.name} is a Redis target: {self.kind_misfit(strategy)}"
        if strategy in (INCREMENTAL, DIFFERENTIAL) and not self.data_dir:
            return (
                f"{self.name} is backed up remotely (no data_dir), and {strategy} backups copy the AOF files "
                "on the Redis host"
            )
        return super().misfit(strategy, parameters)

    def server_misfit(self, strategy: str) -> str | None:
        """A local-mode target whose server has appendonly off has no AOF increments."""
        if strategy not in (INCREMENTAL, DIFFERENTIAL):
            return None
        try:
            enabled = self.engine().aof_enabled()
        except VaultflowError:
            return None
        return (
            None
            if enabled
            else (
                f"{self.name} has appendonly off, and {strategy} backups copy AOF "
                "increments (CONFIG SET appendonly yes, and in redis.conf)"
            )
        )

    def runtime_condition(self, strategy: str) -> str | None:
        return "its server has appendonly yes" if strategy in (INCREMENTAL, DIFFERENTIAL) else None

    def local_access(self, strategy: str, parameters: Mapping[str, Any] | None = None) -> str | None:
        """Local mode (data_dir set): every backup copies files from the server's dir (the RDB
        BGSAVE wrote, the AOF). Remote mode and restores work over the network."""
        if strategy in (FULL, INCREMENTAL, DIFFERENTIAL) and self.data_dir:
            return f"the Redis dir {self.data_dir} (local mode)"
        return None


class RedisRestoreOptions(RestoreOptions):
    """What a Redis restore takes beyond backup_id, into, overwrite and databases."""

    model_config = ConfigDict(title="Redis restore options")

    key_pattern: str | None = Field(
        default=None,
        description="Redis: restore only keys matching this "
        "glob pattern (e.g. 'user:*'), into the target server (into='original').",
    )
    into_db: int | None = Field(
        default=None, ge=0, description="Redis: the db number that the keys of a key_pattern restore go into."
    )
    port: int | None = Field(
        default=None,
        gt=0,
        lt=65536,
        description="Redis: port of the scratch redis-server a default restore starts; default: a free port.",
    )


# What vaultflow.engines.registry.restore_options("redis") answers without importing the engine.
RESTORE_OPTIONS = RedisRestoreOptions
