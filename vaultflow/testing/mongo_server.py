"""Throwaway MongoDB-compatible servers for the tests: SecantusDB (`secantusd-py`) on free ports.

SecantusDB (PyPI `secantusdb`, module `secantus`) speaks MongoDB's wire protocol on WiredTiger
and advertises itself as the primary of a one-node replica set named "secantus", so it keeps
`local.oplog.rs`. What it does and does not do like mongod is in docs/mongodb-secantus.md.

Each server gets a private 0700 directory under `proc.short_temp_root()` (data in `data/`, its output in
`secantus.log`, an empty `secantusd.toml` passed with --config so no secantusd.toml from the
working directory, ~ or /etc is read). When we are root it runs as the service user of
`unprivileged.py`, through `service_python.service_user_python()` (the venv's interpreter sits
under a 0700 /root). It is started with `tied_popen`: it gets SIGKILL if the test process dies.

Authentication: SecantusDB has no localhost exception, so a server with a user is started once
without --auth, the user is created (SCRAM-SHA-256, role root on admin), and it is restarted
with --auth. The password is handed to pymongo as a keyword, never put in a URI.
"""

from __future__ import annotations

import functools
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import ConnectionFailure, OperationFailure

from vaultflow import proc
from vaultflow.errors import RefusedError, ToolError, TransientError
from vaultflow.ports import free_port
from vaultflow.testing.service_python import service_user_python
from vaultflow.testing.unprivileged import demote_kwargs, give_to_service_user
from vaultflow.tools import log_tail, wait_until

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0  # seconds: importing secantus and opening WiredTiger takes ~1-2 s
STOP_TIMEOUT = 20.0  # seconds between the first SIGTERM and SIGKILL
TERM_REPEAT = 3.0  # seconds between SIGTERMs
PORT_ATTEMPTS = 5
# The oplog must not roll during a test: SecantusDB's defaults (1 h, 100,000 entries) are
# nearly filled by one 50k-document insert plus its setup. Tests of rolling pass small values.
OPLOG_RETENTION_S = 7 * 24 * 3600.0
OPLOG_MAX_ENTRIES = 2_000_000
CACHE_SIZE = "256M"  # WiredTiger cache; SecantusDB's default is 1G per server
ADMIN_ROLES = ("root",)
_PORT_LOST = "found another server on its port"


@functools.cache
def _python() -> tuple[str, dict[str, str]]:
    """The interpreter that runs `python -m secantus` (as the service user when root) and its
    extra environment (PYTHONPATH, LD_LIBRARY_PATH for a /var/tmp copy)."""
    python = service_user_python()
    return python.executable, dict(python.env)


