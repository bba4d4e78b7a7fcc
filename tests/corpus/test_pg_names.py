"""Corpus: hostile database names (issue 8 section 1), backed up and restored on PostgreSQL 15
and 18, judged by the oracle and by vaultflow's own comparison.

- names that client tools would parse as connection strings (`k=v`, `postgresql://x`, a name
  that says `host=<fake server> port=... dbname=x`) stay names: the backup reads the right
  database and nothing ever connects to the address in the name;
- names that would clash or escape as repository keys (`Sales`/`sales`, `a/b`, `..`, a 63-byte
  unicode name, `%`) get distinct keys below their backup and each restores its own data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from tests.corpus.conftest import pg_engine
from tests.corpus.oracle import assert_pg_restored
from tests.fixtures.fake_pg import FakePostgres
from tests.fixtures.postgres import quote_ident
from vaultflow.blocks import BackupRepository, PostgresTarget
from vaultflow.engines.postgres.engine import dump_object_name
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.restore import restore
from vaultflow.keys import artifact_slug, decode_name


@pytest.fixture
def fake_pg():
    with FakePostgres() as fake:
        yield fake


def _make(server, name: str, marker: str) -> None:
    """A database `name` whose single table says which database it is."""
    server.execute(f"CREATE DATABASE {quote_ident(name)}")
    server.execute(
        "CREATE TABLE whoami (name text, marker text); "
        f"INSERT INTO whoami SELECT current_database(), '{marker}' FROM generate_series(1, 3)",
        dbname=name,
    )


def _drop(server, names) -> None:
    for name in names:
        server.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


def _backup_and_restore_each(server, ctx, names: list[str], target: str) -> dict[str, str]:
    """One full backup of `names`; each restored into `r<i>_<target>`, checked by both judges.
    Returns the manifest's object key per database."""
    engine = pg_engine(server, names, name=target)
    manifest = engine.full_backup(ctx)
    keys = {o.database: o.key for o in manifest.objects if o.role == "database-dump"}
    assert set(keys) == set(names)
    restored = [f"r{i}_{target}" for i in range(len(names))]
    try:
        for name, into in zip(names, restored, strict=False):
            result = engine.restore(ctx, manifest, into=into, databases=[name])
            assert result.restored == {name: into}
            assert result.comparison.ok, result.comparison.summary()
            assert_pg_restored(server, name, server, into)
            marker = server.execute("SELECT DISTINCT name, marker FROM whoami", dbname=into)
            assert marker == [(name, f"m{names.index(name)}")], "restored the data of another database"
    finally:
        _drop(server, restored)
    return keys


CONNINFO_NAMES = ["k=v", "a'b", "a\\b", "postgresql://x", "sp ace = eq 'q'", "-d"]


def test_names_that_look_like_connection_strings_stay_names(pg_server, corpus_ctx, fake_pg):
    names = CONNINFO_NAMES + [f"host=127.0.0.1 port={fake_pg.port} dbname=x"]
    for i, name in enumerate(names):
        _make(pg_server, name, f"m{i}")
    try:
        _backup_and_restore_each(pg_server, corpus_ctx, names, f"conninfo{pg_server.version}")
    finally:
        _drop(pg_server, names)
    assert fake_pg.connections == 0 and fake_pg.passwords == [], fake_pg.startups


KEY_NAMES = ["Sales", "sales", "a/b", "..", ".", "ü" * 31 + "x", "50%", "%53ales"]


def test_names_that_clash_or_escape_as_keys_get_their_own_objects(pg_server, corpus_ctx):
    names = [f"{n}" for n in KEY_NAMES]
    assert len("ü" * 31 + "x") == 32 and len(("ü" * 31 + "x").encode()) == 63  # PostgreSQL's limit
    for i, name in enumerate(names):
        _make(pg_server, name, f"m{i}")
    try:
        keys = _backup_and_restore_each(pg_server, corpus_ctx, names, f"keys{pg_server.version}")
    finally:
        _drop(pg_server, names)
    assert len({k.lower() for k in keys.values()}) == len(names), "keys must differ in more than case"
    for name, key in keys.items():
        assert key == dump_object_name(name)
        directory, file = key.split("/")
        assert directory == "db" and decode_name(file[: -len(".dump.zst")]) == name
    root: Path = corpus_ctx.repository.store.root
    dumps = sorted(p for p in root.rglob("*.dump.zst"))
    assert len(dumps) == len(names) and all(p.parent.name == "db" for p in dumps)


