"""The oracle itself: it must see what it is there to see (a judge that cannot fail judges nothing)."""

from __future__ import annotations

from tests.corpus.oracle import pg_differences, pg_state


def test_pg_oracle_sees_rows_schema_and_properties(pg_server, fresh_db):
    source = fresh_db(pg_server)
    copy = fresh_db(pg_server)
    for db in (source, copy):
        pg_server.execute(
            "CREATE TABLE t (id int PRIMARY KEY, x text); INSERT INTO t VALUES (1, 'a'), (2, 'b')", dbname=db
        )
    assert pg_differences(pg_state(pg_server, source), pg_state(pg_server, copy)) == []

    pg_server.execute("UPDATE t SET x = 'B' WHERE id = 2", dbname=copy)
    pg_server.execute("CREATE INDEX t_x ON t (x)", dbname=copy)
    pg_server.execute(f'ALTER DATABASE "{copy}" SET search_path = public, pg_catalog')
    problems = pg_differences(pg_state(pg_server, source), pg_state(pg_server, copy))
    assert any(p.startswith("rows of public.t differ") for p in problems), problems
    assert any(p.startswith("schema differs") and "t_x" in p for p in problems), problems
    assert any(p.startswith("database property settings") for p in problems), problems


def test_redis_oracle_reads_values_not_encodings_and_sees_pending_entries(fresh_redis):
    from tests.corpus.oracle import redis_differences, redis_state

    a, b = fresh_redis(), fresh_redis()
    members = [f"m{i}".encode() for i in range(300)]  # > 128 members: a hash-table set
    a.client(0).sadd("s", *members)
    b.client(0).sadd("s", *reversed(members))
    source = a.client(2)
    source.xadd("events", {"k": "v"}, id="1-1")
    source.xgroup_create("events", "g", id="0")
    source.xreadgroup("g", "c1", {"events": ">"})
    source.set("ttl", "x", px=500_000)
    for key in ("events", "ttl"):  # a copy with delivery times and absolute expiry kept
        b.client(2).restore(key, max(source.execute_command("PEXPIRETIME", key), 0), source.dump(key), absttl=True)
    assert redis_differences(redis_state(a, range(3)), redis_state(b, range(3))) == []

    b.client(2).xack("events", "g", "1-1")
    b.client(0).srem("s", "m7")
    problems = redis_differences(redis_state(a, range(3)), redis_state(b, range(3)))
    assert any("b'events'" in p and "stream_full" in p for p in problems), problems
    assert any("b's'" in p and "value" in p for p in problems), problems
