"""Corpus: objects that act or connect when restored must not come alive in a copy.

- a logical-replication SUBSCRIPTION: copies must never start replication or take the
  original's slot; drills and overwrites used to fail with ObjectInUse and leave their scratch
  database (and another subscription) behind;
- an event trigger that forbids DDL (it fired on the restore's own REFRESH MATERIALIZED VIEW
  and on the cleanup's DROP SUBSCRIPTION);
- a login event trigger (PostgreSQL 17+) that refuses the application's logins anywhere but in
  the production database;
- a foreign server with a user mapping: nothing may connect to it during backup, restore, drill.

The test servers run wal_level = replica, so subscriptions are made with connect = false and a
slot name, exactly as pg_dump writes them back.
"""

from __future__ import annotations

import secrets
import socket
import time

import psycopg
import pytest

from tests.corpus.conftest import pg_engine
from tests.corpus.oracle import assert_pg_restored, pg_differences, pg_state
from tests.fixtures.postgres import quote_ident, system_bin_dir_below
from vaultflow.errors import RefusedError
from vaultflow.testing.postgres_server import embedded_bin_dir, running_postgres


@pytest.fixture
def databases(pg_server, request):
    """make(prefix) -> a new database; at teardown each is dropped with raw SQL (its subscriptions
    detached and dropped first), with any database whose name starts with it (restored copies)."""
    made: list[str] = []

    def make(prefix: str = "active") -> str:
        name = f"{prefix}_{secrets.token_hex(5)}"
        pg_server.execute(f"CREATE DATABASE {quote_ident(name)}")
        made.append(name)
        return name

    yield make
    for prefix in made:
        for (name,) in pg_server.execute(f"SELECT datname FROM pg_database WHERE datname LIKE '{prefix}%'"):
            drop_with_subscriptions(pg_server, name)


def drop_with_subscriptions(server, name: str) -> None:
    subs = server.execute(
        f"SELECT subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid WHERE d.datname = '{name}'"
    )
    if subs:
        options = "-c event_triggers=off" if server.version >= 17 else ""
        with_options = server.conninfo(name) + (f" options='{options}'" if options else "")
        with psycopg.connect(with_options, autocommit=True) as conn:
            for (trigger,) in conn.execute("SELECT evtname FROM pg_event_trigger").fetchall():
                conn.execute(f"ALTER EVENT TRIGGER {quote_ident(trigger)} DISABLE")
            for (sub,) in subs:
                conn.execute(f"ALTER SUBSCRIPTION {quote_ident(sub)} DISABLE")
                conn.execute(f"ALTER SUBSCRIPTION {quote_ident(sub)} SET (slot_name = NONE)")
                conn.execute(f"DROP SUBSCRIPTION {quote_ident(sub)}")
    server.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


def subscribe(server, db: str, publisher_db: str, name: str, slot: str | None) -> None:
    server.execute(
        "CREATE TABLE items (id int PRIMARY KEY, label text); CREATE PUBLICATION pub FOR TABLE items",
        dbname=publisher_db,
    )
    server.execute(
        "CREATE TABLE items (id int PRIMARY KEY, label text); INSERT INTO items VALUES (1, 'x'), (2, 'y')", dbname=db
    )
    conninfo = f"host={server.host} port={server.port} user={server.user} dbname={publisher_db}"
    slot_sql = f"'{slot}'" if slot else "NONE"
    server.execute(
        f"CREATE SUBSCRIPTION {name} CONNECTION '{conninfo}' PUBLICATION pub "
        f"WITH (connect = false, slot_name = {slot_sql})",
        dbname=db,
    )


def cluster_state(server) -> tuple[list, list, list]:
    """Subscriptions (database, name, enabled, slot), replication slots, drill databases."""
    return (
        server.execute(
            "SELECT d.datname, s.subname, s.subenabled, s.subslotname FROM pg_subscription s "
            "JOIN pg_database d ON d.oid = s.subdbid ORDER BY 1, 2"
        ),
        server.execute("SELECT slot_name FROM pg_replication_slots ORDER BY 1"),
        server.execute("SELECT datname FROM pg_database WHERE datname LIKE 'vaultflow\\_drill\\_%'"),
    )


