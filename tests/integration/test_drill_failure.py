"""A restore drill that fails before it restores anything still publishes its summary artifact
(README: a failed drill publishes its summary too), through the Prefect test harness."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_flows import last_run_message, read_markdown
from vaultflow.blocks import BackupRepository, PostgresTarget
from vaultflow.errors import NotFoundError
from vaultflow.flows.restore_drill import restore_drill

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_a_drill_with_nothing_to_restore_publishes_a_failed_summary(tmp_path: Path):
    """`vaultflow drill -t <target> --repo-path <empty dir>`: the run fails, and the
    drill-summary-<engine>-<target> artifact says FAILED and why."""
    (tmp_path / "repo").mkdir()
    target = PostgresTarget(host="127.0.0.1", port=5432, databases=["app"], target_name="empty-drill")
    with pytest.raises(NotFoundError) as failed:
        restore_drill(target=target, repository=BackupRepository(local_path=str(tmp_path / "repo")))
    state, _ = last_run_message("drill-postgres-empty-drill-")
    assert state == "FAILED"
    page = read_markdown("drill-summary-postgres-empty-drill")
    assert "| result | FAILED |" in page
    assert str(failed.value).splitlines()[0][:60] in page, "the summary says why"
