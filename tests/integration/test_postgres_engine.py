"""The PostgreSQL engine against real servers (PG 18 and PG 15): backup, restore, snapshot
consistency, secrecy and S3. Failure modes live in test_postgres_failures.py."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.postgres import MakeDb, quote_ident
from tests.fixtures.secret_watch import SecretWatch
from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.engine import PostgresEngine, default_restore_name
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.errors import AuthenticationError, NotFoundError, is_transient
from vaultflow.pipeline import open_verified
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
from vaultflow.stores.base import CHUNK_SIZE
from vaultflow.stores.s3 import S3Store
from vaultflow.testing.postgres_server import PostgresInstance
from vaultflow.testing.s3_server import S3Instance


def engine_for(server: PostgresInstance, databases: list[str] | None = None, **kw) -> PostgresEngine:
    return PostgresEngine(
        PostgresSettings(
            target_name=f"pg{server.version}",
            host=server.host,
            port=server.port,
            user=server.user,
            password=server.password,
            databases=databases or [],
            **kw,
        )
    )


@pytest.fixture
def drop_later():
    """drop_later(server, name): drop a database a restore created, at teardown."""
    created: list[tuple[PostgresInstance, str]] = []
    yield lambda server, name: created.append((server, name))
    for server, name in created:
        server.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


SCHEMA = """
CREATE SCHEMA inventory;
CREATE SEQUENCE invoice_no START 1000;
CREATE TABLE people (id serial PRIMARY KEY, name text NOT NULL, nickname text, born date,
                     balance numeric(14, 4), profile jsonb, avatar bytea);
CREATE TABLE inventory.items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, label text,
                              attrs json, price numeric, qty integer);
CREATE TABLE nothing_here (id int);
INSERT INTO people (name, nickname, born, balance, profile, avatar) VALUES
  ('Zoë Ångström', 'zo', '1990-02-03', 1234567.8912, '{"langs": ["sv", "日本語"], "vip": true}', '\\x00ff10'),
  ('Дмитрий 🚀', NULL, NULL, NULL, NULL, NULL),
  ('quote''s "and" tabs	here', '', '2000-01-01', -0.0001, '[]', '\\x');
INSERT INTO people (name, balance, avatar)
  SELECT 'bulk ' || g, g * 1.5, decode(md5(g::text), 'hex') FROM generate_series(1, 3000) g;
INSERT INTO inventory.items (label, attrs, price, qty)
  SELECT 'item ' || g, json_build_object('g', g, 'odd', g % 2 = 1), g / 7.0, NULLIF(g % 5, 0)
  FROM generate_series(1, 500) g;
