"""Corpus: logical backups under concurrent DDL and held locks (PostgreSQL 15 and 18).

- A session holding ACCESS EXCLUSIVE: the backup fails after lock_timeout_s with a retryable
  error naming the table and the holder; nothing is committed.
- `ALTER TABLE t ADD COLUMN c int; ALTER TABLE t DROP COLUMN c` in a loop, without a lock
  timeout: no backup hangs, each completes or gives way with a retryable error, and the
  application's SELECTs are never blocked for long (they run with a lock_timeout of 5x the
  backup's, and none may hit it).
- The same loop with a 1 s lock_timeout on the ALTER session: every backup commits, and every
  committed backup restores to a copy that vaultflow's comparison and the oracle accept.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from tests.corpus.conftest import pg_engine
from tests.corpus.oracle import pg_differences, pg_state
from tests.fixtures.postgres import quote_ident
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.engines.postgres.snapshot import LockWaitError, LockWatch
from vaultflow.errors import ToolError, VaultflowError, is_transient

SCRIPT = (
    "CREATE TABLE t (id int PRIMARY KEY, v text);"
    "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;"
    "CREATE TABLE ballast AS SELECT g, repeat(md5(g::text), 4) AS h FROM generate_series(1, 20000) g"
)
HANG_GUARD_S = 120  # a backup that has not returned by then is hung: the test fails instead of waiting forever


def run_backup(engine, ctx):
    """The backup's manifest, or the VaultflowError it raised."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(engine.full_backup, ctx)
        try:
            return future.result(timeout=HANG_GUARD_S)
        except VaultflowError as exc:
            return exc


def test_access_exclusive_holder_fails_the_backup_naming_table_and_session(pg_server, fresh_db, corpus_ctx):
    db = fresh_db(pg_server)
    pg_server.execute(SCRIPT, db)
    engine = pg_engine(pg_server, [db], lock_timeout_s=2)
    with psycopg.connect(pg_server.conninfo(db), application_name="nightly-migration") as holder:
        holder.execute("LOCK TABLE t IN ACCESS EXCLUSIVE MODE")  # and stays idle in transaction
        pid = holder.info.backend_pid
        outcome = run_backup(engine, corpus_ctx)
        holder.rollback()
    assert isinstance(outcome, LockWaitError) and is_transient(outcome), outcome
    message = str(outcome)
    for part in (
        "public.t",
        f"pid {pid}",
        "'nightly-migration'",
        f"user {pg_server.user!r}",
        "'idle in transaction'",
        "transaction started",
        repr(db),
        "lock_timeout_s",
    ):
        assert part in message, (part, message)
    assert corpus_ctx.repository.catalog("postgres", engine.config.name).manifests == []
    # The lock is gone: the same target backs up at once.
    assert run_backup(engine, corpus_ctx).fingerprints[db]["public.t"].rows == 1000


class DdlLoop(threading.Thread):
    """ADD COLUMN c / DROP COLUMN c on t, over and over (bounded), as the issue's reproducer."""

    def __init__(self, server, db: str, lock_timeout: str | None):
        super().__init__(daemon=True)
        self.server, self.db, self.lock_timeout = server, db, lock_timeout
        self.stop, self.rounds, self.timeouts = threading.Event(), 0, 0

    def run(self) -> None:
        with psycopg.connect(self.server.conninfo(self.db), autocommit=True, application_name="ddl-loop") as conn:
            if self.lock_timeout:
                conn.execute(f"SET lock_timeout = '{self.lock_timeout}'")  # type: ignore[arg-type]
            while not self.stop.is_set() and self.rounds < 5000:
                for statement in ("ALTER TABLE t ADD COLUMN c int", "ALTER TABLE t DROP COLUMN c"):
                    while True:
                        try:
                            conn.execute(statement)  # type: ignore[arg-type]
                            break
                        except psycopg.errors.LockNotAvailable:
                            self.timeouts += 1
                self.rounds += 1


class Reader(threading.Thread):
    """The application: plain SELECTs on t, each allowed to wait `patience_s` for its lock."""

    def __init__(self, server, db: str, patience_s: float):
        super().__init__(daemon=True)
        self.server, self.db, self.patience_s = server, db, patience_s
        self.stop, self.selects, self.blocked = threading.Event(), 0, []

    def run(self) -> None:
        with psycopg.connect(self.server.conninfo(self.db), autocommit=True, application_name="app") as conn:
            conn.execute(f"SET lock_timeout = '{int(self.patience_s * 1000)}ms'")  # type: ignore[arg-type]
            while not self.stop.is_set():
                try:
                    conn.execute("SELECT count(*) FROM t").fetchone()
                    self.selects += 1
                except psycopg.errors.LockNotAvailable as exc:
                    self.blocked.append(str(exc))


