"""The WAL archive as a vaultflow.logarchive.LogArchive: a thin adapter over the wal functions.

Units are WAL file names (segments, `.partial`, `.history` and `.backup` files) in WAL order;
a backup's log starts at its `start_wal_file`. Shipping is ship_spool (the spool that
`vaultflow wal-push` fills), fetching is wal_fetch from the repository, continuity is
check_backup_wal per physical backup (along the timeline a restore follows), pruning is
wal_not_needed before the oldest kept physical backup's start. The archive_command and
restore_command fast paths (wal.cli) do not go through this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vaultflow.engines.postgres.consistency import PostgresPhysicalConsistency
from vaultflow.engines.postgres.wal.archive import delete_wal, wal_fetch, wal_not_needed
from vaultflow.engines.postgres.wal.names import (
    DEFAULT_SEGMENT_SIZE,
    archived_names,
    is_segment,
    parse_segment,
    wal_prefix,
)
from vaultflow.engines.postgres.wal.ship import ShipResult, read_record, ship_spool, spool_lag
from vaultflow.engines.postgres.wal.timelines import check_backup_wal, gap_runs
from vaultflow.errors import ConfigError, VaultflowError
from vaultflow.fsutil import directory_problem
from vaultflow.logarchive import (
    BackupContinuity,
    Continuity,
    Gap,
    Lag,
    LogStart,
    PrunePlan,
    ShipReport,
    attach_ship_failure,
)

if TYPE_CHECKING:
    from vaultflow.manifest import Manifest

SPOOL_HOW_TO = (
    "set it on the PostgresTarget block to the directory archive_command spools into "
    "(vaultflow wal-push %p --spool DIR), or pass spool_dir"
)


def backup_wal_start(manifest: Manifest) -> LogStart | None:
    """Where a backup's WAL starts: its start segment and start LSN (physical backups, from the
    manifest's consistency point); None for logical backups, which do not read the archive."""
    point = manifest.consistency
    if not isinstance(point, PostgresPhysicalConsistency):
        return None
    return LogStart(manifest.id, point.start_wal_file, point.start_lsn)


def ship_report(result: ShipResult) -> ShipReport:
    """A ShipResult (the WAL module's own result) as the contract's ShipReport."""
    return ShipReport(
        shipped=list(result.shipped),
        already_stored=list(result.already_stored),
        remaining=result.remaining,
        lag_units=result.lag_segments,
        lag_seconds=result.lag_seconds,
        raw_bytes=result.raw_bytes,
        stored_bytes=result.stored_bytes,
        max_lag_units=result.lag_segments,
    )


