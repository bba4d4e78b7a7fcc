"""Redis connection settings, the redis-cli environment, and the keyspace fingerprint.

Secrets never reach argv or an environment: redis-py gets the password in-process,
redis-cli through a pipe on its stdin (`--askpass`), test servers through a 0600 redis.conf.
"""

from __future__ import annotations

import os
from pathlib import Path

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from vaultflow.engines.redis.settings import RedisSettings
from vaultflow.errors import (
    AuthenticationError,
    ConfigError,
    ServerUnavailableError,
    TransientError,
    VaultflowError,
    clause,
)
from vaultflow.fsutil import directory_problem
from vaultflow.manifest import Fingerprint

KEYSPACE = "keyspace"  # the fingerprints entry for the whole dataset (DEBUG DIGEST)


def connect(config: RedisSettings, db: int = 0) -> redis.Redis:
    """A checked connection (PING); errors say what is wrong and whether retrying helps."""
    conn = redis.Redis(
        host=config.host,
        port=config.port,
        db=db,
        username=config.username,
        password=config.password.get_secret_value() if config.password else None,
        ssl=config.tls,
        socket_connect_timeout=config.connect_timeout,
        socket_timeout=max(60.0, config.connect_timeout),
        client_name="vaultflow",
        retry=Retry(NoBackoff(), 0),
    )
    try:
        # No retries for the first login: redis-py counts AuthenticationError as a ConnectionError
        # and would retry a wrong password for ~4 s; an unreachable server is retried by the flow.
        conn.ping()
    except redis.exceptions.RedisError as exc:
        conn.close()
        raise classify_error(exc, config) from exc
    conn.set_retry(Retry(ExponentialBackoff(cap=10, base=1), 3))  # later hiccups: redis-py's usual retries
    return conn


def classify_error(exc: Exception, config: RedisSettings) -> VaultflowError:
    text = str(exc)
    if (
        isinstance(exc, redis.exceptions.AuthenticationError)
        or "WRONGPASS" in text
        or "NOAUTH" in text
        or "invalid password" in text
        or "Authentication required" in text
        or isinstance(exc, redis.exceptions.AuthenticationWrongNumberOfArgsError)
    ):
        who = f"user {config.username!r}" if config.username else "the default user"
        return AuthenticationError(
            f"Redis at {config.where} refused the login of {who}: {config.login_hint()} ({text})"
        )
    if isinstance(exc, redis.exceptions.BusyLoadingError):
        return TransientError(f"Redis at {config.where} is still loading its data; retry later ({text})")
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return ServerUnavailableError(
            f"cannot reach Redis at {config.where}: {clause(text)}. Check host, port, tls and that the server is running"
        )
    if isinstance(exc, redis.exceptions.NoPermissionError) or "NOPERM" in text or "no permissions" in text:
        who = f"user {config.username!r}" if config.username else "the default user"
        return AuthenticationError(
            f"Redis at {config.where}: {who} lacks a permission vaultflow needs ({text}); "
            "give it the ACL in docs/redis.md (remote mode: +ping +info +client|setname "
            "+replconf +sync +psync) — retrying will not help"
        )
    return VaultflowError(f"Redis at {config.where}: {text}")


def cli_env(config: RedisSettings) -> dict[str, str]:
    """Environment for redis-cli, without any REDISCLI_AUTH of ours or the caller's."""
    return {k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"}


def cli_args(config: RedisSettings, binary: Path) -> list[str]:
    """redis-cli's connection options. With a password, `--askpass` makes it read the password
    from stdin (see cli_stdin): neither argv nor the environment ever holds it."""
    args = [str(binary), "-h", config.host, "-p", str(config.port), "--no-auth-warning"]
    if config.username:
        args += ["--user", config.username]
    if config.password is not None:
        args.append("--askpass")
    if config.tls:
        args.append("--tls")
    return args


def cli_stdin(config: RedisSettings) -> bytes | None:
    return (config.password.get_secret_value() + "\n").encode() if config.password is not None else None


def server_info(conn: redis.Redis) -> dict:
    return conn.info("all")


def keyspace_counts(conn: redis.Redis) -> dict[int, tuple[int, int]]:
    """db number -> (keys, keys with a TTL), from INFO keyspace."""
    counts = {}
    for name, stats in conn.info("keyspace").items():
        if name.startswith("db") and isinstance(stats, dict):
            counts[int(name[2:])] = (int(stats.get("keys", 0)), int(stats.get("expires", 0)))
    return counts


def fingerprint_server(conn: redis.Redis, mode: str = "counts") -> dict[str, dict[str, Fingerprint]]:
    """Key count per db (and how many have a TTL) from INFO keyspace; mode "digest" adds DEBUG
    DIGEST of the whole dataset (only to check backups made before issue 8, which recorded it;
    it does not change with consumer-group state, so it is never recorded any more).

    DEBUG needs a server vaultflow started (scratch servers allow it from localhost).
    """
    result: dict[str, dict[str, Fingerprint]] = {}
    total = 0
    for db, (keys, expires) in sorted(keyspace_counts(conn).items()):
        result[f"db{db}"] = {"keys": Fingerprint(count=keys, digest=f"expires={expires}", method="count")}
        total += keys
    if mode == "digest":
        digest = conn.execute_command("DEBUG", "DIGEST")
        digest = digest.decode() if isinstance(digest, bytes) else str(digest)
        result[KEYSPACE] = {"all": Fingerprint(count=total, digest=digest, method="debug-digest")}
    return result


def require_local(config: RedisSettings, what: str) -> Path:
    if not config.data_dir:
        raise ConfigError(
            f"{what} needs the server's data directory on this worker: set data_dir on the "
            f"RedisTarget {config.name} (and run the worker on the Redis host)"
        )
    path = Path(config.data_dir)
    problem = directory_problem(path)
    if problem:
        raise ConfigError(
            f"the Redis data directory {path} of {config.name} (its data_dir) {problem} on this worker: set "
            "data_dir to the server's `dir` (CONFIG GET dir), check that its volume is mounted, and run the "
            "worker on the Redis host as the redis user or a member of its group"
        )
    return path
