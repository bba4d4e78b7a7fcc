"""Redis in the contract suite: a local-mode target (data_dir, appendonly yes: AOF-anchored fulls
and AOF increments) on a redis-server of its own. A restore goes to the engine's default place,
a scratch redis-server left running, which the oracle reads and then shuts down. Oracle:
tests/corpus/oracle.py (every key read with its type's own commands, absolute expiry)."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis

from tests.contract.harness import EngineContract
from tests.corpus.oracle import redis_differences, redis_state
from vaultflow.blocks import RedisTarget
from vaultflow.testing.redis_instance import start_source_redis

DATABASES = range(4)


class RestoredRedis:
    """A restored scratch server ('127.0.0.1:port', no password: the source has none) as the
    oracle reads it."""

    def __init__(self, where: str):
        host, port = where.rsplit(":", 1)
        self.host, self.port = host, int(port)

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, db=db)


class RedisLocalAof(EngineContract):
    id = "redis-aof"
    engine = "redis"
    incremental = True

    def __init__(self, servers: Mapping[str, Any], work: Path):
        super().__init__(servers, work)
        self.server = start_source_redis(name="contract")

    def target(self) -> RedisTarget:
        return RedisTarget(
            host=self.server.host,
            port=self.server.port,
            target_name="contract-redis",
            data_dir=str(self.server.directory),
        )

    def write(self) -> None:
        conn = self.server.client()
        conn.mset({f"user:{i}": f"name {i}" for i in range(100)})
        conn.hset("profile:1", mapping={"plan": "pro", "visits": 3})
        conn.rpush("events", "login", "view", "logout")
        conn.sadd("tags", "a", "b", "c")
        conn.zadd("scores", {"ann": 1.5, "bob": 2})
        self.server.client(2).set("other-db", "value in db 2")

    def change(self) -> None:
        conn = self.server.client()
        conn.set("user:1", "renamed")
        conn.delete("user:2", "tags")
        conn.hset("profile:1", "visits", 4)
        conn.rpush("events", "login")
        conn.set("user:new", "added")
        self.server.client(3).set("new-db", "value in db 3")

    def read_source(self):
        return redis_state(self.server, DATABASES)

    def read_restored(self, restored: Mapping[str, str]):
        copy = RestoredRedis(restored["server"])
        try:
            return redis_state(copy, DATABASES)
        finally:
            try:
                copy.client().shutdown(nosave=True)
            except redis.ConnectionError:
                pass  # it went away while answering: that is what shutdown does
            shutil.rmtree(restored["directory"], ignore_errors=True)

    def differences(self, expected, actual) -> list[str]:
        return redis_differences(expected, actual)

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.server.directory, ignore_errors=True)


CONTRACTS = [RedisLocalAof]
