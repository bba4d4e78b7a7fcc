"""The snapshot a logical backup reads, taken so that concurrent DDL can neither change it
under the dump nor be blocked by the backup for longer than the configured lock wait.

Why this order (see docs/architecture.md, "Concurrent DDL"):

1. List the tables (a fresh catalog read), then, in a REPEATABLE READ transaction *before its
   snapshot exists*, take ACCESS SHARE on each (`LOCK TABLE`, under `lock_timeout`). Only then
   export the snapshot: every DDL that could change a table's rows or columns needs ACCESS
   EXCLUSIVE, so none can commit between the snapshot and the end of the backup, and the
   catalog the snapshot sees (what pg_dump and the fingerprints read) is the one the executor
   uses. A LOCK that waits past lock_timeout fails the backup with `LockWaitError`, naming the
   table and the sessions holding or queued for it.
2. Check it: under the snapshot, list the tables again with their columns and relfilenode, lock
   any that appeared meanwhile, and compare with a fresh catalog read. A difference (a table
   created and altered in the window) restarts the attempt; `catalog_changed` runs the same
   check again after the dump, so a backup whose fingerprints could disagree with its dump is
   never committed.
3. While pg_dump and the fingerprints run, `LockWatch` polls pg_locks. pg_dump takes its own
   ACCESS SHARE locks after it imports the snapshot; if a DDL statement queued behind this
   session's locks in the meantime, pg_dump queues behind the DDL — a wait cycle through the
   client that the server cannot detect — and the application's SELECTs queue behind the DDL
   too. The watch ends the backup (terminating pg_dump's session, cancelling the fingerprint
   query) as soon as any session has waited longer than lock_timeout_s on the backup, or the
   backup on anyone: the backup gives way, with a retryable error, instead of blocking others.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from vaultflow.engines.postgres.client import connect
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.errors import TransientError


class LockWaitError(TransientError):
    """A logical backup waited on a table lock, or made another session wait on one, for longer
    than the target's lock_timeout_s. Nothing was committed; a later attempt usually succeeds."""


