"""MongoDB benchmark: full backup against a raw floor, memory, oplog archive lag under load, restore
and oplog replay, one run on a SecantusDB server (vaultflow.testing.mongo_server).

  data     TPC-H from tpchgen-cli as documents, >= --mongo-mb MB of BSON in two databases of 6 and
           8 collections (bench.datagen_mongo); the oplog limits raised so the load does not roll it;
  oplog    then the oplog is cut to --mongo-backup-oplog-entries (restart with that
           --oplog-max-entries, secantusAdmin.pruneOplog): every SecantusDB query on
           local.oplog.rs scans and decodes the whole oplog (~0.1 ms per entry: 11.6 s at 92k
           entries on a busy machine), where mongod reads the newest entry at once; a backup
           makes four such reads, which would time SecantusDB's oplog, not vaultflow (one query
           is timed in each phase: `oplog.query_seconds_*`);
  backup   floor: pymongo find_raw_batches of every collection -> `zstd -3 -T0 -q -c > file`,
           sync; vs MongoEngine.full_backup into a LocalStore repository; --mongo-repeat rounds in
           alternating order, the best kept;
  memory   the full backup in a child (bench.mongo_child), RSS sampled every 50 ms: one database
           (half the data) and both (all of it);
  oplog    (bench.mongo_oplog) restart with --oplog-max-entries --mongo-oplog-entries, archive
           lag while bench.mongo_writer writes; then the full backup restored into new
           databases (restore time) and the archived entries after its cluster time replayed
           onto it (entries/s).

Every figure lands in doc["mongo"], the targets with pass/fail in doc["mongo"]["targets"].
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
from bench.report import judged, target_lines

MiB = 1 << 20
TARGET = "bench-mongo"
LOAD_OPLOG_ENTRIES = 50_000_000  # no roll while loading
# SecantusDB answers a find by decoding the whole collection first: for a 200 MB collection the
# server is busy long enough that a heartbeat with pymongo's 5-10 s socket timeout goes
# unanswered, the server is marked unknown and the running read is cancelled. Every client of the
# bench (and the engine's MongoSettings.connect_timeout) waits this long instead.
CONNECT_TIMEOUT_S = 120


def patient_client(server):
    """A pymongo client of `server` with CONNECT_TIMEOUT_S."""
    ms = CONNECT_TIMEOUT_S * 1000
    return server.client(connectTimeoutMS=ms, serverSelectionTimeoutMS=ms, socketTimeoutMS=None)


def targets_for(slice_seconds: float) -> dict[str, tuple[float, str]]:
    """name -> (limit, meaning); every target is value <= limit."""
    return {
        "full_backup_vs_floor": (
            1.3,
            "MongoEngine.full_backup (LocalStore) wall / pymongo raw batches | zstd -3 -T0 > file wall (best runs)",
        ),
        "peak_rss_big_mb": (300, "peak RSS (MB, VmHWM) of the Python backup process, both databases"),
        "peak_rss_small_mb": (300, "peak RSS (MB, VmHWM) of the Python backup process, one database"),
        "peak_rss_growth": (1.10, "peak RSS both databases / one database (memory must not grow with size)"),
        "archive_lag_seconds": (
            slice_seconds + 10,
            f"oplog archive lag under the write load (s): first entry's wall time to its slice's record, "
            f"worst slice; limit one slice period ({slice_seconds:g} s) + 10 s",
        ),
    }


def _floor(server, databases: list[str], out: Path):
    """pymongo reads every collection as raw BSON batches into `zstd -3 -T0`, file synced."""

    def run():
        count = 0
        with patient_client(server) as client, open(out, "wb") as sink:
            zstd = subprocess.Popen(["zstd", "-3", "-T0", "-q", "-c"], stdin=subprocess.PIPE, stdout=sink)
            assert zstd.stdin is not None
            try:
                for db in databases:
                    for name in sorted(client[db].list_collection_names()):
                        for batch in client[db][name].find_raw_batches():
                            zstd.stdin.write(batch)
                            count += len(batch)
            finally:
                zstd.stdin.close()
                if zstd.wait() != 0:
                    raise RuntimeError(f"zstd exited with {zstd.returncode}")
        subprocess.run(["sync", str(out)], check=True)
        return out.stat().st_size, {"raw_size": count}

    return run


def _rss(server, databases: list[str], repo: Path) -> dict:
    from bench.subproc import sample_child_rss

    cmd = [sys.executable, "-m", "bench.mongo_child", "--port", str(server.port), "--repo", str(repo)]
    cmd += ["--connect-timeout", str(CONNECT_TIMEOUT_S)]
    for db in databases:
        cmd += ["--database", db]
    sampled = sample_child_rss(cmd, "bench.mongo_child")
    return {**sampled, "timings": sampled.pop("result")["timings"], "databases": databases}


def _resize_oplog(server, entries: int, prune: bool, log) -> dict:
    """Restart `server` with --oplog-max-entries `entries` (what replSetResizeOplog does on mongod)
    and, with `prune`, drop the entries over it now (secantusAdmin.pruneOplog)."""
    args = list(server.args)
    args[args.index("--oplog-max-entries") + 1] = str(entries)
    server.args = tuple(args)
    t0 = time.monotonic()
    server.restart()
    restart_s = time.monotonic() - t0
    pruned, prune_s = None, None
    if prune:
        t0 = time.monotonic()
        with patient_client(server) as client:
            pruned = client.admin.command("secantusAdmin.pruneOplog").get("pruned")
        prune_s = round(time.monotonic() - t0, 2)
    m.track_servers(mongo=server.pid)
    log(f"  mongo oplog cap {entries}: restart {restart_s:.1f} s, pruned {pruned} entries in {prune_s} s")
    return {"max_entries": entries, "restart_seconds": round(restart_s, 2), "pruned": pruned, "prune_seconds": prune_s}


def _guarded(doc: dict, key: str, phase, log) -> dict:
    """doc[key] = phase(); a failure is logged and recorded as {"error": ...} so that every other
    figure of the run is kept (its targets then fail as missing)."""
    try:
        doc[key] = phase()
    except Exception as exc:  # noqa: BLE001 - reported in the results, not raised
        log(f"  mongo {key} phase FAILED: {type(exc).__name__}: {exc}")
        doc[key] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    return doc[key]


def _memory(server, data, databases: list[str], work: Path, log) -> dict:
    """The full backup of one database, then of both, in a child with its RSS sampled."""
    log("mongo memory: the full backup in a child process, RSS sampled every 50 ms")
    memory = {}
    for label, dbs in (("small", databases[:1]), ("big", databases)):
        run = _rss(server, dbs, m.fresh_dir(work, f"rss-{label}"))
        run["bson_mb"] = round(sum(data.database_bytes(db) for db in dbs) / 1e6, 1)
        memory[label] = run
        shutil.rmtree(work / f"rss-{label}", ignore_errors=True)
        log(
            f"  {label} ({run['bson_mb']} MB): peak RSS {run['peak_rss_kernel_mb']} MB (sampled "
            f"{run['peak_rss_sampled_mb']}, after imports {run['rss_after_imports_mb']}), "
            f"backup {run['backup_seconds']} s"
        )
    return memory


def _oplog_query(server) -> float:
    from vaultflow.engines.mongodb.client import newest_oplog_ts

    with patient_client(server) as client:
        t0 = time.monotonic()
        newest_oplog_ts(client)
        return round(time.monotonic() - t0, 2)


def _backups(server, engine, databases: list[str], out: Path, repeat: int, log) -> tuple[dict, object, Path]:
    """Floor and MongoEngine.full_backup, `repeat` rounds in alternating order; the summaries,
    the last full's manifest and its repository directory (kept for the restore)."""
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore

    runs: dict[str, list[m.Run]] = {}
    manifest = None
    contenders = [
        ("floor", lambda i: _floor(server, databases, m.fresh_dir(out, f"floor{i}") / "all.bson.zst")),
        ("vaultflow", lambda i: m.vaultflow_core(engine, Repository(LocalStore(m.fresh_dir(out, f"vf{i}"))))),
    ]
    for i in range(repeat):
        log(f"mongo backup round {i + 1}/{repeat}")
        for name, make in contenders if i % 2 == 0 else contenders[::-1]:
            run = m.measure(make(i))
            manifest = run.extra.pop("manifest", manifest)
            runs.setdefault(name, []).append(run)
            log(
                f"  mongo {name}: {run.seconds:.2f} s, {run.size / 1e6:.1f} MB {run.extra.get('timings', '')} "
                f"(cpu-s: bench {run.cpu_self_s:.1f}, children {run.cpu_children_s:.1f}, server "
                f"{run.cpu_servers_s:.1f}, others {run.cpu_others_s:.1f}; load {run.load_avg_1m:.2f})"
            )
            if name == "floor" or i < repeat - 1:
                shutil.rmtree(out / f"{'floor' if name == 'floor' else 'vf'}{i}")
    return {k: m.summarize(v) for k, v in runs.items()}, manifest, out / f"vf{repeat - 1}"


