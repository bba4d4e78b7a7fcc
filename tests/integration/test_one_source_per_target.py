"""Two sources never share one target's backups: a newcomer's two PostgresTarget blocks with one
target_name, on a real PostgreSQL 18, through the command line; judged by psql, not by vaultflow's
own comparison. The fleet check and prefect.yaml validation name such blocks before any run."""

from __future__ import annotations

import re
import secrets
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vaultflow.blocks import BackupRepository, PostgresTarget
from vaultflow.cli import app
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore

pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()


def psql(pg, database: str, sql: str) -> list[str]:
    """Rows of `sql` in `database`, read by psql (unaligned, tuples only): the oracle."""
    done = subprocess.run(
        [str(pg.client_bin_dir / "psql"), "-X", "-At", "-h", pg.host, "-p", str(pg.port), "-U", pg.user, "-d", database]
        + ["-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


def vaultflow(*argv: str):
    return runner.invoke(app, list(argv), terminal_width=400)


def one_line(output: str) -> str:
    """The error line of a failed command (its last non-empty line)."""
    return [line for line in output.splitlines() if line.strip()][-1]


def test_a_second_block_with_the_same_target_name_is_refused_and_the_first_restores_its_own_rows(
    pg18, fresh_db, tmp_path: Path
):
    pg, suffix = pg18, secrets.token_hex(3)
    shop, hr = fresh_db(pg, f"shop_{suffix}"), fresh_db(pg, f"hr_{suffix}")
    pg.execute("CREATE TABLE orders (id int PRIMARY KEY, item text); INSERT INTO orders VALUES (1, 'shop row')", shop)
    pg.execute("CREATE TABLE staff (id int PRIMARY KEY, person text); INSERT INTO staff VALUES (7, 'hr row')", hr)
    common = {"host": pg.host, "port": pg.port, "user": pg.user, "bin_dir": str(pg.client_bin_dir)}
    target_name = f"shop-{suffix}"
    PostgresTarget(**common, databases=[shop], target_name=target_name).save(f"shop-{suffix}")
    PostgresTarget(**common, databases=[hr], target_name=target_name).save(f"shop2-{suffix}")
    BackupRepository(local_path=str(tmp_path / "repo")).save(f"main-{suffix}")
    repo = Repository(LocalStore(tmp_path / "repo"))
    copy = f"shop_copy_{suffix}"

    first = vaultflow("backup", "-t", f"postgres-target/shop-{suffix}", "-r", f"main-{suffix}")
    assert first.exit_code == 0, first.output
    (taken,) = repo.catalog("postgres", target_name).manifests
    assert taken.source == f"{pg.host}:{pg.port}, databases {shop}"

    second = vaultflow("backup", "-t", f"postgres-target/shop2-{suffix}", "-r", f"main-{suffix}")
    assert second.exit_code != 0
    error = one_line(second.output)
    for part in (f"postgres/{target_name}", f"databases {shop}'", f"databases {hr}'", taken.id, "target_name"):
        assert part in error, (part, error)
    assert "--accept-new-source" in error
    assert [m.id for m in repo.catalog("postgres", target_name).manifests] == [taken.id], "nothing was written"

    pg.execute(f"CREATE DATABASE {copy}")  # the newcomer's: an existing database, replaced
    try:
        restored = vaultflow(
            "restore", "-t", f"postgres-target/shop-{suffix}", "-r", f"main-{suffix}", "--into", copy, "--overwrite"
        )
        assert restored.exit_code == 0, restored.output
        assert re.search(rf"restored \S+-F.* {shop} -> {copy}", restored.output), restored.output
        assert psql(pg, copy, "SELECT id, item FROM orders") == ["1|shop row"]
        assert psql(pg, copy, "SELECT count(*) FROM pg_tables WHERE tablename = 'staff'") == ["0"]

        # The escape hatch: the source really changed. From then on that is the target's source,
        # and a restore with the first block (which lists none of its databases) is refused.
        moved = vaultflow(
            "backup", "-t", f"postgres-target/shop2-{suffix}", "-r", f"main-{suffix}", "--accept-new-source"
        )
        assert moved.exit_code == 0, moved.output
        newest = repo.catalog("postgres", target_name).manifests[-1]
        assert newest.source == f"{pg.host}:{pg.port}, databases {hr}"
        again = vaultflow("backup", "-t", f"postgres-target/shop-{suffix}", "-r", f"main-{suffix}")
        assert again.exit_code != 0 and newest.id in one_line(again.output)

        refused = vaultflow(
            "restore", "-t", f"postgres-target/shop-{suffix}", "-r", f"main-{suffix}", "--into", copy, "--overwrite"
        )
        assert refused.exit_code != 0
        error = one_line(refused.output)
        assert f"holds databases {hr}, none of the target's databases ({shop})" in error, error
        assert psql(pg, copy, "SELECT id, item FROM orders") == ["1|shop row"], "the copy was not touched"
    finally:
        pg.execute(f"DROP DATABASE IF EXISTS {copy} WITH (FORCE)")
