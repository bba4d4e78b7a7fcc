"""Parent side of the child processes: RSS sampling of a core backup, and the flow timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def _last_json_line(stdout: str, stderr: str, what: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{what} printed no result; stderr:\n{stderr[-3000:]}")


def sample_child_rss(cmd: list[str], what: str, interval: float = 0.05, points: int = 60) -> dict:
    """Run a bench child (`cmd`) and sample RSS every `interval` s: the Python process, and
    separately the peak of each kind of child process. The child prints a JSON result line."""
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=PROJECT_ROOT, env=_child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    watched = psutil.Process(proc.pid)
    peak, children, series = 0, {}, []
    while proc.poll() is None:
        try:
            rss = watched.memory_info().rss
            kids = watched.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        peak = max(peak, rss)
        series.append((time.monotonic() - started, rss))
        for kid in kids:
            try:
                name, kid_rss = kid.name(), kid.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            if name.startswith("python"):  # a fork caught before its exec (pg_dump to be): a copy of us
                continue
            children[name] = max(children.get(name, 0), kid_rss)
        time.sleep(interval)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}):\n{stderr[-3000:]}")
    result = _last_json_line(stdout, stderr, what)
    step = max(1, len(series) // points)
    return {
        "samples": len(series),
        "peak_rss_sampled_mb": round(peak / MiB, 1),
        "peak_rss_kernel_mb": round(result["vm_hwm"] / MiB, 1),  # VmHWM: exact high-water mark
        "rss_after_imports_mb": round(result["rss_after_imports"] / MiB, 1),
        "children_peak_rss_mb": {k: round(v / MiB, 1) for k, v in sorted(children.items())},
        "backup_seconds": result["seconds"],
        "raw_size": result["raw_size"],
        "stored_size": result["stored_size"],
        "series_mb": [[round(t, 2), round(r / MiB, 1)] for t, r in series[::step]],
        "result": result,
    }


def sample_backup_rss(pg, database: str, repo: Path, interval: float = 0.05, points: int = 60) -> dict:
    """bench.backup_child (one logical backup) with its memory sampled (sample_child_rss)."""
    cmd = [
        sys.executable,
        "-m",
        "bench.backup_child",
        "--host",
        pg.host,
        "--port",
        str(pg.port),
        "--user",
        pg.user,
        "--database",
        database,
        "--bin-dir",
        str(pg.client_bin_dir),
        "--repo",
        str(repo),
    ]
    sampled = sample_child_rss(cmd, "bench.backup_child", interval, points)
    sampled.pop("result")
    return {"database": database, **sampled}


def run_flow_child(pg, tiny_db: str, big_db: str, repo: Path, prefect_home: Path, repeat: int) -> dict:
    """Time the full-backup flow (ephemeral Prefect API, private PREFECT_HOME)."""
    prefect_home.mkdir(parents=True, exist_ok=True)
    env = _child_env(
        {
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
            "VAULTFLOW_FLOW_RETRIES": "0",  # a failure must fail the bench, not wait 2 x 120 s
        }
    )
    # The brief asked for PREFECT_FLOWS_HEARTBEAT_FREQUENCY="", which Prefect 3.9 rejects at
    # import; flow_child turns heartbeats off through temporary_settings instead.
    for name in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"):
        env.pop(name, None)
    cmd = [
        sys.executable,
        "-m",
        "bench.flow_child",
        "--host",
        pg.host,
        "--port",
        str(pg.port),
        "--user",
        pg.user,
        "--bin-dir",
        str(pg.client_bin_dir),
        "--tiny-db",
        tiny_db,
        "--big-db",
        big_db,
        "--repo",
        str(repo),
        "--repeat",
        str(repeat),
    ]
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.flow_child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = _last_json_line(proc.stdout, proc.stderr, "bench.flow_child")
    result["process_seconds"] = round(time.monotonic() - started, 3)
    return result
