"""`vaultflow restore`: the generic restore options, then one option per restore option of every
registered engine (point-in-time recovery: --to-time, --to-lsn, --to-name, --to-timeline for
PostgreSQL, --to-ts for MongoDB; key patterns for Redis; tables and partitions for ClickHouse),
each described by its engine's field; nothing here names an engine."""

from __future__ import annotations

import re
from typing import Any

import typer

from vaultflow.cli_run import (
    MOMENT_FORMS,
    RepoOpt,
    RepoPathOpt,
    TargetOpt,
    UsageError,
    out,
    read_moment,
    repository_param,
    run_flow,
)
from vaultflow.errors import VaultflowError
from vaultflow.summary import human_duration


def _engine_restore_options() -> dict[str, tuple[Any, list[str]]]:
    """Every restore option of every registered engine (vaultflow.engines.registry): option name
    -> (its pydantic field, the engines that take it). The restore command gets one CLI option
    each, described by the field; nothing here names an engine."""
    from pydantic.fields import FieldInfo

    from vaultflow.engines import registry

    options: dict[str, tuple[Any, list[str]]] = {}
    helps: dict[str, list[str]] = {}
    for name in registry.names():  # registry.restore_options: no engine (driver) import at CLI start
        model = registry.restore_options(name)
        for field_name, field in model.model_fields.items() if model is not None else ():
            options.setdefault(field_name, (field, []))[1].append(name)
            helps.setdefault(field_name, [])
            if field.description and field.description not in helps[field_name]:
                helps[field_name].append(field.description)
    # An option several engines take (to_time) is described by each of them.
    return {
        name: (FieldInfo.merge_field_infos(field, description=" ".join(helps[name]) or None), engines)
        for name, (field, engines) in options.items()
    }


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shape_hint(annotation: Any) -> str:
    """How to write a value of `annotation` on the command line, for an error: the forms of the
    list, mapping and date-and-time parts it has ('' when it has none of them)."""
    import typing
    from datetime import datetime

    forms: dict[str, str] = {}

    def walk(tp: Any) -> None:
        origin = typing.get_origin(tp)
        if tp is datetime:
            forms["time"] = f"a time: {MOMENT_FORMS}"
        elif origin is list:
            forms["list"] = 'lists: a,b or JSON \'["a", "b"]\''
        elif origin is dict:
            forms["dict"] = 'mappings: from=to,from2=to2 or JSON \'{"from": "to"}\''
        for arg in typing.get_args(tp):
            walk(arg)

    walk(annotation)
    return f" ({'; '.join(forms.values())})" if forms else ""


def _option_value(adapter, value: Any) -> Any:
    """An engine option's command-line text as its type: the text itself, else a date and time as
    datetime.fromisoformat reads it ('2026-01-05 14:30:00+00'), else JSON, else a Python literal
    ({'app.*': 'copy.*'}, as the help's examples are written), else for lists 'a,b' and for
    mappings 'from=to,from2=to2'. Raises the first ValidationError when no reading fits."""
    import ast

    from pydantic import ValidationError

    try:
        return adapter.validate_python(value)
    except ValidationError as first:
        readings: list[Any] = []
        if isinstance(value, str):
            readings.append(lambda v: adapter.validate_python(read_moment(v)))
            readings.append(adapter.validate_json)
            readings.append(lambda v: adapter.validate_python(ast.literal_eval(v)))
            parts = [part.strip() for part in value.split(",") if part.strip()]
            if parts and all("=" in part for part in parts):
                pairs = dict(part.split("=", 1) for part in parts)
                readings.append(lambda v: adapter.validate_python(pairs))
            readings.append(lambda v: adapter.validate_python(parts))
        for read in readings:
            try:
                return read(value)
            except (ValidationError, ValueError, SyntaxError):
                continue
        raise first


def cli_wording(message: str, option_names: list[str]) -> str:
    """A restore's error line as the command line says it: a refusal from the flow names its
    parameters (`overwrite=True`, `into='original'`, `key_pattern`, as a deployment's run form
    has them); from the CLI the same line names the flags (`--overwrite`, `--into original`,
    `--key-pattern`). `option_names`: the engines' restore options (snake_case)."""
    message = re.sub(r"\boverwrite=True\b", "--overwrite", message)
    message = re.sub(r"\binto=(['\"])([^'\"\s]+)\1", r"--into \2", message)
    message = message.replace("`into`", "--into").replace("`databases`", "--database")
    for name in (n for n in option_names if "_" in n):  # an identifier: never a word of the text
        message = re.sub(rf"\b{name}\b", _flag(name), message)
    return message


