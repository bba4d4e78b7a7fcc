"""The `vaultflow` commands PostgreSQL adds (found by vaultflow.engines.registry.cli_commands):
wal-push (archive_command) and wal-fetch (restore_command).

`vaultflow wal-push/wal-fetch` as PostgreSQL runs them take the fast path of vaultflow/entry.py
(no typer); these typer commands give them their --help and serve `python -m vaultflow.cli`.
"""

from __future__ import annotations

import typer


def add_commands(app: typer.Typer) -> None:
    """Add wal-push and wal-fetch to the `vaultflow` typer app."""

    @app.command("wal-push")
    def wal_push(
        path: str = typer.Argument(..., help="%p: the WAL file PostgreSQL hands over."),
        spool: str = typer.Option(..., help="Spool directory on this host (created 0700)."),
    ):
        """archive_command: copy a WAL file into the local spool, fsynced (archive-logs ships it)."""
        from vaultflow.engines.postgres.wal.cli import push_command  # run-time import: --help stays fast

        raise typer.Exit(push_command(path, spool))

    @app.command("wal-fetch")
    def wal_fetch(
        name: str = typer.Argument(..., help="%f: the WAL file name."),
        dest: str = typer.Argument(..., help="%p: where PostgreSQL wants it."),
        target: str = typer.Option(..., "--target", "-t", help="Target name in the repository."),
        repo_path: str | None = typer.Option(None, "--repo-path", help="The repository directory."),
        repo_config: str | None = typer.Option(
            None, "--repo-config", help="A 0600 JSON file describing the repository's store (local, s3, mirror)."
        ),
        spool: str | None = typer.Option(None, help="Also look in this spool first."),
    ):
        """restore_command: restore one archived WAL file, sha256-checked (exit 1: not archived)."""
        from vaultflow.engines.postgres.wal.cli import EXIT_ABORT_RECOVERY, fetch_command  # see wal_push

        if bool(repo_path) == bool(repo_config):
            typer.echo("vaultflow wal-fetch: give exactly one of --repo-path DIR and --repo-config FILE", err=True)
            raise typer.Exit(EXIT_ABORT_RECOVERY)
        raise typer.Exit(
            fetch_command(name, dest, target=target, repo_path=repo_path, spool=spool, repo_config=repo_config)
        )
