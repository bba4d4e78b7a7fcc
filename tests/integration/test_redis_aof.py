"""AOF-anchored Redis backups against real redis-server 7 sources: a chain full -> incremental ->
incremental -> differential, every backup restored into a fresh directory, started and
compared; sizes; broken chains; damaged pieces; a write load during the backup."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.corpus.oracle import redis_differences, redis_state
from vaultflow.engines.base import BackupContext
from vaultflow.engines.redis.aof import MANIFEST_OBJECT, aof_full_backup, aof_incremental_backup, materialize_aof_chain
from vaultflow.engines.redis.client import fingerprint_server
from vaultflow.engines.redis.consistency import RedisRdbConsistency
from vaultflow.engines.redis.rdb import start_replica_scratch
from vaultflow.engines.redis.server import RedisProcess, start_redis
from vaultflow.engines.redis.settings import RedisSettings
from vaultflow.errors import AuthenticationError, ChainBrokenError, ConfigError, IntegrityError, RefusedError
from vaultflow.manifest import BackupKind, BackupMode, Manifest
from vaultflow.repository import MANIFEST, Repository
from vaultflow.stores import LocalStore
from vaultflow.tools import wait_until

INCR, DIFF = BackupKind.INCREMENTAL, BackupKind.DIFFERENTIAL


def config_for(server: RedisProcess, name: str = "aof", local: bool = True) -> RedisSettings:
    return RedisSettings(
        target_name=name,
        host=server.host,
        port=server.port,
        username=server.username,
        password=server.password,
        data_dir=str(server.directory) if local else None,
    )


@pytest.fixture
def repo(tmp_path) -> Repository:
    return Repository(LocalStore(tmp_path / "repo"))


def ctx(repo: Repository, logs: list[str] | None = None) -> BackupContext:
    return BackupContext(repo, log=logs.append if logs is not None else (lambda line: None))


def restored(repo: Repository, manifest: Manifest, dest: Path) -> RedisProcess:
    """The backup materialized into `dest` and a scratch server started on it (caller stops)."""
    settings = materialize_aof_chain(ctx(repo), manifest, dest)
    assert (dest / settings["appenddirname"] / f"{settings['appendfilename']}.manifest").is_file()
    return start_redis(dest, settings=settings)


def restored_prints(repo: Repository, manifest: Manifest, dest: Path) -> dict:
    server = restored(repo, manifest, dest)
    try:
        with server.client() as conn:
            return fingerprint_server(conn)
    finally:
        server.stop()


def live_prints(server: RedisProcess) -> dict:
    with server.client() as conn:
        return fingerprint_server(conn)


def change(server: RedisProcess, step: int) -> None:
    """Changes of every type in db 0 and db 3 (long TTLs: nothing expires during the test)."""
    db0, db3 = server.client(), server.client(db=3)
    db0.set(f"str:{step}", f"value {step}")
    db0.hset("user:1000", mapping={"name": "Alice", "visits": step})
    db0.lpush("queue", *[f"job-{step}-{i}" for i in range(5)])
    db0.sadd("tags", f"t{step}", f"u{step}")
    db0.zadd("board", {f"p{step}": step * 1.5, "alice": step})
    db0.incr("counter", step + 1)
    db0.expire(f"str:{step}", 3600 + step)
    if step:
        db0.delete(f"str:{step - 1}")
        db3.delete(f"db3:{step - 1}")
    db3.set(f"db3:{step}", "x" * (100 + step))
    db3.hset(f"db3:hash:{step}", "f", step)
    db3.expire(f"db3:hash:{step}", 7200)
    db0.close()
    db3.close()


def test_chain_full_incr_incr_diff_each_restores_and_matches(fresh_redis, repo, tmp_path):
    server = fresh_redis(name="aof-chain")
    config = config_for(server)
    change(server, 0)
    full = aof_full_backup(config, ctx(repo))
    states = [redis_state(server)]  # the oracle's view of the source at each cut (no writes since)
    assert live_prints(server) == full.fingerprints  # no writes since: the cut is the live state
    change(server, 1)
    incr1 = aof_incremental_backup(config, ctx(repo), full, INCR)
    states.append(redis_state(server))
    change(server, 2)
    incr2 = aof_incremental_backup(config, ctx(repo), incr1, INCR)
    states.append(redis_state(server))
    change(server, 3)
    diff = aof_incremental_backup(config, ctx(repo), full, DIFF)
    states.append(redis_state(server))
    assert live_prints(server) == diff.fingerprints

    assert full.kind == BackupKind.FULL
    assert (incr1.parent_id, incr2.parent_id, diff.parent_id) == (full.id, incr1.id, full.id)
    assert {m.engine for m in (full, incr1, incr2, diff)} == {"redis"}
    assert {m.mode for m in (full, incr1, incr2, diff)} == {"aof"}
    assert full.server_version.startswith("7.")
    base = full.consistency.base
    assert {m.consistency.base for m in (incr1, incr2, diff)} == {base}
    assert any(o.role == "aof-base" for o in full.objects)
    assert not any(o.role == "aof-base" for o in incr1.objects + incr2.objects + diff.objects)
    incr_file = full.consistency.incr_files[-1]
    # each increment continues exactly at its parent's cut; the differential at the full's
    assert [p.offset for p in incr2.consistency.pieces] == [incr1.consistency.cuts[incr_file]]
    assert [p.offset for p in diff.consistency.pieces] == [full.consistency.cuts[incr_file]]
    assert diff.consistency.cuts[incr_file] > incr2.consistency.cuts[incr_file]
    # every step changed the data, so every restore is a real test
    assert all(redis_differences(a, b) for i, a in enumerate(states) for b in states[i + 1 :])

    for manifest in (full, incr1, incr2, diff):
        dest = tmp_path / f"restore-{manifest.id}"
        assert restored_prints(repo, manifest, dest) == manifest.fingerprints, manifest.id
    # and the data itself, not only its digest
    server2 = restored(repo, incr2, tmp_path / "values")
    try:
        db0, db3 = server2.client(), server2.client(db=3)
        assert db0.hgetall("user:1000") == {b"name": b"Alice", b"visits": b"2"}
        assert db0.get("str:2") == b"value 2" and db0.get("str:1") is None
        assert 3000 < db0.ttl("str:2") <= 3602  # absolute expiry kept (PEXPIREAT in the AOF)
        assert int(db0.get("counter")) == 1 + 2 + 3
        assert db0.llen("queue") == 15 and db0.zscore("board", "p2") == 3.0
        assert db3.get("db3:2") == b"x" * 102 and db3.exists("db3:1") == 0
        db0.close()
        db3.close()
    finally:
        server2.stop()


def test_incremental_after_one_percent_changed_is_small(fresh_redis, repo, tmp_path):
    server = fresh_redis(name="aof-size")
    config = config_for(server)
    keys = 25_000
    with server.client() as conn:
        pipe = conn.pipeline(transaction=False)
        for i in range(keys):
            pipe.set(f"key:{i:06d}", os.urandom(60).hex())
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
    full = aof_full_backup(config, ctx(repo))
    with server.client() as conn:
        pipe = conn.pipeline(transaction=False)
        for i in range(0, keys, 100):  # 1% of the keys
            pipe.set(f"key:{i:06d}", os.urandom(60).hex())
        pipe.execute()
    incr = aof_incremental_backup(config, ctx(repo), full, INCR)
    print(
        f"\nAOF sizes, {keys} keys, 1% changed: full stored {full.stored_size} B (raw {full.raw_size}), "
        f"incremental stored {incr.stored_size} B (raw {incr.raw_size}), "
        f"{100 * incr.stored_size / full.stored_size:.2f}% of the full"
    )
    assert full.fingerprints["db0"]["keys"].rows == keys
    assert incr.stored_size <= 0.05 * full.stored_size
    assert incr.raw_size >= keys // 100 * 120  # it really holds the 250 new values
    assert restored_prints(repo, incr, tmp_path / "restore") == incr.fingerprints


def test_rewrite_between_backups_breaks_the_chain(fresh_redis, repo):
    server = fresh_redis(name="aof-rewrite")
    config = config_for(server)
    change(server, 0)
    full = aof_full_backup(config, ctx(repo))
    change(server, 1)
    with server.client() as conn:
        conn.bgrewriteaof()
    wait_new_base(server, full.consistency.base)
    with pytest.raises(ChainBrokenError) as info:
        aof_incremental_backup(config, ctx(repo), full, INCR)
    message = str(info.value)
    assert full.consistency.base in message and "taking a full" in message
    new_base = read_base(server)
    assert new_base != full.consistency.base and new_base in message
    assert [m.id for m in repo.catalog("redis", config.name).manifests] == [full.id]
    assert not [i for i in repo.store.list("redis/aof/backups/") if full.id not in i.key]  # no payload left


def read_base(server: RedisProcess) -> str:
    text = (server.directory / "appendonlydir" / "appendonly.aof.manifest").read_text()
    return next(line.split()[1] for line in text.splitlines() if line.endswith("type b"))


def wait_new_base(server: RedisProcess, old: str) -> None:
    deadline = time.monotonic() + 30
    while read_base(server) == old or server.client().info("persistence")["aof_rewrite_in_progress"]:
        assert time.monotonic() < deadline, "BGREWRITEAOF did not finish"
        time.sleep(0.05)


def test_appendonly_off_or_no_data_dir_breaks_the_chain(fresh_redis, repo):
    server = fresh_redis(name="aof-off")
    config = config_for(server)
    change(server, 0)
    full = aof_full_backup(config, ctx(repo))
    with pytest.raises(ChainBrokenError, match="no data_dir.*taking a full"):
        aof_incremental_backup(config_for(server, local=False), ctx(repo), full, INCR)
    with server.client() as conn:
        conn.config_set("appendonly", "no")
    with pytest.raises(ChainBrokenError, match=f"appendonly is off on 127.0.0.1:{server.port}.*taking a full"):
        aof_incremental_backup(config, ctx(repo), full, DIFF)
    with pytest.raises(ConfigError, match="appendonly is off.*RDB full"):
        aof_full_backup(config, ctx(repo))
    assert [m.id for m in repo.catalog("redis", config.name).manifests] == [full.id]


def test_damaged_parent_piece_refuses_and_leaves_nothing(fresh_redis, repo, tmp_path):
    server = fresh_redis(name="aof-damage")
    config = config_for(server)
    change(server, 0)
    full = aof_full_backup(config, ctx(repo))
    change(server, 1)
    incr1 = aof_incremental_backup(config, ctx(repo), full, INCR)
    change(server, 2)
    incr2 = aof_incremental_backup(config, ctx(repo), incr1, INCR)
    root = Path(repo.store.root)
    piece = incr1.consistency.pieces[0].object
    path = root / repo.object_key(incr1, piece)
    original = path.read_bytes()

    # a flipped byte: found while streaming, after other files were written -> nothing remains
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    dest = tmp_path / "dest-corrupt"
    with pytest.raises(IntegrityError, match=f"{incr1.id}/{piece}"):
        materialize_aof_chain(ctx(repo), incr2, dest)
    assert not dest.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".vfaof-")]

    # a missing piece: refused before anything is written, an empty dest stays empty
    path.unlink()
    dest = tmp_path / "dest-missing"
    dest.mkdir()
    with pytest.raises(IntegrityError, match="missing"):
        materialize_aof_chain(ctx(repo), incr2, dest)
    assert list(dest.iterdir()) == []

    # a missing parent backup: the chain is broken
    path.write_bytes(original)
    (root / repo.object_key(incr1, MANIFEST)).unlink()
    with pytest.raises(ChainBrokenError, match=f"{incr1.id}.*parent of {incr2.id}"):
        materialize_aof_chain(ctx(repo), incr2, tmp_path / "dest-broken")
    assert not (tmp_path / "dest-broken").exists()
    # the full alone still restores
    assert restored_prints(repo, full, tmp_path / "full") == full.fingerprints
    assert (root / repo.object_key(full, MANIFEST_OBJECT)).exists()


def test_write_load_during_backup_restores_to_the_manifest(fresh_redis, repo, tmp_path):
    server = fresh_redis(name="aof-load")
    config = config_for(server)
    change(server, 0)
    stop = threading.Event()
    done = {"writes": 0}

    def load() -> None:
        conn = server.client()
        while not stop.is_set():
            conn.incr("load:counter")
            pipe = conn.pipeline(transaction=True)  # MULTI ... EXEC in the AOF: never cut inside
            pipe.incr("load:a").incr("load:b").set(f"load:key:{done['writes'] % 500}", os.urandom(200))
            pipe.execute()
            done["writes"] += 1
        conn.close()

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        while done["writes"] < 50:  # the backups start while the load is in full swing
            threading.Event().wait(0.01)
        full = aof_full_backup(config, ctx(repo))
        writes_after_full = done["writes"]
        incr = aof_incremental_backup(config, ctx(repo), full, INCR)
        diff = aof_incremental_backup(config, ctx(repo), full, DIFF)
        writes_after_diff = done["writes"]
    finally:
        stop.set()
        worker.join(timeout=30)
    assert 0 < writes_after_full < writes_after_diff  # the load really ran during the backups
    counters = []
    for manifest in (full, incr, diff):
        dest = tmp_path / f"restore-{manifest.id}"
        server2 = restored(repo, manifest, dest)
        try:
            with server2.client() as conn:
                assert fingerprint_server(conn) == manifest.fingerprints, manifest.id
                a, b = int(conn.get("load:a") or 0), int(conn.get("load:b") or 0)
                assert a == b  # whole transactions only
                counters.append(a)
        finally:
            server2.stop()
    assert counters[0] > 0 and counters[0] < counters[1] <= counters[2]


def test_rdb_parent_breaks_the_chain(fresh_redis, repo):
    server = fresh_redis(name="aof-rdbparent")
    config = config_for(server)
    change(server, 0)
    full = aof_full_backup(config, ctx(repo))
    rdb_like = full.model_copy(
        update={"mode": BackupMode.RDB, "consistency": RedisRdbConsistency(method="BGSAVE + copy")}
    )
    with pytest.raises(ChainBrokenError, match=f"{full.id}.*rdb backup.*taking a full"):
        aof_incremental_backup(config, ctx(repo), rdb_like, INCR)


def test_restore_refuses_a_non_empty_destination(fresh_redis, repo, tmp_path):
    server = fresh_redis(name="aof-dest")
    change(server, 0)
    full = aof_full_backup(config_for(server), ctx(repo))
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(RefusedError, match=f"{full.id} into {dest}: it is not an empty directory"):
        materialize_aof_chain(ctx(repo), full, dest)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    shutil.rmtree(dest)
    dest.mkdir()  # an empty directory is fine: the restore is renamed onto it
    assert restored_prints(repo, full, dest) == full.fingerprints


def test_keys_expiring_after_the_cut_keep_the_fingerprint(fresh_redis, repo, tmp_path):
    """The backup-time fingerprint and a later restore agree although keys expired in between:
    both are taken on scratch replicas, which keep expired keys (as a drill's scratch does)."""
    server = fresh_redis(name="aof-ttl")
    config = config_for(server)
    change(server, 0)
    # TTLs long enough for both backups to cut before them on a loaded machine; the test then
    # waits for the keys to expire on the source instead of sleeping a guessed time.
    with server.client() as conn:
        before = conn.dbsize()
        conn.set("soon:1", "gone", px=8000)
        full = aof_full_backup(config, ctx(repo))
        conn.set("soon:2", "gone", px=8000)
        incr = aof_incremental_backup(config, ctx(repo), full, INCR)
        assert conn.exists("soon:1", "soon:2") == 2, "a key expired before the backups: raise the TTL"
        wait_until(lambda: conn.exists("soon:1", "soon:2") == 0, timeout=30, what="the keys to expire")
        assert conn.dbsize() == before  # expired on the source meanwhile
    assert full.fingerprints["db0"]["keys"].rows == before + 1
    assert incr.fingerprints["db0"]["keys"].rows == before + 2
    for manifest in (full, incr):
        dest = tmp_path / f"ttl-{manifest.id}"
        settings = materialize_aof_chain(ctx(repo), manifest, dest)
        scratch, blackhole = start_replica_scratch(dest, None, settings=settings)
        try:
            with scratch.client() as conn:
                assert fingerprint_server(conn) == manifest.fingerprints, manifest.id
        finally:
            scratch.stop()
            blackhole.close()


def test_acl_user_chain_and_no_secret_in_manifests(fresh_redis, repo, tmp_path):
    secret = "aof-" + os.urandom(9).hex()
    server = fresh_redis(name="aof-acl", acl_user=("backup", secret))
    config = config_for(server)
    change(server, 0)
    full = aof_full_backup(config, ctx(repo))
    change(server, 1)
    incr = aof_incremental_backup(config, ctx(repo), full, INCR)
    assert restored_prints(repo, incr, tmp_path / "acl") == incr.fingerprints
    assert full.fingerprints != incr.fingerprints
    for manifest in (full, incr):
        assert secret.encode() not in manifest.to_json()
    wrong = RedisSettings(**{**config.model_dump(), "password": "wrong"})
    with pytest.raises(AuthenticationError, match="backup"):
        aof_incremental_backup(wrong, ctx(repo), incr, INCR)


def test_aof_format_base_without_rdb_preamble(fresh_redis, repo, tmp_path):
    server = fresh_redis(name="aof-nopreamble", settings={"aof-use-rdb-preamble": "no"})
    config = config_for(server)
    change(server, 0)
    full = aof_full_backup(config, ctx(repo))
    assert full.consistency.base_format == "aof" and full.consistency.base.endswith(".base.aof")
    # redis-check-aof 7.0 has no --version (it reads "--version" as a file and fails): no error text
    # may pass for a version in the manifest
    assert full.tool_versions["redis-check-aof"] == "unknown"
    change(server, 1)
    incr = aof_incremental_backup(config, ctx(repo), full, INCR)
    assert restored_prints(repo, incr, tmp_path / "r") == incr.fingerprints
