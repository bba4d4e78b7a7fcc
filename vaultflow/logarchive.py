"""One contract for continuous log archives: PostgreSQL WAL today, the MongoDB oplog next.

A log archive keeps what a server writes continuously (WAL segments, oplog slices) as *units*
under `<engine>/<target>/logs/<stream>/` in the repository, so that a restore can replay from a
backup's consistency point to any later moment. Generic code (the archive-logs, verify and prune
flows, their tasks) works through this contract only; an engine provides it through
`EngineSpec.log_archive` (vaultflow.engines.registry), a LogArchiveFactory:

    archive = open_log_archive("postgres", repository, "prod", target_block)   # None: no archive
    report = archive.ship()                    # ShipReport: what moved, bytes, lag afterwards
    archive.fetch(name, dest)                  # one unit back, verified; False: not archived
    archive.units()                            # archived unit names, in log order
    archive.continuity(catalog.manifests)      # Continuity: gaps per backup, named
    archive.prunable(kept_manifests)           # PrunePlan: units no kept backup can use
    archive.delete(plan.units)
    unit_time(archive, name)                   # when a unit's log ends (optional: None if unknown)

What a unit and a position are belongs to the engine (PostgreSQL: a WAL file name; MongoDB: an
oplog slice and a timestamp); generic code only orders, counts, shows and hands them back.
Each backup's manifest says where its log starts (`log_start`); backups that do not read the
log (logical dumps) have none and are ignored by continuity and pruning.

Redis AOF is deliberately *not* a log archive: its increments are cut at backup time and
committed as incremental backups with manifests and chains (vaultflow/engines/redis/aof.py);
Redis has no archive hook that hands over finished log pieces, and replaying to a point in
time would need `aof-timestamp-enabled`. See docs/architecture.md, "Issue 9: log archive".

Standard library only at import time: the PostgreSQL adapter lives in the package that
`archive_command` imports for every WAL segment.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable

from vaultflow.engines import registry

if TYPE_CHECKING:
    from vaultflow.manifest import Manifest


# -- plain types -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LogStart:
    """Where one backup's log starts: a restore of it replays the archive from `unit` on.

    unit:     the first archived unit a restore of the backup reads (PostgreSQL: the WAL segment
              holding the backup's start LSN, e.g. '000000010000000000000005').
    position: the start point in the engine's notation (PostgreSQL: the start LSN '0/5000028';
              MongoDB: the oplog timestamp); for messages.
    """

    backup_id: str
    unit: str
    position: str = ""


@dataclass(frozen=True)
class Lag:
    """What the server produced that is not in the repository yet: `units` waiting (PostgreSQL:
    WAL segments in the spool) and `seconds`, the age of the oldest of them (0.0: nothing waits)."""

    units: int = 0
    seconds: float = 0.0


@dataclass
class ShipReport:
    """What one or more ship runs did, and the lag afterwards.

    shipped:         unit names stored by the run(s), in log order.
    already_stored:  units the repository already held with the same content (not stored again).
    remaining:       units (of any kind) still waiting after the run.
    lag_units:       log units still waiting (PostgreSQL: segments, not .history/.backup files).
    lag_seconds:     age of the oldest waiting unit; 0.0 when nothing waits.
    max_lag_units:   the largest backlog seen while following (ship_following); else lag_units.
    raw_bytes / stored_bytes: sizes of what was shipped, before and after compression.
    """

    shipped: list[str] = field(default_factory=list)
    already_stored: list[str] = field(default_factory=list)
    remaining: int = 0
    lag_units: int = 0
    lag_seconds: float = 0.0
    raw_bytes: int = 0
    stored_bytes: int = 0
    max_lag_units: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able: every field above by its name (flow results, event payloads)."""
        return {
            "shipped": list(self.shipped),
            "already_stored": list(self.already_stored),
            "remaining": self.remaining,
            "lag_units": self.lag_units,
            "lag_seconds": self.lag_seconds,
            "raw_bytes": self.raw_bytes,
            "stored_bytes": self.stored_bytes,
            "max_lag_units": self.max_lag_units,
        }


