"""redis-server processes vaultflow starts itself: scratch servers for restores and drills.

A scratch server listens on 127.0.0.1 only, keeps nothing it was not given (no `save`, no
automatic AOF rewrite), allows DEBUG from local connections (for the DEBUG DIGEST of backups
made before issue 8), and is configured through a 0600 redis.conf in its own 0700 directory —
never through argv, so a password never shows in `ps`.

Two rules keep a scratch copy of production data from leaking (issue 8, section 9):
- it is started with `tied_popen`, so it dies (SIGKILL) when the run that started it dies;
- it requires a random password (`scratch_auth`), known only to that run: nothing answers
  without authentication on a scratch port, even while it is loading.
The one server meant to outlive the run, the default restore's, is started untied with the
*source's* authentication (`source_auth`): whoever could read the source can read the copy.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from vaultflow.errors import ConfigError, RefusedError, ToolError
from vaultflow.ports import free_port, port_is_free
from vaultflow.proc import tied_popen
from vaultflow.tools import log_tail, wait_until

READY_TIMEOUT = 600.0  # loading a multi-GB RDB or AOF takes a while
PORT_ATTEMPTS = 5

SCRATCH_SETTINGS = {
    "bind": "127.0.0.1",
    "protected-mode": "no",
    "save": '""',
    "appendonly": "no",
    "auto-aof-rewrite-percentage": "0",
    "enable-debug-command": "local",
    "daemonize": "no",
    "databases": "16",
    "loglevel": "notice",
}


def find_binary(name: str, bin_dir: str | Path | None = None) -> Path:
    """redis-server / redis-cli / redis-check-rdb from `bin_dir`, else from PATH."""
    if bin_dir:
        path = Path(bin_dir) / name
        if not os.access(path, os.X_OK):
            raise ConfigError(f"{name} not found in bin_dir {bin_dir}; fix the RedisTarget's bin_dir")
        return path
    found = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if not found:
        raise ConfigError(
            f"{name} is not installed on this worker: install Debian's redis-server and "
            "redis-tools (apt-get install redis-server redis-tools) or set bin_dir"
        )
    return Path(found)


def conf_line(key: str, value: str) -> str:
    return f"{key} {value}"


def conf_quote(value: str) -> str:
    """`value` as one redis.conf argument (sdssplitargs: double quotes, \\xHH escapes)."""
    out = []
    for ch in value:
        if ch.isascii() and ch.isprintable() and ch not in '"\\':
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class ServerAuth:
    """How clients log in to a server vaultflow starts: redis.conf lines + the client's login."""

    lines: tuple[str, ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def scratch_auth() -> ServerAuth:
    """A random 256-bit requirepass, for one scratch server of one run."""
    password = secrets.token_urlsafe(32)
    return ServerAuth(lines=(f"requirepass {conf_quote(password)}",), password=password)


def source_auth(username: str | None, password: str | None) -> ServerAuth:
    """The source's own login: an ACL user (the default user then off), or requirepass, or none
    when the source has none (the server still listens on 127.0.0.1 only)."""
    if username:
        return ServerAuth(
            lines=(
                f"user {conf_quote(username)} on {conf_quote('>' + (password or ''))} ~* &* +@all",
                "user default off",
            ),
            username=username,
            password=password,
        )
    if password:
        return ServerAuth(lines=(f"requirepass {conf_quote(password)}",), password=password)
    return ServerAuth()


@dataclass
class RedisProcess:
    """One running redis-server we started; `stop()` ends it without saving."""

    directory: Path
    port: int
    log_file: Path
    host: str = "127.0.0.1"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def client(self, db: int = 0, **kw: Any) -> redis.Redis:
        return redis.Redis(
            host=self.host,
            port=self.port,
            db=db,
            username=self.username,
            password=self.password,
            socket_timeout=kw.pop("socket_timeout", 600),
            socket_connect_timeout=5,
            **kw,
        )

    def log_tail(self, lines: int = 20) -> str:
        return log_tail(self.log_file, lines)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Until PING answers (LOADING means: still reading its data); ToolError if it exits."""

        def ping() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise ToolError(
                    f"redis-server on port {self.port} exited with code {self.proc.returncode} "
                    f"while starting in {self.directory}:\n{self.log_tail()}"
                )
            with self.client(socket_timeout=5) as conn:
                return bool(conn.ping())

        # BusyLoadingError (a ConnectionError) is LOADING: still reading its data
        wait_until(
            ping,
            timeout=timeout,
            interval=0.05,
            what=f"redis-server on port {self.port} to answer PING",
            retry_on=(redis.exceptions.ConnectionError, redis.exceptions.TimeoutError),
            on_timeout=lambda message: ToolError(f"{message} (directory {self.directory}):\n{self.log_tail()}"),
        )

    def stop(self) -> None:
        """SHUTDOWN NOSAVE, then SIGKILL if it does not go; idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                # no retries: redis-py's default Retry would reconnect to the exiting server
                # with backoff after SHUTDOWN closes the connection (~2.7 s per stop)
                with self.client(socket_timeout=10, retry=Retry(NoBackoff(), 0)) as conn:
                    conn.shutdown(nosave=True)
            except (redis.exceptions.RedisError, OSError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def write_conf(directory: Path, settings: dict[str, str], secret_lines: Sequence[str] = ()) -> Path:
    """redis.conf in `directory`, mode 0600 (it may hold requirepass / ACL users)."""
    path = directory / "redis.conf"
    text = "\n".join([conf_line(k, v) for k, v in settings.items()] + list(secret_lines)) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


def start_redis(
    directory: Path,
    *,
    port: int | None = None,
    settings: dict[str, str] | None = None,
    secret_lines: Sequence[str] = (),
    binary: Path | None = None,
    popen_kw: dict | None = None,
    username: str | None = None,
    password: str | None = None,
    wait: bool = True,
    chown: tuple[int, int] | None = None,
    tied: bool = True,
) -> RedisProcess:
    """Start redis-server with its data and config in `directory`.

    `port` given: exactly that port, RefusedError when it is in use (nothing is started).
    `port` None: a free port, retried if another process takes it first.
    `tied`: the server gets SIGKILL when this process dies (vaultflow.proc); only a server
    handed over to the user (default restore) is started with tied=False.
    `secret_lines` (requirepass, ACL users) go into the 0600 redis.conf, never argv.
    Raises RefusedError (port in use), ToolError (it exits or never answers).
    """
    directory = Path(directory)
    binary = binary or find_binary("redis-server")
    if port is not None and not port_is_free(port):
        raise RefusedError(
            f"port {port} on 127.0.0.1 is already in use: cannot start a scratch redis-server "
            "there. Choose another port, or leave it empty to use a free one"
        )
    last_problem = ""
    for _ in range(1 if port is not None else PORT_ATTEMPTS):
        chosen = port if port is not None else free_port()
        conf = {**SCRATCH_SETTINGS, **(settings or {}), "port": str(chosen), "dir": str(directory), "logfile": '""'}
        conf_path = write_conf(directory, conf, secret_lines)
        if chown:
            os.chown(conf_path, *chown)
        log_file = directory / "redis.log"
        with open(log_file, "ab") as log:
            popen = partial(tied_popen, lasting=True) if tied else subprocess.Popen
            proc = popen(
                [str(binary), str(conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=directory,
                start_new_session=True,
                **(popen_kw or {}),
            )
        server = RedisProcess(
            directory=directory, port=chosen, log_file=log_file, proc=proc, username=username, password=password
        )
        if not wait:
            return server
        try:
            server.wait_ready()
            return server
        except ToolError as exc:
            server.stop()
            last_problem = str(exc)
            if "Address already in use" not in server.log_tail():
                raise
    raise ToolError(f"could not start redis-server on a free port: {last_problem}")