def test_subscription_never_comes_alive_in_a_copy(pg_server, corpus_ctx, databases):
    publisher, db = databases("pub"), databases("subscriber")
    subscribe(pg_server, db, publisher, "orders_in", slot="orders_slot")
    engine = pg_engine(pg_server, [db])
    manifest = engine.full_backup(corpus_ctx)
    before = cluster_state(pg_server)

    drill = engine.drill(corpus_ctx, manifest)  # used to fail with ObjectInUse and leave both behind
    assert drill.comparison.ok, drill.comparison.summary()
    assert cluster_state(pg_server) == before

    assert any("orders_in" in note and "without a replication slot" in note for note in drill.notes)
    copied = engine.restore(corpus_ctx, manifest)
    copy = copied.restored[db]
    subs = pg_server.execute(
        f"SELECT subname, subenabled, subslotname FROM pg_subscription s JOIN pg_database d "
        f"ON d.oid = s.subdbid WHERE d.datname = '{copy}'"
    )
    assert subs == [("orders_in", False, None)]  # disabled, and no slot to take from the original
    assert [note for note in copied.notes if "orders_in" in note and "without a replication slot" in note]
    assert any("orders_in" in line for line in corpus_ctx.log.lines)
    # The oracle sees exactly that one deliberate difference: the copy's slot_name.
    problems = pg_differences(pg_state(pg_server, db), pg_state(pg_server, copy))
    assert len(problems) == 1 and "slot_name = NONE" in problems[0] and "orders_slot" in problems[0], problems

    source = pg_state(pg_server, db)
    result = engine.restore(corpus_ctx, manifest, into=db, overwrite=True)  # used to fail with ObjectInUse
    assert result.comparison.ok, result.comparison.summary()
    # Restored over the original: the subscription keeps its slot (ALTER SUBSCRIPTION ... ENABLE resumes).
    assert pg_differences(source, pg_state(pg_server, db)) == []
    subscriptions, slots, drills = cluster_state(pg_server)
    assert [s[1:] for s in subscriptions if s[0] == db] == [("orders_in", False, "orders_slot")]
    assert len(subscriptions) == 2 and (slots, drills) == before[1:]  # the original's and the copy's


FREEZE = """
CREATE TABLE t (id int, v text); INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 20) g;
CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM t;
CREATE FUNCTION no_ddl() RETURNS event_trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'DDL is frozen in this database (%)', tg_tag; END $$;
CREATE EVENT TRIGGER ddl_freeze ON ddl_command_start EXECUTE FUNCTION no_ddl();
ALTER EVENT TRIGGER ddl_freeze ENABLE ALWAYS;
"""


def test_event_trigger_that_forbids_ddl(pg_server, corpus_ctx, databases):
    publisher, db = databases("pub"), databases("frozen")
    subscribe(pg_server, db, publisher, "feed", slot=None)  # its cleanup is DDL the trigger forbids
    pg_server.execute(FREEZE, dbname=db)
    engine = pg_engine(pg_server, [db])
    manifest = engine.full_backup(corpus_ctx)
    before = cluster_state(pg_server)

    drill = engine.drill(corpus_ctx, manifest)
    assert drill.comparison.ok, drill.comparison.summary()
    assert cluster_state(pg_server) == before
    copy = engine.restore(corpus_ctx, manifest).restored[db]
    assert pg_server.execute("SELECT n FROM mv", dbname=copy) == [(20,)]
    assert pg_server.execute("SELECT evtenabled FROM pg_event_trigger WHERE evtname = 'ddl_freeze'", dbname=copy) == [
        ("A",)
    ]
    assert_pg_restored(pg_server, db, pg_server, copy)


def test_login_trigger_that_refuses_copies(pg18, corpus_ctx, request):
    db = f"login_{secrets.token_hex(5)}"
    pg18.execute(f"CREATE DATABASE {quote_ident(db)}")
    request.addfinalizer(
        lambda: [
            drop_with_subscriptions(pg18, name)
            for (name,) in pg18.execute(f"SELECT datname FROM pg_database WHERE datname LIKE '{db}%'")
        ]
    )
    pg18.execute(
        f"""
        CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);
        CREATE FUNCTION only_in_production() RETURNS event_trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF current_setting('application_name') = 'vaultflow' AND current_database() <> '{db}' THEN
            RAISE EXCEPTION 'the application may only log in to {db}';
          END IF;
        END $$;
        CREATE EVENT TRIGGER production_only ON login EXECUTE FUNCTION only_in_production();""",
        dbname=db,
    )
    engine = pg_engine(pg18, [db])
    manifest = engine.full_backup(corpus_ctx)
    drill = engine.drill(corpus_ctx, manifest)
    assert drill.comparison.ok, drill.comparison.summary()
    assert cluster_state(pg18)[2] == []
    copy = engine.restore(corpus_ctx, manifest).restored[db]
    assert_pg_restored(pg18, db, pg18, copy)
    assert pg18.execute("SELECT evtevent FROM pg_event_trigger", dbname=copy) == [("login",)]


