"""Proving Redis copies, in two steps (issue 8, section 2).

1. The scratch copy against the backup-time facts (`check_scratch`): a scratch replica loaded
   from the sha256-verified object (its loader checks the RDB's CRC64) must hold, per db, the
   key and expire counts the backup read from the RDB's own RESIZEDB records and redis-check-rdb
   confirmed. Backups made before issue 8 also carry a DEBUG DIGEST (`keyspace`); it is checked
   for them, and never recorded any more: it does not see consumer-group state.
2. Wherever the data lands against the proven scratch copy (`compare_copies`): per key, the
   DUMP payload (the serialized value: stream entries, consumer groups, pending entries and
   consumers included) and the absolute expiry (PEXPIRETIME, ms). When payloads differ only
   by encoding (another server version or *-max-listpack-* settings on the target), a
   type-aware comparison decides: values, and for streams XRANGE plus XINFO STREAM FULL.

Keys whose TTL passes while they are compared are skipped: neither side would hold them.
Needs Redis 7.0+ on both sides (PEXPIRETIME).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from vaultflow.compare import Comparison, TableComparison, compare_database
from vaultflow.engines.redis.client import KEYSPACE, fingerprint_server
from vaultflow.manifest import Fingerprint

BATCH = 500
TOTAL = "total"  # facts group when the backup could only prove the total (see redis_rdb_format)
ClientFactory = Callable[[int], redis.Redis]


def facts_fingerprints(databases: dict[int, tuple[int, int]]) -> dict[str, dict[str, Fingerprint]]:
    """The manifest's fingerprints from per-db (keys, expires); db -1 means "total only"."""
    return {
        (TOTAL if db < 0 else f"db{db}"): {"keys": Fingerprint(count=keys, digest=f"expires={expires}", method="count")}
        for db, (keys, expires) in sorted(databases.items())
    }


def check_scratch(expected: dict[str, dict[str, Fingerprint]], conn: redis.Redis) -> Comparison:
    """A scratch replica (INFO keyspace; DEBUG DIGEST for pre-issue-8 backups) against the
    manifest's fingerprints: one row per db, plus `keyspace` for a digest."""
    actual = fingerprint_server(conn, "digest" if KEYSPACE in expected else "counts")
    if TOTAL in expected:
        dbs = [v["keys"] for k, v in actual.items() if k.startswith("db")]
        actual = {
            TOTAL: {
                "keys": Fingerprint(
                    count=sum(f.count for f in dbs),
                    method="count",
                    digest=f"expires={sum(int(f.digest.split('=')[1]) for f in dbs)}",
                )
            }
        }
    tables: list[TableComparison] = []
    for group in sorted(set(expected) | set(actual)):
        tables += compare_database(group, expected.get(group, {}), actual.get(group, {}))
    return Comparison(tables, noun="databases")


def scan_batches(conn: redis.Redis, pattern: str):
    """Keys matching `pattern` (SCAN MATCH), in lists of up to BATCH keys."""
    batch: list[bytes] = []
    for key in conn.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _read(conn: redis.Redis, keys: list[bytes]) -> list[tuple[bytes, bytes | None, int]]:
    """(type, DUMP payload, PEXPIRETIME) per key; payload None for a key that is gone."""
    pipe = conn.pipeline(transaction=False)
    for key in keys:
        pipe.type(key)
        pipe.dump(key)
        pipe.execute_command("PEXPIRETIME", key)
    flat = pipe.execute()
    return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]


def logical_value(conn: redis.Redis, key: bytes, kind: bytes | str):
    """A value as a user sees it, independent of its encoding; None for module types."""
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if kind == "string":
        return conn.get(key)
    if kind == "list":
        return conn.lrange(key, 0, -1)
    if kind == "set":
        return sorted(conn.smembers(key))
    if kind == "zset":
        return conn.zrange(key, 0, -1, withscores=True)
    if kind == "hash":
        return sorted(conn.hgetall(key).items())
    if kind == "stream":
        return conn.xrange(key), conn.execute_command("XINFO", "STREAM", key, "FULL", "COUNT", "0")
    return None


def _expired(expire_at: int) -> bool:
    return expire_at >= 0 and expire_at <= time.time() * 1000


def compare_copies(
    expected: ClientFactory,
    actual: ClientFactory,
    plans: list[tuple[int, int]],
    *,
    pattern: str = "*",
    extra_is_difference: bool = True,
    limit: int = 20,
) -> tuple[Comparison, list[str]]:
    """Every key of `expected` (matching `pattern`, per (expected db, actual db) in `plans`)
    against `actual`; with `extra_is_difference` keys only `actual` holds count too.

    expected/actual: db number -> a redis.Redis connection (closed here). Returns the
    comparison (one row per db: keys expected, keys equal) and the first `limit` differences
    in words ("db0 key b'q': pending entries or value differ"). Raises redis errors as is.
    """
    tables: list[TableComparison] = []
    problems: list[str] = []

    def differ(text: str) -> None:
        if len(problems) < limit:
            problems.append(text)

    for source_db, target_db in plans:
        wanted = equal = extra = 0
        with expected(source_db) as src, actual(target_db) as dst:
            for keys in scan_batches(src, pattern):
                for key, (kind, dump, exp_at), (kind2, dump2, exp_at2) in zip(
                    keys, _read(src, keys), _read(dst, keys), strict=True
                ):
                    if dump is None or _expired(exp_at):
                        continue  # gone or expired meanwhile on the proven side
                    wanted += 1
                    where = f"db{source_db} key {key!r} (db{target_db} of the copy)"
                    if dump2 is None:
                        if not _expired(exp_at):
                            differ(f"{where}: missing")
                        continue
                    if exp_at != exp_at2:
                        differ(f"{where}: expiry {exp_at} vs {exp_at2} (ms since epoch, -1 = none)")
                    elif kind != kind2:
                        differ(f"{where}: type {kind!r} vs {kind2!r}")
                    elif dump != dump2 and (
                        logical_value(src, key, kind) is None
                        or logical_value(src, key, kind) != logical_value(dst, key, kind2)
                    ):
                        what = "entries, consumer groups or pending entries" if kind == b"stream" else "value"
                        differ(f"{where}: {what} differ")
                    else:
                        equal += 1
            if extra_is_difference:
                for keys in scan_batches(dst, pattern):
                    pipe = src.pipeline(transaction=False)
                    for key in keys:
                        pipe.exists(key)
                    for key, present in zip(keys, pipe.execute(), strict=True):
                        if not present:
                            extra += 1
                            differ(f"db{target_db} key {key!r} of the copy is not in the backup")
        label = f"keys {pattern!r} -> db{target_db}" + (f", {extra} extra" if extra else "")
        tables.append(
            TableComparison(
                f"db{source_db}", label, wanted, equal, "match" if wanted == equal and not extra else "mismatch"
            )
        )
    return Comparison(tables, noun="key patterns"), problems
