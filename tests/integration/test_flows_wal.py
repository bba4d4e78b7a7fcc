"""The archive-logs flow: a real archive_command spools, the flow ships, lag is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultflow.blocks import BackupRepository, PostgresTarget
from vaultflow.engines.postgres.wal import check_continuity, read_record, spooled
from vaultflow.errors import ConfigError
from vaultflow.flows.archive_logs import archive_logs
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_archive_logs_ships_the_spool_and_reports_lag(archiving, tmp_path: Path):
    pg = archiving.pg
    target = PostgresTarget(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        mode="physical",
        physical_fingerprints=True,
        wal_spool=str(archiving.spool),
        target_name="walflow",
    )
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    archive_logs(target=target, repository=repository)  # whatever earlier tests left behind
    names = archiving.make_segments(3)
    archiving.wait_archived(names[-1])

    result = archive_logs(target=target, repository=repository)
    assert set(names) <= set(result["shipped"])
    assert (result["lag_segments"], result["lag_seconds"]) == (0, 0.0)
    assert spooled(archiving.spool) == []
    repo = Repository(LocalStore(tmp_path / "repo"))
    assert all(read_record(repo, "walflow", n) is not None for n in names)
    assert check_continuity(repo, "walflow", names[0]) == []


def test_archive_logs_needs_a_spool(pg18, tmp_path: Path):
    target = PostgresTarget(host=pg18.host, port=pg18.port, target_name="nospool")
    with pytest.raises(ConfigError, match="has no wal_spool"):
        archive_logs(target=target, repository=BackupRepository(local_path=str(tmp_path)))


def test_follow_mode_keeps_shipping_while_the_server_writes(archiving, tmp_path: Path):
    import threading

    pg = archiving.pg
    target = PostgresTarget(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        mode="physical",
        wal_spool=str(archiving.spool),
        target_name="walfollow",
    )
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    archive_logs(target=target, repository=repository)
    made: list[str] = []
    writer = threading.Thread(
        target=lambda: [made.extend(archiving.make_segments(1)) or __import__("time").sleep(0.5) for _ in range(4)]
    )
    writer.start()
    result = archive_logs(target=target, repository=repository, follow_seconds=4)
    writer.join()
    archiving.wait_archived(made[-1])
    rest = archive_logs(target=target, repository=repository)
    assert set(made) <= set(result["shipped"]) | set(rest["shipped"])
    assert len(set(made) & set(result["shipped"])) >= 2, "segments written during the run were shipped by it"
    assert "max_lag_segments" in result
