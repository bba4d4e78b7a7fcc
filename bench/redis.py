"""Redis benchmark: remote RDB backup, restore drill, AOF incremental and memory, one run.

A source redis-server 7 (vaultflow.testing.redis_instance: AOF on, repl-diskless-sync-delay 0,
DEBUG allowed from localhost) is filled by bench.datagen_redis (>= 1M keys, >= 500 MB of values
at --redis-scale 1), then, --redis-repeat rounds each in alternating order, the median kept:

  backup   `redis-cli --rdb - | zstd -3 -T0 > file && sync` (stock) vs RedisEngine.full_backup
           (remote: redis-cli --rdb - through RdbTee: in-stream scan of header, RESIZEDB counts
           and CRC64 footer, redis-check-rdb on a FIFO, zstd, sha256, LocalStore);
  restore  a plain redis-server started on a directory holding the decompressed dump.rdb, timed
           until PING answers (no LOADING) vs RedisEngine.drill (verify + decompress, scratch
           server, load, facts compare, stop);
  parts    redis-check-rdb alone on the RDB (its wall and CPU time: the one proof that parses
           every record), materialize alone, INFO keyspace alone;
  memory   the backup in a child process (bench.redis_child), RSS sampled every 50 ms,
           for this dataset and for one at --redis-small-scale: the Python process must stay flat;
  aof      local mode (data_dir = the source's dir, appendonly yes): AOF-anchored full, then 1% of
           the keys changed, then an incremental: stored size of incremental / full.

Every figure lands in doc["redis"], the targets with pass/fail in doc["redis"]["targets"].
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import psutil

from bench import measure as m
from bench.report import judged, target_lines

MiB = 1 << 20
TARGET = "bench-redis"
TARGETS = {  # name -> (limit, meaning); all are "value <= limit"
    "remote_full_vs_stock": (
        1.2,
        "RedisEngine.full_backup (remote) wall / redis-cli --rdb - | zstd -3 -T0 > file wall (medians)",
    ),
    "drill_vs_plain_load": (
        1.5,
        "RedisEngine.drill wall / plain redis-server start + load of the decompressed dump.rdb until PING (medians)",
    ),
    "aof_incremental_size_vs_full": (
        0.05,
        "AOF incremental stored bytes (1% of keys changed) / AOF-anchored full stored bytes (local mode)",
    ),
    "peak_rss_big_mb": (300, "peak RSS (MB, VmHWM) of the Python backup process, big dataset"),
    "peak_rss_growth": (1.10, "peak RSS big dataset / small dataset (memory must not grow with size)"),
}


def _median_summary(runs: list[m.Run]) -> dict:
    """The median run's figures (by wall time) plus every wall time."""
    ordered = sorted(runs, key=lambda r: r.seconds)
    mid = ordered[(len(ordered) - 1) // 2] if len(ordered) % 2 else None
    doc = {
        k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(mid or ordered[len(ordered) // 2]).items()
    }
    doc["seconds"] = round(statistics.median(r.seconds for r in runs), 3)
    doc["all_seconds"] = [round(r.seconds, 3) for r in runs]
    doc["min_seconds"] = round(ordered[0].seconds, 3)
    return doc


def _cli(port: int) -> list[str]:
    from vaultflow.engines.redis.server import find_binary

    return [str(find_binary("redis-cli")), "-h", "127.0.0.1", "-p", str(port)]


def _stock_backup(port: int, out: Path, compress: bool = True):
    """The stock pipeline; compress=False: `redis-cli --rdb - | cat > /dev/null`, the source's floor."""
    cli = " ".join(_cli(port))
    pipeline = (
        f"set -o pipefail; {cli} --rdb - 2>/dev/null | zstd -3 -T0 -q -c > '{out}' && sync '{out}'"
        if compress
        else f"set -o pipefail; {cli} --rdb - 2>/dev/null | cat > /dev/null"
    )

    def run():
        m.run_tool(["bash", "-c", pipeline], None)
        return (out.stat().st_size if compress else None), {}

    return run


def _vf_backup(engine, repo_dir: Path):
    from vaultflow.engines.base import BackupContext
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore

    def run():
        manifest = engine.full_backup(BackupContext(repository=Repository(LocalStore(repo_dir)), log=lambda line: None))
        return manifest.stored_size, {
            "manifest": manifest,
            "raw_size": manifest.raw_size,
            "timings": {k: round(v, 3) for k, v in manifest.timings.items()},
        }

    return run


def _plain_load(directory: Path):
    """A plain redis-server on `directory` (dump.rdb there): start -> PING answers, then stop."""
    from vaultflow.engines.redis.server import start_redis

    def run():
        t0 = time.monotonic()
        server = start_redis(directory, settings={"dbfilename": "dump.rdb", "appendonly": "no"})
        ready = time.monotonic() - t0
        try:
            with server.client() as conn:
                keys = conn.dbsize()
        finally:
            server.stop()
        return None, {"ready_seconds": round(ready, 3), "keys_db0": keys}

    return run


def _drill(engine, repo_dir: Path, manifest):
    from vaultflow.engines.base import BackupContext
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore

    def run():
        result = engine.drill(
            BackupContext(repository=Repository(LocalStore(repo_dir)), log=lambda line: None), manifest
        )
        if not result.comparison.ok:
            raise RuntimeError(f"drill of {manifest.id} did not match: {result.comparison.summary()}")
        return None, {
            "engine_seconds": round(result.seconds, 3),
            "all_match": result.comparison.ok,
            "groups_compared": len(result.comparison.tables),
        }

    return run


def sample_redis_rss(port: int, repo: Path, interval: float = 0.05, points: int = 60) -> dict:
    """bench.redis_child with RSS sampled every `interval` s: the Python process, and the peak of
    each kind of child (redis-cli, redis-check-rdb)."""
    from bench.subproc import sample_child_rss

    cmd = [sys.executable, "-m", "bench.redis_child", "--port", str(port), "--repo", str(repo)]
    sampled = sample_child_rss(cmd, "bench.redis_child", interval, points)
    return {**sampled, "timings": sampled.pop("result")["timings"]}


def cpu_profile(fn, source_pid: int, interval: float = 0.1) -> dict:
    """Run fn() while sampling the CPU seconds of every process and thread involved: our own
    threads (by name; zstd's workers are unnamed), our child processes (redis-cli,
    redis-check-rdb, the scratch redis-server) and the source server with its fork child."""
    me = psutil.Process()
    stop = threading.Event()
    procs: dict[int, tuple[str, float]] = {}
    threads: dict[int, tuple[str, float]] = {}
    base_threads = {t.id: t.user_time + t.system_time for t in me.threads()}

    def snap(proc: psutil.Process, label: str, base: dict) -> None:
        try:
            t = proc.cpu_times()
            cpu = t.user + t.system
            procs[proc.pid] = (label, cpu - base.get(proc.pid, 0.0))
        except psutil.Error:
            pass

    source = psutil.Process(source_pid)
    base_src = {source_pid: sum(source.cpu_times()[:2])}

    def poll() -> None:
        while True:
            names = {t.native_id: t.name for t in threading.enumerate()}
            try:
                for t in me.threads():
                    name = names.get(t.id, "native (zstd workers)")
                    threads[t.id] = (name, t.user_time + t.system_time - base_threads.get(t.id, 0.0))
                for kid in me.children(recursive=True):
                    snap(kid, f"child {kid.name()}", {})
                snap(source, "source redis-server", base_src)
                for kid in source.children(recursive=True):
                    snap(kid, "source fork (RDB to replica)", {})
            except psutil.Error:
                pass
            if stop.wait(interval):
                return

    poller = threading.Thread(target=poll, name="cpu-profiler", daemon=True)
    t0 = time.monotonic()
    poller.start()
    try:
        fn()
    finally:
        wall = time.monotonic() - t0
        stop.set()
        poller.join()
    by: dict[str, float] = {}
    for label, cpu in [*procs.values(), *(("thread " + n, c) for n, c in threads.values())]:
        if label != "thread cpu-profiler":
            by[label] = by.get(label, 0.0) + cpu
    return {
        "wall_seconds": round(wall, 2),
        "cpu_seconds": {k: round(v, 2) for k, v in sorted(by.items(), key=lambda kv: -kv[1]) if v >= 0.05},
    }


def _server_facts(server) -> dict:
    with server.client() as conn:
        mem, ks = conn.info("memory"), conn.info("keyspace")
        version = conn.info("server")["redis_version"]
    return {
        "used_memory": mem["used_memory"],
        "used_memory_mb": round(mem["used_memory"] / MiB, 1),
        "keyspace": {k: v for k, v in ks.items()},
        "version": version,
    }


def _log_run(log, name: str, run: m.Run) -> None:
    size = f", {run.size / 1e6:.1f} MB" if run.size is not None else ""
    timings = run.extra.get("timings") or run.extra.get("ready_seconds") or ""
    log(
        f"  redis {name}: {run.seconds:.2f} s{size} {timings} (cpu-s: machine {run.cpu_busy_s:.1f}, "
        f"bench {run.cpu_self_s:.1f}, children {run.cpu_children_s:.1f}, source server {run.cpu_servers_s:.1f}, "
        f"others {run.cpu_others_s:.1f})"
    )


def _rss_small(args, gen, work: Path, log) -> dict:
    from vaultflow.testing.redis_instance import running_redis

    with running_redis(name="bench-small") as small:
        data = gen.populate(_cli(small.port), args.redis_small_scale, log=lambda line: None)
        run = sample_redis_rss(small.port, m.fresh_dir(work, "rss-small"))
        run["dataset"] = {"keys": data.keys, "value_bytes": data.value_bytes, **_server_facts(small)}
    shutil.rmtree(work / "rss-small", ignore_errors=True)
    return run


def _aof(server, data_scale: float, gen, work: Path, log) -> dict:
    """Local-mode AOF-anchored full, 1% of keys changed, incremental; sizes, times, and a drill."""
    from vaultflow.engines.base import BackupContext
    from vaultflow.engines.redis.engine import RedisEngine
    from vaultflow.engines.redis.settings import RedisSettings
    from vaultflow.manifest import BackupKind
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore

    engine = RedisEngine(
        RedisSettings(target_name=f"{TARGET}-aof", host="127.0.0.1", port=server.port, data_dir=str(server.directory))
    )
    ctx = BackupContext(repository=Repository(LocalStore(m.fresh_dir(work, "aof-repo"))), log=lambda line: None)
    full = m.measure(lambda: ((man := engine.full_backup(ctx)).stored_size, {"manifest": man}))
    full_man = full.extra.pop("manifest")
    log(
        f"  redis AOF full ({full_man.mode}): {full.seconds:.2f} s, {full.size / 1e6:.1f} MB "
        f"{ {k: round(v, 2) for k, v in full_man.timings.items()} }"
    )
    t0 = time.monotonic()
    changed = gen.change(_cli(server.port), data_scale, 0.01)
    change_s = time.monotonic() - t0
    time.sleep(1.2)  # appendfsync everysec: the changes are on disk (they are in the file already)
    inc = m.measure(
        lambda: ((man := engine.incremental_backup(ctx, BackupKind.INCREMENTAL)).stored_size, {"manifest": man})
    )
    inc_man = inc.extra.pop("manifest")
    log(
        f"  redis AOF incremental after {changed['total']} keys changed: {inc.seconds:.2f} s, "
        f"{inc.size / 1e6:.2f} MB (raw {inc_man.raw_size / 1e6:.2f} MB)"
    )
    doc = {
        "mode": full_man.mode,
        "changed": changed,
        "change_seconds": round(change_s, 2),
        "full": {
            "seconds": round(full.seconds, 3),
            "stored_size": full.size,
            "raw_size": full_man.raw_size,
            "objects": len(full_man.objects),
            "timings": {k: round(v, 3) for k, v in full_man.timings.items()},
            "cpu": {
                "self": round(full.cpu_self_s, 2),
                "children": round(full.cpu_children_s, 2),
                "source_server": round(full.cpu_servers_s, 2),
            },
        },
        "incremental": {
            "seconds": round(inc.seconds, 3),
            "stored_size": inc.size,
            "raw_size": inc_man.raw_size,
            "objects": len(inc_man.objects),
            "timings": {k: round(v, 3) for k, v in inc_man.timings.items()},
        },
        "size_ratio": round(inc.size / full.size, 5),
    }
    try:  # the chain restores and matches (not a target; a proof and a time)
        drill = m.measure(lambda: (None, {"ok": engine.drill(ctx, inc_man).comparison.ok}))
        doc["chain_drill"] = {"seconds": round(drill.seconds, 3), "all_match": drill.extra["ok"]}
        log(f"  redis AOF chain drill (full + incremental): {drill.seconds:.2f} s, match {drill.extra['ok']}")
    except Exception as exc:  # noqa: BLE001 - keep the sizes
        doc["chain_drill"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        log(f"  redis AOF chain drill FAILED: {exc}")
    shutil.rmtree(work / "aof-repo", ignore_errors=True)
    return doc


def run_redis(args, log) -> dict:
    from bench.datagen_redis import Generator
    from vaultflow.engines.redis.engine import RedisEngine
    from vaultflow.engines.redis.server import find_binary
    from vaultflow.engines.redis.settings import RedisSettings
    from vaultflow.testing.redis_instance import SOURCE_SETTINGS, running_redis

    t_all = time.monotonic()
    doc: dict = {"load_avg_at_start": [round(x, 2) for x in psutil.getloadavg()]}
    work = Path(tempfile.mkdtemp(prefix="vaultflow-bench-redis-", dir=args.tmp))
    try:
        t0 = time.monotonic()
        gen = Generator()
        corpus_s = time.monotonic() - t0
        with running_redis(name="bench") as server:
            m.track_servers(redis=server.proc.pid)
            log(
                f"redis: source redis-server on port {server.port} ({server.directory}); generating data "
                f"(scale {args.redis_scale}; corpus {corpus_s:.1f} s)"
            )
            data = gen.populate(_cli(server.port), args.redis_scale, log=log)
            facts = _server_facts(server)
            doc["dataset"] = {
                **data.as_dict(),
                **facts,
                "corpus_seconds": round(corpus_s, 2),
                "scale": args.redis_scale,
                "source_settings": SOURCE_SETTINGS,
            }
            log(
                f"  redis data: {data.keys} keys, {data.value_bytes / 1e6:.0f} MB of values, used_memory "
                f"{facts['used_memory_mb']:.0f} MiB, generated in {data.seconds:.1f} s"
            )

            out = work / "out"
            engine = RedisEngine(RedisSettings(target_name=TARGET, host="127.0.0.1", port=server.port))
            runs: dict[str, list[m.Run]] = {}
            manifests: dict = {}
            contenders = [
                ("stock", lambda i: _stock_backup(server.port, m.fresh_dir(out, f"stock{i}") / "dump.rdb.zst")),
                ("vaultflow", lambda i: _vf_backup(engine, m.fresh_dir(out, f"vf{i}"))),
            ]
            last = args.redis_repeat - 1
            for i in range(args.redis_repeat):
                log(f"redis backup round {i + 1}/{args.redis_repeat}")
                for name, make in contenders if i % 2 == 0 else contenders[::-1]:
                    run = m.measure(make(i))
                    manifest = run.extra.pop("manifest", None)
                    if manifest is not None:
                        manifests[name] = manifest
                    runs.setdefault(name, []).append(run)
                    _log_run(log, name, run)
                    if i < last:
                        shutil.rmtree(out / {"stock": f"stock{i}", "vaultflow": f"vf{i}"}[name])
            doc["backup"] = {k: _median_summary(v) for k, v in runs.items()}
            doc["backup"]["vaultflow"]["all_timings"] = [r.extra.get("timings") for r in runs["vaultflow"]]
            log("redis backup CPU profile (one run each, per process / thread)")
            doc["cpu_profile"] = {}
            floor = ("rdb_to_devnull", lambda i: _stock_backup(server.port, Path("/dev/null"), compress=False))
            for name, make in [(n, mk) for n, mk in contenders if n != "stock"] + [contenders[0], floor]:
                prof = cpu_profile(make("p"), server.proc.pid)
                doc["cpu_profile"][name] = prof
                log(f"  {name}: {prof['wall_seconds']} s wall, cpu-s {prof['cpu_seconds']}")
                shutil.rmtree(out / {"stock": "stockp", "vaultflow": "vfp"}.get(name, "-"), ignore_errors=True)

            log("redis restore input: the stock backup decompressed into a plain server's directory")
            plain_dir = m.fresh_dir(work, "plain")
            subprocess.run(
                [
                    "zstd",
                    "-d",
                    "-q",
                    "-f",
                    str(out / f"stock{last}" / "dump.rdb.zst"),
                    "-o",
                    str(plain_dir / "dump.rdb"),
                ],
                check=True,
            )
            rdb_size = (plain_dir / "dump.rdb").stat().st_size
            restores: dict[str, list[m.Run]] = {}
            vf_repo = out / f"vf{last}"
            order = ["plain", "drill"]
            for i in range(args.redis_repeat):
                log(f"redis restore round {i + 1}/{args.redis_repeat}")
                for which in order if i % 2 == 0 else order[::-1]:
                    if which == "plain":
                        run = m.measure(_plain_load(plain_dir))
                        name = "plain_load"
                    else:
                        run = m.measure(_drill(engine, vf_repo, manifests["vaultflow"]))
                        name = "vaultflow_drill"
                    restores.setdefault(name, []).append(run)
                    _log_run(log, name, run)
            doc["restore"] = {k: _median_summary(v) for k, v in restores.items()}
            doc["restore"]["rdb_size"] = rdb_size
            doc["diagnostics"] = _diagnostics(vf_repo, manifests["vaultflow"], plain_dir, work, log)
            shutil.rmtree(plain_dir, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)

            log("redis memory: the backup in a child process, RSS sampled every 50 ms")
            doc["memory"] = {"big": sample_redis_rss(server.port, m.fresh_dir(work, "rss-big"))}
            doc["memory"]["big"]["dataset"] = {
                "keys": data.keys,
                "value_bytes": data.value_bytes,
                "used_memory_mb": facts["used_memory_mb"],
            }
            shutil.rmtree(work / "rss-big", ignore_errors=True)
            _log_rss(log, "big", doc["memory"]["big"])

            if not args.redis_skip_aof:
                log("redis AOF: local mode, AOF-anchored full, 1% of keys changed, incremental")
                try:
                    doc["aof"] = _aof(server, args.redis_scale, gen, work, log)
                except Exception as exc:  # noqa: BLE001 - report it, keep every other figure
                    log(f"  redis AOF phase FAILED: {type(exc).__name__}: {exc}")
                    doc["aof"] = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
        log(f"redis memory: small dataset (scale {args.redis_small_scale})")
        doc["memory"]["small"] = _rss_small(args, gen, work, log)
        _log_rss(log, "small", doc["memory"]["small"])
    finally:
        m.track_servers()
        shutil.rmtree(work, ignore_errors=True)

    doc["machine"] = {
        "redis_server": subprocess.run(
            [str(find_binary("redis-server")), "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "zstd_cli": subprocess.run(["zstd", "--version"], capture_output=True, text=True).stdout.strip(),
    }
    doc["targets"] = _targets(doc)
    doc["seconds"] = round(time.monotonic() - t_all, 1)
    return doc


def _diagnostics(repo_dir: Path, manifest, plain_dir: Path, work: Path, log) -> dict:
    """Where the time goes: redis-check-rdb alone on the RDB (wall and CPU seconds: the backup
    runs it concurrently, so on 2 cores its CPU competes with redis-cli's fork and zstd),
    materialize (verify + decompress + write dump.rdb) alone, INFO keyspace on a loaded server."""
    from vaultflow.engines.base import BackupContext
    from vaultflow.engines.redis.client import fingerprint_server
    from vaultflow.engines.redis.restore import materialize
    from vaultflow.engines.redis.server import find_binary, start_redis
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore

    doc = {}
    before = psutil.Process().cpu_times()
    t0 = time.monotonic()
    subprocess.run(
        [str(find_binary("redis-check-rdb")), str(plain_dir / "dump.rdb")], check=True, stdout=subprocess.DEVNULL
    )
    after = psutil.Process().cpu_times()
    doc["check_rdb_alone"] = {
        "seconds": round(time.monotonic() - t0, 3),
        "cpu_seconds": round(
            after.children_user + after.children_system - before.children_user - before.children_system, 2
        ),
    }
    dest = m.fresh_dir(work, "materialize")
    ctx = BackupContext(repository=Repository(LocalStore(repo_dir)), log=lambda line: None)
    run = m.measure(lambda: (materialize(ctx, manifest, dest), None)[1])
    doc["materialize"] = {"seconds": round(run.seconds, 3), "cpu_self_s": round(run.cpu_self_s, 2)}
    shutil.rmtree(dest, ignore_errors=True)
    server = start_redis(plain_dir, settings={"dbfilename": "dump.rdb", "appendonly": "no"})
    try:
        with server.client() as conn:
            t0 = time.monotonic()
            fingerprint_server(conn, "counts")
            doc["fingerprint_counts_seconds"] = round(time.monotonic() - t0, 3)
    finally:
        server.stop()
    log(
        f"  redis parts: redis-check-rdb alone {doc['check_rdb_alone']['seconds']:.2f} s "
        f"({doc['check_rdb_alone']['cpu_seconds']:.2f} cpu-s), materialize {doc['materialize']['seconds']:.2f} s, "
        f"INFO keyspace {doc['fingerprint_counts_seconds']:.3f} s"
    )
    return doc


def _log_rss(log, label: str, run: dict) -> None:
    kids = ", ".join(f"{k} {v:.0f} MB" for k, v in run["children_peak_rss_mb"].items())
    log(
        f"  {label}: peak RSS {run['peak_rss_kernel_mb']} MB (sampled {run['peak_rss_sampled_mb']} MB, after imports "
        f"{run['rss_after_imports_mb']} MB), backup {run['backup_seconds']} s; children: {kids}"
    )


def _targets(doc: dict) -> dict:
    b, r = doc["backup"], doc["restore"]
    mem = doc.get("memory", {})
    big, small = (mem.get("big") or {}).get("peak_rss_kernel_mb"), (mem.get("small") or {}).get("peak_rss_kernel_mb")
    aof = doc.get("aof") or {}
    values = {
        "remote_full_vs_stock": b["vaultflow"]["seconds"] / b["stock"]["seconds"],
        "drill_vs_plain_load": r["vaultflow_drill"]["seconds"] / r["plain_load"]["seconds"],
        "aof_incremental_size_vs_full": aof.get("size_ratio"),
        "peak_rss_big_mb": big,
        "peak_rss_growth": big / small if big and small else None,
    }
    return judged(values, TARGETS)


def summary_lines(d: dict) -> list[str]:
    ds = d["dataset"]
    lines = [
        "",
        f"  REDIS  {ds['keys']} keys, {ds['value_bytes'] / 1e6:.0f} MB of values, used_memory "
        f"{ds['used_memory_mb']:.0f} MiB (Redis {ds['version']}; generated in {ds['seconds']:.1f} s); "
        f"medians of {len(d['backup']['stock']['all_seconds'])} runs",
    ]
    for label, key in (
        ("redis-cli --rdb - | zstd -3 -T0 > file", "stock"),
        ("vaultflow full_backup (remote)", "vaultflow"),
    ):
        run = d["backup"][key]
        timings = run["extra"].get("timings", "")
        lines.append(
            f"  {label:<44}{run['seconds']:8.2f} s  {run['size'] / 1e6:9.1f} MB  runs {run['all_seconds']} {timings}"
        )
    for label, key in (("plain redis-server load of dump.rdb", "plain_load"), ("vaultflow drill", "vaultflow_drill")):
        run = d["restore"][key]
        lines.append(f"  {label:<44}{run['seconds']:8.2f} s  {'':12}  runs {run['all_seconds']}")
    for name, prof in d.get("cpu_profile", {}).items():
        top = ", ".join(f"{k} {v:.1f}" for k, v in list(prof["cpu_seconds"].items())[:7])
        lines.append(
            f"  cpu profile {name}: {prof['wall_seconds']:.1f} s wall, "
            f"{sum(prof['cpu_seconds'].values()):.1f} cpu-s: {top}"
        )
    dg = d.get("diagnostics", {})
    if dg:
        lines.append(
            f"  parts alone: redis-check-rdb {dg['check_rdb_alone']['seconds']:.2f} s "
            f"({dg['check_rdb_alone']['cpu_seconds']:.2f} cpu-s), materialize {dg['materialize']['seconds']:.2f} s, "
            f"INFO keyspace {dg['fingerprint_counts_seconds']:.3f} s"
        )
    aof = d.get("aof") or {}
    if "full" in aof:
        lines.append(
            f"  AOF full {aof['full']['seconds']:.2f} s {aof['full']['stored_size'] / 1e6:.1f} MB; incremental "
            f"({aof['changed']['total']} keys changed) {aof['incremental']['seconds']:.2f} s "
            f"{aof['incremental']['stored_size'] / 1e6:.2f} MB; chain drill {aof.get('chain_drill')}"
        )
    elif aof:
        lines.append(f"  AOF: {aof.get('error')}")
    for label, run in d.get("memory", {}).items():
        kids = ", ".join(f"{k} {v:.0f} MB" for k, v in run["children_peak_rss_mb"].items())
        lines.append(
            f"  memory {label}: peak {run['peak_rss_kernel_mb']:.0f} MB (after imports "
            f"{run['rss_after_imports_mb']:.0f}); children: {kids}"
        )
    return lines + target_lines(d["targets"])
