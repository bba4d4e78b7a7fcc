"""The `vaultflow` command. Every command that changes something runs the same Prefect flow
a deployment would run, in-process (imports of flows/ are lazy: the core stays Prefect-free).

Targets and repositories are Prefect blocks given by name (`--target prod`); for ad-hoc use
`--repo-path DIR` stands in for a saved BackupRepository. How commands run flows and fail (one
`error:` line, exit status 1 or 2): vaultflow/cli_run.py; the restore command's options:
vaultflow/cli_restore.py.
"""

from __future__ import annotations

import contextlib
from enum import Enum
from typing import Any

import typer
from rich.table import Table

from vaultflow.catalog_view import last_of
from vaultflow.cli_restore import restore_command
from vaultflow.cli_run import (
    EXIT_CODES_HELP,
    SETTINGS,
    OneLineErrors,
    RepoOpt,
    RepoPathOpt,
    TargetOpt,
    check_blocks,
    prefect_session,
    repository_param,
    run_flow,
)
from vaultflow.cli_run import out as console
from vaultflow.status import CHECK_KINDS
from vaultflow.summary import counted, human_duration, human_size, rto_seconds

app = typer.Typer(
    cls=OneLineErrors,
    help=f"Database backups as Prefect flows. {EXIT_CODES_HELP}",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# The names commands added in other modules used before cli_run.py, as they behaved then (a
# missing --repo-path directory is their command's NotFoundError, exit 1); errors are one line
# whatever a command raises (OneLineErrors).
_run, _one_line_errors = run_flow, contextlib.nullcontext


def _repository(name: str | None, path: str | None):
    return repository_param(name, path, must_exist=False)


@app.callback()
def main(
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Print every log line of the flow runs (default: their warnings only)."
    ),
) -> None:
    """Database backups as Prefect flows."""
    SETTINGS["verbose"] = verbose


@app.command()
def demo(
    workdir: str = typer.Option(".vaultflow-demo", help="Where the demo repository is kept."),
    rows: int = typer.Option(5000, help="Generated employees besides Alice, Bob and Charlie."),
):
    """Back up, drop, restore and compare PostgreSQL, Redis, MongoDB (SecantusDB) and ClickHouse (chDB) demo databases."""
    from vaultflow.demo import run_demo  # the temporary API's settings: vaultflow.demo.ephemeral_api_settings

    raise typer.Exit(run_demo(workdir, rows, console))


class Kind(str, Enum):
    """The backup kinds, each its own flow (flows/full_backup.py, flows/incremental_backup.py)."""

    full = "full"
    incremental = "incremental"
    differential = "differential"


@app.command(epilog=EXIT_CODES_HELP)
def backup(
    target: str = TargetOpt,
    repository: str | None = RepoOpt,
    repo_path: str | None = RepoPathOpt,
    kind: Kind = typer.Option(
        Kind.full,
        "--kind",
        "-k",
        help="full (the full-backup flow); incremental: changes since the latest backup; differential: changes "
        "since the latest full (the incremental-backup / differential-backup flows). A target with no such form, "
        "or no usable parent, takes a full backup and says why.",
    ),
    accept_new_source: bool = typer.Option(
        False,
        "--accept-new-source",
        help="The target's server really moved: accept a source (server, database set) other than its newest "
        "backup's, once. Without it such a backup is refused (two blocks sharing one target_name).",
    ),
):
    """Back up a target (the full-backup, incremental-backup or differential-backup flow)."""
    flow = (
        "vaultflow.flows.full_backup:full_backup"
        if kind == Kind.full
        else f"vaultflow.flows.incremental_backup:{kind.value}_backup"
    )
    extra: dict[str, Any] = {"accept_new_source": True} if accept_new_source else {}
    result = run_flow(
        flow, target=target, repository=repository_param(repository, repo_path, must_exist=False), **extra
    )
    parent = f", parent {result['parent_id']}" if result.get("parent_id") else ""
    console.print(
        f"backup [bold]{result['backup_id']}[/bold]: {human_size(result['stored_size'])} stored "
        f"in {human_duration(result['seconds'])} ({result['kind']}{parent})"
    )
    if result.get("fell_back_to_full"):
        console.print(f"note: a full backup instead of {kind.value}: {result['fell_back_to_full']}", markup=False)


