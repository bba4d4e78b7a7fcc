"""`vaultflow fleet check|deploy FILE`, `vaultflow fleet remove NAME`: a fleet of targets, one line each in a fleet file, as
Prefect deployments (one per strategy and work queue, a schedule per target). The Prefect side
lives in deployments/fleet.py (imported inside the commands: the core stays Prefect-free)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from vaultflow.cli import app, console
from vaultflow.cli_run import EXIT_USAGE, print_error

fleet_app = typer.Typer(
    help="Fleets: one line per target in a fleet file; one deployment per strategy and work queue.",
    no_args_is_help=True,
)
app.add_typer(fleet_app, name="fleet")

FileArg = typer.Argument(..., help="The fleet file (docs/operations.md, 'Fleets').")


def _out(line: str) -> None:
    console.print(line, highlight=False, soft_wrap=True, markup=False)


def _run(action, path: Path | str) -> Any:  # noqa: ANN001 - deployments.fleet's check, deploy or remove
    """`action(path)`; a FleetError becomes one `error:` line per problem and exit status 2 (the
    file is wrong, nothing was changed). A Prefect API that does not answer is vaultflow's one
    line naming it, exit status 1 (OneLineErrors)."""
    from vaultflow.deployments.fleet_file import FleetError

    try:
        return action(path)
    except FleetError as exc:
        for problem in exc.problems:
            print_error(problem)
        raise typer.Exit(EXIT_USAGE) from None


@fleet_app.command("check")
def check_fleet(path: Path = FileArg) -> None:
    """Check every line of the fleet file against its saved target block (the block exists, fits
    each strategy of its plan, the plan's parameters suit the flows) and print the deployments it
    makes: each target's schedule and work queue. Changes nothing."""
    from vaultflow.deployments.fleet import check, print_placement

    fleet, specs, notes = _run(check, path)
    print_placement(fleet, specs, _out)
    for note in notes:
        _out(f"note: {note}")


@fleet_app.command("deploy")
def deploy_fleet(path: Path = FileArg) -> None:
    """Check the fleet file, then make its deployments on the Prefect API: create what is
    missing, change what differs (schedule by schedule), remove the schedules of targets no
    longer in the file and the fleet's deployments left without one. Re-running with an unchanged
    file changes nothing. Prints what it did and the worker each work queue needs."""
    from vaultflow.deployments.fleet import deploy, print_report

    fleet, report, notes = _run(deploy, path)
    print_report(fleet, report, _out)
    for note in notes:
        _out(f"note: {note}")


@fleet_app.command("remove")
def remove_fleet(name: str = typer.Argument(..., help="The fleet's name: the `name:` of its fleet file.")) -> None:
    """Delete every deployment of the fleet NAME (those `fleet deploy` made: tagged
    vaultflow-fleet:NAME), e.g. after renaming a fleet, whose old deployments would otherwise keep
    backing up every target a second time. Exit 2 when the fleet has no deployment (its name is
    wrong: the error lists the fleets there are)."""
    from vaultflow.deployments.fleet import remove

    gone = _run(remove, name)
    for full_name in gone:
        _out(f"deleted   {full_name}")
    _out(f"fleet {name}: {len(gone)} deleted")
