"""Check prefect.yaml before `prefect deploy --all` (or serve_all) finds out the hard way.

    python -m vaultflow.deployments.validate [prefect.yaml] [--root DIR]

For every deployment: its entrypoint imports and names a Prefect flow; every schedule parses
with the Prefect server's own schedule model (cron syntax, IANA timezone; every schedule must
name one) and fires at least once; every parameter is in the flow's signature, no required
parameter is missing and the values pass the flow's type validation; it names a work pool.
Deployment names are unique. The target of an incremental, differential or archive-logs
deployment must fit its strategy (flows/_fit.py, which asks the target's settings: e.g. a
physical PostgreSQL target, archive-logs with a wal_spool, or a local-mode Redis target): the saved block is read from the Prefect API when
PREFECT_API_URL names one and the block is there; otherwise a note says what could not be
checked. Prints one line per deployment, then every problem and note; exits 1 if there is any
problem (notes alone do not fail).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vaultflow.blocks.registry import target_type, target_types
from vaultflow.deployments.project import DEFAULT_PATH, SCHEDULE_KINDS, load_deployments, load_flow, project_root
from vaultflow.errors import ConfigError
from vaultflow.flows._fit import STRATEGY_OF_FLOW, how_to_fix, misfit

# Keys of a `schedules:` entry that `prefect deploy` understands; anything else (a typo such as
# `timzone:`) would be dropped silently.
SCHEDULE_KEYS = {
    *SCHEDULE_KINDS,
    "timezone",
    "day_or",
    "anchor_date",
    "active",
    "parameters",
    "slug",
    "replaces",
    "max_scheduled_runs",
}
BANNED_NAME_CHARACTERS = "/%&<>"


def _label(entry: dict[str, Any], index: int) -> str:
    name = entry.get("name")
    return name if isinstance(name, str) and name else f"deployments[{index}]"


def _describe(exc: BaseException) -> str:
    """One line: pydantic errors by message, script errors by their cause."""
    from prefect.exceptions import ScriptError

    if isinstance(exc, ScriptError):
        cause = exc.user_exc
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            return "; ".join(str(e.get("msg", e)).removeprefix("Value error, ") for e in errors())
        except Exception:  # noqa: BLE001 - fall back to the plain text
            pass
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Flow.validate_parameters logs every failure at ERROR; we report it ourselves."""
    logger = logging.getLogger(logger_name)
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


def check_schedule(config: Any, number: int) -> tuple[list[str], str]:
    """(problems, summary) of one `schedules:` entry, parsed by the server's schedule models."""
    from prefect.server.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule

    where = f"schedule {number}"
    if not isinstance(config, dict):
        return [f"{where} is a {type(config).__name__}, not a mapping"], ""
    problems = [
        f"{where}: unknown key {key!r} (known: {', '.join(sorted(SCHEDULE_KEYS))})"
        for key in config
        if key not in SCHEDULE_KEYS
    ]
    kinds = [kind for kind in SCHEDULE_KINDS if config.get(kind) is not None]
    if len(kinds) != 1:
        return problems + [f"{where} needs exactly one of {', '.join(SCHEDULE_KINDS)}"], ""
    kind, timezone = kinds[0], config.get("timezone")
    if kind == "cron":
        where = f"{where} (cron {config['cron']!r})"
    if not timezone:
        problems.append(
            f"{where} has no timezone: add an IANA timezone such as Europe/Berlin (without one the server uses UTC)"
        )
    try:
        if kind == "cron":
            fields = {"cron": config["cron"], "timezone": timezone or None}
            if config.get("day_or") is not None:
                fields["day_or"] = config["day_or"]
            schedule = CronSchedule(**fields)
        elif kind == "interval":
            interval = config["interval"]
            fields = {
                "interval": interval if not isinstance(interval, (int, float)) else float(interval),
                "timezone": timezone or None,
            }
            if config.get("anchor_date") is not None:
                fields["anchor_date"] = config["anchor_date"]
            schedule = IntervalSchedule(**{k: v for k, v in fields.items() if v is not None})
        else:
            schedule = RRuleSchedule(rrule=config["rrule"], timezone=timezone or None)
    except Exception as exc:  # noqa: BLE001 - pydantic ValidationError and friends
        return problems + [f"{where}: {_describe(exc)}"], ""
    try:
        upcoming = asyncio.run(schedule.get_dates(n=1))
    except Exception as exc:  # noqa: BLE001 - croniter: "failed to find next date"
        return problems + [f"{where} never fires: {_describe(exc)}"], ""
    if not upcoming:
        return problems + [f"{where} never fires"], ""
    spec = {
        "cron": lambda: str(config["cron"]),
        "interval": lambda: f"every {config['interval']}",
        "rrule": lambda: str(config["rrule"]),
    }[kind]()
    return problems, f"{spec} {schedule.timezone or 'UTC'} (next {upcoming[0].isoformat()})"


