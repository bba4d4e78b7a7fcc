"""Fleets: one line per target in a fleet file; one Prefect deployment per (strategy, work queue)
whose schedules each carry one target's parameters.

    python -m vaultflow.deployments.fleet check FILE     # each line against its saved block: fit, queue
    python -m vaultflow.deployments.fleet deploy FILE    # check, then make the API's deployments match
    vaultflow fleet check|deploy FILE          # the same (vaultflow/cli_fleet.py)
    vaultflow fleet remove NAME                # delete every deployment of fleet NAME

A strategy that reads or writes files on the database host (the target block says which:
TargetSettings.local_access, e.g. a WAL spool, a Redis dir, a ClickHouse backup disk) goes to the
work queue `host-<host>`, served by a worker started on that host; every other run goes to the
fleet's shared queue, which any worker may serve. The deployments are tagged
`vaultflow-fleet:<name>`; deploy creates what is missing, changes only what differs (schedules
one by one, by their slug: the target's block name), removes the schedules of targets dropped
from the file and deletes the fleet's deployments left without one. A second deploy of an
unchanged file changes nothing; it warns of another fleet's deployments that schedule the same
targets (a renamed fleet's: `vaultflow fleet remove OLD` deletes them). Why this shape: docs/architecture.md, "Issue 12: fleets".
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from vaultflow.deployments.fleet_file import (
    STRATEGIES,
    Fleet,
    FleetError,
    FleetTarget,
    Step,
    problem_line,
    read_fleet_all,
)
from vaultflow.deployments.project import ROOT, load_flow, load_pull_steps, parameter_schema_of
from vaultflow.errors import VaultflowError
from vaultflow.summary import counted

HOST_QUEUE_PREFIX = "host-"
FLEET_TAG_PREFIX = "vaultflow-fleet:"


@dataclass(frozen=True)
class Placement:
    """One (target, strategy) of the fleet: the flow's parameters on its schedule, the work
    queue it runs on and, for a host queue, what on the host it needs (`local`)."""

    target: FleetTarget
    step: Step
    flow: Any
    queue: str
    local: str | None

    @property
    def parameters(self) -> dict[str, Any]:
        return {"target": self.target.ref, "repository": self.target.repository, **self.step.parameters}


@dataclass(frozen=True)
class DeploymentSpec:
    """A deployment the fleet wants: `<flow>/<fleet>-<queue>`, one schedule per target (its
    slug: the target's block name)."""

    flow_name: str
    name: str
    entrypoint: str
    strategy: str
    queue: str
    schedules: dict[str, Placement]
    schema: dict[str, Any]

    @property
    def full_name(self) -> str:
        return f"{self.flow_name}/{self.name}"


@dataclass
class FleetReport:
    """What one deploy did: (verb, what) per change, in order; verbs created, added, changed,
    removed, deleted, unchanged. `queues` maps each work queue used to the host it needs ('' for
    the shared queue). `outcome` maps each deployment to what happened to it as a whole (created,
    changed: its settings or any of its schedules, unchanged, deleted); `schedules` counts the
    schedule changes (added, changed, removed) of deployments that already existed. `warnings`:
    one line each, e.g. another fleet's deployments that schedule the same targets."""

    actions: list[tuple[str, str]] = field(default_factory=list)
    queues: dict[str, str] = field(default_factory=dict)
    outcome: dict[str, str] = field(default_factory=dict)
    schedules: dict[str, int] = field(default_factory=lambda: {"added": 0, "changed": 0, "removed": 0})
    warnings: list[str] = field(default_factory=list)

    def count(self, verb: str) -> int:
        return sum(1 for v, _ in self.actions if v == verb)

    def deployments(self, outcome: str) -> int:
        """How many deployments ended `outcome` (created, changed, unchanged, deleted)."""
        return sum(1 for done in self.outcome.values() if done == outcome)


def fleet_tag(name: str) -> str:
    return f"{FLEET_TAG_PREFIX}{name}"


def host_queue(host: str) -> str:
    """The work queue of the runs that need a worker on `host`: 'host-<host>', characters a
    queue name cannot hold replaced by '-' (an IPv6 address)."""
    return HOST_QUEUE_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "-", host)


