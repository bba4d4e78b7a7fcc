"""The log-archive contract (vaultflow.logarchive), run against every implementation on a real
local store: the PostgreSQL WAL archive (WAL files pushed into a spool by the real wal_push),
and a toy archive defined only in tests (which keeps the suite honest about being generic).
MongoDB's oplog archive adds a harness here.

A harness knows how its "server" produces log units and how a backup's manifest says where
its log starts; the tests know nothing else about the engine.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.toy_logarchive import (
    ToyArchive,
    ToyLogConsistency,
    ToyLogSettings,
    toy_engine_registered,
    unit_name,
)
from vaultflow import logarchive
from vaultflow.blocks.registry import target_types
from vaultflow.engines import registry
from vaultflow.engines.postgres.consistency import PostgresLogicalConsistency, PostgresPhysicalConsistency
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.engines.postgres.wal import (
    object_key,
    parse_segment,
    record_key,
    segment_name,
    wal_push,
)
from vaultflow.engines.postgres.wal.log_archive import WalArchive
from vaultflow.engines.settings import ARCHIVE_LOGS
from vaultflow.errors import (
    ConfigError,
    IntegrityError,
    StoreUnavailableError,
    VaultflowError,
)
from vaultflow.logarchive import (
    Gap,
    LogArchive,
    ShipReport,
    ship_failure,
    ship_following,
)
from vaultflow.manifest import BackupKind, Consistency, Manifest, new_backup_id
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore

TARGET = "prod"
T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


class FailingStore:
    """A real LocalStore that fails (like a dropped connection) when writing one key."""

    def __init__(self, inner: LocalStore, fail_key: str):
        self.inner, self.fail_key = inner, fail_key

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def put(self, key: str, reader, size_hint=None) -> int:
        if key == self.fail_key:
            raise StoreUnavailableError(f"connection reset while writing {key}")
        return self.inner.put(key, reader, size_hint)


@dataclass
class Harness:
    """One implementation of the contract, with a way to make its server produce units."""

    engine: str
    factory: Any
    repo: Repository
    settings: Any
    produce_one: Callable[[], tuple[str, bytes]]  # the server writes a unit: (name, raw bytes)
    manifest_for: Callable[[str | None, int], Manifest]  # backup whose log starts at a unit (None: no log)
    stored_key: Callable[[str], str]  # store key of a unit's data
    record_key: Callable[[str], str]  # store key of a unit's record
    produced: dict[str, bytes]

    def archive(self, repo: Repository | None = None) -> LogArchive:
        return self.factory(repo or self.repo, TARGET, self.settings)

    def produce(self, count: int) -> list[str]:
        names = []
        for _ in range(count):
            name, data = self.produce_one()
            self.produced[name] = data
            names.append(name)
        return names

    def backup(self, start: str | None, seq: int = 0) -> Manifest:
        return self.manifest_for(start, seq)


def manifest(engine: str, seq: int, mode: str, consistency: Consistency) -> Manifest:
    when = T0 + timedelta(hours=seq)
    return Manifest(
        id=new_backup_id(BackupKind.FULL, when),
        engine=engine,
        target=TARGET,
        kind=BackupKind.FULL,
        mode=mode,
        started_at=when,
        finished_at=when + timedelta(minutes=1),
        consistency=consistency,
        objects=[],
    )


def postgres_harness(tmp_path: Path) -> Harness:
    spool, pg_wal = tmp_path / "spool", tmp_path / "pg_wal"
    pg_wal.mkdir()
    counter = iter(range(1, 10_000))

    def produce_one() -> tuple[str, bytes]:
        name = segment_name(1, next(counter))
        data = os.urandom(4096) + name.encode() * 64
        (pg_wal / name).write_bytes(data)
        wal_push(pg_wal / name, spool)  # what archive_command does
        return name, data

    def manifest_for(start: str | None, seq: int) -> Manifest:
        if start is None:
            return manifest("postgres", seq, "logical", PostgresLogicalConsistency())
        segno = parse_segment(start)[1]
        return manifest(
            "postgres",
            seq,
            "physical",
            PostgresPhysicalConsistency(
                method="pg_basebackup",
                start_wal_file=start,
                timeline=1,
                start_lsn=f"0/{segno * (16 << 20) + 0x28:X}",
                checkpoint_lsn=f"0/{segno * (16 << 20) + 0x60:X}",
                stop_lsn=f"0/{segno * (16 << 20) + 0x100:X}",
            ),
        )

    settings = PostgresSettings(mode="physical", wal_spool=str(spool), target_name=TARGET)
    return Harness(
        "postgres",
        WalArchive,
        Repository(LocalStore(tmp_path / "repo")),
        settings,
        produce_one,
        manifest_for,
        lambda n: object_key(TARGET, n),
        lambda n: record_key(TARGET, n),
        {},
    )


def toy_harness(tmp_path: Path) -> Harness:
    log_dir = tmp_path / "toy-log"
    log_dir.mkdir()
    counter = iter(range(1, 10_000))

    def produce_one() -> tuple[str, bytes]:
        name = unit_name(next(counter))
        data = os.urandom(1000)
        (log_dir / name).write_bytes(data)
        return name, data

    def manifest_for(start: str | None, seq: int) -> Manifest:
        return manifest("toylog", seq, "logical", ToyLogConsistency(log_start=start))

    prefix = f"toylog/{TARGET}/logs/toy/"
    settings = ToyLogSettings(log_dir=str(log_dir), target_name=TARGET)
    return Harness(
        "toylog",
        ToyArchive,
        Repository(LocalStore(tmp_path / "repo")),
        settings,
        produce_one,
        manifest_for,
        lambda n: prefix + n,
        lambda n: prefix + n + ".json",
        {},
    )


@pytest.fixture(params=["postgres", "toylog"])
def harness(request, tmp_path: Path) -> Harness:
    return {"postgres": postgres_harness, "toylog": toy_harness}[request.param](tmp_path)


# -- the contract ------------------------------------------------------------------------------
def test_the_archive_satisfies_the_protocol(harness: Harness):
    archive = harness.archive()
    assert isinstance(archive, LogArchive)
    assert archive.target == TARGET and archive.stream and archive.title
    assert harness.settings.misfit(ARCHIVE_LOGS) is None, "the harness's target is set up to archive"


def test_ship_moves_every_produced_unit_in_order_with_counts_bytes_and_lag(harness: Harness):
    archive = harness.archive()
    names = harness.produce(3)
    before = archive.lag()
    assert before.units == 3 and before.seconds >= 0.0

    report = archive.ship()
    assert report.shipped == names and report.already_stored == []
    assert report.raw_bytes == sum(len(harness.produced[n]) for n in names) and report.stored_bytes > 0
    assert (report.remaining, report.lag_units, report.lag_seconds) == (0, 0, 0.0)
    assert archive.units() == names
    assert (archive.lag().units, archive.lag().seconds) == (0, 0.0)
    assert archive.ship().shipped == [], "nothing new: nothing shipped"
    more = harness.produce(2)
    assert archive.ship().shipped == more and archive.units() == names + more


def test_fetch_returns_each_unit_verified_and_false_when_not_archived(harness: Harness, tmp_path: Path):
    archive = harness.archive()
    names = harness.produce(2)
    archive.ship()
    for name in names:
        dest = tmp_path / f"fetched-{name}"
        assert archive.fetch(name, dest) is True
        assert dest.read_bytes() == harness.produced[name]
    never = tmp_path / "never"
    assert archive.fetch(harness.produce(1)[0], never) is False, "produced but not shipped: not archived"
    assert not never.exists()

    stored = Path(harness.repo.store.root) / harness.stored_key(names[1])  # bit rot in the store
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    broken = tmp_path / "broken"
    with pytest.raises(IntegrityError, match=names[1]):
        archive.fetch(names[1], broken)
    assert not broken.exists(), "a unit that fails its check is never handed over"


def test_continuity_names_each_gap_from_what_to_what_for_each_backup(harness: Harness):
    archive = harness.archive()
    names = harness.produce(6)
    archive.ship()
    early, late, dump = harness.backup(names[0], 0), harness.backup(names[4], 1), harness.backup(None, 2)
    assert archive.log_start(early).unit == names[0] and archive.log_start(early).backup_id == early.id
    assert archive.log_start(dump) is None, "a backup that does not read the log has no log start"

    whole = archive.continuity([early, late, dump])
    assert whole.ok and whole.units == 6 and [b.backup_id for b in whole.backups] == [early.id, late.id]
    assert whole.gaps == ()

    for name in names[1:3]:  # lost behind the archive's back
        harness.repo.store.delete(harness.record_key(name))
        harness.repo.store.delete(harness.stored_key(name))
    holed = archive.continuity([early, late, dump])
    assert not holed.ok and holed.units == 4
    [broken] = holed.broken
    assert broken.backup_id == early.id and broken.missing == tuple(names[1:3])
    [gap] = broken.gaps
    assert (gap.first, gap.last) == (names[1], names[2]) and gap.reason
    assert early.id in broken.problem and names[1] in broken.problem
    assert holed.gaps == (gap,)
    assert holed.backups[1].ok, "a backup whose log starts after the hole is not hurt by it"


def test_prunable_keeps_every_unit_a_kept_backup_reads_then_delete(harness: Harness):
    archive = harness.archive()
    names = harness.produce(5)
    archive.ship()
    b1, b3, dump = harness.backup(names[1], 0), harness.backup(names[3], 1), harness.backup(None, 2)

    assert archive.prunable([b1, b3, dump]).units == (names[0],)
    assert archive.prunable([b3, b1]).units == (names[0],), "the earliest start counts, in any order"
    plan = archive.prunable([b3, dump])
    assert plan.units == tuple(names[:3]) and plan.reason
    assert archive.prunable([dump]).units == (), "no kept backup reads the log: the archive may be all there is"
    assert archive.prunable([]).units == ()

    assert archive.delete(plan.units) == 3
    assert archive.units() == names[3:]
    assert archive.continuity([b3]).ok
    assert archive.fetch(names[0], Path(harness.repo.store.root) / "gone") is False


def test_a_failed_ship_names_the_unit_and_never_leaves_a_hole(harness: Harness):
    names = harness.produce(3)
    failing = Repository(FailingStore(harness.repo.store, harness.stored_key(names[1])))
    with pytest.raises(StoreUnavailableError, match=names[1]) as caught:
        harness.archive(failing).ship()
    unit, partial = ship_failure(caught.value)
    assert unit == names[1] and isinstance(partial, ShipReport)
    assert partial.shipped == [names[0]] and partial.lag_units == 2
    archive = harness.archive()
    assert archive.units() == [names[0]], "nothing after the failed unit was archived"
    assert archive.lag().units == 2
    assert archive.ship().shipped == names[1:]


def test_an_archive_opened_without_settings_reads_but_cannot_ship(harness: Harness):
    harness.produce(2)
    harness.archive().ship()
    bare = harness.factory(harness.repo, TARGET)
    assert len(bare.units()) == 2
    with pytest.raises(ConfigError, match=TARGET):
        bare.ship()


def test_ship_following_adds_up_runs_and_reports_the_largest_backlog(harness: Harness):
    archive = harness.archive()
    first = harness.produce(1)
    now = [0.0]
    arrivals = iter([3, 0, 2, 0, 0, 0, 0, 0])

    def sleep(seconds: float) -> None:  # while we wait, the server writes
        now[0] += seconds
        harness.produce(next(arrivals, 0))

    report = ship_following(archive, 3.0, poll_seconds=0.5, clock=lambda: now[0], sleep=sleep)
    assert report.shipped == first + list(harness.produced)[1:] == archive.units()
    assert len(report.shipped) == 6 and report.max_lag_units == 3
    assert report.raw_bytes == sum(len(d) for d in harness.produced.values())
    assert (report.remaining, report.lag_units) == (0, 0)


def test_ship_following_failure_reports_what_every_run_shipped(harness: Harness):
    names = harness.produce(1)
    current = [harness.archive()]
    later: list[str] = []

    class Current:  # the archive, until the store starts failing while we wait
        def __getattr__(self, name: str):
            return getattr(current[0], name)

    def sleep(seconds: float) -> None:
        if not later:
            later.extend(harness.produce(2))
            current[0] = harness.archive(Repository(FailingStore(harness.repo.store, harness.stored_key(later[1]))))

    with pytest.raises(VaultflowError) as caught:
        ship_following(Current(), 1.0, clock=iter([0.0, 0.1, 0.2, 0.3]).__next__, sleep=sleep)
    unit, partial = ship_failure(caught.value)
    assert unit == later[1] and partial.shipped == names + later[:1]


# -- finding archives through the registry ---------------------------------------------------------
def test_engines_are_found_in_the_registry_and_those_without_an_archive_are_none(tmp_path: Path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    assert isinstance(logarchive.open_log_archive("postgres", repo, TARGET), WalArchive)
    assert logarchive.open_log_archive("redis", repo, TARGET) is None
    with toy_engine_registered():
        assert isinstance(logarchive.open_log_archive("toylog", repo, TARGET), ToyArchive)
    with pytest.raises(ConfigError, match="no vaultflow engine named 'toylog'"):
        logarchive.open_log_archive("toylog", repo, TARGET)  # forgotten after the test


def test_a_target_kind_offers_archive_logs_exactly_when_its_engine_has_a_log_archive():
    with toy_engine_registered():
        kinds = target_types()
        assert {"postgres-target", "redis-target", "toy-log-target"} <= set(kinds)
        for slug, kind in kinds.items():
            has_archive = registry.spec(kind.engine_name).log_archive is not None
            assert (ARCHIVE_LOGS in kind.strategy_fits) == has_archive, slug
    assert "toy-log-target" not in target_types()


def test_wal_continuity_gaps_name_timelines_and_missing_history_files(tmp_path: Path):
    harness = postgres_harness(tmp_path)
    archive = harness.archive()
    names = harness.produce(3)
    (tmp_path / "pg_wal" / "x").mkdir()
    later = tmp_path / "pg_wal" / "x" / segment_name(2, 3)  # timeline 2, without its history file
    later.write_bytes(b"w" * 100)
    wal_push(later, Path(harness.settings.wal_spool))
    archive.ship()
    result = archive.continuity([harness.backup(names[0])])
    [broken] = result.broken
    assert broken.gaps == (Gap("00000002.history", "00000002.history", "timeline history file not archived"),)
    harness.repo.store.delete(record_key(TARGET, segment_name(2, 3)))
    harness.repo.store.delete(record_key(TARGET, names[1]))
    [broken] = archive.continuity([harness.backup(names[0])]).broken
    assert broken.gaps == (Gap(names[1], names[1], "not archived, timeline 1"),) and broken.note == "timeline 1"
