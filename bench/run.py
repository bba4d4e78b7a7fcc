"""`make bench`: vaultflow vs pg_dump on an embedded PostgreSQL 18, and vs stock Redis tools, one command.

    .venv/bin/python -m bench.run [--size-mb 600] [--small-mb 150] [--repeat 2] [--out bench/results]
    .venv/bin/python -m bench.run --only redis      # one part (logical, physical, redis, mongo; comma separated)
    .venv/bin/python -m bench.run --mongo-only      # = --only mongo
    .venv/bin/python -m bench.run --clickhouse-only # = --only clickhouse

A partial run (--only, --physical-only, --mongo-only, --clickhouse-only) writes to /tmp/vaultflow-bench
unless --out is given, so it never replaces bench/results/latest.json; a run of one part other than
logical names its files after the part (clickhouse-latest.json, clickhouse-latest.png). The Redis
part is bench/redis.py, the MongoDB part bench/mongo.py, the ClickHouse part bench/clickhouse.py.

Starts a throwaway PostgreSQL 18 (free port, temp dir) and SeaweedFS (S3 on loopback),
generates the databases, times every contender, writes bench-<UTC>.json, latest.json and
latest.png under --out, and prints a summary. Servers and temp dirs go away even on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bench import datagen
from bench import measure as m
from bench.report import compute_ratios, summary
from bench.subproc import run_flow_child, sample_backup_rss

MiB = 1 << 20
# Bench server: the project's test defaults plus a WAL-skipping bulk load and no autovacuum
# (it would otherwise wake up in the middle of a timed run after the restores).
PG_SETTINGS = {
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "8GB",
    "autovacuum": "off",
    "shared_buffers": "128MB",
}
T0 = time.monotonic()
ALL_PARTS = ("logical", "physical", "redis", "mongo", "clickhouse")


def log(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {message}", flush=True)


def timed(name: str, fn, results: dict, key: str | None = None, keep: dict | None = None) -> m.Run:
    run = m.measure(fn)
    manifest = run.extra.pop("manifest", None)
    if keep is not None and manifest is not None:
        keep[key or name] = manifest
    results.setdefault(key or name, []).append(run)
    size = f", {run.size / 1e6:.1f} MB" if run.size is not None else ""
    log(
        f"  {name}: {run.seconds:.2f} s{size} (cpu-s: machine {run.cpu_busy_s:.1f}, bench {run.cpu_self_s:.1f}, "
        f"children {run.cpu_children_s:.1f}, servers {run.cpu_servers_s:.1f}, others {run.cpu_others_s:.1f})"
    )
    return run


def clear_store(store) -> None:
    for info in list(store.list("")):
        store.delete(info.key)


def _flow_figures(doc: dict, flow: dict) -> None:
    flow["big_flow_seconds_min"] = min(flow["big_flow_seconds"])
    flow["tiny_warm_seconds_min"] = min(flow["tiny_warm_seconds"])
    flow["tiny_core_seconds_min"] = min(flow["tiny_core_seconds"])
    flow["fixed_cost_big_s"] = round(flow["big_flow_seconds_min"] - doc["backup"]["vaultflow_local"]["seconds"], 3)
    flow["fixed_cost_tiny_s"] = round(flow["tiny_warm_seconds_min"] - flow["tiny_core_seconds_min"], 3)
    log(
        f"  flow big {flow['big_flow_seconds']} s, tiny cold {flow['tiny_cold_seconds']} s, "
        f"warm {flow['tiny_warm_seconds']} s, core tiny {flow['tiny_core_seconds']} s, "
        f"API start {flow['api_start_seconds']} s"
    )


def run_all(pg, s3, work: Path, args) -> dict:
    from vaultflow.engines.postgres.engine import PostgresEngine
    from vaultflow.engines.postgres.settings import PostgresSettings
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore
    from vaultflow.stores.s3 import S3Store

    doc: dict = {"load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}
    m.track_servers(pg=m.postmaster_pid(pg), s3=getattr(getattr(s3, "_process", None), "pid", None))
    log(
        f"PostgreSQL {pg.version} on {pg.host}:{pg.port}; SeaweedFS S3 at {s3.endpoint_url}; "
        f"load average {doc['load_avg_at_start']}"
    )
    log("generating data (pilot, then big, small and tiny databases)")
    per_row = datagen.bytes_per_row(pg)
    big = datagen.generate(pg, "bench_big", args.size_mb, per_row, log=log)
    small = datagen.generate(pg, "bench_small", args.small_mb, per_row, log=log)
    pg.execute("CREATE DATABASE bench_tiny")
    pg.execute(
        "CREATE TABLE employees (id serial PRIMARY KEY, name text, position text, salary numeric); "
        "INSERT INTO employees (name, position, salary) SELECT 'Employee ' || g, "
        "(ARRAY['Engineer','Analyst','Designer'])[1 + g % 3], 40000 + g FROM generate_series(1, 1000) g",
        dbname="bench_tiny",
    )
    for key, gen in (("database", big), ("small_database", small)):
        doc[key] = {
            "name": gen.database,
            "size_bytes": gen.size_bytes,
            "size_mb": round(gen.size_bytes / MiB, 1),
            "rows": gen.rows,
            "generation_seconds": round(gen.seconds, 2),
        }

    def engine_for(db: str) -> PostgresEngine:
        return PostgresEngine(
            PostgresSettings(
                target_name=f"bench-{db}",
                host=pg.host,
                port=pg.port,
                user=pg.user,
                databases=[db],
                bin_dir=str(pg.client_bin_dir),
            )
        )

    engine = engine_for(big.database)
    out = work / "out"
    s3.create_bucket("bench")
    s3_store = S3Store(s3.client(), "bench")
    backups: dict[str, list[m.Run]] = {}
    manifests: dict = {}
    contenders = [
        ("pg_dump_fc", lambda i: m.pg_dump_fc(pg, big.database, m.fresh_dir(out, f"fc{i}") / "db.dump")),
        ("raw_floor", lambda i: m.raw_floor(pg, big.database, m.fresh_dir(out, f"floor{i}") / "db.dump.zst")),
        ("vaultflow_local", lambda i: m.vaultflow_core(engine, Repository(LocalStore(m.fresh_dir(out, f"vf{i}"))))),
        ("vaultflow_s3", lambda i: m.vaultflow_core(engine, Repository(s3_store))),
    ]
    for i in range(args.repeat):
        log(f"backup round {i + 1}/{args.repeat} (warm-up read {m.warm_up(pg, big.database):.2f} s)")
        for name, make in contenders if i % 2 == 0 else contenders[::-1]:  # alternate the order
            timed(name, make(i), backups, keep=manifests)
            if name == "vaultflow_s3":
                clear_store(s3_store)
            elif name != "vaultflow_local" or i < args.repeat - 1:
                shutil.rmtree(
                    out / {"pg_dump_fc": f"fc{i}", "raw_floor": f"floor{i}", "vaultflow_local": f"vf{i}"}[name]
                )
    doc["backup"] = {k: m.summarize(v) for k, v in backups.items()}

    log("diagnostics and restore input")
    diag: dict[str, list[m.Run]] = {}
    restores: dict[str, list[m.Run]] = {}
    m.warm_up(pg, big.database)
    dump_file = m.fresh_dir(out, "raw") / "db.dump"
    timed("dump_uncompressed", m.pg_dump_uncompressed(pg, big.database, dump_file), restores)
    timed("pg_dump_devnull", m.pg_dump_devnull(pg, big.database), diag)
    for level in args.levels.split(","):
        timed(f"zstd {level.strip()}", m.zstd_file(dump_file, level.strip()), diag, key=f"zstd {level.strip()}")
    timed(
        "vaultflow_local_no_fingerprint",
        m.vaultflow_core_without_fingerprints(engine, Repository(LocalStore(m.fresh_dir(out, "nofp")))),
        diag,
    )
    shutil.rmtree(out / "nofp")
    stored = next((out / f"vf{args.repeat - 1}").rglob("*.dump.zst"))
    stores = [
        ("local_put_alone", LocalStore(m.fresh_dir(out, "put"))),
        ("s3_put_alone", s3_store),
        ("s3_put_alone_no_checksum", S3Store(s3.client(), "bench", checksum_algorithm=None)),
    ]
    for name, store in stores:
        timed(name, m.store_put(store, "diag/stored.dump.zst", stored), diag)
        store.delete("diag/stored.dump.zst")
    for _ in range(args.repeat):
        timed("fingerprint", m.fingerprint(engine, big.database), restores)
    doc["diagnostics"] = {k: m.summarize(v) for k, v in diag.items()}

    local_repo = Repository(LocalStore(out / f"vf{args.repeat - 1}"))
    for i in range(args.repeat):
        log(f"restore round {i + 1}/{args.repeat}")
        order = ["pg", "vf"] if i % 2 == 0 else ["vf", "pg"]
        for which in order:
            if which == "pg":
                timed("pg_restore_uncompressed", m.pg_restore_file(pg, dump_file, "restored_pg"), restores)
                timed("fingerprint_fresh_restore", m.fingerprint(engine, "restored_pg"), restores)
                engine.drop_database("restored_pg")
            else:
                run = timed(
                    "vaultflow_restore",
                    m.vaultflow_restore(engine, local_repo, manifests["vaultflow_local"], "restored_vf"),
                    restores,
                )
                if not run.extra.get("all_match"):
                    raise RuntimeError(f"vaultflow restore did not match its fingerprints: {run.extra}")
                engine.drop_database("restored_vf")
    doc["restore"] = {k: m.summarize(v) for k, v in restores.items()}

    log("memory: core backup in a child process, RSS sampled every 50 ms")
    doc["memory"] = {}
    for label, gen in (("small", small), ("big", big)):
        m.warm_up(pg, gen.database)
        run = sample_backup_rss(pg, gen.database, m.fresh_dir(out, f"rss-{label}"))
        run["database_size_mb"] = round(gen.size_bytes / MiB, 1)
        doc["memory"][label] = run
        shutil.rmtree(out / f"rss-{label}")
        log(
            f"  {label}: peak RSS {run['peak_rss_kernel_mb']} MB (sampled {run['peak_rss_sampled_mb']} MB), "
            f"children {run['children_peak_rss_mb']}"
        )

    log("Prefect flow: tiny database (cold, then warm) and big database, ephemeral API")
    m.warm_up(pg, big.database)
    try:
        flow = run_flow_child(
            pg, "bench_tiny", big.database, m.fresh_dir(out, "flow"), work / "prefect-home", args.repeat
        )
    except Exception as exc:  # noqa: BLE001 - keep every other figure: report the flow phase as failed
        log(f"  Prefect flow phase FAILED: {exc}")
        flow = None
    shutil.rmtree(out / "flow", ignore_errors=True)
    doc["flow"] = {"error": "the flow child failed; see the bench output"} if flow is None else flow
    if flow is not None:
        _flow_figures(doc, flow)

    b = doc["backup"]
    doc["sizes"] = {
        "database": big.size_bytes,
        "dump_uncompressed": doc["restore"]["dump_uncompressed"]["size"],
        "pg_dump_fc": b["pg_dump_fc"]["size"],
        "raw_floor": b["raw_floor"]["size"],
        "vaultflow_stored": b["vaultflow_local"]["size"],
        "vaultflow_raw": b["vaultflow_local"]["extra"]["raw_size"],
    }
    doc["machine"] = {
        "cpus": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "postgres": pg.execute("SHOW server_version")[0][0],
        "pg_dump": subprocess.run(
            [str(pg.client_bin_dir / "pg_dump"), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "zstd_cli": subprocess.run(["zstd", "--version"], capture_output=True, text=True, check=False).stdout.strip(),
        "pg_settings": PG_SETTINGS,
    }
    return doc


def without_machine_paths(text: str) -> str:
    """Results are committed: the checkout, the interpreter and the home directory of this
    machine become <project>, <python> and ~."""
    for path, name in (
        (Path(__file__).resolve().parents[1], "<project>"),
        (Path(sys.base_prefix), "<python>"),
        (Path.home(), "~"),
    ):
        text = text.replace(str(path), name)
    return text


def _mongo_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mongo-only", action="store_true", help="only the MongoDB benchmark (bench/mongo.py)")
    parser.add_argument("--mongo-mb", type=float, default=500, help="MongoDB dataset, MB of BSON (default 500)")
    parser.add_argument("--mongo-repeat", type=int, default=2, help="MongoDB backup runs per contender, best kept")
    parser.add_argument(
        "--mongo-slice-seconds", type=int, default=20, help="oplog slice period for the lag phase (default 20)"
    )
    parser.add_argument(
        "--mongo-write-seconds", type=float, default=150, help="write load during the lag phase (default 150 s)"
    )
    parser.add_argument(
        "--mongo-write-rate", type=float, default=1500, help="write load, oplog entries per second (default 1500)"
    )
    parser.add_argument(
        "--mongo-backup-oplog-entries",
        type=int,
        default=1000,
        help="oplog cap after the load, for the backups (SecantusDB scans the whole oplog per query; default 1000)",
    )
    parser.add_argument(
        "--mongo-oplog-entries",
        type=int,
        default=80_000,
        help="oplog cap during the write load: above the entries written in a lag's worth of time, low "
        "enough that SecantusDB's whole-oplog scan per ship stays short (default 80000)",
    )


def _clickhouse_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--clickhouse-only", action="store_true", help="only the ClickHouse benchmark (bench/clickhouse.py)"
    )
    parser.add_argument(
        "--clickhouse-scale", default="1", help="TPC-H scale factor of lineitem and orders (default 1; 0.1 to try)"
    )
    parser.add_argument(
        "--clickhouse-repeat", type=int, default=3, help="ClickHouse runs per contender, best kept (default 3)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=600, help="big database size, MiB (default 600)")
    parser.add_argument("--small-mb", type=float, default=150, help="small database for the RSS check (default 150)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per contender; the best is kept (default 2)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results directory (default bench/results; /tmp/vaultflow-bench for a partial run)",
    )
    parser.add_argument(
        "--levels",
        default="-1,-3,-3 --long=27,-6",
        help="zstd CLI options to try on the -Z0 dump (size/time diagnostic), comma separated",
    )
    parser.add_argument("--tmp", type=Path, default=None, help="where the temp dir goes (default: system temp)")
    parser.add_argument("--physical-only", action="store_true", help="only the physical benchmark (bench/physical.py)")
    parser.add_argument("--physical-mb", type=float, default=500, help="physical bench database, MiB (default 500)")
    parser.add_argument("--pgbench-seconds", type=int, default=60, help="pgbench run for the WAL phase (default 60)")
    parser.add_argument("--pgbench-scale", type=int, default=20, help="pgbench -i -s (default 20)")
    parser.add_argument(
        "--manifest-checksums",
        default="CRC32C",
        help="physical fulls to time, one per backup_manifest checksum algorithm, comma separated "
        "(e.g. CRC32C,SHA256); the first is the one held to the target (default CRC32C)",
    )
    parser.add_argument("--quick", action="store_true", help="pgbench for 15 s instead of --pgbench-seconds")
    parser.add_argument(
        "--only",
        default=None,
        help="run only these parts: logical, physical, redis, mongo, clickhouse (comma separated); "
        "results go to /tmp/vaultflow-bench unless --out is given",
    )
    parser.add_argument(
        "--redis-scale",
        type=float,
        default=1.0,
        help="Redis dataset scale: 1.0 = ~1M keys, ~600 MB of values (default 1.0)",
    )
    parser.add_argument(
        "--redis-small-scale",
        type=float,
        default=0.25,
        help="Redis dataset for the flat-memory check (default 0.25: big enough to fill the "
        "backup's bounded buffers, so a growth with size would show)",
    )
    parser.add_argument("--redis-repeat", type=int, default=3, help="Redis runs per contender; median kept (default 3)")
    parser.add_argument("--redis-skip-aof", action="store_true", help="skip the Redis AOF incremental phase")
    _mongo_options(parser)
    _clickhouse_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.pgbench_seconds = min(args.pgbench_seconds, 15)
    parts = set(ALL_PARTS)
    if args.physical_only:
        args.only = "physical"
    if args.mongo_only:
        args.only = "mongo"
    if args.clickhouse_only:
        args.only = "clickhouse"
    if args.only:
        wanted = {p.strip() for p in args.only.split(",") if p.strip()}
        if not wanted or wanted - parts:
            parser.error(f"--only takes {', '.join(sorted(parts))} (comma separated), not {args.only!r}")
        parts = wanted
    if args.out is None:
        args.out = Path("/tmp/vaultflow-bench") if parts != set(ALL_PARTS) else Path("bench/results")

    from vaultflow.testing.postgres_server import embedded_bin_dir, running_postgres
    from vaultflow.testing.s3_server import running_seaweedfs

    started = datetime.now(UTC)
    args.out.mkdir(parents=True, exist_ok=True)
    doc: dict = {"machine": {"cpus": psutil.cpu_count()}}
    if "logical" in parts:
        work = Path(tempfile.mkdtemp(prefix="vaultflow-bench-", dir=args.tmp))
        try:
            with (
                running_postgres(embedded_bin_dir(), work / "pg", settings=PG_SETTINGS, name="bench") as pg,
                running_seaweedfs(work / "s3") as s3,
            ):
                doc = run_all(pg, s3, work, args)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if "physical" in parts:
        from bench.physical import run_physical

        t_phys = time.monotonic()
        doc["physical"] = run_physical(args, log)
        doc["physical"]["seconds"] = round(time.monotonic() - t_phys, 1)
    if "redis" in parts:
        from bench.redis import run_redis

        doc["redis"] = run_redis(args, log)
    if "mongo" in parts:
        from bench.mongo import run_mongo

        doc["mongo"] = run_mongo(args, log)
    if "clickhouse" in parts:
        from bench.clickhouse import run_clickhouse

        doc["clickhouse"] = run_clickhouse(args, log)
    doc = {
        "schema": 1,
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "args": {
            "size_mb": args.size_mb,
            "small_mb": args.small_mb,
            "repeat": args.repeat,
            "levels": args.levels,
            "physical_only": args.physical_only,
            "physical_mb": args.physical_mb,
            "pgbench_seconds": args.pgbench_seconds,
            "pgbench_scale": args.pgbench_scale,
            "manifest_checksums": args.manifest_checksums,
            "parts": sorted(parts),
            "redis_scale": args.redis_scale,
            "redis_small_scale": args.redis_small_scale,
            "redis_repeat": args.redis_repeat,
            **{k: v for k, v in vars(args).items() if k.startswith(("mongo_", "clickhouse_"))},
        },
        **doc,
    }
    doc["ratios"] = compute_ratios(doc) if "backup" in doc else {}
    doc["all_pass"] = all(
        r["pass"]
        for r in [
            *doc["ratios"].values(),
            *doc.get("physical", {}).get("targets", {}).values(),
            *doc.get("redis", {}).get("targets", {}).values(),
            *doc.get("mongo", {}).get("targets", {}).values(),
            *doc.get("clickhouse", {}).get("targets", {}).values(),
        ]
    )
    doc["total_seconds"] = round(time.monotonic() - T0, 1)
    path = args.out / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    doc["json_path"] = str(path)
    text = without_machine_paths(json.dumps(doc, indent=1, default=str)) + "\n"
    path.write_text(text)
    latest = f"{next(iter(parts))}-latest" if len(parts) == 1 and parts != {"logical"} else "latest"
    (args.out / f"{latest}.json").write_text(text)
    from bench.chart import render

    render(doc, args.out / f"{latest}.png")
    print(summary(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
