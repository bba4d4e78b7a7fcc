"""`vaultflow upload`: the upload flow from the command line (local -> another repository)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from vaultflow.blocks import PostgresTarget
from vaultflow.cli import app
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore

pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()


def test_upload_copies_what_the_destination_lacks(pg18, fresh_db, tmp_path: Path):
    db = fresh_db(pg18)
    pg18.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 50) g", dbname=db)
    PostgresTarget(
        host=pg18.host, port=pg18.port, user=pg18.user, databases=[db], bin_dir=str(pg18.client_bin_dir)
    ).save("cli-upload", overwrite=True)
    local, offsite = str(tmp_path / "local"), str(tmp_path / "offsite")
    assert runner.invoke(app, ["backup", "-t", "cli-upload", "--repo-path", local]).exit_code == 0

    sent = runner.invoke(app, ["upload", "--repo-path", local, "--to-path", offsite])
    assert sent.exit_code == 0, sent.output
    assert "copied 1 backups (2 objects" in sent.output
    [copied] = Repository(LocalStore(Path(offsite))).catalog("postgres", "cli-upload").manifests
    assert copied == Repository(LocalStore(Path(local))).catalog("postgres", "cli-upload").manifests[0]

    again = runner.invoke(
        app, ["upload", "--repo-path", local, "--to-path", offsite, "-t", "cli-upload", "--backup", "latest"]
    )
    assert again.exit_code == 0 and "copied 0 backups" in again.output, again.output

    both = runner.invoke(app, ["upload", "--repo-path", local])
    assert both.exit_code != 0 and "--to" in both.output
