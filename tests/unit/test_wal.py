"""WAL spool / ship / fetch / continuity against a real LocalStore repository (no server)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vaultflow.engines.postgres import wal
from vaultflow.engines.postgres.consistency import PostgresPhysicalConsistency
from vaultflow.engines.postgres.wal import (
    ShipResult,
    archived_names,
    check_continuity,
    next_segment,
    object_key,
    parse_history,
    parse_lsn,
    parse_segment,
    record_key,
    segment_name,
    ship_spool,
    wal_fetch,
    wal_push,
)
from vaultflow.engines.postgres.wal.cli import EXIT_ABORT_RECOVERY
from vaultflow.engines.postgres.wal.cli import main as wal_cli_main
from vaultflow.errors import IntegrityError, RefusedError, StoreUnavailableError
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore

TARGET = "prod"
MiB = 1 << 20


def physical(start_wal_file: str, stop_lsn: str, timeline: int = 1) -> PostgresPhysicalConsistency:
    """The consistency record of a physical backup whose WAL starts at `start_wal_file`."""
    return PostgresPhysicalConsistency(
        start_lsn=stop_lsn, stop_lsn=stop_lsn, timeline=timeline, start_wal_file=start_wal_file, checkpoint_lsn=stop_lsn
    )


def seg(n: int, tli: int = 1) -> str:
    return segment_name(tli, n)


def write_wal(directory: Path, name: str, data: bytes | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data if data is not None else os.urandom(2048) + name.encode() * 100)
    return path


def spool_files(spool: Path, names: list[str]) -> dict[str, str]:
    """Push fresh WAL files into the spool; returns name -> sha256 of what was pushed."""
    src = spool.parent / "pg_wal"
    digests = {}
    for name in names:
        path = write_wal(src, name)
        wal_push(path, spool)
        digests[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def history(*entries: tuple[int, str]) -> bytes:
    return "".join(f"{tli}\t{lsn}\tno recovery target specified\n" for tli, lsn in entries).encode()


class WrappedStore:
    """A real LocalStore whose puts are recorded and can be made to fail or corrupt."""

    def __init__(self, inner: LocalStore, fail_key: str | None = None, corrupt_key: str | None = None):
        self.inner, self.fail_key, self.corrupt_key = inner, fail_key, corrupt_key
        self.puts: list[str] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def put(self, key: str, reader, size_hint=None) -> int:
        self.puts.append(key)
        if key == self.fail_key:
            raise StoreUnavailableError(f"connection reset while writing {key}")
        count = self.inner.put(key, reader, size_hint)
        if key == self.corrupt_key:  # bit rot / a broken proxy: the stored bytes differ
            path = self.inner.root / key
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))
        return count


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository(LocalStore(tmp_path / "repo"))


# -- names -----------------------------------------------------------------------------------
def test_segment_name_arithmetic() -> None:
    assert parse_segment("000000010000000A000000FF") == (1, 0xA * 256 + 0xFF)
    assert segment_name(1, 0xA * 256 + 0xFF) == "000000010000000A000000FF"
    assert next_segment("0000000100000000000000FE") == "0000000100000000000000FF"
    assert next_segment("0000000100000000000000FF") == "000000010000000100000000"
    # 64 MiB segments: 64 per xlogid, so 3F is the last one before the log id increments
    assert next_segment("00000001000000000000003F", 64 * MiB) == "000000010000000100000000"
    assert parse_segment("000000020000000100000001", 64 * MiB) == (2, 65)
    assert segment_name(2, 65, 1024 * MiB) == "000000020000001000000001"
    for bad in ("00000001000000000000000", "00000001000000000000000g", "0000000100000000000000ff"):
        with pytest.raises(ValueError):
            parse_segment(bad)
    with pytest.raises(ValueError, match="64"):
        parse_segment("000000010000000000000040", 64 * MiB)
    with pytest.raises(ValueError):
        parse_segment("000000010000000000000001", 3 * MiB)


def test_lsn_history_and_file_kinds() -> None:
    assert parse_lsn("0/3000158") == 0x3000158
    assert parse_lsn("1A/FF000000") == (0x1A << 32) | 0xFF000000
    assert parse_history(
        b"# comment\n1\t0/3000158\tno recovery target specified\n\n2\t0/5000000\tbefore x\n".decode()
    ) == [(1, 0x3000158), (2, 0x5000000)]
    assert wal.is_wal_file("00000002.history")
    assert wal.is_wal_file("000000010000000000000003.00000028.backup")
    assert wal.is_wal_file("000000010000000000000005.partial")
    assert not wal.is_wal_file(".tmp-000000010000000000000005")
    assert not wal.is_wal_file("RECOVERYXLOG")
    names = [seg(3), "00000002.history", seg(2, tli=2), "000000010000000000000003.00000028.backup", seg(1)]
    assert sorted(names, key=wal.wal_order) == [
        "00000002.history",
        seg(1),
        seg(3),
        "000000010000000000000003.00000028.backup",
        seg(2, tli=2),
    ]


# -- push ------------------------------------------------------------------------------------
def test_push_is_atomic_creates_private_spool_and_replaces_crash_leftovers(tmp_path: Path) -> None:
    spool = tmp_path / "a" / "spool"
    name = seg(7)
    source = write_wal(tmp_path / "pg_wal", name, os.urandom(3 * MiB + 17))
    spool.parent.mkdir()
    spool.mkdir(mode=0o700)
    leftover = spool / f".tmp-{name}"  # a push that died halfway
    leftover.write_bytes(b"half a segment")
    leftover.chmod(0o644)

    assert wal_push(source, spool) == spool / name
    assert (spool / name).read_bytes() == source.read_bytes()
    assert stat.S_IMODE((spool / name).stat().st_mode) == 0o600
    assert sorted(os.listdir(spool)) == [name]  # the leftover was the temp name: overwritten

    fresh = tmp_path / "b" / "new-spool"
    wal_push(source, fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700


def test_push_again_identical_succeeds_different_is_refused(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    name = seg(1)
    source = write_wal(tmp_path / "pg_wal", name, b"A" * 5000)
    wal_push(source, spool)
    wal_push(source, spool)  # PostgreSQL retries after a crash: fine
    other = write_wal(tmp_path / "other", name, b"B" * 5000)
    with pytest.raises(RefusedError, match=name):
        wal_push(other, spool)
    assert (spool / name).read_bytes() == b"A" * 5000


def test_push_refuses_names_that_are_not_wal_files(tmp_path: Path) -> None:
    source = write_wal(tmp_path, "postgresql.conf", b"x")
    with pytest.raises(wal.WalError, match="postgresql.conf"):
        wal_push(source, tmp_path / "spool")


def test_cli_push_runs_standalone_and_reports_failures(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    name = seg(9)
    source = write_wal(tmp_path / "pg_wal", name, b"C" * 1000)
    cmd = [sys.executable, "-m", "vaultflow.engines.postgres.wal.cli", "push", str(source), "--spool", str(spool)]
    ok = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and ok.stderr == ""
    source.write_bytes(b"D" * 1000)
    clash = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert clash.returncode == 1
    assert name in clash.stderr and "different content" in clash.stderr


HEAVY = {"prefect", "typer", "rich", "pydantic", "boto3", "botocore", "psycopg"}


def imported_top_modules(modules: str) -> set[str]:
    code = f"import sys, {modules}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_wal_cli_imports_nothing_heavy() -> None:
    """archive_command and restore_command start the WAL CLI once per segment: whatever it imports
    is paid per segment (pydantic alone is ~0.2 s: 26 segments of a PITR took 7 s longer when
    the pipeline imported the manifest)."""
    assert imported_top_modules("vaultflow.engines.postgres.wal.cli") & (HEAVY | {"zstandard"}) == set()
    fetch_path = "vaultflow.engines.postgres.wal.archive, vaultflow.pipeline, vaultflow.stores.local"
    assert imported_top_modules(fetch_path) & HEAVY == set()


# -- ship ------------------------------------------------------------------------------------
def test_ship_in_wal_order_record_last_then_fetch(tmp_path: Path, repo: Repository) -> None:
    spool = tmp_path / "spool"
    names = [seg(2), seg(1), "000000010000000000000002.00000028.backup", "00000002.history", seg(3, tli=2)]
    digests = spool_files(spool, names)
    store = WrappedStore(repo.store)  # type: ignore[arg-type]

    result = ship_spool(spool, Repository(store), TARGET)  # type: ignore[arg-type]

    order = ["00000002.history", seg(1), seg(2), "000000010000000000000002.00000028.backup", seg(3, tli=2)]
    assert result.shipped == order
    assert (result.remaining, result.lag_segments, result.lag_seconds) == (0, 0, 0.0)
    assert result.raw_bytes == sum((spool.parent / "pg_wal" / n).stat().st_size for n in names)
    assert 0 < result.stored_bytes < result.raw_bytes
    # each file: payload, then its record: a record always follows a complete payload
    assert store.puts == [k for n in order for k in (object_key(TARGET, n), record_key(TARGET, n))]
    assert [p for p in os.listdir(spool) if not p.startswith(".")] == []

    record = json.loads((repo.store.root / record_key(TARGET, seg(1))).read_bytes())  # type: ignore[attr-defined]
    assert set(record) == {"name", "raw_size", "stored_size", "sha256", "raw_sha256", "archived_at"}
    stored = (repo.store.root / object_key(TARGET, seg(1))).read_bytes()  # type: ignore[attr-defined]
    assert record["sha256"] == hashlib.sha256(stored).hexdigest()  # sha256sum of the .zst
    assert record["raw_sha256"] == digests[seg(1)]

    for name in names:
        dest = tmp_path / "restored" / name
        dest.parent.mkdir(exist_ok=True)
        assert wal_fetch(name, dest, repo, TARGET)
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == digests[name]
    assert archived_names(repo, TARGET) == order


def test_store_failing_on_third_segment_keeps_it_and_later_ones(tmp_path: Path, repo: Repository) -> None:
    spool = tmp_path / "spool"
    names = [seg(n) for n in range(1, 6)]
    spool_files(spool, names)
    old = time.time() - 120
    for name in names:
        os.utime(spool / name, (old, old))
    failing = WrappedStore(repo.store, fail_key=object_key(TARGET, names[2]))  # type: ignore[arg-type]

    with pytest.raises(StoreUnavailableError, match=names[2]) as caught:  # still transient: retried
        ship_spool(spool, failing, TARGET)  # type: ignore[arg-type]

    assert caught.value.segment == names[2]  # type: ignore[attr-defined]
    partial: ShipResult = caught.value.ship_result  # type: ignore[attr-defined]
    assert partial.shipped == names[:2]
    assert (partial.remaining, partial.lag_segments) == (3, 3)
    assert partial.lag_seconds >= 119
    assert sorted(p.name for p in wal.spooled(spool)) == names[2:]
    assert archived_names(repo, TARGET) == names[:2]
    assert repo.store.stat(object_key(TARGET, names[2])) is None
    assert repo.store.stat(record_key(TARGET, names[2])) is None
    assert check_continuity(repo, TARGET, names[0]) == []  # nothing after the hole was shipped

    result = ship_spool(spool, repo, TARGET)  # the repository is back
    assert result.shipped == names[2:] and result.remaining == 0
    assert archived_names(repo, TARGET) == names
    assert check_continuity(repo, TARGET, names[0]) == []


def test_failure_writing_the_record_keeps_the_spooled_file(tmp_path: Path, repo: Repository) -> None:
    spool = tmp_path / "spool"
    names = [seg(1), seg(2), seg(3)]
    digests = spool_files(spool, names)
    failing = WrappedStore(repo.store, fail_key=record_key(TARGET, names[1]))  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailableError, match=names[1]):
        ship_spool(spool, failing, TARGET)  # type: ignore[arg-type]
    assert repo.store.stat(object_key(TARGET, names[1])) is not None  # payload without record...
    assert not wal_fetch(names[1], tmp_path / "x", repo, TARGET)  # ...does not exist yet
    assert sorted(p.name for p in wal.spooled(spool)) == names[1:]
    ship_spool(spool, repo, TARGET)
    assert wal_fetch(names[1], tmp_path / "x", repo, TARGET)
    assert hashlib.sha256((tmp_path / "x").read_bytes()).hexdigest() == digests[names[1]]


def test_ship_reads_back_and_refuses_corrupt_stored_bytes(tmp_path: Path, repo: Repository) -> None:
    spool = tmp_path / "spool"
    names = [seg(1), seg(2)]
    spool_files(spool, names)
    rotten = WrappedStore(repo.store, corrupt_key=object_key(TARGET, names[0]))  # type: ignore[arg-type]
    with pytest.raises(IntegrityError, match=names[0]):
        ship_spool(spool, rotten, TARGET)  # type: ignore[arg-type]
    assert repo.store.stat(record_key(TARGET, names[0])) is None
    assert [p.name for p in wal.spooled(spool)] == names


def test_already_archived_identical_is_dropped_different_is_refused(tmp_path: Path, repo: Repository) -> None:
    spool = tmp_path / "spool"
    name = seg(4)
    source = write_wal(tmp_path / "pg_wal", name, b"E" * 9000)
    wal_push(source, spool)
    ship_spool(spool, repo, TARGET)
    wal_push(source, spool)  # PostgreSQL re-archived it after a crash
    again = ship_spool(spool, repo, TARGET)
    assert (again.shipped, again.already_stored, again.remaining) == ([], [name], 0)

    source.write_bytes(b"F" * 9000)  # another cluster archiving as the same target
    wal_push(source, spool)
    with pytest.raises(RefusedError, match=f"{name}.*different content"):
        ship_spool(spool, repo, TARGET)
    assert [p.name for p in wal.spooled(spool)] == [name]


def test_one_shipper_at_a_time(tmp_path: Path, repo: Repository) -> None:
    spool = tmp_path / "spool"
    spool_files(spool, [seg(1)])
    fd = os.open(spool / wal.LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(RefusedError, match="another ship"):
            ship_spool(spool, repo, TARGET)
    finally:
        os.close(fd)
    assert ship_spool(spool, repo, TARGET).shipped == [seg(1)]


# -- fetch -----------------------------------------------------------------------------------
def test_fetch_missing_is_false_and_spool_is_looked_at_first(tmp_path: Path, repo: Repository) -> None:
    dest = tmp_path / "pg_wal" / "RECOVERYXLOG"
    dest.parent.mkdir()
    assert wal_fetch("00000002.history", dest, repo, TARGET) is False
    assert not dest.exists()
    spool = tmp_path / "spool"
    digests = spool_files(spool, [seg(1)])
    assert wal_fetch(seg(1), dest, repo, TARGET) is False  # not shipped yet...
    assert wal_fetch(seg(1), dest, repo, TARGET, spool_dir=spool)  # ...but spooled
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == digests[seg(1)]


def test_fetch_of_a_corrupt_segment_raises_naming_it(tmp_path: Path, repo: Repository) -> None:
    spool = tmp_path / "spool"
    spool_files(spool, [seg(1), seg(2)])
    ship_spool(spool, repo, TARGET)
    path = repo.store.root / object_key(TARGET, seg(2))  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    dest_dir = tmp_path / "restore" / "pg_wal"
    dest_dir.mkdir(parents=True)
    with pytest.raises(IntegrityError, match=seg(2)):
        wal_fetch(seg(2), dest_dir / "RECOVERYXLOG", repo, TARGET)
    assert os.listdir(dest_dir) == []  # no partial file, no temp file


def test_cli_fetch_exit_statuses(tmp_path: Path, repo: Repository, capsys: pytest.CaptureFixture[str]) -> None:
    spool = tmp_path / "spool"
    digests = spool_files(spool, [seg(1), seg(2)])
    ship_spool(spool, repo, TARGET)
    root = str(repo.store.root)  # type: ignore[attr-defined]
    dest = tmp_path / "RECOVERYXLOG"
    base = ["--repo-path", root, "--target", TARGET]
    assert wal_cli_main(["fetch", seg(1), str(dest), *base]) == 0
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == digests[seg(1)]
    assert wal_cli_main(["fetch", "00000002.history", str(dest), *base]) == 1
    assert capsys.readouterr().err == ""  # end of archive: quiet
    zst = repo.store.root / object_key(TARGET, seg(2))  # type: ignore[attr-defined]
    zst.write_bytes(zst.read_bytes()[:-5])
    assert wal_cli_main(["fetch", seg(2), str(dest), *base]) == EXIT_ABORT_RECOVERY
    err = capsys.readouterr().err
    assert seg(2) in err and "corrupt" in err
    with pytest.raises(SystemExit) as usage:  # a broken restore_command must not look like "missing"
        wal_cli_main(["fetch", seg(2), str(dest), "--target", TARGET])
    assert usage.value.code == EXIT_ABORT_RECOVERY


# -- continuity ------------------------------------------------------------------------------
def test_continuity_reports_gaps_across_a_log_id_boundary(tmp_path: Path, repo: Repository) -> None:
    spool = tmp_path / "spool"
    present = [0xFD, 0xFE, 0x101, 0x102, 0x104]  # 0xFF, 0x100 and 0x103 never arrived
    spool_files(spool, [seg(n) for n in present])
    ship_spool(spool, repo, TARGET)
    assert check_continuity(repo, TARGET, seg(0xFD)) == [
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000003",
    ]
    assert check_continuity(repo, TARGET, seg(0x101)) == ["000000010000000100000003"]
    assert check_continuity(repo, TARGET, seg(0xFA)) == [
        seg(0xFA),
        seg(0xFB),
        seg(0xFC),
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000003",
    ]


def test_continuity_follows_a_timeline_switch(tmp_path: Path, repo: Repository) -> None:
    spool = tmp_path / "spool"
    pg_wal = tmp_path / "pg_wal"
    # timeline 2 forked from 1 inside segment 3 (LSN 0/3000158): segment 3 is read from timeline 2
    for name in [seg(1), seg(2), seg(3), seg(3, tli=2), seg(4, tli=2), seg(6, tli=2)]:
        wal_push(write_wal(pg_wal, name), spool)
    wal_push(write_wal(pg_wal, "00000002.history", history((1, "0/3000158"))), spool)
    ship_spool(spool, repo, TARGET)
    assert check_continuity(repo, TARGET, seg(1)) == [seg(5, tli=2)]
    assert check_continuity(repo, TARGET, seg(1), timeline=1) == []

    # without timeline 2's segment 3, timeline 1's copy does not fill the gap
    other = Repository(LocalStore(tmp_path / "repo2"))
    for name in [seg(1), seg(2), seg(3), seg(4, tli=2)]:
        wal_push(write_wal(pg_wal, name), spool)
    wal_push(write_wal(pg_wal, "00000002.history", history((1, "0/3000158"))), spool)
    ship_spool(spool, other, TARGET)
    assert check_continuity(other, TARGET, seg(1)) == [seg(3, tli=2)]


def test_continuity_without_the_history_file_reports_it(tmp_path: Path, repo: Repository) -> None:
    spool = tmp_path / "spool"
    spool_files(spool, [seg(1), seg(2), seg(3, tli=2)])
    ship_spool(spool, repo, TARGET)
    assert check_continuity(repo, TARGET, seg(1)) == ["00000002.history"]


def test_continuity_with_64_mib_segments(tmp_path: Path, repo: Repository) -> None:
    spool = tmp_path / "spool"
    names = ["00000001000000000000003E", "000000010000000100000000"]  # 3F missing
    spool_files(spool, names)
    ship_spool(spool, repo, TARGET)
    assert check_continuity(repo, TARGET, names[0], segment_size=64 * MiB) == ["00000001000000000000003F"]


def test_wal_not_needed_keeps_history_and_everything_from_the_oldest_start():
    from vaultflow.engines.postgres.wal import wal_not_needed

    names = [
        "00000001000000000000000A",
        "00000001000000000000000B",
        "00000001000000000000000B.00000028.backup",
        "00000002.history",
        "00000002000000000000000C",
        "0000000200000000000000FF",
        "000000020000000100000000",
    ]
    assert wal_not_needed(names, "00000002000000000000000C") == [
        "00000001000000000000000A",
        "00000001000000000000000B",
        "00000001000000000000000B.00000028.backup",
    ]
    assert wal_not_needed(names, "00000001000000000000000A") == []


# -- timelines: which one recovery follows, and gaps along it ---------------------------------
def archive(tmp_path: Path, repo: Repository, names: list[str], histories: dict[str, bytes] | None = None) -> None:
    spool, pg_wal = tmp_path / "tl-spool", tmp_path / "tl-pg_wal"
    for name in names:
        wal_push(write_wal(pg_wal, name), spool)
    for name, text in (histories or {}).items():
        wal_push(write_wal(pg_wal, name, text), spool)
    ship_spool(spool, repo, TARGET)


def test_plan_follows_the_newest_living_descendant_not_a_dead_branch(tmp_path: Path, repo: Repository) -> None:
    from vaultflow.engines.postgres.wal import check_backup_wal, plan_timeline

    # timeline 2 left 1 at 0/3000158 and archived segments; timeline 3 (a restore that never
    # archived) left 2 at 0/4000100: only its history file exists
    archive(
        tmp_path,
        repo,
        [seg(1), seg(2), seg(3), seg(3, tli=2), seg(4, tli=2), seg(5, tli=2)],
        {
            "00000002.history": history((1, "0/3000158")),
            "00000003.history": history((1, "0/3000158"), (2, "0/4000100")),
        },
    )
    plan = plan_timeline(repo, TARGET, 1, "0/1000100")
    assert plan.timeline == 2 and plan.begins == ((2, 3), (1, 0))
    assert [plan.name(n) for n in (2, 3)] == [seg(2), seg(3, tli=2)]
    assert plan_timeline(repo, TARGET, 1, "0/1000100", requested=3).timeline == 3
    assert check_continuity(repo, TARGET, seg(1)) == [], "a dead branch is not a gap"
    assert check_backup_wal(repo, TARGET, "B", physical(seg(1), "0/1000100")).ok


def test_plan_skips_timelines_that_left_before_the_backup_ended(tmp_path: Path, repo: Repository) -> None:
    from vaultflow.engines.postgres.wal import plan_timeline
    from vaultflow.errors import ConfigError

    archive(
        tmp_path,
        repo,
        [seg(3), seg(4), seg(5), seg(3, tli=2), seg(4, tli=2)],
        {"00000002.history": history((1, "0/3000158"))},
    )
    # a backup of timeline 1 that ended at 0/4000028, after timeline 2 had branched off
    assert plan_timeline(repo, TARGET, 1, "0/4000028").timeline == 1
    with pytest.raises(ConfigError, match="timeline 2 does not descend from the backup's end point"):
        plan_timeline(repo, TARGET, 1, "0/4000028", requested=2)


def test_plan_refuses_segments_of_a_timeline_without_its_history(tmp_path: Path, repo: Repository) -> None:
    from vaultflow.engines.postgres.wal import check_backup_wal, plan_timeline
    from vaultflow.errors import NotFoundError

    archive(tmp_path, repo, [seg(1), seg(2), seg(3, tli=2)])
    with pytest.raises(
        NotFoundError,
        match=r"timeline history file 00000002\.history is missing .* "
        r"segments of timeline 2 are archived \(from 000000020000000000000003",
    ):
        plan_timeline(repo, TARGET, 1, "0/1000100")
    result = check_backup_wal(repo, TARGET, "B", physical(seg(1), "0/1000100"))
    assert not result.ok and result.missing == ("00000002.history",) and "backup B" in result.problem
    assert plan_timeline(repo, TARGET, 2, "0/3000100").timeline == 2, "a backup of timeline 2 needs no 2.history"


def test_backup_after_the_archive_stopped_is_a_named_gap(tmp_path: Path, repo: Repository) -> None:
    from vaultflow.engines.postgres.wal import check_backup_wal, describe_gaps

    archive(tmp_path, repo, [seg(1), seg(2), seg(3)])  # archiving stopped after segment 3
    older = check_backup_wal(repo, TARGET, "B1", physical(seg(1), "0/2000100"))
    newest = check_backup_wal(repo, TARGET, "B2", physical(seg(6), "0/7000028"))
    assert older.ok
    assert not newest.ok and newest.missing == (seg(6), seg(7))
    assert f"missing 2 segment(s): {seg(6)}..{seg(7)} (timeline 1); newest archived: {seg(3)}" in newest.problem
    assert describe_gaps([seg(5), seg(6), seg(9), seg(10, tli=2), "00000002.history"]) == (
        f"{seg(5)}..{seg(6)} (timeline 1), {seg(9)} (timeline 1), {seg(10, tli=2)} (timeline 2), "
        "00000002.history (history file)"
    )
