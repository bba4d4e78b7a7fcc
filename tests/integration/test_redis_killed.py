"""SIGKILL a Redis backup or drill at a chosen moment (issue 8, section 9): no redis-server,
redis-check-rdb or redis-cli of the run may survive it, and no scratch server may ever answer
without a password. (The cross-engine random-moment test is tests/corpus/test_killed_runs.py.)

The run happens in a child process (this module, run with `python -m`), which prints what it
is doing and then blocks at the chosen moment, so the kill lands exactly there:
  transfer  inside the stream: redis-cli is sending, redis-check-rdb is reading its FIFO;
  verify    the RDB is stored, the backup waits for redis-check-rdb;
  drill     the scratch server has loaded the backup and matched its facts.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import redis

from tests.fixtures.processes import descendants, is_gone, live
from vaultflow.engines.base import BackupContext
from vaultflow.engines.redis.engine import RedisEngine
from vaultflow.engines.redis.settings import RedisSettings
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore

KEYS = 300_000
HANG_GUARD = 120.0
ROOT = Path(__file__).resolve().parents[2]


def _block(moment: str, detail: str = "") -> None:
    print(f"at {moment} {detail}".strip(), flush=True)
    while True:
        time.sleep(60)


def child() -> None:
    """Run the job from stdin (JSON: moment, config, repo) and block at its moment."""
    job = json.loads(sys.stdin.read())
    moment = job["moment"]
    engine = RedisEngine(RedisSettings(**job["config"]))
    repo = Repository(LocalStore(job["repo"]))

    def log(line: str) -> None:
        if moment == "verify" and "waiting for redis-check-rdb" in line:
            _block(moment)
        if moment == "drill" and line.startswith("scratch copy of"):
            _block(moment, line.split(" at ", 1)[1].split()[0])

    def progress(_key, done, _total) -> None:
        if moment == "transfer" and done > 1 << 20:
            _block(moment)

    ctx = BackupContext(repo, log=log, progress=progress)
    print("started", flush=True)
    if moment == "drill":
        engine.drill(ctx, repo.catalog("redis", engine.config.name).manifests[-1])
    else:
        engine.full_backup(ctx)
    print("finished", flush=True)


@pytest.fixture(scope="module")
def big_redis():
    from vaultflow.testing.redis_instance import running_redis

    with running_redis(name="killed", password=secrets.token_urlsafe(16)) as server:
        with server.client() as conn:
            conn.execute_command("DEBUG", "POPULATE", KEYS, "key", 20)
            conn.set("stream-of-work", "x")
        yield server


def _run_until(moment: str, server, repo: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.test_redis_killed"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    config = {"target_name": "killed", "host": "127.0.0.1", "port": server.port, "password": server.password}
    proc.stdin.write(json.dumps({"moment": moment, "config": config, "repo": str(repo)}))
    proc.stdin.close()
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + HANG_GUARD
    while not any(line.startswith("at ") for line in lines):
        assert proc.poll() is None and time.monotonic() < deadline, f"the child never reached {moment}: {lines}"
        time.sleep(0.05)
    return proc, next(line for line in lines if line.startswith("at ")).split()[-1]


def _kill_and_wait(proc: subprocess.Popen) -> list[str]:
    """SIGKILL the run; the names of its former children that are still alive afterwards."""
    children = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + HANG_GUARD  # the kernel delivers the parent-death signal at once
    while any(not is_gone(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [f"{p.pid} {' '.join(info['cmdline'])}" for p, info in live(children, "cmdline")]


def _names(procs: list[psutil.Process]) -> set[str]:
    return {info["name"] for _, info in live(procs, "name")}


@pytest.mark.parametrize("moment", ["transfer", "verify"])
def test_a_killed_backup_leaves_no_process(moment: str, big_redis, tmp_path: Path):
    proc, _ = _run_until(moment, big_redis, tmp_path / "repo")
    try:
        running = _names(descendants(proc.pid))
        if moment == "transfer":  # proof that the kill lands mid-stream
            assert {"redis-cli", "redis-check-rdb"} <= running, running
        assert not any(name.startswith("redis-server") for name in running), (
            f"a backup must not start a scratch server any more: {running}"
        )
    finally:
        left = _kill_and_wait(proc)
    assert left == [], f"children survived the killed backup: {left}"
    assert not list((tmp_path / "repo").rglob("manifest.json")), "a killed backup was committed"
    with big_redis.client() as conn:  # and the source is not stuck serving a dead replica
        assert conn.dbsize() == KEYS + 1


def test_a_killed_drill_leaves_no_scratch_server(big_redis, tmp_path: Path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    engine = RedisEngine(
        RedisSettings(target_name="killed", host="127.0.0.1", port=big_redis.port, password=big_redis.password)
    )
    engine.full_backup(BackupContext(repo, log=lambda line: None))

    proc, where = _run_until("drill", big_redis, tmp_path / "repo")
    try:
        port = int(where.rsplit(":", 1)[1])
        assert "redis-server" in {n.split()[0] for n in _names(descendants(proc.pid))}
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:  # loaded, yet closed to us
            sock.sendall(b"DBSIZE\r\nKEYS *\r\n")
            reply = b""
            while reply.count(b"\r\n") < 2:
                reply += sock.recv(4096)
        assert reply.startswith(b"-NOAUTH") and reply.count(b"-NOAUTH") == 2, reply
    finally:
        left = _kill_and_wait(proc)
    assert left == [], f"children survived the killed drill: {left}"
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis(port=port, retry=None, socket_connect_timeout=5).ping()


if __name__ == "__main__":
    child()
