"""The `vaultflow` command runs the same flows; exit codes and messages a user can act on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vaultflow import cli
from vaultflow.blocks import PostgresTarget
from vaultflow.cli import app
from vaultflow.engines.postgres.consistency import PostgresPhysicalConsistency
from vaultflow.manifest import BackupKind, BackupMode, Manifest, new_backup_id
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore

pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()


def test_backup_list_verify_prune_restore(pg18, fresh_db, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(cli.console, "width", 200)  # the catalog table must not wrap ids
    db = fresh_db(pg18)
    pg18.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 200) g", dbname=db)
    PostgresTarget(
        host=pg18.host, port=pg18.port, user=pg18.user, databases=[db], bin_dir=str(pg18.client_bin_dir)
    ).save("cli-target", overwrite=True)
    repo = str(tmp_path / "repo")

    backup = runner.invoke(app, ["backup", "-t", "cli-target", "--repo-path", repo])
    assert backup.exit_code == 0, backup.output
    assert re.search(r"backup \S+: [\d.]+ (B|kB|MB|GB) stored in [\d.]+ s", backup.output), backup.output

    listing = runner.invoke(app, ["list", "--repo-path", repo])
    assert listing.exit_code == 0, listing.output
    assert "postgres/cli-target" in listing.output and "full" in listing.output
    assert re.search(r"\d+(\.\d)? kB", listing.output) and " MB" not in listing.output, listing.output

    checked = runner.invoke(app, ["verify", "--repo-path", repo])
    assert checked.exit_code == 0 and "1 backup checked, 0 problems" in checked.output

    plan = runner.invoke(app, ["prune", "--repo-path", repo, "--dry-run"])
    assert plan.exit_code == 0 and "kept 1, would delete 0" in plan.output

    restored = runner.invoke(app, ["restore", "-t", "cli-target", "--repo-path", repo, "--into", f"{db}_cli"])
    assert restored.exit_code == 0, restored.output
    assert "recovery point: the backup's consistent point (" in restored.output, restored.output
    assert "timeline" not in restored.output, "a logical restore has no timeline to show"
    assert pg18.execute("SELECT count(*) FROM t", dbname=f"{db}_cli") == [(200,)]

    refused = runner.invoke(app, ["restore", "-t", "cli-target", "--repo-path", repo, "--into", f"{db}_cli"])
    assert refused.exit_code == 1
    assert "already exist" in refused.output and "nothing was touched" in refused.output
    # the CLI's line names its flags; the flow's (a deployment's run) names the parameters
    assert (
        "(--into), or replace it: --into naming it and --overwrite (several databases: one at a time, chosen with --database)"
        in refused.output
    )
    assert "=True" not in refused.output
    pg18.execute(f'DROP DATABASE "{db}_cli" WITH (FORCE)')

    # Restored twice under the default name (the backup's time): the second says whose copy is there.
    first = runner.invoke(app, ["restore", "-t", "cli-target", "--repo-path", repo])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["restore", "-t", "cli-target", "--repo-path", repo])
    assert again.exit_code == 1 and "nothing was touched" in again.output, again.output
    assert "an earlier restore of it made that copy; drop it if it is no longer needed" in again.output
    [copy] = [r[0] for r in pg18.execute(f"SELECT datname FROM pg_database WHERE datname LIKE '{db}_restore_%'")]
    assert copy in again.output
    replaced = runner.invoke(app, ["restore", "-t", "cli-target", "--repo-path", repo, "--into", copy, "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    pg18.execute(f'DROP DATABASE "{copy}" WITH (FORCE)')

    # The catalog shows each backup's last check: the verify above, then a failed one.
    backup_id = re.search(r"backup (\S+):", backup.output).group(1)
    assert "verify ok" in runner.invoke(app, ["list", "--repo-path", repo]).output
    [dump] = [p for p in Path(repo).rglob("*.dump.zst") if backup_id in str(p)]
    dump.write_bytes(dump.read_bytes()[:-8] + b"corrupt!")
    failed = runner.invoke(app, ["verify", "--repo-path", repo])
    assert failed.exit_code == 1, failed.output
    listed = runner.invoke(app, ["list", "--repo-path", repo])
    assert listed.exit_code == 0 and "verify FAILED" in listed.output, listed.output
    [warning] = [line for line in listed.output.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: postgres/cli-target {backup_id}: its last verify FAILED at "), warning
    assert dump.name in warning and "`vaultflow verify` checks it again" in warning, warning


def test_list_through_a_pipe_prints_whole_ids_and_reports_future_dated_backups(tmp_path: Path):
    """CI logs and pipes are not terminals: ids must come out whole whatever COLUMNS says."""
    repo = Repository(LocalStore(tmp_path / "repo"))
    target = "a-target-name-longer-than-any-terminal-column"
    now = datetime.now(UTC)

    def commit(when: datetime, kind: BackupKind, parent: str | None = None) -> Manifest:
        m = Manifest(
            id=new_backup_id(kind, when),
            engine="postgres",
            target=target,
            kind=kind,
            parent_id=parent,
            mode=BackupMode.PHYSICAL,
            started_at=when,
            finished_at=when,
            objects=[],
            consistency=PostgresPhysicalConsistency(
                start_lsn="0/2000028",
                stop_lsn="0/2000100",
                timeline=1,
                start_wal_file="000000010000000000000002",
                checkpoint_lsn="0/2000060",
            ),
        )
        repo.commit(m)  # the store stamps the manifest with the real time
        return m

    full = commit(now - timedelta(hours=2), BackupKind.FULL)
    child = commit(now - timedelta(hours=1), BackupKind.INCREMENTAL, full.id)
    ahead = commit(now + timedelta(hours=3), BackupKind.FULL)  # a worker whose clock runs 3 h fast
    env = {**os.environ, "COLUMNS": "20", "LINES": "5"}
    listed = subprocess.run(
        [sys.executable, "-m", "vaultflow.cli", "list", "--repo-path", str(tmp_path / "repo")],
        capture_output=True,
        env=env,
        text=True,
        timeout=300,
    )
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == [
        "target",
        "backup",
        "kind",
        "parent",
        "finished",
        "(UTC)",
        "stored",
        "objects",
        "last",
        "check",
        "clock",
    ]
    rows = {line.split()[1]: line.split() for line in lines[1:4]}
    assert set(rows) == {full.id, child.id, ahead.id}
    assert rows[child.id][:4] == [f"postgres/{target}", child.id, "incremental", full.id]
    assert rows[full.id][-1] == rows[child.id][-1] == "ok"
    assert rows[full.id][-5:-3] == ["0", "B"], "sizes in units a person reads: no '0.00' MB"
    assert rows[full.id][-2] == "never", "no verify or drill has checked it yet"
    assert rows[ahead.id][-1] == "future-dated"
    [warning] = [line for line in lines if line.startswith("warning:")]
    assert warning.startswith(f"warning: postgres/{target} {ahead.id}: future-dated")
    assert "3h after the store wrote its manifest" in warning and "fix that worker's clock" in warning
    assert "'latest' skips it" in warning
    assert max(len(line) for line in lines) > 20  # wider than COLUMNS: nothing was cut to fit
