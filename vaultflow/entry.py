"""The `vaultflow` executable. wal-push / wal-fetch bypass typer: PostgreSQL runs them once
per WAL file, so they must start fast (no typer, rich or Prefect import) and keep the exit
statuses PostgreSQL relies on (typer's usage errors exit 2, which a restore_command caller
would take for "not archived")."""

from __future__ import annotations

import sys

FAST_COMMANDS = {"wal-push": "push", "wal-fetch": "fetch"}


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] in FAST_COMMANDS:
        from vaultflow.engines.postgres.wal.cli import main as wal_main

        sys.exit(wal_main([FAST_COMMANDS[args[0]], *args[1:]]))
    from vaultflow.cli import app

    app()
