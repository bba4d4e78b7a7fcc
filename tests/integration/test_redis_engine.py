"""The Redis RDB engine against real redis-server 7 sources: remote and local full backups, the
manifest's facts, drills, the three restore modes, secrecy, and BGSAVE already in progress.
Failure modes live in test_redis_failures.py, AOF chains in test_redis_aof.py."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import redis

from tests.fixtures.redis import SEED_USERS
from tests.fixtures.secret_watch import SecretWatch
from vaultflow.engines.base import BackupContext
from vaultflow.engines.redis.engine import RDB_OBJECT, RedisEngine
from vaultflow.engines.redis.server import RedisProcess, find_binary
from vaultflow.engines.redis.settings import RedisRestoreOptions, RedisSettings
from vaultflow.errors import ConfigError, RefusedError
from vaultflow.ports import free_port
from vaultflow.repository import MANIFEST, Repository
from vaultflow.stores import LocalStore


def config_for(server: RedisProcess, name: str, **kw) -> RedisSettings:
    return RedisSettings(
        target_name=name, host=server.host, port=server.port, username=server.username, password=server.password, **kw
    )


def ctx(repo: Repository, logs: list[str] | None = None) -> BackupContext:
    return BackupContext(repo, log=logs.append if logs is not None else (lambda line: None))


def seed(server: RedisProcess, *, short_ttl_ms: int | None = None) -> None:
    """The seed's users plus every type in db 0 and db 3, a long TTL and optionally a short one."""
    db0, db3 = server.client(), server.client(db=3)
    try:
        db0.flushall()
        for key, name in SEED_USERS.items():
            db0.hset(key, mapping={"name": name, "email": f"{name.lower()}@example.com"})
        db0.set("greeting", "héllo wörld ✓".encode())
        db0.set("counter", 41)
        db0.incr("counter")
        db0.set("blob", bytes(range(256)) * 40)
        db0.rpush("queue", *[f"job-{i}" for i in range(50)])
        db0.sadd("tags", "red", "green", "blue")
        db0.zadd("board", {"alice": 3.5, "bob": -1, "charlie": 1e10})
        db0.set("session:abc", "token", ex=3600)
        if short_ttl_ms is not None:
            db0.set("flash", "gone soon", px=short_ttl_ms)
        pipe = db3.pipeline(transaction=False)
        for i in range(500):
            pipe.set(f"db3:str:{i}", f"value {i}" * (i % 7 + 1))
        pipe.hset("db3:hash", mapping={f"f{i}": i for i in range(300)})  # past the listpack limit
        pipe.rpush("db3:list", *range(1000))
        pipe.sadd("db3:intset", *range(100))
        pipe.sadd("db3:set", *[f"m{i}" for i in range(200)])
        pipe.zadd("db3:zset", {f"z{i}": i / 3 for i in range(200)})
        pipe.execute()
    finally:
        db0.close()
        db3.close()


def contents(server: RedisProcess | redis.Redis, dbs=range(16), port: int | None = None) -> dict:
    """Every key of every db with its typed value, and whether it has a TTL."""
    result: dict = {}
    for db in dbs:
        conn = redis.Redis(host="127.0.0.1", port=port, db=db) if port else server.client(db=db)
        with conn:
            keys = sorted(conn.keys("*"))
            if not keys:
                continue
            values = {}
            for key in keys:
                kind = conn.type(key).decode()
                value = {
                    "string": conn.get,
                    "hash": conn.hgetall,
                    "set": conn.smembers,
                    "list": lambda k, conn=conn: conn.lrange(k, 0, -1),
                    "zset": lambda k, conn=conn: conn.zrange(k, 0, -1, withscores=True),
                }[kind](key)
                values[key] = (kind, value, conn.pttl(key) > 0)
            result[db] = values
    return result


def without(data: dict, *names: bytes) -> dict:
    return {db: {k: v for k, v in keys.items() if k not in names} for db, keys in data.items()}


def repo_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def scratch_port(result) -> int:
    return int(result.restored["server"].rsplit(":", 1)[1])


def shutdown(port: int, server: RedisProcess | None = None) -> None:
    """SHUTDOWN NOSAVE; with the source `server`'s login (a restored server keeps it)."""
    login = {"username": server.username, "password": server.password} if server else {}
    with redis.Redis(port=port, retry=None, **login) as conn:
        try:
            conn.shutdown(nosave=True)
        except redis.exceptions.ConnectionError:
            pass


