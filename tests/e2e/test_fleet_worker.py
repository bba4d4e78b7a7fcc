"""A fleet end to end, the way a DBA runs one: a real Prefect server with its scheduler on,
`vaultflow fleet deploy` of a fleet file of three small targets (two PostgreSQL databases, and a
local-mode Redis whose backups read its dir, so they go to its host's work queue), one process
worker serving the shared queue and that host queue; every target's scheduled run completes,
with the target and repository its schedule carried.

The file is applied twice: first as written for production (schedules months away), through the
CLI; then with each target's full moved to a moment just ahead (an interval anchored there),
applied in-process, where the moment cannot pass while a command starts (a CLI call spends
seconds on imports on a loaded machine). The second apply changes exactly the three schedules.
The scheduler's loop runs every 2 s here (60 s by default), so a changed schedule gets its run
at once.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.fixtures.prefect_db import e2e_stack
from vaultflow.blocks import BackupRepository, PostgresTarget, RedisTarget
from vaultflow.deployments.fleet import check, deploy, worker_argv
from vaultflow.testing.prefect_stack import BIN, FINAL_STATES, PrefectStack, wait_healthy

pytestmark = [pytest.mark.e2e, pytest.mark.long]  # about a minute

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT = 300.0  # three runs side by side on 2 loaded cores
LEAD_S = 10  # how far ahead the runs are scheduled once the fleet is applied
FLEET = """\
name: e2e
repository: backup-repository/e2e-repo
timezone: UTC
plans:
  logical:
    full: {full}
  redis-local:
    full: {full}
targets:
  postgres-target/e2e-shop: logical
  postgres-target/e2e-crm: logical
  redis-target/e2e-cache: redis-local