def run_mongo(args, log) -> dict:
    from bench.datagen_mongo import DATABASES, load_tpch
    from bench.mongo_oplog import archive_under_load, point_in_time
    from vaultflow.engines.mongodb.engine import MongoEngine
    from vaultflow.engines.mongodb.settings import MongoSettings
    from vaultflow.testing.mongo_server import running_mongo

    t_all = time.monotonic()
    doc: dict = {"load_avg_at_start": [round(x, 2) for x in os.getloadavg()]}
    work = Path(tempfile.mkdtemp(prefix="vaultflow-bench-mongo-", dir=args.tmp))
    databases = list(DATABASES)
    try:
        with running_mongo("bench", oplog_max_entries=LOAD_OPLOG_ENTRIES) as server:
            m.track_servers(mongo=server.pid)
            log(f"mongo: SecantusDB on port {server.port}; loading TPC-H ({args.mongo_mb:g} MB of BSON)")
            data = load_tpch(server, work, args.mongo_mb, log)
            doc["dataset"] = data.as_dict()
            log(
                f"  mongo data: {data.documents} documents, {data.bson_bytes / 1e6:.0f} MB of BSON in "
                f"{len(data.collections)} collections, loaded in {data.load_seconds:.1f} s "
                f"({doc['dataset']['load_mb_per_s']} MB/s, {doc['dataset']['load_docs_per_s']} docs/s)"
            )
            doc["oplog"] = {"entries_after_load": data.documents}
            doc["oplog"]["backup_phase"] = _resize_oplog(server, args.mongo_backup_oplog_entries, True, log)
            doc["oplog"]["query_seconds_backup_phase"] = _oplog_query(server)

            engine = MongoEngine(
                MongoSettings(
                    target_name=TARGET,
                    host=server.host,
                    port=server.port,
                    databases=databases,
                    connect_timeout=CONNECT_TIMEOUT_S,
                )
            )
            out = work / "out"
            doc["backup"], manifest, vf_repo = _backups(server, engine, databases, out, args.mongo_repeat, log)

            _guarded(doc, "memory", lambda: _memory(server, data, databases, work, log), log)
            doc["oplog"]["write_phase"] = _resize_oplog(server, args.mongo_oplog_entries, False, log)
            settings = engine.config.model_copy(update={"oplog_slice_seconds": args.mongo_slice_seconds})
            lag = _guarded(
                doc, "archive", lambda: archive_under_load(server, settings, vf_repo, databases[0], args, log), log
            )
            doc["oplog"]["query_seconds_after_writes"] = _oplog_query(server)
            if "_archive" in lag:
                archive = lag.pop("_archive")
                log("mongo restore of the full backup, then the archived oplog replayed onto it")
                _guarded(
                    doc,
                    "point_in_time",
                    lambda: point_in_time(engine, vf_repo, manifest, archive, databases, server, log),
                    log,
                )
    finally:
        m.track_servers()
        shutil.rmtree(work, ignore_errors=True)
    import secantus  # noqa: F401 - its version for the record

    doc["machine"] = {
        "server": f"SecantusDB {getattr(secantus, '__version__', '?')}",
        "zstd_cli": subprocess.run(["zstd", "--version"], capture_output=True, text=True).stdout.strip(),
        "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        "cpus": psutil.cpu_count(),
    }
    doc["targets"] = _targets(doc, args.mongo_slice_seconds)
    doc["seconds"] = round(time.monotonic() - t_all, 1)
    return doc


