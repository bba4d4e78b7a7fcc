"""A fleet file as data: the targets vaultflow backs up, one line each, and the plans they follow.

    fleet = read_fleet("fleet.yaml")    # Fleet, or FleetError listing every fault by its line

The format (docs/operations.md, "Fleets"):

    name: prod                            # names the deployments: full-backup/prod-default, ...
    repository: backup-repository/main    # every target's repository unless its line names one
    timezone: Europe/Berlin               # every schedule's timezone unless it names one
    work_pool: vaultflow                  # optional (default vaultflow)
    shared_queue: default                 # optional: the queue of runs any worker can do
    plans:                                # a plan: strategy -> schedule
      logical:
        full: "0 2 * * *"                 # a cron, or a prefect.yaml schedule mapping, which may
        drill: {cron: "0 6 * * 0", parameters: {rto_objective_s: 900}}   # carry flow parameters
    targets:                              # one line per target: its block, then its plan
      postgres-target/shop: logical
      redis-target/cache: {plan: redis-local, host: cache1, repository: backup-repository/cache}

Only the file's own shape is checked here (keys, names, schedules); whether each target's saved
block fits its plan's strategies is deployments/fleet.py's part, which has the Prefect API.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vaultflow.deployments.project import SCHEDULE_KINDS

# strategy -> the flow that runs it, relative to the project root (as in prefect.yaml)
STRATEGIES = {
    "full": "flows/full_backup.py:full_backup",
    "incremental": "flows/incremental_backup.py:incremental_backup",
    "differential": "flows/incremental_backup.py:differential_backup",
    "archive-logs": "flows/archive_logs.py:archive_logs",
    "drill": "flows/restore_drill.py:restore_drill",
    "verify": "flows/verify.py:verify",
    "prune": "flows/prune.py:prune",
}
TOP_KEYS = ("name", "repository", "timezone", "work_pool", "shared_queue", "plans", "targets")
LINE_KEYS = ("plan", "repository", "host")
DEFAULT_POOL, DEFAULT_QUEUE = "vaultflow", "default"
# What a fleet or queue name may hold: it goes into deployment and work queue names.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class FleetError(ValueError):
    """A fleet file that cannot be applied: `problems` holds one line per fault, each starting
    with '<file>:<line>:' where the fault has a line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Step:
    """One strategy of a plan: its schedule (a prefect.yaml `schedules:` entry, timezone filled
    in, without `parameters`) and the flow parameters the schedule adds."""

    strategy: str
    schedule: dict[str, Any]
    parameters: dict[str, Any]
    line: int


@dataclass(frozen=True)
class FleetTarget:
    """One target line: the block (`postgres-target/shop`), its plan and repository, the host
    its host-bound strategies run on when not the block's own `host`, the line number and the
    line that names its repository (its own, or the top-level `repository:`)."""

    ref: str
    plan: str
    repository: str
    host: str | None
    line: int
    repository_line: int = 0


@dataclass(frozen=True)
class Fleet:
    """A fleet file read and shape-checked: its name, pool, shared queue, plans and targets."""

    path: Path
    name: str
    work_pool: str
    shared_queue: str
    plans: dict[str, list[Step]]
    targets: list[FleetTarget] = field(default_factory=list)

    def where(self, line: int) -> str:
        """'fleet.yaml:12' for messages."""
        return f"{self.path.name}:{line}"


class _Mapping(dict):
    """A YAML mapping that remembers the line of each key (1-based)."""

    lines: dict[Any, int]


