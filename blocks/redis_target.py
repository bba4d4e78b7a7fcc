"""RedisTarget: a Redis server to back up, as a Prefect block.

Its fields are vaultflow.engines.redis.settings.RedisSettings: defined there once, for the
block and the engine alike."""

from __future__ import annotations

from vaultflow.blocks.registry import TargetBlock
from vaultflow.engines.redis.settings import RedisSettings


class RedisTarget(RedisSettings, TargetBlock):
    """A Redis server that vaultflow backs up: remotely over the replication protocol, or
    locally (data_dir set, worker on the Redis host) with AOF incrementals.

    Example:
        ```python
        from vaultflow.blocks import RedisTarget

        target = RedisTarget.load("BLOCK_NAME")
        print(target.engine().check())
        ```
    """

    _block_type_name = "Redis Target"
    _block_type_slug = "redis-target"
    _description = "A Redis server backed up by vaultflow: where it is, how to log in, local or remote."
    _documentation_url = "https://github.com/vaultflow/vaultflow/blob/main/docs/redis.md"
