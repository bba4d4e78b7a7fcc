"""The independent judge of restores: shares no code with vaultflow's fingerprints.

vaultflow's own verdict (row fingerprints, Redis key counts/digests) is code under test; it
cannot also be the only judge of a restore. These functions read source and copy with stock
tools and plain commands only, so when vaultflow says "match" and the oracle disagrees, one
of the two has a bug.

PostgreSQL: `pg_dump --schema-only` (normalised: comments, blank lines and the random
`\\restrict` keys of PostgreSQL 17.6+/18 removed), `COPY (SELECT * FROM ONLY t) TO STDOUT` per
table with the lines sorted, and the database's own properties from pg_database
(encoding, locale, ICU locale, owner, ACL, connection limit, comment, `ALTER DATABASE ... SET`,
`ALTER ROLE ... IN DATABASE ... SET`).

Redis: per key its value read with the type's own commands (GET, LRANGE, sorted SMEMBERS /
HGETALL, ZRANGE WITHSCORES, XRANGE; DUMP only for module types), `PEXPIRETIME` (absolute
expiry in ms, so time passing does not matter), and for streams `XINFO STREAM key FULL`
(consumer groups, consumers, pending entries with their delivery counts).
"""

from __future__ import annotations

import difflib
import itertools
import subprocess
from dataclasses import dataclass, field

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

