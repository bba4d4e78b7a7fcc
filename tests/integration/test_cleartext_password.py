"""The backup password never goes anywhere but the target (issue 8 sections 1 and 9).

- A fake PostgreSQL server that asks for a cleartext password (tests/fixtures/fake_pg.py)
  must never receive it: not from a database whose name says `host=<fake> port=<p>`, not from
  a client that would parse such a name as a connection string (the passfile names only the
  target's host and port).
- The passfile is an anonymous memfd that libpq 15 and 18 accept through /dev/fd/N.
- A backup killed with SIGKILL in the middle of pg_dump leaves no file holding the password.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.corpus.oracle import assert_pg_restored
from tests.fixtures.fake_pg import FakePostgres
from tests.fixtures.postgres import quote_ident, system_bin_dir_below
from tests.fixtures.processes import descendants, named
from tests.fixtures.scratch import temp_roots
from tests.fixtures.secret_watch import files_holding
from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.client import client_env, dbname_conninfo
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore

ROOT = Path(__file__).resolve().parents[2]


def _config(pg, databases=(), name="cleartext") -> PostgresSettings:
    return PostgresSettings(
        target_name=name,
        host=pg.host,
        port=pg.port,
        user=pg.user,
        password=pg.password,
        databases=list(databases),
        bin_dir=str(pg.client_bin_dir),
    )


@pytest.fixture
def fake_pg():
    with FakePostgres() as fake:
        yield fake


def _psql(bin_dir: Path, env, dbname_arg: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(bin_dir / "psql"),
            "--no-password",
            "-X",
            "-At",
            f"--dbname={dbname_arg}",
            "-c",
            "SELECT current_database()",
        ],
        env=env,
        pass_fds=env.pass_fds,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("client", ["18", "15"])
def test_libpq_reads_the_memfd_passfile_and_only_its_databases(pg_with_password, fresh_db, client):
    bin_dir = pg_with_password.client_bin_dir if client == "18" else system_bin_dir_below(18)
    db = fresh_db(pg_with_password)
    other = fresh_db(pg_with_password)
    with client_env(_config(pg_with_password), [db]) as env:
        first = _psql(bin_dir, env, dbname_conninfo(db))
        again = _psql(bin_dir, env, dbname_conninfo(db))  # a second open of /dev/fd/N reads it again
        refused = _psql(bin_dir, env, dbname_conninfo(other))
    assert (first.returncode, first.stdout.strip()) == (0, db), first.stderr
    assert (again.returncode, again.stdout.strip()) == (0, db), again.stderr
    assert refused.returncode != 0 and "no password supplied" in refused.stderr


def test_the_fake_server_catches_a_password_when_one_is_offered(pg_with_password, fake_pg):
    """The judge can fail: a client given a match-any passfile hands the fake the password."""
    name = f"host=127.0.0.1 port={fake_pg.port} dbname=x"
    with client_env(_config(pg_with_password), [name]) as env:
        wildcard = f"*:*:*:{pg_with_password.user}:{pg_with_password.password}\n".encode()
        os.ftruncate(env.pass_fds[0], 0)
        os.pwrite(env.pass_fds[0], wildcard, 0)
        _psql(pg_with_password.client_bin_dir, env, name)  # the raw name: parsed as options
    assert fake_pg.passwords == [pg_with_password.password.encode()]


def test_the_passfile_alone_keeps_the_password_from_a_name_read_as_options(pg_with_password, fake_pg):
    """Even a tool that parsed the name as a connection string finds no password for the fake."""
    name = f"host=127.0.0.1 port={fake_pg.port} dbname=x"
    with client_env(_config(pg_with_password), [name]) as env:
        result = _psql(pg_with_password.client_bin_dir, env, name)
    assert result.returncode != 0
    assert fake_pg.connections >= 1 and fake_pg.passwords == []


def test_a_database_named_like_a_connection_string_is_backed_up_not_phished(pg_with_password, fake_pg, tmp_path):
    pg = pg_with_password
    name = f"host=127.0.0.1 port={fake_pg.port} dbname=x"
    into = "restored_from_hostile_name"
    pg.execute(f"CREATE DATABASE {quote_ident(name)}")
    try:
        pg.execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text); "
            "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g",
            dbname=name,
        )
        engine = PostgresEngine(_config(pg, [name]))
        ctx = BackupContext(repository=Repository(LocalStore(tmp_path / "repo")), log=lambda line: None)
        manifest = engine.full_backup(ctx)
        result = engine.restore(ctx, manifest, into=into)
        assert result.restored == {name: into} and result.comparison.ok, result.comparison.summary()
        assert_pg_restored(pg, name, pg, into)
    finally:
        for db in (name, into):
            pg.execute(f"DROP DATABASE IF EXISTS {quote_ident(db)} WITH (FORCE)")
    assert fake_pg.passwords == [] and fake_pg.connections == 0, fake_pg.startups


# -- a killed backup leaves no secret ---------------------------------------------------------

CHILD = """
import json, sys, threading
from pathlib import Path
from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore

class StallingStore(LocalStore):
    # A store that never reads a dump (a stalled upload): pg_dump runs until its pipe is
    # full and then waits, mid-COPY, for the test to kill this process.
    def put(self, key, reader, size_hint=None):
        if key.endswith(".dump.zst"):
            print("stalled", flush=True)
            threading.Event().wait()
        return super().put(key, reader, size_hint)

spec = json.loads(sys.stdin.readline())  # the password comes on stdin: never argv or environment
ctx = BackupContext(repository=Repository(StallingStore(Path(spec.pop("repo")))), log=lambda line: None)
PostgresEngine(PostgresSettings(**spec)).full_backup(ctx)
"""


@pytest.mark.serial  # looks for temporary directories in /tmp: none from other tests may appear
def test_a_backup_killed_mid_dump_leaves_no_file_with_the_password(pg_with_password, fresh_db, tmp_path):
    pg = pg_with_password
    db = fresh_db(pg)
    pg.execute(
        "CREATE TABLE big (id int, v text); "
        "INSERT INTO big SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 20000) g",
        dbname=db,
    )
    spec = {
        **json.loads(_config(pg, [db], name="killed").model_dump_json()),
        "password": pg.password,
        "repo": str(tmp_path / "repo"),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    child.stdin.write((json.dumps(spec) + "\n").encode())
    child.stdin.close()
    line = child.stdout.readline()  # the backup is mid-dump: the store stopped reading
    assert line == b"stalled\n", child.stderr.read().decode()
    deadline = time.monotonic() + 120  # a hang guard, not a timed assertion
    while not pg.execute(f"SELECT 1 FROM pg_stat_activity WHERE datname = '{db}' AND query LIKE 'COPY %'"):
        assert time.monotonic() < deadline and child.poll() is None, "pg_dump never started its COPY"
        time.sleep(0.05)
    dumps = named(descendants(child.pid), "pg_dump")
    assert dumps, "the backup's pg_dump should be running, blocked on its pipe"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    pid = int(dumps[0].split()[0])
    assert psutil.wait_procs([psutil.Process(pid)] if psutil.pid_exists(pid) else [], timeout=60)[1] == [], (
        "pg_dump outlived the killed backup"
    )  # tied to the run (a hang guard, not a timing)
    roots = [*temp_roots(), Path("/dev/shm"), tmp_path]
    assert files_holding(pg.password, roots) == []
