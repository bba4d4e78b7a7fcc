"""Prefect blocks: one per target kind, and the BackupRepository.

Register them with `prefect block register -m blocks`.
"""

from blocks.postgres_target import PostgresTarget
from blocks.redis_target import RedisTarget
from blocks.repository import BackupRepository

__all__ = ["PostgresTarget", "RedisTarget", "BackupRepository"]