def test_remote_full_backup_manifest_drill_and_restores(redis_source: RedisProcess, tmp_path: Path):
    seed(redis_source, short_ttl_ms=4000)
    engine = RedisEngine(config_for(redis_source, "remote"))
    repo, logs = Repository(LocalStore(tmp_path / "repo")), []

    manifest = engine.full_backup(ctx(repo, logs))
    # the source as the backup saw it (nothing writes to it in between)
    source = contents(redis_source)
    with redis_source.client() as conn:
        info = conn.info("all")
    assert b"flash" in source[0], "the short-TTL key expired before the backup was checked"

    # -- the manifest ------------------------------------------------------------------------
    assert manifest.engine == "redis" and manifest.mode == "rdb" and manifest.kind.value == "full"
    assert manifest.consistency.method == "replication snapshot (redis-cli --rdb)"
    assert manifest.consistency.repl_id == info["master_replid"]
    assert 0 <= manifest.consistency.repl_offset <= info["master_repl_offset"]
    assert manifest.consistency.rdb_version == "10"
    assert abs(manifest.consistency.snapshot_unix_time - time.time()) < 120
    assert manifest.server_version == info["redis_version"] == "7.0.15"
    assert set(manifest.tool_versions) == {"redis-cli", "redis-check-rdb"}
    prints = manifest.fingerprints
    assert set(prints) == {"db0", "db3"}  # counts read from the RDB's RESIZEDB records
    assert prints["db0"]["keys"].rows == len(source[0]) == 3 + 8
    assert prints["db0"]["keys"].digest == "expires=2"
    assert prints["db3"]["keys"].rows == len(source[3]) == 500 + 5
    assert prints["db3"]["keys"].digest == "expires=0"
    [obj] = manifest.objects
    assert obj.key == RDB_OBJECT and obj.raw_size > 10_000 and 0 < obj.stored_size < obj.raw_size
    stored = tmp_path / "repo" / repo.object_key(manifest, RDB_OBJECT)
    assert stored.stat().st_size == obj.stored_size
    assert {p.name for p in repo_files(tmp_path / "repo")} == {RDB_OBJECT, MANIFEST}
    assert repo.catalog("redis", "remote").manifests == [manifest]

    # -- the short TTL passes between backup and drill: the comparison still matches ----------
    deadline = time.monotonic() + 10
    while redis_source.client().exists("flash") and time.monotonic() < deadline:
        time.sleep(0.1)
    with redis_source.client() as conn:
        assert conn.exists("flash") == 0
    drill = engine.drill(ctx(repo), manifest)
    assert drill.comparison.ok, drill.comparison.summary()
    assert {t.database for t in drill.comparison.tables} == {"db0", "db3"}
    assert not Path(drill.restored["directory"]).exists(), "the drill left its scratch files"
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis(port=int(drill.restored["server"].rsplit(":", 1)[1]), retry=None).ping()

    # -- default restore: a running server on another port holding exactly the data ------------
    result = engine.restore(ctx(repo, logs), manifest)
    port = scratch_port(result)
    try:
        assert result.comparison.ok, result.comparison.summary()
        assert port != redis_source.port
        restored = contents(None, port=port)
        assert restored == without(source, b"flash")  # a normal server again: the expired key expired
        assert restored[0][b"user:1000"] == ("hash", {b"name": b"Alice", b"email": b"alice@example.com"}, False)
        assert restored[0][b"session:abc"][2] is True  # the TTL survived
        with redis.Redis(port=port) as conn:
            assert 3000 < conn.ttl("session:abc") <= 3600
            assert conn.get("counter") == b"42"
            assert conn.set("writable", "yes"), "the restored server is still a read-only replica"
        assert any(f"redis-cli -p {port} shutdown nosave" in line for line in logs)
        # ... and in the result's notes, which `vaultflow restore` prints (its log lines are --verbose)
        assert [note for note in result.notes if f"redis-cli -p {port} shutdown nosave" in note], result.notes
    finally:
        shutdown(port)
    assert Path(result.restored["directory"]).is_dir()  # the user's to remove

    # -- into=DIR: only dump.rdb, and a plain redis-server loads it ----------------------------
    out = tmp_path / "files"
    result = engine.restore(ctx(repo), manifest, into=str(out))
    assert result.comparison.ok
    assert result.restored == {"directory": str(out)}
    assert sorted(p.name for p in out.iterdir()) == ["dump.rdb"]
    port = free_port()
    proc = subprocess.Popen(
        [
            str(find_binary("redis-server")),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(out),
            "--dbfilename",
            "dump.rdb",
            "--appendonly",
            "no",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if redis.Redis(port=port, retry=None).ping():
                    break
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                assert time.monotonic() < deadline and proc.poll() is None, "redis-server did not start"
                time.sleep(0.05)
        assert contents(None, port=port) == without(source, b"flash")
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("fixture", ["redis_with_password", "redis_acl"])
def test_password_and_acl_user_never_leak(fixture: str, request, tmp_path: Path):
    server: RedisProcess = request.getfixturevalue(fixture)
    password = server.password
    assert password and len(password) > 12
    if fixture == "redis_acl":
        assert server.username == "backup"
        with pytest.raises(redis.exceptions.AuthenticationError):  # the default user is off
            redis.Redis(port=server.port, password=password, retry=None).ping()
    name = f"secret-{fixture.split('_')[-1]}"
    with server.client() as conn:
        pipe = conn.pipeline(transaction=False)
        for i in range(3000):
            pipe.set(f"{name}:{i}", "x" * 200)
        pipe.execute()
        conn.config_set("rdb-key-save-delay", 200)  # slow the snapshot: redis-cli lives long enough to be seen
    engine = RedisEngine(config_for(server, name))
    repo, logs = Repository(LocalStore(tmp_path / "repo")), []
    try:
        with SecretWatch(password, interval=0.005) as watch:
            manifest = engine.full_backup(ctx(repo, logs))
            result = engine.restore(ctx(repo, logs), manifest)
            port = scratch_port(result)
            with pytest.raises(redis.exceptions.AuthenticationError):  # the source's login, not none
                redis.Redis(port=port, retry=None).ping()
            shutdown(port, server)
    finally:
        with server.client() as conn:
            conn.config_set("rdb-key-save-delay", 0)

    assert result.comparison.ok
    assert manifest.fingerprints["db0"]["keys"].rows >= 3000
    # The source was started before the watch: a redis-server started during it is a scratch server.
    started = {Path(argv[0]).name for argv in watch.spawned if argv}
    assert {"redis-cli", "redis-check-rdb", "redis-server"} <= started, f"the watch never saw the tools: {started}"
    assert watch.leaks == []
    assert logs and not any(password in line for line in logs)
    assert password not in manifest.to_json().decode()
    files = repo_files(tmp_path / "repo")
    assert len(files) == 2
    for path in files:
        assert password.encode() not in path.read_bytes(), path
    # and the fetched RDB itself holds no password (CONFIG is not part of a snapshot)
    scratch_dir = Path(result.restored["directory"])
    assert password.encode() not in (scratch_dir / "dump.rdb").read_bytes()
    assert sorted(p.name for p in scratch_dir.iterdir()) == ["dump.rdb", "redis.log"]  # its redis.conf is gone
    assert password not in (scratch_dir / "redis.log").read_text()


def test_local_mode_bgsave_copy(fresh_redis, tmp_path: Path):
    server = fresh_redis(name="local-rdb", settings={"appendonly": "no"})
    seed(server)
    before = contents(server)
    with server.client() as conn:
        saves = conn.info("persistence")["rdb_saves"]
    engine = RedisEngine(config_for(server, "local", data_dir=str(server.directory)))
    repo = Repository(LocalStore(tmp_path / "repo"))

    manifest = engine.full_backup(ctx(repo))
    assert manifest.mode == "rdb"
    assert manifest.consistency.method == "BGSAVE + copy"
    assert "redis-cli" not in manifest.tool_versions
    with server.client() as conn:
        persistence = conn.info("persistence")
    assert persistence["rdb_saves"] == saves + 1 and persistence["rdb_last_bgsave_status"] == "ok"
    assert (server.directory / "dump.rdb").stat().st_size == manifest.objects[0].raw_size
    assert manifest.fingerprints["db3"]["keys"].rows == 505
    assert manifest.consistency.rdb_crc64 == (server.directory / "dump.rdb").read_bytes()[-8:].hex()

    result = engine.restore(ctx(repo), manifest)
    port = scratch_port(result)
    try:
        assert result.comparison.ok
        assert contents(None, port=port) == before
    finally:
        shutdown(port)


def test_bgsave_in_progress_waits_then_takes_its_own(fresh_redis, tmp_path: Path):
    server = fresh_redis(name="busy-bgsave", settings={"appendonly": "no"})
    conn = server.client()
    pipe = conn.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"k:{i}", i)
    pipe.execute()
    conn.config_set("rdb-key-save-delay", 1000)  # microseconds per key: ~2 s per save
    conn.bgsave()
    assert conn.info("persistence")["rdb_bgsave_in_progress"] == 1
    conn.set("after-bgsave", "must be in the backup")  # the running save's child cannot see this
    engine = RedisEngine(config_for(server, "busy", data_dir=str(server.directory)))
    repo, logs = Repository(LocalStore(tmp_path / "repo")), []

    started = time.monotonic()
    manifest = engine.full_backup(ctx(repo, logs))
    elapsed = time.monotonic() - started
    conn.config_set("rdb-key-save-delay", 0)

    assert any("already running" in line for line in logs), logs
    assert elapsed > 2.5, f"{elapsed:.1f}s: it did not wait for the running BGSAVE and then save again"
    assert conn.info("persistence")["rdb_saves"] == 2
    assert manifest.fingerprints["db0"]["keys"].rows == 2001
    result = engine.restore(ctx(repo), manifest)
    port = scratch_port(result)
    try:
        with redis.Redis(port=port) as copy:
            assert copy.get("after-bgsave") == b"must be in the backup"
            assert copy.dbsize() == 2001
    finally:
        shutdown(port)
        conn.close()


def test_restore_into_the_original(fresh_redis, tmp_path: Path):
    server = fresh_redis(name="original")
    seed(server)
    at_backup = contents(server)
    engine = RedisEngine(config_for(server, "original"))
    repo, logs = Repository(LocalStore(tmp_path / "repo")), []
    manifest = engine.full_backup(ctx(repo))

    with server.client() as db0, server.client(db=3) as db3:
        db0.hset("user:1000", "name", "Mallory")
        db0.delete("user:1001")
        db0.set("added:after", "backup")
        db3.lpush("db3:list", "extra")
        db3.set("db3:new", 1)
    changed = contents(server)
    assert changed != at_backup

    # refused without overwrite: nothing changes
    with pytest.raises(RefusedError) as info:
        engine.restore(ctx(repo), manifest, into="original")
    assert "overwrite" in str(info.value) and server.where in str(info.value)
    assert contents(server) == changed

    # with overwrite: equal to the backup, keys added afterwards gone
    result = engine.restore(ctx(repo, logs), manifest, into="original", overwrite=True)
    assert result.comparison.ok, result.comparison.summary()
    assert result.restored == {"db0": f"{server.where}/db0", "db3": f"{server.where}/db3"}
    assert contents(server) == at_backup
    assert any("1 keys removed" in line for line in logs if line.startswith("db0")), logs
    with server.client() as conn:
        assert conn.hget("user:1000", "name") == b"Alice"
        assert conn.exists("added:after") == 0
        assert 3000 < conn.ttl("session:abc") <= 3600

    # partial: user:* of db0 into db 5; nothing else anywhere changes
    with pytest.raises(ConfigError, match="into the target server: say so with into='original'"):
        engine.restore(ctx(repo), manifest, options=RedisRestoreOptions(key_pattern="user:*", into_db=5))
    with pytest.raises(ConfigError, match="exactly one source db"):
        engine.restore(
            ctx(repo), manifest, into="original", options=RedisRestoreOptions(key_pattern="user:*", into_db=5)
        )
    result = engine.restore(
        ctx(repo),
        manifest,
        into="original",
        databases=["db0"],
        options=RedisRestoreOptions(key_pattern="user:*", into_db=5),
    )
    assert result.comparison.ok
    assert result.restored == {"db0": f"{server.where}/db5"}
    after = contents(server)
    assert after[5] == {k: v for k, v in at_backup[0].items() if k.startswith(b"user:")}
    assert sorted(after[5]) == [b"user:1000", b"user:1001", b"user:1002"]
    assert {db: keys for db, keys in after.items() if db != 5} == at_backup

    # a partial restore refuses to replace existing keys without overwrite
    with server.client(db=5) as conn:
        conn.delete("user:1000", "user:1001")
        conn.hset("user:1002", "name", "Chuck")
    with pytest.raises(RefusedError, match="'user:1002' already exists in db 5"):
        engine.restore(
            ctx(repo),
            manifest,
            into="original",
            databases=["db0"],
            options=RedisRestoreOptions(key_pattern="user:*", into_db=5),
        )
    with server.client(db=5) as conn:  # refused before writing anything: the missing keys stay missing
        assert conn.hget("user:1002", "name") == b"Chuck"
        assert sorted(conn.keys("*")) == [b"user:1002"]
