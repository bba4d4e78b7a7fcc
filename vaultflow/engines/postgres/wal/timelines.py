"""Timelines in the WAL archive: which one a recovery follows, and whether its WAL is all there.

PostgreSQL's rules (docs: "Continuous Archiving and Point-in-Time Recovery", section
"Timelines", and the `recovery_target_timeline` setting):

- A server that ends archive recovery starts a new timeline N and writes `0000000N.history`:
  the parent timelines and the LSN at which each one was left. Recovery can follow a timeline
  switch *only* through that file; without it the segments of timeline N are invisible and
  recovery silently stays on the parent ("latest" picks the newest history file it finds).
- Segment number s is read from the newest timeline of the history whose switch point lies at
  or before s (the switch segment itself comes from the new timeline).
- A backup taken on timeline b at LSN L can recover along timeline T only if b is T or an
  ancestor of T that was left at or after L.

vaultflow chooses the timeline itself (`plan_timeline`) and passes it as
`recovery_target_timeline`, so what a restore follows never depends on which history files
happen to be reachable: by default the newest timeline that descends from the backup *and has
archived segments* (a timeline with only a history file is a restore that never archived: a
dead branch; following it could only stop at its branch point), else the backup's own.
Segments on a newer timeline whose history file is missing make it refuse (NotFoundError
naming the file): it cannot know where that timeline branched off.

Standard library only at import time (imported by the wal_cli fast path's package).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vaultflow.engines.postgres.wal.names import (
    DEFAULT_SEGMENT_SIZE,
    archived_names,
    is_history,
    is_segment,
    object_key,
    parse_history,
    parse_lsn,
    parse_segment,
    segment_name,
    store_of,
)
from vaultflow.engines.postgres.wal.ship import read_record
from vaultflow.errors import ConfigError, NotFoundError

if TYPE_CHECKING:
    from vaultflow.engines.postgres.consistency import PostgresPhysicalConsistency
    from vaultflow.repository import Repository
    from vaultflow.stores.base import Store


def history_name(timeline: int) -> str:
    """2 -> '00000002.history'."""
    return f"{timeline:08X}.history"


@dataclass(frozen=True)
class TimelinePlan:
    """The timeline recovery follows and where each timeline of its history begins.

    `begins`: (timeline, first segment number read from it), newest first, as PostgreSQL's
    expectedTLEs list; `owner(segno)` is the timeline segment `segno` is read from.
    """

    timeline: int
    begins: tuple[tuple[int, int], ...]
    segment_size: int = DEFAULT_SEGMENT_SIZE

    def owner(self, segno: int) -> int:
        return next(tli for tli, begin in self.begins if begin <= segno)

    def name(self, segno: int) -> str:
        return segment_name(self.owner(segno), segno, self.segment_size)


def segments_by_timeline(names: list[str], segment_size: int = DEFAULT_SEGMENT_SIZE) -> dict[int, set[int]]:
    """Archived segment names -> {timeline: {segment numbers}} (history/.backup/.partial ignored)."""
    result: dict[int, set[int]] = {}
    for name in names:
        if is_segment(name):
            tli, segno = parse_segment(name, segment_size)
            result.setdefault(tli, set()).add(segno)
    return result


def read_history(repo: Repository | Store, target: str, timeline: int) -> list[tuple[int, int]] | None:
    """The archived history file of `timeline`, parsed ([(parent, switch LSN)], oldest first);
    None when it is not archived. Its bytes are checked against the record's sha256."""
    from vaultflow.pipeline import open_verified  # zstd: not for the wal-push fast path

    name = history_name(timeline)
    record = read_record(repo, target, name)
    if record is None:
        return None
    reader, verifying, raw = open_verified(
        store_of(repo),
        object_key(target, name),
        record["sha256"],
        record["stored_size"],
        f"timeline history file {name}",
    )
    chunks = []
    with raw:
        while chunk := reader.read(1 << 16):
            chunks.append(chunk)
        verifying.check()
    return parse_history(b"".join(chunks).decode())


