"""A pure, chain-aware grandfather-father-son retention planner.

`plan` decides, for every backup, whether retention keeps or deletes it, and says why.
It reads no clock and touches no store, so prune can show the plan (dry run) and act on
exactly what was shown, and the rules can be tested exhaustively.

Bucket rules follow restic/borg `forget`: walking from the newest backup, each rule keeps
the newest backup of each period until it has kept N distinct periods. Incremental and
differential backups are only restorable through their parents, so keeping one keeps
its whole chain back to the full, and a backup whose chain is broken is never counted as
a restore point: it is deleted, since nothing could ever restore it. Chains are walked by
vaultflow.chain (its generic rules only: an engine's rule alone never deletes a backup).

Clocks lie. A backup whose recorded time cannot be trusted (`clock_problems`: ahead of the
planning clock, ahead of or far behind the store's own timestamp of its manifest, an id after
its finish, a child older than its parent) is *held*: kept, never counted in a slot, so it
can neither push real backups out of their periods nor be deleted for being "old". It is
released (deleted) only once, by the store's clock, it is older than every backup retention
keeps.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from vaultflow.chain import faults as chain_faults
from vaultflow.chain import with_ancestors
from vaultflow.errors import RefusedError, VaultflowError
from vaultflow.manifest import BackupKind, parse_backup_id

_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "m": 30 * 86400, "y": 365 * 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(min|s|h|d|w|m|y)")
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?\s*(?:min|s|h|d|w|m|y)\s*)+")


def parse_duration(value: Any) -> Any:
    """Turn '7d', '36h', '2w', '1y' (365d), '1m' (30d), '1d12h' or seconds into a timedelta.

    Config files are written by people, who say "7d" rather than "P7D" or 604800.
    Anything else (timedelta, ISO 8601 'P7D') is left to pydantic.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if _DURATION.fullmatch(text):
        return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in _PART.findall(text)))
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return timedelta(seconds=float(text))
    if text.startswith("p") or ":" in text:
        return value
    raise ValueError(
        f"{value!r} is not a duration; write e.g. '7d', '36h', '2w', '1y' "
        "(s, min, h, d, w, m = 30d, y = 365d) or a number of seconds"
    )


def format_duration(td: timedelta) -> str:
    """The shortest exact 'Nd' / 'Nh' / 'Ns' form, for reasons people read."""
    seconds = td.total_seconds()
    for unit in ("d", "h"):
        if seconds % _UNITS[unit] == 0:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Count = Annotated[int | None, Field(ge=0)]

# Bucket rules in the order reasons are listed: (policy field, reason prefix, period key).
_BUCKETS: tuple[tuple[str, str, Callable[[datetime], str]], ...] = (
    ("keep_hourly", "hourly", lambda t: t.strftime("%Y-%m-%dT%H")),
    ("keep_daily", "daily", lambda t: t.strftime("%Y-%m-%d")),
    ("keep_weekly", "weekly", lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2])),
    ("keep_monthly", "monthly", lambda t: t.strftime("%Y-%m")),
    ("keep_yearly", "yearly", lambda t: t.strftime("%Y")),
)
DEFAULT_CLOCK_TOLERANCE = timedelta(minutes=5)
KEEPS_NOTHING = (
    "retention policy keeps nothing; set at least one of keep_last, keep_hourly, keep_daily, "
    "keep_weekly, keep_monthly, keep_yearly or keep_within"
)


