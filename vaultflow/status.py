"""Fleet status: per target, how old its newest restorable point is against its RPO, and what
its last verify and drill said. Prefect-free; `vaultflow status` and the `status` flow print
and publish the same rows.

    status = target_status(repo, "postgres", "prod", Objective(4.0, "block postgres-target/prod"), now)
    status.restorable      # RestorePoint: the backup a restore starts from, the log unit it reaches
    status.age_s           # seconds from that point to `now`; None when nothing is restorable
    status.rpo_met         # age <= rpo_hours
    fleet_status(repo, objectives, now) -> [TargetStatus, ...] for every target of the repository
                           # and every saved one it holds no backup of ("never backed up")

The newest restorable point is the newer of
- the newest backup whose chain is complete (vaultflow.chain, through Catalog.chain_problem) and
  whose recorded time can be trusted (no clock problem, judged by this host's real clock), that
  did not fail its verify (vaultflow.status.verify_failures: the newest of its verify and
  quick-verify records is FAILED, or that of a backup its chain includes), dated by its *start*
  (its data is at least that new: conservative for an RPO), and
- where the engine has a continuous log archive (vaultflow.logarchive: PostgreSQL WAL, MongoDB
  oplog slices), the newest archived unit, dated by LogArchive.unit_time, when the archive runs
  without a gap from a restorable backup that reads it (LogArchive.continuity); from the newest
  backup itself, at least that backup's start (oplog times have whole seconds). A backup whose
  archive has a gap is still restorable by itself; its log does not move the point.

Judged at a moment `now` other than the clock's (`--as-of`): backups finished after it, log
units and check records dated after it are left out, as if not yet made; clock problems are
still judged by this host's real clock.

Check records (Repository.last_checks) are read through `checks_by_kind`, which accepts both the
older shape {backup id -> record with "kind"} and {backup id -> {kind -> record}}.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from vaultflow.engines import registry
from vaultflow.engines.settings import TargetSettings
from vaultflow.errors import ChainBrokenError
from vaultflow.logarchive import open_log_archive, unit_time
from vaultflow.manifest import BackupKind, Manifest
from vaultflow.repository import Catalog, Repository
from vaultflow.summary import human_duration, objective_duration

DEFAULT_RPO_HOURS: float = TargetSettings.model_fields["rpo_hours"].default
VERIFY_KINDS = ("verify", "quick-verify")
DRILL = "drill"
CHECK_KINDS = (DRILL, *VERIFY_KINDS)  # every kind of check Repository.record_check keeps
NEVER = "never backed up"


@dataclass(frozen=True)
class Objective:
    """A target's recovery point objective, `rpo_hours` (> 0), and where it came from
    (`source`: 'block postgres-target/prod', or 'default (no saved target block)')."""

    rpo_hours: float = DEFAULT_RPO_HOURS
    source: str = "default (no saved target block)"


@dataclass(frozen=True)
class Check:
    """One verify or drill record of a backup.

    kind: 'verify', 'quick-verify' or 'drill'; ok: its result was 'ok'; time: when (UTC; None
    when the record has no readable time); seconds / rto_objective_s: a drill's restore time and
    objective in seconds (None when the record predates them); ui_url: the run that checked."""

    backup_id: str
    kind: str
    ok: bool
    time: datetime | None
    detail: str = ""
    seconds: float | None = None
    rto_objective_s: float | None = None
    ui_url: str | None = None

    @property
    def rto_met(self) -> bool | None:
        """Whether the drill's restore took at most its objective; None when either is unknown."""
        if self.seconds is None or self.rto_objective_s is None:
            return None
        return self.seconds <= self.rto_objective_s

    def cell(self) -> str:
        """'ok 2026-11-29 04:00' / 'FAILED 2026-11-29 04:00' for a table."""
        when = self.time.strftime("%Y-%m-%d %H:%M") if self.time else "time unknown"
        return f"{'ok' if self.ok else 'FAILED'} {when}"


@dataclass(frozen=True)
class RestorePoint:
    """The newest moment a restore can reach: `time` (UTC), from backup `backup_id` (started
    then, or replayed on through the log archive `log_title` to unit `log_unit`)."""

    time: datetime
    backup_id: str
    log_unit: str | None = None
    log_title: str | None = None

    def describe(self) -> str:
        if self.log_unit is None:
            return f"backup {self.backup_id}"
        return f"{self.backup_id} + {self.log_title} to {self.log_unit}"


