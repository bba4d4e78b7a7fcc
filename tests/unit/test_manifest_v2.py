"""Manifest schema_version 2: version 1 manifests (a repository written by the version 1 code,
tests/fixtures/v1-repository) upgrade on read; consistency records are the engine's typed models,
found through the registry, so an engine defined in a test brings its own."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from vaultflow.engines import registry
from vaultflow.engines.postgres.consistency import (
    DatabaseProperties,
    FileLevelCounts,
    PostgresLogicalConsistency,
    PostgresPhysicalConsistency,
)
from vaultflow.engines.redis.consistency import AofPiece, RedisAofConsistency, RedisRdbConsistency
from vaultflow.manifest import (
    SCHEMA_VERSION,
    BackupKind,
    BackupMode,
    Consistency,
    Fingerprint,
    Manifest,
    ManifestError,
    parse_manifest,
)
from vaultflow.manifest_v1 import upgrade_v1
from vaultflow.repository import MANIFEST, Repository
from vaultflow.stores import LocalStore

V1 = Path(__file__).resolve().parents[1] / "fixtures" / "v1-repository"
LOGICAL, PHYS_F, PHYS_I = "20261129T155337.238Z-F", "20261129T155338.193Z-F", "20261129T155338.362Z-I"
FILE_F, FILE_I = "20261129T155339.537Z-F", "20261129T155339.747Z-I"
RDB, AOF_F, AOF_I = "20261129T155340.063Z-F", "20261129T155340.137Z-F", "20261129T155340.305Z-I"


def v1_docs() -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in sorted(V1.rglob(MANIFEST))}


@pytest.fixture(scope="module")
def catalogs() -> dict[str, dict[str, Manifest]]:
    repo = Repository(LocalStore(V1))
    out = {}
    for engine, target in repo.targets():
        catalog = repo.catalog(engine, target)
        assert catalog.problems == [], catalog.problems
        out[target] = {m.id: m for m in catalog.manifests}
    return out


def test_the_fixture_is_version_1_and_small() -> None:
    docs = v1_docs()
    assert len(docs) == 8 and {d["schema_version"] for d in docs.values()} == {1}
    assert sum(p.stat().st_size for p in V1.rglob("*") if p.is_file()) < 100_000


def test_every_v1_manifest_reads_with_its_typed_consistency(catalogs) -> None:
    assert sorted(catalogs) == ["v1-aof", "v1-filelevel", "v1-logical", "v1-physical", "v1-rdb"]
    kinds = {t: [(m.kind, m.mode, type(m.consistency)) for m in ms.values()] for t, ms in catalogs.items()}
    F, I = BackupKind.FULL, BackupKind.INCREMENTAL
    assert kinds == {
        "v1-logical": [(F, BackupMode.LOGICAL, PostgresLogicalConsistency)],
        "v1-physical": [(F, BackupMode.PHYSICAL, PostgresPhysicalConsistency)]
        + [(I, BackupMode.PHYSICAL, PostgresPhysicalConsistency)],
        "v1-filelevel": [
            (F, BackupMode.PHYSICAL, PostgresPhysicalConsistency),
            (I, BackupMode.PHYSICAL, PostgresPhysicalConsistency),
        ],
        "v1-rdb": [(F, BackupMode.RDB, RedisRdbConsistency)],
        "v1-aof": [(F, BackupMode.AOF, RedisAofConsistency), (I, BackupMode.AOF, RedisAofConsistency)],
    }
    for target, manifests in catalogs.items():
        for m in manifests.values():
            assert m.schema_version == SCHEMA_VERSION and m.target == target
            assert parse_manifest(m.to_json(), "again") == m, "a migrated manifest writes and reads back as v2"


def test_v1_postgres_values_migrated(catalogs) -> None:
    docs = v1_docs()
    logical = catalogs["v1-logical"][LOGICAL]
    c = PostgresLogicalConsistency.of(logical)
    assert c.method == "exported snapshot per database" and set(c.snapshots) == {"shop", "Annex"}
    shop = c.database_properties["shop"]  # moved in from the top level
    assert isinstance(shop, DatabaseProperties) and shop.comment == "orders" and shop.settings == ["work_mem=8MB"]
    assert c.database_properties == {
        db: DatabaseProperties(**p) for db, p in docs[LOGICAL]["database_properties"].items()
    }
    people = logical.fingerprints["shop"]["public.people"]
    assert people == Fingerprint(count=30, digest="-19243756798677214204", method="record") and people.rows == 30
    assert logical.fingerprints["Annex"]["public.notes"].count == 2

    full, incr = catalogs["v1-physical"][PHYS_F], catalogs["v1-physical"][PHYS_I]
    for m in (full, incr):
        p, raw = PostgresPhysicalConsistency.of(m), docs[m.id]["consistency"]
        assert (p.start_lsn, p.stop_lsn, p.timeline, p.start_wal_file) == (
            raw["start_lsn"],
            raw["stop_lsn"],
            1,
            raw["start_wal_file"],
        )
        assert p.system_identifier == raw["system_identifier"]
        assert p.unlogged_tables == {"postgres": ["public.scratch"]} and p.manifest_checksums == "CRC32C"
        assert p.method == "pg_basebackup" and not p.file_level and p.files is None
    assert PostgresPhysicalConsistency.of(incr).incremental_from_lsn == full.consistency.start_lsn
    assert incr.parent_id == full.id and incr.fingerprints["postgres"]["public.t"].count == 30

    level = PostgresPhysicalConsistency.of(catalogs["v1-filelevel"][FILE_I])
    assert level.file_level and level.stop_wal_file == docs[FILE_I]["consistency"]["stop_wal_file"]
    assert level.files == FileLevelCounts(**docs[FILE_I]["consistency"]["files"])
    assert level.manifest_checksums is None  # file-level backups never recorded it


def test_v1_redis_values_migrated(catalogs) -> None:
    docs = v1_docs()
    rdb = RedisRdbConsistency.of(catalogs["v1-rdb"][RDB])
    assert (
        rdb.method == "replication snapshot (redis-cli --rdb)"
        and rdb.rdb_crc64 == docs[RDB]["consistency"]["rdb_crc64"]
    )
    assert rdb.rdb_version == "10" and rdb.repl_offset == 0
    assert {g: f["keys"].count for g, f in catalogs["v1-rdb"][RDB].fingerprints.items()} == {"db0": 2, "db2": 1}
    assert catalogs["v1-rdb"][RDB].fingerprints["db0"]["keys"] == Fingerprint(
        count=2, digest="expires=1", method="count"
    )
    full, incr = (RedisAofConsistency.of(catalogs["v1-aof"][i]) for i in (AOF_F, AOF_I))
    assert full.base == incr.base == "appendonly.aof.2.base.rdb" and full.base_format == "rdb"
    assert incr.pieces == [AofPiece(**p) for p in docs[AOF_I]["consistency"]["pieces"]]
    assert incr.cuts == {"appendonly.aof.2.incr.aof": 86} and incr.method == "aof"


def test_v1_chains_resolve_through_the_one_walk(catalogs) -> None:
    repo = Repository(LocalStore(V1))
    for target, (full, incr) in {
        "v1-physical": (PHYS_F, PHYS_I),
        "v1-filelevel": (FILE_F, FILE_I),
        "v1-aof": (AOF_F, AOF_I),
    }.items():
        catalog = repo.catalog("redis" if target == "v1-aof" else "postgres", target)
        assert [m.id for m in catalog.chain(catalog.get(incr))] == [full, incr]
        assert catalog.chain_problem(catalog.get(incr)) is None


def test_upgrade_is_pure_and_unknown_versions_name_the_key() -> None:
    doc = v1_docs()[LOGICAL]
    before = copy.deepcopy(doc)
    upgraded = upgrade_v1(doc)
    assert doc == before, "the input is not changed"
    assert upgraded["schema_version"] == 2 and "database_properties" not in upgraded
    assert upgraded["consistency"]["type"] == "postgres-logical"
    assert upgraded["fingerprints"]["shop"]["public.people"] == {
        "count": 30,
        "digest": "-19243756798677214204",
        "method": "record",
    }
    where = "postgres/v1-logical/backups/X/manifest.json"
    for version in (3, 0, "2", None, True):
        with pytest.raises(ManifestError) as info:
            parse_manifest(json.dumps({**doc, "schema_version": version}).encode(), where)
        assert (
            str(info.value).startswith(f"{where}: schema_version {version!r} is not supported")
            and "reads 1, 2" in str(info.value)
            and "upgrade vaultflow" in str(info.value)
        )


def test_v1_oldest_shapes_and_impossible_ones() -> None:
    doc = v1_docs()[LOGICAL]
    oldest = {k: v for k, v in doc.items() if k not in ("mode", "database_properties")}
    oldest["fingerprints"] = {"shop": {"public.t": {"rows": 3, "digest": "7"}}}  # method: version 1's default
    oldest["consistency"] = {}
    m = parse_manifest(json.dumps(oldest).encode(), "k")
    assert m.mode == BackupMode.LOGICAL and m.consistency == PostgresLogicalConsistency()
    assert m.fingerprints["shop"]["public.t"] == Fingerprint(count=3, digest="7", method="text")
    with pytest.raises(ManifestError, match=r"k: invalid manifest.*engine 'redis' with mode 'physical'"):
        parse_manifest(json.dumps({**doc, "engine": "redis", "mode": "physical"}).encode(), "k")
    rdb = v1_docs()[RDB]
    with pytest.raises(ManifestError, match="database_properties on a redis/rdb backup"):
        parse_manifest(json.dumps({**rdb, "database_properties": {"x": {}}}).encode(), "k")


def test_v2_errors_name_the_key_and_what_is_wrong(catalogs) -> None:
    doc = json.loads(catalogs["v1-rdb"][RDB].to_json())
    where = "redis/v1-rdb/backups/X/manifest.json"
    cases = {
        "consistency type 'postgres-physical' is not one of engine redis's (redis-rdb, redis-aof)": {
            **doc,
            "consistency": {**doc["consistency"], "type": "postgres-physical"},
        },
        "consistency redis-rdb belongs to rdb backups, not aof ones": {**doc, "mode": "aof"},
        "no vaultflow engine named 'nosuch'": {**doc, "engine": "nosuch"},
        "rdb_crc46": {**doc, "consistency": {**doc["consistency"], "rdb_crc46": "typo"}},  # a typo is an error
        "mode": {**doc, "mode": "snapshot"},
    }
    for needle, bad in cases.items():
        with pytest.raises(ManifestError) as info:
            parse_manifest(json.dumps(bad).encode(), where)
        assert str(info.value).startswith(where) and needle in str(info.value), str(info.value)


def test_an_invalid_manifest_names_its_key_once_each_field_and_what_to_do(tmp_path, catalogs) -> None:
    """A hand-edited manifest (a typo in a consistency field, a bad kind): the key once, each
    field as 'path: message' without pydantic's URLs, and what to do; the catalog's problem
    leaves the key to its own field, so '<key>: <message>' (verify's row) names it once too."""
    m = catalogs["v1-rdb"][RDB]
    doc = json.loads(m.to_json())
    doc["consistency"]["rdb_crc64e"] = doc["consistency"].pop("rdb_crc64", "x")
    doc["kind"] = "sideways"
    repo = Repository(LocalStore(tmp_path))
    key = repo.object_key(m, MANIFEST)
    (tmp_path / key).parent.mkdir(parents=True)
    (tmp_path / key).write_text(json.dumps(doc))

    with pytest.raises(ManifestError) as info:
        parse_manifest(json.dumps(doc).encode(), key)
    text = str(info.value)
    assert text.count(key) == 1 and text.startswith(f"{key}: invalid manifest: "), text
    assert "kind: Input should be" in text and "rdb_crc64e: Extra inputs are not permitted" in text, text
    assert "errors.pydantic.dev" not in text and "validation error" not in text, text
    assert "restore another backup by its id, or fix the manifest file" in text, text
    assert info.value.where == key and info.value.problem == text[len(key) + 2 :]

    problem = repo.catalog("redis", "v1-rdb").problems
    assert [p.key for p in problem] == [key] and problem[0].message == info.value.problem
    assert f"{problem[0].key}: {problem[0].message}".count(key) == 1


def test_a_model_of_another_engine_is_refused_and_of_names_the_backup(catalogs) -> None:
    m = catalogs["v1-rdb"][RDB]
    with pytest.raises(ValueError, match="RedisRdbConsistency is not a consistency model of engine postgres"):
        Manifest(**{**dict(m), "engine": "postgres"})
    from vaultflow.errors import RefusedError

    with pytest.raises(RefusedError, match=f"backup {RDB} is a rdb backup \\(redis-rdb\\), not postgres-physical"):
        PostgresPhysicalConsistency.of(m)


class LedgerConsistency(Consistency):
    """A test-only engine's own consistency model."""

    MODE: ClassVar[BackupMode] = BackupMode.LOGICAL
    type: Literal["ledger-logical"] = "ledger-logical"
    method: str = "export"
    page: int


@pytest.fixture
def ledger_engine():
    """A test-only engine with its own consistency model; forgotten after the test."""
    registry.register(
        registry.EngineSpec(name="ledger", make_engine=lambda settings: None, consistency=(LedgerConsistency,))
    )
    yield
    registry.unregister("ledger")


@pytest.mark.usefixtures("ledger_engine")
def test_an_engine_defined_in_a_test_brings_its_own_consistency_model() -> None:
    now = datetime(2026, 11, 29, tzinfo=UTC)
    m = Manifest(
        id="20261129T000000.000Z-F",
        engine="ledger",
        target="books",
        kind=BackupKind.FULL,
        mode=BackupMode.LOGICAL,
        started_at=now,
        finished_at=now,
        objects=[],
        consistency=LedgerConsistency(page=7),
        fingerprints={"main": {"entries": Fingerprint(count=3, digest="x", method="sum")}},
    )
    doc = json.loads(m.to_json())
    assert doc["consistency"] == {"type": "ledger-logical", "method": "export", "page": 7}  # subclass fields written
    again = parse_manifest(m.to_json(), "k")
    assert again == m and isinstance(again.consistency, LedgerConsistency) and again.consistency.page == 7
