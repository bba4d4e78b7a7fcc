"""Redis corpus: stream consumer groups and pending entries must survive every restore mode.

Before issue 8 the only proof was DEBUG DIGEST, which does not change when a consumer group's
state does (an XACK leaves it equal): a restore that lost pending entries "matched". Each
restore here is judged twice: by vaultflow's own comparison and by the independent oracle
(tests/corpus/oracle.py: DUMP + PEXPIRETIME per key, XINFO STREAM FULL).

Data avoids sets of strings on purpose: Redis 7.0 keeps them in a hash table whose DUMP order
depends on the server's random hash seed, so the oracle's DUMP equality cannot judge them
(vaultflow's comparison falls back to a type-aware one there).
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
import redis

from tests.corpus.oracle import RedisState, redis_differences, redis_state
from vaultflow.engines.redis.compare import compare_copies
from vaultflow.engines.redis.engine import RedisEngine
from vaultflow.engines.redis.server import RedisProcess, start_redis
from vaultflow.engines.redis.settings import RedisRestoreOptions, RedisSettings

HOUR_MS = 3_600_000


def populate(server: RedisProcess) -> None:
    """Two streams with groups, consumers and pending entries (db 0), other types with TTLs (db 2)."""
    db0, db2 = server.client(), server.client(db=2)
    for i in range(1, 21):
        db0.xadd("orders", {"n": i, "sku": f"s{i % 4}"}, id=f"{1000 + i}-0")
    db0.xgroup_create("orders", "billing", id="0")
    db0.xgroup_create("orders", "audit", id="0")
    db0.xreadgroup("billing", "worker-1", {"orders": ">"}, count=8)  # 8 pending for worker-1
    db0.xreadgroup("billing", "worker-2", {"orders": ">"}, count=5)  # 5 pending for worker-2
    db0.xack("orders", "billing", "1001-0", "1002-0")  # 6 + 5 pending
    db0.xreadgroup("audit", "auditor", {"orders": ">"})  # all 20 pending
    db0.xclaim("orders", "billing", "worker-2", 0, ["1003-0"])  # delivery count 2
    db0.xadd("events", {"kind": "login"}, id="1-1")
    db0.xgroup_create("events", "empty-group", id="$")
    db0.set("orders:last", 20)
    db0.set("session:1", "tok", px=5 * HOUR_MS)
    db2.rpush("queue", *[f"job-{i}" for i in range(30)])
    db2.hset("profile:1", mapping={"name": "Alice", "city": "Zürich"})
    db2.zadd("board", {"alice": 3.5, "bob": -1.0})
    db2.sadd("ids", *range(40))
    db2.set("cache:x", b"\x00\xff" * 100, px=2 * HOUR_MS)
    db0.close()
    db2.close()


def engine_for(server: RedisProcess, name: str) -> RedisEngine:
    return RedisEngine(
        RedisSettings(
            target_name=name, host=server.host, port=server.port, username=server.username, password=server.password
        )
    )


def handed_over(result, like: RedisProcess) -> RedisProcess:
    """The server a default restore left running, with the source's login."""
    host, port = result.restored["server"].rsplit(":", 1)
    return RedisProcess(
        directory=Path(result.restored["directory"]),
        port=int(port),
        host=host,
        log_file=Path(result.restored["directory"]) / "redis.log",
        username=like.username,
        password=like.password,
    )


def only(state: RedisState, db: int, prefix: bytes, as_db: int | None = None) -> RedisState:
    return RedisState(
        {
            (as_db if as_db is not None else d, k): v
            for (d, k), v in state.keys.items()
            if d == db and k.startswith(prefix)
        }
    )


