"""The oracle itself: it must see what it is there to see (a judge that cannot fail judges nothing)."""

from __future__ import annotations

from tests.corpus.oracle import pg_differences, pg_state


def test_pg_oracle_sees_rows_schema_and_properties(pg_server, fresh_db):
    source = fresh_db(pg_server)
    copy = fresh_db(pg_server)
    for db in (source, copy):
        pg_server.execute("CREATE TABLE t (id int PRIMARY KEY, x text); INSERT INTO t VALUES (1, 'a'), (2, 'b')",
                          dbname=db)
    assert pg_differences(pg_state(pg_server, source), pg_state(pg_server, copy)) == []

    pg_server.execute("UPDATE t SET x = 'B' WHERE id = 2", dbname=copy)
    pg_server.execute("CREATE INDEX t_x ON t (x)", dbname=copy)
    pg_server.execute(f'ALTER DATABASE "{copy}" SET search_path = public, pg_catalog')
    problems = pg_differences(pg_state(pg_server, source), pg_state(pg_server, copy))
    assert any(p.startswith("rows of public.t differ") for p in problems), problems
    assert any(p.startswith("schema differs") and "t_x" in p for p in problems), problems
    assert any(p.startswith("database property settings") for p in problems), problems
