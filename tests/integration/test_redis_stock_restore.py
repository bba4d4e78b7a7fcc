"""A Redis RDB backup restores with stock tools alone, exactly as docs/redis.md says:
sha256sum against the manifest, zstd -d, redis-check-rdb, redis-server --dir --dbfilename."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import redis

from tests.fixtures.redis import SEED_USERS
from vaultflow.engines.base import BackupContext
from vaultflow.engines.redis.engine import RedisEngine
from vaultflow.engines.redis.server import RedisProcess
from vaultflow.engines.redis.settings import RedisSettings
from vaultflow.ports import free_port
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore


def sh(script: str, cwd: Path) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin"},
    )
    assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def wait_until_serving(proc: subprocess.Popen, port: int, timeout: float = 30.0) -> None:
    """Until the stock redis-server answers PING (it says LOADING while it reads its data)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with redis.Redis(port=port, retry=None) as conn:
                conn.ping()
            return
        except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)


def test_rdb_restore_with_sha256sum_zstd_redis_check_rdb_and_redis_server(fresh_redis, tmp_path: Path):
    server: RedisProcess = fresh_redis(name="stock", password="stock-secret-pw-123")
    with server.client() as db0, server.client(db=3) as db3:
        for key, name in SEED_USERS.items():
            db0.set(key, name)
        db0.hset("profile:1000", mapping={"name": "Alice", "city": "Zürich"})
        db0.rpush("events", *[f"e{i}" for i in range(100)])
        db0.zadd("scores", {"alice": 10, "bob": 7.5})
        db0.set("session", "abc", ex=3600)
        db3.sadd("db3:set", *range(50))
    engine = RedisEngine(
        RedisSettings(target_name="stock", host=server.host, port=server.port, password=server.password)
    )
    manifest = engine.full_backup(BackupContext(Repository(LocalStore(tmp_path / "repo")), log=lambda line: None))
    backup_dir = tmp_path / "repo/redis/stock/backups" / manifest.id
    restore_dir = tmp_path / "restore"
    restore_dir.mkdir()

    # 1. the stored object against the manifest's sha256 (of the stored, compressed bytes)
    objects = json.loads((backup_dir / "manifest.json").read_text())["objects"]
    assert [o["key"] for o in objects] == ["dump.rdb.zst"]
    (tmp_path / "SHA256SUMS").write_text("".join(f"{o['sha256']}  {o['key']}\n" for o in objects))
    assert sh(f"sha256sum -c {tmp_path / 'SHA256SUMS'}", backup_dir).strip() == "dump.rdb.zst: OK"

    # 2. decompress, 3. check the RDB
    sh(f"zstd -qd dump.rdb.zst -o {restore_dir}/dump.rdb", backup_dir)
    assert (restore_dir / "dump.rdb").stat().st_size == objects[0]["raw_size"]
    assert "RDB looks OK" in sh("redis-check-rdb dump.rdb", restore_dir)
    crc = json.loads((backup_dir / "manifest.json").read_text())["consistency"]["rdb_crc64"]
    assert sh("tail -c 8 dump.rdb | od -An -tx1 | tr -d ' \\n'", restore_dir) == crc  # the CRC64 recorded

    # 4. a plain redis-server on that directory (appendonly no: it must load dump.rdb)
    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(restore_dir),
            "--dbfilename",
            "dump.rdb",
            "--appendonly",
            "no",
            "--save",
            "",
            "--enable-debug-command",
            "local",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=restore_dir,
    )
    try:
        wait_until_serving(proc, port)
        with redis.Redis(port=port) as db0, redis.Redis(port=port, db=3) as db3:
            assert {k: db0.get(k).decode() for k in SEED_USERS} == SEED_USERS
            assert db0.hgetall("profile:1000") == {b"name": b"Alice", b"city": "Zürich".encode()}
            assert db0.lrange("events", 0, -1) == [f"e{i}".encode() for i in range(100)]
            assert db0.zrange("scores", 0, -1, withscores=True) == [(b"bob", 7.5), (b"alice", 10.0)]
            assert 3000 < db0.ttl("session") <= 3600
            assert db3.smembers("db3:set") == {str(i).encode() for i in range(50)}
            # the same keyspace the backup fingerprinted
            assert db0.dbsize() == manifest.fingerprints["db0"]["keys"].rows == 7
            assert db3.dbsize() == manifest.fingerprints["db3"]["keys"].rows == 1
            # no password came along: the RDB holds data, not configuration
            assert db0.config_get("requirepass")["requirepass"] == ""
    finally:
        proc.kill()
        proc.wait()