@dataclass(frozen=True)
class Gap:
    """A stretch of log a restore would need but the archive lacks, from `first` to `last`
    (inclusive, the archive's notation: PostgreSQL segment names; MongoDB the oplog timestamps
    the archive lacks), and `reason`, why it is missing ('not archived', 'timeline history file
    not archived', 'the oplog rolled over past the last archived position', ...)."""

    first: str
    last: str
    reason: str

    def __str__(self) -> str:
        span = self.first if self.first == self.last else f"{self.first}..{self.last}"
        return f"{span} ({self.reason})"


@dataclass(frozen=True)
class BackupContinuity:
    """Whether the archive reaches, without a gap, from one backup's log start onward to the
    newest archived unit a restore of it can follow.

    missing: every missing unit name in log order (a gap is a run of them).
    note:    what the check followed, for messages (PostgreSQL: 'timeline 2').
    problem: one sentence naming the backup, the gaps and what to do; '' when continuous.
    """

    start: LogStart
    gaps: tuple[Gap, ...] = ()
    missing: tuple[str, ...] = ()
    note: str = ""
    problem: str = ""

    @property
    def backup_id(self) -> str:
        return self.start.backup_id

    @property
    def ok(self) -> bool:
        return not self.problem


@dataclass(frozen=True)
class Continuity:
    """The continuity of one target's archive for the backups that read it.

    units:   how many units the archive holds (0: nothing archived, nothing to check).
    backups: one BackupContinuity per backup with a log start, oldest first.
    """

    units: int
    backups: tuple[BackupContinuity, ...] = ()

    @property
    def ok(self) -> bool:
        return all(b.ok for b in self.backups)

    @property
    def broken(self) -> tuple[BackupContinuity, ...]:
        return tuple(b for b in self.backups if not b.ok)

    @property
    def gaps(self) -> tuple[Gap, ...]:
        """Every distinct gap any backup meets, in the order first met."""
        seen: dict[Gap, None] = {}
        for backup in self.backups:
            seen.update(dict.fromkeys(backup.gaps))
        return tuple(seen)


@dataclass(frozen=True)
class PrunePlan:
    """Units no kept backup can use (`units`, log order) and why, in one line (`reason`)."""

    units: tuple[str, ...] = ()
    reason: str = ""


# -- the contract ----------------------------------------------------------------------------
@runtime_checkable
class LogArchive(Protocol):
    """One target's continuous log archive in one repository.

    stream: the folder under `logs/` and the event namespace ('wal' -> `vaultflow.wal.shipped`).
    title:  what users call the archive, for rows and messages ('WAL archive').
    target: the target's name in the repository.
    """

    stream: str
    title: str
    target: str

    def ship(self) -> ShipReport:
        """Move what the server produced so far into the repository, in log order: each unit
        stored, read back and checked, its record written last. Raises the VaultflowError of
        the first failure (transient stays transient) with `.unit` (its name) and
        `.ship_report` (what was done before it) attached (see ship_failure); that unit and
        every later one stay waiting: never a hole that later units hide. ConfigError when the
        archive was opened without what shipping needs (the target's settings)."""
        ...

    def lag(self) -> Lag:
        """What waits to be shipped now (no repository access)."""
        ...

    def fetch(self, name: str, dest: Path) -> bool:
        """Write unit `name` to `dest` (atomically), its bytes checked against the archive's
        checksums while streaming; False when it is not archived. IntegrityError naming the
        unit when its bytes do not match."""
        ...

    def units(self) -> list[str]:
        """Names of the completely archived units (record present), in log order."""
        ...

    def log_start(self, manifest: Manifest) -> LogStart | None:
        """Where `manifest`'s backup starts reading this log; None when it does not read it
        (a logical dump, a backup that carries its own log)."""
        ...

    def continuity(self, backups: Sequence[Manifest]) -> Continuity:
        """Gaps, named, between each backup's log start and the newest archived unit a restore
        of it follows (backups without a log start are ignored)."""
        ...

    def prunable(self, kept: Sequence[Manifest]) -> PrunePlan:
        """Units none of the `kept` backups can use. Nothing when no kept backup reads the log:
        the archive may then be all that is left."""
        ...

    def delete(self, names: Sequence[str]) -> int:
        """Delete these units, each record first (it stops being archived), then its data.
        Returns how many were deleted."""
        ...

    # Optional (read through unit_time() below, so archives without it still satisfy the
    # contract): `unit_time(name) -> datetime | None`, the newest moment archived unit `name`
    # holds, UTC; None for units that carry no log time (PostgreSQL history files) or are not
    # archived. vaultflow status dates the newest restorable point with it.


