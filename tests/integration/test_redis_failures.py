"""How the Redis engine fails, against real servers: every error names what is wrong, is
classified (retry or not), and no failure leaves a manifest, payload or server behind."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
import redis

from tests.fixtures.processes import descendants, named
from vaultflow.engines.base import BackupContext
from vaultflow.engines.redis.engine import RDB_OBJECT, RedisEngine
from vaultflow.engines.redis.server import RedisProcess
from vaultflow.engines.redis.settings import RedisRestoreOptions, RedisSettings
from vaultflow.errors import (
    AuthenticationError,
    ConfigError,
    IntegrityError,
    RefusedError,
    ServerUnavailableError,
    VaultflowError,
    is_transient,
)
from vaultflow.proc import short_temp_root
from vaultflow.repository import MANIFEST, Repository
from vaultflow.stores import LocalStore
from vaultflow.testing.service_python import service_user_python
from vaultflow.testing.unprivileged import ensure_service_user, free_port, running_as_root


def config_for(server: RedisProcess, name: str, **kw) -> RedisSettings:
    return RedisSettings(
        target_name=name, host=server.host, port=server.port, username=server.username, password=server.password, **kw
    )


def ctx(repo: Repository, logs: list[str] | None = None) -> BackupContext:
    return BackupContext(repo, log=logs.append if logs is not None else (lambda line: None))


def repo_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def our_redis_children(exclude: set[int] = frozenset()) -> list[str]:
    """redis-server / redis-cli / redis-check-rdb processes this test process started."""
    return named([p for p in descendants(psutil.Process()) if p.pid not in exclude], "redis-")


def fill(server: RedisProcess, count: int, size: int, prefix: str = "k") -> None:
    with server.client() as conn:
        for start in range(0, count, 5000):
            pipe = conn.pipeline(transaction=False)
            for i in range(start, min(count, start + 5000)):
                pipe.set(f"{prefix}:{i}", os.urandom(size // 2).hex())
            pipe.execute()


@pytest.fixture
def backed_up(fresh_redis, tmp_path: Path):
    """A server with the seed users and a committed backup of it: (server, engine, repo, manifest)."""
    server = fresh_redis(name="fail-restore")
    with server.client() as conn:
        conn.set("user:1000", "Alice")
        conn.set("user:1001", "Bob")
        conn.set("user:1002", "Charlie")
    fill(server, 200, 100)
    engine = RedisEngine(config_for(server, "fail-restore"))
    repo = Repository(LocalStore(tmp_path / "repo"))
    return server, engine, repo, engine.full_backup(ctx(repo))


def test_wrong_password_fails_at_once(redis_with_password: RedisProcess, tmp_path: Path):
    config = RedisSettings(
        target_name="wrongpw", host=redis_with_password.host, port=redis_with_password.port, password="not-the-password"
    )
    with redis_with_password.client() as admin:
        admin.acl_log_reset()
    with pytest.raises(AuthenticationError) as info:
        RedisEngine(config).full_backup(ctx(Repository(LocalStore(tmp_path / "repo"))))
    with redis_with_password.client() as admin:
        failures = [e for e in admin.acl_log() if e["reason"] == "auth"]
    assert sum(int(e["count"]) for e in failures) == 1, f"one login attempt, no retries: {failures}"
    assert not is_transient(info.value)
    assert redis_with_password.where in str(info.value) and "password" in str(info.value)
    assert "not-the-password" not in str(info.value)
    assert repo_files(tmp_path / "repo") == []


def test_wrong_acl_user_password_fails_at_once(redis_acl: RedisProcess, tmp_path: Path):
    config = RedisSettings(
        target_name="wrongacl", host=redis_acl.host, port=redis_acl.port, username="backup", password="wrong"
    )
    with pytest.raises(AuthenticationError, match="user 'backup'") as info:
        RedisEngine(config).check()
    assert not is_transient(info.value)


def test_unreachable_server_is_transient(tmp_path: Path):
    port = free_port()  # nobody listens there
    config = RedisSettings(target_name="gone", host="127.0.0.1", port=port, connect_timeout=3)
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError) as info:
        RedisEngine(config).full_backup(ctx(Repository(LocalStore(tmp_path / "repo"))))
    assert time.monotonic() - started < 60, "a hang, not a refusal"  # the flow retries, not the engine
    assert is_transient(info.value)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "refused. Check host" in str(info.value) and ".." not in str(info.value)  # redis-py's text ends in '.'
    assert repo_files(tmp_path / "repo") == []


def test_unreadable_data_dir_is_config_error_naming_it(fresh_redis, tmp_path: Path):
    server = fresh_redis(name="noread", settings={"appendonly": "no"})
    secret_dir = Path(tempfile.mkdtemp(prefix="vf-redis-noread-", dir=short_temp_root()))
    try:
        os.chmod(secret_dir, 0o700)
        if running_as_root():
            # root reads anything: run the backup as the unprivileged user against a 0700 root dir
            user = ensure_service_user()
            assert secret_dir.stat().st_uid == 0 and secret_dir.stat().st_uid != user.pw_uid
            repo_dir = Path(tempfile.mkdtemp(prefix="vf-redis-noread-repo-", dir=short_temp_root()))
            os.chown(repo_dir, user.pw_uid, user.pw_gid)
            snippet = textwrap.dedent(f"""
                import json
                from vaultflow.engines.base import BackupContext
                from vaultflow.engines.redis.engine import RedisEngine
                from vaultflow.engines.redis.settings import RedisSettings
                from vaultflow.repository import Repository
                from vaultflow.stores import LocalStore
                config = RedisSettings(target_name="noread", host={server.host!r}, port={server.port},
                                     data_dir={str(secret_dir)!r})
                try:
                    RedisEngine(config).full_backup(BackupContext(Repository(LocalStore({str(repo_dir)!r})),
                                                                  log=lambda line: None))
                    print(json.dumps({{"error": None}}))
                except Exception as exc:
                    print(json.dumps({{"error": type(exc).__name__, "message": str(exc)}}))
            """)
            try:
                done = service_user_python().run_as_service_user("-c", snippet, timeout=120)
                assert done.returncode == 0, done.stderr
                outcome = json.loads(done.stdout.strip().splitlines()[-1])
                assert repo_files(repo_dir) == []
            finally:
                shutil.rmtree(repo_dir, ignore_errors=True)
        else:
            os.chmod(secret_dir, 0o000)
            try:
                RedisEngine(config_for(server, "noread", data_dir=str(secret_dir))).full_backup(
                    ctx(Repository(LocalStore(tmp_path / "repo")))
                )
                outcome = {"error": None}
            except VaultflowError as exc:
                outcome = {"error": type(exc).__name__, "message": str(exc)}
            assert repo_files(tmp_path / "repo") == []
    finally:
        os.chmod(secret_dir, 0o700)
        shutil.rmtree(secret_dir, ignore_errors=True)
    assert outcome["error"] == ConfigError.__name__, outcome
    assert str(secret_dir) in outcome["message"]
    assert "redis user" in outcome["message"]
    with server.client() as conn:  # refused before asking the server to save anything
        assert conn.info("persistence")["rdb_saves"] == 0


def test_missing_data_dir_is_config_error_naming_it_and_the_setting(fresh_redis, tmp_path: Path):
    """A mistyped data_dir, or a volume not mounted, is said as that: not 'cannot read'."""
    server = fresh_redis(name="nodir", settings={"appendonly": "no"})
    missing = tmp_path / "not-mounted"
    with pytest.raises(ConfigError) as info:
        RedisEngine(config_for(server, "nodir", data_dir=str(missing))).full_backup(
            ctx(Repository(LocalStore(tmp_path / "repo")))
        )
    message = str(info.value)
    assert f"{missing} of nodir (its data_dir) does not exist" in message and "mounted" in message, message
    assert repo_files(tmp_path / "repo") == []
    with server.client() as conn:  # refused before asking the server to save anything
        assert conn.info("persistence")["rdb_saves"] == 0


def test_redis_killed_mid_transfer_leaves_no_backup(fresh_redis, tmp_path: Path):
    server = fresh_redis(name="killed")
    fill(server, 40_000, 1000)  # ~40 MB
    with server.client() as conn:
        conn.config_set("rdb-key-save-delay", 200)  # microseconds per key: ~8 s to stream
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    repo = Repository(LocalStore(tmp_path / "repo"))
    progress: list[int] = []
    context = BackupContext(repo, log=lambda line: None, progress=lambda name, done, total: progress.append(done))
    outcome: dict = {}

    def backup():
        try:
            outcome["manifest"] = RedisEngine(config_for(server, "killed")).full_backup(context)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=backup)
    thread.start()
    deadline = time.monotonic() + 60
    while not progress or progress[-1] < 2_000_000:  # well into the stream
        assert time.monotonic() < deadline and thread.is_alive(), outcome
        time.sleep(0.02)
    server.proc.kill()
    server.proc.wait()
    killed = time.monotonic()
    thread.join(timeout=120)
    assert not thread.is_alive()
    # promptly: the half-fed scratch verifier must not hold the failure up
    assert time.monotonic() - killed < 60, "the half-fed verifiers hung after the kill"

    assert "manifest" not in outcome, "a backup of a server killed mid-transfer was committed"
    assert isinstance(outcome["error"], ServerUnavailableError), repr(outcome.get("error"))
    assert is_transient(outcome["error"]), "a server that went away is worth retrying later"
    assert "went away during the backup" in str(outcome["error"]) and "redis-cli" in str(outcome["error"])
    assert progress[-1] < 30_000_000  # it was killed before the end
    files = repo_files(tmp_path / "repo")
    assert not [f for f in files if f.name == MANIFEST or f.name.endswith(".zst")], files
    assert repo.catalog("redis", "killed").manifests == []
    assert our_redis_children(exclude=before) == [], "scratch servers or tools left running"


def test_rdb_failing_redis_check_rdb_is_integrity_error(fresh_redis, tmp_path: Path):
    server = fresh_redis(name="corrupt-rdb", settings={"appendonly": "no"})
    fill(server, 2000, 200)
    with server.client() as conn:
        conn.save()
    fake_dir = tmp_path / "fake-datadir"
    fake_dir.mkdir()
    data = bytearray((server.directory / "dump.rdb").read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside a value: structure may parse, the CRC64 cannot match
    (fake_dir / "dump.rdb").write_bytes(bytes(data))
    corrupted = bytes(data)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    repo = Repository(LocalStore(tmp_path / "repo"))

    engine = RedisEngine(config_for(server, "corrupt", data_dir=str(fake_dir)))
    with pytest.raises(IntegrityError) as info:
        engine.full_backup(ctx(repo))
    assert "redis-check-rdb" in str(info.value) and server.where in str(info.value)
    assert "no backup was recorded" in str(info.value)
    assert not is_transient(info.value)
    assert repo_files(tmp_path / "repo") == []
    assert (fake_dir / "dump.rdb").read_bytes() == corrupted  # the server saved in its own dir
    with server.client() as conn:
        assert conn.info("persistence")["rdb_saves"] == 2
    assert our_redis_children(exclude=before) == []

    # the same server, its real data dir: the backup succeeds (the failure was the file alone)
    good = RedisEngine(config_for(server, "corrupt", data_dir=str(server.directory))).full_backup(ctx(repo))
    assert good.fingerprints["db0"]["keys"].rows == 2000


@pytest.mark.serial  # looks for temporary directories in /tmp: none from other tests may appear
def test_restore_into_a_port_in_use_is_refused(backed_up, tmp_path: Path):
    server, engine, repo, manifest = backed_up
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    pattern = f"vaultflow-redis-{manifest.target[:20]}-*"
    scratch_dirs = set(Path(tempfile.gettempdir()).glob(pattern))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(RefusedError) as info:
            engine.restore(ctx(repo), manifest, options=RedisRestoreOptions(port=port))
        assert str(port) in str(info.value) and "in use" in str(info.value)
        # nothing took the port from us, nothing was started elsewhere
        holder.settimeout(0.2)
        with pytest.raises(socket.timeout):
            holder.accept()
    assert our_redis_children(exclude=before) == []
    assert set(Path(tempfile.gettempdir()).glob(pattern)) == scratch_dirs

    # a free port is honoured
    port = free_port()
    result = engine.restore(ctx(repo), manifest, options=RedisRestoreOptions(port=port))
    try:
        assert result.restored["server"] == f"127.0.0.1:{port}" and result.comparison.ok
    finally:
        try:
            redis.Redis(port=port, retry=None).shutdown(nosave=True)
        except redis.exceptions.ConnectionError:
            pass
        shutil.rmtree(result.restored["directory"], ignore_errors=True)


@pytest.mark.serial  # looks for temporary directories in /tmp: none from other tests may appear
@pytest.mark.parametrize("into", [None, "dir", "original", "drill"])
def test_corrupted_stored_object_refuses_restore(backed_up, tmp_path: Path, into: str | None):
    server, engine, repo, manifest = backed_up
    path = tmp_path / "repo" / repo.object_key(manifest, RDB_OBJECT)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with server.client() as conn:
        conn.set("user:1000", "changed after the backup")
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    target = {"dir": str(tmp_path / "out"), None: None, "original": "original", "drill": None}[into]
    scratch_dirs = set(Path(tempfile.gettempdir()).glob("vaultflow-redis-*"))

    with pytest.raises(IntegrityError) as info:
        if into == "drill":  # the drill streams the object into the scratch server's FIFO
            engine.drill(ctx(repo), manifest)
        else:
            engine.restore(ctx(repo), manifest, into=target, overwrite=True)
    assert f"{manifest.id}/{RDB_OBJECT}" in str(info.value)
    assert our_redis_children(exclude=before) == []
    assert set(Path(tempfile.gettempdir()).glob("vaultflow-redis-*")) == scratch_dirs
    with server.client() as conn:
        assert conn.get("user:1000") == b"changed after the backup"
    if into == "dir":
        assert list((tmp_path / "out").iterdir()) == []  # no half-written dump.rdb left