def _options_fit_engine(target: Any, given: list[str], known: dict[str, tuple[Any, list[str]]]) -> None:
    """UsageError (exit 2) when an engine option given is not one of the target's engine (--to-time
    on a Redis target): said before the run starts, naming the flag and the engines that take it.
    `target`: the block or its name (looked up already); `known`: _engine_restore_options()."""
    from vaultflow.flows._support import load_target

    engine = load_target(target).engine_name
    for name in given:
        engines = known[name][1]
        if engine not in engines:
            raise UsageError(
                f"{_flag(name)} is a restore option of {' and '.join(engines)} targets, not of {engine} targets "
                f"like {getattr(target, 'name', target)}: drop it (`vaultflow restore --help` lists each option's engines)"
            )


def _restore(
    target: str,
    repository: str | None,
    repo_path: str | None,
    backup_id: str,
    into: str | None,
    overwrite: bool,
    database: list[str] | None,
    **engine_options: Any,
) -> None:
    """Restore a backup: by default into a new place the target's engine names (a new database,
    a scratch server), or over `--into` with --overwrite. Engine options apply to their engine only."""
    import inspect

    from pydantic import TypeAdapter, ValidationError

    known = _engine_restore_options()
    given: dict[str, Any] = {}
    for name, value in engine_options.items():
        if value is None or value is False:
            continue
        field = known[name][0]
        adapter = TypeAdapter(field.annotation)
        try:  # a value of the wrong shape is the option's fault, said before anything runs
            given[name] = _option_value(adapter, value)
        except ValidationError as exc:
            raise typer.BadParameter(
                f"{value!r}: " + "; ".join(e["msg"] for e in exc.errors()) + _shape_hint(field.annotation),
                param_hint=_flag(name),
            ) from None
    if overwrite and into is None:  # it would be ignored without a word: every default place is new
        raise typer.BadParameter(
            "--overwrite replaces what --into names; without --into the restore goes to a new place: add --into NAME",
            param_hint="--overwrite",
        )
    repo = repository_param(repository, repo_path)  # a missing directory is said before the flow's import
    from vaultflow.flows.restore import restore as restore_flow

    flat = set(inspect.signature(restore_flow.fn).parameters)
    params = {k: v for k, v in given.items() if k in flat}
    extra = {k: v for k, v in given.items() if k not in flat}
    try:
        result = run_flow(
            "vaultflow.flows.restore:restore",
            before_run=lambda params: _options_fit_engine(params["target"], sorted(given), known),
            target=target,
            repository=repo,
            backup_id=backup_id,
            into=into,
            overwrite=overwrite,
            databases=database or None,
            **params,
            **({"options": extra} if extra else {}),  # type: ignore[arg-type]  # flow parameters, not run_flow's own
        )
    except VaultflowError as exc:  # one line, naming flags (its class kept: it decides the exit status)
        exc.args = (cli_wording(str(exc), list(known)),)
        raise
    where = ", ".join(f"{src} -> {dest}" if src != dest else dest for src, dest in result["restored"].items())
    lines = [f"restored {result['backup_id']} into {where} in {human_duration(result['seconds'])}"]
    lines.append(f"recovery point: {result['recovery_point']}")
    if result.get("timeline"):
        lines.append(f"timeline: {result['timeline']}")
    for line in lines:  # paths and ids whole, never folded to the terminal's width
        out.print(line, markup=False, highlight=False, soft_wrap=True)
    for note in result.get("notes", []):
        out.print(f"note: {note}", markup=False, highlight=False)


def restore_command():
    """The restore command: generic options, then one option per engine restore option."""
    import inspect

    generic = [
        inspect.Parameter("target", inspect.Parameter.KEYWORD_ONLY, default=TargetOpt, annotation=str),
        inspect.Parameter("repository", inspect.Parameter.KEYWORD_ONLY, default=RepoOpt, annotation=str | None),
        inspect.Parameter("repo_path", inspect.Parameter.KEYWORD_ONLY, default=RepoPathOpt, annotation=str | None),
        inspect.Parameter(
            "backup_id",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option("latest", "--backup", "-b", help="Backup id, or 'latest'."),
            annotation=str,
        ),
        inspect.Parameter(
            "into",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=str | None,
            default=typer.Option(
                None,
                help="Where to restore, as the target's engine names it (a database name or data directory, "
                "a directory, 'original' for the target server); default: a new place.",
            ),
        ),
        inspect.Parameter(
            "overwrite",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=bool,
            default=typer.Option(False, "--overwrite", help="Replace `into` if it exists."),
        ),
        inspect.Parameter(
            "database",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=list[str] | None,
            default=typer.Option(
                None, "--database", "-d", help="Only these databases of the backup, as its manifest names them."
            ),
        ),
    ]
    engine = []
    for name, (field, engines) in _engine_restore_options().items():
        is_flag = field.annotation is bool
        help_text = f"{field.description or name} [{', '.join(engines)}]"
        engine.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=bool if is_flag else str | None,
                default=typer.Option(False if is_flag else None, _flag(name), help=help_text),
            )
        )

    def restore(**kwargs: Any) -> None:
        _restore(**kwargs)

    restore.__doc__ = _restore.__doc__
    restore.__signature__ = inspect.Signature(generic + engine)
    return restore