def check_parameters(flow: Any, parameters: dict[str, Any], where: str = "", check_required: bool = True) -> list[str]:
    """Names against the flow's signature, then values against the flow's type validation."""
    signature = inspect.signature(flow.fn)
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    accepted = [name for name, p in signature.parameters.items() if p.kind not in variadic]
    takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    required = [name for name, p in signature.parameters.items() if p.default is p.empty and p.kind not in variadic]
    prefix = f"{where}: " if where else ""
    problems = []
    if not takes_kwargs:
        problems += [
            f"{prefix}unknown parameter {name!r}: flow {flow.name!r} takes {', '.join(accepted) or 'no parameters'}"
            for name in parameters
            if name not in accepted
        ]
    if check_required:
        problems += [
            f"{prefix}required parameter {name!r} of flow {flow.name!r} is missing"
            for name in required
            if name not in parameters
        ]
    templated = any(isinstance(v, str) and "{{" in v for v in parameters.values())
    if problems or templated:  # templated values are only known when `prefect deploy` renders them
        return problems
    try:
        with _quiet("prefect.flows"):
            flow.validate_parameters(dict(parameters))
    except Exception as exc:  # noqa: BLE001 - ParameterTypeError
        text = str(exc).replace("Flow run received invalid parameters:", "").strip()
        problems.append(f"{prefix}invalid parameter values for flow {flow.name!r}: {' '.join(text.split())}")
    return problems


class SavedBlocks:
    """Block documents read from the Prefect API named by PREFECT_API_URL, once per name.

    Never starts Prefect's temporary API: its database is not the one the deployments will use."""

    def __init__(self) -> None:
        from prefect.settings import PREFECT_API_URL

        self.api = PREFECT_API_URL.value()
        self._cache: dict[str, tuple[Any, str]] = {}
        self._no_retries: Any = None  # the current settings with client retries off, made once

    def load(self, ref: str) -> tuple[Any, str]:
        """(block, '') or (None, why it could not be read)."""
        if not self.api:
            return None, "no Prefect API is configured (set PREFECT_API_URL)"
        if ref not in self._cache:
            self._cache[ref] = self._load(ref)
        return self._cache[ref]

    def _load(self, ref: str) -> tuple[Any, str]:
        from prefect.blocks.core import Block
        from prefect.context import SettingsContext, get_settings_context
        from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

        current = get_settings_context()
        if self._no_retries is None:  # a settings copy costs about 25 ms of CPU: one per SavedBlocks
            self._no_retries = current.settings.copy_with_update(updates={PREFECT_CLIENT_MAX_RETRIES: 0})
        try:  # an API that is down is a note, found at once rather than after minutes of retries
            with _quiet("prefect"), SettingsContext(profile=current.profile, settings=self._no_retries):
                return Block.load(ref), ""
        except ValueError as exc:  # no such block document (or block type) on this server
            return None, f"block {ref} is not saved in {self.api} ({_describe(exc)})"
        except Exception as exc:  # noqa: BLE001 - unreachable API, refused, ...
            return None, f"the Prefect API at {self.api} did not answer ({type(exc).__name__}: {_describe(exc)})"


def check_fit(flow: Any, parameters: dict[str, Any], blocks: SavedBlocks) -> tuple[list[str], list[str]]:
    """(problems, notes): does the deployment's target fit its flow's strategy? The rule is the
    one the flows apply (flows/_fit.py, asking the target's settings)."""

    strategy = STRATEGY_OF_FLOW.get(flow.name)
    ref = parameters.get("target")
    if strategy is None or not isinstance(ref, str) or "{{" in ref:
        return [], []
    slug = ref.split("/", 1)[0] if "/" in ref else ""
    if not slug:
        return [], [
            f"could not check that target {ref!r} fits {strategy}: name it with its block type "
            f"({' or '.join(repr(slug + '/NAME') for slug in target_types())})"
        ]
    try:
        kind = target_type(slug)
    except ConfigError as exc:
        return [f"target {ref}: {exc}"], []
    why_not_kind = kind.kind_misfit(strategy)
    if why_not_kind:  # no block of this kind can: no need to read it
        return [f"target {ref} cannot do {strategy}: {why_not_kind}; {how_to_fix(strategy)}"], []
    block, why_not = blocks.load(ref)
    if block is None:
        return [], [f"could not check that target {ref} fits {strategy}: {why_not}"]
    why = misfit(strategy, block, parameters.get("spool_dir"))
    if why:
        return [f"target {ref} cannot do {strategy}: {why}; {how_to_fix(strategy)}"], []
    condition = block.runtime_condition(strategy)
    if condition:
        return [], [f"target {ref} fits {strategy} if {condition} (checked at run time)"]
    return [], []