@dataclass
class MongoProcess:
    """One running SecantusDB server we started.

    `uri` carries no credentials; `client()` logs in with `username`/`password` (authSource
    admin) when the server was started with a user. `stop()` keeps the data (`restart()` reopens
    it on the same port); `destroy()` stops and deletes the directory.
    """

    name: str
    directory: Path
    port: int
    args: tuple[str, ...]  # secantusd arguments besides --host/--port
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str = HOST
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _log_offset: int = field(default=0, repr=False)

    @property
    def uri(self) -> str:
        """mongodb:// URI of this server, without user or password."""
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    @property
    def log_file(self) -> Path:
        return self.directory / "secantus.log"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (it is the python process itself)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def client(self, **kw: Any) -> MongoClient:
        """A pymongo MongoClient for this server; keyword arguments override the defaults
        (e.g. `password="wrong"`, `document_class=RawBSONDocument`). Close it after use."""
        options: dict[str, Any] = {
            "directConnection": True,
            "serverSelectionTimeoutMS": 10_000,
            "connectTimeoutMS": 5_000,
        }
        if self.username is not None:
            options.update(username=self.username, password=self.password, authSource="admin")
        options.update(kw)
        return MongoClient(self.host, self.port, **options)

    def log_tail(self, lines: int = 30) -> str:
        """The last `lines` lines of the server's output (all its starts)."""
        return log_tail(self.log_file, lines)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (SecantusDB then closes WiredTiger cleanly), SIGKILL after `timeout` seconds;
        idempotent. The data stays.

        SIGTERM is sent again every TERM_REPEAT seconds: secantusd now and then lets one go by
        (its main thread waits on a threading.Event; measured: about 1 stop in 20 hung until a
        second SIGTERM, see docs/mongodb-secantus.md)."""
        server = self._proc
        if server is None:
            return
        started = time.monotonic()
        signalled = -TERM_REPEAT
        while server.poll() is None and time.monotonic() - started < timeout:
            if time.monotonic() - signalled >= TERM_REPEAT:
                server.send_signal(signal.SIGTERM)  # by pid; a no-op once it has exited
                signalled = time.monotonic()
            try:
                server.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                self._wake_accept()
        if server.poll() is None:
            server.kill()
        server.wait()
        self._proc = None

    def _wake_accept(self) -> None:
        """Connect and hang up: SecantusDB's stop() joins its accept thread for up to 2 s, and
        that thread sits in a blocking accept() that closing the socket does not interrupt."""
        try:
            socket.create_connection((self.host, self.port), timeout=0.2).close()
        except OSError:
            pass  # not listening any more

    def restart(self) -> None:
        """Stop and start again on the same port with the same data and arguments.
        Raises RefusedError if another process took the port meanwhile, ToolError if it fails."""
        self.stop()
        if not _port_free(self.port):
            raise RefusedError(f"port {self.port} was taken while SecantusDB {self.name!r} was down")
        self._launch(self.port)

    def destroy(self) -> None:
        """Stop and delete the server's directory (data, config, log)."""
        self.stop()
        proc.remove(self.directory)

    def _launch(self, port: int) -> None:
        """Start on `port`; ToolError (with the log) if it exits or never answers."""
        python, extra_env = _python()
        cmd = [python, "-m", "secantus", "--host", self.host, "--port", str(port), *self.args]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.directory),
            "PYTHONDONTWRITEBYTECODE": "1",
            **extra_env,
        }
        self.port = port
        self._log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.log_file, "ab") as log:
            self._proc = proc.tied_popen(
                cmd,
                lasting=True,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=env,
                start_new_session=True,
                **demote_kwargs(),
            )
        problem = self._wait_ready()
        if problem is None:
            return
        self.stop(timeout=5)
        raise ToolError(
            f"SecantusDB {self.name!r} {problem} (port {port}, directory {self.directory}):\n"
            f"{log_tail(self.log_file, 30, self._log_offset)}"
        )

    def _wait_ready(self) -> str | None:
        """None once `hello` answers from our own process, else what went wrong."""
        server = self._proc
        assert server is not None

        def answer() -> str:
            if server.poll() is not None:
                return f"exited with code {server.returncode}"
            with self.client(serverSelectionTimeoutMS=1_000, connectTimeoutMS=1_000) as client:
                client.admin.command("hello")
                # If ours lost the port race, whoever took it answers hello too.
                status = client.admin.command("serverStatus")
            return "ready" if status.get("pid") == server.pid else _PORT_LOST

        try:
            outcome = wait_until(
                answer,
                timeout=READY_TIMEOUT,
                interval=0.1,
                what=f"SecantusDB {self.name!r} to answer hello",
                retry_on=(ConnectionFailure,),
            )
        except (TransientError, OperationFailure) as exc:  # a timeout, or a login refused
            return f"did not become ready: {exc}"
        return None if outcome == "ready" else outcome

    def _port_was_lost(self, problem: str) -> bool:
        return problem == _PORT_LOST or "Address already in use" in log_tail(self.log_file, 30, self._log_offset)


