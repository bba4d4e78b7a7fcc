"""Prefect blocks: one per target kind, and the BackupRepository.

Register them with `prefect block register -m vaultflow.blocks`. Target block types are found through
blocks.registry (target_types(), target_type(slug)); a target block class made anywhere
registers itself there by subclassing TargetBlock.
"""

from vaultflow.blocks.clickhouse_target import ClickHouseTarget
from vaultflow.blocks.mongo_target import MongoTarget
from vaultflow.blocks.postgres_target import PostgresTarget
from vaultflow.blocks.redis_target import RedisTarget
from vaultflow.blocks.registry import TargetBlock, register_target, target_type, target_types
from vaultflow.blocks.repository import BackupRepository

__all__ = [
    "ClickHouseTarget",
    "MongoTarget",
    "PostgresTarget",
    "RedisTarget",
    "BackupRepository",
    "TargetBlock",
    "register_target",
    "target_type",
    "target_types",
]
