"""The PostgreSQL launcher against real servers: embedded 18 and system 15."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import psutil
import psycopg
import pytest

from tests.fixtures.postgres import MakeDb
from tests.fixtures.processes import descendants, live
from tests.fixtures.scratch import in_temp_roots
from vaultflow.testing.postgres_server import (
    PostgresInstance,
    embedded_bin_dir,
    running_postgres,
    start_postgres,
)
from vaultflow.testing.unprivileged import SERVICE_USER, running_as_root


def postmaster(instance: PostgresInstance) -> psutil.Process:
    pid = int((instance.data_dir / "postmaster.pid").read_text().splitlines()[0])
    return psutil.Process(pid)


def processes_using(data_dir: Path) -> list[psutil.Process]:
    """Server processes of one cluster: the postmaster and its children."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if str(data_dir) in cmdline:
            found.append(proc)
            found.extend(descendants(proc))  # [] if it exited meanwhile
    return found


def test_version_matches(pg_server: PostgresInstance, request: pytest.FixtureRequest) -> None:
    expected_18 = request.node.callspec.params["pg_server"] == "pg18"
    assert (pg_server.version == 18) is expected_18
    (version,) = pg_server.execute("SELECT version()")[0]
    assert f"PostgreSQL {pg_server.version}." in version
    settings = dict(
        pg_server.execute("SELECT name, setting FROM pg_settings WHERE name IN ('port', 'fsync', 'wal_level')")
    )
    assert settings == {"port": str(pg_server.port), "fsync": "off", "wal_level": "replica"}


def test_server_does_not_run_as_root(pg_server: PostgresInstance) -> None:
    main = postmaster(pg_server)
    assert main.is_running()
    # Backends may exit between children() and the read: those are skipped; the postmaster
    # itself must be there and readable.
    owners = [
        (main, main.uids(), main.username()),
        *((p, i["uids"], i["username"]) for p, i in live(main.children(), "uids", "username")),
    ]
    assert len(owners) > 1  # the postmaster's background processes were checked too
    for proc, uids, username in owners:
        if running_as_root():
            assert 0 not in uids, proc
            assert username == SERVICE_USER
        else:
            assert uids.effective == os.geteuid()


def test_unix_socket_is_trusted(pg_server: PostgresInstance) -> None:
    with psycopg.connect(
        host=str(pg_server.socket_dir), port=pg_server.port, user=pg_server.user, dbname="postgres"
    ) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_password_auth(pg_with_password: PostgresInstance) -> None:
    pg = pg_with_password
    assert pg.password
    assert pg.execute("SELECT current_user") == [("postgres",)]
    assert pg.execute("SHOW password_encryption") == [("scram-sha-256",)]
    wrong = dict(host=pg.host, port=pg.port, user=pg.user, dbname="postgres", connect_timeout=5)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**wrong, password=pg.password + "x").close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**wrong, password="").close()
    # Client programs run as us from the original bin dir, the password in their environment.
    psql = subprocess.run(
        [str(pg.client_bin_dir / "psql"), "-d", "postgres", "-tAc", "SELECT 1"],
        env={**os.environ, **pg.libpq_env()},
        capture_output=True,
        text=True,
        check=True,
    )
    assert psql.stdout.strip() == "1"


def test_password_never_in_argv(pg_with_password: PostgresInstance) -> None:
    password = pg_with_password.password
    assert password
    for proc in psutil.process_iter(["cmdline"]):
        assert password not in " ".join(proc.info["cmdline"] or []), proc
    assert not (pg_with_password.runtime_dir / "pwfile").exists()


def test_fresh_db(pg_server: PostgresInstance, fresh_db: MakeDb) -> None:
    name = fresh_db(pg_server)
    pg_server.execute("CREATE TABLE t (i int); INSERT INTO t VALUES (1), (2)", dbname=name)
    assert pg_server.execute("SELECT sum(i) FROM t", dbname=name) == [(3,)]
    assert (name,) in pg_server.execute("SELECT datname FROM pg_database")


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    pg = start_postgres(embedded_bin_dir(), tmp_path, name="stop")
    try:
        server = processes_using(pg.data_dir)
        assert len(server) > 1  # postmaster and its background workers
        pg.stop()
        pg.stop()  # idempotent
        gone, alive = psutil.wait_procs(server, timeout=0)
        assert not alive
        assert not processes_using(pg.data_dir)
        assert not (pg.data_dir / "postmaster.pid").exists()
    finally:
        pg.destroy()
    assert not pg.runtime_dir.exists()


def test_restart_from_copy_keeps_data_and_dodges_taken_port(tmp_path: Path) -> None:
    # force_copy: the path taken when the venv is not traversable (a CI clone under /root).
    with running_postgres(embedded_bin_dir(), tmp_path, name="copy", force_copy=True) as pg:
        assert pg.bin_dir != pg.client_bin_dir
        assert pg.client_bin_dir == embedded_bin_dir()
        pg.execute("CREATE TABLE kept (i int); INSERT INTO kept VALUES (42)")
        pg.restart()
        assert pg.execute("SELECT i FROM kept") == [(42,)]
        pg.stop()
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind((pg.host, pg.port))
            squatter.listen()
            taken = pg.port
            pg.restart()
            assert pg.port != taken
            assert pg.execute("SELECT i FROM kept") == [(42,)]


def test_startup_failure_shows_command_and_log(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as failure:
        start_postgres(embedded_bin_dir(), tmp_path, name="bad", settings={"shared_buffers": "lots"})
    message = str(failure.value)
    assert "postgres -D" in message
    assert "shared_buffers" in message
    assert not in_temp_roots("vfpg-bad-*")  # cleaned up after the failure
