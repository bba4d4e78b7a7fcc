"""Alerting as code: the events vaultflow emits for alerts, and the automations that watch them.

Prefect-free: this module says WHAT to watch, as plain data (AlertRule); deployments/automations.py
turns each rule into a Prefect automation and applies the set (`vaultflow automations apply`).

Events an alert reads (every one names its target: `vaultflow.target.<engine>.<name>`, the
event's primary resource or a related resource in the role "target"):

    vaultflow.backup.completed   a backup was committed (full, incremental or differential).
                                 resource: the backup; related: target, parent. payload:
                                 stored_size, raw_size (bytes), fell_back_to_full (why, if so).
    vaultflow.drill.failed       a restore drill failed: tables differ, the RTO was missed, or the
                                 drill could not restore at all. resource: the target; related:
                                 the backup when known. payload: backup_id, reason, seconds,
                                 rto_objective_s, mismatched (["db.table", ...]).
    vaultflow.verify.failed      verify found a target's backups or log archive corrupt, missing,
                                 unreadable or with gaps. resource: the target. payload: problems
                                 (the first 20 lines), count, deep.
    vaultflow.archive.lagging    after an archive-logs run, the oldest log unit still waiting is
                                 older than the target's archive_lag_alert_minutes. resource: the
                                 target. payload: stream (wal, oplog...), lag_units, lag_seconds,
                                 threshold_seconds, lag_age and threshold (the same two in
                                 words: '2 h 00 min'), error (when the run failed).

The automations, per target (AlertRule.kind):

    backup-overdue   proactive: no vaultflow.backup.completed for the target within rpo_hours
                     of the last one (or of `apply`, for a target never backed up since);
                     repeats at most about once per rpo_hours (as Prefect evaluates it)
                     until a backup completes.
    drill-failed     reactive: a vaultflow.drill.failed event for the target.
    verify-failed    reactive: a vaultflow.verify.failed event for the target.
    archive-lagging  reactive: a vaultflow.archive.lagging event for the target.

Automations vaultflow made carry the tag MANAGED_TAG and a name starting "vaultflow "; apply
keeps exactly the set it computes (by name: creates what is missing, updates what changed, leaves
unchanged ones untouched so their proactive windows keep running, deletes the rest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vaultflow.errors import ConfigError
from vaultflow.summary import human_age

BACKUP_COMPLETED = "vaultflow.backup.completed"
DRILL_FAILED = "vaultflow.drill.failed"
VERIFY_FAILED = "vaultflow.verify.failed"
ARCHIVE_LAGGING = "vaultflow.archive.lagging"

MANAGED_TAG = "vaultflow-alerts"
NAME_PREFIX = "vaultflow "

# Archive lag above which archive-logs emits vaultflow.archive.lagging (target setting
# archive_lag_alert_minutes): an archive-logs deployment runs every minute to ten minutes, so
# half an hour of waiting WAL/oplog means shipping stopped or cannot keep up.
DEFAULT_ARCHIVE_LAG_MINUTES = 30.0


def target_resource_id(engine: str, target: str) -> str:
    """The Prefect resource id naming a target in every vaultflow event and automation matcher:
    'vaultflow.target.<engine>.<name>', with '%' written '%25' and '*' written '%2A' in the name.
    A trailing '*' in a resource filter is Prefect's wildcard: target 'sal*' must not match the
    events of 'sales'. Encoding '%' too keeps the id reversible ('a%2A' and 'a*' stay distinct)."""
    name = target.replace("%", "%25").replace("*", "%2A")
    return f"vaultflow.target.{engine}.{name}"


def lag_payload(
    stream: str, lag_units: int, lag_seconds: float, threshold_seconds: float, error: str | None = None
) -> dict:
    """The payload of vaultflow.archive.lagging: the figures (seconds) and, for the notification,
    the same ages in words (lag_age, threshold: '2 h 00 min'); `error` when the run failed."""
    payload = {
        "stream": stream,
        "lag_units": lag_units,
        "lag_seconds": lag_seconds,
        "threshold_seconds": threshold_seconds,
        "lag_age": human_age(lag_seconds),
        "threshold": human_age(threshold_seconds),
    }
    if error:
        payload["error"] = error
    return payload


@dataclass(frozen=True)
class AlertTarget:
    """A target to alert on: engine and target name as in the repository, its recovery point
    objective in hours (> 0) and whether it ships a continuous log (archive-lagging applies)."""

    engine: str
    name: str
    rpo_hours: float
    archives_logs: bool = False

    @property
    def label(self) -> str:
        return f"{self.engine}/{self.name}"


@dataclass(frozen=True)
class AlertRule:
    """One automation as data. `posture`: Proactive fires when `event` does NOT arrive within
    `within_seconds` (of the last one: the same event also starts the window); Reactive fires on
    each `event`. `resource_role`: "target" when the target is a related resource of the event,
    "" when it is the event's primary resource. `subject`/`body` are the notification's text,
    Jinja templates Prefect renders with `event` (the triggering event, absent for a proactive
    firing) and `automation`."""

    kind: str
    target: AlertTarget
    posture: Literal["Proactive", "Reactive"]
    event: str
    within_seconds: float
    resource_role: str
    subject: str
    body: str
    description: str
    tags: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        """The automation's name, stable across applies (the key apply updates by)."""
        return f"{NAME_PREFIX}{self.target.label}: {self.kind}"

    @property
    def resource_id(self) -> str:
        return target_resource_id(self.target.engine, self.target.name)


