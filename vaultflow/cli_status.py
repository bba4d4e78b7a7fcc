"""`vaultflow status`: the fleet table (vaultflow.status) of every target of a repository.

Registered on vaultflow.cli's `app` by the import at the end of vaultflow/cli.py. Exit status 0
when every target meets its RPO, 1 when one does not (or nothing could be read), 2 for usage
errors: usable as a cron or CI check. `--chart FILE` also draws every target's backups, drills
and failures over time (vaultflow.chart; matplotlib, the `chart` extra, loaded only then).
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import typer

from vaultflow.cli import RepoOpt, RepoPathOpt, _one_line_errors, _print_table, app, console
from vaultflow.cli_run import UsageError, api_problem, ephemeral_api_problem, moment_option, repository_param
from vaultflow.errors import ConfigError, VaultflowError

COLUMNS = (
    "target",
    "last full",
    "last incremental",
    "restorable point",
    "age",
    "RPO",
    "last verify",
    "last drill",
    "RTO",
)


@app.command()
def status(
    repository: str | None = RepoOpt,
    repo_path: str | None = RepoPathOpt,
    as_of: str | None = typer.Option(
        None,
        "--as-of",
        help="Judge the RPO at this moment instead of now: ISO 8601, e.g. 2026-11-30T06:00:00 (no zone: UTC) "
        "or '2026-11-30 06:00:00+01'.",
    ),
    chart: Path | None = typer.Option(
        None,
        "--chart",
        help="Also draw every target's backups (stored size, duration), drills and failures over time "
        "into this PNG file (SVG when it ends in .svg); more than 24 targets go on further pages, "
        "FILE-2.png, ... Needs matplotlib: pip install 'vaultflow\\[chart]'.",
    ),
    chart_days: float | None = typer.Option(
        None, "--chart-days", min=0.001, help="Draw only the last this many days (default: every backup kept)."
    ),
):
    """Every target of the repository: last full and incremental backup, the newest restorable
    point and its age against the target's RPO (rpo_hours on its block, else the default),
    last verify, last drill and its RTO; a target saved as a block with no backup here is a row
    'never backed up'. A Prefect API (PREFECT_API_URL) that does not answer is one error line
    naming it with --repository (exit 1); with --repo-path the table comes from the repository
    alone, and a note says so. Exit 0 when every target meets its RPO, else 1 (also when the repository
    holds no backups at all); 2 for a usage error (no repository given, both --repository and
    --repo-path, a --repo-path that does not exist, a --chart file that cannot be written or
    drawn here)."""
    from vaultflow.flows._support import load_repository
    from vaultflow.flows.status import saved_objectives
    from vaultflow.status import all_met, fleet_line, fleet_status, utc_moment

    now = utc_moment(moment_option(as_of, "--as-of"))
    if chart is not None:
        check_chart_file(chart)
    ref = repository_param(repository, repo_path)
    api_down = api_problem()
    if repository is not None:  # the repository block itself is on the API (a temporary one starts here)
        api_down = api_down or ephemeral_api_problem()
        if api_down:
            raise VaultflowError(api_down)
    with _one_line_errors():
        block, repo = load_repository(ref)
        # A repository block is read from the Prefect API, so its target blocks can be too; with
        # --repo-path alone only a configured API is asked (never a temporary one without blocks),
        # and one that does not answer leaves the table to the repository alone, with a note.
        objectives = {} if api_down else saved_objectives(only_configured_api=repository is None)
        statuses = fleet_status(repo, objectives, now)
    rows = [s.row() for s in statuses]
    _print_table(COLUMNS, [tuple(row[c] for c in COLUMNS) for row in rows])
    for s in statuses:
        for note in s.notes:
            console.print(f"note: {s.engine}/{s.target}: {note}", markup=False, highlight=False, soft_wrap=True)
    if api_down:
        console.print(
            f"note: {api_down}; this table is from the repository alone: the target blocks' RPO objectives "
            "(rpo_hours) could not be read, so the default RPO applies",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if chart is not None:
        draw_chart(chart, block, repo, now, chart_days)
    console.print(fleet_line(statuses, f"repository {repo.description}"), markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(0 if all_met(statuses) else 1)


def check_chart_file(path: Path) -> None:
    """Before anything is read: UsageError (exit 2) when `path` cannot take the chart: not .png,
    .svg or no suffix, a directory, in a directory that does not exist, or matplotlib missing."""
    from vaultflow.chart import chart_format, require_matplotlib

    try:
        chart_format(path)
        require_matplotlib()
    except ConfigError as exc:
        raise UsageError(f"--chart: {exc}") from None
    where = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"--chart {path}: that is a directory; give a file name such as {path / 'status.png'}")
    if not where.is_dir():
        raise UsageError(f"--chart {path}: directory {where} does not exist (or is not a directory)")
    if not os.access(where, os.W_OK):
        raise UsageError(f"--chart {path}: directory {where} is not writable here")


def draw_chart(path: Path, block, repo, now: datetime, days: float | None) -> None:
    """Draw the chart of `repo` at `now` into `path` (and further pages) and say where; failed
    backup runs are read from the Prefect API only for a saved repository block."""
    from vaultflow.chart import write_chart
    from vaultflow.flows.status import chart_history, chart_since, chart_title, repository_name
    from vaultflow.summary import counted

    since = chart_since(now, days)
    with _one_line_errors():
        history, notes = chart_history(repo, repository_name(block), now, since)
        written = write_chart(history, path, chart_title(repo, now, days), now, since)
    shown = counted(len(history), "target")
    pages = f" on {len(written)} pages: {', '.join(str(p) for p in written)}" if len(written) > 1 else f": {written[0]}"
    console.print(f"chart of {shown}{pages}", markup=False, highlight=False, soft_wrap=True)
    for note in notes:
        console.print(f"note: chart: {note}", markup=False, highlight=False, soft_wrap=True)
