"""A pure, chain-aware grandfather-father-son retention planner.

`plan` decides, for every backup, whether retention keeps or deletes it, and says why.
It reads no clock and touches no store, so prune can show the plan (dry run) and act on
exactly what was shown, and the rules can be tested exhaustively.

Bucket rules follow restic/borg `forget`: walking from the newest backup, each rule keeps
the newest backup of each period until it has kept N distinct periods. Incremental and
differential backups are only restorable through their parents, so keeping one keeps
its whole chain back to the full, and a backup whose chain is broken is never counted as
a restore point: it is deleted, since nothing could ever restore it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Callable

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from vaultflow.errors import RefusedError
from vaultflow.manifest import BackupKind

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
    ("keep_weekly", "weekly", lambda t: "{0}-W{1:02d}".format(*t.isocalendar())),
    ("keep_monthly", "monthly", lambda t: t.strftime("%Y-%m")),
    ("keep_yearly", "yearly", lambda t: t.strftime("%Y")),
)
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

    @model_validator(mode="after")
    def _check(self) -> RetentionPolicy:
        # An empty policy would delete every backup but the newest: refuse it loudly
        # rather than let a typo in a config file wipe the history.
        if not self.keeps_something:
            raise ValueError(KEEPS_NOTHING)
        if self.orphan_grace < timedelta(0) or (self.keep_within or timedelta(0)) < timedelta(0):
            raise ValueError("keep_within and orphan_grace must not be negative")
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
    finished_at: datetime  # tz-aware

    @classmethod
    def from_manifest(cls, m: Any) -> BackupRef:
        return cls(id=m.id, kind=BackupKind(m.kind), parent_id=m.parent_id, finished_at=m.finished_at)


@dataclass(frozen=True)
class Decision:
    keep: bool
    reasons: tuple[str, ...]


def _chain_faults(by_id: Mapping[str, BackupRef]) -> dict[str, str | None]:
    """Map each id to None if its chain reaches a full backup, else why it cannot restore."""
    faults: dict[str, str | None] = {}
    for start in sorted(by_id):
        path: list[str] = []
        on_path: set[str] = set()
        cur = start
        while cur not in faults:  # walk up until the verdict for `cur` is known
            if cur in on_path:
                for node in path:
                    faults[node] = f"chain broken: parent chain of {node} loops back to {cur}"
                break
            ref = by_id[cur]
            if ref.kind is BackupKind.FULL:
                faults[cur] = None
            elif ref.parent_id is None:
                faults[cur] = f"chain broken: {ref.kind.value} backup has no parent"
            elif ref.parent_id not in by_id:
                faults[cur] = f"chain broken: parent {ref.parent_id} is missing"
            else:
                path.append(cur)
                on_path.add(cur)
                cur = ref.parent_id
        for node in reversed(path):  # each node's parent has its verdict by now
            if node not in faults:
                parent = by_id[node].parent_id
                assert parent is not None
                faults[node] = None if faults[parent] is None else f"chain broken: parent {parent} is broken"
    return faults


def _dedupe(backups: Sequence[BackupRef]) -> dict[str, BackupRef]:
    by_id: dict[str, BackupRef] = {}
    for ref in backups:
        if ref.finished_at.tzinfo is None:
            raise RefusedError(f"backup {ref.id}: finished_at {ref.finished_at} has no timezone")
        if by_id.setdefault(ref.id, ref) != ref:
            raise RefusedError(f"backup id {ref.id} appears twice with different data; refusing to plan")
    return by_id


def plan(backups: Sequence[BackupRef], policy: RetentionPolicy, now: datetime) -> dict[str, Decision]:
    """Decide keep/delete, with reasons, for every backup; input order does not matter.

    Raises RefusedError for a policy that keeps nothing (e.g. built with model_construct),
    naive datetimes, or one id given twice with different data.
    """
    if not policy.keeps_something:
        raise RefusedError(KEEPS_NOTHING)
    if now.tzinfo is None:
        raise RefusedError(f"now={now} has no timezone; retention periods are computed in UTC")
    by_id = _dedupe(backups)
    faults = _chain_faults(by_id)
    # Newest first; ids break ties so the result never depends on input order.
    restorable = sorted(
        (r for r in by_id.values() if faults[r.id] is None),
        key=lambda r: (r.finished_at, r.id),
        reverse=True,
    )
    reasons: dict[str, list[str]] = {r.id: [] for r in restorable}

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
            period = period_of(r.finished_at.astimezone(timezone.utc))
            if period != last_period:  # the first seen in a period is its newest
                reasons[r.id].append(f"{label} {period}")
                last_period = period
                left -= 1

    # A kept incremental/differential is useless without its ancestors: keep them too.
    kept = {rid for rid, why in reasons.items() if why}
    for rid in list(kept):
        ref = by_id[rid]
        while ref.kind is not BackupKind.FULL and ref.parent_id not in kept:
            assert ref.parent_id is not None
            kept.add(ref.parent_id)
            ref = by_id[ref.parent_id]
    for r in reversed(restorable):  # oldest child first: a stable order of reasons
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
        else:
            decisions[rid] = Decision(keep=False, reasons=("no rule keeps it",))
    return decisions


def summarize(decisions: Mapping[str, Decision]) -> tuple[list[str], list[str]]:
    """(kept ids, deleted ids), both sorted, for logs and dry-run output."""
    kept = sorted(rid for rid, d in decisions.items() if d.keep)
    deleted = sorted(rid for rid, d in decisions.items() if not d.keep)
    return kept, deleted