@dataclass(frozen=True)
class TargetStatus:
    """What `vaultflow status` shows of one target (`engine`/`target`) at `now`.

    last_full / last_incremental: the newest full and the newest incremental or differential
    backup (any, restorable or not); restorable: the newest restorable point (None: nothing is
    restorable); age_s: seconds from it to `now`; rpo_met: age_s <= objective.rpo_hours * 3600
    (False when nothing is restorable); last_verify / last_drill: the newest records of those
    kinds; notes: what was skipped and why (broken chains, failed verifies, clock problems,
    unreadable manifests); in_repository: False for a target known only from its saved block
    (never backed up into this repository).
    """

    engine: str
    target: str
    objective: Objective
    now: datetime
    last_full: Manifest | None = None
    last_incremental: Manifest | None = None
    restorable: RestorePoint | None = None
    last_verify: Check | None = None
    last_drill: Check | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    in_repository: bool = True

    @property
    def age_s(self) -> float | None:
        return None if self.restorable is None else (self.now - self.restorable.time).total_seconds()

    @property
    def rpo_met(self) -> bool:
        age = self.age_s
        return age is not None and age <= self.objective.rpo_hours * 3600.0

    def line(self) -> str:
        """One sentence: '<engine>/<target>: RPO met, newest restorable point 2 h 03 min old ...'."""
        where = f"{self.engine}/{self.target}"
        if self.restorable is None:
            return f"{where}: RPO MISSED, nothing restorable ({'; '.join(self.notes) or 'no backup'})"
        verdict = "RPO met" if self.rpo_met else "RPO MISSED"
        return (
            f"{where}: {verdict}, newest restorable point {human_duration(max(0.0, self.age_s or 0.0))} old "
            f"({self.restorable.describe()}), objective {self.objective.rpo_hours:g} h"
        )

    def row(self) -> dict[str, str]:
        """The table row, every cell text (CLI table and table artifact alike)."""
        drill = self.last_drill
        rto = ""
        if drill is not None and drill.seconds is not None:
            objective = f" / {objective_duration(drill.rto_objective_s)}" if drill.rto_objective_s is not None else ""
            met = "" if drill.rto_met is None else (" met" if drill.rto_met else ": RTO missed")
            rto = f"{human_duration(drill.seconds)}{objective}{met}"
        age = self.age_s
        return {
            "target": f"{self.engine}/{self.target}",
            "last full": _backup_cell(self.last_full),
            "last incremental": _backup_cell(self.last_incremental),
            "restorable point": (
                f"{self.restorable.time:%Y-%m-%d %H:%M} ({self.restorable.describe()})"
                if self.restorable
                else ("none" if self.in_repository else NEVER)
            ),
            "age": human_duration(max(0.0, age)) if age is not None else "",
            "RPO": f"{'met' if self.rpo_met else 'MISSED'} ({self.objective.rpo_hours:g} h, {self.objective.source})",
            "last verify": self.last_verify.cell() if self.last_verify else "never",
            "last drill": drill.cell() if drill else "never",
            "RTO": rto,
            "notes": "; ".join(self.notes),
        }


def _backup_cell(manifest: Manifest | None) -> str:
    return manifest.id if manifest is not None else "none"


# -- checks ----------------------------------------------------------------------------------
def checks_by_kind(records: Mapping[str, Any]) -> dict[str, dict[str, dict]]:
    """Repository.last_checks in either shape -> {backup id -> {kind -> record}}.

    Accepts {backup id -> one record with "kind"} (one check kept per backup) and {backup id ->
    {kind -> record}} (every kind kept); records that are not mappings are left out."""
    out: dict[str, dict[str, dict]] = {}
    for backup_id, value in records.items():
        if not isinstance(value, Mapping):
            continue
        if isinstance(value.get("kind"), str):
            out[backup_id] = {value["kind"]: dict(value)}
        else:
            out[backup_id] = {kind: dict(rec) for kind, rec in value.items() if isinstance(rec, Mapping)}
    return out


def check_time(text: Any) -> datetime | None:
    """A check record's ISO 8601 "time" as an aware datetime (UTC when it names no zone; whole
    seconds in older records, milliseconds now); None when it is missing or unreadable."""
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def last_check(records: Mapping[str, Any], kinds: Iterable[str], until: datetime | None = None) -> Check | None:
    """The newest check of any of `kinds` over every backup of `records` (either shape of
    Repository.last_checks); records without a readable time come last; records dated after
    `until` (UTC) are left out (not yet made then). None when there is none."""
    wanted = set(kinds)
    found = [
        Check(
            backup_id,
            kind,
            rec.get("result") == "ok",
            check_time(rec.get("time")),
            str(rec.get("detail") or ""),
            _number(rec.get("seconds")),
            _number(rec.get("rto_objective_s")),
            rec.get("ui_url") or None,
        )
        for backup_id, by_kind in checks_by_kind(records).items()
        for kind, rec in by_kind.items()
        if kind in wanted
    ]
    found = [c for c in found if until is None or c.time is None or c.time <= until]
    if not found:
        return None
    return max(found, key=lambda c: (c.time is not None, c.time or datetime.min.replace(tzinfo=UTC), c.backup_id))