def place(fleet: Fleet, blocks: Any | None = None) -> tuple[list[Placement], list[str], list[str]]:
    """(placements, problems, notes) of every target line and each strategy of its plan: the
    target's block must be saved on the Prefect API and fit the strategy (the flows' own rule,
    deployments.validate.check_fit), the plan's parameters must suit the flow. Problems and
    notes are one line each, '<file>:<line>: <target>: ...'."""
    from vaultflow.blocks.registry import target_type
    from vaultflow.deployments.validate import SavedBlocks, check_fit, check_parameters, shared_target_names
    from vaultflow.errors import ConfigError

    blocks = blocks or SavedBlocks()
    placements: list[Placement] = []
    problems: list[str] = []
    notes: list[str] = []
    loaded: list[tuple[str, str, Any]] = []  # two blocks, one engine + target_name: a problem
    for target in fleet.targets:
        where = f"{fleet.where(target.line)}: {target.ref}"
        try:
            target_type(target.ref.split("/", 1)[0])
        except ConfigError as exc:
            problems.append(f"{where}: {exc}")
            continue
        block, why_not = blocks.load(target.ref)
        if block is None:
            problems.append(f"{where}: {why_not}; save the block first (Prefect UI, or Block.save)")
            continue
        loaded.append((fleet.where(target.line), target.ref, block))
        for step in fleet.plans[target.plan]:
            flow = load_flow(STRATEGIES[step.strategy], ROOT)
            parameters = {"target": target.ref, "repository": target.repository, **step.parameters}
            found = check_parameters(flow, parameters)
            fit_problems, fit_notes = check_fit(flow, parameters, blocks)
            plan_where = f"{fleet.where(step.line)}: plan {target.plan!r}, {step.strategy}"
            problems += [f"{plan_where}: {p}" for p in found if f"{plan_where}: {p}" not in problems]
            problems += [f"{where}: {step.strategy}: {p}" for p in fit_problems]
            notes += [f"{where}: {note}" for note in fit_notes]
            if found or fit_problems:
                continue
            local = block.local_access(step.strategy, step.parameters)
            queue = fleet.shared_queue
            if local:
                host = target.host or getattr(block, "host", None)
                if not host:
                    problems.append(
                        f"{where}: {step.strategy} needs a worker on the database host ({local}), and the "
                        "block names no host: add `host: NAME` to the line"
                    )
                    continue
                queue = host_queue(str(host))
            placements.append(Placement(target, step, flow, queue, local))
    problems += shared_target_names(loaded)
    return placements, problems, notes


def plan_deployments(fleet: Fleet, placements: list[Placement]) -> list[DeploymentSpec]:
    """The deployments the placements make: one per (strategy, queue), in strategy order."""
    groups: dict[tuple[str, str], dict[str, Placement]] = {}
    for placement in placements:
        groups.setdefault((placement.step.strategy, placement.queue), {})[placement.target.ref] = placement
    order = list(STRATEGIES)
    specs = []
    for (strategy, queue), schedules in sorted(groups.items(), key=lambda item: (order.index(item[0][0]), item[0][1])):
        flow = next(iter(schedules.values())).flow
        specs.append(
            DeploymentSpec(
                flow_name=flow.name,
                name=f"{fleet.name}-{queue}",
                entrypoint=STRATEGIES[strategy],
                strategy=strategy,
                queue=queue,
                schedules=schedules,
                schema=parameter_schema_of(flow),
            )
        )
    return specs