def _port_free(port: int) -> bool:
    """Whether SecantusDB could bind `port`: it sets SO_REUSEADDR, so the TIME_WAIT connections
    a stopped server leaves behind do not count (vaultflow.ports.port_is_free would say taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def start_mongo(
    name: str = "mongo",
    *,
    auth_user: tuple[str, str] | None = None,
    oplog_retention_s: float = OPLOG_RETENTION_S,
    oplog_max_entries: int = OPLOG_MAX_ENTRIES,
    port: int | None = None,
    extra_args: Sequence[str] = (),
) -> MongoProcess:
    """Start a SecantusDB server in a new private directory and wait until it answers.

    `auth_user` = (name, password): that user is created on admin with role root
    (SCRAM-SHA-256) and the server runs with --auth. `oplog_retention_s` (seconds) and
    `oplog_max_entries` bound its oplog. `port` given: exactly that port (RefusedError when
    in use); None: a free port, retried when another process takes it first. `extra_args` are
    more secantusd-py flags (e.g. ("--noop-heartbeat-seconds", "1")).
    Raises ToolError with the reason and the server's log tail when it cannot start; the
    directory is removed then.
    """
    if port is not None and not _port_free(port):
        raise RefusedError(f"port {port} on {HOST} is already in use: cannot start SecantusDB {name!r} there")
    directory = proc.mkdtemp(prefix=f"vfmongo-{name[:16]}-", dir=proc.short_temp_root())
    config = directory / "secantusd.toml"
    config.write_text("# empty: --config stops secantusd from reading any other secantusd.toml\n")
    config.chmod(0o600)
    give_to_service_user(directory)
    args = (
        "--config",
        str(config),
        "--storage-path",
        str(directory / "data"),
        "--log-level",
        "WARNING",
        "--cache-size",
        CACHE_SIZE,
        "--oplog-retention-seconds",
        repr(float(oplog_retention_s)),
        "--oplog-max-entries",
        str(int(oplog_max_entries)),
        *extra_args,
    )
    server = MongoProcess(name=name, directory=directory, port=0, args=args)
    try:
        _launch_on_free_port(server, port)
        if auth_user is not None:
            _create_admin(server, *auth_user)
            server.stop()
            server.args = (*server.args, "--auth")
            server.username, server.password = auth_user
            server.restart()
    except BaseException:
        server.destroy()
        raise
    return server


def _launch_on_free_port(server: MongoProcess, port: int | None) -> None:
    last = ""
    for _ in range(1 if port is not None else PORT_ATTEMPTS):
        try:
            server._launch(port if port is not None else free_port(HOST))
            return
        except ToolError as exc:
            if port is not None or not server._port_was_lost(str(exc)):
                raise
            last = str(exc)
    raise ToolError(f"could not start SecantusDB {server.name!r} on a free port: {last}")


def _create_admin(server: MongoProcess, username: str, password: str) -> None:
    """createUser on admin (SCRAM-SHA-256, ADMIN_ROLES) while the server runs without --auth."""
    with server.client() as client:
        try:
            client.admin.command(
                "createUser",
                username,
                pwd=password,
                roles=[{"role": role, "db": "admin"} for role in ADMIN_ROLES],
                mechanisms=["SCRAM-SHA-256"],
            )
        except OperationFailure as exc:
            raise ToolError(f"SecantusDB {server.name!r}: createUser {username!r} failed: {exc}") from None


@contextmanager
def scratch_database(client: MongoClient, prefix: str = "t") -> Iterator[str]:
    """A database name used by no one yet (`<prefix>_<16 hex digits>`), dropped on exit."""
    name = f"{prefix}_{secrets.token_hex(8)}"
    try:
        yield name
    finally:
        client.drop_database(name)


@contextmanager
def running_mongo(name: str = "mongo", **kw: Any) -> Iterator[MongoProcess]:
    """start_mongo(name, **kw); on exit the server is stopped and its directory removed."""
    server = start_mongo(name, **kw)
    try:
        yield server
    finally:
        server.destroy()
