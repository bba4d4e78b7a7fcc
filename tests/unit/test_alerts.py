"""vaultflow.alerts: the alert rules per target and apply's plan (pure, no Prefect)."""

from __future__ import annotations

import pytest

from vaultflow.alerts import (
    ARCHIVE_LAGGING,
    BACKUP_COMPLETED,
    MANAGED_TAG,
    AlertTarget,
    plan_apply,
    rules_for,
    target_resource_id,
)
from vaultflow.errors import ConfigError


def test_rules_per_target():
    rules = {r.kind: r for r in rules_for(AlertTarget("postgres", "prod", 26.0, archives_logs=True))}
    assert set(rules) == {"backup-overdue", "drill-failed", "verify-failed", "archive-lagging"}
    overdue = rules["backup-overdue"]
    assert overdue.posture == "Proactive" and overdue.event == BACKUP_COMPLETED
    assert overdue.within_seconds == 26 * 3600 and overdue.resource_role == "target"
    assert overdue.resource_id == target_resource_id("postgres", "prod") == "vaultflow.target.postgres.prod"
    assert rules["archive-lagging"].event == ARCHIVE_LAGGING and rules["archive-lagging"].resource_role == ""
    assert all(MANAGED_TAG in r.tags and r.name.startswith("vaultflow postgres/prod: ") for r in rules.values())
    assert "archive-lagging" not in {r.kind for r in rules_for(AlertTarget("redis", "cache", 26.0))}
    with pytest.raises(ConfigError, match="rpo_hours must be > 0"):
        rules_for(AlertTarget("redis", "cache", 0))


def test_plan_updates_by_name_deletes_the_rest_and_extra_copies():
    rules = rules_for(AlertTarget("redis", "a", 1.0)) + rules_for(AlertTarget("redis", "b", 1.0))
    existing = [("1", "vaultflow redis/a: drill-failed"), ("2", "vaultflow redis/a: drill-failed")]
    existing += [("3", "vaultflow redis/gone: drill-failed")]
    plan = plan_apply(rules, existing)
    assert [(r.name, i) for r, i in plan.update] == [("vaultflow redis/a: drill-failed", "1")]
    assert plan.delete == [("2", "vaultflow redis/a: drill-failed"), ("3", "vaultflow redis/gone: drill-failed")]
    assert len(plan.create) == len(rules) - 1
    assert plan_apply(rules, [(str(n), r.name) for n, r in enumerate(rules)]).create == []


def test_two_targets_with_one_name_are_refused():
    rules = rules_for(AlertTarget("redis", "a", 1.0)) * 2
    with pytest.raises(ConfigError, match="distinct target_name"):
        plan_apply(rules, [])