class _Loader(yaml.SafeLoader):
    """Safe YAML whose mappings keep their keys' lines and note a key given twice (PyYAML would
    keep the last silently: a target listed twice would lose one of its lines). The first
    keeps its place, so the rest of the file is still checked; `duplicates` holds (line, why)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []


def _mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)  # merge keys (<<: *anchor) first
    result, first = _Mapping(), {}
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in first:
            loader.duplicates.append((line, f"{key!r} is given twice (first on line {first[key]}): keep one"))
            continue
        first[key] = line
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = line
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _line(mapping: Any, key: Any, default: int = 1) -> int:
    return getattr(mapping, "lines", {}).get(key, default)


def _schedule(value: Any, timezone: str | None) -> tuple[dict[str, Any], dict[str, Any]] | str:
    """(schedule, parameters) of a plan's strategy entry, or why it is not one."""
    if isinstance(value, str):
        value = {"cron": value}
    if not isinstance(value, dict):
        return f"is a {type(value).__name__}: give a cron string or a schedule mapping (cron:, interval: or rrule:)"
    config = {k: v for k, v in value.items() if k != "parameters"}
    parameters = value.get("parameters") or {}
    if not isinstance(parameters, dict):
        return f"parameters is a {type(parameters).__name__}, not a mapping"
    if not any(config.get(kind) is not None for kind in SCHEDULE_KINDS):
        return f"names no schedule: give {', '.join(SCHEDULE_KINDS)}"
    if timezone and not config.get("timezone"):
        config["timezone"] = timezone
    return config, dict(parameters)


def _timezone(document: _Mapping, fleet_where, problems: list[str]) -> str | None:
    """The top-level `timezone:` every schedule takes unless it names one, checked on its own
    line. One the schedule model refuses is a problem there, and the plans are checked with UTC
    instead (their own faults still found, the timezone's not blamed on each of them)."""
    from vaultflow.deployments.validate import check_schedule

    timezone = document.get("timezone")
    if timezone is None:
        return None
    faults, _ = check_schedule({"cron": "0 0 * * *", "timezone": timezone}, 1)
    if not faults:
        return timezone
    why = faults[0].split("): ", 1)[-1]
    problems.append(f"{fleet_where(_line(document, 'timezone'))}: timezone {timezone!r}: {why}")
    return "UTC"


def _plans(document: _Mapping, fleet_where, problems: list[str]) -> dict[str, list[Step]]:
    from vaultflow.deployments.validate import check_schedule

    plans = document.get("plans")
    if not isinstance(plans, dict) or not plans:
        problems.append(
            f"{fleet_where(_line(document, 'plans'))}: plans: give at least one plan (name: strategy -> schedule)"
        )
        return {}
    timezone = _timezone(document, fleet_where, problems)
    found: dict[str, list[Step]] = {}
    for plan, steps in plans.items():
        where = fleet_where(_line(plans, plan))
        if not isinstance(steps, dict) or not steps:
            problems.append(f'{where}: plan {plan!r} maps no strategy to a schedule (e.g. full: "0 2 * * *")')
            continue
        found[str(plan)] = []
        for strategy, value in steps.items():
            where = fleet_where(_line(steps, strategy))
            if strategy not in STRATEGIES:
                problems.append(
                    f"{where}: plan {plan!r}: unknown strategy {strategy!r} (known: {', '.join(STRATEGIES)})"
                )
                continue
            parsed = _schedule(value, timezone)
            if isinstance(parsed, str):
                problems.append(f"{where}: plan {plan!r}, {strategy}: {parsed}")
                continue
            config, parameters = parsed
            faults, _ = check_schedule(config, 1)
            problems += [
                f"{where}: plan {plan!r}, {strategy}: {f.replace('schedule 1', 'schedule', 1)}" for f in faults
            ]
            if not faults:
                found[str(plan)].append(Step(strategy, config, parameters, _line(steps, strategy)))
    return found


