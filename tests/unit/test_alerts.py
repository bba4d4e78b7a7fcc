"""vaultflow.alerts: the alert rules per target and apply's plan (pure, no Prefect)."""

from __future__ import annotations

import pytest

from vaultflow.alerts import (
    ARCHIVE_LAGGING,
    BACKUP_COMPLETED,
    MANAGED_TAG,
    AlertTarget,
    lag_payload,
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


def test_a_star_in_a_target_name_is_no_wildcard():
    """Target 'sal*' must not catch the events of 'sales': '*' (and '%') are encoded in the id,
    and Prefect's own trigger matching (as the server evaluates it) agrees."""
    from uuid import uuid4

    from prefect.server.events.schemas.automations import EventTrigger as ServerTrigger
    from prefect.server.events.schemas.events import RelatedResource, Resource

    from vaultflow.deployments.automations import automation_for

    assert target_resource_id("postgres", "sal*") == "vaultflow.target.postgres.sal%2A"
    assert target_resource_id("postgres", "sal%2A") == "vaultflow.target.postgres.sal%252A"
    assert target_resource_id("postgres", "sales") == "vaultflow.target.postgres.sales"

    def fires(rule_target: str, event_target: str, kind: str) -> bool:
        rule = next(r for r in rules_for(AlertTarget("postgres", rule_target, 1.0)) if r.kind == kind)
        trigger = ServerTrigger.model_validate(automation_for(rule, uuid4()).trigger.model_dump(mode="json"))
        target = {"prefect.resource.id": target_resource_id("postgres", event_target)}
        related = [RelatedResource.model_validate({**target, "prefect.resource.role": "target"})]
        if kind == "backup-overdue":  # the target is the backup event's related resource
            resource = Resource.model_validate({"prefect.resource.id": "vaultflow.backup.postgres.x.1"})
            return trigger.covers_resources(resource, related)
        return trigger.covers_resources(Resource.model_validate(target), [])

    for kind in ("verify-failed", "drill-failed", "backup-overdue"):
        assert fires("sales", "sales", kind) and fires("sal*", "sal*", kind), kind
        assert not fires("sal*", "sales", kind), f"{kind} of sal* fired on an event of sales"
        assert not fires("sales", "sal*", kind), kind


def test_alert_wording_singular_and_human_units():
    """The notification text as Prefect renders it: '1 unit', '1 problem', ages in words."""
    from prefect.server.utilities.user_templates import _sync_template_environment  # what the server renders with

    rules = {r.kind: r for r in rules_for(AlertTarget("postgres", "prod", 26.0, archives_logs=True))}

    def body(kind: str, payload: dict) -> str:
        return _sync_template_environment.from_string(rules[kind].body).render(event={"payload": payload})

    lag = lag_payload("wal", lag_units=1, lag_seconds=7214.0, threshold_seconds=0.0)
    text = body("archive-lagging", lag)
    assert "1 unit waiting, the oldest 2 h 00 min old (alert above 0 s)" in text, text
    assert "3 units waiting" in body("archive-lagging", {**lag, "lag_units": 3})
    problem = {"problems": ["x"], "count": 1, "deep": True}
    assert "verify found 1 problem in" in body("verify-failed", problem)
    assert "verify found 2 problems in" in body("verify-failed", {**problem, "count": 2})