def test_foreign_server_is_never_contacted(pg_server, corpus_ctx, databases):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    db = databases("fdw")
    pg_server.execute(
        f"""
        CREATE EXTENSION postgres_fdw;
        CREATE SERVER billing FOREIGN DATA WRAPPER postgres_fdw
          OPTIONS (host '127.0.0.1', port '{listener.getsockname()[1]}', dbname 'billing');
        CREATE USER MAPPING FOR CURRENT_USER SERVER billing OPTIONS (user 'app', password 'not-vaultflows');
        CREATE FOREIGN TABLE invoices (id int, total numeric) SERVER billing;
        CREATE TABLE t (id int); INSERT INTO t VALUES (1)""",
        dbname=db,
    )
    engine = pg_engine(pg_server, [db])
    manifest = engine.full_backup(corpus_ctx)
    assert engine.drill(corpus_ctx, manifest).comparison.ok
    copy = engine.restore(corpus_ctx, manifest).restored[db]
    assert_pg_restored(pg_server, db, pg_server, copy)
    with pytest.raises(BlockingIOError):  # nobody ever knocked
        listener.accept()
    listener.close()


@pytest.fixture(scope="module", params=["pg18", "pg15"])
def logical_pg(request, tmp_path_factory):
    """A server of its own with wal_level = logical (the shared ones run replica), on both versions."""
    bin_dir = embedded_bin_dir() if request.param == "pg18" else system_bin_dir_below(18)
    with running_postgres(
        bin_dir,
        tmp_path_factory.mktemp(f"logical-{request.param}"),
        name=f"lg{request.param}",
        settings={"wal_level": "logical", "max_replication_slots": "10"},
    ) as pg:
        yield pg


def wait_for(server, db: str, query: str, expected) -> None:
    """Poll until `query` answers `expected`; fails after a generous hang guard, never on speed."""
    for _ in range(600):
        if server.execute(query, dbname=db) == expected:
            return
        time.sleep(0.1)
    assert server.execute(query, dbname=db) == expected


def test_live_subscription_resumes_after_overwrite_and_its_publisher_is_protected(logical_pg, corpus_ctx):
    pg = logical_pg
    pg.execute("CREATE DATABASE pubdb")
    pg.execute("CREATE DATABASE subdb")
    pg.execute(
        "CREATE TABLE items (id int PRIMARY KEY, label text); CREATE PUBLICATION pub FOR TABLE items", dbname="pubdb"
    )
    pg.execute("SELECT pg_create_logical_replication_slot('live_slot', 'pgoutput')", dbname="pubdb")
    pg.execute(
        f"CREATE TABLE items (id int PRIMARY KEY, label text); CREATE SUBSCRIPTION live CONNECTION "
        f"'host={pg.host} port={pg.port} user={pg.user} dbname=pubdb' PUBLICATION pub "
        "WITH (create_slot = false, slot_name = 'live_slot', copy_data = false)",
        dbname="subdb",
    )
    pg.execute("INSERT INTO items VALUES (1, 'a')", dbname="pubdb")
    wait_for(pg, "subdb", "SELECT id FROM items", [(1,)])  # replication is live
    engine = pg_engine(pg, ["subdb"], name=f"live{pg.version}")
    manifest = engine.full_backup(corpus_ctx)

    drill = engine.drill(corpus_ctx, manifest)
    assert drill.comparison.ok, drill.comparison.summary()
    assert pg.execute("SELECT d.datname, s.subname FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid") == [
        ("subdb", "live")
    ]  # the drill's copy is gone with its subscription
    assert pg.execute("SELECT slot_name FROM pg_replication_slots") == [("live_slot",)]

    result = engine.restore(corpus_ctx, manifest, into="subdb", overwrite=True)
    assert result.comparison.ok, result.comparison.summary()
    assert pg.execute("SELECT subenabled, subslotname FROM pg_subscription") == [(False, "live_slot")]
    [note] = [n for n in result.notes if "'live'" in n]
    assert "ALTER SUBSCRIPTION live ENABLE" in note and "REFRESH PUBLICATION WITH (copy_data = false)" in note
    assert "in 'subdb'" in note, note  # the database's name after the overwrite, not the scratch name
    pg.execute("ALTER SUBSCRIPTION live ENABLE", dbname="subdb")  # as the note says
    pg.execute("ALTER SUBSCRIPTION live REFRESH PUBLICATION WITH (copy_data = false)", dbname="subdb")
    pg.execute("INSERT INTO items VALUES (2, 'b')", dbname="pubdb")
    wait_for(pg, "subdb", "SELECT id FROM items ORDER BY 1", [(1,), (2,)])  # resumed from the same slot

    publisher = pg_engine(pg, ["pubdb"], name=f"pub{pg.version}")
    with pytest.raises(RefusedError, match="live_slot"):
        publisher.restore(corpus_ctx, publisher.full_backup(corpus_ctx), into="pubdb", overwrite=True)
    assert pg.execute("SELECT slot_name FROM pg_replication_slots") == [("live_slot",)]
    assert pg.execute("SELECT datname FROM pg_database WHERE datname LIKE 'pubdb%'") == [("pubdb",)]