def test_comparison_sees_lost_pending_entries_where_debug_digest_does_not(fresh_redis):
    source = fresh_redis(name="pel-a", password=secrets.token_urlsafe(16))
    copy = fresh_redis(name="pel-b", password=secrets.token_urlsafe(16))
    populate(source)
    for db in (0, 2):  # copy every key with its payload and absolute expiry
        with source.client(db=db) as src, copy.client(db=db) as dst:
            for key in src.scan_iter():
                expire_at = src.execute_command("PEXPIRETIME", key)
                dst.restore(key, max(expire_at, 0), src.dump(key), absttl=expire_at > 0)
    plans = [(0, 0), (2, 2)]
    comparison, problems = compare_copies(lambda db: source.client(db=db), lambda db: copy.client(db=db), plans)
    assert comparison.ok and problems == [], problems
    assert redis_differences(redis_state(source), redis_state(copy)) == []

    with copy.client() as conn:
        assert conn.xack("orders", "billing", "1003-0") == 1  # one pending entry lost on the copy
        digest_after = conn.execute_command("DEBUG", "DIGEST")
    with source.client() as conn:
        assert conn.execute_command("DEBUG", "DIGEST") == digest_after  # the old proof saw nothing

    comparison, problems = compare_copies(lambda db: source.client(db=db), lambda db: copy.client(db=db), plans)
    assert not comparison.ok
    assert [t.database for t in comparison.mismatches] == ["db0"]
    assert problems == ["db0 key b'orders' (db0 of the copy): entries, consumer groups or pending entries differ"]
    assert any("b'orders' differs" in p for p in redis_differences(redis_state(source), redis_state(copy)))


def test_every_restore_mode_keeps_consumer_groups(fresh_redis, corpus_ctx, tmp_path: Path):
    source = fresh_redis(name="streams", password=secrets.token_urlsafe(16))
    populate(source)
    engine = engine_for(source, "streams")
    manifest = engine.full_backup(corpus_ctx)
    at_backup = redis_state(source)
    assert {g: f["keys"].rows for g, f in manifest.fingerprints.items()} == {"db0": 4, "db2": 5}
    assert manifest.fingerprints["db0"]["keys"].digest == "expires=1"

    drill = engine.drill(corpus_ctx, manifest)
    assert drill.comparison.ok, drill.comparison.summary()

    # default: a server left running with the source's login, equal to the source at backup time
    result = engine.restore(corpus_ctx, manifest)
    server = handed_over(result, source)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=server.port, retry=None).ping()
        assert result.comparison.ok
        assert redis_differences(at_backup, redis_state(server)) == []
    finally:
        server.client().shutdown(nosave=True)
        shutil.rmtree(server.directory)

    # into=DIR: the directory's dump.rdb, loaded back by a plain server, is the source
    out = tmp_path / "files"
    assert engine.restore(corpus_ctx, manifest, into=str(out)).comparison.ok
    plain_dir = Path(tempfile.mkdtemp(prefix="vf-corpus-plain-"))
    shutil.copy(out / "dump.rdb", plain_dir / "dump.rdb")
    plain = start_redis(plain_dir, settings={"dbfilename": "dump.rdb", "appendonly": "no"})
    try:
        assert redis_differences(at_backup, redis_state(plain)) == []
    finally:
        plain.stop()
        shutil.rmtree(plain_dir)

    # into the original, after consumers acknowledged, deleted and trimmed: everything comes back
    with source.client() as conn:
        conn.xack("orders", "audit", *[f"{1000 + i}-0" for i in range(1, 21)])
        conn.xgroup_delconsumer("orders", "billing", "worker-2")
        conn.xtrim("orders", maxlen=3)
        conn.xgroup_destroy("events", "empty-group")
        conn.set("orders:last", 99)
    assert redis_differences(at_backup, redis_state(source))
    result = engine.restore(corpus_ctx, manifest, into="original", overwrite=True)
    assert result.comparison.ok, result.comparison.summary()
    assert redis_differences(at_backup, redis_state(source)) == []

    # partial: the streams of db 0 into db 7 of the same server; nothing else changes
    result = engine.restore(
        corpus_ctx,
        manifest,
        into="original",
        databases=["db0"],
        options=RedisRestoreOptions(key_pattern="orders*", into_db=7),
    )
    assert result.comparison.ok, result.comparison.summary()
    assert [t.expected_rows for t in result.comparison.tables] == [2]  # orders and orders:last
    after = redis_state(source)
    assert redis_differences(only(at_backup, 0, b"orders", as_db=7), only(after, 7, b"")) == []
    assert redis_differences(at_backup, RedisState({k: v for k, v in after.keys.items() if k[0] != 7})) == []