def backups_under_ddl(server, db, engine, ctx, count: int, ddl_lock_timeout: str | None, patience_s: float):
    ddl, app = DdlLoop(server, db, ddl_lock_timeout), Reader(server, db, patience_s)
    ddl.start()
    app.start()
    try:
        outcomes = [run_backup(engine, ctx) for _ in range(count)]
    finally:
        ddl.stop.set()
        app.stop.set()
        ddl.join(HANG_GUARD_S)
        app.join(HANG_GUARD_S)
    assert not ddl.is_alive() and not app.is_alive(), "the DDL loop or the application is still blocked"
    assert ddl.rounds > count, "the DDL loop never overlapped the backups"
    assert app.selects > 0 and app.blocked == [], app.blocked
    return outcomes


def test_ddl_loop_without_lock_timeout_never_hangs_the_backup_or_the_application(pg_server, fresh_db, corpus_ctx):
    db = fresh_db(pg_server)
    pg_server.execute(SCRIPT, db)
    engine = pg_engine(pg_server, [db], lock_timeout_s=2)
    outcomes = backups_under_ddl(pg_server, db, engine, corpus_ctx, 4, None, patience_s=10)
    for outcome in outcomes:
        if isinstance(outcome, VaultflowError):
            assert isinstance(outcome, LockWaitError) and is_transient(outcome), outcome
            assert "public.t" in str(outcome) and "pid " in str(outcome), outcome
    committed = corpus_ctx.repository.catalog("postgres", engine.config.name).manifests
    assert len(committed) == sum(not isinstance(o, VaultflowError) for o in outcomes)


@pytest.fixture
def drop_after(pg_server):
    names: list[str] = []
    yield names.append
    for name in names:
        pg_server.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


def test_every_backup_committed_under_ddl_restores_exactly(pg_server, fresh_db, corpus_ctx, drop_after):
    db = fresh_db(pg_server)
    pg_server.execute(SCRIPT, db)
    engine = pg_engine(pg_server, [db], lock_timeout_s=5)
    outcomes = backups_under_ddl(pg_server, db, engine, corpus_ctx, 6, "1s", patience_s=25)
    failures = [o for o in outcomes if isinstance(o, VaultflowError)]
    assert failures == [], failures  # a 1 s DDL lock_timeout never makes a backup wait 5 s

    # The oracle's two acceptable states: t without c (the source now) and t with c (a dump
    # whose snapshot fell between the ADD and the DROP).
    with_c = fresh_db(pg_server)
    pg_server.execute(SCRIPT + "; ALTER TABLE t ADD COLUMN c int", with_c)
    states = [pg_state(pg_server, db), pg_state(pg_server, with_c)]
    for manifest in outcomes:
        copy = f"{db}_{manifest.id[9:15]}{manifest.id[16:19]}"
        drop_after(copy)
        result = engine.restore(corpus_ctx, manifest, into=copy)
        assert result.comparison.ok, (manifest.id, result.comparison.summary())
        restored = pg_state(pg_server, copy)
        problems = [pg_differences(state, restored) for state in states]
        assert [] in problems, (manifest.id, problems)


def test_pg_dump_lock_timeout_becomes_a_lock_wait_error():
    """pg_dump's --lock-wait-timeout is a statement_timeout around its LOCK TABLE: that failure is
    retryable and names the tables; any other pg_dump failure stays what it was."""
    watch = LockWatch(PostgresSettings(target_name="t", lock_timeout_s=3), "shop", snapshot_pid=1)
    timeout = ToolError(
        "pg_dump exited with status 1: pg_dump: error: query failed: ERROR:  canceling statement "
        'due to statement timeout\npg_dump: detail: Query was: LOCK TABLE public.t, s."Odd" IN '
        "ACCESS SHARE MODE"
    )
    explained = watch.explain(timeout)
    assert isinstance(explained, LockWaitError) and is_transient(explained)
    assert 'public.t, s."Odd"' in str(explained) and "'shop'" in str(explained) and "3 s" in str(explained)
    assert watch.explain(ToolError("pg_dump exited with status 1: permission denied for table t")) is None
