"""`vaultflow automations apply|list|remove`: the alert automations (vaultflow.alerts) on the
Prefect API, applied with one command. The Prefect calls live in deployments/automations.py
(imported inside the commands: the core stays Prefect-free)."""

from __future__ import annotations

import typer

from vaultflow.cli import RepoOpt, RepoPathOpt, _one_line_errors, app, console

automations_app = typer.Typer(
    help="Alert automations on the Prefect API: backup overdue (RPO), drill failed, verify failed, archive lag.",
    no_args_is_help=True,
)
app.add_typer(automations_app, name="automations")


@automations_app.command("apply")
def apply_automations(
    notify: str = typer.Option(
        ...,
        "--notify",
        "-n",
        help="Notification block as TYPE/NAME, e.g. slack-webhook/oncall, custom-webhook/pager, sendgrid-email/dba.",
    ),
    repository: str | None = RepoOpt,
    repo_path: str | None = RepoPathOpt,
) -> None:
    """Create or update the alert automations of every saved target block (and, with a
    repository, every target that has backups there); delete those of targets that are gone.
    Safe to re-run: it updates only what changed (an unchanged alert keeps its clock), never
    duplicates."""
    from vaultflow.cli_run import check_api
    from vaultflow.deployments.automations import apply

    check_api()
    _notification_block(notify)
    with _one_line_errors():
        repo = None
        if repository or repo_path:
            from vaultflow.cli_run import repository_param
            from vaultflow.flows._support import load_repository

            _, repo = load_repository(repository_param(repository, repo_path))
        report = apply(notify, repo)
    for verb, names in (("created", report.created), ("updated", report.updated), ("deleted", report.deleted)):
        for name in names:
            console.print(f"{verb:8} {name}", highlight=False, soft_wrap=True)
    console.print(
        f"{len(report.created)} created, {len(report.updated)} updated, {len(report.unchanged)} unchanged, "
        f"{len(report.deleted)} deleted; "
        f"notifications go to {notify}",
        highlight=False,
    )


@automations_app.command("list")
def list_automations() -> None:
    """The alert automations vaultflow made on this Prefect API."""
    from vaultflow.cli_run import check_api
    from vaultflow.deployments.automations import managed

    check_api()
    for _, name in managed():
        console.print(name, highlight=False, soft_wrap=True)


@automations_app.command("remove")
def remove_automations() -> None:
    """Delete every alert automation vaultflow made on this Prefect API."""
    from vaultflow.cli_run import check_api
    from vaultflow.deployments.automations import remove_all

    check_api()
    gone = remove_all()
    console.print(f"{len(gone)} automations deleted", highlight=False)


def _notification_block(ref: str) -> None:
    """--notify's block, looked up before anything is changed: a malformed name, no such block,
    or one that cannot notify is a usage error (exit 2), like any unknown block name."""
    from vaultflow.cli_run import UsageError
    from vaultflow.deployments.automations import notification_block_id
    from vaultflow.errors import ConfigError, NotFoundError

    try:
        notification_block_id(ref)
    except (ConfigError, NotFoundError) as exc:
        raise UsageError(str(exc)) from None