def description(fleet: Fleet, spec: DeploymentSpec) -> str:
    """The deployment's description: what it runs and where (no target count: adding a target
    must not change the deployment, only add its schedule)."""
    where = (
        f"on a worker on host {spec.queue.removeprefix(HOST_QUEUE_PREFIX)} "
        f"(prefect worker start --pool {fleet.work_pool} --work-queue {spec.queue})"
        if spec.queue.startswith(HOST_QUEUE_PREFIX)
        else f"on any worker of the shared queue {spec.queue}"
    )
    return (
        f"Fleet {fleet.name}: {spec.strategy} of its targets, {where}. Each schedule carries one target's "
        f"parameters (its slug is the target block). Managed by `vaultflow fleet deploy {fleet.path.name}`: "
        "change the fleet file, not this deployment."
    )


def _deployment_fields(fleet: Fleet, spec: DeploymentSpec, pull_steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "entrypoint": spec.entrypoint,
        "description": description(fleet, spec),
        "tags": ["vaultflow", fleet_tag(fleet.name), spec.strategy],
        "parameters": {},
        "pull_steps": pull_steps,
        "parameter_openapi_schema": spec.schema,
        "enforce_parameter_schema": True,
        "work_queue_name": spec.queue,
    }


def _schedule_create(placement: Placement):
    from prefect.client.schemas.actions import DeploymentScheduleCreate

    from vaultflow.deployments.serve_all import build_schedule

    wanted = DeploymentScheduleCreate.from_schedule(build_schedule(placement.step.schedule))
    return wanted.model_copy(update={"parameters": placement.parameters, "slug": placement.target.ref})


def _same_schedule(existing: Any, wanted: Any, config: dict[str, Any]) -> bool:
    """Whether a schedule on the API is the one wanted: its timing (an interval without an
    anchor_date in the file is anchored when created: any anchor is the same) and parameters."""
    have, want = existing.schedule.model_dump(mode="json"), wanted.schedule.model_dump(mode="json")
    if "interval" in want and config.get("anchor_date") is None:
        have.pop("anchor_date", None)
        want.pop("anchor_date", None)
    return have == want and existing.parameters == wanted.parameters


def _describe(placement: Placement) -> str:
    config = placement.step.schedule
    timing = next(f"{kind} {config[kind]}" for kind in ("cron", "interval", "rrule") if config.get(kind) is not None)
    local = f"; needs {placement.local}" if placement.local else ""
    return f"{timing} {config.get('timezone') or 'UTC'}{local}"


def _fleet_deployments(client: Any, tag: str) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

    found: list[Any] = []
    while True:
        page = client.read_deployments(
            deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[tag])), limit=200, offset=len(found)
        )
        found += page
        if len(page) < 200:
            return found


