"""User-controlled names as repository keys, artifact keys and restore_command words.
Pure: nothing here talks to a server (the restores of such names: tests/corpus/test_pg_names.py)."""

from __future__ import annotations

import re
import shlex
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vaultflow.blocks import PostgresTarget, RedisTarget
from vaultflow.engines.postgres.consistency import PostgresLogicalConsistency
from vaultflow.engines.postgres.engine import dump_object_name
from vaultflow.engines.postgres.recovery import default_fetch_command
from vaultflow.engines.postgres.wal import object_key as wal_object_key
from vaultflow.errors import ConfigError
from vaultflow.keys import MAX_SEGMENT, artifact_slug, decode_name, encode_name
from vaultflow.manifest import BackupKind, BackupMode, Manifest, StoredObject
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
from vaultflow.stores.base import BytesReader

HOSTILE = [
    "a/b",
    "..",
    ".",
    "ü" * 31 + "x",
    "Sales",
    "sales",
    "50%",
    "%53ales",
    "x y=z",
    "a\\b",
    "a'b",
    ".hidden",
    "-x",
    "日本語",
    "back\\slash/..",
    "CON",
    "nul\x01",
]
SEGMENT = re.compile(r"[a-z0-9_.%A-F-]+")


@pytest.mark.parametrize("name", HOSTILE)
def test_encoded_names_stay_in_their_directory_and_map_back(name: str) -> None:
    segment = encode_name(name)
    assert SEGMENT.fullmatch(segment) and "/" not in segment
    assert segment not in (".", "..") and not segment.startswith(".")
    assert decode_name(segment) == name


def test_case_twins_get_keys_that_differ_in_more_than_case() -> None:
    """Distinct even on a case-insensitive filesystem or store."""
    assert encode_name("Sales").lower() != encode_name("sales").lower()
    assert dump_object_name("Sales").lower() != dump_object_name("sales").lower()
    assert encode_name("%53ales") != encode_name("Sales")


def test_usual_names_are_unchanged_so_older_repositories_keep_their_layout() -> None:
    for name in ("prod", "demo", "db.example.com-5432", "shop_2024", "test_0a1b2c"):
        assert encode_name(name) == name
    assert Repository.target_prefix("postgres", "prod") == "postgres/prod/"
    assert dump_object_name("shop") == "db/shop.dump.zst"


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=63).filter(lambda n: len(n.encode("utf-8", "surrogatepass")) <= 63))
def test_every_name_round_trips_and_no_two_collide_case_insensitively(name: str) -> None:
    """Any name up to PostgreSQL's 63 bytes."""
    segment = encode_name(name)
    assert decode_name(segment) == name
    assert segment.lower() != encode_name(name.swapcase()).lower() or name.swapcase() == name


def test_a_63_byte_unicode_database_name_fits_a_file_name() -> None:
    name = "ü" * 31 + "x"  # 63 bytes, PostgreSQL's limit
    assert len(name.encode()) == 63
    key = dump_object_name(name)
    assert len(key.split("/")[-1].encode()) <= 255
    assert decode_name(key[len("db/") : -len(".dump.zst")]) == name


def test_empty_and_overlong_names_are_refused_with_what_to_do() -> None:
    with pytest.raises(ConfigError, match="target name is empty"):
        Repository.target_prefix("postgres", "")
    with pytest.raises(ConfigError, match=r"target name 'xxx.*too long.*shorter"):
        Repository.target_prefix("postgres", "x" * (MAX_SEGMENT + 1))


@pytest.mark.parametrize("segment", ["Prod", "%61", "a/b", "%2e", ".", "..", "%2", "", "%C3"])
def test_segments_that_encode_name_cannot_produce_are_rejected(segment: str) -> None:
    with pytest.raises(ValueError):
        decode_name(segment)


def _manifest(target: str, database: str) -> Manifest:
    now = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    return Manifest(
        id="20261126T020000.000Z-F",
        engine="postgres",
        target=target,
        kind=BackupKind.FULL,
        mode=BackupMode.LOGICAL,
        consistency=PostgresLogicalConsistency(),
        started_at=now,
        finished_at=now,
        objects=[
            StoredObject(
                key=dump_object_name(database),
                role="database-dump",
                database=database,
                format="pg_dump-custom",
                raw_size=1,
                stored_size=1,
                sha256="ab" * 32,
            )
        ],
    )


@pytest.mark.parametrize("target", ["../../etc", "a/b", "Sales", ".."])
def test_keys_of_hostile_targets_and_databases_stay_below_the_target(tmp_path: Path, target: str) -> None:
    repo = Repository(LocalStore(tmp_path / "repo"))
    manifest = _manifest(target, "../../../escape")
    key = repo.object_key(manifest, manifest.objects[0].key)
    repo.store.put(key, BytesReader(b"x"))
    written = [p for p in (tmp_path / "repo").rglob("*") if p.is_file()]
    assert (
        len(written) == 1
        and written[0].parent == tmp_path / "repo" / "postgres" / encode_name(target) / "backups" / manifest.id / "db"
    )
    assert repo.targets() == [("postgres", target)]
    assert wal_object_key(target, "000000010000000000000001").startswith(f"postgres/{encode_name(target)}/logs/wal/")


def test_targets_skips_directories_written_before_the_encoding(tmp_path: Path) -> None:
    repo = Repository(LocalStore(tmp_path / "repo"))
    repo.store.put("postgres/Prod/backups/20261126T020000.000Z-F/manifest.json", BytesReader(b"{}"))
    repo.store.put("postgres/prod/backups/20261126T020000.000Z-F/manifest.json", BytesReader(b"{}"))
    assert repo.targets() == [("postgres", "prod")]


def test_artifact_slugs_fit_prefect_and_keep_twins_apart() -> None:
    names = ["Sales", "sales", "a/b", "a-b", "ü" * 31, "日本語", "x" * 200, "..", "prod"]
    slugs = [artifact_slug(n) for n in names]
    assert len(set(slugs)) == len(names)
    for slug in slugs:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", slug) and len(slug) <= 60
    assert artifact_slug("prod") == "prod" and artifact_slug("a-b") == "a-b"


@pytest.mark.parametrize("target", ["-x", "--repo-path=/evil", "a b", "it's", "$(reboot)"])
def test_restore_command_passes_the_target_as_one_value(target: str) -> None:
    cmd = default_fetch_command(Path("/srv/backups"), target, wal_cli="/opt/py -m vaultflow.engines.postgres.wal.cli")
    words = shlex.split(cmd)
    assert words[-1] == f"--target={target}"
    assert words[:-1] == ["/opt/py", "-m", "vaultflow.engines.postgres.wal.cli", "fetch", "--repo-path", "/srv/backups"]


@pytest.mark.parametrize("block_type", [PostgresTarget, RedisTarget])
def test_target_names_with_control_characters_are_refused(block_type) -> None:
    block = block_type(host="db", target_name="prod\nevil")
    with pytest.raises(ConfigError, match="control characters"):
        _ = block.name
    assert block_type(host="db", target_name="Sales/EU ü").name == "Sales/EU ü"
