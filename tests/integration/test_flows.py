"""The flows end to end through Prefect (test harness), on a real PostgreSQL 18."""

from __future__ import annotations

import json
import re
from datetime import UTC
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    ArtifactFilterType,
    FlowRunFilter,
    FlowRunFilterName,
)
from prefect.client.schemas.sorting import ArtifactSort
from pydantic import SecretStr

from tests.fixtures.secret_watch import assert_runs_keep_secret
from vaultflow.blocks import BackupRepository, PostgresTarget
from vaultflow.errors import AuthenticationError, IntegrityError, RefusedError
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.prune import prune
from vaultflow.flows.restore import restore
from vaultflow.flows.restore_drill import restore_drill
from vaultflow.flows.verify import verify

pytestmark = pytest.mark.usefixtures("prefect_api")


def make_table(pg, db: str, rows: int = 500) -> None:
    pg.execute(
        "CREATE TABLE IF NOT EXISTS employees (id serial PRIMARY KEY, name text, position text, "
        "salary numeric); INSERT INTO employees (name, position, salary) "
        f"SELECT 'e' || g, 'dev', g * 10 FROM generate_series(1, {rows}) g",
        dbname=db,
    )


def target_for(pg, db: str, name: str, **kw) -> PostgresTarget:
    return PostgresTarget(
        host=pg.host, port=pg.port, user=pg.user, databases=[db], target_name=name, bin_dir=str(pg.client_bin_dir), **kw
    )


def read_artifact(key: str) -> list[dict]:
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC, limit=1
        )
    assert artifacts, f"no artifact with key {key}"
    data = artifacts[0].data
    return json.loads(data) if isinstance(data, str) else data