def apply(fleet: Fleet, specs: list[DeploymentSpec], pull_steps: list[dict[str, Any]] | None = None) -> FleetReport:
    """Make the fleet's deployments on the Prefect API exactly `specs`. Nothing is changed when
    the work pool is missing or a wanted name belongs to a deployment that is not the fleet's
    (FleetError naming it). Returns what was done."""
    from prefect import get_client
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.exceptions import ObjectNotFound

    pull_steps = load_pull_steps() if pull_steps is None else pull_steps
    tag = fleet_tag(fleet.name)
    report = FleetReport(
        queues={
            spec.queue: spec.queue.removeprefix(HOST_QUEUE_PREFIX) if spec.queue.startswith(HOST_QUEUE_PREFIX) else ""
            for spec in specs
        }
    )
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(fleet.work_pool)
        except ObjectNotFound:
            raise FleetError(
                [
                    f"{fleet.path.name}: work pool {fleet.work_pool!r} does not exist: prefect work-pool create "
                    f"{fleet.work_pool} --type process"
                ]
            ) from None
        flows = {}
        existing = {}
        for deployment in _fleet_deployments(client, tag):
            if deployment.flow_id not in flows:
                flows[deployment.flow_id] = client.read_flow(deployment.flow_id).name
            existing[f"{flows[deployment.flow_id]}/{deployment.name}"] = deployment
        for spec in specs:  # before any change: a wanted name taken by another deployment
            if spec.full_name in existing:
                continue
            try:
                client.read_deployment_by_name(spec.full_name)
            except ObjectNotFound:
                continue
            raise FleetError(
                [
                    f"{fleet.path.name}: deployment {spec.full_name} exists and is not fleet {fleet.name}'s (no tag "
                    f"{tag}): delete it (prefect deployment delete {spec.full_name}) or rename the fleet"
                ]
            )
        for spec in specs:
            fields = _deployment_fields(fleet, spec, pull_steps)
            deployment = existing.pop(spec.full_name, None)
            if deployment is None:
                flow_id = client.create_flow_from_name(spec.flow_name)
                client.create_deployment(
                    flow_id=flow_id,
                    name=spec.name,
                    work_pool_name=fleet.work_pool,
                    schedules=[_schedule_create(p) for p in spec.schedules.values()],
                    **fields,
                )
                report.actions.append(("created", f"{spec.full_name}: {', '.join(spec.schedules)}"))
                report.outcome[spec.full_name] = "created"
                continue
            changed = {
                key: value
                for key, value in fields.items()
                if (getattr(deployment, key) if key != "tags" else sorted(deployment.tags))
                != (sorted(value) if key == "tags" else value)
            }
            if deployment.work_pool_name != fleet.work_pool:
                changed["work_pool_name"] = fleet.work_pool
            if changed:
                settings = sorted(changed)
                # the queue is looked up in the pool only when both are given
                changed |= {"work_pool_name": fleet.work_pool, "work_queue_name": spec.queue}
                client.update_deployment(deployment.id, DeploymentUpdate(**changed))
                report.actions.append(("changed", f"{spec.full_name}: {', '.join(settings)}"))
            before = len(report.actions)
            _apply_schedules(client, spec, deployment, report)
            report.outcome[spec.full_name] = "changed" if changed or len(report.actions) > before else "unchanged"
            if report.outcome[spec.full_name] == "unchanged":
                report.actions.append(("unchanged", f"{spec.full_name}: {counted(len(spec.schedules), 'schedule')}"))
        for full_name, deployment in sorted(existing.items()):
            client.delete_deployment(deployment.id)
            report.actions.append(("deleted", f"{full_name}: no target of the fleet runs it any more"))
            report.outcome[full_name] = "deleted"
    return report


def _apply_schedules(client: Any, spec: DeploymentSpec, deployment: Any, report: FleetReport) -> None:
    """Schedules one by one, by slug: add the new, update the changed, remove the rest."""
    schedules = client.read_deployment_schedules(deployment.id)
    have = {schedule.slug: schedule for schedule in schedules if schedule.slug}
    unnamed = [schedule for schedule in schedules if not schedule.slug]  # added by hand in the UI
    for slug, placement in spec.schedules.items():
        wanted = _schedule_create(placement)
        schedule = have.pop(slug, None)
        if schedule is None:
            client.create_deployment_schedules(deployment.id, [wanted])
            report.actions.append(("added", f"{slug} to {spec.full_name} ({_describe(placement)})"))
            report.schedules["added"] += 1
        elif not _same_schedule(schedule, wanted, placement.step.schedule):
            client.update_deployment_schedule(
                deployment.id, schedule.id, schedule=wanted.schedule, parameters=wanted.parameters
            )
            report.actions.append(("changed", f"{slug} in {spec.full_name} ({_describe(placement)})"))
            report.schedules["changed"] += 1
    for slug, schedule in [*have.items(), *(("a schedule without slug", s) for s in unnamed)]:
        client.delete_deployment_schedule(deployment.id, schedule.id)  # a target dropped from the file
        report.actions.append(("removed", f"{slug} from {spec.full_name}"))
        report.schedules["removed"] += 1


