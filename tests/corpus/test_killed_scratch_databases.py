"""Scratch databases of killed logical restores and drills are collected by the next run (issue 8,
section 9).

A logical drill and a restore `into=` run in a child process (killed_backup_child.py) and are
SIGKILLed while pg_restore fills their scratch database. The database is still there right
after the kill, with its record in the repository; the next restore (after the killed drill)
and the next drill (after the killed restore) of the same target drop it and say so, one line
each. Databases named like scratch databases but without a record are never touched.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import psycopg

from tests.corpus.test_killed_runs import GUARD_S, Case, backup, pg_case, run_child
from tests.fixtures.postgres import MakeDb, traversable_tmp_dir
from tests.fixtures.processes import descendants, live
from vaultflow.engines.base import BackupContext
from vaultflow.repository import SCRATCH_TTL, Repository
from vaultflow.stores import LocalStore, get_bytes, put_bytes


def databases(server, pattern: str) -> set[str]:
    return {row[0] for row in server.execute("SELECT datname FROM pg_database") if re.fullmatch(pattern, row[0])}


def sessions_on(server, name: str) -> int:
    return server.execute(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{name}'")[0][0]


def restoring_into(server, pattern: str):
    """kill_when for run_child: the child's pg_restore runs and pg_stat_activity shows a session
    on a database named `pattern` (the scratch database being filled)."""
    conn = psycopg.connect(server.conninfo(), autocommit=True)

    def check(child: subprocess.Popen) -> bool:
        if not any(info["name"] == "pg_restore" for _, info in live(descendants(child.pid), "name")):
            return False
        rows = conn.execute("SELECT datname FROM pg_stat_activity WHERE datname IS NOT NULL").fetchall()
        return any(re.fullmatch(pattern, row[0]) for row in rows)

    check.close = conn.close  # type: ignore[attr-defined]
    return check


def scratch_records(repo: Repository, target: str) -> list[dict]:
    return [json.loads(get_bytes(repo.store, info.key)) for info in repo.store.list(f"postgres/{target}/scratch/")]


def kill_while_restoring(case: Case, server, pattern: str) -> tuple[str, dict]:
    """Run case.job in a child, SIGKILL it while pg_restore fills a database named `pattern`;
    returns that database (still there) and its record."""
    before = databases(server, pattern)
    with traversable_tmp_dir("vfkilled-") as tmp:
        marker = secrets.token_hex(8)
        kill_when = restoring_into(server, pattern)
        try:
            run = run_child(case, tmp, marker, kill_when=kill_when)
        finally:
            kill_when.close()
        assert run.killed
        _, alive = psutil.wait_procs(run.family, timeout=GUARD_S)  # pg_restore is tied to the run
        assert not alive, f"processes outlived the killed run: {alive}"
    left = databases(server, pattern) - before
    assert len(left) == 1, f"expected the killed run's scratch database, found {left}"
    (name,) = left
    records = [r for r in scratch_records(case.repo, case.engine.config.name) if r["database"] == name]
    assert len(records) == 1, scratch_records(case.repo, case.engine.config.name)
    record = records[0]
    assert record["host"] == socket.gethostname() and not psutil.pid_exists(record["pid"])
    assert record["server"] == f"{server.host}:{server.port}"
    deadline = time.monotonic() + GUARD_S  # the killed pg_restore's backend ends on its own
    while sessions_on(server, name) and time.monotonic() < deadline:
        time.sleep(0.1)
    return name, record


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def forge_record(repo: Repository, target: str, scratch: str, server: str, **changes) -> str:
    """A scratch record as put_scratch writes it, for `scratch`, held by a dead process; `changes`
    replace fields of it."""
    key = repo.put_scratch("postgres", target, scratch, server)
    doc = {**json.loads(get_bytes(repo.store, key)), "pid": dead_pid(), **changes}
    put_bytes(repo.store, key, json.dumps(doc).encode())
    return key


def removed_line(name: str, record: dict) -> str:
    return (
        f"removed scratch database {name} left by a killed run (pid {record['pid']} on host {record['host']}, "
        f"started {record['time']})"
    )


def test_killed_restore_and_drill_leave_no_scratch_database(pg_server, fresh_db: MakeDb, tmp_path: Path) -> None:
    server = pg_server
    db = fresh_db(server)
    server.execute(
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS v FROM generate_series(1, 150000) g",
        db,
    )  # ~11 MB: pg_restore runs for a moment
    server.execute("CREATE INDEX ON t (v)", db)
    case = pg_case("scratch", server, db, LocalStore(tmp_path / "repo"), "logical")
    manifest = backup(case)
    copy = f"{db}_copy"
    # Named like scratch databases of this very target, but no run recorded them: never touched.
    decoys = {fresh_db(server, f"{copy}_vf_0badcafe"), fresh_db(server, f"vaultflow_drill_{db}_20260101000000_abcdef")}
    lines: list[str] = []
    ctx = BackupContext(case.repo, log=lines.append)
    try:
        check_collected(case, server, manifest, db, copy, decoys, ctx, lines)
    finally:  # whatever a failure left on the session's server
        for name in databases(server, rf"({re.escape(copy)}.*|vaultflow_drill_{db}_.*)") - decoys:
            server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def check_collected(
    case: Case, server, manifest, db: str, copy: str, decoys: set[str], ctx: BackupContext, lines: list[str]
) -> None:
    engine, target = case.engine, case.engine.config.name
    # A record from a dead run that names the source database itself (a tampered repository):
    # no scratch name, so it is never acted on.
    forged = forge_record(case.repo, target, db, f"{server.host}:{server.port}")

    # A drill killed while pg_restore fills its scratch database leaves it; the next restore drops it.
    case.job["action"] = "drill"
    drill_scratch, record = kill_while_restoring(case, server, rf"vaultflow_drill_{db}_.*_vf_[0-9a-f]{{8}}")
    try:
        result = engine.restore(ctx, manifest, into=copy)
        assert result.comparison.ok, result.comparison.summary()
    finally:
        server.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
    assert removed_line(drill_scratch, record) in lines, lines
    assert drill_scratch not in databases(server, ".*")

    # A restore into `copy` killed the same way leaves `copy`'s scratch; the next drill drops it.
    lines.clear()
    case.job.update(action="restore", into=copy)
    restore_scratch, record = kill_while_restoring(case, server, rf"{copy}_vf_[0-9a-f]{{8}}")
    assert copy not in databases(server, ".*")
    result = engine.drill(ctx, manifest)
    assert result.comparison.ok, result.comparison.summary()
    assert removed_line(restore_scratch, record) in lines, lines
    assert [line for line in lines if line.startswith("removed scratch database")] == [
        removed_line(restore_scratch, record)
    ]

    # Nothing recorded is left but the forged record, no scratch database of the target remains,
    # and the decoys and the database the forged record names are untouched.
    assert [info.key for info in case.repo.store.list(f"postgres/{target}/scratch/")] == [forged]
    assert any(line.startswith(f"warning: scratch record {forged} names {db!r}") for line in lines), lines
    assert server.execute("SELECT count(*) FROM t", db) == [(150000,)]
    assert databases(server, rf"({re.escape(copy)}.*|vaultflow_drill_{db}_.*)") == decoys


def test_scratch_records_are_judged_like_locks(tmp_path: Path) -> None:
    """Only records of dead holders (this host's pid gone, or older than the scratch TTL) are
    handed to the sweep; a live run's record, and records whose key does not match their
    content, are not."""
    repo = Repository(LocalStore(tmp_path / "repo"))
    server = "db.example.com:5432"
    mine = repo.put_scratch("postgres", "t", "shop_vf_0123abcd", server)
    dead = forge_record(repo, "t", "shop_vf_89abcdef", server)
    old = repo.put_scratch(
        "postgres", "t", "Shop/ü_vf_00000000", server, now=datetime.now(UTC) - SCRATCH_TTL - timedelta(seconds=1)
    )
    elsewhere = forge_record(repo, "t", "x_vf_11111111", server, host="another-host")
    moved = forge_record(repo, "t", "y_vf_22222222", server, database="y_vf_33333333")
    found = dict(repo.dead_scratch("postgres", "t"))
    assert set(found) == {dead, old}
    assert found[old]["database"] == "Shop/ü_vf_00000000" and found[dead]["server"] == server
    assert {mine, elsewhere, moved} <= {info.key for info in repo.store.list("postgres/t/scratch/")}
    for key in (mine, dead, old, elsewhere, moved):
        repo.delete_scratch(key)
    repo.delete_scratch(mine)  # already gone: no error
    assert not (tmp_path / "repo" / "postgres").exists()  # no empty directory left either
