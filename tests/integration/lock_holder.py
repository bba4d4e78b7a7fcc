"""Another run, in a process of its own, holding a repository lock for test_locks.

The job comes as one JSON line on stdin (the store spec holds the S3 secret: never argv):
    {"store": <vaultflow.stores.spec spec>, "engine": "postgres", "target": "t",
     "purpose": "backup", "exclusive": false, "wait_s": 0, "refresh_s": 300 | null, "stale_s": 1800,
     "payload": <backup id> (optional: write an uncommitted backup's objects, as a backup does),
     "delete": [<backup id>, ...] (optional: delete these committed backups the way prune does,
               "pause_s" between objects: a slow prune), "hold": true (optional: then keep holding)}
Prints "locked <key>" once the lock is held, "deleted" when the deletions are done, and
"released" after releasing; holding ends when stdin gets a line (or closes). A LockHeldError
prints "held-error <message>".
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta


def main() -> None:
    job = json.loads(sys.stdin.readline())
    from vaultflow.errors import LockHeldError
    from vaultflow.locks import LockSettings
    from vaultflow.repository import Repository
    from vaultflow.stores.base import put_bytes
    from vaultflow.stores.spec import build

    refresh = job.get("refresh_s", 300)
    settings = LockSettings(
        wait=timedelta(seconds=job.get("wait_s", 0)),
        stale_after=timedelta(seconds=job.get("stale_s", 1800)),
        refresh_every=None if refresh is None else timedelta(seconds=refresh),
        retry_start=timedelta(seconds=0.2),
        retry_max=timedelta(seconds=1),
    )
    repo = Repository(build(job["store"]), lock_settings=settings)
    engine, target = job["engine"], job["target"]
    try:
        lock = repo.acquire_lock(
            engine, target, job["purpose"], job.get("exclusive", False), log=lambda line: print("log", line, flush=True)
        )
    except LockHeldError as exc:
        print("held-error", exc, flush=True)
        return
    print("locked", lock.key, flush=True)
    if job.get("payload"):
        prefix = repo.backup_prefix(engine, target, job["payload"])
        for name in ("globals.sql.zst", "db/shop.dump.zst"):
            put_bytes(repo.store, prefix + name, b"part of a backup still being written" * 100)
        print("payload", prefix, flush=True)
    for backup_id in job.get("delete", []):
        manifest = repo.catalog(engine, target).get(backup_id)
        prefix = repo.backup_prefix(engine, target, backup_id)
        lock.check()
        repo.store.delete(prefix + "manifest.json")  # manifest first, as Repository.delete_backup
        for info in list(repo.store.list(prefix)):
            time.sleep(job.get("pause_s", 0))
            repo.store.delete(info.key)
        repo.forget_check(manifest)
    if job.get("delete"):
        print("deleted", flush=True)
    if job.get("hold", True):
        sys.stdin.readline()
    repo.release_lock(lock)
    print("released", flush=True)


if __name__ == "__main__":
    main()
