"""`make demo` as a new user runs it: `vaultflow demo` in a fresh PREFECT_HOME, through Prefect's
temporary API (no PREFECT_API_URL), every part (PostgreSQL, Redis, MongoDB, ClickHouse), and a
clean screen.

A subprocess, not run_demo() in-process: the session's settings (the test harness's API,
PREFECT_SERVER_ANALYTICS_ENABLED=false from conftest) would hide what a first run prints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vaultflow.engines.clickhouse.fingerprint import PARTITION_METHODS

VAULTFLOW = Path(sys.executable).parent / "vaultflow"
ROOT = Path(__file__).resolve().parents[2]


def as_a_new_user(tmp_path: Path, args: list[str], timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """`args` run from the project as a new user would: a new PREFECT_HOME (no database yet,
    migrated at first start), no PREFECT_ or VAULTFLOW_ setting of ours, plus `env`."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VAULTFLOW_"))}
    clean.update({"PREFECT_HOME": str(home), "PREFECT_PROFILES_PATH": str(home / "profiles.toml"), **env})
    return subprocess.run(
        args, cwd=ROOT, env=clean, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.long  # about a minute: its module is started first
def test_make_demo_first_screen_is_clean(tmp_path: Path):
    workdir = tmp_path / "demo"
    result = as_a_new_user(
        tmp_path, [str(VAULTFLOW), "demo", "--workdir", str(workdir), "--rows", "300"], timeout=600, COLUMNS="200"
    )
    screen = result.stdout + result.stderr
    assert result.returncode == 0, screen[-6000:]
    assert "demo OK" in screen and "seed rows identical" in screen and "seed keys identical" in screen, screen[-4000:]
    # MongoDB: the oplog on, both comparisons, and the incremental's kind said as it was taken.
    words = " ".join(screen.split())  # the console wraps long lines
    assert "oplog on" in words and "seed employees identical" in words and "DIFFER" not in words, screen[-4000:]
    # 300 generated + Alice, Bob, Charlie + Dana - 1 deleted
    assert "employees: 303 documents, _ids identical" in words, screen[-4000:]
    # ClickHouse: the database dropped, restored under its name, and the demo's own count() and
    # sum(cityHash64) of each table after the restore equal to those before the drop.
    assert "dropped ClickHouse database backup_demo" in words, screen[-4000:]
    assert (
        "count()/sum(cityHash64) check of the restored backup_demo against the data before the drop: "
        "attendance: 3030 rows, sum(cityHash64) identical; employees: 303 rows, sum(cityHash64) identical"
    ) in words, screen[-4000:]
    assert "Traceback" not in screen, screen
    assert "ERROR" not in screen, screen
    assert "database is locked" not in screen, screen
    repository = workdir / "repository"
    manifests = sorted(p.relative_to(repository).parts[0] for p in repository.rglob("manifest.json"))
    assert manifests == ["clickhouse", "mongodb", "mongodb", "postgres", "redis", "redis"], (
        "a ClickHouse full, a MongoDB full and incremental, one PostgreSQL full, a Redis full and incremental"
    )
    [clickhouse] = (repository / "clickhouse" / "demo" / "backups").iterdir()
    full = json.loads((clickhouse / "manifest.json").read_text())
    assert full["kind"] == "full" and full["consistency"]["databases"].keys() == {"backup_demo"}, full
    tables = {t: fp for t, fp in full["fingerprints"]["backup_demo"].items() if fp["method"] not in PARTITION_METHODS}
    assert {t: fp["count"] for t, fp in tables.items()} == {
        "attendance": 3030,
        "employees": 303,
    }, full["fingerprints"]
    # vaultflow's comparison of the restored copy, in the report (each table matched)
    assert re.search(r"attendance: 3030 rows, match; [│ ]*employees: 303 rows, match", words), screen[-4000:]
    mongo = sorted((repository / "mongodb" / "demo" / "backups").iterdir())
    incremental = json.loads((mongo[1] / "manifest.json").read_text())
    said = f"incremental backup {mongo[1].name}: "
    assert incremental["kind"] == "incremental", incremental
    assert said + f"incremental, parent {mongo[0].name}" in words, screen[-4000:]


def test_the_temporary_api_starts_without_the_telemetry_service_and_with_time_to_migrate(monkeypatch):
    """The cause, deterministically (the race above is timing-dependent): the server process
    Prefect starts for a command gets PREFECT_SERVER_ANALYTICS_ENABLED=false, and may take
    EPHEMERAL_STARTUP_S to start (Prefect's 20 s were too short for a new database's migrations
    on a busy host), unless the user chose otherwise or points at a real server."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        get_current_settings,
        temporary_settings,
    )

    from vaultflow.demo import EPHEMERAL_STARTUP_S, ephemeral_api_settings

    chosen = ("PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
    for name in chosen:
        monkeypatch.delenv(name, raising=False)
    defaults = {PREFECT_API_URL, PREFECT_SERVER_ANALYTICS_ENABLED, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS}
    with temporary_settings(restore_defaults=defaults):
        assert PREFECT_SERVER_ANALYTICS_ENABLED.value() is True  # Prefect's default: the service runs
        assert PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value() < EPHEMERAL_STARTUP_S
        with ephemeral_api_settings():
            # What SubprocessASGIServer passes to the `prefect server start` it spawns.
            env = get_current_settings().to_environment_variables(exclude_unset=True)
            assert env.get("PREFECT_SERVER_ANALYTICS_ENABLED") == "False", env
            assert PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value() == EPHEMERAL_STARTUP_S
        assert PREFECT_SERVER_ANALYTICS_ENABLED.value() is True
        monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")  # the user's choices win
        monkeypatch.setenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "7")
        with ephemeral_api_settings():
            assert PREFECT_SERVER_ANALYTICS_ENABLED.value() is True
            assert PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value() != EPHEMERAL_STARTUP_S
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:1/api"}):  # a real server: untouched
        monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS")
        before = PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
        with ephemeral_api_settings():
            assert PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value() == before


def test_a_temporary_api_that_does_not_start_is_one_line_saying_what_to_do(tmp_path: Path):
    """No PREFECT_API_URL and a temporary API that cannot answer in time (here: 1 s, far less
    than a new database's migrations): `vaultflow list` says so in one line and exits 1, instead
    of Prefect's "RuntimeError: Timed out while attempting to connect to ephemeral Prefect API
    server" (a new user's first command on a busy host, seen)."""
    result = as_a_new_user(
        tmp_path,
        [sys.executable, "-c", "from vaultflow.entry import main; main()", "list", "-r", "nosuch"],
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output and "RuntimeError" not in output, output
    assert "Prefect's temporary API (started because PREFECT_API_URL is not set) did not answer within 1 s" in output
    assert "`prefect server start`" in output and "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" in output


def test_demo_setup_refuses_a_temporary_api(tmp_path: Path):
    """Blocks saved into Prefect's temporary API would vanish with the process: the demo setup
    (the servers and blocks prefect.yaml's deployments use) asks for a real server first."""
    result = as_a_new_user(
        tmp_path, [sys.executable, "-m", "vaultflow.demo_setup", "--workdir", str(tmp_path / "demo")]
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "start a Prefect server (`prefect server start`) and set PREFECT_API_URL" in result.stderr, result.stderr
    assert not (tmp_path / "demo").exists()  # nothing started, nothing written
