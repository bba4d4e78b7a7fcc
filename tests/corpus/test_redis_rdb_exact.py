"""Redis corpus: a remote full stores exactly the RDB, not the 40-byte end mark redis-cli leaves
on a pipe under diskless sync (issue 8, section 2), and that RDB loads in a plain redis-server.

The proofs share no code with vaultflow: zstd -d, redis-check-rdb's own offsets, a bit-by-bit
CRC64 (Jones) of the bytes, `redis-cli --rdb FILE` (which truncates the mark from a file), and
the oracle on a plain server loading the stored RDB.
"""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.corpus.oracle import redis_differences, redis_state
from tests.fixtures.redis import crc64_jones, wait_rehashed
from vaultflow.engines.redis.engine import RDB_OBJECT, RedisEngine
from vaultflow.engines.redis.server import find_binary, start_redis
from vaultflow.engines.redis.settings import RedisSettings


def check_rdb(path: Path) -> tuple[int, int]:
    """(offset where redis-check-rdb found the RDB's end, offset of the first SELECTDB's db id)."""
    out = subprocess.run([str(find_binary("redis-check-rdb")), str(path)], capture_output=True, text=True)
    assert out.returncode == 0 and "RDB looks OK" in out.stdout, out.stdout
    end = int(re.search(r"\[offset (\d+)\] \\o/ RDB looks OK", out.stdout).group(1))
    first_db = int(re.search(r"\[offset (\d+)\] Selecting DB ID", out.stdout).group(1))
    return end, first_db


def test_remote_full_stores_exactly_the_rdb(fresh_redis, corpus_ctx, tmp_path: Path):
    source = fresh_redis(name="exact", password=secrets.token_urlsafe(16))
    with source.client() as conn:
        assert conn.config_get("repl-diskless-sync")["repl-diskless-sync"] == "yes"  # the EOF-mark case
        for i in range(300):
            conn.set(f"k:{i}", f"value {i}" * 3)
        conn.hset("h", mapping={"a": 1, "b": 2})
        wait_rehashed(conn)  # else the two snapshots below may list the keys in different orders
    engine = RedisEngine(
        RedisSettings(target_name="exact", host="127.0.0.1", port=source.port, password=source.password)
    )
    manifest = engine.full_backup(corpus_ctx)
    stored = tmp_path / "stored.rdb"
    subprocess.run(
        [
            "zstd",
            "-qd",
            str(tmp_path / "repo" / corpus_ctx.repository.object_key(manifest, RDB_OBJECT)),
            "-o",
            str(stored),
        ],
        check=True,
    )
    data = stored.read_bytes()

    # it ends with the EOF opcode and the CRC64 of everything before it, and with nothing else
    assert data[-9] == 0xFF
    assert int.from_bytes(data[-8:], "little") == crc64_jones(data[:-8])
    end, first_db = check_rdb(stored)
    assert end == len(data) == manifest.objects[0].raw_size
    assert manifest.consistency.rdb_crc64 == data[-8:].hex()

    # the same snapshot as `redis-cli --rdb FILE` writes it (no writes in between): the header's
    # AUX values (ctime, used-mem, repl-offset) may differ, the databases and the footer's place not
    by_cli = tmp_path / "cli.rdb"
    cli = subprocess.run(
        [str(find_binary("redis-cli")), "-p", str(source.port), "--no-auth-warning", "--askpass", "--rdb", str(by_cli)],
        input=source.password + "\n",
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    cli_data = by_cli.read_bytes()
    cli_end, cli_first_db = check_rdb(by_cli)
    assert cli_end == len(cli_data)
    assert data[first_db - 2 : -8] == cli_data[cli_first_db - 2 : -8]
    assert len(data) - first_db == len(cli_data) - cli_first_db

    # and a plain redis-server loads it: the oracle finds the source
    plain_dir = Path(tempfile.mkdtemp(prefix="vf-corpus-exact-"))
    shutil.copy(stored, plain_dir / "dump.rdb")
    plain = start_redis(plain_dir, settings={"dbfilename": "dump.rdb", "appendonly": "no"})
    try:
        assert redis_differences(redis_state(source), redis_state(plain)) == []
    finally:
        plain.stop()
        shutil.rmtree(plain_dir)