"""


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory):
    with e2e_stack(
        tmp_path_factory,
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="true",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
    ) as started:
        yield started


def fleet_runs(stack: PrefectStack, deployment_ids: list[str]) -> list[dict]:
    return stack.api("POST", "/flow_runs/filter", json={"deployments": {"id": {"any_": deployment_ids}}}).json()


def due(run: dict) -> bool:
    """A run past its scheduled moment (the schedules' later hours are not)."""
    return run["state_type"] != "SCHEDULED" or datetime.fromisoformat(run["expected_start_time"]) <= datetime.now(UTC)


def test_a_fleet_deployed_with_one_command_runs_every_target_on_the_queue_it_needs(
    stack: PrefectStack, tmp_path: Path, pg18, fresh_db, redis_source
):
    databases = {"shop": fresh_db(pg18), "crm": fresh_db(pg18)}
    for database in databases.values():
        pg18.execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100)", dbname=database)
    redis_source.client().set("fleet-e2e", "1")
    wait_healthy(stack)
    stack.prefect("work-pool", "work-pool", "create", "vaultflow", "--type", "process")
    repo_dir = tmp_path / "repo"
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):  # the e2e server's blocks
        for name, database in databases.items():
            PostgresTarget(
                host=pg18.host, port=pg18.port, user=pg18.user, databases=[database], bin_dir=str(pg18.client_bin_dir)
            ).save(f"e2e-{name}")
        RedisTarget(host=redis_source.host, port=redis_source.port, data_dir=str(redis_source.directory)).save(
            "e2e-cache"
        )
        BackupRepository(local_path=str(repo_dir)).save("e2e-repo")
    stack.check("work-pool")

    # 1. As written for production, through the CLI; the worker starts meanwhile.
    path = tmp_path / "fleet.yaml"
    path.write_text(FLEET.format(full='"0 3 1 1 *"'))
    stack.spawn("fleet-deploy", [str(BIN / "vaultflow"), "fleet", "deploy", str(path)], cwd=ROOT)
    worker = stack.prefect(
        "worker",
        *worker_argv("vaultflow", ["default", "host-127.0.0.1"]),
        extra_env={"VAULTFLOW_HOME": str(ROOT), "PREFECT_WORKER_QUERY_SECONDS": "1"},
    )
    lines = stack.check("fleet-deploy").splitlines()
    assert "created   full-backup/e2e-default: postgres-target/e2e-shop, postgres-target/e2e-crm" in lines, lines
    assert "created   full-backup/e2e-host-127.0.0.1: redis-target/e2e-cache" in lines, lines

    # 2. Every target's full moved to LEAD_S seconds ahead: the second apply changes its schedules.
    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        check(path)  # flows and blocks loaded once: the apply below takes a second, not the lead
        applies = 0
        while True:
            at = (datetime.now(UTC) + timedelta(seconds=LEAD_S)).replace(microsecond=0)
            path.write_text(FLEET.format(full=f'{{interval: 3600, anchor_date: "{at.isoformat()}"}}'))
            _, report, _ = deploy(path)
            applies += 1
            if datetime.now(UTC) < at:  # else the moment passed (a stalled machine): move it again
                break
    assert sorted(verb for verb, _ in report.actions) == ["changed"] * 3, report.actions

    deployments = {d["name"]: d for d in stack.api("POST", "/deployments/filter", json={}).json()}
    assert sorted(deployments) == ["e2e-default", "e2e-host-127.0.0.1"]
    targets = {"postgres-target/e2e-shop", "postgres-target/e2e-crm", "redis-target/e2e-cache"}
    started = time.monotonic()
    while True:  # until every run that is due has ended, each target's at least
        runs = [run for run in fleet_runs(stack, [d["id"] for d in deployments.values()]) if due(run)]
        if {run["parameters"]["target"] for run in runs} == targets and all(
            run["state_type"] in FINAL_STATES for run in runs
        ):
            break
        assert time.monotonic() - started < RUN_TIMEOUT, (
            f"runs not ended after {RUN_TIMEOUT:.0f} s: {[(r['name'], r['state_type']) for r in runs]}\n"
            f"{stack.log_tail('worker', 80)}"
        )
        time.sleep(1)

    # One run per target; more only when a stalled apply was moved (its first moment may have
    # come meanwhile, and that run went ahead).
    assert len(runs) == 3 or applies > 1, [(r["name"], r["parameters"]["target"], r["run_count"]) for r in runs]
    queue_of = {d["id"]: d["work_queue_name"] for d in deployments.values()}
    expected_queue = {"postgres-target/e2e-shop": "default", "postgres-target/e2e-crm": "default"}
    for run in runs:
        target = run["parameters"]["target"]
        assert (run["state_type"], queue_of[run["deployment_id"]], run["parameters"]["repository"]) == (
            "COMPLETED",
            expected_queue.get(target, "host-127.0.0.1"),
            "backup-repository/e2e-repo",
        ), (target, run["state"].get("message"))
        assert run["auto_scheduled"], run["name"]  # started by its schedule

    # Each backup is in the repository, made by its fleet deployment, of its own target: one per run.
    repository = BackupRepository(local_path=str(repo_dir)).build()
    for engine, target, deployment in [
        ("postgres", "e2e-shop", "e2e-default"),
        ("postgres", "e2e-crm", "e2e-default"),
        ("redis", "e2e-cache", "e2e-host-127.0.0.1"),
    ]:
        backups = repository.catalog(engine, target).manifests
        its_runs = [run for run in runs if run["parameters"]["target"] == f"{engine}-target/{target}"]
        assert sorted(m.lineage.flow_run_id for m in backups) == sorted(run["id"] for run in its_runs), (
            target,
            [(m.id, m.lineage.flow_run_id, m.started_at.isoformat()) for m in backups],
            [(r["id"], r["state_type"], r["run_count"], r["expected_start_time"]) for r in its_runs],
            stack.log_tail("worker", 120),
        )
        assert all((m.kind.value, m.lineage.deployment) == ("full", deployment) for m in backups), target
    shop = repository.catalog("postgres", "e2e-shop").manifests[-1]  # the database its block names
    assert databases["shop"] in shop.fingerprints and databases["crm"] not in shop.fingerprints, list(shop.fingerprints)
    assert worker.poll() is None, stack.log_tail("worker")
