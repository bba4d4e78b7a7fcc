"""Corpus: unlogged tables after a physical restore (issue 8, section 2), on PostgreSQL 15 and 18.

A base backup copies only an unlogged table's init fork, so the table comes back empty: correct
PostgreSQL behaviour, which must be said, not hidden. The manifest lists them per database, the
restore result and the drill name them, and the comparison calls them "expected empty
(unlogged)", neither "match" nor "mismatch". The oracle confirms that they alone differ.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.corpus.oracle import pg_differences, pg_state
from tests.fixtures.postgres import traversable_tmp_dir
from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.cluster import start_cluster, stop_cluster
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.physical import UNLOGGED_EMPTY
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.ports import free_port
from vaultflow.proc import short_temp_root
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
from vaultflow.testing.postgres_server import PostgresInstance
from vaultflow.testing.unprivileged import SERVICE_USER, running_as_root

RUN_AS = SERVICE_USER if running_as_root() else None


def physical_engine(pg, name: str, fingerprints: bool) -> PostgresEngine:
    return PostgresEngine(
        PostgresSettings(
            target_name=name,
            host=pg.host,
            port=pg.port,
            user=pg.user,
            mode="physical",
            physical_fingerprints=fingerprints,
            bin_dir=str(pg.client_bin_dir),
            server_bin_dir=str(pg.bin_dir),
            restore_os_user=RUN_AS,
        )
    )


@pytest.mark.parametrize("fingerprints", [True, False], ids=["fingerprints", "no-fingerprints"])
def test_unlogged_tables_come_back_empty_and_say_so(pg_server, fresh_db, fingerprints):
    pg = pg_server
    db = fresh_db(pg)
    pg.execute(
        "CREATE TABLE kept (id int PRIMARY KEY, v text); INSERT INTO kept SELECT g, 'k' || g "
        'FROM generate_series(1, 50) g; CREATE SCHEMA s; CREATE UNLOGGED TABLE s."Cache.x" (k text); '
        "INSERT INTO s.\"Cache.x\" SELECT 'c' || g FROM generate_series(1, 7) g; "
        "CREATE UNLOGGED TABLE scratch (n int)",
        db,
    )
    source = pg_state(pg, db)
    with traversable_tmp_dir("vfunlogged-") as work:
        repo = Repository(LocalStore(work / "repo"))
        engine = physical_engine(pg, f"unlogged{pg.version}{'f' if fingerprints else 'n'}", fingerprints)
        manifest = engine.full_backup(BackupContext(repo))
        assert manifest.consistency.unlogged_tables[db] == ["public.scratch", "s.Cache.x"]

        lines: list[str] = []
        result = engine.restore(BackupContext(repo, log=lines.append), manifest, into=str(work / "data"))
        assert result.comparison.ok, result.comparison.summary()
        rows = {(t.database, t.table): t for t in result.comparison.tables}
        cache = rows[(db, "s.Cache.x")]
        assert (cache.status, cache.actual_rows) == (UNLOGGED_EMPTY, 0)
        assert cache.expected_rows == (7 if fingerprints else None), "the backup-time count, when fingerprinted"
        assert rows[(db, "public.scratch")].status == UNLOGGED_EMPTY
        if fingerprints:
            assert rows[(db, "public.kept")].status == "match"
        assert result.restored == {"cluster": str(work / "data")}, "where the data went, nothing else"
        assert any("unlogged tables come back empty" in note and f"{db}.s.Cache.x" in note for note in result.notes)
        assert "unlogged: expected empty" in result.comparison.summary()
        assert any("unlogged tables come back empty" in line and f"{db}.s.Cache.x" in line for line in lines)

        socket = Path(tempfile.mkdtemp(prefix="vfs-", dir=short_temp_root()))
        cluster = start_cluster(work / "data", pg.bin_dir, free_port(), socket, RUN_AS, host="")
        cluster.owns_socket_dir = True
        try:
            copy = PostgresInstance(
                bin_dir=pg.bin_dir,
                client_bin_dir=pg.client_bin_dir,
                data_dir=work / "data",
                socket_dir=socket,
                host=str(socket),
                port=cluster.port,
                user=pg.user,
                password=None,
                version=pg.version,
                log_file=cluster.log_file,
            )
            restored = pg_state(copy, db)
        finally:
            stop_cluster(cluster)
        problems = pg_differences(source, restored)
        assert len(problems) == 1 and problems[0].startswith("rows of s.Cache.x differ: 7 vs 0 rows"), problems
        assert restored.rows["public.scratch"] == [] and restored.rows["public.kept"] == source.rows["public.kept"]

        drill = engine.drill(BackupContext(repo), manifest)
        assert drill.comparison.ok
        assert [t.status for t in drill.comparison.tables if t.database == db and "Cache" in t.table] == [
            UNLOGGED_EMPTY
        ]


def test_drill_flow_artifact_and_check_say_unlogged_tables_are_expected_empty(prefect_api, pg_server, fresh_db):
    from tests.integration.test_flows import read_artifact, read_markdown
    from vaultflow.blocks import BackupRepository, PostgresTarget
    from vaultflow.flows.full_backup import full_backup
    from vaultflow.flows.restore_drill import restore_drill

    pg = pg_server
    db = fresh_db(pg)
    pg.execute(
        "CREATE TABLE kept AS SELECT g FROM generate_series(1, 20) g; "
        "CREATE UNLOGGED TABLE sessions AS SELECT g FROM generate_series(1, 5) g",
        db,
    )
    name = f"unloggeddrill{pg.version}"
    with traversable_tmp_dir("vfunloggedflow-") as work:
        target = PostgresTarget(
            host=pg.host,
            port=pg.port,
            user=pg.user,
            mode="physical",
            target_name=name,
            physical_fingerprints=True,
            bin_dir=str(pg.client_bin_dir),
            server_bin_dir=str(pg.bin_dir),
            restore_os_user=RUN_AS,
        )
        repository = BackupRepository(local_path=str(work / "repo"))
        backup = full_backup(target=target, repository=repository)
        result = restore_drill(target=target, repository=repository, rto_objective_s=600)
        assert result["rto_met"] and result["backup_id"] == backup["backup_id"]
        page = read_markdown(f"drill-summary-postgres-{name}")
        assert f"unlogged, came back empty as expected: {db}.public.sessions" in page

        rows = {(r["database"], r["table"]): r for r in read_artifact(f"drill-postgres-{name}")}
        assert rows[(db, "public.sessions")]["status"] == UNLOGGED_EMPTY
        assert (rows[(db, "public.sessions")]["expected_rows"], rows[(db, "public.sessions")]["actual_rows"]) == (5, 0)
        assert rows[(db, "public.kept")]["status"] == "match"
        check = Repository(LocalStore(work / "repo")).last_checks("postgres", name)[backup["backup_id"]]["drill"]
        assert check["result"] == "ok" and "unlogged tables came back empty" in check["detail"]
        assert f"{db}.public.sessions" in check["detail"]
