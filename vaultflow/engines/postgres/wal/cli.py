"""archive_command / restore_command entry: `python -m vaultflow.engines.postgres.wal.cli push|fetch ...`.

    archive_command = '/path/to/python -m vaultflow.engines.postgres.wal.cli push %p --spool /var/lib/vaultflow/wal-spool'
    restore_command = '/path/to/python -m vaultflow.engines.postgres.wal.cli fetch %f %p --repo-path /srv/backups --target prod'
    restore_command = '/path/to/python -m vaultflow.engines.postgres.wal.cli fetch %f %p --repo-config /private/repository.json --target prod'

--repo-config names a 0600 JSON file describing the repository's store (local, s3 or mirror;
vaultflow.stores.spec), credentials included: S3 secrets never appear on argv or in
postgresql.auto.conf. boto3 is imported only when an S3 store is actually read.

PostgreSQL runs these once per WAL file, so start-up time is the cost: this module imports
only argparse and `vaultflow.engines.postgres.wal` (standard library only at import time), never Prefect,
typer or rich. `vaultflow wal-push` / `wal-fetch` call `push_command` / `fetch_command`.

Exit statuses, as PostgreSQL reads them:
  push   0 spooled (or already spooled, identical); 1 failed (PostgreSQL retries later).
  fetch  0 restored; 1 not archived (the normal end of the archive, silent);
         255 any error (corrupt segment, unreadable repository, bad arguments): PostgreSQL
         treats an exit status above 125 as fatal and aborts recovery, instead of taking the
         failure for the end of the archive and promoting with WAL missing. (126 and 127
         would work too but PostgreSQL would log them as "command not executable/found".)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaultflow.errors import VaultflowError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_FOUND = 1
EXIT_ABORT_RECOVERY = 255


def _say(command: str, message: str) -> None:
    print(f"vaultflow wal-{command}: {message}", file=sys.stderr, flush=True)


def push_command(path: str | Path, spool: str | Path) -> int:
    try:
        from vaultflow.engines.postgres.wal import wal_push

        wal_push(Path(path), Path(spool))
    except Exception as exc:  # noqa: BLE001 - PostgreSQL only sees the status; say why on stderr
        _say("push", f"error: {exc}")
        return EXIT_FAILED
    return EXIT_OK


def _open_repository(repo_path: str | None, repo_config: str | None = None):
    """The repository's store: a local directory (--repo-path) or a spec file (--repo-config)."""
    if repo_path:
        from vaultflow.stores.local import LocalStore

        return LocalStore(repo_path)
    if repo_config:
        from vaultflow.stores import spec

        return spec.build(spec.read_spec_file(repo_config), where=f"repository spec file {repo_config}")
    raise VaultflowError("give --repo-path DIR or --repo-config FILE")


def fetch_command(
    name: str,
    dest: str | Path,
    *,
    target: str,
    repo_path: str | None = None,
    spool: str | Path | None = None,
    repo_config: str | None = None,
) -> int:
    try:  # imports too: a broken install must not look like the end of the archive
        from vaultflow.engines.postgres.wal import wal_fetch

        store = _open_repository(repo_path, repo_config)
        found = wal_fetch(name, Path(dest), store, target, Path(spool) if spool else None)
    except Exception as exc:  # noqa: BLE001 - anything but "not archived" must stop recovery
        _say("fetch", f"error, aborting recovery: {exc}")
        return EXIT_ABORT_RECOVERY
    return EXIT_OK if found else EXIT_NOT_FOUND


class _Parser(argparse.ArgumentParser):
    """argparse with a settable exit status for usage errors (fetch: abort recovery)."""

    error_status = 2

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(self.error_status, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m vaultflow.engines.postgres.wal.cli",
        description="WAL archiving for PostgreSQL's archive_command and restore_command.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    push = commands.add_parser("push", help="archive_command: copy a WAL file into the local spool")
    push.add_argument("path", help="the WAL file (%%p)")
    push.add_argument("--spool", required=True, help="spool directory (created 0700 if missing)")
    push.error_status = EXIT_FAILED

    fetch = commands.add_parser("fetch", help="restore_command: restore an archived WAL file")
    fetch.add_argument("name", help="the WAL file name (%%f)")
    fetch.add_argument("dest", help="where to write it (%%p)")
    where = fetch.add_mutually_exclusive_group(required=True)  # --repository BLOCK joins here
    where.add_argument("--repo-path", help="a local directory repository")
    where.add_argument(
        "--repo-config",
        help="a 0600 JSON file describing the repository's store (local, s3 or mirror, with its credentials)",
    )
    fetch.add_argument("--target", required=True, help="target name in the repository")
    fetch.add_argument("--spool", help="also look in this spool (files not shipped yet) first")
    fetch.error_status = EXIT_ABORT_RECOVERY
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "push":
        return push_command(args.path, args.spool)
    return fetch_command(
        args.name,
        args.dest,
        target=args.target,
        repo_path=args.repo_path,
        spool=args.spool,
        repo_config=args.repo_config,
    )


if __name__ == "__main__":
    sys.exit(main())
