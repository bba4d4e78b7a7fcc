"""`python -m bench.redis_child`: one remote RDB RedisEngine.full_backup in a process of its own.

The parent (bench.redis.sample_redis_rss) samples this process and its children (redis-cli,
redis-check-rdb) from outside; we report the kernel's high-water
mark of this process (VmHWM) and the RSS once imports are done. One JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import time

from bench.backup_child import vm_hwm


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--repo", required=True)
    args = parser.parse_args()

    import psutil

    from vaultflow.engines.base import BackupContext
    from vaultflow.engines.redis.engine import RedisEngine
    from vaultflow.engines.redis.settings import RedisSettings
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore

    engine = RedisEngine(RedisSettings(target_name="bench-redis-rss", host=args.host, port=args.port))
    rss_ready = psutil.Process().memory_info().rss
    t0 = time.monotonic()
    manifest = engine.full_backup(BackupContext(repository=Repository(LocalStore(args.repo)), log=lambda line: None))
    print(
        json.dumps(
            {
                "seconds": round(time.monotonic() - t0, 3),
                "stored_size": manifest.stored_size,
                "raw_size": manifest.raw_size,
                "rss_after_imports": rss_ready,
                "vm_hwm": vm_hwm(),
                "timings": {k: round(v, 3) for k, v in manifest.timings.items()},
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
