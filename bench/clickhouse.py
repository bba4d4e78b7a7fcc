"""ClickHouse benchmark: native BACKUP/RESTORE, a stock-tools floor and vaultflow, in one run on the
embedded engine (chDB through clickhouse-connect's interface="chdb"; no ClickHouse server can be
installed here, docs/clickhouse.md).

  data      TPC-H lineitem and orders from tpchgen-cli (scale --clickhouse-scale, default 1) in
            MergeTree tables, loaded and OPTIMIZE'd FINAL in a child (bench.clickhouse_child load),
            so no background merge changes the parts under the timed runs;
  memory    bench.clickhouse_child rss: a full backup and its restore in a process of its own, RSS
            sampled every 50 ms, peak per phase (chDB runs inside that process: it counts);
  backup    --clickhouse-repeat rounds in alternating order, best kept:
              native   BACKUP DATABASE tpch TO Disk('backups', ...) alone (hard links on one disk);
              floor    the same BACKUP, then `tar -C <dir> -cf - . | zstd -3 -T0 > file`, synced, the
                       backup directory removed: what shipping a native backup off the disk costs
                       with stock tools, checks left out;
              vaultflow ClickHouseEngine.full_backup into a LocalStore repository;
  restore   native RESTORE ... AS from the disk; floor: `zstd -d | tar -x` into the disk, RESTORE, the
            directory removed; vaultflow: engine.restore (checked, RESTORE, compared), phases timed;
  increment ~1% more rows (copies of 1% of the orders and their line items under new keys), then an
            incremental of the last full: stored size against the full's (and native BACKUP with
            base_backup, for scale), and the restore of the chain;
  diagnostics the rows' digest alone, ingest alone, zstd levels over the native backup's files.

Every figure lands in doc["clickhouse"], the targets with pass/fail in doc["clickhouse"]["targets"].
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench import measure as m
from bench.clickhouse_contenders import DATABASE, DISK, Bench
from bench.clickhouse_report import decision, floor_ratios, judge

TARGET = "bench-clickhouse"


def _tpch(scale: str, out: Path) -> float:
    tool = shutil.which("tpchgen-cli") or str(Path(sys.executable).with_name("tpchgen-cli"))
    t0 = time.monotonic()
    subprocess.run(
        [tool, "parquet", "-s", scale, "--tables=lineitem,orders", f"--output-dir={out}"],
        check=True,
        capture_output=True,
    )
    return round(time.monotonic() - t0, 2)


def _child(mode: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "bench.clickhouse_child", mode, *args]


def _run_child(cmd: list[str]) -> dict:
    """Run a bench child to its end; its JSON result line."""
    from bench.subproc import PROJECT_ROOT, _child_env, _last_json_line

    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, env=_child_env(), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:4])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return _last_json_line(proc.stdout, proc.stderr, " ".join(cmd[2:4]))


def _rounds(bench: Bench, out: Path, repeat: int, log) -> tuple[dict, object, Path, Path]:
    """Backups then restores, `repeat` rounds each in alternating order; the summaries, the last
    vaultflow full's manifest and repository, and the last floor archive."""
    backups: dict[str, list[m.Run]] = {}
    manifest = None
    for i in range(repeat):
        log(f"clickhouse backup round {i + 1}/{repeat}")
        contenders = [
            ("native", bench.native_backup(f"native{i}")),
            ("floor", bench.floor_backup(f"floor{i}", m.fresh_dir(out, f"floor{i}") / "backup.tar.zst")),
            ("vaultflow", bench.vaultflow_full(m.fresh_dir(out, f"vf{i}"))),
        ]
        for name, run in contenders if i % 2 == 0 else contenders[::-1]:
            result = m.measure(run)
            manifest = result.extra.pop("manifest", manifest)
            backups.setdefault(name, []).append(result)
            _log_run(log, name, result)
        if i < repeat - 1:
            shutil.rmtree(bench.instance.backup_dir / f"native{i}")
            shutil.rmtree(out / f"floor{i}")
            shutil.rmtree(out / f"vf{i}")
    last = repeat - 1
    restores: dict[str, list[m.Run]] = {}
    for i in range(repeat):
        log(f"clickhouse restore round {i + 1}/{repeat}")
        contenders = [
            ("native", bench.native_restore(f"native{last}", "tpch_native")),
            ("floor", bench.floor_restore(out / f"floor{last}" / "backup.tar.zst", "floor-restore", "tpch_floor")),
            ("vaultflow", bench.vaultflow_restore(out / f"vf{last}", manifest)),
        ]
        for name, run in contenders if i % 2 == 0 else contenders[::-1]:
            result = m.measure(run)
            restores.setdefault(name, []).append(result)
            _log_run(log, name, result)
            bench.drop(result.extra.get("restored") or f"tpch_{name}")
    doc = {
        "backup": {k: m.summarize(v) for k, v in backups.items()},
        "restore": {k: m.summarize(v) for k, v in restores.items()},
    }
    return doc, manifest, out / f"vf{last}", bench.instance.backup_dir / f"native{last}"