# -- restorable point ------------------------------------------------------------------------
def verify_failures(catalog: Catalog, records: Mapping[str, Any], until: datetime | None = None) -> dict[str, str]:
    """Backup id -> why it does not restore by its checks: 'verify FAILED at 2026-11-30 06:00
    UTC' when the newest of its verify and quick-verify records (either shape of
    Repository.last_checks; none dated after `until`) is FAILED, '<id> in its chain: verify FAILED
    at ...' when a backup its chain includes failed so. A drill's failure (data or RTO) alone
    does not count; a chain that cannot be walked counts its own backup only ({} if none)."""
    failed = {}
    for backup_id, by_kind in checks_by_kind(records).items():
        newest = last_check({backup_id: by_kind}, VERIFY_KINDS, until)
        if newest is not None and not newest.ok:
            at = f"{newest.time:%Y-%m-%d %H:%M} UTC" if newest.time else "an unknown time"
            failed[backup_id] = f"{newest.kind} FAILED at {at}"
    if not failed:
        return {}
    out = {}
    for manifest in catalog.manifests:
        try:
            chain = catalog.chain(manifest)
        except ChainBrokenError:
            chain = [manifest]
        for link in reversed(chain):
            if link.id in failed:
                out[manifest.id] = failed[link.id] if link is manifest else f"{link.id} in its chain: {failed[link.id]}"
                break
    return out


def restorable_backups(
    catalog: Catalog,
    now: datetime,
    records: Mapping[str, Any] | None = None,
    clock: datetime | None = None,
) -> tuple[list[Manifest], list[str]]:
    """(backups a restore can start from at `now`, oldest first; notes on the ones left out): a
    backup counts when it finished by `now`, its chain is complete (Catalog.chain_problem, the one
    chain walk), it did not fail its verify (verify_failures over `records`, those dated by
    `now`) and its recorded time can be trusted (Catalog.clock_problems at `clock`, this host's
    real clock by default: never the what-if moment `now`)."""
    misdated = catalog.clock_problems(clock or datetime.now(UTC))
    unverified = verify_failures(catalog, records or {}, now)
    good, notes, later = [], [], 0
    for manifest in catalog.manifests:
        if manifest.id in misdated:
            notes.append(f"{manifest.id} not counted: {misdated[manifest.id]}")
            continue
        if manifest.finished_at > now:
            later += 1
            continue
        problem = catalog.chain_problem(manifest) or unverified.get(manifest.id)
        if problem:
            notes.append(f"{manifest.id} not restorable: {problem}")
            continue
        good.append(manifest)
    if later:
        notes.append(f"{later} backup(s) finished after {now:%Y-%m-%d %H:%M} UTC left out (not yet made then)")
    notes += [f"unreadable: {p.key}: {p.message}" for p in catalog.problems]
    return good, notes


def log_reach(
    repo: Repository, engine: str, target: str, restorable: list[Manifest], until: datetime | None = None
) -> RestorePoint | None:
    """How far the target's log archive carries a restore: the newest archived unit (dated by
    LogArchive.unit_time) when the archive is continuous from a restorable backup that reads it,
    as a RestorePoint from the newest such backup. None when the engine has no log archive, it is
    empty, no restorable backup reads it, every one meets a gap, or no unit can be dated (units
    dated after `until` are left out)."""
    archive = open_log_archive(engine, repo, target)
    if archive is None:
        return None
    units = archive.units()
    readers = [m for m in restorable if archive.log_start(m) is not None]
    if not units or not readers:
        return None
    continuous = {b.backup_id for b in archive.continuity(readers).backups if b.ok}
    base = next((m for m in reversed(readers) if m.id in continuous), None)
    if base is None:
        return None
    for name in reversed(units):
        when = unit_time(archive, name)
        if when is not None and (until is None or when <= until):
            return RestorePoint(when, base.id, name, archive.title)
    return None