class RetentionPolicy(BaseModel):
    """Which backups to keep. Several rules combine: a backup is kept if any rule keeps it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_last: Count = None
    keep_hourly: Count = None
    keep_daily: Count = None
    keep_weekly: Count = None
    keep_monthly: Count = None
    keep_yearly: Count = None
    keep_within: Duration | None = None
    orphan_grace: Duration = timedelta(hours=24)
    # How far two clocks (a worker's, the store's) may disagree before a backup's recorded
    # time is no longer believed: NTP keeps honest hosts within a second; a few minutes also
    # absorbs the time between a backup's finish and its manifest's write.
    clock_tolerance: Duration = DEFAULT_CLOCK_TOLERANCE

    @model_validator(mode="after")
    def _check(self) -> RetentionPolicy:
        # An empty policy would delete every backup but the newest: refuse it loudly
        # rather than let a typo in a config file wipe the history.
        if not self.keeps_something:
            raise ValueError(KEEPS_NOTHING)
        if min(self.orphan_grace, self.keep_within or timedelta(0), self.clock_tolerance) < timedelta(0):
            raise ValueError("keep_within, orphan_grace and clock_tolerance must not be negative")
        return self

    @property
    def keeps_something(self) -> bool:
        counts = [self.keep_last] + [getattr(self, field) for field, _, _ in _BUCKETS]
        return any(counts) or bool(self.keep_within)


@dataclass(frozen=True)
class BackupRef:
    """What the planner needs to know about one backup (a manifest, minus the payload)."""

    id: str
    kind: BackupKind
    parent_id: str | None  # incremental: previous backup of any kind; differential: last full
    finished_at: datetime  # tz-aware, as recorded by the worker that took the backup
    # The store's own timestamp of the manifest object (S3 LastModified, set by the server;
    # a local file's mtime): a second clock, independent of the worker's. None if unknown.
    stored_at: datetime | None = None

    @classmethod
    def from_manifest(cls, m: Any, stored_at: datetime | None = None) -> BackupRef:
        return cls(
            id=m.id, kind=BackupKind(m.kind), parent_id=m.parent_id, finished_at=m.finished_at, stored_at=stored_at
        )


@dataclass(frozen=True)
class Decision:
    keep: bool
    reasons: tuple[str, ...]


def _dedupe(backups: Sequence[BackupRef]) -> dict[str, BackupRef]:
    by_id: dict[str, BackupRef] = {}
    for ref in backups:
        if ref.finished_at.tzinfo is None or (ref.stored_at is not None and ref.stored_at.tzinfo is None):
            raise RefusedError(
                f"backup {ref.id}: finished_at {ref.finished_at} or stored_at {ref.stored_at} has no timezone"
            )
        if by_id.setdefault(ref.id, ref) != ref:
            raise RefusedError(f"backup id {ref.id} appears twice with different data; refusing to plan")
    return by_id


def span(td: timedelta) -> str:
    """'3h', '2h 58min', '12min', '40s': how far apart two clocks are, for people."""
    seconds = round(abs(td.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    hours, minutes = divmod(round(seconds / 60), 60)  # to the minute: clocks are off by minutes or hours
    if hours:
        return f"{hours}h" + (f" {minutes}min" if minutes else "")
    return f"{minutes}min"


def _utc(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_FIX = "fix that worker's clock (NTP)"


def _own_clock_problem(ref: BackupRef, now: datetime, tol: timedelta) -> str | None:
    """What is wrong with one backup's recorded times, judged alone (or None)."""
    fin, stored = ref.finished_at, ref.stored_at
    if stored is not None and fin - stored > tol:
        return (
            f"future-dated: it records finishing at {_utc(fin)}, {span(fin - stored)} after the store wrote "
            f"its manifest ({_utc(stored)}): the worker that took it ran {span(fin - stored)} fast; {_FIX}"
        )
    if fin - now > tol:
        if stored is not None and stored - now > tol:
            return (
                f"dated {span(fin - now)} ahead of this worker's clock ({_utc(now)}), and the store agrees "
                f"with the backup: the clock of the worker planning retention is probably "
                f"{span(fin - now)} slow; fix it (NTP)"
            )
        return (
            f"future-dated: it records finishing at {_utc(fin)}, {span(fin - now)} ahead of this "
            f"worker's clock ({_utc(now)}): the worker that took it ran fast; {_FIX}"
        )
    try:
        started, _ = parse_backup_id(ref.id)
    except VaultflowError:  # an id that is not a timestamp has no time to check
        started = None
    if started is not None and started - fin > tol:
        return (
            f"its id says it started at {_utc(started)}, {span(started - fin)} after it finished "
            f"({_utc(fin)}): the worker's clock jumped during the backup; {_FIX}"
        )
    return None


def clock_problems(
    backups: Sequence[BackupRef], now: datetime, tolerance: timedelta = DEFAULT_CLOCK_TOLERANCE
) -> dict[str, str]:
    """Backups whose recorded time cannot be trusted -> what is wrong and what to do.

    Judged against two clocks, each allowed to disagree by `tolerance`: `now` (the clock of
    the worker asking) and each manifest's `stored_at` (the store's clock). Kinds: dated ahead
    of `now` or of its own stored_at (a fast worker clock); recorded as finishing before a
    backup whose manifest the store wrote earlier (a slow worker clock); an id time after the
    finish; a child that finished before its parent (a slow clock, judged when the parent
    itself is believed). Backups with no problem are absent from the result. Pure; raises
    RefusedError for naive datetimes.
    """
    if now.tzinfo is None:
        raise RefusedError(f"now={now} has no timezone; clocks are compared in UTC")
    by_id = _dedupe(backups)
    problems = {rid: why for rid, ref in by_id.items() if (why := _own_clock_problem(ref, now, tolerance)) is not None}
    # A manifest stored long after another one, yet recording an earlier finish, came from a
    # slow clock. A manifest stored long after its own finish alone proves nothing: copying a
    # repository (cp -r, aws s3 sync) gives every object a new timestamp, in key order.
    believed = sorted(
        ((r.stored_at, r) for r in by_id.values() if r.stored_at is not None and r.id not in problems),
        key=lambda pair: (pair[0], pair[1].id),
    )
    newest_before: tuple[datetime, BackupRef] | None = None  # latest finish among those stored > tol earlier
    earlier = 0
    for stored_at, ref in believed:
        while earlier < len(believed) and stored_at - believed[earlier][0] > tolerance:
            if newest_before is None or believed[earlier][1].finished_at > newest_before[1].finished_at:
                newest_before = believed[earlier]
            earlier += 1
        if newest_before is not None and newest_before[1].finished_at - ref.finished_at > tolerance:
            witness_stored, witness = newest_before
            problems[ref.id] = (
                f"past-dated: it records finishing at {_utc(ref.finished_at)}, "
                f"{span(witness.finished_at - ref.finished_at)} before {witness.id}, whose manifest the store "
                f"wrote {span(stored_at - witness_stored)} earlier (at {_utc(witness_stored)}): the worker "
                f"that took it ran slow; {_FIX}"
            )
    for rid, ref in by_id.items():
        parent = by_id.get(ref.parent_id) if ref.parent_id else None
        if rid in problems or parent is None or parent.id in problems:
            continue
        if parent.finished_at - ref.finished_at > tolerance:
            problems[rid] = (
                f"past-dated: it records finishing at {_utc(ref.finished_at)}, "
                f"{span(parent.finished_at - ref.finished_at)} before its parent {parent.id} "
                f"finished: the worker that took it ran slow; {_FIX}"
            )
    return problems


