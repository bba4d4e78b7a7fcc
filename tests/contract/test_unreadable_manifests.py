"""Unreadable manifests and unknown engines, a kind found by a newcomer's try: a manifest that
cannot be read (edited by hand, written by a newer vaultflow, an engine this worker lacks) must
never make 'latest' silently mean an older backup, never be deleted or hidden by prune, and never
stop prune or verify of the other targets. Run on the SQLite engine defined in tests (any engine
would do: the behaviour is generic)."""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.contract.toy_engine import ENGINE, sqlite_engine_registered
from vaultflow.blocks import BackupRepository
from vaultflow.errors import IntegrityError, RefusedError
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.prune import prune
from vaultflow.flows.restore import restore
from vaultflow.flows.restore_drill import restore_drill
from vaultflow.flows.verify import verify


def write_value(path: Path, value: str) -> None:
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT OR REPLACE INTO t VALUES (1, ?)", (value,))


def read_value(path: Path) -> str:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT v FROM t WHERE id = 1").fetchone()[0]


def spoil(manifest_path: Path) -> None:
    """A typo in a consistency key: what a hand edit or a newer writer leaves."""
    doc = json.loads(manifest_path.read_text())
    doc["consistency"]["typo_key"] = 1
    manifest_path.write_text(json.dumps(doc))


def manifest_path(repo: Path, backup_id: str) -> Path:
    return repo / ENGINE / "app" / "backups" / backup_id / "manifest.json"


@pytest.mark.usefixtures("prefect_api")
def test_latest_is_refused_when_the_newest_manifest_is_unreadable(tmp_path: Path):
    db, repo = tmp_path / "app.db", tmp_path / "repo"
    repository = BackupRepository(local_path=str(repo))
    with sqlite_engine_registered() as kind:
        target = kind(path=str(db))
        write_value(db, "old")
        old = full_backup(target=target, repository=repository)["backup_id"]
        write_value(db, "new")
        new = full_backup(target=target, repository=repository)["backup_id"]
        spoil(manifest_path(repo, new))

        for run in (
            lambda: restore(target=target, repository=repository, into=str(tmp_path / "latest.db")),
            lambda: restore_drill(target=target, repository=repository),
        ):
            with pytest.raises(
                RefusedError, match=rf"(?s)the newest backup {new} cannot be read .*newest readable one is {old}"
            ):
                run()
        assert not (tmp_path / "latest.db").exists(), "nothing restored from the older backup in its place"

        done = restore(target=target, repository=repository, backup_id=old, into=str(tmp_path / "old.db"))
        assert done["backup_id"] == old and read_value(tmp_path / "old.db") == "old", "by id, the older one restores"


@pytest.mark.usefixtures("prefect_api")
def test_prune_keeps_and_reports_unreadable_backups_and_skips_unknown_engines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    db, repo = tmp_path / "app.db", tmp_path / "repo"
    with sqlite_engine_registered() as kind:
        target = kind(path=str(db))
        ids = []
        for value in ("a", "b", "c"):
            write_value(db, value)
            ids.append(full_backup(target=target, repository=BackupRepository(local_path=str(repo)))["backup_id"])
        spoil(manifest_path(repo, ids[0]))
        # a target written by an engine this worker does not have (another worker's, a newer vaultflow's)
        shutil.copytree(repo / ENGINE, repo / "nosuchengine")
        for copied in (repo / "nosuchengine").rglob("manifest.json"):
            copied.write_text(copied.read_text().replace(f'"engine": "{ENGINE}"', '"engine": "nosuchengine"'))

        result = prune(repository=BackupRepository(local_path=str(repo), keep_last=1, orphan_grace="0s"))

        oldest_key = f"{ENGINE}/app/backups/{ids[0]}/manifest.json"
        assert list(result["unreadable"]) == [oldest_key] and "typo_key" in result["unreadable"][oldest_key]
        assert result["deleted"] == [ids[1]] and ids[2] in result["kept"]
        assert sorted(p.name for p in (repo / ENGINE / "app" / "backups" / ids[0]).iterdir()) == sorted(
            p.name for p in (repo / "nosuchengine" / "app" / "backups" / ids[0]).iterdir()
        ), "the unreadable backup keeps its manifest and payload (not an orphan)"
        assert list(result["skipped_targets"]) == ["nosuchengine/app"]
        assert "does not know" in result["skipped_targets"]["nosuchengine/app"]
        assert len(list((repo / "nosuchengine" / "app" / "backups").iterdir())) == 3, "nothing of it touched"

        caplog.set_level(logging.INFO)
        with pytest.raises(IntegrityError) as failed:
            verify(repository=BackupRepository(local_path=str(repo)))
        assert oldest_key in str(failed.value) and "no vaultflow engine named 'nosuchengine'" in str(failed.value)
        said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("verified ")]
        assert len(said) == 1 and said[0].startswith("verified 1 backups, 4 unreadable manifests of "), said
        assert said[0].endswith(": 4 PROBLEMS") and "nosuchengine/app" in said[0], said
        # "an unreadable manifest is not counted as a backup verified": 1 backup, 4 unreadable