def _log_run(log, name: str, run: m.Run) -> None:
    size = f", {run.size / 1e6:.1f} MB" if run.size else ""
    log(
        f"  clickhouse {name}: {run.seconds:.2f} s{size} {run.extra.get('timings') or run.extra.get('phases') or ''} "
        f"(cpu-s: bench+chDB {run.cpu_self_s:.1f}, children {run.cpu_children_s:.1f}, others {run.cpu_others_s:.1f}; "
        f"load {run.load_avg_1m:.2f})"
    )


def _incremental(bench: Bench, repo: Path, full, native_full: Path, log) -> dict:
    """~1% more rows, then a vaultflow incremental of the last full (and a native one, for scale)."""
    from vaultflow.engines.base import BackupContext
    from vaultflow.errors import TransientError
    from vaultflow.manifest import BackupKind
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore

    offset = int(bench.client.query(f"SELECT max(o_orderkey) FROM {DATABASE}.orders").result_rows[0][0])
    before = dict(
        bench.client.query(f"SELECT name, total_rows FROM system.tables WHERE database = '{DATABASE}'").result_rows
    )
    for table, key in (("orders", "o_orderkey"), ("lineitem", "l_orderkey")):
        bench.sql(
            f"INSERT INTO {DATABASE}.{table} SELECT * REPLACE ({key} + {offset} AS {key}) "
            f"FROM {DATABASE}.{table} WHERE {key} % 100 = 1"
        )
    after = dict(
        bench.client.query(f"SELECT name, total_rows FROM system.tables WHERE database = '{DATABASE}'").result_rows
    )
    added = {t: after[t] - before[t] for t in before}
    from bench.clickhouse_child import parts

    ctx = BackupContext(repository=Repository(LocalStore(repo)), log=lambda line: None)
    attempts = 0
    while True:  # what a flow's retries do: a merge during BACKUP is a retryable change
        attempts += 1
        try:
            run = m.measure(lambda: (None, {"manifest": bench.engine.incremental_backup(ctx, BackupKind.INCREMENTAL)}))
            break
        except TransientError as exc:
            log(f"  clickhouse incremental attempt {attempts}: {exc}")
            if attempts == 3:
                raise
    manifest = run.extra.pop("manifest")
    t0 = time.monotonic()
    bench.sql(
        f"BACKUP DATABASE {DATABASE} TO Disk('{DISK}', 'native-incremental') SETTINGS base_backup = "
        f"Disk('{DISK}', '{native_full.name}')"
    )
    native_s = time.monotonic() - t0
    native_size = m.dir_size(bench.instance.backup_dir / "native-incremental")
    restore = m.measure(bench.vaultflow_restore(repo, manifest))
    bench.drop(restore.extra["restored"])
    doc = {
        "rows_added": added,
        "rows_added_pct": {t: round(100 * added[t] / before[t], 3) for t in before},
        "parts": parts(bench.client),
        "attempts": attempts,
        "seconds": round(run.seconds, 3),
        "stored_size": manifest.stored_size,
        "raw_size": manifest.raw_size,
        "files": len(manifest.objects),
        "full_stored_size": full.stored_size,
        "timings": {k: round(v, 3) for k, v in manifest.timings.items()},
        "native_incremental_seconds": round(native_s, 3),
        "native_incremental_size": native_size,
        "native_full_size": m.dir_size(native_full),
        "restore_chain_seconds": round(restore.seconds, 3),
        "restore_chain_phases": restore.extra["phases"],
    }
    log(
        f"  clickhouse incremental: +{added} rows, {run.seconds:.2f} s, {manifest.stored_size / 1e6:.2f} MB stored "
        f"({100 * manifest.stored_size / full.stored_size:.2f}% of the full's {full.stored_size / 1e6:.1f} MB); "
        f"native {native_size / 1e6:.2f} MB of {doc['native_full_size'] / 1e6:.1f} MB; chain restore "
        f"{restore.seconds:.2f} s"
    )
    return doc