@app.command("archive-logs", epilog=EXIT_CODES_HELP)
def archive_logs(
    target: str = TargetOpt,
    repository: str | None = RepoOpt,
    repo_path: str | None = RepoPathOpt,
    spool: str | None = typer.Option(
        None,
        "--spool",
        help="The spool directory archive_command (`vaultflow wal-push %p --spool DIR`) fills; default: the "
        "target's wal_spool (engines whose log is read from the server ignore it).",
    ),
    follow: float = typer.Option(
        0.0, "--follow", min=0.0, help="Keep shipping for this many seconds (0: ship what is waiting, then stop)."
    ),
):
    """Ship the target's continuous log into the repository (the archive-logs flow: PostgreSQL WAL,
    MongoDB oplog slices), every unit checked after it is stored."""
    result = run_flow(
        "vaultflow.flows.archive_logs:archive_logs",
        target=target,
        repository=repository_param(repository, repo_path, must_exist=False),
        spool_dir=spool,
        follow_seconds=follow,
    )
    console.print(
        f"shipped {len(result['shipped'])} ({human_size(result['raw_bytes'])} -> {human_size(result['stored_bytes'])} "
        f"stored), {len(result['already_stored'])} already stored; lag {result['lag_units']} waiting, "
        f"{human_duration(result['lag_seconds'])}"
    )


app.command("restore", epilog=EXIT_CODES_HELP)(restore_command())


@app.command("list", epilog=EXIT_CODES_HELP)
def list_backups(repository: str | None = RepoOpt, repo_path: str | None = RepoPathOpt):
    """Show the catalog: every complete backup with its last check (verify or drill, a failed one
    also said below the table), manifests that could not be read, and backups
    whose recorded time cannot be trusted (a worker's wrong clock). Ids are never cut: on a
    terminal the table folds long cells; in a pipe or CI log it prints plain columns, whatever
    COLUMNS says."""
    ref = repository_param(repository, repo_path)
    from vaultflow.flows._support import load_repository

    if isinstance(ref, str):
        with prefect_session():
            check_blocks({"repository": ref})
            _, repo = load_repository(ref)
    else:
        _, repo = load_repository(ref)
    targets = repo.targets()
    header = ("target", "backup", "kind", "parent", "finished (UTC)", "stored", "objects", "last check", "clock")
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for engine, target in targets:
        catalog = repo.catalog(engine, target)
        misdated = catalog.clock_problems()
        checks = repo.last_checks(engine, target)
        for m in catalog.manifests:
            why = misdated.get(m.id)
            check = last_of(checks.get(m.id, {}), CHECK_KINDS)
            if check is not None and check.get("result") != "ok":
                notes.append(
                    f"{engine}/{target} {m.id}: its last {check.get('kind')} FAILED at {check.get('time')}: "
                    f"{check.get('detail')}; `vaultflow verify` checks it again"
                )
            rows.append(
                (
                    f"{engine}/{target}",
                    m.id,
                    m.kind.value,
                    m.parent_id or "",
                    m.finished_at.strftime("%Y-%m-%d %H:%M:%S"),
                    human_size(m.stored_size),
                    str(len(m.objects)),
                    f"{check.get('kind')} {check.get('result')}" if check else "never",
                    _clock_label(why) if why else "ok",
                )
            )
            if why:
                notes.append(
                    f"{engine}/{target} {m.id}: {why}; retention holds it (no slot, not deleted) and 'latest' skips it"
                )
        for p in catalog.problems:
            rows.append((f"{engine}/{target}", p.key, "unreadable", p.message, "", "", "", "", ""))
    if not rows:
        console.print(f"no backups in {repo.description}", markup=False, highlight=False)
        return
    _print_table(header, rows)
    for note in notes:
        console.print(f"warning: {note}", markup=False, highlight=False)


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
        console.print(table, soft_wrap=False)  # the table folds its own cells to the terminal
        return
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip())