def plan(backups: Sequence[BackupRef], policy: RetentionPolicy, now: datetime) -> dict[str, Decision]:
    """Decide keep/delete, with reasons, for every backup; input order does not matter.

    Backups with a clock problem (`clock_problems`, judged with policy.clock_tolerance) are
    held: kept, counted in no rule, until older than every backup kept otherwise. Raises
    RefusedError for a policy that keeps nothing (e.g. built with model_construct), naive
    datetimes, or one id given twice with different data.
    """
    if not policy.keeps_something:
        raise RefusedError(KEEPS_NOTHING)
    if now.tzinfo is None:
        raise RefusedError(f"now={now} has no timezone; retention periods are computed in UTC")
    by_id = _dedupe(backups)
    faults = {rid: fault.reason() if fault else None for rid, fault in chain_faults(by_id.values()).items()}
    misdated = clock_problems(list(by_id.values()), now, policy.clock_tolerance)
    # Newest first; ids break ties so the result never depends on input order.
    intact = sorted(
        (r for r in by_id.values() if faults[r.id] is None), key=lambda r: (r.finished_at, r.id), reverse=True
    )
    restorable = [r for r in intact if r.id not in misdated]  # the only ones that take slots
    reasons: dict[str, list[str]] = {r.id: [] for r in intact}

    if restorable:  # never delete the newest point we could restore from
        reasons[restorable[0].id].append("newest restorable backup")
    if policy.keep_within:
        cutoff = now - policy.keep_within
        for r in restorable:
            if r.finished_at >= cutoff:
                reasons[r.id].append(f"within {format_duration(policy.keep_within)}")
    for r in restorable[: policy.keep_last or 0]:
        reasons[r.id].append(f"last {policy.keep_last}")
    for field, label, period_of in _BUCKETS:
        left: int = getattr(policy, field) or 0
        last_period = None
        for r in restorable:
            if left <= 0:
                break
            period = period_of(r.finished_at.astimezone(UTC))
            if period != last_period:  # the first seen in a period is its newest
                reasons[r.id].append(f"{label} {period}")
                last_period = period
                left -= 1

    kept = with_ancestors({rid for rid, why in reasons.items() if why}, by_id)
    # A misdated backup is held until every clock says it is older than all that is kept.
    oldest_kept = min((by_id[k].finished_at for k in kept if k not in misdated), default=None)
    released: set[str] = set()
    for rid in sorted(set(misdated) & set(reasons)):
        ref = by_id[rid]
        parent = by_id.get(ref.parent_id) if ref.parent_id else None
        witness = max(t for t in (ref.finished_at, ref.stored_at, parent and parent.finished_at) if t)
        if oldest_kept is not None and witness < oldest_kept:
            released.add(rid)
        else:
            reasons[rid].insert(0, f"held out of retention (takes no slot): {misdated[rid]}")
    kept = with_ancestors(kept | {rid for rid in misdated if rid in reasons and rid not in released}, by_id)
    for r in reversed(intact):  # oldest child first: a stable order of reasons
        if r.id in kept and r.kind is not BackupKind.FULL:
            assert r.parent_id is not None
            reasons[r.parent_id].append(f"parent of {r.id}")

    decisions: dict[str, Decision] = {}
    for rid in sorted(by_id):
        fault = faults[rid]
        if fault is not None:
            decisions[rid] = Decision(keep=False, reasons=(fault,))
        elif rid in kept:
            decisions[rid] = Decision(keep=True, reasons=tuple(reasons[rid]))
        elif rid in released:
            decisions[rid] = Decision(
                keep=False,
                reasons=(f"{misdated[rid]}; released: older, by every clock, than every backup retention keeps",),
            )
        else:
            decisions[rid] = Decision(keep=False, reasons=("no rule keeps it",))
    return decisions


def summarize(decisions: Mapping[str, Decision]) -> tuple[list[str], list[str]]:
    """(kept ids, deleted ids), both sorted, for logs and dry-run output."""
    kept = sorted(rid for rid, d in decisions.items() if d.keep)
    deleted = sorted(rid for rid, d in decisions.items() if not d.keep)
    return kept, deleted
