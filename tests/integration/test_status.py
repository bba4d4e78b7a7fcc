"""Fleet status (vaultflow.status, `vaultflow status`, the status flow) on real backups: RPO met
and missed (judged at a `now` passed in, never by sleeping), a broken chain or a failed verify
not counted, saved targets never backed up and an empty repository missed, a what-if in the
past judged without clock notes, WAL newer than the last backup moving the restorable point,
the CLI's exit codes, the artifact."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from vaultflow import cli
from vaultflow.blocks import BackupRepository, MongoTarget, PostgresTarget
from vaultflow.cli import app
from vaultflow.engines.base import BackupContext
from vaultflow.engines.mongodb.client import newest_oplog_ts
from vaultflow.engines.mongodb.oplog_archive import OplogArchive
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.wal import read_record, ship_spool
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.status import saved_objectives, status
from vaultflow.flows.verify import verify
from vaultflow.manifest import BackupKind, new_backup_id
from vaultflow.repository import Repository
from vaultflow.status import (
    Objective,
    all_met,
    checks_by_kind,
    fleet_status,
    holds_backups,
    last_check,
    target_status,
)
from vaultflow.stores import LocalStore
from vaultflow.tools import wait_until

pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()
HOUR = timedelta(hours=1)


@pytest.fixture
def backed_up(pg18, fresh_db, tmp_path: Path):
    """A logical full backup (the full-backup flow) of a fresh database, its target saved as a
    block with rpo_hours=2. Returns (block name, repository dir, Repository, manifest)."""
    db = fresh_db(pg18)
    pg18.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 50) g", dbname=db)
    name = f"status-{db.replace('_', '-')}"
    target = PostgresTarget(
        host=pg18.host, port=pg18.port, user=pg18.user, databases=[db], bin_dir=str(pg18.client_bin_dir), rpo_hours=2
    )
    target.save(name, overwrite=True)
    repo_dir = tmp_path / "repo"
    full_backup(target=f"postgres-target/{name}", repository=BackupRepository(local_path=str(repo_dir)))
    repo = Repository(LocalStore(repo_dir))
    [manifest] = repo.catalog("postgres", name).manifests
    return name, repo_dir, repo, manifest


def test_rpo_met_and_missed_against_the_blocks_objective(backed_up):
    name, repo_dir, repo, manifest = backed_up
    objective = saved_objectives()[("postgres", name)]
    assert objective == Objective(2.0, f"block postgres-target/{name}")

    within = target_status(repo, "postgres", name, objective, manifest.started_at + 1.5 * HOUR)
    assert within.restorable is not None and within.restorable.backup_id == manifest.id
    assert within.restorable.time == manifest.started_at and within.age_s == 1.5 * 3600
    assert within.rpo_met and within.row()["RPO"] == f"met (2 h, block postgres-target/{name})"
    assert within.last_full == manifest and within.last_incremental is None

    past = target_status(repo, "postgres", name, objective, manifest.started_at + 2 * HOUR + timedelta(seconds=1))
    assert not past.rpo_met and past.row()["RPO"].startswith("MISSED (2 h")
    assert "RPO MISSED" in past.line() and "2 h 00 min old" in past.line()

    # Without a saved block the default objective (26 h) applies, and says so.
    default = target_status(repo, "postgres", name, None, manifest.started_at + 3 * HOUR)
    assert default.rpo_met and "default" in default.row()["RPO"] and "26 h" in default.row()["RPO"]


def test_a_broken_chain_is_not_restorable(backed_up):
    name, _, repo, full = backed_up
    # A newer incremental whose parent is gone (deleted by hand, lost with a disk): its manifest
    # is readable, its chain is not complete.
    later = full.finished_at + timedelta(seconds=1)  # newer than the full, no clock problem
    orphan = full.model_copy(
        update={
            "id": new_backup_id(BackupKind.INCREMENTAL, later),
            "kind": BackupKind.INCREMENTAL,
            "parent_id": new_backup_id(BackupKind.FULL, later - timedelta(minutes=5)),
            "started_at": later,
            "finished_at": later,
            "objects": [],
        }
    )
    repo.commit(orphan)
    status_now = target_status(repo, "postgres", name, Objective(2.0), later + timedelta(minutes=10))
    assert status_now.last_incremental is not None and status_now.last_incremental.id == orphan.id
    assert status_now.restorable is not None and status_now.restorable.backup_id == full.id  # not the orphan
    assert status_now.age_s == (later + timedelta(minutes=10) - full.started_at).total_seconds()
    assert any(n.startswith(f"{orphan.id} not restorable: chain broken") for n in status_now.notes), status_now.notes

    # With the full gone too, nothing is restorable: RPO missed whatever the time.
    repo.delete_backup(full)
    nothing = target_status(repo, "postgres", name, Objective(2.0), later)
    assert nothing.restorable is None and nothing.age_s is None and not nothing.rpo_met
    assert nothing.row()["restorable point"] == "none"


def test_wal_newer_than_the_last_backup_moves_the_restorable_point(archiving, tmp_path: Path):
    repo = Repository(LocalStore(tmp_path / "repo"))
    target = f"statuswal{int(time.time() * 1000) % 10**6}"
    manifest = PostgresEngine(archiving.physical_settings(target)).full_backup(BackupContext(repo))
    archiving.make_segments(2)
    newest = archiving.switch()
    archiving.wait_archived(newest)
    ship_spool(archiving.spool, repo, target)
    archived_at = datetime.fromisoformat(read_record(repo, target, newest)["archived_at"])
    assert archived_at > manifest.started_at

    now = archived_at + HOUR
    result = target_status(repo, "postgres", target, Objective(1.5), now)
    assert result.restorable is not None
    assert (result.restorable.backup_id, result.restorable.log_unit) == (manifest.id, newest)
    assert result.restorable.time == archived_at and result.age_s == 3600.0 and result.rpo_met
    assert "WAL archive to " + newest in result.row()["restorable point"]


def test_checks_are_read_in_both_record_shapes(backed_up):
    name, repo_dir, repo, manifest = backed_up
    verify(repository=BackupRepository(local_path=str(repo_dir)), deep=False)
    [(backup_id, record)] = repo.last_checks("postgres", name).items()
    old_shape = {backup_id: record} if "kind" in record else {backup_id: next(iter(record.values()))}
    drill = {
        "kind": "drill",
        "result": "FAILED",
        "time": "2026-11-30T06:00:00Z",
        "seconds": 12.5,
        "rto_objective_s": 10,
        "detail": "1 tables differ",
    }
    new_shape = {backup_id: {"quick-verify": old_shape[backup_id], "drill": drill}}
    assert checks_by_kind(old_shape) == {backup_id: {"quick-verify": old_shape[backup_id]}}
    assert checks_by_kind(new_shape) == new_shape
    for shape in (old_shape, new_shape):
        checked = last_check(shape, ("verify", "quick-verify"))
        assert checked is not None and checked.ok and checked.backup_id == manifest.id
    failed = last_check(new_shape, ("drill",))
    assert failed is not None and not failed.ok and failed.rto_met is False
    assert failed.cell() == "FAILED 2026-11-30 06:00"
    status_now = target_status(repo, "postgres", name, Objective(2.0), manifest.started_at + HOUR)
    assert status_now.last_verify is not None and status_now.last_verify.kind == "quick-verify"
    assert status_now.row()["last drill"] == "never"


def test_cli_prints_the_table_and_exits_by_the_rpo(backed_up, monkeypatch):
    monkeypatch.setattr(cli.console, "width", 400)
    name, repo_dir, _, manifest = backed_up
    soon = (manifest.started_at + HOUR).strftime("%Y-%m-%dT%H:%M:%S")
    late = (manifest.started_at + 3 * HOUR).strftime("%Y-%m-%dT%H:%M:%S")

    # Every target block saved in this test session is a row (never backed up here): the green
    # exit is judged with no Prefect API configured, where --repo-path reads no saved blocks.
    with temporary_settings(updates={PREFECT_API_URL: None}):
        met = runner.invoke(app, ["status", "--repo-path", str(repo_dir), "--as-of", soon])
    assert met.exit_code == 0, met.output
    assert "restorable point" in met.output and f"postgres/{name}" in met.output
    assert "met (26 h, default (no saved target block))" in met.output
    assert "RPO met for 1 of 1 targets" in met.output

    missed = runner.invoke(app, ["status", "--repo-path", str(repo_dir), "--as-of", late])
    assert missed.exit_code == 1, missed.output
    assert f"MISSED (2 h, block postgres-target/{name})" in missed.output
    assert "RPO met for " in missed.output and f"postgres/{name}" in missed.output.split("missed by")[-1]

    gone = runner.invoke(app, ["status", "--repo-path", str(repo_dir / "nowhere")])
    assert gone.exit_code == 2 and "does not exist" in gone.output and "Traceback" not in gone.output


def test_an_api_that_does_not_answer_names_its_url_and_repo_path_still_prints_the_table(backed_up, monkeypatch):
    """Not `error: ConnectError: [Errno 111] Connection refused`: with --repository the line
    every command gives (the repository block is on the API, exit 1); with --repo-path the table
    from the repository alone (default RPO), and one note naming the API."""
    from vaultflow.testing.unprivileged import free_port

    monkeypatch.setattr(cli.console, "width", 400)
    name, repo_dir, _, manifest = backed_up
    soon = (manifest.started_at + HOUR).strftime("%Y-%m-%dT%H:%M:%S")
    closed = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: closed}):
        by_block = runner.invoke(app, ["status", "-r", "main"])
        by_path = runner.invoke(app, ["status", "--repo-path", str(repo_dir), "--as-of", soon])
        listed = runner.invoke(app, ["automations", "list"])
    for result in (by_block, listed):
        assert result.exit_code == 1, result.output
        [line] = result.stderr.splitlines()
        assert line.startswith(f"error: the Prefect API at {closed} does not answer (ConnectError: "), line
        assert "prefect server start" in line
    assert by_path.exit_code == 0, by_path.output
    assert f"postgres/{name}" in by_path.output and "met (26 h, default (no saved target block))" in by_path.output
    [note] = [line for line in by_path.output.splitlines() if line.startswith("note: ")]
    assert note.startswith(f"note: the Prefect API at {closed} does not answer"), note
    assert note.endswith(
        "this table is from the repository alone: the target blocks' RPO objectives (rpo_hours) "
        "could not be read, so the default RPO applies"
    ), note


def test_flow_publishes_the_table_artifact(backed_up):
    name, repo_dir, _, manifest = backed_up
    BackupRepository(local_path=str(repo_dir)).save(name, overwrite=True)
    state = status(repository=f"backup-repository/{name}", as_of=manifest.started_at + 3 * HOUR, return_state=True)
    assert state.is_completed() and f"postgres/{name}" in (state.message or "").split("missed by")[-1]
    assert state.result()["all_met"] is False

    key = f"status-{name}"  # stable per repository: its block's name
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=1)
    assert artifact.type == "table"
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    [row] = [r for r in rows if r["target"] == f"postgres/{name}"]  # other saved blocks: never backed up
    assert row["target"] == f"postgres/{name}" and row["last full"] == manifest.id
    assert row["RPO"].startswith("MISSED (2 h") and row["age"] == "3 h 00 min"


def test_oplog_slices_newer_than_the_backup_move_the_restorable_point(
    mongo_source, mongo_client, fresh_mongo_db, tmp_path
):
    # Small slices cut by size: full slices are archived at once, no slice window to wait for.
    engine = MongoTarget(
        host=mongo_source.host,
        port=mongo_source.port,
        databases=[fresh_mongo_db],
        target_name="statusoplog",
        oplog_slice_bytes=4096,
    ).engine()
    repo = Repository(LocalStore(tmp_path / "repo"))
    mongo_client[fresh_mongo_db].docs.insert_many([{"_id": i, "pad": "x" * 100} for i in range(20)])
    full = engine.full_backup(BackupContext(repo))
    # Oplog times have whole seconds: write until the server's clock is past the backup's second,
    # so that the archive reaches a moment the backup alone does not.
    written = iter(range(1000, 10**6))
    wait_until(
        lambda: (
            mongo_client[fresh_mongo_db].docs.insert_one({"_id": next(written)}) is not None
            and newest_oplog_ts(mongo_client).time > full.started_at.timestamp()
        ),
        timeout=10,
        interval=0.05,
        what="the server's oplog time to pass the backup's start",
    )
    mongo_client[fresh_mongo_db].docs.insert_many([{"_id": -i, "pad": "y" * 100} for i in range(1, 300)])
    archive = OplogArchive(repo, "statusoplog", engine.config)
    archive.ship()
    newest = archive.units()[-1]
    reaches = datetime.fromtimestamp(archive.record(newest).end.ts.time, UTC)  # the oracle: the slice's record

    result = target_status(repo, "mongodb", "statusoplog", Objective(1.0), reaches + timedelta(minutes=30))
    assert result.restorable is not None
    assert (result.restorable.backup_id, result.restorable.log_unit) == (full.id, newest)
    assert reaches > full.started_at  # the oracle says the archive reaches past the backup
    assert result.restorable.time == reaches and result.age_s == 1800.0 and result.rpo_met
    assert "oplog archive to " + newest in result.row()["restorable point"]


def corrupt_payload(repo_dir: Path, manifest) -> None:
    """Overwrite every payload object of `manifest` in a local repository (as a bad disk would)."""
    objects = [p for p in (repo_dir / "postgres" / manifest.target / "backups" / manifest.id).rglob("*") if p.is_file()]
    payload = [p for p in objects if p.name != "manifest.json"]
    assert payload, f"backup {manifest.id} wrote payload objects: {objects}"
    for path in payload:
        path.write_bytes(b"not what the manifest says")


def test_a_backup_that_failed_its_verify_is_not_restorable(backed_up, monkeypatch):
    monkeypatch.setattr(cli.console, "width", 400)
    name, repo_dir, repo, first = backed_up
    repository = BackupRepository(local_path=str(repo_dir))
    second = full_backup(target=f"postgres-target/{name}", repository=repository)["backup_id"]
    corrupt_payload(repo_dir, repo.catalog("postgres", name).get(second))
    with pytest.raises(Exception, match=r"problems? in"):
        verify(repository=repository, target=f"postgres-target/{name}")
    records = repo.last_checks("postgres", name)
    assert records[second]["verify"]["result"] == "FAILED" and records[first.id]["verify"]["result"] == "ok"
    failed_at = datetime.fromisoformat(records[second]["verify"]["time"]).strftime("%Y-%m-%d %H:%M UTC")

    # The restorable point falls back to the older good backup, and the notes say why.
    now = first.started_at + HOUR
    fallback = target_status(repo, "postgres", name, Objective(2.0), now)
    assert fallback.restorable is not None and fallback.restorable.backup_id == first.id
    assert f"{second} not restorable: verify FAILED at {failed_at}" in fallback.notes, fallback.notes
    assert fallback.last_full is not None and fallback.last_full.id == second  # still the last full made

    # Both corrupted and verified: nothing restorable, RPO missed, exit 1 and the reason printed.
    corrupt_payload(repo_dir, first)
    with pytest.raises(Exception, match=r"problems? in"):
        verify(repository=repository, target=f"postgres-target/{name}")
    result = runner.invoke(app, ["status", "--repo-path", str(repo_dir), "--as-of", f"{now:%Y-%m-%dT%H:%M:%S}"])
    assert result.exit_code == 1, result.output
    [row] = [line for line in result.output.splitlines() if f"postgres/{name} " in line and "MISSED" in line]
    assert "none" in row, row
    assert f"note: postgres/{name}: {first.id} not restorable: verify FAILED at " in result.output, result.output
    assert f"note: postgres/{name}: {second} not restorable: verify FAILED at {failed_at}" in result.output


def test_saved_targets_never_backed_up_and_an_empty_repository_are_missed(backed_up, tmp_path, monkeypatch):
    monkeypatch.setattr(cli.console, "width", 400)
    name, repo_dir, repo, manifest = backed_up
    fresh = f"{name}-new"
    PostgresTarget(host="db.invalid", user="backup", databases=["app"], rpo_hours=4).save(fresh, overwrite=True)
    try:
        objectives = saved_objectives()
        statuses = {(s.engine, s.target): s for s in fleet_status(repo, objectives, manifest.started_at + HOUR)}
        never = statuses[("postgres", fresh)]
        assert not never.in_repository and not never.rpo_met and never.restorable is None
        assert never.row()["restorable point"] == "never backed up" and never.row()["RPO"].startswith("MISSED (4 h")
        assert statuses[("postgres", name)].rpo_met

        soon = (manifest.started_at + HOUR).strftime("%Y-%m-%dT%H:%M:%S")
        result = runner.invoke(app, ["status", "--repo-path", str(repo_dir), "--as-of", soon])
        assert result.exit_code == 1, result.output
        [row] = [line for line in result.output.splitlines() if f"postgres/{fresh} " in line]
        assert "never backed up" in row and "MISSED (4 h" in row, row
        assert f"postgres/{fresh}" in result.output.split("missed by")[-1]

        # An empty repository (a wrong path, an unmounted volume): exit 1, and it says so.
        (tmp_path / "empty").mkdir()
        empty = runner.invoke(app, ["status", "--repo-path", str(tmp_path / "empty")])
        assert empty.exit_code == 1, empty.output
        assert f"repository local:{tmp_path / 'empty'} holds no backups: check the path" in empty.output, empty.output
    finally:
        _delete_block("postgres-target", fresh)
    # With no saved blocks at all, no rows: still exit 1, not 'RPO met for 0 of 0 targets'.
    with temporary_settings(updates={PREFECT_API_URL: None}):
        bare = runner.invoke(app, ["status", "--repo-path", str(tmp_path / "empty")])
    assert bare.exit_code == 1 and "holds no backups" in bare.output and "0 of 0" not in bare.output, bare.output
    assert not all_met([]) and not holds_backups([])


def _delete_block(slug: str, name: str) -> None:
    with get_client(sync_client=True) as client:
        client.delete_block_document(client.read_block_document_by_name(name, slug).id)


@pytest.mark.parametrize("command", ["status", "list"])
def test_both_repository_and_repo_path_is_a_usage_error(command, tmp_path):
    result = runner.invoke(app, [command, "-r", "demo", "--repo-path", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "--repository" in result.output and "--repo-path" in result.output and "not both" in result.output


def test_a_what_if_in_the_past_has_no_clock_notes_and_leaves_later_backups_and_checks_out(backed_up, monkeypatch):
    monkeypatch.setattr(cli.console, "width", 400)
    name, repo_dir, repo, manifest = backed_up
    verify(repository=BackupRepository(local_path=str(repo_dir)), deep=False)
    assert repo.last_checks("postgres", name)  # a check made after the moment below

    before = manifest.started_at - 30 * 24 * HOUR
    past = target_status(repo, "postgres", name, Objective(2.0), before)
    assert past.restorable is None and past.last_full is None and past.last_verify is None
    assert not any("ahead" in n or "NTP" in n for n in past.notes), past.notes
    assert any("left out (not yet made then)" in n for n in past.notes), past.notes

    result = runner.invoke(app, ["status", "--repo-path", str(repo_dir), "--as-of", f"{before:%Y-%m-%dT%H:%M:%S}"])
    assert result.exit_code == 1, result.output
    assert "NTP" not in result.output and "ahead of this worker" not in result.output, result.output

    # At a moment after the backup, the same backup counts and its check shows.
    later = target_status(repo, "postgres", name, Objective(2.0), manifest.started_at + HOUR)
    assert later.restorable is not None and later.last_verify is not None and later.rpo_met


def test_a_drill_that_missed_a_sub_second_rto_says_so(backed_up):
    name, _, repo, manifest = backed_up
    drill = {
        "kind": "drill",
        "result": "FAILED",
        "time": (manifest.finished_at + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": 0.24,
        "rto_objective_s": 0.001,
        "detail": "every table matches, restore 0.2 s: RTO missed (objective 1 ms)",
    }
    repo.record_check(manifest, drill)
    status_now = target_status(repo, "postgres", name, Objective(2.0), manifest.started_at + HOUR)
    assert status_now.row()["RTO"] == "0.24 s / 1 ms: RTO missed"
    assert status_now.restorable is not None, "a drill's failure alone leaves the backup restorable"
