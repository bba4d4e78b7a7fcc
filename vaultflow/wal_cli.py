"""Kept so `python -m vaultflow.wal_cli push|fetch` in existing archive_command and
restore_command settings keeps working; the code is vaultflow.engines.postgres.wal.cli."""

import sys

from vaultflow.engines.postgres.wal.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
