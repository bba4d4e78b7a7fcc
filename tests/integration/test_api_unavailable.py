"""A Prefect API that does not answer must not fail (or double) a backup: a fleet's scheduled
burst kept a SQLite-backed server answering 503 or timing out for a while (bench/fleet.py).

The runs talk to the session's real Prefect server through tests/fixtures/api_faults.py, a proxy
that fails only the artifact requests; the backup and restore are real (PostgreSQL 18, a local
repository) and the restore is judged by the independent oracle (tests/corpus/oracle.py)."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
from prefect import flow, get_client
from prefect.artifacts import create_markdown_artifact
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowFilter,
    FlowFilterName,
)
from prefect.runtime import flow_run

from tests.corpus.oracle import assert_pg_restored
from tests.fixtures.prefect_runs import logs_of
from tests.integration.test_flows import flow_runs_named, make_table, target_for
from vaultflow.blocks import BackupRepository
from vaultflow.errors import ConfigError, TransientError
from vaultflow.flows._support import fail_fast_on_permanent_errors
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.restore import restore

pytestmark = [pytest.mark.usefixtures("prefect_api"), pytest.mark.logs_to_api]

# The hanging case: each artifact request waits out the client's timeout once and once more on
# its retry; the run's other requests pass through the proxy at once.
HANG_SETTINGS = {"PREFECT_API_REQUEST_TIMEOUT": 4.0, "PREFECT_CLIENT_MAX_RETRIES": 1}


def run_of(prefix: str):
    """The one flow run whose name starts with `prefix`."""
    (run,) = flow_runs_named(f"{prefix}%")
    return run


def run_of_flow(flow_name: str):
    """The one run of the flow named `flow_name` (a probe flow defined here)."""
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
    return run


def warnings_of(run) -> list[str]:
    return [log.message for log in logs_of([run.id]) if log.level == 30]


def artifacts_keyed(key: str) -> list:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


@pytest.mark.parametrize("mode", ["503", "hang"])
def test_a_backup_completes_once_when_the_api_does_not_answer_its_artifacts(
    mode: str, api_faults, pg18, fresh_db, tmp_path: Path
):
    """Every artifact request answered 503, or left hanging past the client's timeout: the backup
    (with deployment-like retries) completes in one run with its summary line, one backup is in
    the repository, its restore (through the same API) equals the source, and the run's log says
    what was not published."""
    db = fresh_db(pg18)
    make_table(pg18, db, rows=300)
    name = f"apidown{mode}{secrets.token_hex(2)}"
    target = target_for(pg18, db, name)
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    into = f"{db}_back"
    try:
        with api_faults.failing(r"/artifacts", mode, **(HANG_SETTINGS if mode == "hang" else {})):
            taken = full_backup.with_options(retries=2, retry_delay_seconds=0)(target=target, repository=repository)
            restored = restore(target=target, repository=repository, backup_id=taken["backup_id"], into=into)
        assert any("/artifacts" in request for request in api_faults.faulted), api_faults.faulted
        backup_run = run_of(f"full-postgres-{name}-")
        assert backup_run.state.type.value == "COMPLETED", backup_run.state.message
        assert backup_run.run_count == 1, "a backup whose reporting failed is not retried (taken twice)"
        assert backup_run.state.message.startswith(f"backup {taken['backup_id']} (full): "), backup_run.state.message
        manifests = repository.build().catalog("postgres", name).manifests
        assert [m.id for m in manifests] == [taken["backup_id"]], "exactly one backup in the repository"

        said = warnings_of(backup_run)
        progress = [w for w in said if w.startswith("progress artifact not updated: the Prefect API did not answer (")]
        assert len(progress) == 1, said
        for what in (
            f"catalog artifact catalog-postgres-{name}",
            f"summary artifact full-backup-summary-postgres-{name}",
        ):
            assert any(w.startswith(f"{what} not published: the Prefect API did not answer (") for w in said), said
        assert artifacts_keyed(f"full-backup-summary-postgres-{name}") == []  # the proxy really kept it out

        restore_run = run_of(f"restore-postgres-{name}-")
        assert restore_run.state.type.value == "COMPLETED", restore_run.state.message
        assert restored["restored"] == {db: into}
        assert_pg_restored(pg18, db, pg18, into)
    finally:
        pg18.execute(f'DROP DATABASE IF EXISTS "{into}" WITH (FORCE)')


def test_an_api_that_did_not_answer_the_run_itself_leaves_it_retryable(api_faults):
    """A run's own API call that got a 503 (here publishing an artifact outside the guard) is
    transient: fail_fast_on_permanent_errors leaves the run's retries to the server."""
    attempts: list[int] = []

    @flow(name="api-503-probe", retries=1, retry_delay_seconds=0)
    def probe() -> str:
        attempts.append(flow_run.run_count)
        with fail_fast_on_permanent_errors():
            if len(attempts) == 1:
                create_markdown_artifact("first attempt", key="api-503-probe")
        return "done"

    with api_faults.failing(r"/artifacts", "503"):
        assert probe() == "done"
    assert len(attempts) == 2, "retried once after the API's 503"


@pytest.mark.parametrize(
    ("error", "warning"),
    [
        (ConfigError("the run's own permanent error"), "the flow run's remaining retries were not cancelled ("),
        (
            TransientError("the run's own transient error"),
            "TransientError: the run's own transient error (transient; the Prefect API did not say whether the "
            "flow run is retried: PrefectHTTPStatusError: ",
        ),
    ],
    ids=["permanent", "transient"],
)
def test_fail_fast_keeps_the_runs_own_error_when_the_api_does_not_answer_it(api_faults, error, warning):
    """fail_fast_on_permanent_errors reads the run's retry policy from the API (to cancel a
    permanent error's retries, or to say how a transient one is retried). When the API answers
    that with 503 the run still fails with its own error, and one warning says what was not done."""
    name = f"fail-fast-probe-{secrets.token_hex(3)}"

    @flow(name=name, retries=0)
    def probe() -> None:
        with fail_fast_on_permanent_errors():
            api_faults.pattern = re.compile(r"/flow_runs/[0-9a-f-]{36}$")  # read/update of this run
            raise error

    with api_faults.failing(r"^$", "503"), pytest.raises(type(error)) as raised:
        probe()
    assert raised.value is error
    assert any(request.startswith("GET /api/flow_runs/") for request in api_faults.faulted), api_faults.faulted
    said = [w for w in warnings_of(run_of_flow(name)) if "Prefect API" in w or "not cancelled" in w]
    assert len(said) == 1 and said[0].startswith(warning), said
