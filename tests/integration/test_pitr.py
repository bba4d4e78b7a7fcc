"""Point-in-time recovery from a physical base backup and the real WAL archive (PG 18).

The server of the `archiving` fixture spools WAL with the real `wal-push`; ship_spool moves it
into the repository; recovery fetches it back with the real `wal-fetch` as restore_command.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.cluster import stop_cluster
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.recovery import RecoveryTarget, recover
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.engines.postgres.wal import check_continuity, object_key, record_key, ship_spool
from vaultflow.errors import NotFoundError
from vaultflow.proc import short_temp_root
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
from vaultflow.testing.unprivileged import SERVICE_USER, give_to_service_user, running_as_root

RUN_AS = SERVICE_USER if running_as_root() else None


def server_now(pg) -> datetime:
    return pg.execute("SELECT clock_timestamp()")[0][0]


class Ticker:
    """Commits one row every ~10 ms, each stamped with the server clock at insert."""

    def __init__(self, pg):
        self.pg, self.stop = pg, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.pg.conninfo(), autocommit=True) as conn:
            while not self.stop.is_set():
                conn.execute("INSERT INTO ticks (at) VALUES (clock_timestamp())")
                time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


@pytest.fixture
def setup(archiving):
    pg = archiving.pg
    # Not under pytest's 0700 tmp dir: the restored cluster and its restore_command run as
    # the service user, who must reach the data directory and read the repository.
    work = Path(tempfile.mkdtemp(prefix="vfpitr-", dir=short_temp_root()))
    work.chmod(0o711)
    repo_dir = work / "repo"
    repo = Repository(LocalStore(repo_dir))
    target = f"pitr{int(time.time() * 1000) % 10**6}"
    pg.execute(
        "DROP TABLE IF EXISTS ticks, markers; CREATE TABLE ticks (id bigserial PRIMARY KEY, at timestamptz); "
        "CREATE TABLE markers (label text PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())"
    )
    config = PostgresSettings(
        target_name=target,
        host=pg.host,
        port=pg.port,
        user=pg.user,
        mode="physical",
        physical_fingerprints=True,
        bin_dir=str(pg.client_bin_dir),
        server_bin_dir=str(pg.bin_dir),
        restore_os_user=RUN_AS,
        wal_fetch_command=archiving.python.command("fetch", "--repo-path", str(repo_dir), "--target", target),
    )
    yield pg, repo, PostgresEngine(config), work
    shutil.rmtree(work, ignore_errors=True)


def ship(archiving, pg, repo, target) -> None:
    archiving.wait_archived(archiving.switch())
    ship_spool(archiving.spool, repo, target)
    give_to_service_user(repo.store.root)  # restore_command reads it as that user


def test_restore_to_t2_under_write_load(archiving, setup):
    pg, repo, engine, work = setup
    manifest = engine.full_backup(BackupContext(repo))
    pgbench = subprocess.Popen(
        [str(pg.client_bin_dir / "pgbench"), "-n", "-c", "2", "-T", "8", "-f", "/dev/stdin", "postgres"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**pg.libpq_env()},
        text=True,
    )
    pgbench.stdin.write("INSERT INTO ticks (at) VALUES (clock_timestamp());\n")
    pgbench.stdin.close()
    with Ticker(pg):
        time.sleep(1)
        pg.execute("INSERT INTO markers (label) VALUES ('t1')")
        time.sleep(1)
        t2 = server_now(pg)
        time.sleep(1)
        pg.execute("INSERT INTO markers (label) VALUES ('t3')")
        time.sleep(1)
    assert pgbench.wait(timeout=60) == 0, pgbench.stderr.read()
    ship(archiving, pg, repo, engine.config.name)
    source_before_t2 = pg.execute(
        "SELECT count(*) FROM ticks WHERE at <= %s::timestamptz - interval '200 ms'".replace(
            "%s", f"'{t2.isoformat()}'"
        )
    )[0][0]

    dest = work / "data"
    result, cluster = recover(
        BackupContext(repo),
        manifest,
        dest,
        bin_dir=Path(engine.config.server_bin_dir),
        user=pg.user,
        target=RecoveryTarget(time=t2),
        run_as=RUN_AS,
        fetch_command=engine.config.wal_fetch_command,
        keep_running=True,
    )
    try:
        with psycopg.connect(host=str(cluster.socket_dir), port=cluster.port, user=pg.user, dbname="postgres") as c:
            labels = [r[0] for r in c.execute("SELECT label FROM markers ORDER BY at")]
            latest = c.execute("SELECT max(at) FROM ticks").fetchone()[0]
            early = c.execute(
                f"SELECT count(*) FROM ticks WHERE at <= '{t2.isoformat()}'::timestamptz - interval '200 ms'"
            ).fetchone()[0]
    finally:
        stop_cluster(cluster)
    assert labels == ["t1"], "committed before t2: t1 is there; t3 (after t2) is not"
    assert latest <= t2, "no row inserted after t2 survives"
    assert early == source_before_t2 > 100, "every row committed well before t2 is there"
    assert result.seconds > 0


def test_missing_segment_is_named_and_earlier_points_still_restore(archiving, setup):
    pg, repo, engine, work = setup
    manifest = engine.full_backup(BackupContext(repo))
    ship(archiving, pg, repo, engine.config.name)
    pg.execute("INSERT INTO markers (label) VALUES ('before-gap')")
    t_before = server_now(pg)
    # Recovery to a time stops at the first commit after it: that commit must be archived.
    pg.execute("INSERT INTO markers (label) VALUES ('just-after-t_before')")
    ship(archiving, pg, repo, engine.config.name)  # the segment holding both
    pg.execute("INSERT INTO markers (label) VALUES ('in-gap')")
    gap = pg.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
    ship(archiving, pg, repo, engine.config.name)
    pg.execute("INSERT INTO markers (label) VALUES ('after-gap')")
    t_after = server_now(pg)
    ship(archiving, pg, repo, engine.config.name)

    repo.store.delete(record_key(engine.config.name, gap))
    repo.store.delete(object_key(engine.config.name, gap))
    assert gap in check_continuity(repo, engine.config.name, manifest.consistency.start_wal_file)

    with pytest.raises(NotFoundError, match=f"WAL segment {gap} is missing"):
        engine.recover(BackupContext(repo), manifest, work / "beyond", RecoveryTarget(time=t_after))

    result = engine.recover(BackupContext(repo), manifest, work / "before", RecoveryTarget(time=t_before))
    assert result.restored == {"cluster": str(work / "before")}
    assert result.timeline == (
        "2 (replayed along timeline 1; promotion started timeline 2, its history file 00000002.history archived)"
    )
    assert result.reached.startswith("LSN ") and ", last transaction replayed " in result.reached, result.reached
    assert not (work / "beyond").exists() and not (work / "beyond.log").exists(), "the failed restore left nothing"
    assert [t.database for t in result.comparison.tables] == ["(cluster)"], (
        "files checked against backup_manifest; no fingerprint comparison away from the backup's own point"
    )


def test_target_past_the_end_of_the_archive_names_the_next_segment(archiving, setup):
    from datetime import timedelta

    from vaultflow.engines.postgres.wal import archived_names, is_segment, next_segment

    pg, repo, engine, work = setup
    manifest = engine.full_backup(BackupContext(repo))
    pg.execute("INSERT INTO markers (label) VALUES ('archived')")
    ship(archiving, pg, repo, engine.config.name)
    newest = max(n for n in archived_names(repo, engine.config.name) if is_segment(n))
    with pytest.raises(
        NotFoundError,
        match=f"WAL segment {next_segment(newest)} \\(timeline 1\\) is not in the "
        f"archive .* through {newest}, its newest segment",
    ):
        engine.recover(
            BackupContext(repo), manifest, work / "future", RecoveryTarget(time=server_now(pg) + timedelta(hours=1))
        )
    assert not (work / "future").exists() and not (work / "future.log").exists()


def test_cli_restore_follows_the_chosen_timeline_to_the_end_of_the_archive(archiving, setup, prefect_api):
    """`vaultflow restore --to-timeline`: a timeline the archive lacks is refused before anything
    is written; 'current' replays the backup's own timeline to the end of the archived WAL."""
    from typer.testing import CliRunner

    from vaultflow.blocks import PostgresTarget
    from vaultflow.cli import app
    from vaultflow.engines.postgres.recovery import start_restored_cluster

    pg, repo, engine, work = setup
    config = engine.config
    engine.full_backup(BackupContext(repo))
    pg.execute("INSERT INTO markers (label) VALUES ('after-backup')")  # only the archive has it
    ship(archiving, pg, repo, config.name)
    PostgresTarget(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        password=pg.password,
        mode="physical",
        bin_dir=config.bin_dir,
        server_bin_dir=config.server_bin_dir,
        restore_os_user=RUN_AS,
        wal_fetch_command=config.wal_fetch_command,
    ).save(config.name, overwrite=True)
    runner, repo_path = CliRunner(), str(repo.store.root)

    refused = runner.invoke(
        app, ["restore", "-t", config.name, "--repo-path", repo_path, "--into", str(work / "tl7"), "--to-timeline", "7"]
    )
    assert refused.exit_code == 1 and "00000007.history" in refused.output, refused.output
    assert not (work / "tl7").exists()
    wrong = runner.invoke(
        app,
        [
            "restore",
            "-t",
            config.name,
            "--repo-path",
            repo_path,
            "--into",
            str(work / "tlx"),
            "--to-timeline",
            "newest",
        ],
    )
    assert wrong.exit_code != 0 and "--to-timeline" in wrong.output and not (work / "tlx").exists()

    dest = work / "data"
    done = runner.invoke(
        app, ["restore", "-t", config.name, "--repo-path", repo_path, "--into", str(dest), "--to-timeline", "current"]
    )
    assert done.exit_code == 0, done.output
    assert f"into cluster -> {dest} in " in done.output, done.output
    assert "\ntimeline: 2 (replayed along timeline 1; promotion started timeline 2, " in done.output, done.output
    auto = (dest / "postgresql.auto.conf").read_text()
    assert "recovery_target_timeline = '1'" in auto and "recovery_target = " not in auto
    cluster = start_restored_cluster(dest, Path(config.server_bin_dir), run_as=RUN_AS)
    try:
        with psycopg.connect(host=str(cluster.socket_dir), port=cluster.port, user=pg.user, dbname="postgres") as c:
            labels = {r[0] for r in c.execute("SELECT label FROM markers")}
    finally:
        stop_cluster(cluster)
    assert "after-backup" in labels, "replayed past the backup's end point, to the end of the archive"


