"""Physical backups through the flows: full-backup, archive-logs, verify (WAL continuity),
restore-drill (the recovery path) and a point-in-time restore, on a real PostgreSQL 18."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.integration.test_flows import last_run_message, read_markdown
from vaultflow.blocks import BackupRepository, PostgresTarget
from vaultflow.engines.postgres.wal import is_segment, object_key, record_key
from vaultflow.errors import IntegrityError
from vaultflow.flows.archive_logs import archive_logs
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.restore import restore
from vaultflow.flows.restore_drill import restore_drill
from vaultflow.flows.verify import verify
from vaultflow.proc import short_temp_root
from vaultflow.testing.unprivileged import SERVICE_USER, give_to_service_user, running_as_root

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def work():
    path = Path(tempfile.mkdtemp(prefix="vfflowphys-", dir=short_temp_root()))  # reachable by the service user
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_physical_backup_archive_verify_drill_and_pitr(archiving, work):
    pg = archiving.pg
    repo_dir = work / "repo"
    target = PostgresTarget(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        mode="physical",
        physical_fingerprints=True,
        target_name="physflow",
        wal_spool=str(archiving.spool),
        bin_dir=str(pg.client_bin_dir),
        server_bin_dir=str(pg.bin_dir),
        restore_os_user=SERVICE_USER if running_as_root() else None,
        wal_fetch_command=archiving.python.command("fetch", "--repo-path", str(repo_dir), "--target", "physflow"),
    )
    repository = BackupRepository(local_path=str(repo_dir))
    archive_logs(target=target, repository=repository)  # start from an empty spool
    pg.execute(
        "CREATE TABLE IF NOT EXISTS flowphys (id int); TRUNCATE flowphys; "
        "INSERT INTO flowphys SELECT generate_series(1, 1000)"
    )

    backup = full_backup(target=target, repository=repository)
    pg.execute("INSERT INTO flowphys SELECT generate_series(1001, 1500)")
    t_after = pg.execute("SELECT clock_timestamp()")[0][0]
    pg.execute("INSERT INTO flowphys VALUES (-1)")  # the first commit after t_after ends recovery there
    archiving.wait_archived(archiving.make_segments(2)[-1])
    shipped = archive_logs(target=target, repository=repository)
    assert shipped["lag_segments"] == 0 and shipped["shipped"]
    state, message = last_run_message("logs-postgres-physflow-")
    assert state == "COMPLETED" and message.startswith(f"shipped {len(shipped['shipped'])} WAL files ("), message
    assert re.search(r"\d+(\.\d)? (kB|MB) read, \d+(\.\d)? (B|kB|MB) stored\); lag 0 units, ", message), message
    assert f"| shipped | {len(shipped['shipped'])} ({shipped['shipped'][0]} .. " in read_markdown(
        "archive-logs-summary-postgres-physflow"
    )
    give_to_service_user(repo_dir)

    assert verify(repository=repository, target=target)["problems"] == []
    drill = restore_drill(target=target, repository=repository, rto_objective_s=600)
    assert drill["backup_id"] == backup["backup_id"] and drill["tables"] > 0

    restored = restore(target=target, repository=repository, into=str(work / "pitr"), options={"to_time": t_after})
    assert restored["restored"] == {"cluster": str(work / "pitr")}
    # Replayed along timeline 1 (the drill's timeline 2 archived a history file but no WAL); the
    # promotion then took the next number no archived history file names.
    assert re.match(r"(\d+) \(replayed along timeline 1; promotion started timeline \1, ", restored["timeline"])
    assert re.match(
        r"LSN [0-9A-F]+/[0-9A-F]+, last transaction replayed .* UTC \(asked: to_time=", restored["recovery_point"]
    )
    state, message = last_run_message("restore-postgres-physflow-")
    assert state == "COMPLETED", message
    assert f"recovery point: {restored['recovery_point']}; timeline {restored['timeline']}; " in message, message
    page = read_markdown("restore-summary-postgres-physflow")
    assert (
        f"| timeline | {restored['timeline']} |" in page and f"| restored into | cluster -> {work / 'pitr'} |" in page
    )
    assert (work / "pitr" / "PG_VERSION").exists()

    manifest = json.loads((repo_dir / "postgres/physflow/backups" / backup["backup_id"] / "manifest.json").read_text())
    after_start = [n for n in shipped["shipped"] if is_segment(n) and n > manifest["consistency"]["start_wal_file"]]
    gap = after_start[0]  # not the newest: a hole in the middle of the archive
    (repo_dir / record_key("physflow", gap)).unlink()
    (repo_dir / object_key("physflow", gap)).unlink()
    with pytest.raises(IntegrityError, match=f"WAL archive of physflow: missing 1: {gap}"):
        verify(repository=repository, target=target)


def test_prune_drops_wal_older_than_the_oldest_kept_backup(archiving, work):
    from vaultflow.engines.postgres.wal import archived_names
    from vaultflow.flows.prune import prune
    from vaultflow.repository import Repository
    from vaultflow.stores import LocalStore

    pg = archiving.pg
    target = PostgresTarget(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        mode="physical",
        physical_fingerprints=True,
        target_name="physprune",
        wal_spool=str(archiving.spool),
        bin_dir=str(pg.client_bin_dir),
    )
    repository = BackupRepository(
        local_path=str(work / "repo"), keep_last=1, keep_daily=None, keep_weekly=None, keep_monthly=None
    )
    archive_logs(target=target, repository=repository)
    first = full_backup(target=target, repository=repository)
    archiving.wait_archived(archiving.make_segments(2)[-1])
    second = full_backup(target=target, repository=repository)
    archiving.wait_archived(archiving.make_segments(1)[-1])
    archive_logs(target=target, repository=repository)

    result = prune(repository=repository, target=target)
    assert result["deleted"] == [first["backup_id"]] and result["wal_deleted"] >= 2
    repo = Repository(LocalStore(work / "repo"))
    start = repo.catalog("postgres", "physprune").get(second["backup_id"]).consistency.start_wal_file
    remaining = [n for n in archived_names(repo, "physprune") if is_segment(n)]
    assert remaining and min(remaining) == start
    assert verify(repository=repository, target=target)["problems"] == []


def test_incremental_and_differential_flows_with_fallback_and_chain_checks(archiving, work):
    from vaultflow.flows.incremental_backup import differential_backup, incremental_backup

    pg = archiving.pg
    pg.execute("ALTER SYSTEM SET summarize_wal = on")
    pg.execute("SELECT pg_reload_conf()")
    target = PostgresTarget(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        mode="physical",
        physical_fingerprints=True,
        target_name="physinc",
        bin_dir=str(pg.client_bin_dir),
        server_bin_dir=str(pg.bin_dir),
        restore_os_user=SERVICE_USER if running_as_root() else None,
    )
    repository = BackupRepository(local_path=str(work / "repo"))
    pg.execute(
        "CREATE TABLE IF NOT EXISTS incflow (id int, v text); TRUNCATE incflow; "
        "INSERT INTO incflow SELECT g, md5(g::text) FROM generate_series(1, 20000) g; CHECKPOINT"
    )

    first = incremental_backup(target=target, repository=repository)
    assert first["kind"] == "full" and "no backup of" in first["fell_back_to_full"]
    # A few pages change (not one row in every page, which would change the whole table and leave
    # the incremental's size at the mercy of checkpoints and hint bits): it must be far smaller.
    pg.execute("UPDATE incflow SET v = 'changed' WHERE id <= 200")
    incr = incremental_backup(target=target, repository=repository)
    assert (incr["kind"], incr["parent_id"], incr["fell_back_to_full"]) == ("incremental", first["backup_id"], None)
    assert incr["stored_size"] < first["stored_size"] / 3
    pg.execute("INSERT INTO incflow VALUES (-1, 'after the incremental')")
    diff = differential_backup(target=target, repository=repository)
    assert (diff["kind"], diff["parent_id"]) == ("differential", first["backup_id"])

    drill = restore_drill(target=target, repository=repository, rto_objective_s=600)  # the differential's chain
    assert drill["backup_id"] == diff["backup_id"] and drill["tables"] > 0
    give_to_service_user(work / "repo")

    (work / "repo/postgres/physinc/backups" / first["backup_id"] / "manifest.json").unlink()  # the full is gone
    with pytest.raises(IntegrityError, match="chain broken"):
        verify(repository=repository, target=target)
    again = incremental_backup(target=target, repository=repository)
    assert again["kind"] == "full" and again["fell_back_to_full"]