SELECT nextval('invoice_no') FROM generate_series(1, 7);
"""


def load(server: PostgresInstance, db: str, script: str) -> None:
    with psycopg.connect(server.conninfo(db), autocommit=True) as conn:
        for statement in filter(str.strip, script.split(";\n")):
            conn.execute(statement)  # type: ignore[arg-type]


def contents(server: PostgresInstance, db: str) -> dict:
    return {
        "people": server.execute("SELECT * FROM people ORDER BY id", db),
        "items": server.execute("SELECT id, label, attrs::text, price, qty FROM inventory.items ORDER BY id", db),
        "nothing_here": server.execute("SELECT * FROM nothing_here", db),
        "invoice_no": server.execute("SELECT last_value, is_called FROM invoice_no", db),
    }


def test_full_backup_drop_restore(pg_server: PostgresInstance, fresh_db: MakeDb, tmp_path: Path) -> None:
    shop, crm = fresh_db(pg_server), fresh_db(pg_server)
    load(pg_server, shop, SCHEMA)
    pg_server.execute("CREATE TABLE contacts (id int PRIMARY KEY, email text)", crm)
    pg_server.execute("INSERT INTO contacts SELECT g, 'c' || g || '@example.org' FROM generate_series(1, 50) g", crm)
    before = {shop: contents(pg_server, shop), crm: pg_server.execute("SELECT * FROM contacts ORDER BY id", crm)}
    assert before[shop]["people"][1][2:] == (None, None, None, None, None)
    assert before[shop]["people"][0][6] == b"\x00\xff\x10"
    assert before[shop]["people"][0][4] == Decimal("1234567.8912")

    engine, repo = engine_for(pg_server), Repository(LocalStore(tmp_path / "repo"))
    manifest = engine.full_backup(BackupContext(repo, log=lambda line: None))

    dumped = {o.database for o in manifest.objects if o.role == "database-dump"}
    assert {"postgres", shop, crm} <= dumped and not dumped & {"template0", "template1"}
    assert [o.key for o in manifest.objects if o.role == "globals"] == ["globals.sql.zst"]
    assert manifest.server_version.startswith(str(pg_server.version))
    assert set(manifest.fingerprints[shop]) == {"public.people", "inventory.items", "public.nothing_here"}
    assert manifest.fingerprints[shop]["public.people"].rows == 3003
    assert manifest.fingerprints[shop]["public.nothing_here"].rows == 0
    # numeric, jsonb and json need their text form; a table of ints keeps the binary row hash.
    assert manifest.fingerprints[shop]["public.people"].method == "record+text"
    assert manifest.fingerprints[shop]["public.nothing_here"].method == "record"
    assert repo.catalog("postgres", f"pg{pg_server.version}").manifests == [manifest]
    assert all(check.ok for check in repo.verify_backup(manifest))

    for db in (shop, crm):
        pg_server.execute(f"DROP DATABASE {quote_ident(db)} WITH (FORCE)")
        result = engine.restore(BackupContext(repo), manifest, into=db, databases=[db])
        assert result.restored == {db: db}
        assert result.comparison.ok, result.comparison.summary()
        assert engine.fingerprint(db) == manifest.fingerprints[db]

    assert contents(pg_server, shop) == before[shop]
    assert pg_server.execute("SELECT * FROM contacts ORDER BY id", crm) == before[crm]
    # Sequences carry on where they were: no duplicate keys after a restore.
    assert pg_server.execute("SELECT nextval('invoice_no')", shop) == [(1007,)]
    assert pg_server.execute("INSERT INTO people (name) VALUES ('new') RETURNING id", shop) == [(3004,)]
    assert pg_server.execute("INSERT INTO inventory.items (label) VALUES ('n') RETURNING id", shop) == [(501,)]


def test_fingerprints_describe_exactly_the_dump(
    pg_server: PostgresInstance, fresh_db: MakeDb, tmp_path: Path, drop_later
) -> None:
    db = fresh_db(pg_server)
    pg_server.execute("CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz DEFAULT now(), v text)", db)
    # Ballast so the dump takes a while and the inserts really overlap it.
    pg_server.execute("CREATE TABLE ballast AS SELECT g, md5(g::text) AS h FROM generate_series(1, 300000) g", db)
    engine, repo = engine_for(pg_server, [db]), Repository(LocalStore(tmp_path / "repo"))

    inserted = 0
    with psycopg.connect(pg_server.conninfo(db), autocommit=True) as writer, ThreadPoolExecutor(1) as pool:
        for _ in range(50):
            writer.execute("INSERT INTO events (v) VALUES ('before')")
        backup = pool.submit(engine.full_backup, BackupContext(repo))
        while not backup.done():
            writer.execute("INSERT INTO events (v) VALUES (%s)", (f"during {inserted}",))
            inserted += 1
        manifest = backup.result()
        for _ in range(20):  # keeps going after the backup, as production would
            writer.execute("INSERT INTO events (v) VALUES ('after')")

    expected = manifest.fingerprints[db]["public.events"]
    total = pg_server.execute("SELECT count(*) FROM events", db)[0][0]
    assert inserted > 20, "the writer never overlapped the backup"
    assert 50 <= expected.rows < total - 20  # the snapshot excludes rows committed during the dump

    result = engine.restore(BackupContext(repo), manifest)
    target = result.restored[db]
    drop_later(pg_server, target)
    assert target == default_restore_name(db, manifest.id)
    assert result.comparison.ok, result.comparison.summary()
    assert pg_server.execute("SELECT count(*) FROM events", target)[0][0] == expected.rows
    assert engine.fingerprint(target)["public.events"] == expected
    assert engine.fingerprint(target)["public.ballast"] == manifest.fingerprints[db]["public.ballast"]


def test_password_never_leaks(pg_with_password: PostgresInstance, fresh_db: MakeDb, tmp_path: Path, drop_later) -> None:
    server, password = pg_with_password, pg_with_password.password
    assert password
    db = fresh_db(server)
    server.execute("CREATE TABLE t AS SELECT g, repeat(md5(g::text), 4) AS v FROM generate_series(1, 100000) g", db)
    engine, repo = engine_for(server, [db]), Repository(LocalStore(tmp_path / "repo"))
    logs: list[str] = []
    with SecretWatch(password, interval=0.02) as watch:
        manifest = engine.full_backup(BackupContext(repo, log=logs.append))
        result = engine.restore(BackupContext(repo, log=logs.append), manifest)
        drop_later(server, result.restored[db])

    assert result.comparison.ok
    assert {"pg_dump", "pg_restore"} <= watch.tools, f"the sampler never saw the tools: {watch.tools}"
    assert watch.leaks == []
    assert password not in manifest.to_json().decode()
    assert not any(password in line for line in logs)
    files = [p for p in (tmp_path / "repo").rglob("*") if p.is_file()]
    assert len(files) == len(manifest.objects) + 1
    for path in files:
        assert password.encode() not in path.read_bytes(), path
    for obj in manifest.objects:  # nor inside the payload once decompressed (globals included)
        reader, _, raw = open_verified(repo.store, repo.object_key(manifest, obj.key), obj.sha256, obj.stored_size)
        with raw:
            while chunk := reader.read(CHUNK_SIZE):
                assert password.encode() not in chunk, obj.key


def test_wrong_password(pg_with_password: PostgresInstance, tmp_path: Path) -> None:
    wrong = "not-" + (pg_with_password.password or "")
    engine = PostgresEngine(
        PostgresSettings(target_name="pw", host=pg_with_password.host, port=pg_with_password.port, password=wrong)
    )
    repo = Repository(LocalStore(tmp_path / "repo"))
    with pytest.raises(AuthenticationError) as info:
        engine.full_backup(BackupContext(repo))
    assert not is_transient(info.value)
    assert f"postgres@{pg_with_password.host}:{pg_with_password.port}" in str(info.value)
    assert wrong not in str(info.value)
    assert list(repo.store.list("")) == []


# -- S3 ------------------------------------------------------------------------------------


def test_backup_and_restore_through_s3(
    pg_server: PostgresInstance, fresh_db: MakeDb, s3_server: S3Instance, s3_bucket: str, drop_later
) -> None:
    db = fresh_db(pg_server)
    pg_server.execute("CREATE TABLE t AS SELECT g AS id, 'ü' || g AS v FROM generate_series(1, 20000) g", db)
    engine = engine_for(pg_server, [db])
    repo = Repository(S3Store(s3_server.client(), s3_bucket, prefix="vault"))
    manifest = engine.full_backup(BackupContext(repo))
    keys = {o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]}
    prefix = f"vault/postgres/pg{pg_server.version}/backups/{manifest.id}/"
    assert keys == {prefix + "manifest.json", prefix + "globals.sql.zst", prefix + f"db/{db}.dump.zst"}
    assert all(c.ok for c in repo.verify_backup(manifest))

    fresh_repo = Repository(S3Store(s3_server.client(), s3_bucket, prefix="vault"))
    loaded = fresh_repo.catalog("postgres", f"pg{pg_server.version}").resolve("latest")
    assert loaded == manifest
    result = engine.restore(BackupContext(fresh_repo), loaded, into=f"{db}_from_s3")
    drop_later(pg_server, f"{db}_from_s3")
    assert result.comparison.ok
    assert pg_server.execute("SELECT count(*), max(v) FROM t", f"{db}_from_s3") == [(20000, "ü9999")]


def test_s3_bucket_missing(pg18: PostgresInstance, fresh_db: MakeDb, s3_server: S3Instance) -> None:
    db = fresh_db(pg18)
    repo = Repository(S3Store(s3_server.client(), "vf-no-such-bucket-4242"))
    with pytest.raises(NotFoundError, match="bucket 'vf-no-such-bucket-4242' does not exist"):
        engine_for(pg18, [db]).full_backup(BackupContext(repo))


def test_s3_wrong_credentials(pg18: PostgresInstance, fresh_db: MakeDb, s3_server: S3Instance, s3_bucket: str) -> None:
    db = fresh_db(pg18)
    bad_secret = "Wr0ngSecret" + "x" * 29
    client = s3_server.client(aws_secret_access_key=bad_secret)
    with pytest.raises(AuthenticationError) as info:
        engine_for(pg18, [db]).full_backup(BackupContext(Repository(S3Store(client, s3_bucket))))
    message = str(info.value)
    assert s3_bucket in message and "credentials" in message
    assert bad_secret not in message and s3_server.secret_key not in message
    assert s3_server.client().list_objects_v2(Bucket=s3_bucket)["KeyCount"] == 0