TABLES = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
ORDER BY 1, 2
"""

# Every oracle session overrides what a hostile database or role may set for its sessions
# (`ALTER DATABASE/ROLE ... SET statement_timeout = '1ms'`, read-only by default): the source's
# settings must not judge the judge. As libpq `options` (psycopg) and PGOPTIONS (pg_dump).
SESSION_OPTIONS = (
    "-c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0"
    " -c default_transaction_read_only=off"
)


@dataclass
class PgState:
    """What a user would call "the database": schema text, sorted rows, database properties."""

    schema: list[str]
    rows: dict[str, list[str]]
    properties: dict[str, object]


def _database_properties(conn: psycopg.Connection, dbname: str) -> dict[str, object]:
    version = conn.info.server_version // 10000
    locale_col = "datlocale" if version >= 17 else "daticulocale"
    row = conn.execute(
        f"""SELECT pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, d.datlocprovider::text,
                   d.{locale_col}, pg_get_userbyid(d.datdba), d.datacl::text, d.datconnlimit,
                   shobj_description(d.oid, 'pg_database'),
                   (SELECT array_agg(x ORDER BY x)::text FROM pg_db_role_setting s, unnest(s.setconfig) x
                     WHERE s.setdatabase = d.oid AND s.setrole = 0),
                   (SELECT array_agg(pg_get_userbyid(s.setrole) || ': ' || x ORDER BY 1)::text
                     FROM pg_db_role_setting s, unnest(s.setconfig) x WHERE s.setdatabase = d.oid AND s.setrole <> 0)
            FROM pg_database d WHERE d.datname = %s""",
        (dbname,),
    ).fetchone()
    if row is None:
        raise AssertionError(f"oracle: database {dbname!r} does not exist")
    keys = [
        "encoding",
        "collate",
        "ctype",
        "locale_provider",
        "icu_locale",
        "owner",
        "acl",
        "connection_limit",
        "comment",
        "settings",
        "role_settings",
    ]
    return dict(zip(keys, row, strict=False))


def _schema(pg, dbname: str) -> list[str]:
    # -d takes a conninfo string: a name like `k=v` or `host=... port=...` must stay a name
    out = subprocess.run(
        [str(pg.client_bin_dir / "pg_dump"), "--schema-only", "--no-password", "-d", make_conninfo(dbname=dbname)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **pg.libpq_env(), "PGOPTIONS": SESSION_OPTIONS},
    )
    if out.returncode != 0:
        raise AssertionError(f"oracle: pg_dump --schema-only {dbname!r} failed: {out.stderr}")
    return [
        line
        for line in out.stdout.splitlines()
        if line.strip()
        and not line.startswith("--")
        and not line.startswith("\\restrict")
        and not line.startswith("\\unrestrict")
    ]


def pg_state(pg, dbname: str) -> PgState:
    """Read `dbname` on the test server `pg` (a vaultflow.testing PostgresInstance)."""
    rows: dict[str, list[str]] = {}
    with psycopg.connect(pg.conninfo(dbname), autocommit=True, options=SESSION_OPTIONS) as conn:
        conn.execute(
            "SET extra_float_digits = 3; SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; "
            "SET IntervalStyle = 'postgres'; SET bytea_output = 'hex'"
        )
        for schema, table in conn.execute(TABLES).fetchall():
            query = sql.SQL("COPY (SELECT * FROM ONLY {}.{}) TO STDOUT").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            lines: list[str] = []
            with conn.cursor().copy(query) as copy:
                data = b"".join(bytes(chunk) for chunk in copy)
            lines = data.decode("utf-8", "surrogateescape").splitlines()
            rows[f"{schema}.{table}"] = sorted(lines)
    with psycopg.connect(pg.conninfo("postgres"), autocommit=True, options=SESSION_OPTIONS) as conn:
        properties = _database_properties(conn, dbname)
    return PgState(schema=_schema(pg, dbname), rows=rows, properties=properties)


def pg_differences(source: PgState, restored: PgState, *, ignore_properties: tuple[str, ...] = ()) -> list[str]:
    """Human-readable differences; empty when the restore is exact."""
    problems: list[str] = []
    if source.schema != restored.schema:
        diff = difflib.unified_diff(source.schema, restored.schema, "source", "restored", lineterm="", n=1)
        problems.append("schema differs:\n" + "\n".join(list(diff)[:60]))
    for table in sorted(set(source.rows) | set(restored.rows)):
        if table not in restored.rows:
            problems.append(f"table {table} missing from the restore")
        elif table not in source.rows:
            problems.append(f"table {table} is in the restore only")
        elif source.rows[table] != restored.rows[table]:
            a, b = source.rows[table], restored.rows[table]
            problems.append(
                f"rows of {table} differ: {len(a)} vs {len(b)} rows; first differences: {sorted(set(a) ^ set(b))[:5]}"
            )
    for key, value in source.properties.items():
        if key not in ignore_properties and restored.properties.get(key) != value:
            problems.append(f"database property {key}: source {value!r}, restored {restored.properties.get(key)!r}")
    return problems


def assert_pg_restored(
    source_pg, source_db: str, restored_pg, restored_db: str, *, ignore_properties: tuple[str, ...] = ()
) -> None:
    """AssertionError listing every difference between the source and the restored database."""
    problems = pg_differences(
        pg_state(source_pg, source_db), pg_state(restored_pg, restored_db), ignore_properties=ignore_properties
    )
    assert not problems, f"oracle: {restored_db!r} is not {source_db!r}:\n" + "\n".join(problems)


# -- Redis -------------------------------------------------------------------------------------


@dataclass
class RedisKey:
    type: str
    value: object  # the value read with the type's own commands (see _redis_value)
    expire_at_ms: int  # PEXPIRETIME: -1 = no expiry
    stream_full: object = None


@dataclass
class RedisState:
    keys: dict[tuple[int, bytes], RedisKey] = field(default_factory=dict)


def _redis_value(client, key: bytes, kind: str) -> object:
    """The value as a user reads it. Not DUMP: a DUMP of a hash-table set, hash or zset lists
    members in an order that depends on each server's random hash seed, so two equal values
    can DUMP differently. Module and unknown types fall back to DUMP."""
    if kind == "string":
        return client.get(key)
    if kind == "list":
        return client.lrange(key, 0, -1)
    if kind == "set":
        return sorted(client.smembers(key))
    if kind == "zset":
        return client.zrange(key, 0, -1, withscores=True)
    if kind == "hash":
        return sorted(client.hgetall(key).items())
    if kind == "stream":
        return client.xrange(key, "-", "+")
    return client.dump(key)


def redis_state(server, databases: range = range(16)) -> RedisState:
    """Every key of every logical db of `server` (a RedisProcess or anything with .client(db))."""
    state = RedisState()
    for db in databases:
        client = server.client(db)
        for key in client.scan_iter(count=1000):
            kind = client.type(key).decode()
            stream_full = client.execute_command("XINFO", "STREAM", key, "FULL") if kind == "stream" else None
            state.keys[(db, key)] = RedisKey(
                type=kind,
                value=_redis_value(client, key, kind),
                expire_at_ms=client.execute_command("PEXPIRETIME", key),
                stream_full=stream_full,
            )
    return state


def redis_differences(source: RedisState, restored: RedisState) -> list[str]:
    problems = []
    for db_key in sorted(set(source.keys) | set(restored.keys)):
        a, b = source.keys.get(db_key), restored.keys.get(db_key)
        if a is None or b is None:
            problems.append(f"db {db_key[0]} key {db_key[1]!r} only in the {'restore' if a is None else 'source'}")
        elif a != b:
            what = [f for f in ("type", "value", "expire_at_ms", "stream_full") if getattr(a, f) != getattr(b, f)]
            problems.append(f"db {db_key[0]} key {db_key[1]!r} differs in {', '.join(what)}")
    return problems


def assert_redis_restored(source, restored, databases: range = range(16)) -> None:
    problems = redis_differences(redis_state(source, databases), redis_state(restored, databases))
    assert not problems, "oracle: the restored Redis differs:\n" + "\n".join(problems[:50])


# -- MongoDB ----------------------------------------------------------------------------------
# Per collection: every document fetched sorted by _id and written as canonical Extended JSON
# (types kept: an int32 and an int64 of the same value differ), the collection's type and
# options, and its indexes by name (key and options, without the server-set 'v'/'ns').


def mongo_state(client, database: str) -> dict[str, object]:
    """{collection: {"type", "options", "indexes", "documents"}} of `database` (system.* left out)."""
    from bson import json_util

    state: dict[str, object] = {}
    db = client[database]
    for info in sorted(db.list_collections(), key=lambda i: i["name"]):
        name, kind = info["name"], info.get("type", "collection")
        if name.startswith("system."):
            continue
        entry: dict[str, object] = {"type": kind, "options": json_util.dumps(info.get("options") or {}, sort_keys=True)}
        if kind == "collection":
            entry["indexes"] = sorted(
                json_util.dumps({k: v for k, v in index.items() if k not in ("v", "ns")}, sort_keys=True)
                for index in db[name].list_indexes()
            )
            entry["documents"] = _documents_by_id(db[name])
        state[name] = entry
    return state


def _documents_by_id(collection) -> list[str]:
    """Every document as canonical Extended JSON, sorted by _id; documents sharing an _id (legal
    in a timeseries collection) sorted among themselves by that text, so their order on the
    server does not count."""
    from bson import json_util

    rows = [
        (
            json_util.dumps({"_id": doc.get("_id")}, json_options=json_util.CANONICAL_JSON_OPTIONS),
            json_util.dumps(doc, json_options=json_util.CANONICAL_JSON_OPTIONS),
        )
        for doc in collection.find().sort("_id", 1)
    ]
    return [
        text for _, group in itertools.groupby(rows, key=lambda row: row[0]) for text in sorted(t for _, t in group)
    ]


def mongo_differences(source: dict[str, object], restored: dict[str, object]) -> list[str]:
    """Every difference between two mongo_state readings, as sentences; [] when equal."""
    problems = []
    for name in sorted(set(source) | set(restored)):
        if name not in restored:
            problems.append(f"collection {name} missing from the restore")
        elif name not in source:
            problems.append(f"collection {name} only in the restore")
        elif source[name] != restored[name]:
            for part in ("type", "options", "indexes", "documents"):
                a, b = source[name].get(part), restored[name].get(part)  # type: ignore[union-attr]
                if a != b:
                    detail = ""
                    if part == "documents":
                        diff = list(difflib.unified_diff(a or [], b or [], lineterm="", n=0))[2:8]
                        detail = ": " + " | ".join(diff)
                    problems.append(f"collection {name}: {part} differ{detail}")
    return problems
