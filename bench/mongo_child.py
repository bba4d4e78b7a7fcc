"""`python -m bench.mongo_child`: one MongoEngine.full_backup in a process of its own.

The parent (bench.subproc.sample_child_rss) samples this process's RSS from outside; we report the
kernel's high-water mark of this process (VmHWM) and the RSS once imports are done. One JSON line.
"""

from __future__ import annotations

import argparse

from bench.backup_child import backup_and_print


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", action="append", required=True, help="a database to back up (repeatable)")
    parser.add_argument("--repo", required=True)
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    args = parser.parse_args()

    from vaultflow.engines.mongodb.engine import MongoEngine
    from vaultflow.engines.mongodb.settings import MongoSettings

    engine = MongoEngine(
        MongoSettings(
            target_name="bench-mongo-rss",
            host=args.host,
            port=args.port,
            databases=args.database,
            connect_timeout=args.connect_timeout,
        )
    )
    backup_and_print(engine, args.repo)


if __name__ == "__main__":
    main()