def newest_restorable(
    repo: Repository,
    engine: str,
    target: str,
    catalog: Catalog,
    now: datetime,
    records: Mapping[str, Any] | None = None,
    clock: datetime | None = None,
) -> tuple[RestorePoint | None, list[str]]:
    """(the newest restorable point at `now`, or None; notes on backups left out), with the check
    `records` (Repository.last_checks) and clock problems judged at `clock` (default: this host's
    clock). See the module doc."""
    good, notes = restorable_backups(catalog, now, records, clock)
    if not good:
        return None, notes
    newest = max(good, key=lambda m: m.started_at)
    point = RestorePoint(newest.started_at, newest.id)
    reach = log_reach(repo, engine, target, good, now)
    if reach is not None and reach.backup_id == newest.id:
        # The archive runs on from the newest backup itself: its reach is at least that backup's
        # point (an oplog time has whole seconds only, and may read a little before it).
        point = RestorePoint(max(reach.time, newest.started_at), newest.id, reach.log_unit, reach.log_title)
    elif reach is not None and reach.time > point.time:
        point = reach
    return point, notes


# -- one target, every target ----------------------------------------------------------------
def utc_moment(now: datetime | None) -> datetime:
    """`now` as an aware UTC time (a naive one is taken as UTC); this host's clock when None."""
    if now is None:
        return datetime.now(UTC)
    return now if now.tzinfo else now.replace(tzinfo=UTC)


def target_status(
    repo: Repository, engine: str, target: str, objective: Objective | None = None, now: datetime | None = None
) -> TargetStatus:
    """The status of `engine`/`target` in `repo` at `now` (default: this host's clock; naive: UTC;
    another moment is a what-if: see the module doc) against `objective` (default: the default RPO). An engine this host does not know gives a
    status with nothing restorable and a note saying so (its chains cannot be judged here)."""
    now = utc_moment(now)
    objective = objective or Objective()
    if engine not in registry.names():
        return TargetStatus(
            engine, target, objective, now, notes=(f"engine {engine!r} is not known here: install its package",)
        )
    catalog = repo.catalog(engine, target)
    checks = repo.last_checks(engine, target)
    point, notes = newest_restorable(repo, engine, target, catalog, now, checks)
    made = [m for m in catalog.manifests if m.finished_at <= now]
    fulls = [m for m in made if m.kind == BackupKind.FULL]
    increments = [m for m in made if m.kind != BackupKind.FULL]
    return TargetStatus(
        engine,
        target,
        objective,
        now,
        last_full=fulls[-1] if fulls else None,
        last_incremental=increments[-1] if increments else None,
        restorable=point,
        last_verify=last_check(checks, VERIFY_KINDS, now),
        last_drill=last_check(checks, (DRILL,), now),
        notes=tuple(notes),
    )


def fleet_status(
    repo: Repository, objectives: Mapping[tuple[str, str], Objective] | None = None, now: datetime | None = None
) -> list[TargetStatus]:
    """target_status of every target the repository holds backups of (Repository.targets) and
    of every target in `objectives` ((engine, target) -> Objective, from saved target blocks; a
    target missing there gets the default) that it holds none of (a row 'never backed up', RPO
    missed), in (engine, target) order. NotFoundError for a local repository whose directory
    does not exist."""
    now = utc_moment(now)
    objectives = objectives or {}
    held = set(repo.targets())
    return [
        target_status(repo, e, t, objectives.get((e, t)), now)
        if (e, t) in held
        else TargetStatus(
            e,
            t,
            objectives[(e, t)],
            now,
            notes=(f"{NEVER}: this repository holds no backup of it",),
            in_repository=False,
        )
        for e, t in sorted(held | set(objectives))
    ]


def holds_backups(statuses: Iterable[TargetStatus]) -> bool:
    """Whether any target of `statuses` has backups in the repository (False for none)."""
    return any(s.in_repository for s in statuses)


def all_met(statuses: Iterable[TargetStatus]) -> bool:
    """Whether every target meets its RPO; False when the repository holds no backups at all (a
    wrong path or an unmounted volume is no green check)."""
    statuses = list(statuses)
    return holds_backups(statuses) and all(s.rpo_met for s in statuses)


def fleet_line(statuses: list[TargetStatus], repository: str = "the repository") -> str:
    """One line for a whole fleet: 'RPO met for 3 of 3 targets' or '... missed by pg/x, ...';
    led by '<repository> holds no backups: ...' when no target has a backup in it."""
    missed = [f"{s.engine}/{s.target}" for s in statuses if not s.rpo_met]
    met = len(statuses) - len(missed)
    line = f"RPO met for {met} of {len(statuses)} targets" if statuses else "no target to judge"
    line = f"{line}; missed by {', '.join(missed)}" if missed else line
    if not holds_backups(statuses):
        line = f"{repository} holds no backups: check the path (--repo-path) or the repository block; {line}"
    return line