def check(path: str | os.PathLike[str], blocks: Any | None = None) -> tuple[Fleet, list[DeploymentSpec], list[str]]:
    """(fleet, the deployments it makes, notes) of the fleet file at `path`. Raises FleetError
    listing every problem the file and its saved blocks have, one line each, in line order (all
    in one pass: the file's shape, the target and repository blocks, the fit); VaultflowError
    (one line naming the URL) when PREFECT_API_URL names an API that does not answer."""
    from vaultflow.deployments.validate import SavedBlocks

    fleet, problems = read_fleet_all(path)
    if fleet is None:
        raise FleetError(problems)
    if blocks is None:
        require_api()
        blocks = SavedBlocks()
    placements, found, notes = place(fleet, blocks)
    problems = sorted([*problems, *found, *repository_problems(fleet, blocks)], key=problem_line)
    if problems:
        raise FleetError(problems)
    return fleet, plan_deployments(fleet, placements), notes


def require_api() -> None:
    """VaultflowError, one line naming the URL and what to do, when PREFECT_API_URL is set and
    its API does not answer (the same line as the other commands': vaultflow.cli_run.check_api);
    without it every target would be 'not saved'."""
    from vaultflow.cli_run import check_api

    check_api()


def repository_problems(fleet: Fleet, blocks: Any) -> list[str]:
    """One problem per repository a fleet's lines name that is not a saved BackupRepository
    block: '<file>:<line>: <ref>: ...' at the line that names it (the top-level `repository:`,
    or a target's own). Without it every scheduled run of those targets would fail."""
    from vaultflow.blocks import BackupRepository

    problems: dict[tuple[str, int], str] = {}
    for target in fleet.targets:
        key = (target.repository, target.repository_line)
        if key in problems:
            continue
        block, why_not = blocks.load(target.repository)
        where = f"{fleet.where(target.repository_line)}: {target.repository}"
        if block is None:
            problems[key] = f"{where}: {why_not}; save the block first (Prefect UI, or BackupRepository(...).save)"
        elif not isinstance(block, BackupRepository):
            problems[key] = (
                f"{where}: is a {type(block).__name__}, not a BackupRepository: name a backup-repository block"
            )
    return list(problems.values())


def deploy(path: str | os.PathLike[str]) -> tuple[Fleet, FleetReport, list[str]]:
    """Check the fleet file at `path`, then apply it: (fleet, report, notes). Raises FleetError
    (one line per problem) and changes nothing when any line does not check. The report warns
    of other fleets' deployments that schedule the same targets (a renamed fleet's)."""
    fleet, specs, notes = check(path)
    report = apply(fleet, specs)
    report.warnings += other_fleets_overlap(fleet, specs)
    return fleet, report, notes


def _vaultflow_fleets(client: Any) -> dict[str, list[tuple[str, Any]]]:
    """Fleet name -> [(full name, deployment)] of every fleet deployment on the API (tagged
    'vaultflow' and 'vaultflow-fleet:<name>')."""
    fleets: dict[str, list[tuple[str, Any]]] = {}
    flows: dict[Any, str] = {}
    for deployment in _fleet_deployments(client, "vaultflow"):
        for tag in deployment.tags:
            if tag.startswith(FLEET_TAG_PREFIX):
                if deployment.flow_id not in flows:
                    flows[deployment.flow_id] = client.read_flow(deployment.flow_id).name
                full_name = f"{flows[deployment.flow_id]}/{deployment.name}"
                fleets.setdefault(tag.removeprefix(FLEET_TAG_PREFIX), []).append((full_name, deployment))
    return fleets