def test_target_names_are_encoded_and_listed_back(pg18, corpus_ctx, fresh_db):
    db = fresh_db(pg18)
    pg18.execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)", dbname=db)
    for target in ("Sales/EU", "sales/eu", ".."):
        pg_engine(pg18, [db], name=target).full_backup(corpus_ctx)
    repo = corpus_ctx.repository
    assert repo.targets() == sorted([("postgres", ".."), ("postgres", "Sales/EU"), ("postgres", "sales/eu")])
    for target in ("Sales/EU", "sales/eu", ".."):
        [manifest] = repo.catalog("postgres", target).manifests
        assert manifest.target == target
    assert sorted(p.name for p in (repo.store.root / "postgres").iterdir()) == [
        "%2E.",
        "%53ales%2F%45%55",
        "sales%2Feu",
    ]


def test_case_twin_targets_through_the_flows_keep_their_own_catalog_artifacts(pg18, fresh_db, tmp_path, prefect_api):
    """Target names reach run names, artifact keys (Prefect allows only a-z 0-9 -) and locks."""
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    made = {}
    for twin in ("Sales", "sales", "Sales/ü"):
        db = fresh_db(pg18)
        pg18.execute(f"CREATE TABLE t (owner text); INSERT INTO t VALUES ('{twin}')", dbname=db)
        target = PostgresTarget(
            host=pg18.host,
            port=pg18.port,
            user=pg18.user,
            databases=[db],
            target_name=twin,
            bin_dir=str(pg18.client_bin_dir),
        )
        made[twin] = (target, db, full_backup(target=target, repository=repository))
    keys = {twin: f"catalog-postgres-{artifact_slug(twin)}" for twin in made}
    assert len(set(keys.values())) == 3
    with get_client(sync_client=True) as client:
        for twin, key in keys.items():
            [artifact] = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=1
            )
            rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
            assert [row["backup"] for row in rows] == [made[twin][2]["backup_id"]]
    for twin, (target, db, backup) in made.items():
        into = f"{db}_back"
        try:
            result = restore(target=target, repository=repository, backup_id=backup["backup_id"], into=into)
            assert result["restored"] == {db: into}
            assert pg18.execute("SELECT owner FROM t", dbname=into) == [(twin,)]
        finally:
            pg18.execute(f"DROP DATABASE IF EXISTS {quote_ident(into)} WITH (FORCE)")


def test_a_backup_from_before_the_encoding_still_restores(pg18, corpus_ctx):
    """Older backups stored `db/<raw name>.dump.zst`; the manifest names the key, so they restore."""
    name = "Legacy Sales"
    _make(pg18, name, "m0")
    into = "legacy_sales_back"
    try:
        engine = pg_engine(pg18, [name], name="legacy18")
        manifest = engine.full_backup(corpus_ctx)
        root: Path = corpus_ctx.repository.store.root
        backup_dir = root / "postgres" / "legacy18" / "backups" / manifest.id
        (backup_dir / dump_object_name(name)).rename(backup_dir / "db" / f"{name}.dump.zst")
        doc = json.loads((backup_dir / "manifest.json").read_text())
        [dump] = [o for o in doc["objects"] if o["role"] == "database-dump"]
        dump["key"] = f"db/{name}.dump.zst"
        (backup_dir / "manifest.json").write_text(json.dumps(doc))
        [old] = corpus_ctx.repository.catalog("postgres", "legacy18").manifests
        result = engine.restore(corpus_ctx, old, into=into)
        assert result.comparison.ok, result.comparison.summary()
        assert_pg_restored(pg18, name, pg18, into)
    finally:
        _drop(pg18, [name, into])
