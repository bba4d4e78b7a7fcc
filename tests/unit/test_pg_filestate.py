"""The pure parts of PostgreSQL 15/16 file-level incrementals: exclusions, the walk, the
changed-file decision, backup_manifest parsing, file lists, WAL ranges and the tar writer."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import tarfile
from pathlib import Path

import pytest

from vaultflow.engines.postgres.filelevel import (
    _END_OF_ARCHIVE,
    _ChunkReader,
    _member,
    control_system_identifier,
    data_directory,
    wal_segment_names,
)
from vaultflow.engines.postgres.filestate import (
    RACY_MARGIN_NS,
    Entry,
    FileState,
    dump_state,
    excluded,
    load_state,
    state_from_backup_manifest,
    unchanged,
    walk,
)
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.errors import ConfigError

S = 1_000_000_000


@pytest.mark.parametrize(
    "rel_dir, name, siblings, expected",
    [
        ("", "postmaster.pid", set(), True),
        ("", "postmaster.opts", set(), True),
        ("", "backup_label", set(), True),
        ("", "postgresql.auto.conf.tmp", set(), True),
        ("", "postgresql.auto.conf", set(), False),
        ("global", "pg_internal.init", set(), True),
        ("base/5", "pg_internal.init.12345", set(), True),  # prefix match, as pg_basebackup
        ("base", "pgsql_tmp", set(), True),
        ("base/pgsql_tmp", "pgsql_tmp123.0", set(), True),
        ("pg_replslot", "myslot", set(), True),  # contents of an excluded directory
        ("pg_subtrans", "0000", set(), True),
        ("", "pg_subtrans", set(), False),  # ... but the directory itself is kept
        ("pg_xact", "0000", set(), False),
        ("base/5", "16384", {"16384", "16384_init"}, True),  # unlogged: main fork skipped
        ("base/5", "16384.1", {"16384", "16384_init"}, True),
        ("base/5", "16384_fsm", {"16384_fsm", "16384_init"}, True),
        ("base/5", "16384_init", {"16384", "16384_init"}, False),  # its init fork travels
        ("base/5", "16385", {"16384_init", "16385"}, False),
        ("base/5", "t3_16390", set(), True),  # temporary relation
        ("base/5", "t3_16390_vm", set(), True),
        ("global", "16384", {"16384", "16384_init"}, False),  # only database directories
        ("pg_tblspc/16400/PG_15_202209061/5", "16384", {"16384_init"}, True),
    ],
)
def test_exclusions_follow_pg_basebackup(rel_dir: str, name: str, siblings: set[str], expected: bool) -> None:
    assert excluded(rel_dir, name, siblings) is expected


def _touch(path: Path, data: bytes = b"x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_walk_lists_what_a_backup_copies_with_pg_control_last(tmp_path: Path) -> None:
    for rel in [
        "PG_VERSION",
        "global/pg_control",
        "global/1262",
        "base/1/1259",
        "base/1/2000",
        "base/1/2000_init",
        "postmaster.pid",
        "pg_wal/000000010000000000000001",
        "pg_wal/archive_status/x.done",
        "pg_stat_tmp/global.stat",
        "zz_last_file",
    ]:
        _touch(tmp_path / rel)
    (tmp_path / "pg_wal" / "other").mkdir()
    (tmp_path / "pg_notify").mkdir()
    os.symlink("/etc/hostname", tmp_path / "a_link")
    logs: list[str] = []
    listed = [rel for rel, _ in walk(str(tmp_path), logs.append)]
    assert listed == [
        "PG_VERSION",
        "base",
        "base/1",
        "base/1/1259",
        "base/1/2000_init",
        "global",
        "global/1262",
        "pg_notify",
        "pg_stat_tmp",
        "pg_wal",
        "pg_wal/archive_status",
        "zz_last_file",
        "global/pg_control",
    ]
    assert logs and "a_link" in logs[0]


def test_walk_skips_files_that_vanish(tmp_path: Path) -> None:
    _touch(tmp_path / "base" / "1" / "1259")
    walker = walk(str(tmp_path))
    assert next(walker)[0] == "base"
    (tmp_path / "base" / "1" / "1259").unlink()
    assert [rel for rel, _ in walker] == ["base/1"]


def test_changed_file_decision() -> None:
    started = 1_000 * S
    old = 900 * S + 123
    precise = Entry(size=8192, mtime_ns=old)
    assert unchanged(8192, old, precise, started)
    assert not unchanged(8192, old, None, started)  # the parent did not have it
    assert not unchanged(16384, old, precise, started)  # grew
    assert not unchanged(8192, old + 1, precise, started)  # touched, even within the same second
    racy = Entry(size=8192, mtime_ns=started - RACY_MARGIN_NS // 2)
    assert not unchanged(8192, racy.mtime_ns, racy, started)  # written around the parent's start
    whole_second = Entry(size=8192, mtime_ns=900 * S, precise=False)  # from a backup_manifest
    assert unchanged(8192, 900 * S + 999_999_999, whole_second, started)
    assert not unchanged(8192, 901 * S, whole_second, started)


def _manifest(files: list[dict]) -> bytes:
    return json.dumps(
        {
            "PostgreSQL-Backup-Manifest-Version": 1,
            "Files": files,
            "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}],
        }
    ).encode()


def test_state_from_a_basebackup_manifest() -> None:
    started = 2_000_000_000 * S
    data = _manifest(
        [
            {
                "Path": "backup_label",
                "Size": 225,
                "Last-Modified": "2033-05-18 03:33:10 GMT",
                "Checksum-Algorithm": "CRC32C",
                "Checksum": "0a1b2c3d",
            },
            {
                "Path": "base/1/1259",
                "Size": 8192,
                "Last-Modified": "2033-05-18 03:30:00 GMT",
                "Checksum-Algorithm": "SHA256",
                "Checksum": "ab" * 32,
            },
            {
                "Encoded-Path": "bytes/caf\xe9".encode("latin-1").hex(),
                "Size": 3,
                "Last-Modified": "2033-05-18 03:30:00 GMT",
            },
            {"Path": "pg_wal/000000010000000000000002", "Size": 16777216, "Last-Modified": "2033-05-18 03:33:11 GMT"},
            {"Path": "postmaster.opts", "Size": 10, "Last-Modified": "2033-05-18 03:30:00 GMT"},
        ]
    )
    state = state_from_backup_manifest(data, "F1", started)
    assert set(state.files) == {"base/1/1259", "bytes/caf\udce9"}  # no label, WAL or excluded files
    assert state.files["base/1/1259"] == Entry(
        8192, 2_000_000_000 * S - 200 * S, "sha256:" + "ab" * 32, "F1", precise=False
    )
    assert state.started_ns == 2_000_000_000 * S - 10 * S  # the label's (server) time is earlier
    assert state.dirs == {"base", "base/1", "bytes"}
    assert state_from_backup_manifest(data, "F1", 1_000 * S).started_ns == 1_000 * S
    with pytest.raises(ValueError, match="backup_manifest of F1 is unreadable"):
        state_from_backup_manifest(b'{"Files": [{"Path": "x"}]}', "F1", started)


def test_file_list_round_trip() -> None:
    state = FileState(
        42, {"base/1/1259": Entry(8192, 7, "sha256:00", "I1"), "PG_VERSION": Entry(3, 8, None, "F")}, {"base", "base/1"}
    )
    assert load_state(dump_state(state, "I1"), "x") == state
    with pytest.raises(ValueError, match="I2/filelist.json.zst is not a readable file list"):
        load_state(b'{"format": "something else"}', "I2/filelist.json.zst")


@pytest.mark.parametrize(
    "start, stop, size, expected",
    [
        (
            "000000010000000000000003",
            "0/5000028",
            16 << 20,
            ["000000010000000000000003", "000000010000000000000004", "000000010000000000000005"],
        ),
        ("000000010000000000000003", "0/4000000", 16 << 20, ["000000010000000000000003"]),  # ends on a boundary
        ("0000000200000000000000FF", "1/0000A0", 16 << 20, ["0000000200000000000000FF", "000000020000000100000000"]),
        ("000000010000000000000001", "0/8000010", 64 << 20, ["000000010000000000000001", "000000010000000000000002"]),
    ],
)
def test_wal_segment_names(start: str, stop: str, size: int, expected: list[str]) -> None:
    assert wal_segment_names(int(start[:8], 16), start, stop, size) == expected


def test_tar_writer_is_a_valid_tar_and_pads_a_shrunk_file() -> None:
    digest = hashlib.sha256()
    long_name = "base/16384/" + "x" * 120
    chunks = itertools.chain(
        _member("PG_VERSION", io.BytesIO(b"15\n"), 3, 0, hashlib.sha256()),
        _member(long_name, io.BytesIO(b"abc"), 5000, 0, digest),  # shrank to 3 bytes
        [_END_OF_ARCHIVE],
    )
    reader = _ChunkReader(chunks)
    data = b"".join(iter(lambda: reader.read(700), b""))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
        assert [(m.name, m.size) for m in members] == [("PG_VERSION", 3), (long_name, 5000)]
        content = tar.extractfile(members[1]).read()
    assert content == b"abc" + bytes(4997)
    assert digest.hexdigest() == hashlib.sha256(content).hexdigest()


def test_data_directory_setting_is_checked(tmp_path: Path) -> None:
    def config(directory):
        return PostgresSettings(
            target_name="t15", mode="physical", data_directory=str(directory) if directory else None
        )

    with pytest.raises(ConfigError, match="target t15 has no data_directory.*Set data_directory on the PostgresTarget"):
        data_directory(config(None))
    with pytest.raises(ConfigError, match=f"data_directory {tmp_path / 'nope'} of target t15 does not exist"):
        data_directory(config(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=f"{tmp_path} of target t15 is not a PostgreSQL data directory"):
        data_directory(config(tmp_path))
    _touch(tmp_path / "global" / "pg_control", (7_123_456_789_012_345_678).to_bytes(8, "little") + bytes(100))
    (tmp_path / "base").mkdir()
    assert data_directory(config(tmp_path)) == tmp_path
    assert control_system_identifier(tmp_path) == "7123456789012345678"
