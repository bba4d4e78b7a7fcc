"""End to end, the way an operator runs vaultflow: a real Prefect server, `prefect deploy --all`
from prefect.yaml, a process worker, and `prefect deployment run --watch`.

Separate from the session's prefect_test_harness: its own `prefect server start` subprocess
with its own PREFECT_HOME and SQLite database, and every CLI call gets that server's
PREFECT_API_URL. Setup steps that do not depend on each other run concurrently (each CLI
call spends seconds importing Prefect).

The worker runs with the production retry settings (2 flow retries, 120 s apart): a permanent
error that got retried would show as a run taking minutes, with run_count > 1.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from blocks import BackupRepository
from deployments.serve_all import load_deployments
from tests.fixtures.processes import descendants, live
from vaultflow.testing.postgres_server import PostgresInstance
from vaultflow.testing.unprivileged import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect") if (BIN / "prefect").exists() else "prefect"
SERVER_START_TIMEOUT = 240.0  # a fresh SQLite database is migrated first: slow on a busy machine
CLI_TIMEOUT = 180.0
WATCH_TIMEOUT = 150
FLOW_RETRY_DELAY_S = 120  # production default: a retried run could not finish quickly
UUID_RE = re.compile(r"UUID: ([0-9a-f-]{36})")


def tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class PrefectStack:
    """A real Prefect server plus the processes the test started against it."""

    base: Path
    port: int
    env: dict[str, str]
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def log_tail(self, name: str = "server", lines: int = 40) -> str:
        path = self.base / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return f"--- last lines of {path} ---\n{tail(text, lines)}"

    # -- processes ------------------------------------------------------------------------
    def spawn(self, name: str, args: Sequence[str], *, cwd: Path | None = None,
              extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        """A process in its own process group, output to <base>/<name>.log."""
        with open(self.base / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(list(args), cwd=cwd or self.base, env={**self.env, **(extra_env or {})},
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs[name] = proc
        return proc

    def finish(self, name: str, timeout: float = CLI_TIMEOUT) -> tuple[int, str]:
        """Wait for a spawned process; (exit code, its output)."""
        proc = self.procs.pop(name)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            code = None
        output = (self.base / f"{name}.log").read_text(errors="replace")
        if code is None:
            pytest.fail(f"{name} did not finish within {timeout:.0f} s\n{tail(output)}\n{self.log_tail()}",
                        pytrace=False)
        return code, output

    def check(self, name: str, timeout: float = CLI_TIMEOUT) -> str:
        code, output = self.finish(name, timeout)
        if code != 0:
            pytest.fail(f"{name} exited with {code}\n{tail(output)}\n{self.log_tail()}", pytrace=False)
        return output

    def prefect(self, name: str, *args: str, cwd: Path | None = None,
                extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        return self.spawn(name, [PREFECT, *args], cwd=cwd, extra_env=extra_env)

    def watch_run(self, name: str, deployment: str, timeout: float = WATCH_TIMEOUT) -> tuple[int, str, float, str]:
        """`prefect deployment run <deployment> --watch`: (exit code, output, seconds, flow run id)."""
        started = time.monotonic()
        self.prefect(name, "deployment", "run", deployment, "--watch", "--watch-timeout", str(int(timeout)))
        code, output = self.finish(name, timeout + 30)
        match = UUID_RE.search(output)
        assert match, f"no flow run id in the output of {name}:\n{tail(output)}"
        return code, output, time.monotonic() - started, match.group(1)

    # -- API ------------------------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs) -> httpx.Response:
        response = httpx.request(method, self.api_url + path, timeout=30, **kwargs)
        response.raise_for_status()
        return response

    def set_block_data(self, block_type: str, name: str, **data) -> None:
        """Change fields of a saved block document (what Block.save(overwrite=True) does)."""
        document = self.api("GET", f"/block_types/slug/{block_type}/block_documents/name/{name}",
                            params={"include_secrets": "true"}).json()
        self.api("PATCH", f"/block_documents/{document['id']}",
                 json={"data": {**document["data"], **data}, "merge_existing_data": False})

    def flow_run(self, flow_run_id: str) -> dict:
        return self.api("GET", f"/flow_runs/{flow_run_id}").json()

    def stop_all(self) -> None:
        """Newest first: the worker (and its runs) before the server it reports to."""
        for name in reversed(list(self.procs)):
            stop_group(self.procs.pop(name))


def stop_group(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the process group and every descendant (flow runs may have their own groups);
    SIGKILL what is left after `timeout`."""
    try:
        family = [psutil.Process(proc.pid), *descendants(proc.pid)]
    except psutil.NoSuchProcess:
        family = []
    groups = {proc.pid}
    for member in family:
        try:
            groups.add(os.getpgid(member.pid))
        except ProcessLookupError:
            pass
    groups.discard(os.getpgrp())  # never our own
    for group in groups:
        try:
            os.killpg(group, signal.SIGTERM)
        except ProcessLookupError:
            pass
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for member in alive:
        try:
            member.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def isolated_env(base: Path) -> dict[str, str]:
    """Our environment minus any PREFECT_*/VAULTFLOW_* settings (the session's, a user's profile),
    plus an isolated PREFECT_HOME and database. Flow heartbeats stay at Prefect's default:
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY cannot be emptied through the environment (3.9 refuses '')."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VAULTFLOW_"))}
    (base / "home").mkdir()
    env.update({
        "PREFECT_HOME": str(base / "home"),
        "PREFECT_PROFILES_PATH": str(base / "home" / "profiles.toml"),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{base / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        # The schedules are days away: creating hundreds of future runs only costs time here.
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def start_server(stack: PrefectStack) -> None:
    stack.port = free_port()
    stack.env["PREFECT_API_URL"] = stack.api_url  # for the clients; the server ignores it
    stack.prefect("server", "server", "start", "--host", "127.0.0.1", "--port", str(stack.port))


def wait_healthy(stack: PrefectStack) -> None:
    """Until /api/health answers; FAILS (never skips) with the server log when it does not."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    attempts = 1
    while time.monotonic() < deadline:
        proc = stack.procs["server"]
        if proc.poll() is not None:
            log = stack.log_tail()
            if "address already in use" in log.lower() and attempts < 3:  # lost the port race
                attempts += 1
                del stack.procs["server"]
                start_server(stack)
                continue
            pytest.fail(f"prefect server exited with {proc.returncode} before it was healthy\n{log}",
                        pytrace=False)
        try:
            if httpx.get(f"{stack.api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    log = stack.log_tail()
    stack.stop_all()
    pytest.fail(f"prefect server not healthy after {SERVER_START_TIMEOUT:.0f} s\n{log}", pytrace=False)


SAVE_BLOCKS = """
import json, sys
from blocks import BackupRepository, PostgresTarget
spec = json.loads(sys.argv[1])
PostgresTarget(**spec["target"]).save("demo", overwrite=True)
BackupRepository(local_path=spec["repository"]).save("demo", overwrite=True)
print("saved postgres-target/demo and backup-repository/demo")
"""


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectStack]:
    """A Prefect server starting up (not yet healthy: see wait_healthy); stopped at the end."""
    base = tmp_path_factory.mktemp("prefect-e2e")
    stack = PrefectStack(base=base, port=0, env=isolated_env(base))
    start_server(stack)
    try:
        request.getfixturevalue("pg18")  # PostgreSQL starts while the server migrates its database
        yield stack
    finally:
        stack.stop_all()


