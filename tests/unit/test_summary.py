"""Run summaries: sizes, durations and rates in units a person reads; one line per run."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from vaultflow.summary import (
    RunSummary,
    archive_summary,
    backup_summary,
    drill_summary,
    failed_summary,
    human_duration,
    human_rate,
    human_size,
    one_line,
    prune_summary,
    recovery_point,
    restore_summary,
    sizes_and_time,
    verify_summary,
)


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [
        (0, "0 B"),
        (1, "1 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (1049, "1.0 kB"),
        (999_949, "999.9 kB"),
        (999_999, "1.0 MB"),  # rounded before the unit is chosen: never '1000.0 kB'
        (1_500_000, "1.5 MB"),
        (2_345_678_901, "2.3 GB"),
        (5 * 10**12, "5.0 TB"),
        (-2000, "-2.0 kB"),
    ],
)
def test_human_size_at_the_boundaries(num_bytes: int, text: str):
    assert human_size(num_bytes) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0.00 s"),
        (0.043, "0.04 s"),  # a quick run is not '0.0 s'
        (1, "1.0 s"),
        (59.94, "59.9 s"),
        (59.96, "1 min 00 s"),
        (245, "4 min 05 s"),
        (3599.4, "59 min 59 s"),
        (7380, "2 h 03 min"),
        (-1, "0.00 s"),
    ],
)
def test_human_duration(seconds: float, text: str):
    assert human_duration(seconds) == text


def test_human_rate():
    assert human_rate(25_000_000, 2) == "12.5 MB/s"
    assert human_rate(500, 1) == "500 B/s"
    assert human_rate(1000, 0) == "n/a"


BACKUP = {
    "backup_id": "20261130T063551Z",
    "kind": "full",
    "parent_id": None,
    "stored_size": 2_100,
    "raw_size": 12_300_000,
    "seconds": 4.1,
    "objects": 3,
    "fell_back_to_full": None,
}


def test_backup_line_has_id_kind_sizes_duration_throughput():
    summary = backup_summary(BACKUP, "postgres/prod", "full")
    assert summary.line == "backup 20261130T063551Z (full): 12.3 MB read, 2.1 kB stored in 4.1 s (3.0 MB/s)"
    assert ("parent", "none (a full backup starts a chain)") in summary.facts
    assert summary.title == "full backup of postgres/prod"


def test_sizes_and_time_for_the_demo_and_cli():
    assert sizes_and_time(BACKUP) == "12.3 MB -> 2.1 kB in 4.1 s"


def test_incremental_line_names_its_parent():
    result = {**BACKUP, "kind": "incremental", "parent_id": "20261129T000000Z"}
    line = backup_summary(result, "postgres/prod", "incremental").line
    assert line.startswith("backup 20261130T063551Z (incremental on 20261129T000000Z): 12.3 MB read")


def test_fallback_to_full_says_why_first():
    result = {**BACKUP, "fell_back_to_full": "parent 20261129T000000Z was pruned"}
    summary = backup_summary(result, "redis/cache", "incremental")
    assert summary.line.startswith(
        "took a full backup: parent 20261129T000000Z was pruned; backup 20261130T063551Z (full instead of incremental)"
    )
    assert ("why a full", "parent 20261129T000000Z was pruned") in summary.facts
    assert ("kind", "full (asked: incremental)") in summary.facts


def test_restore_line_says_where_point_and_comparison():
    finished = datetime(2026, 11, 30, 6, 0, 0, tzinfo=UTC)
    point = recovery_point({"no_owner": True}, finished)
    assert point == "the backup's consistent point (2026-11-30 06:00:00 UTC)"
    assert recovery_point({"to_time": "2026-11-30T05:00:00Z", "to_timeline": "latest", "to_lsn": None}, finished) == (
        "to_time=2026-11-30T05:00:00Z, to_timeline=latest"
    )
    result = {"backup_id": "B1", "restored": {"app": "app_copy"}, "seconds": 75, "notes": ["slot not restored"]}
    summary = restore_summary(result, "postgres/prod", "2 tables match", point, {"no_owner": True})
    assert summary.line == (
        "restored B1 into app -> app_copy in 1 min 15 s; recovery point: the backup's consistent point "
        "(2026-11-30 06:00:00 UTC); 2 tables match"
    )
    assert ("options", "no_owner=True") in summary.facts
    assert "- slot not restored" in summary.markdown()


def test_restore_says_the_point_reached_what_was_asked_and_the_timeline():
    finished = datetime(2026, 11, 30, 6, 0, 0, tzinfo=UTC)
    reached = "LSN 0/3000148, last transaction replayed 2026-11-30 05:59:58 UTC"
    point = recovery_point({"to_time": "2026-11-30T06:00:00Z"}, finished, reached)
    assert point == f"{reached} (asked: to_time=2026-11-30T06:00:00Z)"
    assert recovery_point({}, finished, "oplog time 1764400000:3") == "oplog time 1764400000:3"
    timeline = "3 (replayed along timeline 2; promotion started timeline 3, its history file 00000003.history archived)"
    result = {"backup_id": "B1", "restored": {"cluster": "/srv/pg"}, "seconds": 4, "timeline": timeline}
    summary = restore_summary(result, "postgres/prod", "1 table match", point, {"to_time": "2026-11-30T06:00:00Z"})
    assert summary.line == (
        f"restored B1 into cluster -> /srv/pg in 4.0 s; recovery point: {point}; timeline {timeline}; 1 table match"
    )
    assert ("timeline", timeline) in summary.facts and ("recovery point", point) in summary.facts
    logical = restore_summary({**result, "timeline": None}, "postgres/prod", "1 table match", point, {})
    assert "timeline" not in logical.line and all(label != "timeline" for label, _ in logical.facts), (
        "an engine without timelines shows none, not 'n/a'"
    )


def test_a_failed_run_says_failed_why_and_what_was_known():
    summary = failed_summary("full backup of postgres/prod", "AuthenticationError: refused", [("backup", "B1")])
    assert summary.line == "full backup of postgres/prod FAILED: AuthenticationError: refused"
    assert summary.facts == [("result", "FAILED"), ("backup", "B1"), ("reason", "AuthenticationError: refused")]


def test_one_line_keeps_every_word_of_a_log_tail():
    tail = "the restored server stopped:\n2026 LOG:  starting\n\n  2026 FATAL:  recovery ended before target\n"
    assert (
        one_line(tail)
        == "the restored server stopped: | 2026 LOG:  starting | 2026 FATAL:  recovery ended before target"
    )
    assert one_line("already one line") == "already one line"


def test_drill_pass_and_fail():
    passed = drill_summary("B1", "redis/cache", 2.5, 900, "4 units match", [])
    assert passed.line == "drill of B1 PASSED: restore 2.5 s against an RTO of 15 min 00 s (met); 4 units match"
    failed = drill_summary("B1", "redis/cache", 2.5, 1, "1 of 4 units differ", ["db0.keys (count differs)"])
    assert failed.line.startswith("drill of B1 FAILED: restore 2.5 s against an RTO of 1.0 s (MISSED)")
    assert "- differs: db0.keys (count differs)" in failed.markdown()


def test_verify_and_prune_lines():
    counts = {"backups": 3, "unreadable": 0, "log_units": 12}
    ok = verify_summary(counts, ["postgres/prod"], [], True, "local /r")
    assert ok.line == "verified 3 backups, 12 archived log units of postgres/prod: all intact"
    bad = verify_summary(counts, ["postgres/prod"], ["B1/db/x: sha256 differs"], False, "local /r")
    assert bad.line.endswith(": 1 PROBLEMS") and bad.line.startswith("checked 3 backups")
    pruned = {
        "kept": ["B3"],
        "deleted": ["B1", "B2"],
        "orphan_objects": 1,
        "partial_writes_removed": 0,
        "clock_problems": {"B4": "finished in the future"},
        "unreadable": {},
        "skipped_targets": {},
        "log_units_deleted": 5,
        "dry_run": True,
    }
    summary = prune_summary(pruned, ["postgres/prod"], "local /r")
    assert summary.line == "dry run: kept 1 backups, would delete 2 (B1, B2), 1 orphan objects, 5 archived log units"
    assert "- held (clock): B4: finished in the future" in summary.markdown()


def test_markdown_cells_cannot_break_the_table():
    page = RunSummary("t", "one line", [("a|b", "x\ny")], [f"d{i}" for i in range(25)]).markdown()
    assert "| a\\|b | x y |" in page
    assert "- d19" in page and "- d20" not in page and "- ... and 5 more" in page


def test_archive_line_names_the_log_and_the_lag():
    shipped = {
        "shipped": ["000000010000000000000003", "000000010000000000000004"],
        "already_stored": [],
        "raw_bytes": 33_554_432,
        "stored_bytes": 61_000,
        "lag_units": 1,
        "lag_seconds": 75,
    }
    summary = archive_summary(shipped, "postgres/prod", "WAL archive")
    assert summary.line == "shipped 2 WAL files (33.6 MB read, 61.0 kB stored); lag 1 units, 1 min 15 s"
    assert summary.title == "WAL archiving of postgres/prod"