def _begins(timeline: int, history: list[tuple[int, int]], segment_size: int) -> tuple[tuple[int, int], ...]:
    begins, begin = [], 0
    for parent, switch_lsn in history:
        begins.append((parent, begin))
        begin = switch_lsn // segment_size
    begins.append((timeline, begin))
    return tuple(reversed(begins))


def plan_timeline(
    repo: Repository | Store,
    target: str,
    backup_timeline: int,
    backup_lsn: str | int,
    *,
    names: list[str] | None = None,
    requested: int | None = None,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> TimelinePlan:
    """Which timeline a recovery of a backup taken on `backup_timeline` at `backup_lsn` (its
    stop LSN, e.g. '0/5000100') follows through the archive of `target` (`names`: its archived
    WAL file names, listed when not given).

    `requested`: a timeline the caller insists on (ConfigError when the backup cannot reach it,
    NotFoundError when its history file is not archived). Default: the newest timeline that
    descends from the backup and has archived segments, else the backup's own.
    Raises NotFoundError naming `0000000N.history` when segments of a timeline N newer than the
    backup's are archived without that file.
    """
    if names is None:
        names = archived_names(repo, target)
    lsn = parse_lsn(backup_lsn) if isinstance(backup_lsn, str) else backup_lsn
    segments = segments_by_timeline(names, segment_size)
    histories = {int(n[:8], 16) for n in names if is_history(n)}
    orphans = sorted(t for t in segments if t > backup_timeline and t not in histories)
    if orphans:
        first = segment_name(orphans[0], min(segments[orphans[0]]), segment_size)
        error = NotFoundError(
            f"timeline history file {history_name(orphans[0])} is missing from the WAL archive of {target}, "
            f"but segments of timeline {orphans[0]} are archived (from {first} on): without it recovery cannot "
            f"tell where timeline {orphans[0]} branched off, would silently stay on timeline {backup_timeline}, "
            f"and a promotion could reuse timeline number {orphans[0]}. Nothing was restored. Archive that file "
            f"from the pg_wal directory of the server that wrote timeline {orphans[0]} (`vaultflow wal-push "
            f"<pg_wal>/{history_name(orphans[0])} --spool <spool>`, then run archive-logs), then restore again"
        )
        error.history_file = history_name(orphans[0])  # type: ignore[attr-defined]
        raise error
    candidates: dict[int, tuple[tuple[int, int], ...]] = {backup_timeline: ((backup_timeline, 0),)}
    for tli in sorted(t for t in histories if t > backup_timeline):
        history = read_history(repo, target, tli)
        if history is None:
            continue
        left_at = next((switch for parent, switch in history if parent == backup_timeline), None)
        if left_at is not None and left_at >= lsn:  # the backup's end point lies on this timeline's history
            candidates[tli] = _begins(tli, history, segment_size)
    if requested is not None:
        if requested not in candidates:
            if requested > backup_timeline and requested not in histories:
                raise NotFoundError(
                    f"timeline {requested} was asked for, but its history file "
                    f"{history_name(requested)} is not in the WAL archive of {target}"
                )
            raise ConfigError(
                f"timeline {requested} does not descend from the backup's end point (timeline "
                f"{backup_timeline}, LSN {backup_lsn}): choose one of "
                f"{', '.join(map(str, sorted(candidates)))}, or another backup"
            )
        chosen = requested
    else:
        lived = [t for t in candidates if t == backup_timeline or segments.get(t)]
        chosen = max(lived)
    return TimelinePlan(chosen, candidates[chosen], segment_size)


def wal_gaps(plan: TimelinePlan, names: list[str], start_wal_file: str, stop_wal_file: str | None = None) -> list[str]:
    """Segments recovery along `plan` would need but the archive (`names`) lacks, from
    `start_wal_file` through `stop_wal_file` (default: the start) and onward through the
    newest archived segment on the plan's history. Empty: continuous."""
    size = plan.segment_size
    segments = segments_by_timeline(names, size)
    _, start = parse_segment(start_wal_file, size)
    through = parse_segment(stop_wal_file, size)[1] if stop_wal_file else start
    end = archive_end(plan, names)
    last = max(through, parse_segment(end, size)[1] if end else through)
    return [plan.name(s) for s in range(start, last + 1) if s not in segments.get(plan.owner(s), ())]


def archive_end(plan: TimelinePlan, names: list[str]) -> str | None:
    """The newest archived segment on the plan's history (None: none archived)."""
    on_chain = [
        s
        for tli, segnos in segments_by_timeline(names, plan.segment_size).items()
        for s in segnos
        if plan.owner(s) == tli
    ]
    return plan.name(max(on_chain)) if on_chain else None


def gap_runs(missing: list[str], segment_size: int = DEFAULT_SEGMENT_SIZE) -> list[list[str]]:
    """Missing names (in WAL order) -> runs of consecutive segments of one timeline; any other
    name (a history file) is a run of its own."""
    runs: list[list[str]] = []
    for name in missing:
        if not is_segment(name):
            runs.append([name])
            continue
        prev = runs[-1][-1] if runs else None
        if (
            prev
            and is_segment(prev)
            and parse_segment(prev, segment_size)[0] == parse_segment(name, segment_size)[0]
            and parse_segment(prev, segment_size)[1] + 1 == parse_segment(name, segment_size)[1]
        ):
            runs[-1].append(name)
        else:
            runs.append([name])
    return runs


def describe_gaps(missing: list[str], segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """['...05', '...06', '...09'] -> '000000010000000000000005..000000010000000000000006 (timeline 1),
    000000010000000000000009 (timeline 1)': runs of consecutive segments, each with its timeline."""
    parts = []
    for run in gap_runs(missing, segment_size):
        if not is_segment(run[0]):
            parts.append(f"{run[0]} (history file)")
            continue
        span = run[0] if len(run) == 1 else f"{run[0]}..{run[-1]}"
        parts.append(f"{span} (timeline {parse_segment(run[0], segment_size)[0]})")
    return ", ".join(parts)


@dataclass(frozen=True)
class BackupWal:
    """Whether the archive reaches continuously from one physical backup's start segment
    through its stop segment and on to the newest segment of the timeline a restore follows."""

    backup_id: str
    timeline: int | None  # the timeline followed (None: it could not be chosen)
    missing: tuple[str, ...]  # segment (or history file) names, in WAL order
    problem: str  # '' when continuous

    @property
    def ok(self) -> bool:
        return not self.problem


def check_backup_wal(
    repo: Repository | Store,
    target: str,
    backup_id: str,
    consistency: PostgresPhysicalConsistency,
    *,
    names: list[str] | None = None,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
) -> BackupWal:
    """Check the archive of `target` for one physical backup (`consistency`: its manifest's
    consistency record: start_wal_file, stop_lsn / stop_wal_file and timeline). The problem text names the gaps
    with their timelines (describe_gaps), or the missing history file."""
    if names is None:
        names = archived_names(repo, target)
    start, timeline, stop_lsn = consistency.start_wal_file, consistency.timeline, consistency.stop_lsn
    stop = consistency.stop_wal_file or segment_name(
        timeline, max(parse_lsn(stop_lsn) - 1, 0) // segment_size, segment_size
    )
    try:
        plan = plan_timeline(repo, target, timeline, stop_lsn, names=names, segment_size=segment_size)
    except NotFoundError as exc:
        return BackupWal(backup_id, None, (getattr(exc, "history_file", ""),), f"backup {backup_id}: {exc}")
    missing = wal_gaps(plan, names, start, stop)
    if not missing:
        return BackupWal(backup_id, plan.timeline, (), "")
    end = archive_end(plan, names)
    return BackupWal(
        backup_id,
        plan.timeline,
        tuple(missing),
        f"backup {backup_id} (start {start}, stop {stop}, timeline {timeline}): the archive does not "
        f"reach continuously along timeline {plan.timeline}: missing {len(missing)} segment(s): "
        f"{describe_gaps(missing[:200], segment_size)}; newest archived: {end or 'none'}. Point-in-time "
        "restores from this backup stop at the first gap: check archive_command and the spool "
        "(archive-logs), then take a new full backup",
    )
