"""The `vaultflow` command runs the same flows; exit codes and messages a user can act on."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from blocks import PostgresTarget
from vaultflow import cli
from vaultflow.cli import app

pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()


def test_backup_list_verify_prune_restore(pg18, fresh_db, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(cli.console, "width", 200)  # the catalog table must not wrap ids
    db = fresh_db(pg18)
    pg18.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200) g", dbname=db)
    PostgresTarget(host=pg18.host, port=pg18.port, user=pg18.user, databases=[db],
                   bin_dir=str(pg18.client_bin_dir)).save("cli-target", overwrite=True)
    repo = str(tmp_path / "repo")

    backup = runner.invoke(app, ["backup", "-t", "cli-target", "--repo-path", repo])
    assert backup.exit_code == 0, backup.output
    assert "backup " in backup.output and "MB stored" in backup.output

    listing = runner.invoke(app, ["list", "--repo-path", repo])
    assert listing.exit_code == 0, listing.output
    assert "postgres/cli-target" in listing.output and "full" in listing.output

    checked = runner.invoke(app, ["verify", "--repo-path", repo])
    assert checked.exit_code == 0 and "1 backups checked, 0 problems" in checked.output

    plan = runner.invoke(app, ["prune", "--repo-path", repo, "--dry-run"])
    assert plan.exit_code == 0 and "kept 1, would delete 0" in plan.output

    restored = runner.invoke(app, ["restore", "-t", "cli-target", "--repo-path", repo, "--into", f"{db}_cli"])
    assert restored.exit_code == 0, restored.output
    assert pg18.execute("SELECT count(*) FROM t", dbname=f"{db}_cli") == [(200,)]

    refused = runner.invoke(app, ["restore", "-t", "cli-target", "--repo-path", repo, "--into", f"{db}_cli"])
    assert refused.exit_code == 1
    assert "already exist" in refused.output and "nothing was touched" in refused.output
    pg18.execute(f'DROP DATABASE "{db}_cli" WITH (FORCE)')


def test_missing_repository_option_is_explained():
    result = runner.invoke(app, ["list"])
    assert result.exit_code != 0
    assert "--repository" in result.output and "--repo-path" in result.output
