"""Corpus: timelines and WAL gaps in PostgreSQL physical backups (issue 8, section 7), on 15 and 18.

Each case builds a real archiving server (archive_command = the real `wal-push` into a spool,
shipped with ship_spool), takes real base backups and restores them through the engine with
the real `wal-fetch` as restore_command. Restores are judged by marker rows and by the oracle.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from tests.corpus.oracle import assert_pg_restored
from tests.fixtures.postgres import system_bin_dir_below
from tests.fixtures.wal import physical_settings
from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.cluster import start_cluster, stop_cluster
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.recovery import RecoveryTarget
from vaultflow.engines.postgres.wal import check_backup_wal, delete_wal, read_record, ship_spool
from vaultflow.errors import NotFoundError
from vaultflow.ports import free_port
from vaultflow.proc import short_temp_root
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
from vaultflow.testing.postgres_server import PostgresInstance, embedded_bin_dir, running_postgres
from vaultflow.testing.service_python import ServicePython, service_user_python
from vaultflow.testing.unprivileged import SERVICE_USER, give_to_service_user, running_as_root

RUN_AS = SERVICE_USER if running_as_root() else None


@dataclass
class Site:
    """An archiving server, its spool, a repository and a physical engine for one target."""

    pg: PostgresInstance
    spool: Path
    python: ServicePython
    work: Path
    repo: Repository
    engine: PostgresEngine

    @property
    def target(self) -> str:
        return self.engine.config.name

    def ship(self, pg=None, spool: Path | None = None) -> None:
        """Close the current segment of `pg` (default: the primary), wait for its archiving, ship."""
        pg, spool = pg or self.pg, spool or self.spool
        pg.execute("SELECT pg_logical_emit_message(false, 'vaultflow-test', 'switch')")
        name = pg.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        wait_archived(pg, name, spool, self.repo, self.target)
        ship_spool(spool, self.repo, self.target)
        give_to_service_user(self.repo.store.root)  # restore_command reads it as that user


def wait_archived(pg, name: str, spool: Path, repo: Repository, target: str) -> None:
    """Until `name` is in the spool (or already shipped): archive_command ran for it."""
    for _ in range(600):
        if (spool / name).exists() or read_record(repo, target, name) is not None:
            return
        pg.execute("SELECT pg_sleep(0.05)")
    raise AssertionError(f"{name} was not archived into {spool}: {pg.execute('SELECT * FROM pg_stat_archiver')}")


def spool_dir() -> Path:
    parent = Path(tempfile.mkdtemp(prefix="vfspool-", dir=short_temp_root()))
    give_to_service_user(parent)
    return parent / "spool"  # wal-push creates it 0700


@pytest.fixture(params=["pg18", "pg15"])
def site(request, tmp_path_factory) -> Iterator[Site]:
    bin_dir = embedded_bin_dir() if request.param == "pg18" else system_bin_dir_below(18)
    python = service_user_python()
    spool = spool_dir()
    work = Path(tempfile.mkdtemp(prefix="vftl-", dir=short_temp_root()))
    work.chmod(0o711)
    settings = {
        "archive_mode": "on",
        "archive_timeout": "0",
        "archive_command": python.command("push", "%p", "--spool", str(spool)),
    }
    try:
        with running_postgres(
            bin_dir, tmp_path_factory.mktemp(f"tl{request.param}"), settings=settings, name=f"tl{request.param}"
        ) as pg:
            pg.execute("CREATE TABLE markers (label text PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
            repo_dir = work / "repo"
            target = f"tl{request.param}"
            config = physical_settings(
                pg,
                target,
                restore_os_user=RUN_AS,
                wal_fetch_command=python.command("fetch", "--repo-path", str(repo_dir), "--target", target),
            )
            yield Site(pg, spool, python, work, Repository(LocalStore(repo_dir)), PostgresEngine(config))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(spool.parent, ignore_errors=True)


def now(pg) -> datetime:
    return pg.execute("SELECT clock_timestamp()")[0][0]


def mark(pg, label: str) -> None:
    pg.execute(f"INSERT INTO markers (label) VALUES ('{label}')")


def labels(pg) -> set[str]:
    return {r[0] for r in pg.execute("SELECT label FROM markers")}


def socket_instance(site: Site, cluster, data_dir: Path) -> PostgresInstance:
    """A restored cluster (local trust only) as a PostgresInstance reached through its socket."""
    pg = site.pg
    return PostgresInstance(
        bin_dir=pg.bin_dir,
        client_bin_dir=pg.client_bin_dir,
        data_dir=data_dir,
        socket_dir=cluster.socket_dir,
        host=str(cluster.socket_dir),
        port=cluster.port,
        user=pg.user,
        password=None,
        version=pg.version,
        log_file=cluster.log_file,
    )


def start_copy(site: Site, data_dir: Path, **settings: str):
    socket = Path(tempfile.mkdtemp(prefix="vfs-", dir=short_temp_root()))
    cluster = start_cluster(data_dir, site.pg.bin_dir, free_port(), socket, RUN_AS, host="", settings=settings)
    cluster.owns_socket_dir = True
    return cluster, socket_instance(site, cluster, data_dir)


def test_restore_follows_the_restored_servers_timeline_not_the_old_primarys(site: Site):
    pg, ctx = site.pg, BackupContext(site.repo)
    b1 = site.engine.full_backup(ctx)
    mark(pg, "p1")
    t_good = now(pg)
    mark(pg, "bad")
    site.ship()

    first = site.engine.recover(ctx, b1, site.work / "r", RecoveryTarget(time=t_good))
    assert first.timeline.startswith("2 (replayed along timeline 1; promotion started timeline 2"), first.timeline
    assert read_record(site.repo, site.target, "00000002.history") is not None, (
        "the new timeline's history file is in the archive although the copy never archives"
    )

    mark(pg, "old-primary-1")  # the old primary goes on writing on timeline 1, and ships
    site.ship()

    spool2 = spool_dir()
    cluster, restored = start_copy(
        site,
        site.work / "r",
        archive_mode="on",
        archive_timeout="0",
        archive_command=site.python.command("push", "%p", "--spool", str(spool2)),
    )
    try:
        assert labels(restored) == {"p1"}
        mark(restored, "r1")
        t1 = now(restored)
        restored.execute("SELECT txid_current()")  # a commit after t1: recovery to t1 stops there
        site.ship(restored, spool2)
        mark(pg, "old-primary-2")
        site.ship()

        second = site.engine.recover(ctx, b1, site.work / "r2", RecoveryTarget(time=t1))
        assert second.timeline.startswith("3 (replayed along timeline 2; promotion started timeline 3"), second.timeline
        again, copy2 = start_copy(site, site.work / "r2")
        try:
            assert labels(copy2) == {"p1", "r1"}, "r1 from timeline 2; neither 'bad' nor the old primary's rows"
            assert_pg_restored(restored, "postgres", copy2, "postgres")
        finally:
            stop_cluster(again)
    finally:
        stop_cluster(cluster)
        shutil.rmtree(spool2.parent, ignore_errors=True)

    delete_wal(site.repo, site.target, ["00000002.history"])
    dest = site.work / "r3"
    with pytest.raises(NotFoundError, match=r"timeline history file 00000002\.history is missing.*timeline 2"):
        site.engine.recover(ctx, b1, dest, RecoveryTarget(time=t1))
    assert not dest.exists() and not (site.work / "r3.log").exists()
    problem = check_backup_wal(site.repo, site.target, b1.id, b1.consistency)
    assert not problem.ok and "00000002.history" in problem.problem


def test_archive_that_stopped_fails_verify_and_restore_names_the_first_missing_segment(site: Site):
    from vaultflow.flows.verify import check_log_archive

    pg, ctx = site.pg, BackupContext(site.repo)
    site.engine.full_backup(ctx)
    mark(pg, "archived")
    site.ship()
    last_archived = pg.execute("SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
    pg.execute("ALTER SYSTEM SET archive_command = '/bin/true'")  # archiving "succeeds", keeps nothing
    pg.execute("SELECT pg_reload_conf()")
    for i in range(3):
        mark(pg, f"lost-{i}")
        pg.execute("SELECT pg_walfile_name(pg_switch_wal())")
    newest = site.engine.full_backup(ctx)
    mark(pg, "after-newest")
    past = now(pg)
    mark(pg, "after-past")
    pg.execute("SELECT pg_switch_wal()")
    start = newest.consistency.start_wal_file
    assert start > last_archived

    rows, failures = check_log_archive(
        site.repo, "postgres", site.target, site.repo.catalog("postgres", site.target).manifests
    )
    assert rows[0]["result"] == "GAPS" and len(failures) == 1
    assert newest.id in failures[0] and f"{start}" in failures[0] and "(timeline 1)" in failures[0]

    into = site.work / "pitr"
    into.mkdir()
    with pytest.raises(
        NotFoundError, match=f"WAL segment {start} is missing from the archive of {site.target} \\(timeline 1\\)"
    ):
        site.engine.recover(ctx, newest, into, RecoveryTarget(time=past))
    assert into.is_dir() and list(into.iterdir()) == [], "the given directory is left as it was: empty"
    assert sorted(p.name for p in site.work.iterdir()) == ["pitr", "repo"], "no log, spec file or hidden dir left"

    pg.execute("ALTER SYSTEM RESET archive_command")  # archiving repaired: later WAL arrives, the hole stays
    pg.execute("SELECT pg_reload_conf()")
    site.ship()
    rows, failures = check_log_archive(
        site.repo, "postgres", site.target, site.repo.catalog("postgres", site.target).manifests
    )
    assert len(failures) == 2, "the older backup's path to the newest WAL now crosses the hole too"