class WalArchive:
    """The WAL archive of one PostgreSQL target (`postgres/<target>/logs/wal/`).

    repository: a vaultflow Repository (its compression_level is used when shipping).
    settings:   the target's block (PostgresTarget: mode, wal_spool); None to read, verify and
                prune only. spool_dir overrides settings.wal_spool.
    """

    stream = "wal"
    title = "WAL archive"

    def __init__(
        self,
        repository: Any,
        target: str,
        settings: Any = None,
        *,
        spool_dir: str | None = None,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ):
        self.repository = repository
        self.target = target
        self.settings = settings
        self.spool_dir = spool_dir or getattr(settings, "wal_spool", None)
        self._spool_given = bool(spool_dir)
        self.segment_size = segment_size

    def __repr__(self) -> str:
        return f"WalArchive({wal_prefix(self.target)!r}, spool={self.spool_dir!r})"

    def _spool(self) -> Path:
        """The spool directory; ConfigError when none is set, or when it is missing, not a
        directory or not readable here: an empty-looking spool would report nothing to ship and
        no lag while a mistyped path or an unmounted volume hides archiving that has stopped."""
        if not self.spool_dir:
            raise ConfigError(f"{self.target} has no wal_spool: {SPOOL_HOW_TO}")
        path = Path(self.spool_dir)
        setting = "spool_dir (--spool)" if self._spool_given else "wal_spool"
        problem = directory_problem(path)
        if problem:
            raise ConfigError(
                f"WAL spool {path} of {self.target} (its {setting}) {problem}: check the path and that its "
                "volume is mounted; it must be the --spool of archive_command (vaultflow wal-push %p --spool "
                "DIR), which creates it on its first WAL file; run archive-logs as the user archive_command "
                "runs as"
            )
        return path

    # -- shipping ------------------------------------------------------------------------------
    def ship(self) -> ShipReport:
        """ship_spool of the target's spool into the repository (see LogArchive.ship)."""
        spool = self._spool()
        try:
            result = ship_spool(
                spool, self.repository, self.target, level=getattr(self.repository, "compression_level", 3)
            )
        except VaultflowError as exc:
            partial = getattr(exc, "ship_result", None)
            if partial is not None:
                attach_ship_failure(exc, getattr(exc, "segment", ""), ship_report(partial))
            raise
        return ship_report(result)

    def lag(self) -> Lag:
        """Segments (and .partial segments) waiting in the spool, and the oldest file's age."""
        _, segments, seconds = spool_lag(self._spool())
        return Lag(segments, seconds)

    # -- reading -------------------------------------------------------------------------------
    def fetch(self, name: str, dest: Path) -> bool:
        """wal_fetch from the repository only (the spool is not consulted)."""
        return wal_fetch(name, Path(dest), self.repository, self.target)

    def units(self) -> list[str]:
        return archived_names(self.repository, self.target)

    def log_start(self, manifest: Manifest) -> LogStart | None:
        return backup_wal_start(manifest)

    def unit_time(self, name: str) -> datetime | None:
        """When WAL segment `name` reached the repository (its record's archived_at, UTC): no
        commit in it is newer, though it may be later than the last one by the time the segment
        waited to fill (archive_timeout) and in the spool. None for history, backup-label and
        .partial files, and for a segment that is not archived."""
        if not is_segment(name):
            return None
        record = read_record(self.repository, self.target, name)
        if record is None:
            return None
        return datetime.fromisoformat(record["archived_at"])

    def continuity(self, backups: Sequence[Manifest]) -> Continuity:
        """check_backup_wal for each physical backup: start segment through stop segment, then
        on along the timeline a restore follows; every gap a run of missing segments on one
        timeline, or a missing timeline history file."""
        names = self.units()
        starts = [(m, start) for m in backups if (start := backup_wal_start(m)) is not None]
        if not names or not starts:
            return Continuity(len(names))
        checked = []
        for manifest, start in starts:
            result = check_backup_wal(
                self.repository,
                self.target,
                manifest.id,
                PostgresPhysicalConsistency.of(manifest),
                names=names,
                segment_size=self.segment_size,
            )
            gaps = tuple(
                Gap(run[0], run[-1], self._why_missing(run[0]))
                for run in gap_runs(list(result.missing), self.segment_size)
            )
            checked.append(
                BackupContinuity(
                    start,
                    gaps,
                    result.missing,
                    f"timeline {result.timeline}" if result.timeline else "",
                    result.problem,
                )
            )
        return Continuity(len(names), tuple(checked))

    def _why_missing(self, name: str) -> str:
        if is_segment(name):
            return f"not archived, timeline {parse_segment(name, self.segment_size)[0]}"
        return "timeline history file not archived"

    # -- retention -----------------------------------------------------------------------------
    def prunable(self, kept: Sequence[Manifest]) -> PrunePlan:
        """WAL files before the start segment of the kept physical backup that starts earliest
        (any timeline; history files are kept). Nothing when no physical backup is kept."""
        starts = [start for m in kept if (start := backup_wal_start(m)) is not None]
        if not starts:
            return PrunePlan()
        oldest = min(starts, key=lambda s: parse_segment(s.unit, self.segment_size)[1])
        names = wal_not_needed(self.units(), oldest.unit, self.segment_size)
        return PrunePlan(
            tuple(names),
            f"{len(names)} WAL files older than the oldest kept physical backup "
            f"({oldest.backup_id}, which starts at {oldest.unit})",
        )

    def delete(self, names: Sequence[str]) -> int:
        return delete_wal(self.repository, self.target, list(names))
