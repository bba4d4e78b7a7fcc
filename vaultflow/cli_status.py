"""`vaultflow status`: the fleet table (vaultflow.status) of every target of a repository.

Registered on vaultflow.cli's `app` by the import at the end of vaultflow/cli.py. Exit status 0
when every target meets its RPO, 1 when one does not (or nothing could be read), 2 for usage
errors: usable as a cron or CI check.
"""

from __future__ import annotations

from datetime import datetime

import typer

from vaultflow.cli import RepoOpt, RepoPathOpt, _one_line_errors, _print_table, app, console
from vaultflow.cli_run import repository_param

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
    as_of: datetime | None = typer.Option(
        None, "--as-of", help="Judge the RPO at this moment (UTC, e.g. 2026-11-30T06:00:00) instead of now."
    ),
):
    """Every target of the repository: last full and incremental backup, the newest restorable
    point and its age against the target's RPO (rpo_hours on its block, else the default),
    last verify, last drill and its RTO; a target saved as a block with no backup here is a row
    'never backed up'. Exit 0 when every target meets its RPO, else 1 (also when the repository
    holds no backups at all); 2 for a usage error (no repository given, both --repository and
    --repo-path, a --repo-path that does not exist)."""
    from vaultflow.flows._support import load_repository
    from vaultflow.flows.status import saved_objectives
    from vaultflow.status import all_met, fleet_line, fleet_status

    with _one_line_errors():
        _, repo = load_repository(repository_param(repository, repo_path))
        # A repository block is read from the Prefect API, so its target blocks can be too; with
        # --repo-path alone only a configured API is asked (never a temporary one without blocks).
        objectives = saved_objectives(only_configured_api=repository is None)
        statuses = fleet_status(repo, objectives, as_of)
    rows = [s.row() for s in statuses]
    _print_table(COLUMNS, [tuple(row[c] for c in COLUMNS) for row in rows])
    for s in statuses:
        for note in s.notes:
            console.print(f"note: {s.engine}/{s.target}: {note}", markup=False, highlight=False, soft_wrap=True)
    console.print(fleet_line(statuses, f"repository {repo.description}"), markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(0 if all_met(statuses) else 1)
