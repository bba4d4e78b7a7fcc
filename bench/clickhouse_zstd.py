"""Is zstd worth its CPU on top of ClickHouse's compressed parts? The measurement behind the decision
in docs/clickhouse.md.

    .venv/bin/python -m bench.clickhouse_zstd [--scale 0.1] [--levels 1,3]

Generates TPC-H `lineitem` and `orders` (tpchgen-cli, Parquet) in a temp dir, loads them into
MergeTree tables of a throwaway chDB instance (this process), takes a native BACKUP and RESTORE, a
vaultflow full backup and restore (local repository, the repository's default zstd level 3), and
compresses every file of the native backup with zstd at each level (as vaultflow's pipeline does: multi-threaded, one frame
per file). Prints one JSON document: bytes of the backup, bytes after zstd, CPU and wall seconds
per level, and the same for the uncompressed source (what zstd does to data that was not already
compressed, for scale).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zstandard

from vaultflow.engines.base import BackupContext
from vaultflow.engines.clickhouse.settings import ClickHouseSettings
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
from vaultflow.testing.chdb_instance import chdb_instance

SCHEMAS = {
    "lineitem": "ORDER BY (l_orderkey, l_linenumber)",
    "orders": "ORDER BY o_orderkey",
}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(files: list[Path], level: int) -> dict:
    compressor = zstandard.ZstdCompressor(level=level, threads=-1, write_checksum=True)
    raw = stored = 0
    wall, cpu = time.monotonic(), cpu_seconds()
    for path in files:
        data = path.read_bytes()
        raw += len(data)
        stored += len(compressor.compress(data))
    return {
        "level": level,
        "raw_bytes": raw,
        "stored_bytes": stored,
        "ratio": round(stored / raw, 4) if raw else None,
        "wall_s": round(time.monotonic() - wall, 3),
        "cpu_s": round(cpu_seconds() - cpu, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="0.1", help="TPC-H scale factor (default 0.1)")
    parser.add_argument("--levels", default="1,3", help="zstd levels, comma separated")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="vfbench-ch-"))
    try:
        tpch = work / "tpch"
        tool = Path(sys.executable).with_name("tpchgen-cli")
        subprocess.run(
            [str(tool), "parquet", "-s", args.scale, "--tables=lineitem,orders", f"--output-dir={tpch}"],
            check=True,
            capture_output=True,
        )
        instance = chdb_instance(work / "chdb")
        client = instance.client()
        client.command("CREATE DATABASE tpch")
        for table, order in SCHEMAS.items():
            source = f"file('{tpch / table}.parquet', Parquet)"
            client.command(f"CREATE TABLE tpch.{table} ENGINE = MergeTree {order} AS SELECT * FROM {source}")
        t0 = time.monotonic()
        client.command("BACKUP DATABASE tpch TO Disk('backups', 'zstd-bench')")
        backup_s = time.monotonic() - t0
        files = [Path(root, n) for root, _, names in os.walk(instance.backup_dir / "zstd-bench") for n in names]
        parquet = [tpch / f"{t}.parquet" for t in SCHEMAS]
        plain = work / "plain.tsv"
        client.command(f"INSERT INTO FUNCTION file('{plain}', TabSeparated) SELECT * FROM tpch.lineitem")
        t0 = time.monotonic()
        client.command("RESTORE DATABASE tpch AS tpch_native FROM Disk('backups', 'zstd-bench')")
        native_restore_s = time.monotonic() - t0
        client.command("DROP DATABASE tpch_native SYNC")
        engine = ClickHouseSettings(**instance.target_fields(), databases=["tpch"], target_name="bench").engine()
        context = BackupContext(repository=Repository(LocalStore(work / "repo")), log=lambda line: None)
        t0, cpu = time.monotonic(), cpu_seconds()
        manifest = engine.full_backup(context)
        vaultflow_backup = {"wall_s": round(time.monotonic() - t0, 3), "cpu_s": round(cpu_seconds() - cpu, 3)}
        t0 = time.monotonic()
        restored = engine.restore(context, manifest)
        vaultflow_restore_s = time.monotonic() - t0
        client.command(f"DROP DATABASE {restored.restored['tpch']} SYNC")
        client.close()
        levels = [int(level) for level in args.levels.split(",")]
        report = {
            "scale": args.scale,
            "backup_seconds": round(backup_s, 3),
            "backup_files": len(files),
            "native_restore_seconds": round(native_restore_s, 3),
            "vaultflow_full_backup": {
                **vaultflow_backup,
                "raw_bytes": manifest.raw_size,
                "stored_bytes": manifest.stored_size,
                "timings": manifest.timings,
            },
            "vaultflow_restore_seconds": round(vaultflow_restore_s, 3),
            "native_backup": [measure(files, level) for level in levels],
            "parquet_source": [measure(parquet, level) for level in levels],
            "lineitem_as_text": [measure([plain], level) for level in levels],
        }
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
