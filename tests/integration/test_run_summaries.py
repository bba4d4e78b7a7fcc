"""Every run says what it did (issue 12, part 1), read back from the Prefect API the way the UI
and `prefect deployment run --watch` read it: each flow's final state message and its keyed
summary artifact, for runs that complete and runs that fail. (Full backup, restore, drill,
verify and prune that complete: test_flows.py; a physical restore's recovery point and
timeline, and archive-logs that completes: test_flows_physical.py; status: test_status.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prefect import flow, get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
    FlowFilter,
    FlowFilterName,
)
from prefect.client.schemas.sorting import FlowRunSort

from tests.integration.test_flows import last_run_message, make_table, read_markdown, target_for
from vaultflow.blocks import BackupRepository
from vaultflow.errors import ConfigError, IntegrityError, NotFoundError, RefusedError, ToolError
from vaultflow.flows._report import RunReport
from vaultflow.flows._support import ProgressReporter
from vaultflow.flows.archive_logs import archive_logs
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.incremental_backup import incremental_backup
from vaultflow.flows.prune import prune
from vaultflow.flows.restore import restore
from vaultflow.flows.status import status
from vaultflow.flows.upload import upload
from vaultflow.flows.verify import verify

pytestmark = pytest.mark.usefixtures("prefect_api")

SIZE = r"\d+(\.\d)? (B|kB|MB|GB)"


def newest_run_of(flow_name: str):
    """The newest run of the flow named `flow_name` (a probe flow defined here)."""
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])), sort=FlowRunSort.START_TIME_DESC, limit=1
        )
    return run


def failed_with(prefix: str, error: type[Exception]) -> str:
    """The newest run named `prefix`...: FAILED, its message Prefect's '<Error>: <why>' on one
    line. Returns the message."""
    state, message = last_run_message(prefix)
    assert state == "FAILED", (state, message)
    assert message.startswith(f"Flow run encountered an exception: {error.__name__}: "), message
    assert "\n" not in message, "a failed run's message is one line"
    return message


def test_incremental_and_upload_runs_say_what_they_did(pg18, fresh_db, tmp_path: Path):
    db = fresh_db(pg18)
    make_table(pg18, db, rows=200)
    target = target_for(pg18, db, "sumincr")
    repository = BackupRepository(local_path=str(tmp_path / "repo"))

    taken = incremental_backup(target=target, repository=repository)
    state, message = last_run_message("incremental-postgres-sumincr-")
    assert state == "COMPLETED" and message.startswith("took a full backup: "), message
    assert f"backup {taken['backup_id']} (full instead of incremental): " in message, message
    assert re.search(rf"{SIZE} read, {SIZE} stored in [\d.]+ s \(.+/s\)$", message), message
    page = read_markdown("incremental-backup-summary-postgres-sumincr")
    assert "| kind | full (asked: incremental) |" in page and "| why a full |" in page
    assert "0.0 MB" not in page and message in page

    copy = BackupRepository(local_path=str(tmp_path / "copy"))
    sent = upload(source=repository, destination=copy, target=target)
    state, message = last_run_message("upload-postgres-sumincr-")
    assert state == "COMPLETED", message
    where = re.escape(f"local:{tmp_path / 'copy'}")
    assert re.fullmatch(rf"copied 1 backups to {where} \(2 objects, {SIZE} sent; 0 objects already there\)", message)
    assert sent["copied"] == [taken["backup_id"]]
    page = read_markdown("upload-summary-postgres-sumincr")
    assert f"| copied | {taken['backup_id']} |" in page and f"| to | local:{tmp_path / 'copy'} |" in page

    upload(source=repository, destination=copy)  # every target: nothing left to send
    _, message = last_run_message("upload-")
    assert message.startswith("copied 0 backups to ") and "(0 objects, 0 B sent; " in message, message
    assert "| copied | none |" in read_markdown("upload-summary-all-targets")


def test_failed_runs_say_why_in_their_message_and_summary(pg18, fresh_db, tmp_path: Path):
    """Each flow that fails: the run's state message is Prefect's 'Flow run encountered an
    exception: <Error>: <why>' on one line, and its summary artifact (keyed as a completed run's)
    says FAILED and why, so the Artifacts page never shows an older success as the latest."""
    db = fresh_db(pg18)
    make_table(pg18, db, rows=20)
    missing = target_for(pg18, "no_such_database", "sumfail")
    repository = BackupRepository(local_path=str(tmp_path / "repo"))

    with pytest.raises(NotFoundError):
        full_backup(target=missing, repository=repository)
    message = failed_with("full-postgres-sumfail-", NotFoundError)
    assert "no_such_database" in message
    page = read_markdown("full-backup-summary-postgres-sumfail")
    assert "full backup of postgres/sumfail FAILED: NotFoundError: " in page and "| result | FAILED |" in page

    with pytest.raises(NotFoundError):
        incremental_backup(target=missing, repository=repository)
    failed_with("incremental-postgres-sumfail-", NotFoundError)
    assert "incremental backup of postgres/sumfail FAILED" in read_markdown(
        "incremental-backup-summary-postgres-sumfail"
    )

    target = target_for(pg18, db, "sumfail")
    backup = full_backup(target=target, repository=repository)
    with pytest.raises(NotFoundError):
        restore(target=target, repository=repository, backup_id="20200101T000000Z-F")
    assert "20200101T000000Z-F" in failed_with("restore-postgres-sumfail-", NotFoundError)
    assert "restore of postgres/sumfail FAILED: NotFoundError: " in read_markdown("restore-summary-postgres-sumfail")

    with pytest.raises(ConfigError, match="archive"):
        archive_logs(target=target, repository=repository)  # a logical target has no log to archive
    failed_with("logs-postgres-sumfail-", ConfigError)
    assert "log archiving of postgres/sumfail FAILED: ConfigError: " in read_markdown(
        "archive-logs-summary-postgres-sumfail"
    )

    with pytest.raises(RefusedError, match="same repository"):
        upload(source=repository, destination=repository, target=target)
    failed_with("upload-postgres-sumfail-", RefusedError)
    assert f"upload to local:{tmp_path / 'repo'} FAILED: RefusedError: " in read_markdown(
        "upload-summary-postgres-sumfail"
    )

    unmounted = BackupRepository(local_path=str(tmp_path / "unmounted"))
    with pytest.raises(NotFoundError, match="does not exist"):
        prune(repository=unmounted)  # every target of a repository that is not there
    assert "an unmounted volume?" in failed_with("prune-", NotFoundError)
    page = read_markdown("prune-summary-all-targets")
    assert f"prune of local:{tmp_path / 'unmounted'} FAILED: NotFoundError: repository directory " in page

    dump = tmp_path / "repo/postgres/sumfail/backups" / backup["backup_id"] / "db" / f"{db}.dump.zst"
    dump.write_bytes(dump.read_bytes()[:-1])
    with pytest.raises(IntegrityError):
        verify(repository=repository, target=target, deep=False)
    assert f"{backup['backup_id']}/db/{db}.dump.zst" in failed_with("verify-postgres-sumfail-", IntegrityError)
    page = read_markdown("verify-summary-postgres-sumfail")
    assert "checked 1 backups of postgres/sumfail: 1 PROBLEMS" in page and "| how | presence and size" in page

    with pytest.raises(NotFoundError):
        status(repository="backup-repository/no-such-repository")
    assert "no-such-repository" in failed_with("status-", NotFoundError)


@flow(name="summary-probe")
def failing_probe(message: str) -> None:
    with RunReport("summary-probe", "probe", whole_repository=True):
        raise ToolError(message)


def test_a_multi_line_error_becomes_a_one_line_message():
    """A server's log tail in an error (recovery that stopped, a tool's stderr) is joined into one
    line, every word kept: the runs list and `--watch` show one line."""
    tail = "the restored server stopped during recovery:\n2026 LOG:  redo starts\n\n2026 FATAL:  target not reached\n"
    with pytest.raises(ToolError) as raised:
        failing_probe(tail)
    joined = "the restored server stopped during recovery: | 2026 LOG:  redo starts | 2026 FATAL:  target not reached"
    assert str(raised.value) == joined, "the caller gets the same words on one line"
    run = newest_run_of("summary-probe")
    assert run.state.message == f"Flow run encountered an exception: ToolError: {joined}"
    assert f"probe of all targets FAILED: ToolError: {joined}" in read_markdown("summary-probe-summary-all-targets")


@flow(name="progress-probe")
def progress_probe(fail: bool) -> None:
    with ProgressReporter("probe transfer", min_interval=0) as progress:
        progress("first.zst", 2000, 2000)
        progress("second.zst", 500, 2000)
        if fail:
            raise ToolError("connection reset")
        progress("second.zst", 2000, 2000)


def progress_of(fail: bool) -> tuple[float, str]:
    """(percent, description) of the progress artifact of a progress-probe run."""
    if fail:
        with pytest.raises(ToolError):
            progress_probe(fail)
    else:
        progress_probe(fail)
    run = newest_run_of("progress-probe")
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                type=ArtifactFilterType(any_=["progress"]), flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])
            )
        )
    return float(artifact.data), artifact.description or ""


def test_progress_ends_done_only_when_the_transfer_completed():
    percent, description = progress_of(fail=False)
    assert percent == 100.0 and re.fullmatch(r"probe transfer: done, 4\.0 kB in [\d.]+ s", description), description
    percent, description = progress_of(fail=True)
    assert percent == 25.0, "a failed transfer's progress stays where it stopped"
    assert description == "probe transfer: FAILED at second.zst (500 B): ToolError: connection reset", description