def _targets(doc: dict, slice_seconds: float) -> dict:
    b, mem = doc["backup"], doc.get("memory", {})
    mem = {} if "error" in mem else mem
    big, small = (mem.get("big") or {}).get("peak_rss_kernel_mb"), (mem.get("small") or {}).get("peak_rss_kernel_mb")
    values = {
        "full_backup_vs_floor": b["vaultflow"]["seconds"] / b["floor"]["seconds"],
        "peak_rss_big_mb": big,
        "peak_rss_small_mb": small,
        "peak_rss_growth": big / small if big and small else None,
        "archive_lag_seconds": (doc.get("archive") or {}).get("max_lag_seconds"),
    }
    return judged(values, targets_for(slice_seconds))


def summary_lines(d: dict) -> list[str]:
    ds, b = d["dataset"], d["backup"]
    lines = [
        "",
        f"  MONGODB  {ds['documents']} documents, {ds['bson_mb']:.0f} MB of BSON in {len(ds['collections'])} "
        f"collections (TPC-H SF {ds['scale_factor']}; loaded in {ds['load_seconds']:.0f} s, "
        f"{ds['load_mb_per_s']} MB/s); load average at start {d['load_avg_at_start']}",
        f"  oplog after the load {d['oplog']['entries_after_load']} entries, cut to "
        f"{d['oplog']['backup_phase']['max_entries']} ({d['oplog']['backup_phase']['pruned']} pruned in "
        f"{d['oplog']['backup_phase']['prune_seconds']:.0f} s); one oplog query (newest entry) "
        f"{d['oplog']['query_seconds_backup_phase']} s then, {d['oplog'].get('query_seconds_after_writes')} s "
        "after the writes",
    ]
    for label, key in (("pymongo raw batches | zstd -3 -T0 > file", "floor"), ("MongoEngine.full_backup", "vaultflow")):
        run = b[key]
        lines.append(
            f"  {label:<44}{run['seconds']:8.2f} s  {run['size'] / 1e6:9.1f} MB  runs {run['all_seconds']} "
            f"{run['extra'].get('timings', '')}"
        )
    for label, run in d.get("memory", {}).items():
        if label == "error":
            lines.append(f"  memory: FAILED {run}")
            continue
        lines.append(
            f"  memory {label} ({run['bson_mb']:.0f} MB): peak {run['peak_rss_kernel_mb']:.0f} MB "
            f"(after imports {run['rss_after_imports_mb']:.0f}), backup {run['backup_seconds']} s"
        )
    a = d.get("archive") or {}
    if "error" in a:
        lines.append(f"  archive under load: FAILED {a['error']}")
    elif a:
        w = a["writer"]
        lines.append(
            f"  archive under load: writer {w['entries']} ops in {w['seconds']} s ({w['entries_per_second']}/s); "
            f"{a['slices']} slices of {a['slice_seconds']} s, {a['entries_archived']} entries; max lag "
            f"{a['max_lag_seconds']} s; ship max {a['ship_seconds_max']} s; backlog "
            f"{a['backlog']['entries']} entries in {a['backlog']['seconds']} s"
        )
    p = d.get("point_in_time") or {}
    if "error" in p:
        lines.append(f"  point in time: FAILED {p['error']}")
    elif p:
        lines.append(
            f"  point-in-time restore (the full, then the archived oplog) {p['restore_seconds']:.1f} s; replay of "
            f"{p['entries']} oplog entries {p['replay_seconds']:.1f} s = {p['entries_per_second']} entries/s "
            f"(cpu-s bench {p['restore_cpu_bench_s']}, server {p['restore_cpu_server_s']}); "
            f"copy matches source {p['matches_source']}"
        )
    return lines + target_lines(d["targets"])