class TargetNames:
    """The block that first used each engine + target name (TargetSettings.name), in file order:
    two different blocks with one would back up into one catalog, and a restore or status of
    one would read the other's backups."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, str], tuple[str, str]] = {}

    def clash(self, where: str, ref: str, block: Any) -> str | None:
        """The problem of `block` (ref `ref`, used at `where`) when an earlier, different block
        resolves to its engine and target name, naming both refs and the earlier place (the
        caller names `where`); else None."""
        try:
            key = (block.engine_name, block.name)
        except ConfigError:  # an invalid name: running the block reports it
            return None
        seen_where, seen_ref = self.first.setdefault(key, (where, ref))
        if seen_ref == ref:
            return None
        return (
            f"{ref} and {seen_ref} ({seen_where}) both resolve to target {key[0]}/{key[1]}: "
            "their backups would mix in one catalog and a restore could bring back the other's data; "
            "give one of the blocks its own target_name"
        )


def shared_target_names(uses: list[tuple[str, str, Any]]) -> list[str]:
    """'<where>: <clash>' for each (where, block ref, loaded block) of `uses` that clashes with an
    earlier one (TargetNames), in order."""
    names = TargetNames()
    return [f"{use[0]}: {problem}" for use in uses if (problem := names.clash(*use))]


def target_ref(parameters: Any) -> str | None:
    """The block ref ('postgres-target/shop') a deployment's `target` parameter names, or None
    (no target, a template, a name without its block type)."""
    ref = parameters.get("target") if isinstance(parameters, dict) else None
    if not isinstance(ref, str) or "{{" in ref or "/" not in ref:
        return None
    return ref


def check_deployment(
    entry: dict[str, Any], root: Path, blocks: SavedBlocks | None = None, notes: list[str] | None = None
) -> tuple[list[str], str]:
    """(problems, summary line) of one deployment entry; what could not be checked is appended
    to `notes`."""
    problems: list[str] = []
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append("has no name")
    elif any(c in name for c in BANNED_NAME_CHARACTERS):
        problems.append(f"name {name!r} contains one of {BANNED_NAME_CHARACTERS!r}, which Prefect refuses")

    pool = entry.get("work_pool")
    pool_name = pool.get("name") if isinstance(pool, dict) else None
    if not isinstance(pool_name, str) or not pool_name.strip():
        problems.append("names no work pool: add `work_pool: {name: vaultflow}` (or the *pool anchor)")

    flow = None
    entrypoint = entry.get("entrypoint")
    if not entrypoint:
        problems.append("has no entrypoint (path/to/file.py:flow_function)")
    else:
        try:
            flow = load_flow(entrypoint, root)
        except Exception as exc:  # noqa: BLE001 - any import failure is the finding
            from prefect.exceptions import MissingFlowError, ScriptError

            if isinstance(exc, ScriptError):
                problems.append(f"entrypoint {entrypoint} does not import: {_describe(exc)}")
            elif isinstance(exc, MissingFlowError):
                problems.append(f"entrypoint {entrypoint} names no Prefect flow: {_describe(exc)}")
            else:
                problems.append(f"entrypoint {entrypoint}: {_describe(exc)}")

    parameters = entry.get("parameters") or {}
    if not isinstance(parameters, dict):
        problems.append(f"parameters is a {type(parameters).__name__}, not a mapping")
        parameters = {}
    elif flow is not None:
        problems += check_parameters(flow, parameters)
        fit_problems, fit_notes = check_fit(flow, parameters, blocks or SavedBlocks())
        problems += fit_problems
        if notes is not None:
            notes += fit_notes

    schedules = entry.get("schedules") or []
    if "schedule" in entry:
        problems.append("uses `schedule:`; prefect.yaml takes a `schedules:` list")
    if not isinstance(schedules, list):
        problems.append("schedules is not a list")
        schedules = []
    summaries = []
    for number, config in enumerate(schedules, start=1):
        schedule_problems, summary = check_schedule(config, number)
        problems += schedule_problems
        summaries.append(summary or f"schedule {number} invalid")
        overrides = config.get("parameters") if isinstance(config, dict) else None
        if isinstance(overrides, dict) and overrides and flow is not None:
            # A scheduled run gets the deployment's parameters updated with the schedule's.
            unknown = check_parameters(flow, overrides, f"schedule {number} parameters", check_required=False)
            problems += unknown or check_parameters(
                flow, {**parameters, **overrides}, f"schedule {number} parameters", check_required=False
            )

    limit = entry.get("concurrency_limit")
    if limit is not None and not isinstance(limit, dict) and (not isinstance(limit, int) or limit < 1):
        problems.append(f"concurrency_limit {limit!r} is not a positive integer")

    flow_name = flow.name if flow is not None else "?"
    summary = f"{f'{flow_name}/{name}':<34} pool={pool_name or '-'}  " + (
        "; ".join(summaries) if summaries else "no schedule"
    )
    return problems, summary


def check(
    path: str | os.PathLike[str] = DEFAULT_PATH,
    root: str | os.PathLike[str] | None = None,
    notes: list[str] | None = None,
) -> list[tuple[str, list[str], str]]:
    """(label, problems, summary) per deployment; a file-level problem has label ''. What could
    not be checked goes to `notes` as '<deployment>: <what>'.

    Entrypoints are relative to `root`, by default the directory holding the file."""
    try:
        entries = load_deployments(path)
    except (OSError, ValueError) as exc:
        return [("", [str(exc)], "")]
    root = Path(root).resolve() if root is not None else project_root(path)
    results, first_use, blocks = [], {}, SavedBlocks()
    names = TargetNames()
    for index, entry in enumerate(entries):
        found: list[str] = []
        problems, summary = check_deployment(entry, root, blocks, found)
        name = entry.get("name")
        if isinstance(name, str) and name:
            if name in first_use:
                problems.append(
                    f"deployment name is already used by deployments[{first_use[name]}]; names must be unique"
                )
            first_use.setdefault(name, index)
        ref = target_ref(entry.get("parameters"))
        block = blocks.load(ref)[0] if ref else None
        clash = names.clash(_label(entry, index), ref, block) if ref and hasattr(block, "engine_name") else None
        if clash:
            problems.append(clash)
        results.append((_label(entry, index), problems, summary))
        if notes is not None:
            notes += [f"{_label(entry, index)}: {note}" for note in found]
    return results


def validate(
    path: str | os.PathLike[str] = DEFAULT_PATH,
    root: str | os.PathLike[str] | None = None,
    notes: list[str] | None = None,
) -> list[str]:
    """Every problem of prefect.yaml, each as '<deployment>: <what is wrong>'; [] when fine.
    What could not be checked (no API, a block not saved yet) goes to `notes`.

    Entrypoints are relative to `root`, by default the directory holding the file."""
    return [
        f"{label}: {problem}" if label else problem
        for label, problems, _ in check(path, root, notes)
        for problem in problems
    ]


def report(path: str | os.PathLike[str], problems: list[str]) -> None:
    print(f"\n{len(problems)} problem{'s' if len(problems) != 1 else ''} in {path}:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vaultflow.deployments.validate", description="Check the deployments of a prefect.yaml."
    )
    parser.add_argument("path", nargs="?", default=DEFAULT_PATH, help="prefect.yaml (default: %(default)s)")
    parser.add_argument(
        "--root", default=None, help="directory the entrypoints are relative to (default: the file's directory)"
    )
    args = parser.parse_args(argv)
    notes: list[str] = []
    results = check(args.path, args.root, notes)
    problems = []
    for label, found, summary in results:
        if label:
            print(f"{'ok  ' if not found else 'FAIL'}  {summary or label}")
        problems += [f"{label}: {p}" if label else p for p in found]
    if notes:
        print(f"\n{len(notes)} note{'s' if len(notes) != 1 else ''} (not checked):")
        for note in notes:
            print(f"  - {note}")
    if problems:
        report(args.path, problems)
        return 1
    print(f"{len(results)} deployments ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
