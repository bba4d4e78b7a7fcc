"""What happened to each target over time: the series `vaultflow status --chart` and the status
flow's chart draw (vaultflow.chart), read from the repository alone. Prefect-free.

    history = fleet_history(repo, now=now, since=now - timedelta(days=30))
    history[0].backups     # (BackupPoint, ...) oldest first: time (start), kind, stored bytes, seconds
    history[0].drills      # (Mark, ...) every drill record kept, passed or failed, with its restore time
    history[0].failures    # (Mark, ...) failed verify / quick-verify records, and failed backup runs
                           # the caller adds (flows.status reads them from Prefect's flow runs)

What the repository keeps, and so what can be drawn: every backup's manifest (a failed backup
leaves none), and per backup the *last* check of each kind (checks/<backup-id>/<kind>.json,
Repository.last_checks): a drill or verify overwritten by a later one of the same kind of the
same backup is gone, and a pruned backup's checks go with it. Earlier checks live only in the
Prefect runs that made them (their summary artifacts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from vaultflow.manifest import BackupKind
from vaultflow.repository import Repository
from vaultflow.status import CHECK_KINDS, DRILL, Check, last_check, utc_moment

BACKUP_RUN = "backup run"


@dataclass(frozen=True)
class BackupPoint:
    """One committed backup: `time` when it started (UTC), `kind`, `stored_bytes` (the sum of
    its objects' stored sizes: what it costs in the repository), `seconds` from start to finish."""

    backup_id: str
    kind: BackupKind
    time: datetime
    stored_bytes: int
    seconds: float


@dataclass(frozen=True)
class Mark:
    """A moment on a target's time axis: a drill (passed or failed), a failed verify, a failed
    backup run. `kind`: 'drill', 'verify', 'quick-verify' or BACKUP_RUN; `ok`: it passed;
    `seconds` / `rto_objective_s`: a drill's restore time and objective (None when unknown);
    `backup_id`: the backup checked (None for a failed run, which left none); `detail`: why."""

    time: datetime
    kind: str
    ok: bool
    backup_id: str | None = None
    seconds: float | None = None
    rto_objective_s: float | None = None
    detail: str = ""

    @classmethod
    def of_check(cls, check: Check) -> Mark:
        """The mark of a check record (vaultflow.status.Check; its time must be known)."""
        return cls(
            check.time, check.kind, check.ok, check.backup_id, check.seconds, check.rto_objective_s, check.detail
        )


@dataclass(frozen=True)
class TargetHistory:
    """The series drawn for `engine`/`target`, each oldest first; `notes`: what was left out and
    why (unreadable manifests, check records without a time)."""

    engine: str
    target: str
    backups: tuple[BackupPoint, ...] = ()
    drills: tuple[Mark, ...] = ()
    failures: tuple[Mark, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return f"{self.engine}/{self.target}"

    @property
    def times(self) -> list[datetime]:
        """Every moment of the series (backups, drills, failures), unsorted."""
        return [p.time for p in self.backups] + [m.time for m in self.drills + self.failures]


def _within(when: datetime, since: datetime | None, now: datetime) -> bool:
    return when <= now and (since is None or when >= since)


def target_history(
    repo: Repository,
    engine: str,
    target: str,
    now: datetime | None = None,
    since: datetime | None = None,
    failed_runs: tuple[Mark, ...] = (),
) -> TargetHistory:
    """The history of `engine`/`target` from `since` (UTC; None: from its first backup) to `now`
    (default: this host's clock; naive times are UTC): backups that finished by `now` and started
    at or after `since`; every kept drill record and every failed verify or quick-verify record
    dated in that window (records without a time are left out, and noted); `failed_runs` (marks
    of kind BACKUP_RUN the caller found, e.g. in Prefect's flow runs) in that window join the
    failures. Unreadable manifests are noted, never fatal."""
    now, since = utc_moment(now), (utc_moment(since) if since is not None else None)
    catalog = repo.catalog(engine, target)
    backups = tuple(
        BackupPoint(m.id, m.kind, m.started_at, m.stored_size, (m.finished_at - m.started_at).total_seconds())
        for m in catalog.manifests
        if m.finished_at <= now and (since is None or m.started_at >= since)
    )
    checks, undated = [], 0
    for backup_id, by_kind in repo.last_checks(engine, target).items():
        for kind in CHECK_KINDS:
            check = last_check({backup_id: by_kind}, (kind,)) if kind in by_kind else None
            if check is None:
                continue
            if check.time is None:
                undated += 1
            elif _within(check.time, since, now):
                checks.append(Mark.of_check(check))
    drills = tuple(sorted((m for m in checks if m.kind == DRILL), key=lambda m: m.time))
    failures = [m for m in checks if m.kind != DRILL and not m.ok]
    failures += [m for m in failed_runs if _within(m.time, since, now)]
    notes = [f"unreadable: {p.key}: {p.message}" for p in catalog.problems]
    if undated:
        notes.append(f"{undated} check record(s) without a readable time left out")
    return TargetHistory(engine, target, backups, drills, tuple(sorted(failures, key=lambda m: m.time)), tuple(notes))


def fleet_history(
    repo: Repository,
    now: datetime | None = None,
    since: datetime | None = None,
    failed_runs: Mapping[tuple[str, str], tuple[Mark, ...]] | None = None,
) -> list[TargetHistory]:
    """target_history of every target the repository holds backups of (Repository.targets), and
    of every target of `failed_runs` ((engine, target) -> marks of failed backup runs) it holds
    none of (a target whose first backup keeps failing), in (engine, target) order.
    NotFoundError for a local repository whose directory does not exist."""
    failed_runs = failed_runs or {}
    targets = sorted(set(repo.targets()) | set(failed_runs))
    return [target_history(repo, e, t, now, since, tuple(failed_runs.get((e, t), ()))) for e, t in targets]