def test_a_point_before_the_latest_backup_starts_from_the_newest_backup_before_it(archiving, setup):
    """Restoring 'latest' to a time before the latest backup ended: that backup's files already
    hold changes made after the point, and PostgreSQL, with no commit to stop before, would
    silently end there. The restore starts from the newest backup that ended before the point
    instead, says so, and the data is the point's (read from the restored server); a point
    before every backup is refused, naming the oldest."""
    from vaultflow.engines.postgres.cluster import start_cluster
    from vaultflow.engines.postgres.settings import PostgresRestoreOptions
    from vaultflow.errors import ConfigError
    from vaultflow.ports import free_port

    pg, repo, engine, work = setup
    too_early = server_now(pg)
    time.sleep(0.05)
    pg.execute("INSERT INTO markers (label) VALUES ('before')")
    first = engine.full_backup(BackupContext(repo))
    time.sleep(0.3)
    point = server_now(pg)  # the server and the worker share this host's clock
    assert point > first.finished_at
    time.sleep(0.3)
    pg.execute("DELETE FROM markers; INSERT INTO markers (label) VALUES ('after')")
    latest = engine.full_backup(BackupContext(repo))
    ship(archiving, pg, repo, engine.config.name)

    dest = work / "data"
    result = engine.restore(BackupContext(repo), latest, into=str(dest), options=PostgresRestoreOptions(to_time=point))
    assert result.backup_id == first.id
    assert result.notes[0].startswith(f"started from backup {first.id}") and latest.id in result.notes[0]
    socket_dir = work / "socket"
    socket_dir.mkdir()
    give_to_service_user(socket_dir)
    cluster = start_cluster(dest, Path(engine.config.server_bin_dir), free_port(), socket_dir, run_as=RUN_AS)
    try:
        with psycopg.connect(host=str(socket_dir), port=cluster.port, user=pg.user, dbname="postgres") as c:
            labels = [r[0] for r in c.execute("SELECT label FROM markers ORDER BY label")]
    finally:
        stop_cluster(cluster)
    assert labels == ["before"], "the data as at the point: the row deleted after it is there, the later one not"

    with pytest.raises(ConfigError, match=f"no physical backup of .* at or before .*the oldest, {first.id}"):
        engine.restore(
            BackupContext(repo), latest, into=str(work / "early"), options=PostgresRestoreOptions(to_time=too_early)
        )
    assert not (work / "early").exists() or not any((work / "early").iterdir())
