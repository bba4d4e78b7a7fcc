"""The `vaultflow` command. Every command that changes something runs the same Prefect flow
a deployment would run, in-process (imports of flows/ are lazy: the core stays Prefect-free).

Targets and repositories are Prefect blocks given by name (`--target prod`); for ad-hoc use
`--repo-path DIR` stands in for a saved BackupRepository.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from vaultflow.summary import human_duration, human_size

app = typer.Typer(help="Database backups as Prefect flows.", no_args_is_help=True, add_completion=False)
console = Console()

TargetOpt = typer.Option(
    ...,
    "--target",
    "-t",
    help="Target block name: 'KIND-target/NAME' as `prefect block ls` "
    "shows it, or just NAME when one target kind alone has a block of that name.",
)
RepoOpt = typer.Option(None, "--repository", "-r", help="BackupRepository block name.")
RepoPathOpt = typer.Option(None, "--repo-path", help="A local directory to use as repository instead of a block.")


def _repository(name: str | None, path: str | None):
    if path:
        from blocks import BackupRepository

        return BackupRepository(local_path=path)
    if name:
        return name
    raise typer.BadParameter("give --repository NAME (a BackupRepository block) or --repo-path DIR")


@contextmanager
def _one_line_errors():
    """A VaultflowError becomes one `error: ...` line and exit status 1, not a traceback."""
    from vaultflow.errors import VaultflowError

    try:
        yield
    except VaultflowError as exc:
        # soft_wrap: one line, whatever the width (a path cut by a hard wrap cannot be copied or grepped)
        console.print(f"[red]error:[/red] {exc}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _run(flow_fn, **params):
    """Run a flow in-process with a terminal progress bar; exit 1 with its message on failure."""
    from flows._support import TERMINAL_PROGRESS

    TERMINAL_PROGRESS["enabled"] = True
    with _one_line_errors():
        return flow_fn(**params)


@app.command()
def demo(
    workdir: str = typer.Option(".vaultflow-demo", help="Where the demo repository is kept."),
    rows: int = typer.Option(5000, help="Generated employees besides Alice, Bob and Charlie."),
):
    """Back up, drop, restore and compare PostgreSQL, Redis, MongoDB (SecantusDB) and ClickHouse (chDB) demo databases."""
    import os

    # Prefect's ephemeral API gives up after 20 s by default; a busy 2-core host needs longer.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from vaultflow.demo import run_demo

    raise typer.Exit(run_demo(workdir, rows, console))


@app.command()
def backup(target: str = TargetOpt, repository: str | None = RepoOpt, repo_path: str | None = RepoPathOpt):
    """Take a full backup of a target."""
    from flows.full_backup import full_backup

    result = _run(full_backup, target=target, repository=_repository(repository, repo_path))
    console.print(
        f"backup [bold]{result['backup_id']}[/bold]: {human_size(result['stored_size'])} stored "
        f"in {human_duration(result['seconds'])}"
    )


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


def _option_value(adapter, value: Any) -> Any:
    """An engine option's command-line text as its type: the text itself, else JSON, else a Python
    literal ({'app.*': 'copy.*'}, as the help's examples are written), else for lists 'a,b' and
    for mappings 'from=to,from2=to2'. Raises the first ValidationError when no reading fits."""
    import ast

    from pydantic import ValidationError

    try:
        return adapter.validate_python(value)
    except ValidationError as first:
        readings: list[Any] = []
        if isinstance(value, str):
            for read in (adapter.validate_json, lambda v: adapter.validate_python(ast.literal_eval(v))):
                readings.append(read)
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

    from flows.restore import restore as restore_flow

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
                f"{value!r}: " + "; ".join(e["msg"] for e in exc.errors()) + " (lists: a,b or JSON "
                '\'["a", "b"]\'; mappings: from=to,from2=to2 or JSON \'{"from": "to"}\')',
                param_hint=_flag(name),
            ) from None
    flat = set(inspect.signature(restore_flow.fn).parameters)
    params = {k: v for k, v in given.items() if k in flat}
    extra = {k: v for k, v in given.items() if k not in flat}
    result = _run(
        restore_flow,
        target=target,
        repository=_repository(repository, repo_path),
        backup_id=backup_id,
        into=into,
        overwrite=overwrite,
        databases=database or None,
        **params,
        **({"options": extra} if extra else {}),
    )
    console.print(f"restored {result['backup_id']} -> {result['restored']} in {result['seconds']:.1f} s")
    for note in result.get("notes", []):
        console.print(f"note: {note}")


def _restore_command():
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


app.command("restore")(_restore_command())


@app.command("list")
def list_backups(repository: str | None = RepoOpt, repo_path: str | None = RepoPathOpt):
    """Show the catalog: every complete backup, manifests that could not be read, and backups
    whose recorded time cannot be trusted (a worker's wrong clock). Ids are never cut: on a
    terminal the table folds long cells; in a pipe or CI log it prints plain columns, whatever
    COLUMNS says."""
    from flows._support import load_repository

    with _one_line_errors():
        _, repo = load_repository(_repository(repository, repo_path))
        targets = repo.targets()
    header = ("target", "backup", "kind", "parent", "finished (UTC)", "stored MB", "objects", "clock")
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for engine, target in targets:
        catalog = repo.catalog(engine, target)
        misdated = catalog.clock_problems()
        for m in catalog.manifests:
            why = misdated.get(m.id)
            rows.append(
                (
                    f"{engine}/{target}",
                    m.id,
                    m.kind.value,
                    m.parent_id or "",
                    m.finished_at.strftime("%Y-%m-%d %H:%M:%S"),
                    f"{m.stored_size / 1e6:.2f}",
                    str(len(m.objects)),
                    _clock_label(why) if why else "ok",
                )
            )
            if why:
                notes.append(
                    f"{engine}/{target} {m.id}: {why}; retention holds it (no slot, not deleted) and 'latest' skips it"
                )
        for p in catalog.problems:
            rows.append((f"{engine}/{target}", p.key, "unreadable", p.message, "", "", "", ""))
    _print_table(header, rows)
    for note in notes:
        console.print(f"warning: {note}", markup=False, highlight=False, soft_wrap=not console.is_terminal)


def _clock_label(reason: str) -> str:
    """A short cell for the table; the full reason is printed below it."""
    first = reason.split(":", 1)[0]
    return first if first in ("future-dated", "past-dated") else "clock problem"


def _print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A rich table on a terminal; plain, never-cut columns anywhere else (pipes, CI logs),
    where a width guessed from COLUMNS (or rich's default of 80) would cut ids."""
    if console.is_terminal:
        table = Table(*header)
        for i, column in enumerate(table.columns):  # fold long cells onto more lines rather than cut them
            column.overflow = "fold"
            if header[i] in ("backup", "parent"):  # ids stay whole on one line: they are copied
                column.no_wrap = True
                column.min_width = max(len(r[i]) for r in [header, *rows])
        for row in rows:
            table.add_row(*row, style="red" if row[2] == "unreadable" else None)
        console.print(table)
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())


@app.command()
def verify(
    repository: str | None = RepoOpt,
    repo_path: str | None = RepoPathOpt,
    target: str | None = typer.Option(None, "--target", "-t"),
    quick: bool = typer.Option(False, "--quick", help="Check sizes only, do not re-hash."),
):
    """Re-read every object of every backup and check its checksum."""
    from flows.verify import verify as verify_flow

    result = _run(verify_flow, repository=_repository(repository, repo_path), target=target, deep=not quick)
    backups, problems = result["backups"], len(result["problems"])
    console.print(
        f"{backups} backup{'' if backups == 1 else 's'} checked, {problems} problem{'' if problems == 1 else 's'}"
    )


@app.command()
def prune(
    repository: str | None = RepoOpt,
    repo_path: str | None = RepoPathOpt,
    target: str | None = typer.Option(None, "--target", "-t"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan, delete nothing."),
):
    """Apply the repository's retention policy."""
    from flows.prune import prune as prune_flow

    result = _run(prune_flow, repository=_repository(repository, repo_path), target=target, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    console.print(
        f"kept {len(result['kept'])}, {verb} {len(result['deleted'])} backups, "
        f"{result['orphan_objects']} orphaned objects and {result['log_units_deleted']} archived log units "
        "(WAL segments, oplog slices)"
    )


@app.command()
def drill(
    target: str = TargetOpt,
    repository: str | None = RepoOpt,
    repo_path: str | None = RepoPathOpt,
    rto: float = typer.Option(900.0, help="Recovery time objective in seconds."),
):
    """Restore the latest backup into scratch databases, compare, time it, drop them."""
    from flows.restore_drill import restore_drill

    result = _run(restore_drill, target=target, repository=_repository(repository, repo_path), rto_objective_s=rto)
    console.print(f"drill of {result['backup_id']}: {result['comparison']}, {result['seconds']:.1f} s")


@app.command()
def upload(
    repository: str | None = RepoOpt,
    repo_path: str | None = RepoPathOpt,
    to: str | None = typer.Option(None, "--to", help="Destination BackupRepository block name."),
    to_path: str | None = typer.Option(None, "--to-path", help="A local directory as destination."),
    target: str | None = typer.Option(None, "--target", "-t", help="Only this target's backups."),
    backup_id: str | None = typer.Option(
        None, "--backup", "-b", help="Only this backup ('latest' or an id) and the parents it needs."
    ),
):
    """Copy backups the destination lacks (objects verified, manifest last; resumes an interrupted copy)."""
    from flows.upload import upload as upload_flow

    if bool(to) == bool(to_path):
        raise typer.BadParameter("give exactly one of --to NAME and --to-path DIR", param_hint="--to")
    result = _run(
        upload_flow,
        source=_repository(repository, repo_path),
        destination=_repository(to, to_path),
        target=target,
        backup_id=backup_id,
    )
    console.print(
        f"copied {len(result['copied'])} backups ({result['objects_sent']} objects, "
        f"{human_size(result['bytes_sent'])}); {result['objects_skipped']} objects already there"
    )


def _engine_commands() -> None:
    """Commands an engine adds (PostgreSQL: wal-push, wal-fetch), found through the registry."""
    from vaultflow.engines import registry

    for name in registry.names():
        add_commands = registry.cli_commands(name)
        if add_commands is not None:
            add_commands(app)


_engine_commands()

import vaultflow.cli_automations  # noqa: E402, F401 - registers `vaultflow automations` on `app`
import vaultflow.cli_status  # noqa: E402, F401 - registers `vaultflow status` on app (issue 12)

if __name__ == "__main__":
    app()
