"""`python -m vaultflow.demo_setup`: the servers and blocks prefect.yaml's deployments run against.

    prefect server start                                   # a real API: the worker must see the blocks
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m vaultflow.demo_setup

Starts, and keeps running until Ctrl-C or SIGTERM:
- an embedded PostgreSQL 18 holding `backup_demo`, with WAL archiving into a spool
  (`archive_command = vaultflow wal-push %p --spool DIR`) and `summarize_wal = on` (PostgreSQL
  17+ incrementals need WAL summaries);
- a redis-server with `appendonly yes` in a directory the worker reads (local mode);
- a SecantusDB server (MongoDB's wire protocol; a one-node replica set, so it keeps an oplog)
  holding `backup_demo` (the seed's employees plus generated ones, and departments);
- a chDB data directory (ClickHouse in-process: no server runs) in <workdir>/clickhouse holding
  `backup_demo` (employees and attendance, MergeTree), with its backup disk beside it; filled by
  a child process that exits, because chDB locks its data directory against other processes
  while one has it open, and the worker's flow runs (processes of their own) must open it;
and saves the blocks every deployment in prefect.yaml names:

    postgres-target/demo           logical (pg_dump): demo-weekly-full, demo-weekly-drill
    postgres-target/demo-physical  the same server, physical: demo-physical-weekly-full,
                                   demo-daily-incremental, demo-daily-differential, demo-archive-logs
    redis-target/demo              local mode + AOF: every redis-demo-* deployment
    mongo-target/demo              backup_demo on the SecantusDB server: every mongo-demo-* deployment
    clickhouse-target/demo         backup_demo in the chDB data directory: every clickhouse-demo-*
                                   deployment (the worker must run on this host: it opens the
                                   data directory and reads the backup disk)
    backup-repository/demo         <workdir>/repository: all of them, verify and prune
    backup-repository/demo-offsite <workdir>/offsite: demo-daily-upload copies backups there

so that `prefect deploy --all` and a worker on this host (`VAULTFLOW_HOME=$PWD prefect worker
start --pool vaultflow`) give green runs. Connection details (no secrets: the demo servers trust
local connections) are written to <workdir>/demo-servers.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaultflow.errors import ConfigError
from vaultflow.proc import short_temp_root

READY_LINE = "vaultflow demo setup ready"


@dataclass
class DemoServers:
    pg: Any  # vaultflow.testing.postgres_server.PostgresInstance
    spool: Path
    redis: Any  # vaultflow.engines.redis.server.RedisProcess
    mongo: Any  # vaultflow.testing.mongo_server.MongoProcess
    clickhouse: Path  # chDB's data directory and backup disk (vaultflow.demo_clickhouse.clickhouse_fields)


@contextmanager
def running_demo_servers(workdir: Path) -> Iterator[DemoServers]:
    """PostgreSQL 18 (archiving into a spool, WAL summaries on), redis-server (AOF), SecantusDB
    (its oplog kept 7 days) and the place of chDB's data (<workdir>/clickhouse, nothing running),
    stopped and their data deleted on exit. The spool lives under `proc.short_temp_root()` (the
    temporary directory when others can enter it, else /tmp): the server's OS user writes it."""
    from vaultflow.testing.mongo_server import running_mongo
    from vaultflow.testing.postgres_server import embedded_bin_dir, running_postgres
    from vaultflow.testing.redis_instance import running_redis
    from vaultflow.testing.service_python import service_user_python
    from vaultflow.testing.unprivileged import give_to_service_user

    spool_parent = Path(tempfile.mkdtemp(prefix="vaultflow-demo-wal-", dir=short_temp_root()))
    give_to_service_user(spool_parent)
    spool = spool_parent / "spool"  # made now, as wal-push would (0700): archive-logs refuses a missing spool
    spool.mkdir(mode=0o700)
    give_to_service_user(spool)
    clickhouse = workdir / "clickhouse"
    settings = {
        "archive_mode": "on",
        "archive_timeout": "300",
        "summarize_wal": "on",
        "archive_command": service_user_python().command("push", "%p", "--spool", str(spool)),
    }
    try:
        with (
            running_postgres(embedded_bin_dir(), workdir, settings=settings, name="demo") as pg,
            running_redis(name="demo") as redis,
            running_mongo("demo") as mongo,
        ):
            yield DemoServers(pg, spool, redis, mongo, clickhouse)
    finally:
        shutil.rmtree(spool_parent, ignore_errors=True)
        shutil.rmtree(clickhouse, ignore_errors=True)


