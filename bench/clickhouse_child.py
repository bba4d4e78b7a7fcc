"""`python -m bench.clickhouse_child`: the ClickHouse bench's work that needs a process of its own.

chDB runs inside the process that uses it, one data path per process, and keeps it until the
process ends: loading the data and the memory measurement each run in a child, before the bench
process opens the same data path itself.

    load  --root DIR --tpch DIR   TPC-H lineitem and orders (Parquet from tpchgen-cli) into MergeTree
                                  tables of database `tpch`, then OPTIMIZE ... FINAL, so that the
                                  parts do not change under the timed runs (background merges)
    rss   --root DIR --repo DIR   what a worker with interface="chdb" does: ClickHouseEngine.full_backup
                                  into a LocalStore repository, then engine.restore of it (compared,
                                  then dropped); the parent (bench.subproc.sample_child_rss) samples
                                  RSS from outside, this process reports the kernel's high-water mark
                                  (VmHWM) overall and per phase (reset between phases through
                                  /proc/self/clear_refs), and RSS split into file-backed (chDB's
                                  550 MB library, mapped) and anonymous memory: sampled every 20 ms
                                  by a thread, the peak of each per phase
    files --backup DIR --repo DIR vaultflow's file work alone, without chDB in the process (what a
                                  worker that reaches a server over HTTP holds): the native backup in
                                  DIR ingested into a repository (staging.ingest) and written back
                                  (staging.materialise), VmHWM of each

One JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

DATABASE = "tpch"
TABLES = {
    "lineitem": "ORDER BY (l_orderkey, l_linenumber)",
    "orders": "ORDER BY o_orderkey",
}
MiB = 1 << 20


def status() -> dict[str, int]:
    """This process's memory figures from /proc/self/status, bytes: VmRSS, VmHWM, RssAnon, RssFile."""
    found = {}
    with open("/proc/self/status") as lines:
        for line in lines:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                found[key] = int(value.split()[0]) * 1024
    return found


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: '5' > /proc/self/clear_refs); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class AnonPeak:
    """A thread sampling RssAnon and RssFile every `interval` s: their peaks since the last reset."""

    def __init__(self, interval: float = 0.02):
        self.anon = self.file = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            now = status()
            self.anon, self.file = max(self.anon, now["RssAnon"]), max(self.file, now["RssFile"])

    def reset(self) -> None:
        now = status()
        self.anon, self.file = now["RssAnon"], now["RssFile"]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def parts(client) -> list[dict]:
    """The active parts of the bench tables: table, name, rows, bytes on disk, codec."""
    return [
        {"table": t, "part": p, "rows": r, "bytes": b, "codec": c}
        for t, p, r, b, c in client.query(
            "SELECT table, name, rows, bytes_on_disk, default_compression_codec FROM system.parts "
            f"WHERE active AND database = '{DATABASE}' ORDER BY table, name"
        ).result_rows
    ]


def load(root: Path, tpch: Path) -> dict:
    from vaultflow.testing.chdb_instance import chdb_instance

    client = chdb_instance(root).client()
    t0 = time.monotonic()
    client.command(f"CREATE DATABASE {DATABASE}")
    for table, order in TABLES.items():
        source = f"file('{tpch / table}.parquet', Parquet)"
        client.command(f"CREATE TABLE {DATABASE}.{table} ENGINE = MergeTree {order} AS SELECT * FROM {source}")
    load_s = time.monotonic() - t0
    t0 = time.monotonic()
    for table in TABLES:
        client.command(f"OPTIMIZE TABLE {DATABASE}.{table} FINAL")
    optimize_s = time.monotonic() - t0
    rows = dict(client.query(f"SELECT name, total_rows FROM system.tables WHERE database = '{DATABASE}'").result_rows)
    found = parts(client)
    client.close()
    return {"load_seconds": round(load_s, 2), "optimize_seconds": round(optimize_s, 2), "rows": rows, "parts": found}


def _phase(name: str, fn, phases: dict, sampler: AnonPeak, client=None) -> object:
    """Run fn with VmHWM (and the sampler's peaks) reset before it; record its wall seconds, peak
    RSS, peak anonymous and file-backed RSS, and chDB's own tracked memory at its end
    (system.metrics MemoryTracking, through `client`, else through what fn returned; None
    without chDB)."""
    reset = reset_peak()
    sampler.reset()
    t0 = time.monotonic()
    result = fn()
    seconds = time.monotonic() - t0
    now = status()
    tracked = None
    if client is not None or hasattr(result, "query"):
        query = "SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'"
        tracked = round(int((client or result).query(query).result_rows[0][0]) / MiB, 1)
    phases[name] = {
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(now["VmHWM"] / MiB, 1) if reset else None,
        "peak_rss_anon_mb": round(max(sampler.anon, now["RssAnon"]) / MiB, 1),
        "peak_rss_file_mb": round(max(sampler.file, now["RssFile"]) / MiB, 1),
        "rss_end_mb": round(now["VmRSS"] / MiB, 1),
        "chdb_memory_tracking_mb": tracked,
    }
    return result