def read_markdown(key: str) -> str:
    """The newest markdown artifact keyed `key` (a run summary)."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC, limit=1
        )
    assert artifacts and artifacts[0].type == "markdown", f"no markdown artifact with key {key}"
    return str(artifacts[0].data)


def last_run_message(prefix: str) -> tuple[str, str]:
    """(state type, state message) of the newest flow run whose name starts with `prefix`."""
    runs = sorted(flow_runs_named(f"{prefix}%"), key=lambda run: run.created)
    assert runs, f"no flow run named {prefix}..."
    return runs[-1].state.type.value, runs[-1].state.message or ""


def flow_runs_named(prefix: str):
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=prefix)))


def test_backup_restore_drill_verify_prune(pg18, fresh_db, tmp_path: Path):
    db = fresh_db(pg18)
    make_table(pg18, db)
    target = target_for(pg18, db, "flowtest")
    repository = BackupRepository(
        local_path=str(tmp_path / "repo"),
        keep_last=1,
        keep_daily=None,
        keep_weekly=None,
        keep_monthly=None,
        orphan_grace="0s",
    )

    first = full_backup(target=target, repository=repository)
    assert first["stored_size"] > 0 and first["objects"] == 2
    pg18.execute("INSERT INTO employees (name) VALUES ('late')", dbname=db)
    second = full_backup(target=target, repository=repository)
    assert second["backup_id"] > first["backup_id"]
    # Each run says what it did: the final state's message and a keyed markdown artifact.
    state, message = last_run_message("full-postgres-flowtest-")
    assert state == "COMPLETED" and message.startswith(f"backup {second['backup_id']} (full): "), message
    assert re.search(r"\d+(\.\d)? (B|kB|MB) read, \d+(\.\d)? (B|kB|MB) stored in [\d.]+ s \(.+/s\)$", message), message
    page = read_markdown("full-backup-summary-postgres-flowtest")
    assert message in page and f"| backup | {second['backup_id']} |" in page and "| throughput |" in page
    assert "0.0 MB" not in page

    restored_name = f"{db}_copy"
    result = restore(target=target, repository=repository, backup_id=first["backup_id"], into=restored_name)
    try:
        assert result["restored"] == {db: restored_name}
        assert [(r["table"], r["status"]) for r in result["comparison"]] == [
            ("public.employees", "match"),
            ("(database properties)", "match"),
        ]
        assert pg18.execute("SELECT count(*) FROM employees", dbname=restored_name) == [(500,)]
        state, message = last_run_message("restore-postgres-flowtest-")
        assert state == "COMPLETED" and message.startswith(
            f"restored {first['backup_id']} into {db} -> {restored_name} in "
        ), message
        assert "recovery point: the backup's consistent point (" in message and "match" in message, message
        assert "matches the backup" in read_markdown("restore-summary-postgres-flowtest")
    finally:
        pg18.execute(f'DROP DATABASE IF EXISTS "{restored_name}" WITH (FORCE)')

    drill = restore_drill(target=target, repository=repository, rto_objective_s=600)
    assert drill["backup_id"] == second["backup_id"] and drill["rto_met"]
    drill_rows = read_artifact("drill-postgres-flowtest")
    assert {r["status"] for r in drill_rows if r["table"] in ("public.employees", "(database properties)")} == {"match"}
    assert {r["table"] for r in drill_rows} >= {"public.employees", "(database properties)"}
    leftovers = pg18.execute("SELECT datname FROM pg_database WHERE datname LIKE 'vaultflow_drill_%'")
    assert leftovers == []
    state, message = last_run_message("drill-postgres-flowtest-")
    assert state == "COMPLETED" and message.startswith(f"drill of {second['backup_id']} PASSED: restore "), message
    assert "against an RTO of 10 min 00 s (met)" in message, message
    assert "| result | PASSED |" in read_markdown("drill-summary-postgres-flowtest")

    checked = verify(repository=repository, target=target)
    assert checked["problems"] == []
    state, message = last_run_message("verify-postgres-flowtest-")
    assert (state, message) == ("COMPLETED", "verified 2 backups of postgres/flowtest: all intact")
    assert "sha256 of every object re-read" in read_markdown("verify-summary-postgres-flowtest")

    catalog = read_artifact("catalog-postgres-flowtest")
    assert [r["backup"] for r in catalog] == [second["backup_id"], first["backup_id"]]
    made_by = {r["backup"]: r["made_by"] for r in catalog}
    assert made_by[first["backup_id"]], "catalog links each backup to the run that made it"

    plan = prune(repository=repository, target=target, dry_run=True)
    assert plan["deleted"] == [first["backup_id"]] and plan["kept"] == [second["backup_id"]]
    assert (tmp_path / "repo/postgres/flowtest/backups" / first["backup_id"] / "manifest.json").exists()
    applied = prune(repository=repository, target=target)
    assert applied["deleted"] == [first["backup_id"]]
    assert not (tmp_path / "repo/postgres/flowtest/backups" / first["backup_id"]).exists()
    prune_rows = read_artifact("prune-postgres-flowtest")
    assert any(r["action"] == "keep" and "newest" in r["reason"] for r in prune_rows)
    state, message = last_run_message("prune-postgres-flowtest-")
    assert state == "COMPLETED" and message.startswith(f"kept 1 backups, deleted 1 ({first['backup_id']}), "), message
    assert f"| deleted | {first['backup_id']} |" in read_markdown("prune-summary-postgres-flowtest")


def test_lineage_in_manifest_and_run_names(pg18, fresh_db, tmp_path: Path):
    db = fresh_db(pg18)
    make_table(pg18, db, rows=10)
    target = target_for(pg18, db, "lineage")
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    result = full_backup(target=target, repository=repository)
    manifest_path = tmp_path / "repo/postgres/lineage/backups" / result["backup_id"] / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["lineage"]["flow_run_id"]
    # named after kind, engine, target and the backup id's time
    assert manifest["lineage"]["flow_run_name"] == f"full-postgres-lineage-{result['backup_id'].rsplit('-', 1)[0]}"
    runs = flow_runs_named(manifest["lineage"]["flow_run_name"])
    assert len(runs) == 1, "the flow run is named after kind, engine, target and the backup id's time"
    with get_client(sync_client=True) as client:
        progress = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                type=ArtifactFilterType(any_=["progress"]), flow_run_id=ArtifactFilterFlowRunId(any_=[runs[0].id])
            )
        )
    assert [a.data for a in progress] == [100.0], "the backup's progress artifact ends at 100%"
    assert re.fullmatch(r"full backup of lineage: done, [\d.]+ (B|kB|MB) in [\d.]+ s", progress[0].description or "")


def test_wrong_password_fails_at_once_without_retries(pg_with_password, tmp_path: Path):
    target = PostgresTarget(
        host=pg_with_password.host,
        port=pg_with_password.port,
        user="postgres",
        password=SecretStr("not-the-password"),
        target_name="badpw",
        bin_dir=str(pg_with_password.client_bin_dir),
    )
    assert_backup_fails_once(target, tmp_path)


def assert_backup_fails_once(target, tmp_path: Path) -> None:
    """A wrong password fails the full-backup flow at once: one run (no retries), no manifest."""
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    with pytest.raises(AuthenticationError, match="refused the login"):
        full_backup.with_options(retries=2, retry_delay_seconds=30)(target=target, repository=repository)
    runs = flow_runs_named(f"full-{target.engine_name}-{target.name}-%")
    assert len(runs) == 1 and runs[0].run_count == 1, "a permanent error is not retried"
    assert not list((tmp_path / "repo").rglob("manifest.json"))


def test_drill_fails_on_missed_rto_and_verify_names_corrupt_object(pg18, fresh_db, tmp_path: Path):
    db = fresh_db(pg18)
    make_table(pg18, db, rows=50)
    target = target_for(pg18, db, "strict")
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    backup = full_backup(target=target, repository=repository)
    with pytest.raises(RefusedError, match="missed the RTO"):
        restore_drill(target=target, repository=repository, rto_objective_s=0.000001)
    state, message = last_run_message("drill-postgres-strict-")
    assert state == "FAILED" and "missed the RTO: restore took" in message, "a failed run's message says why"
    assert "| result | FAILED |" in read_markdown("drill-summary-postgres-strict"), "a failed drill publishes too"
    assert pg18.execute("SELECT datname FROM pg_database WHERE datname LIKE 'vaultflow_drill_%'") == []

    dump = tmp_path / "repo/postgres/strict/backups" / backup["backup_id"] / "db" / f"{db}.dump.zst"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"db/{db}.dump.zst"):
        verify(repository=repository, target=target)
    with pytest.raises(IntegrityError, match=f"db/{db}.dump.zst"):
        restore(target=target, repository=repository, into=f"{db}_bad")
    assert pg18.execute(f"SELECT 1 FROM pg_database WHERE datname = '{db}_bad'") == []


def test_events_relate_backup_to_target(pg18, fresh_db, tmp_path: Path):
    import time
    from datetime import datetime, timedelta

    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    from tests.fixtures.prefect_runs import send_queued_events

    db = fresh_db(pg18)
    make_table(pg18, db, rows=5)
    target = target_for(pg18, db, "events")
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    since = datetime.now(UTC) - timedelta(seconds=5)
    backup = full_backup(target=target, repository=repository)
    verify(repository=repository, target=target)
    wanted = {"vaultflow.backup.completed", "vaultflow.backup.verified"}
    seen: dict[str, object] = {}
    # Events reach the API in the background: send what is queued first (a loaded machine once
    # left them queued past the wait), then give the server time to store them.
    send_queued_events()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and set(seen) != wanted:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                EventFilter(occurred=EventOccurredFilter(since=since), event=EventNameFilter(name=sorted(wanted))),
                limit=50,
            )
        seen = {e.event: e for e in page.events if e.resource.id.endswith(backup["backup_id"])}
        time.sleep(0.5)
    assert set(seen) == wanted, f"events seen: {sorted(seen)}"
    completed = seen["vaultflow.backup.completed"]
    assert completed.resource.name == f"full backup {backup['backup_id']} of postgres/events"
    related = {r.role: r for r in completed.related}
    assert related["target"].id == "vaultflow.target.postgres.events"
    assert related["target"].name == "postgres/events", "related resources carry readable names"
    assert related["flow-run"].name, "Prefect relates the run that emitted it, by name"


@pytest.mark.logs_to_api
def test_password_never_in_logs_artifacts_or_repository(pg_with_password, tmp_path: Path):

    pg = pg_with_password
    target = PostgresTarget(
        host=pg.host,
        port=pg.port,
        user=pg.user,
        password=SecretStr(pg.password),
        databases=["postgres"],
        target_name="secret",
        bin_dir=str(pg.client_bin_dir),
    )
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    backup = full_backup(target=target, repository=repository)
    restore_drill(target=target, repository=repository)
    verify(repository=repository, target=target)

    runs, artifacts = assert_runs_keep_secret(pg.password, "%-secret-%", tmp_path / "repo")
    assert len(runs) == 3
    assert backup["backup_id"] in json.dumps([a.data for a in artifacts], default=str)
