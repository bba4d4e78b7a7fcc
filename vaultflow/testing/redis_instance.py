"""Real redis-server sources for the tests and the benchmark, run as the service user when root.

Each instance gets a private directory under `proc.short_temp_root()`, AOF on (multi-part, Redis 7+), RDB
snapshots off unless asked, and a password or an ACL user written into its 0600 redis.conf.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vaultflow.engines.redis.server import RedisProcess, find_binary, start_redis
from vaultflow.proc import short_temp_root
from vaultflow.testing.unprivileged import demote_kwargs, ensure_service_user, give_to_service_user

SOURCE_SETTINGS = {
    "appendonly": "yes",
    "appendfsync": "everysec",
    "aof-use-rdb-preamble": "yes",
    "auto-aof-rewrite-percentage": "0",
    "save": '""',
    "dbfilename": "dump.rdb",
    "enable-debug-command": "local",
    # Stock Redis waits 5 s for more replicas before a diskless sync (redis-cli --rdb too).
    "repl-diskless-sync-delay": "0",
}


def start_source_redis(
    *,
    name: str = "redis",
    password: str | None = None,
    acl_user: tuple[str, str] | None = None,
    settings: dict[str, str] | None = None,
    port: int | None = None,
) -> RedisProcess:
    """A redis-server holding test data; `acl_user` = (name, password) gets full access and the
    default user is disabled; `password` sets requirepass for the default user."""
    directory = Path(tempfile.mkdtemp(prefix=f"vfredis-{name[:16]}-", dir=short_temp_root()))
    secret_lines = []
    username = None
    if password:
        secret_lines.append(f"requirepass {password}")
    if acl_user:
        username, user_password = acl_user
        secret_lines += [f"user {username} on >{user_password} ~* &* +@all", "user default off"]
        password = user_password
    give_to_service_user(directory)
    user = ensure_service_user()
    try:
        return start_redis(
            directory,
            port=port,
            settings={**SOURCE_SETTINGS, **(settings or {})},
            secret_lines=secret_lines,
            binary=find_binary("redis-server"),
            popen_kw=demote_kwargs(),
            username=username,
            password=password,
            chown=(user.pw_uid, user.pw_gid) if user else None,
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


@contextmanager
def running_redis(**kw) -> Iterator[RedisProcess]:
    server = start_source_redis(**kw)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