def _peak(phases: dict) -> int:
    """The process's peak RSS, bytes: every phase started from a reset high-water mark, so the
    highest phase peak is the process's (else the kernel's own VmHWM)."""
    if all(p["peak_rss_mb"] is not None for p in phases.values()):
        return int(max(p["peak_rss_mb"] for p in phases.values()) * MiB)
    return status()["VmHWM"]


def rss(root: Path, repo: Path) -> dict:
    """Full backup and restore as a worker does them; memory per phase (see the module docstring)."""
    import psutil

    from vaultflow.engines.base import BackupContext
    from vaultflow.engines.clickhouse.client import open_client
    from vaultflow.engines.clickhouse.settings import ClickHouseSettings
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore
    from vaultflow.testing.chdb_instance import ChdbInstance

    instance = ChdbInstance(root / "data", root / "backups", root / "unlisted", root / "config.xml")
    rss_ready = psutil.Process().memory_info().rss
    settings = ClickHouseSettings(**instance.target_fields(), databases=[DATABASE], target_name="bench-clickhouse-rss")
    engine = settings.engine()
    ctx = BackupContext(repository=Repository(LocalStore(repo)), log=lambda line: None)
    phases: dict = {}
    sampler = AnonPeak()
    # The first client starts chDB in this process (its library, tables, caches); the engine's own
    # clients share it.
    client = _phase("chdb_start", lambda: open_client(settings), phases, sampler)
    try:
        manifest = _phase("full_backup", lambda: engine.full_backup(ctx), phases, sampler, client)
        result = _phase("restore", lambda: engine.restore(ctx, manifest), phases, sampler, client)
        client.command(f"DROP DATABASE `{result.restored[DATABASE]}` SYNC")
    finally:
        client.close()
        sampler.stop()
    return {
        "seconds": phases["full_backup"]["seconds"],
        "stored_size": manifest.stored_size,
        "raw_size": manifest.raw_size,
        "rss_after_imports": rss_ready,
        "vm_hwm": _peak(phases),
        "restore_seconds": phases["restore"]["seconds"],
        "restore_ok": result.comparison.ok,
        "phases": phases,
        "timings": {k: round(v, 3) for k, v in manifest.timings.items()},
    }


def files(backup: Path, repo: Path) -> dict:
    """staging.ingest of the native backup in `backup`, then staging.materialise of what it stored,
    in a process without chDB; memory per phase."""
    import psutil

    from vaultflow.engines.base import BackupContext
    from vaultflow.engines.clickhouse.staging import ingest as ingest_files
    from vaultflow.engines.clickhouse.staging import materialise
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore

    rss_ready = psutil.Process().memory_info().rss
    repository = Repository(LocalStore(repo))
    ctx = BackupContext(repository=repository, log=lambda line: None)
    phases: dict = {}
    sampler = AnonPeak()
    backup_id = "20260101T000000Z-F"
    prefix = repository.backup_prefix("clickhouse", "bench-files", backup_id)
    listing, objects = _phase("ingest", lambda: ingest_files(ctx, prefix, DATABASE, backup), phases, sampler)
    # materialise reads a manifest's id, engine, target and objects only: no backup is committed here
    manifest = SimpleNamespace(id=backup_id, engine="clickhouse", target="bench-files", objects=objects)
    back = repo.parent / "written-back"
    _phase("materialise", lambda: materialise(ctx, manifest, DATABASE, back), phases, sampler)
    sampler.stop()
    return {
        "seconds": phases["ingest"]["seconds"],
        "stored_size": sum(o.stored_size for o in objects),
        "raw_size": sum(o.raw_size for o in objects),
        "rss_after_imports": rss_ready,
        "vm_hwm": _peak(phases),
        "phases": phases,
        "timings": {},
        "chdb_loaded": "chdb" in sys.modules,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("load", "rss", "files"))
    parser.add_argument("--root", type=Path, help="load, rss: the chDB instance's directory (chdb_instance)")
    parser.add_argument("--tpch", type=Path, help="load: the directory tpchgen-cli wrote lineitem/orders into")
    parser.add_argument("--repo", type=Path, help="rss, files: the repository directory")
    parser.add_argument("--backup", type=Path, help="files: a native backup's directory")
    args = parser.parse_args()
    if args.mode == "load":
        result = load(args.root, args.tpch)
    elif args.mode == "rss":
        result = rss(args.root, args.repo)
    else:
        result = files(args.backup, args.repo)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
