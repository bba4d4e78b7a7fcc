"""End to end, the way an operator runs vaultflow: a real Prefect server, the demo setup
(`python -m vaultflow.demo_setup`: demo servers and every block prefect.yaml names),
`prefect deploy --all`, a process worker; every deployment deployed as prefect.yaml writes it
(checked field by field), and every flow and every target run through the worker: the fulls of
all five targets, one incremental, one differential, a drill, log archiving of WAL and oplog,
verify, upload and prune, all green without a single failed task run. One full runs with
`prefect deployment run --watch` as CI starts it, the rest through the API as the UI's run
button does (a `prefect` process per run would cost 1.5 CPU-s of imports each). A failing run
through `--watch` exits non-zero.

Not every deployment runs (NOT_RUN): a run costs a process of about 6 CPU seconds on a 2-core
machine whose suite is CPU-bound, and the deployments left out differ from one that runs only
in their target and schedule, both checked here and by deployments.validate; their flows run on
every engine in-process (tests/contract, tests/integration). ClickHouse's full runs on the chDB
data directory the demo setup filled from a child process (the setup holds no lock on it).

Separate from the session's prefect_test_harness: its own `prefect server start` subprocess
(vaultflow/testing/prefect_stack.py) with its own PREFECT_HOME and SQLite database, and every CLI
call gets that server's PREFECT_API_URL. Setup steps that do not depend on each other run concurrently (each CLI
call spends seconds importing Prefect).

The worker runs with the production retry settings (2 flow retries, 120 s apart): a permanent
error that got retried would show as a run taking minutes, with run_count > 1.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil
import psycopg
import pytest

from tests.fixtures.prefect_db import e2e_stack
from tests.fixtures.processes import descendants, live
from vaultflow.blocks import BackupRepository
from vaultflow.demo_setup import READY_LINE
from vaultflow.deployments.serve_all import load_deployments
from vaultflow.engines.clickhouse.client import chdb_holder
from vaultflow.engines.clickhouse.fingerprint import table_units
from vaultflow.engines.postgres.wal.names import parse_lsn, segment_name, wal_prefix
from vaultflow.testing.prefect_stack import (
    CLI_TIMEOUT,
    FINAL_STATES,
    UUID_RE,
    WATCH_TIMEOUT,
    PrefectStack,
    tail,
    wait_healthy,
)

pytestmark = [pytest.mark.e2e, pytest.mark.long]  # about 3 minutes: started first

ROOT = Path(__file__).resolve().parents[2]
DEMO_ROWS = 200
WAL_SEGMENT_SIZE = 16 << 20  # the demo server's (initdb's default)
FLOW_RETRY_DELAY_S = 120  # production default: a retried run could not finish quickly
TARGETS = (
    ("postgres", "demo"),
    ("postgres", "demo-physical"),
    ("redis", "demo"),
    ("mongodb", "demo"),
    ("clickhouse", "demo"),
)
# Deployed and checked, not run (see the module docstring): their flows run for other targets here.
NOT_RUN = {
    "demo-daily-differential",
    "redis-demo-daily-incremental",
    "redis-demo-weekly-drill",
    "mongo-demo-daily-incremental",
    "mongo-demo-daily-differential",
    "mongo-demo-weekly-drill",
    "clickhouse-demo-daily-incremental",
    "clickhouse-demo-daily-differential",
    "clickhouse-demo-weekly-drill",
}


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectStack]:
    """A Prefect server starting up (not yet healthy: see wait_healthy); stopped at the end."""
    with e2e_stack(tmp_path_factory) as started:
        yield started


def wait_demo_ready(stack: PrefectStack, workdir: Path, timeout: float = CLI_TIMEOUT) -> dict:
    """Until the demo setup prints its ready line; its demo-servers.json. FAILS if it exits."""
    log = stack.base / "demo-setup.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if READY_LINE in (log.read_text(errors="replace") if log.exists() else ""):
            return json.loads((workdir / "demo-servers.json").read_text())
        if stack.procs["demo-setup"].poll() is not None:
            break
        time.sleep(0.2)
    pytest.fail(f"the demo setup is not ready\n{stack.log_tail('demo-setup')}", pytrace=False)


def wait_spooled(spool: Path, shipped: Path, backup) -> None:
    """Until the segment holding `backup`'s stop LSN is in the spool (or was shipped already):
    archive_command copies it there shortly after the backup, on its own schedule."""
    consistency = backup.consistency
    stop = segment_name(consistency.timeline, (parse_lsn(consistency.stop_lsn) - 1) // WAL_SEGMENT_SIZE)
    deadline = time.monotonic() + CLI_TIMEOUT
    while time.monotonic() < deadline:
        if (spool / stop).exists() or (shipped / f"{stop}.json").exists():
            return
        time.sleep(0.2)
    pytest.fail(
        f"{stop} (the stop segment of {backup.id}) never reached the spool {spool}: "
        f"{sorted(p.name for p in spool.iterdir()) if spool.is_dir() else 'no spool'}",
        pytrace=False,
    )


def run_phase(stack: PrefectStack, deployments: Sequence[str], names: dict[str, str], *params: str) -> dict[str, str]:
    """`prefect deployment run <flow>/<deployment> --watch` for each, side by side, as CI runs
    them; every run must end Completed and every command exit 0. Returns deployment -> flow
    run id."""
    started = {name: time.monotonic() for name in deployments}
    for name in deployments:
        stack.prefect(
            f"run-{name}",
            "deployment",
            "run",
            f"{names[name]}/{name}",
            "--watch",
            "--watch-timeout",
            str(WATCH_TIMEOUT),
            *[a for p in params for a in ("--param", p)],
        )
    run_ids = {}
    for name in deployments:
        code, output = stack.finish(f"run-{name}", WATCH_TIMEOUT + 30)
        match = UUID_RE.search(output)
        assert match, f"no flow run id in the output of {name}:\n{tail(output)}"
        run_ids[name] = match.group(1)
        run = stack.flow_run(run_ids[name])
        assert code == 0 and run["state_type"] == "COMPLETED", (
            f"{name} ended {run['state_type']} ({run['state'].get('message')}) after "
            f"{time.monotonic() - started[name]:.0f} s\n{tail(output)}\n{stack.log_tail('worker', 80)}"
        )
    return run_ids


def api_phase(stack: PrefectStack, deployments: Sequence[str], ids: dict[str, str], **parameters) -> dict[str, str]:
    """The same as run_phase through the API, as the UI's run button does (POST
    /deployments/{id}/create_flow_run), polled until each run ends: it spares a `prefect` process
    (1.5 CPU-s of imports) per run on a 2-core machine. Returns deployment -> flow run id."""
    started = time.monotonic()
    run_ids = {
        name: stack.api("POST", f"/deployments/{ids[name]}/create_flow_run", json={"parameters": parameters}).json()[
            "id"
        ]
        for name in deployments
    }
    pending = dict(run_ids)
    while pending:
        for name, run_id in list(pending.items()):
            run = stack.flow_run(run_id)
            if run["state_type"] in FINAL_STATES:
                assert run["state_type"] == "COMPLETED", (
                    f"{name} ended {run['state_type']} ({run['state'].get('message')}) after "
                    f"{time.monotonic() - started:.0f} s\n{stack.log_tail('worker', 80)}"
                )
                del pending[name]
        if pending:
            assert time.monotonic() - started < WATCH_TIMEOUT, (
                f"still running after {WATCH_TIMEOUT} s: {sorted(pending)}\n{stack.log_tail('worker', 80)}"
            )
            time.sleep(1)
    return run_ids


def test_demo_setup_deploy_all_and_every_deployment_runs_green(stack: PrefectStack, tmp_path: Path):
    workdir = tmp_path / "demo"
    wait_healthy(stack)

    # The setup steps of prefect.yaml's header, independent ones side by side.
    stack.prefect("work-pool", "work-pool", "create", "vaultflow", "--type", "process")
    stack.prefect("block-register", "block", "register", "-m", "vaultflow.blocks", cwd=ROOT)
    stack.check("work-pool")
    stack.check("block-register")
    stack.spawn(
        "demo-setup",
        [sys.executable, "-m", "vaultflow.demo_setup", "--workdir", str(workdir), "--rows", str(DEMO_ROWS)],
        cwd=ROOT,
    )
    stack.prefect("deploy", "deploy", "--all", cwd=ROOT)
    # Started outside the checkout: the pull step must move the runs to VAULTFLOW_HOME.
    worker = stack.prefect(
        "worker",
        "worker",
        "start",
        "--pool",
        "vaultflow",
        extra_env={
            "VAULTFLOW_HOME": str(ROOT),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "VAULTFLOW_FLOW_RETRIES": "2",
            "VAULTFLOW_FLOW_RETRY_DELAY_S": str(FLOW_RETRY_DELAY_S),
            "VAULTFLOW_RETRY_BACKOFF_S": "0.2",
        },
    )
    stack.check("deploy")
    state = wait_demo_ready(stack, workdir)
    repo_dir = Path(state["repository"])
    repository = BackupRepository(local_path=str(repo_dir)).build()  # to read what the runs wrote

    # prefect deploy took names, entrypoints, parameters, pool and schedules from prefect.yaml.
    deployed = {d["name"]: d for d in stack.api("POST", "/deployments/filter", json={}).json()}
    expected = load_deployments(ROOT / "prefect.yaml")
    assert sorted(deployed) == sorted(e["name"] for e in expected)
    for entry in expected:
        got = deployed[entry["name"]]
        assert got["entrypoint"] == entry["entrypoint"] and got["work_pool_name"] == entry["work_pool"]["name"]
        assert got["parameters"] == entry["parameters"]
        assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in got["schedules"]] == [
            (s["cron"], s["timezone"]) for s in entry["schedules"]
        ]
    # Every block a deployment names was saved by the demo setup.
    referenced = {
        v
        for e in expected
        for k, v in e["parameters"].items()
        if k in ("target", "repository", "source", "destination")
    }
    assert referenced == set(state["blocks"]), (referenced, state["blocks"])
    # The setup filled ClickHouse's data directory from a child process: nobody holds it now, so
    # the worker's flow runs can open it.
    assert chdb_holder(state["clickhouse"]["chdb_path"]) is None
    flows = {f["id"]: f["name"] for f in stack.api("POST", "/flows/filter", json={}).json()}
    names = {name: flows[d["flow_id"]] for name, d in deployed.items()}

    # Each run deployment once, in phases that respect what each needs: fulls first (parents of
    # the incremental and differential, the drill's backup), then the WAL those backups wrote is
    # shipped (verify checks that the archive reaches through every physical backup), verify and
    # prune last.
    ids = {name: d["id"] for name, d in deployed.items()}
    runs = run_phase(stack, ["demo-weekly-full"], names)
    runs |= api_phase(
        stack,
        [
            "demo-physical-weekly-full",
            "redis-demo-weekly-full",
            "mongo-demo-weekly-full",
            "clickhouse-demo-weekly-full",
        ],
        ids,
    )
    runs |= api_phase(stack, ["demo-daily-incremental", "redis-demo-daily-differential"], ids)
    # The drill after the physical incremental of the same server: its scratch databases would be
    # in that backup's cluster (a database dropped while a physical backup lists them retries).
    runs |= api_phase(stack, ["demo-weekly-drill"], ids)
    wait_spooled(
        Path(state["spool"]),
        repo_dir / wal_prefix("demo-physical"),
        repository.catalog("postgres", "demo-physical").manifests[-1],
    )
    # follow_seconds=0: ship what is spooled and end, instead of following the spool for 50 s (the
    # follow mode has its own test in tests/integration/test_flows_wal.py). The MongoDB oplog is cut
    # into 2 s slices here (600 s in the demo block), so that this run has slices to ship.
    stack.set_block_data("mongo-target", "demo", oplog_slice_seconds=2)
    runs |= api_phase(stack, ["demo-archive-logs", "mongo-demo-archive-logs"], ids, follow_seconds=0)
    runs |= api_phase(stack, ["demo-daily-verify"], ids)
    # The status flow after verify: one table artifact for the repository, a row per target, each
    # with the verify just run (its RPO verdicts depend on the demo's clock: not asserted here).
    runs |= api_phase(stack, ["demo-hourly-status"], ids)
    [status_artifact] = stack.api(
        "POST", "/artifacts/filter", json={"artifacts": {"key": {"any_": ["status-demo"]}}, "limit": 1}
    ).json()
    status_rows = status_artifact["data"]
    status_rows = json.loads(status_rows) if isinstance(status_rows, str) else status_rows
    assert sorted(row["target"] for row in status_rows) == sorted(f"{e}/{t}" for e, t in TARGETS), status_rows
    assert all(row["last verify"].startswith("ok ") for row in status_rows), status_rows

    # ... and each did what its name says, with nothing taken as a fallback full.
    kinds = {
        f"{engine}/{target}": [
            (m.kind.value, m.mode, m.parent_id is not None) for m in repository.catalog(engine, target).manifests
        ]
        for engine, target in TARGETS
    }
    assert [(k, mode) for k, mode, _ in kinds["postgres/demo"]] == [("full", "logical")], kinds
    assert kinds["postgres/demo-physical"] == [("full", "physical", False), ("incremental", "physical", True)], kinds
    assert [(k, parent) for k, _, parent in kinds["redis/demo"]] == [("full", False), ("differential", True)], kinds
    assert [(k, parent) for k, _, parent in kinds["mongodb/demo"]] == [("full", False)], kinds
    [clickhouse] = repository.catalog("clickhouse", "demo").manifests
    assert clickhouse.kind.value == "full" and clickhouse.lineage.deployment == "clickhouse-demo-weekly-full"
    tables = table_units(clickhouse.fingerprints["backup_demo"])  # partition units left out
    assert {t: fp.count for t, fp in tables.items()} == state["clickhouse"]["tables"]
    assert chdb_holder(state["clickhouse"]["chdb_path"]) is None, "the flow run's process let go of chDB's directory"
    assert list((repo_dir / wal_prefix("demo-physical")).glob("*.json")), "archive-logs shipped no WAL"
    assert list((repo_dir / "mongodb" / "demo" / "logs" / "oplog").glob("*.json")), "archive-logs shipped no oplog"
    [logical] = repository.catalog("postgres", "demo").manifests
    checks = {
        m.id: repository.last_checks(engine, target)[m.id]
        for engine, target in TARGETS
        for m in repository.catalog(engine, target).manifests
    }
    assert len(checks) == 7 and {(c["verify"]["result"], c["verify"]["flow_run_id"]) for c in checks.values()} == {
        ("ok", runs["demo-daily-verify"])
    }, checks
    # The verify after the drill keeps the drill's record beside its own (one object per kind).
    drilled = {backup_id: c["drill"] for backup_id, c in checks.items() if "drill" in c}
    assert list(drilled) == [logical.id], checks
    assert (drilled[logical.id]["result"], drilled[logical.id]["flow_run_id"]) == ("ok", runs["demo-weekly-drill"])
    assert drilled[logical.id]["seconds"] <= drilled[logical.id]["rto_objective_s"], drilled
    assert logical.lineage.flow_run_id == runs["demo-weekly-full"] and logical.lineage.deployment == "demo-weekly-full"
    pg = state["postgres"]
    with psycopg.connect(host=pg["host"], port=pg["port"], user=pg["user"], dbname="postgres") as conn:
        leftovers = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'vaultflow_drill_%'").fetchall()
    assert leftovers == [], f"the drill left scratch databases behind: {leftovers}"

    # The hybrid strategy: every backup copied to the off-site repository, restorable there.
    runs |= api_phase(stack, ["demo-daily-upload"], ids)
    offsite = BackupRepository(local_path=str(repo_dir.parent / "offsite")).build()
    for engine, target in TARGETS:
        assert [m.id for m in offsite.catalog(engine, target).manifests] == [
            m.id for m in repository.catalog(engine, target).manifests
        ], (engine, target)

    # Prune last: its retention may collect backups the assertions above counted.
    runs |= api_phase(stack, ["demo-daily-prune"], ids)
    assert NOT_RUN <= set(deployed) and sorted(runs) == sorted(set(deployed) - NOT_RUN), (
        "every other deployment ran once"
    )
    assert worker.poll() is None, stack.log_tail("worker")

    # Green means green: no failed (red) task run in any of them, and no run needed a retry.
    task_runs = stack.task_runs(list(runs.values()))
    red = [
        (t["name"], t["state_type"], (t.get("state") or {}).get("message"))
        for t in task_runs
        if t["state_type"] != "COMPLETED"
    ]
    assert task_runs and red == [], red
    assert all(stack.flow_run(run_id)["run_count"] == 1 for run_id in runs.values())

    # A permanent error (the database is gone): fails at once, not retried 120 s later.
    stack.set_block_data("postgres-target", "demo", databases=["e2e_no_such_db"])
    code, output, _, run_id = stack.watch_run("run-missing-db", "full-backup/demo-weekly-full")
    run = stack.flow_run(run_id)
    assert code != 0, f"a run against a missing database succeeded?\n{tail(output)}"
    assert run["state_type"] == "FAILED", run["state"]
    assert "NotFoundError" in run["state"]["message"] and "e2e_no_such_db" in run["state"]["message"]
    assert run["run_count"] == 1, f"retried: run_count {run['run_count']}"
    assert run["empirical_policy"]["retries"] == 0  # fail_fast_on_permanent_errors cancelled them
    assert len(repository.catalog("postgres", "demo").manifests) == 1

    # Teardown: the server, the worker, the demo servers and anything they started end with
    # their groups.
    family = []
    for proc in stack.procs.values():
        try:
            family += [psutil.Process(proc.pid), *descendants(proc.pid)]
        except psutil.NoSuchProcess:
            pass
    assert sorted(stack.procs) == ["demo-setup", "server", "worker"]
    stack.stop_all()
    alive = list(live(family, "cmdline"))  # exited ones (and zombies) are gone
    assert alive == [], [(p.pid, info["cmdline"]) for p, info in alive]