class LogArchiveFactory(Protocol):
    """What `EngineSpec.log_archive` holds: opens one target's archive.

    Whether a target can archive its log at all is its settings' rule (TargetSettings.misfit
    for 'archive-logs', and 'archive-logs' in strategy_fits), like every strategy's."""

    def __call__(
        self, repository: Any, target: str, settings: Any = None, *, spool_dir: str | None = None
    ) -> LogArchive:
        """`repository`: a vaultflow Repository; `settings`: the target's settings (its block;
        None: the archive can be read, verified and pruned but not shipped); `spool_dir`
        overrides where the server leaves units for shipping (engines that read the log from
        the server ignore it)."""
        ...


# -- generic operations ----------------------------------------------------------------------
def log_archive_factory(engine: str) -> LogArchiveFactory | None:
    """The log archive factory of engine `engine` from the registry; None when it has none.
    Raises ConfigError for an unknown engine."""
    return cast("LogArchiveFactory | None", registry.spec(engine).log_archive)


def open_log_archive(
    engine: str, repository: Any, target: str, settings: Any = None, *, spool_dir: str | None = None
) -> LogArchive | None:
    """The archive of `target` (an `engine` target) in `repository`; None when the engine has
    no continuous log archive (nothing to ship, check or prune: callers skip it)."""
    factory = log_archive_factory(engine)
    if factory is None:
        return None
    return factory(repository, target, settings, spool_dir=spool_dir)


def unit_time(archive: LogArchive, name: str) -> datetime | None:
    """The newest moment archived unit `name` of `archive` holds (UTC), from the archive's
    optional `unit_time` method; None when the archive cannot date it (no such method, a unit
    without log time, not archived)."""
    method = getattr(archive, "unit_time", None)
    return method(name) if method is not None else None


def attach_ship_failure(error: BaseException, unit: str, report: ShipReport) -> BaseException:
    """Mark `error` (raised by ship) with the unit that failed and what was shipped before it."""
    error.unit = unit  # type: ignore[attr-defined]
    error.ship_report = report  # type: ignore[attr-defined]
    return error


def ship_failure(error: BaseException) -> tuple[str | None, ShipReport | None]:
    """(unit that failed, report of what was shipped before it) of an error raised by ship."""
    return getattr(error, "unit", None), getattr(error, "ship_report", None)


def ship_following(
    archive: LogArchive,
    follow_seconds: float = 0.0,
    *,
    poll_seconds: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ShipReport:
    """Ship once, then keep shipping for `follow_seconds` (polling every `poll_seconds` while
    nothing arrives; after shipping something, at once). The report adds up every run's
    shipped units and bytes, ends with the last run's lag, and `max_lag_units` is the largest
    backlog seen. A failure is raised as by ship, its `.ship_report` covering all runs so far.
    A deployment every minute with follow_seconds=50 keeps the lag to seconds under load."""
    total = ShipReport()

    def add(report: ShipReport) -> None:
        total.shipped += report.shipped
        total.already_stored += report.already_stored
        total.raw_bytes += report.raw_bytes
        total.stored_bytes += report.stored_bytes
        total.remaining, total.lag_units, total.lag_seconds = report.remaining, report.lag_units, report.lag_seconds
        total.max_lag_units = max(total.max_lag_units, report.lag_units)

    def ship() -> ShipReport:
        try:
            return archive.ship()
        except Exception as exc:
            unit, partial = ship_failure(exc)
            if partial is not None:
                add(partial)
                attach_ship_failure(exc, unit or "", replace(total))
            raise

    report = ship()
    add(report)
    deadline = clock() + follow_seconds
    while clock() < deadline:
        if not report.shipped:
            sleep(poll_seconds)  # idle: poll; after shipping something, look again at once
        total.max_lag_units = max(total.max_lag_units, archive.lag().units)
        report = ship()
        add(report)
    return total