def other_fleets_overlap(fleet: Fleet, specs: list[DeploymentSpec]) -> list[str]:
    """One warning per deployment of another fleet that schedules any of this fleet's targets:
    a renamed fleet (`name: prod` -> `prod2`) leaves the old one's deployments in place, and
    every such target is then backed up twice."""
    from prefect import get_client

    ours = {slug for spec in specs for slug in spec.schedules}
    warnings = []
    with get_client(sync_client=True) as client:
        for name, deployments in sorted(_vaultflow_fleets(client).items()):
            if name == fleet.name:
                continue
            for full_name, deployment in sorted(deployments, key=lambda item: item[0]):
                shared = sorted({s.slug for s in client.read_deployment_schedules(deployment.id)} & ours)
                if shared:
                    warnings.append(
                        f"deployment {full_name} of fleet {name} also schedules {', '.join(shared)}: they run "
                        f"twice; if fleet {name} is this one renamed, remove it: vaultflow fleet remove {name}"
                    )
    return warnings


def remove(name: str) -> list[str]:
    """Delete every deployment of fleet `name` (tagged 'vaultflow-fleet:<name>', as deploy made
    them); returns their full names, sorted. Raises FleetError naming the fleets that exist when
    `name` has no deployment (a typo must not look like success)."""
    from prefect import get_client

    require_api()
    with get_client(sync_client=True) as client:
        fleets = _vaultflow_fleets(client)
        if name not in fleets:
            known = ", ".join(sorted(fleets)) or "none"
            raise FleetError([f"fleet {name!r} has no deployments on this Prefect API (fleets there: {known})"])
        for _, deployment in fleets[name]:
            client.delete_deployment(deployment.id)
    return sorted(full_name for full_name, _ in fleets[name])


def worker_argv(pool: str, queues: Iterable[str], limit: int | None = None) -> list[str]:
    """The `prefect` arguments that start a worker serving exactly `queues` of work pool `pool`
    (a worker given no queue serves every queue of its pool, other hosts' included), running at
    most `limit` flow runs at once (None: no limit)."""
    args = ["worker", "start", "--pool", pool]
    for queue in queues:
        args += ["--work-queue", queue]
    return args + (["--limit", str(limit)] if limit else [])


def worker_commands(fleet_pool: str, queues: dict[str, str]) -> list[str]:
    """One line per work queue: who serves it, and the command that starts that worker."""
    lines = []
    for queue, host in sorted(queues.items(), key=lambda item: (item[1] != "", item[0])):
        who = f"a worker on {host}" if host else "any worker"
        command = " ".join(worker_argv(fleet_pool, [queue]))
        lines.append(f"{queue}: {who}: VAULTFLOW_HOME=<checkout> prefect {command}")
    return lines


def print_placement(fleet: Fleet, specs: list[DeploymentSpec], out=print) -> None:
    for spec in specs:
        out(f"{spec.full_name}  (queue {spec.queue})")
        for slug, placement in spec.schedules.items():
            out(f"    {slug}: {_describe(placement)}")


def print_report(fleet: Fleet, report: FleetReport, out=print) -> None:
    """A line per change, the counts (deployments by outcome; schedule changes of deployments
    that existed), the worker each queue needs, then one `warning:` line per warning."""
    for verb, what in report.actions:
        out(f"{verb:9} {what}")
    counts = ", ".join(f"{report.deployments(v)} {v}" for v in ("created", "changed", "unchanged", "deleted"))
    schedules = ", ".join(f"{n} {verb}" for verb, n in report.schedules.items())
    out(f"fleet {fleet.name}: {counts}; schedules {schedules}")
    for line in worker_commands(fleet.work_pool, report.queues):
        out(f"  {line}")
    for warning in report.warnings:
        out(f"warning: {warning}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vaultflow.deployments.fleet", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("check", "deploy"), help="check the file, or check and apply it")
    parser.add_argument("path", help="the fleet file (e.g. fleet.yaml)")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            fleet, specs, notes = check(args.path)
            print_placement(fleet, specs)
        else:
            fleet, report, notes = deploy(args.path)
            print_report(fleet, report)
    except FleetError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except VaultflowError as exc:  # the Prefect API does not answer
        print(exc, file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