def test_aof_chain_restore_by_hand_as_documented(fresh_redis, tmp_path: Path):
    """The AOF chain procedure of docs/redis.md: full + two incrementals, rebuilt with jq, zstd and
    cat-by-append, checked by redis-check-aof, loaded by a plain redis-server."""
    from vaultflow.manifest import BackupKind

    server: RedisProcess = fresh_redis(name="stock-aof")  # appendonly yes, Redis 7 multi-part AOF
    engine = RedisEngine(
        RedisSettings(target_name="stockaof", host=server.host, port=server.port, data_dir=str(server.directory))
    )
    ctx = BackupContext(Repository(LocalStore(tmp_path / "repo")), log=lambda line: None)
    ids = []
    with server.client() as conn:
        for key, name in SEED_USERS.items():
            conn.set(key, name)
        conn.rpush("events", *range(100))
        ids.append(engine.full_backup(ctx).id)
        conn.set("user:1003", "Dave")
        conn.incr("counter")
        ids.append(engine.incremental_backup(ctx, BackupKind.INCREMENTAL).id)
        conn.delete("user:1001")
        conn.hset("profile:1000", "city", "Zürich")
        conn.incr("counter")
        last = engine.incremental_backup(ctx, BackupKind.INCREMENTAL)
        ids.append(last.id)
        expected = {k.decode(): conn.dump(k) for k in conn.keys("*")}
        conn.set("after:last", "not in the backup")
    assert last.mode == "aof" and last.parent_id == ids[1]
    restore_dir = tmp_path / "restore"

    script = f"""
B={tmp_path}/repo/redis/stockaof/backups
CHAIN="{" ".join(ids)}"
LAST={ids[-1]}
DIR=$(jq -r .consistency.aof_dir $B/$LAST/manifest.json)
NAME=$(jq -r .consistency.aof_filename $B/$LAST/manifest.json)
mkdir -p {restore_dir}/$DIR
for id in $CHAIN; do
  (cd $B/$id && jq -r '.objects[] | "\\(.sha256)  \\(.key)"' manifest.json | sha256sum -c -)
  jq -r '.consistency.pieces[] | "\\(.file) \\(.object) \\(.offset)"' $B/$id/manifest.json |
  while read -r file object offset; do
    test "$(stat -c %s {restore_dir}/$DIR/$file 2>/dev/null || echo 0)" = "$offset" ||
      {{ echo "gap before $id/$object" >&2; exit 1; }}
    zstd -qdc $B/$id/$object >> {restore_dir}/$DIR/$file
  done
done
zstd -qdc $B/$LAST/aof/manifest.zst > {restore_dir}/$DIR/$NAME.manifest
redis-check-aof {restore_dir}/$DIR/$NAME.manifest
echo "$DIR $NAME"
"""
    out = sh(script, tmp_path)
    manifests = ctx.repository.catalog("redis", "stockaof").manifests
    assert [m.id for m in manifests] == ids
    assert out.count(": OK") == sum(len(m.objects) for m in manifests) >= 6  # every object of the chain
    assert "All AOF files and manifest are valid" in out, out
    aof_dir, aof_name = out.strip().splitlines()[-1].split()

    port = free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(restore_dir),
            "--appendonly",
            "yes",
            "--appenddirname",
            aof_dir,
            "--appendfilename",
            aof_name,
            "--save",
            "",
            "--enable-debug-command",
            "local",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=restore_dir,
    )
    try:
        wait_until_serving(proc, port)
        with redis.Redis(port=port) as conn:
            assert {k.decode(): conn.dump(k) for k in conn.keys("*")} == expected
            assert conn.get("user:1003") == b"Dave" and conn.exists("user:1001") == 0
            assert conn.get("counter") == b"2"
            assert conn.dbsize() == last.fingerprints["db0"]["keys"].rows
    finally:
        proc.kill()
        proc.wait()