def _targets(document: _Mapping, plans: dict[str, list[Step]], fleet_where, problems: list[str]) -> list[FleetTarget]:
    if "targets" not in document:
        problems.append(f"{fleet_where(1)}: no targets: mapping (one line per target: 'postgres-target/shop: PLAN')")
        return []
    targets = document["targets"] or {}  # `targets:` left empty: an empty fleet (deploy removes it all)
    if not isinstance(targets, dict):
        problems.append(
            f"{fleet_where(_line(document, 'targets'))}: targets is a {type(targets).__name__}, not a mapping"
        )
        return []
    default_repository = document.get("repository")
    found = []
    for ref, value in targets.items():
        line = _line(targets, ref)
        where = f"{fleet_where(line)}: {ref}"
        if not isinstance(ref, str) or ref.count("/") != 1 or not all(ref.split("/")):
            problems.append(
                f"{fleet_where(line)}: {ref!r} is not a block name of the form TYPE/NAME (postgres-target/shop)"
            )
            continue
        options = {"plan": value} if isinstance(value, str) else value
        if not isinstance(options, dict):
            problems.append(f"{where}: give its plan (a name from plans:) or a mapping with plan:")
            continue
        # every fault of the line; a line whose plan, repository and host are usable is kept (a
        # typo'd key is reported, and its block still checked: fleet.check reports all at once)
        faults = [f"unknown key {key!r} (known: {', '.join(LINE_KEYS)})" for key in options if key not in LINE_KEYS]
        plan, repository, host = options.get("plan"), options.get("repository", default_repository), options.get("host")
        usable = plan in plans
        if not usable:
            faults.append(f"plan {plan!r} is not defined under plans: (defined: {', '.join(plans) or 'none'})")
        if not isinstance(repository, str) or "/" not in repository:
            usable = False
            faults.append("no repository: set `repository: backup-repository/NAME` at the top or on this line")
        if host is not None and (not isinstance(host, str) or not NAME.match(host)):
            usable = False
            faults.append(f"host {host!r} is not a host name (letters, digits, '.', '-', '_')")
        problems += [f"{where}: {fault}" for fault in faults]
        if not usable:
            continue
        repository_line = (
            _line(options, "repository", line) if "repository" in options else _line(document, "repository")
        )
        found.append(FleetTarget(ref, plan, repository, host, line, repository_line))
    return found


def read_fleet(path: str | os.PathLike[str]) -> Fleet:
    """The fleet file at `path`, shape-checked. Raises FleetError listing every fault, each as
    '<file>:<line>: <what is wrong and what to do>' (a file that cannot be read or parsed: one)."""
    fleet, problems = read_fleet_all(path)
    if problems or fleet is None:
        raise FleetError(problems)
    return fleet


def problem_line(problem: str) -> int:
    """The line number a problem '<file>:<line>: ...' names (0 for one of the whole file): the
    sort key that lists a fleet's problems in file order."""
    where = problem.split(":", 2)
    return int(where[1]) if len(where) > 2 and where[1].isdigit() else 0


def read_fleet_all(path: str | os.PathLike[str]) -> tuple[Fleet | None, list[str]]:
    """(fleet, every fault of its shape, in line order): the fleet as far as it reads (lines
    with a fault left out, a duplicate key's first value kept), so that what the Prefect API
    says about the rest can be reported in the same pass (fleet.check). The fleet is None when
    the file cannot be read, parsed or is not a mapping (then there is one problem)."""
    file = Path(path)
    where = lambda line: f"{file.name}:{line}"  # noqa: E731 - one-line helper
    try:
        loader = _Loader(file.read_text())
    except OSError as exc:
        return None, [f"{file}: cannot read the fleet file ({exc.strerror or exc})"]
    try:
        document = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        return None, [f"{where(mark.line + 1 if mark else 1)}: not valid YAML: {problem}"]
    finally:
        loader.dispose()
    if not isinstance(document, dict):
        return None, [f"{where(1)}: a fleet file is a mapping with name:, plans: and targets:"]
    problems = [f"{where(line)}: {why}" for line, why in loader.duplicates]
    problems += [
        f"{where(_line(document, key))}: unknown key {key!r} (known: {', '.join(TOP_KEYS)})"
        for key in document
        if key not in TOP_KEYS
    ]
    name = document.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        problems.append(
            f"{where(_line(document, 'name'))}: name: give the fleet a name (letters, digits, '.', '-', '_'): "
            "it names the fleet's deployments, and re-applying the file finds them by it"
        )
        name = ""
    names = {}
    for key, default in (("work_pool", DEFAULT_POOL), ("shared_queue", DEFAULT_QUEUE)):
        names[key] = document.get(key, default)
        if not isinstance(names[key], str) or not NAME.match(names[key]):
            problems.append(f"{where(_line(document, key))}: {key} {names[key]!r} is not a name")
    plans = _plans(document, where, problems)
    targets = _targets(document, plans, where, problems)
    problems.sort(key=problem_line)
    return Fleet(file, name, names["work_pool"], names["shared_queue"], plans, targets), problems
