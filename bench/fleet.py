"""Fleet benchmark (issue 12, section 5): N small targets on one process worker, all scheduled
for one moment, with the per-target concurrency limits on.

    python -m bench.fleet [--targets 50] [--redis 5] [--limit 10] [--prefect-db sqlite|postgres]
    make bench-fleet

What it starts, and removes at the end: one PostgreSQL 18 (embedded) holding `targets - redis`
small databases (--rows rows each); `--redis` redis-servers whose targets are in local mode (their
backups read the server's dir, so they go to the host's work queue); a `prefect server` with its
own home and database (SQLite, or with `--prefect-db postgres` a database on that PostgreSQL),
its scheduler at Prefect's defaults; one process worker serving the shared queue and the host
queue, running at most `--limit` flow runs at once (0: no limit, the worker's default).

One fleet file, one plan (a full backup, first run at one moment `--lead` seconds after the file
is written), applied with `vaultflow fleet deploy`. Every backup run holds its target's Prefect
global concurrency limit (deployment runs do: flows/_locks.py); the count made is reported.
Measured: the deploy's wall time; from the scheduled moment to the end of the last run (the
makespan); each completed run's lateness (start - scheduled) and duration; the peak RSS of the
worker and of its whole process tree (flow-run processes and their pg_dump, redis-cli); the most
flow-run processes at once; the CPU seconds of the worker and of its flow-run processes (their
pg_dump and zstd included); the machine's load. JSON: <out>/fleet-latest.json, one entry per
(targets, worker limit, Prefect database): a run replaces its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
RUNS_TIMEOUT_S = 3600.0


class TreeSampler(threading.Thread):
    """Every 0.5 s: the worker's RSS, its whole process tree's, and its flow-run processes."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.stop = pid, threading.Event()
        self.peak_worker = self.peak_tree = self.peak_runs = 0

    def run(self) -> None:
        while not self.stop.wait(0.5):
            try:
                worker = psutil.Process(self.pid)
                tree = [worker, *worker.children(recursive=True)]
                runs = worker.children()
            except psutil.Error:
                continue
            rss = 0
            for proc in tree:
                try:
                    rss += proc.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_worker = max(self.peak_worker, worker.memory_info().rss)
            self.peak_tree, self.peak_runs = max(self.peak_tree, rss), max(self.peak_runs, len(runs))


def fleet_text(pg_targets: int, redis_targets: int, at: datetime) -> str:
    lines = [
        "name: bench",
        "repository: backup-repository/bench-repo",
        "timezone: UTC",
        "plans:",
        "  small:",
        f'    full: {{interval: 86400, anchor_date: "{at.isoformat()}"}}',
        "targets:",
    ]
    lines += [f"  postgres-target/bench-pg-{i:03d}: small" for i in range(pg_targets)]
    lines += [f"  redis-target/bench-redis-{i:03d}: small" for i in range(redis_targets)]
    return "\n".join(lines) + "\n"