CATALOG_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relfilenode,
       (SELECT string_agg(a.attnum || ':' || a.attname || ':' || a.atttypid || ':' || a.atttypmod, ','
                          ORDER BY a.attnum)
        FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
"""

SESSIONS_SQL = """
SELECT pid, application_name, usename, state, query_start, xact_start FROM pg_stat_activity WHERE pid = ANY(%s)
"""

WAITS_SQL = """
SELECT l.pid, n.nspname, c.relname, extract(epoch FROM clock_timestamp() - l.waitstart)::float8,
       pg_blocking_pids(l.pid)
FROM pg_locks l LEFT JOIN pg_class c ON c.oid = l.relation LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT l.granted AND l.locktype = 'relation' AND l.waitstart IS NOT NULL
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""

# Sessions in the way of an ACCESS SHARE lock: ACCESS EXCLUSIVE held, or requested ahead of it.
IN_THE_WAY_SQL = """
SELECT DISTINCT pid FROM pg_locks
WHERE locktype = 'relation' AND relation = %s AND mode = 'AccessExclusiveLock' AND pid <> ALL(%s)
"""

ATTEMPTS = 3
GONE = (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName)  # LOCK TABLE of a name that went away


def describe_sessions(conn: psycopg.Connection, pids: list[int]) -> str:
    """ "pid 1 (application_name 'x', user 'u', state 'idle in transaction', transaction started
    ..., query started ...)" for each live pid; "a session that has ended" when none is left."""
    rows = conn.execute(SESSIONS_SQL, (list(pids),)).fetchall()

    def at(moment: datetime | None) -> str:
        return moment.strftime("%Y-%m-%d %H:%M:%S %Z") if moment else "-"

    found = [
        f"pid {pid} (application_name {app!r}, user {user!r}, state {state!r}, transaction started "
        f"{at(xact)}, query started {at(query)})"
        for pid, app, user, state, query, xact in rows
    ]
    return "; ".join(found) or "a session that has ended meanwhile"


@dataclass
class Snapshot:
    """An open REPEATABLE READ transaction holding ACCESS SHARE on every table it sees."""

    conn: psycopg.Connection
    id: str  # for pg_dump --snapshot
    visible: str  # pg_current_snapshot(), for the manifest
    tables: dict[int, tuple] = field(default_factory=dict)  # oid -> (schema, name, relfilenode, columns)


def _lock(
    conn: psycopg.Connection, other: psycopg.Connection, oid: int, schema: str, table: str, database: str, limit: float
) -> None:
    try:
        conn.execute(
            sql.SQL("LOCK TABLE ONLY {}.{} IN ACCESS SHARE MODE").format(sql.Identifier(schema), sql.Identifier(table))
        )
    except psycopg.errors.LockNotAvailable:
        in_the_way = [r[0] for r in other.execute(IN_THE_WAY_SQL, (oid, [conn.info.backend_pid])).fetchall()]
        raise LockWaitError(
            f"backup of database {database!r} waited more than {limit:g} s (lock_timeout_s) for a lock on table "
            f"{schema}.{table}, held or requested first by {describe_sessions(other, in_the_way)}; nothing was "
            "committed. Retry later, or end that session's transaction (pg_terminate_backend)"
        ) from None


def _tables(conn: psycopg.Connection) -> dict[int, tuple]:
    return {row[0]: tuple(row[1:]) for row in conn.execute(CATALOG_SQL).fetchall()}


def open_snapshot(config: PostgresSettings, database: str) -> Snapshot:
    """Lock every table of `database`, then export a snapshot that sees exactly those tables as
    the executor does (module docstring). The caller rolls back and closes `Snapshot.conn`.

    Raises LockWaitError (a lock waited past config.lock_timeout_s; names table and sessions),
    TransientError (the tables kept changing over ATTEMPTS tries), or connect()'s errors."""
    limit = config.lock_timeout_s
    for _ in range(ATTEMPTS):
        conn = connect(config, database)
        try:
            with connect(config, database) as other:
                conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(limit * 1000)}ms")))
                listed = _tables(other)
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                try:
                    for oid, (schema, table, *_rest) in sorted(listed.items(), key=lambda kv: kv[1][:2]):
                        _lock(conn, other, oid, schema, table, database, limit)
                except GONE:  # dropped or renamed (or its schema) since the listing
                    conn.close()
                    continue
                snapshot_id, visible = conn.execute(
                    "SELECT pg_export_snapshot(), pg_current_snapshot()::text"
                ).fetchone()
                seen = _tables(conn)
                try:
                    for oid in sorted(set(seen) - set(listed)):  # created since the listing
                        _lock(conn, other, oid, seen[oid][0], seen[oid][1], database, limit)
                except GONE:
                    conn.close()
                    continue
                latest = _tables(other)
                if all(latest.get(oid) == value for oid, value in seen.items()):
                    return Snapshot(conn=conn, id=snapshot_id, visible=visible, tables=seen)
            conn.close()
        except BaseException:
            conn.close()
            raise
    raise TransientError(
        f"the tables of database {database!r} kept changing while the backup took its snapshot "
        f"({ATTEMPTS} attempts); nothing was committed. Retry when the schema changes are done"
    )


def catalog_changed(config: PostgresSettings, database: str, snapshot: Snapshot) -> list[str]:
    """Tables ("schema.table") whose columns or storage differ between the snapshot and the
    latest catalog; empty when the dump and the fingerprints describe the same tables."""
    with connect(config, database) as other:
        latest = _tables(other)
    return sorted(f"{v[0]}.{v[1]}" for oid, v in snapshot.tables.items() if latest.get(oid) != v)