def test_deploy_and_run_through_a_worker(stack: PrefectStack, pg18: PostgresInstance, fresh_db,
                                         tmp_path: Path):
    database = fresh_db(pg18, "e2e_shop")
    pg18.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL); "
                 "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 5) g", dbname=database)
    repo_dir = tmp_path / "repository"
    repository = BackupRepository(local_path=str(repo_dir)).build()  # to read what the runs wrote
    wait_healthy(stack)

    # The setup steps of prefect.yaml's header, independent ones side by side.
    stack.prefect("work-pool", "work-pool", "create", "vaultflow", "--type", "process")
    stack.prefect("block-register", "block", "register", "-m", "blocks", cwd=ROOT)
    stack.check("work-pool")
    stack.check("block-register")

    stack.prefect("deploy", "deploy", "--all", cwd=ROOT)
    target = {"host": pg18.host, "port": pg18.port, "user": pg18.user, "databases": [database],
              "target_name": "demo"}
    stack.spawn("save-blocks", [sys.executable, "-c", SAVE_BLOCKS,
                                json.dumps({"target": target, "repository": str(repo_dir)})], cwd=ROOT)
    # Started outside the checkout: the pull step must move the runs to VAULTFLOW_HOME.
    worker = stack.prefect("worker", "worker", "start", "--pool", "vaultflow", extra_env={
        "VAULTFLOW_HOME": str(ROOT), "PREFECT_WORKER_QUERY_SECONDS": "1",
        "VAULTFLOW_FLOW_RETRIES": "2", "VAULTFLOW_FLOW_RETRY_DELAY_S": str(FLOW_RETRY_DELAY_S),
        "VAULTFLOW_RETRY_BACKOFF_S": "0.2"})
    stack.check("deploy")
    stack.check("save-blocks")

    # prefect deploy took names, entrypoints, parameters, pool and schedules from prefect.yaml.
    deployed = {d["name"]: d for d in stack.api("POST", "/deployments/filter", json={}).json()}
    expected = load_deployments(ROOT / "prefect.yaml")
    assert sorted(deployed) == sorted(e["name"] for e in expected)
    for entry in expected:
        got = deployed[entry["name"]]
        assert got["entrypoint"] == entry["entrypoint"] and got["work_pool_name"] == entry["work_pool"]["name"]
        assert got["parameters"] == entry["parameters"]
        assert [(s["schedule"]["cron"], s["schedule"]["timezone"]) for s in got["schedules"]] == \
            [(s["cron"], s["timezone"]) for s in entry["schedules"]]

    # 1. A full backup through the worker.
    code, output, seconds, run_id = stack.watch_run("run-full", "full-backup/demo-weekly-full")
    assert code == 0, f"full backup failed ({seconds:.0f} s)\n{tail(output)}\n{stack.log_tail('worker', 80)}"
    assert list((repo_dir / "postgres" / "demo" / "backups").glob("*/manifest.json")), \
        sorted(str(p.relative_to(repo_dir)) for p in repo_dir.rglob("*"))
    [manifest] = repository.catalog("postgres", "demo").manifests
    assert manifest.lineage.flow_run_id == run_id and manifest.lineage.deployment == "demo-weekly-full"
    assert worker.poll() is None, stack.log_tail("worker")

    # 2. A permanent error (the database is gone): fails at once, not retried 120 s later.
    stack.set_block_data("postgres-target", "demo", databases=["e2e_no_such_db"])
    code, output, seconds, run_id = stack.watch_run("run-missing-db", "full-backup/demo-weekly-full")
    run = stack.flow_run(run_id)
    assert code != 0, f"a run against a missing database succeeded?\n{tail(output)}"
    assert run["state_type"] == "FAILED", run["state"]
    assert "NotFoundError" in run["state"]["message"] and "e2e_no_such_db" in run["state"]["message"]
    assert run["run_count"] == 1, f"retried: run_count {run['run_count']}"
    assert run["empirical_policy"]["retries"] == 0  # fail_fast_on_permanent_errors cancelled them
    assert seconds < FLOW_RETRY_DELAY_S / 2, f"took {seconds:.0f} s: was it retried?"
    assert len(repository.catalog("postgres", "demo").manifests) == 1

    # 3. The good block again; a restore drill of the backup from step 1.
    stack.set_block_data("postgres-target", "demo", databases=[database])
    code, output, seconds, run_id = stack.watch_run("run-drill", "restore-drill/demo-weekly-drill")
    assert code == 0, f"restore drill failed ({seconds:.0f} s)\n{tail(output)}\n{stack.log_tail('worker', 80)}"
    check = repository.last_checks("postgres", "demo")[manifest.id]
    assert (check["kind"], check["result"], check["flow_run_id"]) == ("drill", "ok", run_id), check
    leftovers = pg18.execute("SELECT datname FROM pg_database WHERE datname LIKE 'vaultflow_drill_%'")
    assert leftovers == [], f"the drill left scratch databases behind: {leftovers}"

    # 4. Teardown: the server, the worker and anything they started end with their groups.
    family = []
    for proc in stack.procs.values():
        try:
            family += [psutil.Process(proc.pid), *descendants(proc.pid)]
        except psutil.NoSuchProcess:
            pass
    assert sorted(stack.procs) == ["server", "worker"]
    stack.stop_all()
    alive = list(live(family, "cmdline"))  # exited ones (and zombies) are gone
    assert alive == [], [(p.pid, info["cmdline"]) for p, info in alive]