def save_blocks(api: str, pg, databases: list[str], redis_servers: list, repo: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from vaultflow.blocks import BackupRepository, PostgresTarget, RedisTarget

    with temporary_settings(updates={PREFECT_API_URL: api}):
        for i, database in enumerate(databases):
            PostgresTarget(
                host=pg.host, port=pg.port, user=pg.user, databases=[database], bin_dir=str(pg.client_bin_dir)
            ).save(f"bench-pg-{i:03d}")
        for i, server in enumerate(redis_servers):
            RedisTarget(host=server.host, port=server.port, data_dir=str(server.directory)).save(f"bench-redis-{i:03d}")
        BackupRepository(local_path=str(repo)).save("bench-repo")


def seconds(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def summary(values: list[float]) -> dict:
    ordered = sorted(values)
    return {
        "min": round(ordered[0], 2),
        "median": round(statistics.median(ordered), 2),
        "p95": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 2),
        "max": round(ordered[-1], 2),
    }


def run(args: argparse.Namespace) -> dict:
    from vaultflow.deployments.fleet import worker_argv
    from vaultflow.testing.postgres_server import embedded_bin_dir, running_postgres
    from vaultflow.testing.prefect_stack import BIN, FINAL_STATES, running_stack, wait_healthy
    from vaultflow.testing.redis_instance import running_redis

    pg_targets = args.targets - args.redis
    work = Path(tempfile.mkdtemp(prefix="vf-bench-fleet-", dir=args.tmp))
    result: dict = {"targets": args.targets, "postgres_targets": pg_targets, "redis_targets": args.redis}
    result["prefect_database"] = args.prefect_db
    with ExitStack() as stack:
        settings = {"max_connections": "300"}
        pg = stack.enter_context(
            running_postgres(embedded_bin_dir(), work / "pg", settings=settings, name="bench-fleet")
        )
        # Prefect's defaults, scheduler included (the e2e tests' stack turns it off)
        env = {"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true"}
        if args.prefect_db == "postgres":  # Prefect's own database on the same PostgreSQL server
            pg.execute("CREATE DATABASE prefect")
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"postgresql+asyncpg://{pg.user}@{pg.host}:{pg.port}/prefect"
        prefect = stack.enter_context(running_stack(work, **env))
        redis_servers = [stack.enter_context(running_redis(name=f"bench-fleet-{i}")) for i in range(args.redis)]
        databases = [f"bench_{i:03d}" for i in range(pg_targets)]
        for database in databases:
            pg.execute(f"CREATE DATABASE {database}")
            pg.execute(
                f"CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, {args.rows}) g",
                dbname=database,
            )
        for redis_server in redis_servers:
            redis_server.client().mset({f"k{i}": f"v{i}" for i in range(args.rows)})
        wait_healthy(prefect)
        prefect.prefect("work-pool", "work-pool", "create", "vaultflow", "--type", "process")
        prefect.check("work-pool")
        save_blocks(prefect.api_url, pg, databases, redis_servers, work / "repo")
        queues = ["default", "host-127.0.0.1"]
        worker = prefect.prefect(
            "worker", *worker_argv("vaultflow", queues, args.limit or None), extra_env={"VAULTFLOW_HOME": str(ROOT)}
        )
        sampler = TreeSampler(worker.pid)
        sampler.start()

        at = (datetime.now(UTC) + timedelta(seconds=args.lead)).replace(microsecond=0)
        fleet = work / "fleet.yaml"
        fleet.write_text(fleet_text(pg_targets, args.redis, at))
        started = time.monotonic()
        prefect.spawn("deploy", [str(BIN / "vaultflow"), "fleet", "deploy", str(fleet)], cwd=ROOT)
        output = prefect.check("deploy")
        result["deploy_s"] = round(time.monotonic() - started, 1)
        result["deploy_output_last_line"] = [line for line in output.splitlines() if line.startswith("fleet ")][0]
        if datetime.now(UTC) >= at:
            raise SystemExit(
                f"the deploy took {result['deploy_s']} s, past the scheduled moment: rerun with a larger --lead"
            )
        print(
            f"deployed {args.targets} targets in {result['deploy_s']} s; all scheduled for {at.isoformat()}", flush=True
        )

        query = {
            "deployments": {"tags": {"all_": ["vaultflow-fleet:bench"]}},
            "flow_runs": {"expected_start_time": {"before_": (at + timedelta(hours=1)).isoformat()}},
            "limit": 200,
        }
        deadline = time.monotonic() + RUNS_TIMEOUT_S
        while True:
            runs = prefect.api("POST", "/flow_runs/filter", json=query).json()
            ended = [r for r in runs if r["state_type"] in FINAL_STATES]
            if len(runs) == args.targets and len(ended) == args.targets:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(ended)} of {args.targets} runs ended after {RUNS_TIMEOUT_S:.0f} s; see {work}")
            time.sleep(2)
        sampler.stop.set()
        cpu = psutil.Process(worker.pid).cpu_times()  # the flow-run processes are reaped by now
        limits = prefect.api("POST", "/v2/concurrency_limits/filter", json={"limit": 200}).json()

    shutil.rmtree(work, ignore_errors=True)  # kept when the bench fails: its logs say why
    scheduled = at.timestamp()
    completed = [r for r in runs if r["state_type"] == "COMPLETED"]  # timings of the runs that ran
    starts = [seconds(r["start_time"]) or 0.0 for r in completed] or [scheduled]
    ends = [seconds(r["end_time"]) or 0.0 for r in completed] or [scheduled]
    result.update(
        {
            "worker_limit": args.limit or None,
            "rows_per_target": args.rows,
            "states": {
                s: sum(1 for r in runs if r["state_type"] == s) for s in sorted({r["state_type"] for r in runs})
            },
            "not_completed": [(r["name"], r["state"].get("message")) for r in runs if r["state_type"] != "COMPLETED"],
            "makespan_s": round(max(ends) - scheduled, 1),
            "first_start_after_schedule_s": round(min(starts) - scheduled, 1),
            "lateness_s": summary([s - scheduled for s in starts]),
            "run_s": summary([e - s for s, e in zip(starts, ends, strict=True)]),
            "worker_cpu_s": round(cpu.user + cpu.system, 1),
            "flow_runs_cpu_s": round(cpu.children_user + cpu.children_system, 1),
            "cpu_s_per_completed_run": round((cpu.children_user + cpu.children_system) / max(1, len(completed)), 1),
            "per_target_limits": sum(1 for limit in limits if limit["name"].startswith("vaultflow-")),
            "worker_peak_rss_mb": round(sampler.peak_worker / 2**20),
            "worker_tree_peak_rss_mb": round(sampler.peak_tree / 2**20),
            "flow_run_processes_peak": sampler.peak_runs,
            "load_avg_1m_at_end": round(os.getloadavg()[0], 1),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=50, help="targets in the fleet (default %(default)s)")
    parser.add_argument("--redis", type=int, default=5, help="of them, local-mode Redis targets (default %(default)s)")
    parser.add_argument("--rows", type=int, default=1000, help="rows (PostgreSQL) or keys (Redis) per target")
    parser.add_argument("--limit", type=int, default=10, help="flow runs at once on the worker; 0: no limit")
    parser.add_argument("--lead", type=float, default=120.0, help="seconds from writing the fleet file to the runs")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"), help="where fleet-latest.json goes")
    parser.add_argument(
        "--prefect-db",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the Prefect server's database: SQLite (its default) or PostgreSQL (default %(default)s)",
    )
    parser.add_argument("--tmp", default=None, help="where the scratch directory goes")
    args = parser.parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "fleet-latest.json"  # one entry per (targets, worker limit): a run replaces its own
    kept = json.loads(path.read_text()).get("runs", []) if path.exists() else []
    key = ("worker_limit", "targets", "prefect_database")
    kept = [r for r in kept if [r.get(k) for k in key] != [result[k] for k in key]]
    path.write_text(json.dumps({"runs": [*kept, result]}, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if result["states"] == {"COMPLETED": args.targets} else 1


if __name__ == "__main__":
    sys.exit(main())
