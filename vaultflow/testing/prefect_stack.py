"""A real Prefect server in a subprocess, for the end-to-end tests and `make bench-fleet`: its own
`prefect server start` with its own PREFECT_HOME and SQLite database, and the processes started
against it (workers, CLI calls), each in its own process group, stopped with everything they
started. Every CLI call gets that server's PREFECT_API_URL. Prefect itself is not imported: it
runs as the `prefect` command beside this interpreter.

    with running_stack(base_dir) as stack:           # starting; wait_healthy(stack) before use
        stack.prefect("worker", "worker", "start", "--pool", "vaultflow")

Failures raise StackError with the tail of the process's log.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from vaultflow.testing.unprivileged import free_port

BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect") if (BIN / "prefect").exists() else "prefect"
SERVER_START_TIMEOUT = 240.0  # a fresh SQLite database is migrated first: slow on a busy machine
CLI_TIMEOUT = 180.0
WATCH_TIMEOUT = 300  # runs go in parallel phases on 2 cores
API_RETRY_S = 60.0
RETRY_STATUS = {429, 502, 503}
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}  # Prefect's StateType.is_final()
UUID_RE = re.compile(r"UUID: ([0-9a-f-]{36})")


class StackError(RuntimeError):
    """A process of the stack failed or did not finish; the message holds its log's tail."""


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
    def spawn(
        self, name: str, args: Sequence[str], *, cwd: Path | None = None, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        """A process in its own process group, output to <base>/<name>.log."""
        with open(self.base / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                list(args),
                cwd=cwd or self.base,
                env={**self.env, **(extra_env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
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
            raise StackError(f"{name} did not finish within {timeout:.0f} s\n{tail(output)}\n{self.log_tail()}")
        return code, output

    def check(self, name: str, timeout: float = CLI_TIMEOUT) -> str:
        code, output = self.finish(name, timeout)
        if code != 0:
            raise StackError(f"{name} exited with {code}\n{tail(output)}\n{self.log_tail()}")
        return output

    def prefect(
        self, name: str, *args: str, cwd: Path | None = None, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen:
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
        """One API call, retried as Prefect's own client retries it: a busy server (its SQLite
        database locked by the worker's writes on 2 loaded cores) answers 503, 502 or 429."""
        deadline = time.monotonic() + API_RETRY_S
        while True:
            response = httpx.request(method, self.api_url + path, timeout=30, **kwargs)
            if response.status_code not in RETRY_STATUS or time.monotonic() > deadline:
                response.raise_for_status()
                return response
            time.sleep(1)

    def set_block_data(self, block_type: str, name: str, **data) -> None:
        """Change fields of a saved block document (what Block.save(overwrite=True) does)."""
        document = self.api(
            "GET", f"/block_types/slug/{block_type}/block_documents/name/{name}", params={"include_secrets": "true"}
        ).json()
        self.api(
            "PATCH",
            f"/block_documents/{document['id']}",
            json={"data": {**document["data"], **data}, "merge_existing_data": False},
        )

    def flow_run(self, flow_run_id: str) -> dict:
        return self.api("GET", f"/flow_runs/{flow_run_id}").json()

    def task_runs(self, flow_run_ids: Sequence[str], timeout: float = API_RETRY_S) -> list[dict]:
        """The task runs (API dicts) of the finished flow runs `flow_run_ids`, once every one is
        in a final state, or as they are after `timeout` seconds. The server records task runs
        from their events in batches, after the flow run itself has ended: read at once, the
        last ones may still show as running."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.api(
                "POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": list(flow_run_ids)}}}
            ).json()
            if all(run["state_type"] in FINAL_STATES for run in runs) or time.monotonic() > deadline:
                return runs
            time.sleep(0.5)

    def stop_all(self) -> None:
        """Newest first: the worker (and its runs) before the server it reports to."""
        for name in reversed(list(self.procs)):
            stop_group(self.procs.pop(name))


def stop_group(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the process group and every descendant (flow runs may have their own groups);
    SIGKILL what is left after `timeout`."""
    try:
        parent = psutil.Process(proc.pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:  # it exited: its group may still hold children
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
    env.update(
        {
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
        }
    )
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
            raise StackError(f"prefect server exited with {proc.returncode} before it was healthy\n{log}")
        try:
            if httpx.get(f"{stack.api_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    log = stack.log_tail()
    stack.stop_all()
    raise StackError(f"prefect server not healthy after {SERVER_START_TIMEOUT:.0f} s\n{log}")


@contextmanager
def running_stack(base: Path, database: Path | None = None, **env: str) -> Iterator[PrefectStack]:
    """A Prefect server starting up in `base` (not yet healthy: see wait_healthy), on the SQLite
    file `database` (default: a new one in `base`, migrated when the server starts), with
    isolated_env's environment plus `env`; stopped with every process started on it, at the end."""
    stack = PrefectStack(base=base, port=0, env={**isolated_env(base), **env})
    if database is not None and database != base / "prefect.db":
        shutil.copyfile(database, base / "prefect.db")
    start_server(stack)
    try:
        yield stack
    finally:
        stack.stop_all()
