"""The alert automations (vaultflow.alerts, deployments/automations.py) on a real Prefect server:
each one fires on what real flow runs emit, and its send-notification action reaches a webhook.

The session's Prefect test harness is an ephemeral server, which runs the reactive and proactive
triggers services and the actions service (prefect.server.services.base.RunInEphemeralServers),
so no server of our own is needed. The notification block is Prefect's own custom webhook,
pointed at an HTTP server in this test that records what it receives.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prefect import get_client
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from pydantic import SecretStr

from tests.fixtures.prefect_runs import send_queued_events
from tests.fixtures.redis import SEED_USERS
from tests.fixtures.toy_logarchive import toy_engine_registered, unit_name
from vaultflow.blocks import BackupRepository, PostgresTarget, RedisTarget
from vaultflow.deployments.automations import apply, managed, remove_all
from vaultflow.flows.archive_logs import alert_on_lag, archive_logs
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.restore_drill import restore_drill
from vaultflow.flows.verify import verify

pytestmark = pytest.mark.usefixtures("prefect_api")

WINDOW_S = 15.0  # the test target's RPO: proactive windows must be >= 10 s; triggers are evaluated every 5 s
PROACTIVE_SLACK_S = 12.0  # proactive evaluation every 5 s, plus event ingestion and the action's queue


class Recorder:
    """A local HTTP server that records each JSON request body it receives, with its arrival time."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict]] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with recorder._lock:
                    recorder.received.append((time.time(), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:  # keep the test's output clean
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def about(self, subject_part: str) -> list[tuple[float, dict]]:
        with self._lock:
            return [(t, m) for t, m in self.received if subject_part in m["subject"]]

    def wait_for(self, subject_part: str, count: int = 1, timeout: float = 30.0) -> list[tuple[float, dict]]:
        """The notifications whose subject holds `subject_part`, once `count` have come; the
        `timeout` (seconds) starts after the events this process holds are sent: automations
        fire on events, which Prefect sends in the background."""
        send_queued_events()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.about(subject_part)
            if len(found) >= count:
                return found
            time.sleep(0.25)
        with self._lock:
            seen = [m["subject"] for _, m in self.received]
        raise AssertionError(f"no notification {subject_part!r} within {timeout} s; received: {seen}")


@pytest.fixture(scope="module")
def webhook() -> Iterator[tuple[Recorder, str]]:
    """The recorder, and the name of a saved custom-webhook notification block posting to it."""
    recorder = Recorder()
    block = CustomWebhookNotificationBlock(
        name="vaultflow-test", url=recorder.url, json_data={"subject": "{{subject}}", "body": "{{body}}"}
    )
    block.save("alerts-test-hook", overwrite=True)
    yield recorder, "custom-webhook/alerts-test-hook"
    # Neither automations nor blocks of this module outlive it (the harness is shared by the session).
    remove_all()
    with get_client(sync_client=True) as client:
        for document in client.read_block_documents():
            if document.name and document.name.startswith("alerts-") and document.id:
                client.delete_block_document(document.id)
    recorder.server.shutdown()


def test_each_automation_fires_and_notifies(webhook, redis_with_password, tmp_path: Path):
    recorder, notify = webhook
    conn = redis_with_password.client()
    conn.flushall()
    conn.mset(SEED_USERS)
    RedisTarget(
        host=redis_with_password.host,
        port=redis_with_password.port,
        username=redis_with_password.username,
        password=SecretStr(redis_with_password.password),
        rpo_hours=WINDOW_S / 3600,
    ).save("alerts-redis", overwrite=True)
    pg = PostgresTarget(mode="physical", wal_spool=str(tmp_path / "spool"), archive_lag_alert_minutes=1.0)
    pg.save("alerts-pg", overwrite=True)
    repository = BackupRepository(local_path=str(tmp_path / "repo"))

    report = apply(notify)
    mine = {name for name in report.created if "/alerts-" in name}
    assert mine == {
        "vaultflow redis/alerts-redis: backup-overdue",
        "vaultflow redis/alerts-redis: drill-failed",
        "vaultflow redis/alerts-redis: verify-failed",
        "vaultflow postgres/alerts-pg: backup-overdue",
        "vaultflow postgres/alerts-pg: drill-failed",
        "vaultflow postgres/alerts-pg: verify-failed",
        "vaultflow postgres/alerts-pg: archive-lagging",
    }, "a Redis target that archives no log gets no archive-lagging automation"

    # backup-overdue (proactive): a backup restarts the window, so the alert comes WINDOW_S after it.
    full = full_backup(target="redis-target/alerts-redis", repository=repository)
    backed_up = time.time()

    # drill-failed: a real drill that misses its RTO (objective 1 µs; 0 is no objective: refused).
    with pytest.raises(Exception, match="missed the RTO"):
        restore_drill(target="redis-target/alerts-redis", repository=repository, rto_objective_s=0.000001)
    drill = recorder.wait_for("restore drill of redis/alerts-redis failed")
    assert len(drill) == 1 and "missed the RTO" in drill[0][1]["body"] and full["backup_id"] in drill[0][1]["body"]

    # drill-failed, too, when there is nothing to restore (the drill fails before it knows a backup).
    with pytest.raises(Exception, match="no complete backup"):
        restore_drill(target="postgres-target/alerts-pg", repository=BackupRepository(local_path=str(tmp_path / "e")))
    assert "no complete backup" in recorder.wait_for("restore drill of postgres/alerts-pg failed")[0][1]["body"]

    # verify-failed: a real verify over a corrupted payload object.
    objects = [p for p in (tmp_path / "repo").rglob("*.zst") if "/backups/" in str(p)]
    assert objects, "the backup wrote payload objects"
    objects[0].write_bytes(b"not what the manifest says")
    with pytest.raises(Exception, match=r"problems? in"):
        verify(repository=repository, target="redis-target/alerts-redis")
    corrupt = recorder.wait_for("verify found problems in the backups of redis/alerts-redis")
    assert len(corrupt) == 1 and full["backup_id"] in corrupt[0][1]["body"]

    # archive-lagging: the archive-logs flow's own check, below then above the target's 1 minute.
    alert_on_lag(PostgresTarget.load("alerts-pg"), "wal", lag_units=2, lag_seconds=30.0)
    alert_on_lag(PostgresTarget.load("alerts-pg"), "wal", lag_units=7, lag_seconds=4000.0)
    lagging = recorder.wait_for("log archiving of postgres/alerts-pg is behind")
    assert "7 units waiting, the oldest 1 h 06 min old (alert above 1 min)" in lagging[0][1]["body"]

    overdue = recorder.wait_for("no backup of redis/alerts-redis", timeout=WINDOW_S + PROACTIVE_SLACK_S + 10)
    first = overdue[0][0]
    assert backed_up + WINDOW_S - 2 <= first <= backed_up + WINDOW_S + PROACTIVE_SLACK_S, (
        f"backup-overdue fired {first - backed_up:.1f} s after the backup, expected about {WINDOW_S} s"
    )
    assert "RPO missed" in overdue[0][1]["subject"]
    # Exactly one per event for the reactive ones: the below-threshold lag emitted nothing.
    assert len(recorder.about("log archiving of postgres/alerts-pg is behind")) == 1
    assert len(recorder.about("restore drill of redis/alerts-redis failed")) == 1


def test_archive_lagging_fires_on_a_real_archive_logs_run_that_leaves_old_units(webhook, tmp_path: Path):
    recorder, notify = webhook
    log_dir = tmp_path / "server-log"
    log_dir.mkdir()
    (log_dir / unit_name(1)).write_bytes(b"shipped")
    (log_dir / unit_name(2)).mkdir()  # a unit that cannot be read: shipping stops there
    (log_dir / unit_name(3)).write_bytes(b"waits")
    two_hours_ago = time.time() - 7200
    for path in log_dir.iterdir():
        os.utime(path, (two_hours_ago, two_hours_ago))
    with toy_engine_registered() as ToyLogTarget:
        ToyLogTarget(log_dir=str(log_dir), archive_lag_alert_minutes=60.0).save("alerts-toy", overwrite=True)
        assert "vaultflow toylog/alerts-toy: archive-lagging" in apply(notify).created
        with pytest.raises(IsADirectoryError):
            archive_logs(
                target="toy-log-target/alerts-toy", repository=BackupRepository(local_path=str(tmp_path / "r"))
            )
    lagging = recorder.wait_for("log archiving of toylog/alerts-toy is behind")
    body = lagging[0][1]["body"]
    assert "2 units waiting" in body and "alert above 1 h 00 min" in body and "Is a directory" in body, body


def _updated_times() -> dict[str, str]:
    """Each managed automation's name -> its server-set `updated` time (not in the client's model)."""
    with get_client(sync_client=True) as client:
        return {
            name: client.request("GET", "/automations/{id}", path_params={"id": automation_id}).json()["updated"]
            for automation_id, name in managed()
        }


def test_apply_leaves_unchanged_automations_alone_and_forgets_removed_targets(webhook):
    _, notify = webhook
    RedisTarget(host="127.0.0.1", port=1).save("alerts-gone", overwrite=True)
    RedisTarget(host="127.0.0.1", port=2, rpo_hours=26.0).save("alerts-kept", overwrite=True)
    apply(notify)
    before, updated_before = managed(), _updated_times()
    again = apply(notify)
    assert again.created == [] and again.deleted == [] and again.updated == []
    assert set(again.unchanged) == {name for _, name in before}
    assert managed() == before, "a second apply keeps every automation: same ids, no duplicates"
    assert _updated_times() == updated_before, "an unchanged automation is not written (its clock keeps running)"

    # A changed rpo_hours updates exactly that target's backup-overdue automation.
    RedisTarget(host="127.0.0.1", port=2, rpo_hours=12.0).save("alerts-kept", overwrite=True)
    changed = apply(notify)
    assert changed.updated == ["vaultflow redis/alerts-kept: backup-overdue"] and changed.created == []
    assert managed() == before
    now = _updated_times()
    assert [n for n in now if now[n] != updated_before[n]] == ["vaultflow redis/alerts-kept: backup-overdue"]

    RedisTarget.delete("alerts-gone")
    RedisTarget.delete("alerts-kept")
    after = apply(notify)
    assert sorted(n for n in after.deleted if "alerts-gone" in n) == sorted(
        n for n in again.unchanged if "alerts-gone" in n
    )
    assert not [name for _, name in managed() if "alerts-gone" in name or "alerts-kept" in name]


def test_cli_apply_names_a_saved_target_block_with_invalid_data(webhook):
    from typer.testing import CliRunner

    from vaultflow.cli import app

    _, notify = webhook
    RedisTarget(host="127.0.0.1", port=1).save("alerts-invalid", overwrite=True)
    with get_client(sync_client=True) as client:  # as a user could, through the API: rpo_hours 0
        document = client.read_block_document_by_name("alerts-invalid", "redis-target")
        client.request(
            "PATCH", "/block_documents/{id}", path_params={"id": document.id}, json={"data": {"rpo_hours": 0}}
        ).raise_for_status()
    try:
        result = CliRunner().invoke(app, ["automations", "apply", "--notify", notify])
    finally:
        RedisTarget.delete("alerts-invalid")
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "target block redis-target/alerts-invalid cannot be loaded (rpo_hours: " in result.output
    assert "greater than 0): fix or delete it" in result.output, result.output


def test_cli_apply_list_remove_and_one_line_errors(webhook, tmp_path: Path):
    from typer.testing import CliRunner

    from vaultflow.cli import app

    _, notify = webhook
    runner = CliRunner()
    # A repository's targets without a saved block are watched too (default RPO).
    repo = BackupRepository(local_path=str(tmp_path / "repo")).build()
    (tmp_path / "repo" / "redis" / "adhoc" / "backups" / "x").mkdir(parents=True)
    (tmp_path / "repo" / "redis" / "adhoc" / "backups" / "x" / "manifest.json").write_text("{}")
    assert ("redis", "adhoc") in repo.targets()

    applied = runner.invoke(app, ["automations", "apply", "--notify", notify, "--repo-path", str(tmp_path / "repo")])
    assert applied.exit_code == 0, applied.output
    assert "created  vaultflow redis/adhoc: backup-overdue" in applied.output
    listed = runner.invoke(app, ["automations", "list"])
    assert "vaultflow redis/adhoc: verify-failed" in listed.output

    missing = runner.invoke(app, ["automations", "apply", "--notify", "custom-webhook/nosuch"])
    assert missing.exit_code == 2 and "no block 'custom-webhook/nosuch'" in missing.output
    assert len(missing.output.strip().splitlines()) == 1, missing.output
    RedisTarget(host="127.0.0.1", port=1).save("alerts-not-a-notifier", overwrite=True)
    wrong = runner.invoke(app, ["automations", "apply", "--notify", "redis-target/alerts-not-a-notifier"])
    assert wrong.exit_code == 2 and "cannot send notifications" in wrong.output
    RedisTarget.delete("alerts-not-a-notifier")

    removed = runner.invoke(app, ["automations", "remove"])
    assert removed.exit_code == 0 and managed() == []