def _diagnostics(bench: Bench, native_dir: Path, out: Path, levels: list[int]) -> dict:
    """One run each: the rows' digest alone, table_states alone, ingest of the native backup alone,
    and zstd at each level over its files (bench.clickhouse_zstd.measure)."""
    from bench.clickhouse_zstd import measure as zstd_measure
    from vaultflow.engines.base import BackupContext
    from vaultflow.engines.clickhouse.fingerprint import fingerprint_database, table_states
    from vaultflow.engines.clickhouse.staging import ingest
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore

    config = bench.engine.config
    digest = m.measure(lambda: (None, {"tables": len(fingerprint_database(bench.client, config, DATABASE))}))
    states = m.measure(lambda: (None, {"tables": len(table_states(bench.client, config, DATABASE))}))
    ctx = BackupContext(repository=Repository(LocalStore(m.fresh_dir(out, "ingest"))), log=lambda line: None)
    ingested = m.measure(lambda: (sum(o.stored_size for o in ingest(ctx, "diag/", DATABASE, native_dir)[1]), {}))
    files = [Path(root, name) for root, _, names in os.walk(native_dir) for name in names]
    return {
        "digest_alone": m.summarize([digest]),
        "table_states_alone": m.summarize([states]),
        "ingest_alone": m.summarize([ingested]),
        "zstd_levels": [zstd_measure(files, level) for level in levels],
    }


def run_clickhouse(args, log) -> dict:
    """The whole ClickHouse part (see the module docstring); doc["clickhouse"]."""
    from bench.subproc import sample_child_rss
    from vaultflow.engines.clickhouse.settings import ClickHouseSettings
    from vaultflow.testing.chdb_instance import chdb_instance

    t_all = time.monotonic()
    doc: dict = {"load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}
    work = Path(tempfile.mkdtemp(prefix="vaultflow-bench-ch-", dir=args.tmp))
    try:
        log(f"clickhouse: tpchgen-cli lineitem and orders, scale {args.clickhouse_scale}")
        generate_s = _tpch(args.clickhouse_scale, work / "tpch")
        instance = chdb_instance(work / "ch")
        loaded = _run_child(_child("load", "--root", str(work / "ch"), "--tpch", str(work / "tpch")))
        shutil.rmtree(work / "tpch")
        doc["dataset"] = {"scale": args.clickhouse_scale, "generate_seconds": generate_s, **loaded}
        doc["dataset"]["bytes_on_disk"] = sum(p["bytes"] for p in doc["dataset"]["parts"])
        log(
            f"  clickhouse data: {doc['dataset']['rows']} rows, {doc['dataset']['bytes_on_disk'] / 1e6:.0f} MB on disk "
            f"in {len(doc['dataset']['parts'])} parts ({doc['dataset']['load_seconds']} s + OPTIMIZE "
            f"{doc['dataset']['optimize_seconds']} s)"
        )

        log("clickhouse memory: full backup and restore in a worker process of their own, RSS sampled every 50 ms")
        memory = sample_child_rss(_child("rss", "--root", str(work / "ch"), "--repo", str(work / "rss-repo")), "rss")
        memory.update(memory.pop("result"))
        doc["memory"] = memory
        shutil.rmtree(work / "rss-repo", ignore_errors=True)
        log(
            f"  clickhouse worker: peak RSS {memory['peak_rss_kernel_mb']} MB (after imports "
            f"{memory['rss_after_imports_mb']} MB); phases {memory['phases']}"
        )

        engine = ClickHouseSettings(**instance.target_fields(), databases=[DATABASE], target_name=TARGET).engine()
        bench = Bench(instance, engine, work)
        m.track_servers()
        rounds, manifest, vf_repo, native_dir = _rounds(bench, work / "out", args.clickhouse_repeat, log)
        doc.update(rounds)
        doc["diagnostics"] = _diagnostics(bench, native_dir, work / "out", [1, 3])
        log("clickhouse memory without chDB: ingest and write-back of the native backup in a process of their own")
        files = sample_child_rss(
            _child("files", "--backup", str(native_dir), "--repo", str(work / "files" / "repo")), "files"
        )
        files.update(files.pop("result"))
        doc["memory_without_chdb"] = files
        shutil.rmtree(work / "files", ignore_errors=True)
        log(f"  clickhouse files alone: peak RSS {files['peak_rss_kernel_mb']} MB; phases {files['phases']}")
        doc["incremental"] = _incremental(bench, vf_repo, manifest, native_dir, log)
        doc["machine"] = {
            "chdb": _version("chdb-core"),
            "clickhouse": str(bench.client.query("SELECT version()").result_rows[0][0]),
            "clickhouse_connect": _version("clickhouse-connect"),
            "zstd_cli": subprocess.run(["zstd", "--version"], capture_output=True, text=True).stdout.strip(),
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
            "cpus": psutil.cpu_count(),
        }
        bench.client.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    doc["targets"] = judge(doc)
    doc["floor_ratios"] = floor_ratios(doc)
    doc["decision"] = decision(doc)
    doc["seconds"] = round(time.monotonic() - t_all, 1)
    return doc


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None
