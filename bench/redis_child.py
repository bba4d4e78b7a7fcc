"""`python -m bench.redis_child`: one remote RDB RedisEngine.full_backup in a process of its own.

The parent (bench.redis.sample_redis_rss) samples this process and its children (redis-cli,
redis-check-rdb) from outside; we report the kernel's high-water
mark of this process (VmHWM) and the RSS once imports are done. One JSON line on stdout.
"""

from __future__ import annotations

import argparse

from bench.backup_child import backup_and_print


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--repo", required=True)
    args = parser.parse_args()

    from vaultflow.engines.redis.engine import RedisEngine
    from vaultflow.engines.redis.settings import RedisSettings

    engine = RedisEngine(RedisSettings(target_name="bench-redis-rss", host=args.host, port=args.port))
    backup_and_print(engine, args.repo)


if __name__ == "__main__":
    main()
