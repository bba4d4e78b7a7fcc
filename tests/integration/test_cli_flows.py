"""Every flow from the command line, on real servers: backup kinds, archive-logs, drill of a
chosen backup, verify and prune of one target; no secret in argv, output, logs or repository."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL
from pydantic import SecretStr
from typer.testing import CliRunner

from tests.fixtures.secret_watch import SecretWatch, assert_runs_keep_secret
from vaultflow.blocks import PostgresTarget
from vaultflow.cli import app
from vaultflow.engines.postgres.wal import read_record
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore

pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()


def backup_id(output: str) -> str:
    found = re.search(r"^backup (\S+): [\d.]+ (B|kB|MB|GB) stored in [\d.]+ s", output, re.M)
    assert found, output
    return found.group(1)


@pytest.mark.logs_to_api
def test_backup_kinds_drill_of_a_chosen_backup_and_one_target_checks(pg_with_password, fresh_db, tmp_path: Path):
    """A logical PostgreSQL target has no incremental form: the incremental-backup flow takes a
    full and the command says why. The password is in the block, never in argv or any output."""
    pg, password = pg_with_password, pg_with_password.password
    db = fresh_db(pg)
    pg.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 300) g", dbname=db)
    PostgresTarget(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        password=SecretStr(password),
        databases=[db],
        bin_dir=str(pg.client_bin_dir),
    ).save("cli-kinds", overwrite=True)
    repo = tmp_path / "repo"
    # A narrow width and stdout a pipe: every result and note line stays one physical line.
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "COLUMNS": "30"}
    with SecretWatch(password) as watch:
        argv = [*watch.python_argv("from vaultflow.entry import main; main()"), "-v", "backup", "-t", "cli-kinds"]
        full = subprocess.run(
            [*argv, "--repo-path", str(repo)], capture_output=True, text=True, timeout=300, env=env, check=False
        )
        incremental = subprocess.run(
            [*argv, "--repo-path", str(repo), "--kind", "incremental"],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            check=False,
        )
    assert full.returncode == 0 and incremental.returncode == 0, full.stderr + incremental.stderr
    assert watch.leaks == [] and any("pg_dump" in " ".join(argv) for argv in watch.spawned)
    for done in (full, incremental):
        assert password not in done.stdout + done.stderr
        assert "INFO" in done.stderr  # -v: every log line of the run
    first, second = backup_id(full.stdout), backup_id(incremental.stdout)
    assert "(full)" in full.stdout and "(full)" in incremental.stdout
    assert re.search(r"^note: a full backup instead of incremental: .+", incremental.stdout, re.M), incremental.stdout
    for done in (full, incremental):
        assert all(line.startswith(("backup ", "note: ")) for line in done.stdout.splitlines()), done.stdout
    assert_runs_keep_secret(password, "%cli-kinds%", repo)

    narrow = {"COLUMNS": "30"}
    differential = runner.invoke(
        app, ["backup", "-t", "cli-kinds", "--repo-path", str(repo), "-k", "differential"], env=narrow
    )
    assert differential.exit_code == 0, differential.output
    assert [line.split(" ", 1)[0] for line in differential.stdout.splitlines()] == ["backup", "note:"]
    assert "note: a full backup instead of differential" in differential.stdout
    assert differential.stderr == ""  # without -v the run's info lines stay on the API

    drilled = runner.invoke(app, ["drill", "-t", "cli-kinds", "--repo-path", str(repo), "--backup", first], env=narrow)
    assert drilled.exit_code == 0, drilled.output
    assert re.fullmatch(rf"drill of {first}: .+, restore [\d.]+ (ms|s)\n", drilled.stdout), drilled.stdout
    checked = runner.invoke(app, ["verify", "--repo-path", str(repo), "-t", "cli-kinds", "--quick"])
    assert checked.exit_code == 0 and "3 backups checked, 0 problems" in checked.stdout, checked.output
    plan = runner.invoke(app, ["prune", "--repo-path", str(repo), "-t", "cli-kinds", "--dry-run"], env=narrow)
    assert plan.exit_code == 0 and plan.stdout.startswith("kept 3, would delete 0 backups"), plan.output
    assert plan.stdout.count("\n") == 1 and plan.stdout.rstrip().endswith("oplog slices)"), plan.stdout
    restored = runner.invoke(
        app, ["restore", "-t", "cli-kinds", "--repo-path", str(repo), "-b", second, "--into", f"{db}_cli"]
    )
    assert restored.exit_code == 0, restored.output
    assert pg.execute("SELECT count(*), sum(length(v)) FROM t", dbname=f"{db}_cli") == [(300, 300 * 32)]
    pg.execute(f'DROP DATABASE "{db}_cli" WITH (FORCE)')


def test_archive_logs_from_the_command_line(archiving, tmp_path: Path):
    pg = archiving.pg
    PostgresTarget(host=pg.host, port=pg.port, user=pg.user, mode="physical", physical_fingerprints=True).save(
        "cli-wal", overwrite=True
    )
    repo = tmp_path / "repo"
    args = ["archive-logs", "-t", "cli-wal", "--repo-path", str(repo)]

    unset = runner.invoke(app, args)  # the block has no wal_spool and none was given
    assert unset.exit_code == 1
    [line] = unset.stderr.splitlines()
    assert line.startswith("error: ") and "spool" in line and "Traceback" not in unset.output

    # A mistyped or unmounted spool is no empty one: shipping nothing with no lag would hide
    # archiving that has stopped.
    missing = tmp_path / "missing-spool"
    mistyped = runner.invoke(app, [*args, "--spool", str(missing)])
    assert mistyped.exit_code == 1, mistyped.output
    [line] = mistyped.stderr.splitlines()
    assert f"WAL spool {missing} of cli-wal (its spool_dir (--spool)) does not exist" in line, line
    assert "mounted" in line and mistyped.stdout == "" and not missing.exists()
    PostgresTarget(
        host=pg.host, port=pg.port, user=pg.user, mode="physical", physical_fingerprints=True, wal_spool=str(missing)
    ).save("cli-wal-missing", overwrite=True)
    configured = runner.invoke(app, ["archive-logs", "-t", "cli-wal-missing", "--repo-path", str(repo)])
    assert configured.exit_code == 1 and "(its wal_spool) does not exist" in configured.stderr, configured.output

    assert runner.invoke(app, [*args, "--spool", str(archiving.spool)]).exit_code == 0  # earlier tests' segments
    names = archiving.make_segments(2)
    archiving.wait_archived(names[-1])
    shipped = runner.invoke(app, [*args, "--spool", str(archiving.spool), "--follow", "1"])
    assert shipped.exit_code == 0, shipped.output
    found = re.match(
        r"shipped (\d+) \(.+ stored\), \d+ already stored; lag 0 waiting, [\d.]+ s$", shipped.stdout.strip()
    )
    assert found and int(found.group(1)) >= 2, shipped.stdout
    stored = Repository(LocalStore(repo))
    assert all(read_record(stored, "cli-wal", name) is not None for name in names)
