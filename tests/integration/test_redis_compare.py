"""The Redis comparison (vaultflow/engines/redis/compare.py) on real servers: what it sees and what
it must not flag; and backups made before issue 8 (DEBUG DIGEST, fingerprint='digest' blocks)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultflow.blocks import RedisTarget
from vaultflow.engines.base import BackupContext
from vaultflow.engines.redis.client import KEYSPACE, RedisSettings
from vaultflow.engines.redis.compare import compare_copies
from vaultflow.engines.redis.engine import RedisEngine
from vaultflow.errors import IntegrityError
from vaultflow.manifest import Fingerprint
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore


def clients(server):
    return lambda db: server.client(db=db)


def copy_all(src_server, dst_server, db: int = 0) -> None:
    with src_server.client(db=db) as src, dst_server.client(db=db) as dst:
        for key in src.scan_iter():
            expire_at = src.execute_command("PEXPIRETIME", key)
            dst.restore(key, max(expire_at, 0), src.dump(key), replace=True, absttl=expire_at > 0)


def test_encoding_differences_match_real_differences_do_not(fresh_redis):
    a, b = fresh_redis(name="cmp-a"), fresh_redis(name="cmp-b")
    with a.client() as conn:
        conn.sadd("tags", *[f"t{i}" for i in range(50)])  # hash table: DUMP order is per-server
        conn.hset("wide", mapping={f"f{i}": "v" * 100 for i in range(200)})
        conn.set("ttl", "x", px=3_600_000)
        conn.rpush("list", *range(10))
    copy_all(a, b)
    with a.client() as ca, b.client() as cb:
        assert ca.dump("tags") != cb.dump("tags")  # the case the type-aware fallback exists for
    comparison, problems = compare_copies(clients(a), clients(b), [(0, 0)])
    assert comparison.ok and problems == [], problems
    assert [(t.expected_rows, t.actual_rows) for t in comparison.tables] == [(4, 4)]

    with b.client() as conn:
        conn.srem("tags", "t7")
        conn.pexpireat("ttl", conn.execute_command("PEXPIRETIME", "ttl") + 1)  # one millisecond later
        conn.delete("list")
        conn.set("extra", 1)
    comparison, problems = compare_copies(clients(a), clients(b), [(0, 0)])
    assert not comparison.ok
    ttl = [p for p in problems if p.startswith("db0 key b'ttl' (db0 of the copy): expiry ")]
    assert len(ttl) == 1, problems
    assert sorted(set(problems) - set(ttl)) == sorted(
        [
            "db0 key b'tags' (db0 of the copy): value differ",
            "db0 key b'list' (db0 of the copy): missing",
            "db0 key b'extra' of the copy is not in the backup",
        ]
    )
    # a partial comparison looks at the pattern only and ignores keys only the copy has
    comparison, problems = compare_copies(clients(a), clients(b), [(0, 0)], pattern="wide", extra_is_difference=False)
    assert comparison.ok and problems == []


def test_backups_from_before_issue_8_still_restore_and_check_their_digest(redis_source, tmp_path: Path):
    with redis_source.client() as conn:
        conn.flushall()
        conn.mset({f"old:{i}": i for i in range(100)})
        digest = conn.execute_command("DEBUG", "DIGEST").decode()
    # a saved block of that time, with fingerprint='digest', still loads and works
    block = RedisTarget(host=redis_source.host, port=redis_source.port, fingerprint="digest", target_name="old")
    engine = block.engine()
    assert isinstance(engine, RedisEngine) and engine.config.fingerprint == "digest"
    ctx = BackupContext(Repository(LocalStore(tmp_path / "repo")), log=lambda line: None)
    manifest = engine.full_backup(ctx)
    assert KEYSPACE not in manifest.fingerprints  # never recorded any more

    old = manifest.model_copy(
        update={
            "fingerprints": {
                **manifest.fingerprints,
                KEYSPACE: {"all": Fingerprint(count=100, digest=digest, method="debug-digest")},
            }
        }
    )
    drill = engine.drill(ctx, old)
    assert drill.comparison.ok and KEYSPACE in {t.database for t in drill.comparison.tables}

    wrong = old.model_copy(
        update={
            "fingerprints": {
                **manifest.fingerprints,
                KEYSPACE: {"all": Fingerprint(count=100, digest="0" * 40, method="debug-digest")},
            }
        }
    )
    with pytest.raises(IntegrityError, match="keyspace"):
        engine.drill(ctx, wrong)


def test_a_restore_refuses_an_rdb_whose_crc64_is_not_the_recorded_one(redis_source, tmp_path: Path):
    with redis_source.client() as conn:
        conn.set("crc", "x")
    engine = RedisEngine(RedisSettings(target_name="crc", host="127.0.0.1", port=redis_source.port))
    ctx = BackupContext(Repository(LocalStore(tmp_path / "repo")), log=lambda line: None)
    manifest = engine.full_backup(ctx)
    other = "0123456789abcdef" if manifest.consistency.rdb_crc64 != "0123456789abcdef" else "fedcba9876543210"
    forged = manifest.model_copy(update={"consistency": manifest.consistency.model_copy(update={"rdb_crc64": other})})
    with pytest.raises(IntegrityError, match=f"CRC64 {other}"):
        engine.drill(ctx, forged)
