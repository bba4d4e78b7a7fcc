"""One full backup (or restore drill), run the way a worker runs it (repository lock held), in a process of its
own so that test_killed_runs can SIGKILL it at a random moment.

The job comes as JSON on stdin (never argv or the environment: it holds the password):
    {"engine": "postgres" | "redis", "config": {...}, "store": <vaultflow.stores.spec spec>,
     "min_part_size": <bytes, optional: S3 part size>, "action": "drill" (optional: drill instead),
     or "action": "restore" with "into": <database> (a logical restore of the latest backup there)}
Prints "started" once everything is imported and the backup is about to begin, and
"committed <backup id>" if it finishes.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    job = json.loads(sys.stdin.read())
    from vaultflow.engines.base import BackupContext
    from vaultflow.repository import Repository
    from vaultflow.stores.spec import build

    if job["engine"] == "redis":
        from vaultflow.engines.redis.engine import RedisEngine
        from vaultflow.engines.redis.settings import RedisSettings

        engine = RedisEngine(RedisSettings(**job["config"]))
    else:
        from vaultflow.engines.postgres.engine import PostgresEngine
        from vaultflow.engines.postgres.settings import PostgresSettings

        engine = PostgresEngine(PostgresSettings(**job["config"]))
    repo = Repository(build(job["store"]))
    if job.get("min_part_size"):  # S3: multipart uploads from a few MB on
        repo.store.min_part_size = job["min_part_size"]
    print("started", flush=True)
    if job.get("action") == "drill":  # a restore drill of the latest backup instead
        result = engine.drill(
            BackupContext(repo, log=lambda line: None), repo.catalog(engine.name, engine.config.name).resolve("latest")
        )
        print("drilled", result.comparison.ok, flush=True)
        return
    if job.get("action") == "restore":  # a restore of the latest backup into job["into"] instead
        result = engine.restore(
            BackupContext(repo, log=lambda line: None),
            repo.catalog(engine.name, engine.config.name).resolve("latest"),
            into=job["into"],
        )
        print("restored", result.comparison.ok, flush=True)
        return
    with repo.locked(engine.name, engine.config.name, log=lambda line: None):
        manifest = engine.full_backup(BackupContext(repo, log=lambda line: None))
    print("committed", manifest.id, flush=True)


if __name__ == "__main__":
    main()