def _counted(count: str, noun: str) -> str:
    """Jinja for '<count> <noun>', singular for one: `count` is a Jinja expression ('1 unit', '2 units')."""
    return f"{{{{ {count} }}}} {noun}{{{{ '' if {count} == 1 else 's' }}}}"


def _hours(hours: float) -> str:
    return f"{hours:g} h" if hours >= 1 else f"{hours * 3600:g} s"


def _reactive(kind: str, target: AlertTarget, event: str, subject: str, body: str, description: str) -> AlertRule:
    """A rule that fires on each `event` whose primary resource is `target`."""
    tags = (MANAGED_TAG, f"vaultflow-target:{target.label}")
    return AlertRule(kind, target, "Reactive", event, 0, "", subject, body, description, tags)


def rules_for(target: AlertTarget) -> list[AlertRule]:
    """The alert rules of one target: backup-overdue, drill-failed, verify-failed, and
    archive-lagging when the target ships a continuous log. Raises ConfigError for rpo_hours <= 0."""
    if target.rpo_hours <= 0:
        raise ConfigError(f"{target.label}: rpo_hours must be > 0, got {target.rpo_hours}")
    label, rpo = target.label, _hours(target.rpo_hours)
    details = "{{ event.payload | tojson }}"  # the event's whole payload, whatever its fields
    rules = [
        AlertRule(
            kind="backup-overdue",
            target=target,
            posture="Proactive",
            event=BACKUP_COMPLETED,
            within_seconds=target.rpo_hours * 3600,
            resource_role="target",
            subject=f"vaultflow: no backup of {label} for {rpo} (RPO missed)",
            body=(
                f"No backup of {label} completed within its recovery point objective ({rpo}). "
                "Check its backup deployments' last runs and the work pool's worker "
                "(docs/operations.md, Alerts: backup-overdue)."
            ),
            description=f"No vaultflow.backup.completed event for {label} within rpo_hours ({rpo}).",
            tags=(MANAGED_TAG, f"vaultflow-target:{label}"),
        ),
        _reactive(
            "drill-failed",
            target,
            DRILL_FAILED,
            f"vaultflow: restore drill of {label} failed",
            f"The restore drill of {label} failed: {{{{ event.payload.reason }}}}. "
            f"(docs/operations.md, Alerts: drill-failed). Event: {details}",
            f"A restore drill of {label} failed (tables differ, RTO missed, or no restore).",
        ),
        _reactive(
            "verify-failed",
            target,
            VERIFY_FAILED,
            f"vaultflow: verify found problems in the backups of {label}",
            f"verify found {_counted('event.payload.count', 'problem')} in the backups of {label}: "
            "{{ event.payload.problems | join('; ') }} (docs/operations.md, Alerts: verify-failed).",
            f"verify found corrupt, missing or unreadable backups (or log gaps) of {label}.",
        ),
    ]
    if target.archives_logs:
        rules.append(
            _reactive(
                "archive-lagging",
                target,
                ARCHIVE_LAGGING,
                f"vaultflow: log archiving of {label} is behind",
                f"The {{{{ event.payload.stream }}}} archive of {label} lags: "
                f"{_counted('event.payload.lag_units', 'unit')} waiting, the oldest "
                "{{ event.payload.lag_age }} old (alert above {{ event.payload.threshold }}). "
                "(docs/operations.md, Alerts: archive-lagging). Event: " + details,
                f"Archive lag of {label} above its archive_lag_alert_minutes.",
            )
        )
    return rules


@dataclass(frozen=True)
class ApplyPlan:
    """What apply does: rule names to create, (name, existing id) to update, ids to delete
    (managed automations no rule names any more, and extra copies of one name)."""

    create: list[AlertRule]
    update: list[tuple[AlertRule, str]]
    delete: list[tuple[str, str]]


def plan_apply(rules: list[AlertRule], existing: list[tuple[str, str]]) -> ApplyPlan:
    """Diff the wanted `rules` against the managed automations that exist, as (id, name) pairs:
    one automation per rule name, updated in place when it exists (the first of several copies
    kept, the rest deleted); managed automations whose name no rule has are deleted.
    Raises ConfigError when two rules share a name (two targets of one engine and name)."""
    wanted = {}
    for rule in rules:
        if rule.name in wanted:
            raise ConfigError(f"two alert rules are named {rule.name!r}: give the targets distinct target_name")
        wanted[rule.name] = rule
    kept: dict[str, str] = {}
    delete: list[tuple[str, str]] = []
    for automation_id, name in existing:
        if name in wanted and name not in kept:
            kept[name] = automation_id
        else:
            delete.append((automation_id, name))
    return ApplyPlan(
        create=[rule for name, rule in wanted.items() if name not in kept],
        update=[(rule, kept[name]) for name, rule in wanted.items() if name in kept],
        delete=delete,
    )