class LockWatch(threading.Thread):
    """Polls pg_locks while a dump runs; ends the backup when a lock wait involving it passes
    the limit. `pg_dump_appname` is the application_name pg_dump runs under (its backend is
    found by it). After the dump, `error` holds the LockWaitError to raise, if the watch fired."""

    def __init__(self, config: PostgresSettings, database: str, snapshot_pid: int):
        super().__init__(name=f"lockwatch-{snapshot_pid}", daemon=True)
        self.config, self.database = config, database
        self.snapshot_pid = snapshot_pid
        self.pg_dump_appname = f"vaultflow pg_dump {uuid.uuid4().hex[:12]}"
        self.limit = config.lock_timeout_s
        self.interval = max(0.05, min(0.25, self.limit / 8))
        self.error: LockWaitError | None = None
        self.dump_wait: tuple[str, list[int]] | None = None  # last seen pg_dump wait: table, blockers
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def run(self) -> None:
        try:
            with connect(self.config, self.database) as conn:
                while not self._halt.wait(self.interval) and self.error is None:
                    self._poll(conn)
        except Exception:  # noqa: BLE001 - the watch is a safety net; pg_dump's own lock timeout stays
            return

    def _poll(self, conn: psycopg.Connection) -> None:
        dumps = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (self.pg_dump_appname,)
            ).fetchall()
        ]
        ours = {self.snapshot_pid, *dumps}
        if dumps:  # pg_dump is connected: forget a wait of its that is over
            self.dump_wait = None
        for pid, schema, table, waited, blockers in conn.execute(WAITS_SQL).fetchall():
            name = f"{schema}.{table}"
            others = [b for b in blockers if b not in ours]
            if pid in ours:
                if pid in dumps:
                    self.dump_wait = (name, others)
                if waited > self.limit and others:
                    self.error = LockWaitError(
                        f"backup of database {self.database!r} waited more than {self.limit:g} s (lock_timeout_s) "
                        f"for a lock on table {name}, held or requested first by {describe_sessions(conn, others)}; "
                        "nothing was committed. Retry later, or end that session's transaction"
                    )
            elif waited > self.limit and ours & set(blockers):
                behind = (
                    " (pg_dump is queued behind it: a wait the server cannot resolve)"
                    if any(d in blockers for d in dumps) or self.dump_wait
                    else ""
                )
                self.error = LockWaitError(
                    f"session {describe_sessions(conn, [pid])} waited more than {self.limit:g} s (lock_timeout_s) "
                    f"for table {name}, which the backup of database {self.database!r} holds{behind}; the backup "
                    "gave way so that it never blocks others longer than that, and nothing was committed. Retry "
                    "when that session's work is done, or give its DDL a lock_timeout"
                )
            if self.error is not None:  # end the backup's sessions: their locks go at once
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid", ([*dumps, self.snapshot_pid],)
                )
                return

    def end_snapshot_session(self) -> None:
        """Terminate the snapshot's session (e.g. after pg_dump failed): the fingerprint query
        running in it stops at once and its locks are released."""
        try:
            with connect(self.config, self.database) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (self.snapshot_pid,))
        except Exception:  # noqa: BLE001 - best effort: the caller is raising the real error
            pass

    def explain(self, exc: BaseException) -> LockWaitError | None:
        """The LockWaitError behind a failed dump: the watch's own, or pg_dump's lock timeout
        described with the last wait the watch saw; None when locks had nothing to do with it."""
        if self.error is not None:
            return self.error
        text = str(exc)
        # pg_dump --lock-wait-timeout is a statement_timeout around its LOCK TABLE statement.
        match = re.search(r"LOCK TABLE (.+?) IN ACCESS SHARE MODE", text)
        if not match or ("statement timeout" not in text and "lock timeout" not in text):
            return None
        table, blockers = self.dump_wait or (match.group(1), [])
        who = "a session that has ended meanwhile"
        if blockers:
            try:
                with connect(self.config, self.database) as conn:
                    who = describe_sessions(conn, blockers)
            except Exception:  # noqa: BLE001 - describing is best effort; the error itself is not
                who = f"pids {blockers}"
        return LockWaitError(
            f"backup of database {self.database!r}: pg_dump waited more than {self.limit:g} s (lock_timeout_s) for a "
            f"lock on table {table}, held or requested first by {who}; nothing was committed. Retry later"
        )