OnlyTargetOpt = typer.Option(
    None,
    "--target",
    "-t",
    help="Only this target: its block name, or engine/name as `vaultflow list` prints it (no block needed).",
)


@app.command(epilog=EXIT_CODES_HELP)
def verify(
    repository: str | None = RepoOpt,
    repo_path: str | None = RepoPathOpt,
    target: str | None = OnlyTargetOpt,
    quick: bool = typer.Option(False, "--quick", help="Check presence and sizes only, do not re-hash."),
):
    """Re-read every object of every backup and check its checksum, and the continuity of archived
    logs (the verify flow). Exit status 1 when anything is wrong, after checking everything."""
    result = run_flow(
        "vaultflow.flows.verify:verify",
        target_in="repository",
        repository=repository_param(repository, repo_path),
        target=target,
        deep=not quick,
    )
    backups, problems = result["backups"], len(result["problems"])
    console.print(f"{counted(backups, 'backup')} checked, {counted(problems, 'problem')}")


@app.command(epilog=EXIT_CODES_HELP)
def prune(
    repository: str | None = RepoOpt,
    repo_path: str | None = RepoPathOpt,
    target: str | None = OnlyTargetOpt,
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan, delete nothing."),
):
    """Apply the repository's retention policy (the prune flow)."""
    result = run_flow(
        "vaultflow.flows.prune:prune",
        target_in="repository",
        repository=repository_param(repository, repo_path),
        target=target,
        dry_run=dry_run,
    )
    verb = "would delete" if dry_run else "deleted"
    console.print(
        f"kept {len(result['kept'])}, {verb} {len(result['deleted'])} backups, "
        f"{result['orphan_objects']} orphaned objects and {result['log_units_deleted']} archived log units "
        "(WAL segments, oplog slices)"
    )


def rto_option(value: float) -> float:
    """A --rto value checked by the flow's rule (summary.rto_seconds); typer.BadParameter (exit 2)
    otherwise, before anything runs."""
    try:
        return rto_seconds(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command(epilog=EXIT_CODES_HELP)
def drill(
    target: str = TargetOpt,
    repository: str | None = RepoOpt,
    repo_path: str | None = RepoPathOpt,
    rto: float = typer.Option(
        900.0,
        callback=lambda value: rto_option(value),
        help="Recovery time objective in seconds, above 0: a slower restore fails the drill.",
    ),
    backup_id: str = typer.Option("latest", "--backup", "-b", help="The backup to drill: an id, or 'latest'."),
):
    """Restore a backup into scratch databases, compare, time it, drop them (the restore-drill flow)."""
    result = run_flow(
        "vaultflow.flows.restore_drill:restore_drill",
        target=target,
        repository=repository_param(repository, repo_path),
        rto_objective_s=rto,
        backup_id=backup_id,
    )
    console.print(
        f"drill of {result['backup_id']}: {result['comparison']}, restore {human_duration(result['seconds'])}"
    )


@app.command(epilog=EXIT_CODES_HELP)
def upload(
    repository: str | None = RepoOpt,
    repo_path: str | None = RepoPathOpt,
    to: str | None = typer.Option(None, "--to", help="Destination BackupRepository block name."),
    to_path: str | None = typer.Option(None, "--to-path", help="A local directory as destination."),
    target: str | None = OnlyTargetOpt,
    backup_id: str | None = typer.Option(
        None, "--backup", "-b", help="Only this backup ('latest' or an id) and the parents it needs."
    ),
):
    """Copy backups the destination lacks (the upload flow: objects verified, manifest last;
    resumes an interrupted copy)."""
    if bool(to) == bool(to_path):
        raise typer.BadParameter("give exactly one of --to NAME and --to-path DIR", param_hint="--to")
    result = run_flow(
        "vaultflow.flows.upload:upload",
        target_in="source",
        source=repository_param(repository, repo_path),
        destination=repository_param(to, to_path, must_exist=False),
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
import vaultflow.cli_fleet  # noqa: E402, F401 - registers `vaultflow fleet` on app (issue 12)
import vaultflow.cli_status  # noqa: E402, F401 - registers `vaultflow status` on app (issue 12)

if __name__ == "__main__":
    app()
