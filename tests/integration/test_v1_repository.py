"""Backups written by vaultflow's version 1 manifests (tests/fixtures/v1-repository, made by the
version 1 code) restore with today's code: the PostgreSQL logical full into embedded PostgreSQL
18 (its database properties, moved into the consistency record, recreate the database; its
fingerprints, migrated to `count`, prove the copy), the Redis RDB full and the AOF full +
increment into scratch servers, compared with their recorded facts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.corpus.conftest import pg_engine
from vaultflow.engines.base import BackupContext
from vaultflow.engines.redis.engine import RedisEngine
from vaultflow.engines.redis.settings import RedisSettings
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore

V1 = Path(__file__).resolve().parents[1] / "fixtures" / "v1-repository"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    """A copy of the v1 repository (restores write scratch records into it)."""
    shutil.copytree(V1, tmp_path / "repo")
    return Repository(LocalStore(tmp_path / "repo"))


def test_v1_logical_full_restores_with_its_properties(pg18, repo: Repository) -> None:
    manifest = repo.catalog("postgres", "v1-logical").resolve("latest")
    engine = pg_engine(pg18, name="v1-logical")
    ctx = BackupContext(repo, log=lambda line: None)
    into = "v1_shop_restored"
    try:
        result = engine.restore(ctx, manifest, into=into, databases=["shop"])
        assert result.comparison.ok, result.comparison.summary()
        assert {(t.table, t.status) for t in result.comparison.tables} >= {
            ("public.people", "match"),
            ("public.empty_one", "match"),
        }
        assert any(t.table.startswith("(database properties") for t in result.comparison.tables)
        assert pg18.execute(
            f"SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{into}'"
        ) == [("orders",)]
        assert pg18.execute("SELECT count(*) FROM people", dbname=into) == [(30,)]
    finally:
        pg18.execute(f'DROP DATABASE IF EXISTS "{into}" WITH (FORCE)')
    drilled = engine.drill(ctx, manifest)  # both databases, "Annex" under its encoded key
    assert drilled.comparison.ok and {t.database for t in drilled.comparison.tables} >= {"shop", "Annex"}


@pytest.mark.parametrize("target", ["v1-rdb", "v1-aof"])
def test_v1_redis_backups_restore_and_match(repo: Repository, target: str) -> None:
    catalog = repo.catalog("redis", target)
    engine = RedisEngine(RedisSettings(target_name=target, host="127.0.0.1", port=1))  # the source is long gone
    for manifest in catalog.manifests:  # the AOF increment through its chain
        result = engine.drill(BackupContext(repo, log=lambda line: None), manifest)
        assert result.comparison.ok, result.comparison.summary()
        expected = {g: f["keys"].count for g, f in manifest.fingerprints.items()}
        assert expected == (
            {"db0": 2, "db2": 1} if target == "v1-rdb" else {"db0": 1 if manifest.parent_id is None else 3}
        )