def demo_blocks(servers: DemoServers, repository_path: Path) -> dict[str, Any]:
    """The blocks prefect.yaml names, as '<block type slug>/<name>' -> unsaved block."""
    from vaultflow.blocks import BackupRepository, ClickHouseTarget, MongoTarget, PostgresTarget, RedisTarget
    from vaultflow.demo import MONGO_DB
    from vaultflow.demo_clickhouse import clickhouse_fields
    from vaultflow.testing.unprivileged import SERVICE_USER, running_as_root

    pg, redis = servers.pg, servers.redis
    common = {"host": pg.host, "port": pg.port, "user": pg.user, "bin_dir": str(pg.client_bin_dir)}
    return {
        "postgres-target/demo": PostgresTarget(**common, databases=["backup_demo"]),
        "postgres-target/demo-physical": PostgresTarget(
            **common,
            mode="physical",
            wal_spool=str(servers.spool),
            server_bin_dir=str(pg.bin_dir),
            restore_os_user=SERVICE_USER if running_as_root() else None,
        ),
        "redis-target/demo": RedisTarget(host=redis.host, port=redis.port, data_dir=str(redis.directory)),
        "mongo-target/demo": MongoTarget(host=servers.mongo.host, port=servers.mongo.port, databases=[MONGO_DB]),
        "clickhouse-target/demo": ClickHouseTarget(**clickhouse_fields(servers.clickhouse)),
        "backup-repository/demo": BackupRepository(local_path=str(repository_path)),
        # demo-daily-upload's destination; in production a repository with an S3 bucket
        "backup-repository/demo-offsite": BackupRepository(local_path=str(repository_path.parent / "offsite")),
    }


def save_demo_blocks(blocks: dict[str, Any]) -> None:
    for ref, block in blocks.items():
        block.save(ref.split("/", 1)[1], overwrite=True)


def require_api() -> str:
    """The Prefect API the blocks go to; a temporary one would vanish with this process."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError(
            "python -m vaultflow.demo_setup saves blocks that a worker must find: start a Prefect "
            "server (`prefect server start`) and set PREFECT_API_URL (e.g. "
            "http://127.0.0.1:4200/api), then run it again"
        )
    return url


def main(argv: list[str] | None = None) -> int:
    from vaultflow.demo import MONGO_DB, create_demo_database, fill_mongo, fill_redis
    from vaultflow.demo_clickhouse import CLICKHOUSE_DB, clickhouse_fields, fill_in_child

    parser = argparse.ArgumentParser(prog="python -m vaultflow.demo_setup", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=".vaultflow-demo", help="repository and server logs (%(default)s)")
    parser.add_argument(
        "--rows",
        type=int,
        default=5000,
        help="generated employees (PostgreSQL, MongoDB, ClickHouse) / Redis keys x10",
    )
    args = parser.parse_args(argv)
    try:
        api = require_api()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    # SIGTERM (a service manager, a test) stops the servers like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with running_demo_servers(workdir) as servers:
        create_demo_database(servers.pg, args.rows)
        fill_redis(servers.redis.client(), max(args.rows * 10, 1000))
        with servers.mongo.client() as client:
            fill_mongo(client, args.rows)
        # In a child process: this one must not hold chDB's data directory while flows run.
        clickhouse_tables = fill_in_child(servers.clickhouse, args.rows)
        blocks = demo_blocks(servers, workdir / "repository")
        save_demo_blocks(blocks)
        state = {
            "api": api,
            "repository": str(workdir / "repository"),
            "spool": str(servers.spool),
            "postgres": {
                "host": servers.pg.host,
                "port": servers.pg.port,
                "user": servers.pg.user,
                "version": servers.pg.version,
            },
            "redis": {"host": servers.redis.host, "port": servers.redis.port, "data_dir": str(servers.redis.directory)},
            "mongo": {"host": servers.mongo.host, "port": servers.mongo.port, "database": MONGO_DB},
            "clickhouse": {
                **clickhouse_fields(servers.clickhouse),
                "database": CLICKHOUSE_DB,
                "tables": {name: count for name, (count, _) in clickhouse_tables.items()},
            },
            "blocks": sorted(blocks),
        }
        state_file = workdir / "demo-servers.json"
        state_file.write_text(json.dumps(state, indent=2) + "\n")
        print(
            "\n".join(
                [
                    f"saved blocks {', '.join(sorted(blocks))} in {api}",
                    f"PostgreSQL {servers.pg.version} on {servers.pg.host}:{servers.pg.port} "
                    f"(WAL spool {servers.spool}), redis-server on {servers.redis.where}, SecantusDB "
                    f"(MongoDB wire protocol, oplog on) on {servers.mongo.host}:{servers.mongo.port}, "
                    f"chDB (ClickHouse in-process) data in {servers.clickhouse / 'data'} ("
                    + ", ".join(f"{CLICKHOUSE_DB}.{t}: {n} rows" for t, (n, _) in clickhouse_tables.items())
                    + ")",
                    "next: prefect work-pool create vaultflow --type process; prefect deploy --all; "
                    "VAULTFLOW_HOME=$PWD prefect worker start --pool vaultflow",
                    f"{READY_LINE} ({state_file}); Ctrl-C stops the servers",
                ]
            ),
            flush=True,
        )
        try:
            while True:
                signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
