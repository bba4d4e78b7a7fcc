"""Redis: RDB fulls (BGSAVE or replication), AOF-anchored fulls and AOF increments, restores into
scratch servers, directories or the original server, and key-by-key comparison.

The engine is `vaultflow.engines.redis.engine.RedisEngine`.
"""
