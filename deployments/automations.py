"""The Prefect side of vaultflow's alerts: vaultflow.alerts' rules as Prefect automations.

    apply(notify, repository=None)  -> ApplyReport: the automations now match the targets
    managed()                       -> [(id, name)] of the automations vaultflow made
    remove_all()                    -> how many were deleted

Targets come from the Prefect API's saved target blocks (every registered kind: their
rpo_hours, and whether they archive a log), plus, with a repository, every target that has
backups there but no saved block (default settings). `notify` names the notification block the
automations' send-notification actions use: 'slack-webhook/oncall', 'custom-webhook/pager',
'sendgrid-email/dba', ... any block with Prefect's `notify` capability.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.automations import AutomationCore, EventTrigger, Posture, SendNotification
from prefect.events.filters import AutomationFilter, AutomationFilterTags
from prefect.events.schemas.automations import Automation
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from pydantic import ValidationError

from vaultflow.alerts import MANAGED_TAG, AlertRule, AlertTarget, plan_apply, rules_for
from vaultflow.blocks.registry import TargetBlock, target_types
from vaultflow.engines.settings import ARCHIVE_LOGS, TargetSettings
from vaultflow.errors import ConfigError, NotFoundError


@dataclass(frozen=True)
class ApplyReport:
    """Automation names created, updated, left unchanged (their definition already as wanted:
    not touched, so a proactive alert's clock keeps running) and deleted by one apply."""

    created: list[str]
    updated: list[str]
    unchanged: list[str]
    deleted: list[str]


def alert_target(block: TargetBlock) -> AlertTarget:
    """A saved target block as the alert target it is: its rpo_hours, and archive-lagging when
    it can archive its log (a spool given at run time counts: a deployment may pass spool_dir)."""
    ships_logs = block.misfit(ARCHIVE_LOGS, {"spool_dir": "(deployment parameter)"}) is None
    return AlertTarget(block.engine_name, block.name, block.rpo_hours, archives_logs=ships_logs)


def saved_targets() -> list[AlertTarget]:
    """Every target block saved on the Prefect API, of every registered target kind. Raises
    ConfigError naming a saved target block that cannot be loaded."""
    found = []
    with get_client(sync_client=True) as client:
        for slug, block_class in target_types().items():
            try:
                documents = client.read_block_documents_by_type(slug)
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 404:
                    raise
                continue  # this kind's block type was never registered on this API: no blocks
            for name in [doc.name for doc in documents if doc.name and not doc.is_anonymous]:
                try:
                    block = block_class.load(name)
                except (ValueError, TypeError, RuntimeError) as exc:  # invalid data, or an older schema
                    raise ConfigError(
                        f"target block {slug}/{name} cannot be loaded ({_why(exc)}): fix or delete it"
                    ) from exc
                found.append(alert_target(block))
    return found


def _why(exc: BaseException) -> str:
    """Why a block did not load, in one line: each invalid field and the reason
    ('rpo_hours: Input should be greater than 0'), from the pydantic error Prefect wraps in a
    RuntimeError; else the error's own first line."""
    cause = exc if isinstance(exc, ValidationError) else exc.__cause__
    if isinstance(cause, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'block'}: {e['msg']}" for e in cause.errors())
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def targets_to_watch(repository: Any | None = None) -> list[AlertTarget]:
    """The saved targets, plus with `repository` (a vaultflow Repository) its targets that
    have no saved block (default rpo_hours). In (engine, name) order."""
    targets = {(t.engine, t.name): t for t in saved_targets()}
    if repository is not None:
        default_rpo = TargetSettings.model_fields["rpo_hours"].default
        for engine, name in repository.targets():
            targets.setdefault((engine, name), AlertTarget(engine, name, default_rpo))
    return [targets[key] for key in sorted(targets)]


def notification_block_id(ref: str) -> UUID:
    """The block document id of notification block `ref` ('slack-webhook/oncall').
    Raises ConfigError for a malformed ref or a block without Prefect's notify capability,
    NotFoundError when there is no such block."""
    slug, _, name = ref.partition("/")
    if not slug or not name:
        raise ConfigError(
            f"--notify {ref!r}: give the notification block as TYPE/NAME, e.g. slack-webhook/oncall "
            "(`prefect block ls` lists them)"
        )
    with get_client(sync_client=True) as client:
        try:
            document = client.read_block_document_by_name(name, slug)
        except ObjectNotFound:
            raise NotFoundError(
                f"no block {ref!r} on this Prefect API: create a notification block (Slack webhook, "
                "custom webhook, email...) in the UI or code, then check the name with `prefect block ls`"
            ) from None
    capabilities = document.block_schema.capabilities if document.block_schema else []
    if "notify" not in capabilities:
        raise ConfigError(
            f"block {ref!r} cannot send notifications (capabilities: {', '.join(capabilities) or 'none'}): "
            "choose a notification block such as slack-webhook, custom-webhook or sendgrid-email"
        )
    assert document.id is not None
    return document.id


def automation_for(rule: AlertRule, block_document_id: UUID) -> AutomationCore:
    """The Prefect automation of one rule: its event trigger on the rule's target, and a
    send-notification action through the chosen block."""
    target = {"prefect.resource.id": rule.resource_id}
    if rule.resource_role:
        match: dict[str, str] = {}
        match_related = {**target, "prefect.resource.role": rule.resource_role}
    else:
        match, match_related = target, {}
    proactive = rule.posture == "Proactive"
    trigger = EventTrigger(
        expect={rule.event},
        # Proactive: each event also starts the next window, so it fires `within` after the last one.
        after={rule.event} if proactive else set(),
        match=match,
        match_related=match_related,
        posture=Posture.Proactive if proactive else Posture.Reactive,
        threshold=1,
        within=timedelta(seconds=rule.within_seconds),
    )
    return AutomationCore(
        name=rule.name,
        description=rule.description,
        tags=list(rule.tags),
        trigger=trigger,
        actions=[SendNotification(block_document_id=block_document_id, subject=rule.subject, body=rule.body)],
    )


PAGE = 200  # automations read per request (the API's default limit)


def _managed_automations() -> list[Automation]:
    """Every automation vaultflow made (tagged MANAGED_TAG), by name, read page by page (a fleet
    has several per target)."""
    tagged = AutomationFilter(tags=AutomationFilterTags(all_=[MANAGED_TAG]))
    found: list[Automation] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_automations(automations=tagged, limit=PAGE, offset=len(found))
            found += page
            if len(page) < PAGE:
                break
    return sorted(found, key=lambda automation: automation.name)


def managed() -> list[tuple[str, str]]:
    """(id, name) of every automation vaultflow made (tagged MANAGED_TAG), by name."""
    return [(str(a.id), a.name) for a in _managed_automations()]


def definition(automation: AutomationCore) -> dict[str, Any]:
    """What an automation does, as JSON data without what the server sets (its id, created and
    updated times; the client's models drop the trigger's server-made id): equal for the
    automation apply wants and the one the API holds when nothing changed."""
    return automation.model_dump(mode="json", include=set(AutomationCore.model_fields))


def apply(notify: str, repository: Any | None = None) -> ApplyReport:
    """Make the managed automations exactly the rules of the targets to watch (targets_to_watch),
    each notifying through block `notify`: update by name, create what is missing, delete managed
    automations of targets that are gone. An automation whose definition is already as wanted is
    left untouched (listed unchanged): updating it would restart a proactive alert's window, so a
    re-apply after each deploy would postpone backup-overdue forever. Idempotent: a second apply
    with nothing changed changes nothing. Raises ConfigError/NotFoundError for a `notify` that is no notification block (nothing is
    changed then) or a saved target block that cannot be loaded."""
    block_id = notification_block_id(notify)
    rules = [rule for target in targets_to_watch(repository) for rule in rules_for(target)]
    existing = {str(a.id): a for a in _managed_automations()}
    plan = plan_apply(rules, [(automation_id, a.name) for automation_id, a in existing.items()])
    updated, unchanged = [], []
    with get_client(sync_client=True) as client:
        for rule in plan.create:
            client.create_automation(automation_for(rule, block_id))
        for rule, automation_id in plan.update:
            wanted = automation_for(rule, block_id)
            if definition(wanted) == definition(existing[automation_id]):
                unchanged.append(rule.name)
                continue
            client.update_automation(UUID(automation_id), wanted)
            updated.append(rule.name)
        for automation_id, _ in plan.delete:
            client.delete_automation(UUID(automation_id))
    return ApplyReport(
        created=[r.name for r in plan.create],
        updated=updated,
        unchanged=unchanged,
        deleted=[name for _, name in plan.delete],
    )


def remove_all() -> list[str]:
    """Delete every automation vaultflow made; returns their names."""
    gone = managed()
    with get_client(sync_client=True) as client:
        for automation_id, _ in gone:
            client.delete_automation(UUID(automation_id))
    return [name for _, name in gone]
