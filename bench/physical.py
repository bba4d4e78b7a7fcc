"""Physical benchmark: pg_basebackup-based full/incremental backups, WAL archiving, PITR.

Own embedded PostgreSQL 18 (archive_mode=on, archive_command = the service user's
`python -m vaultflow.engines.postgres.wal.cli push %p --spool <spool>`, summarize_wal=on), a datagen database
plus a `pgbench -i` database, then: (1) physical_full_backup vs `pg_basebackup -Ft -X fetch |
zstd -3 -T0` (best of --repeat), (2) 1% UPDATE + incremental, (3) pgbench at full speed while
ship_spool loops like archive-logs' follow mode (spool sampled every 0.5 s) + wal-push latency, (4) recover() to a
time near the end of pgbench vs recover() of the full alone. Figures + targets -> doc["physical"].
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench import datagen
from bench import measure as m

MiB = 1 << 20
SETTINGS = {
    "archive_mode": "on",
    "summarize_wal": "on",
    "wal_keep_size": "2GB",
    "max_wal_size": "4GB",
    "archive_timeout": "0",
    "autovacuum": "off",
    "shared_buffers": "128MB",
}
TARGET = "bench-physical"
# table -> SET clause of the 1% change (non-indexed columns; the first 1% of ids: contiguous pages)
CHANGE = {
    "users": "plan = 'team'",
    "orders": "status = 'refunded'",
    "events": "kind = 'search'",
    "blobs": "owner_id = owner_id + 1",
}
TARGETS = {  # name -> (target, comparison, meaning)
    "full_time_vs_basebackup_zstd": (
        1.15,
        "<=",
        "physical_full_backup wall / pg_basebackup -Ft -X fetch | zstd -3 -T0 (the first of --manifest-checksums)",
    ),
    "incremental_size_vs_full": (0.05, "<=", "incremental stored bytes / full stored bytes (1% of rows changed)"),
    "incremental_time_vs_full": (0.3, "<=", "incremental wall / full wall"),
    "max_archive_lag_segments": (3, "<=", "max WAL segments waiting in the spool during pgbench (0.5 s samples)"),
    "full_time_vs_basebackup_zstd_with_fingerprints": (
        1.15,
        "<=",
        "the same with physical_fingerprints=True (table scans concurrent with the copy)",
    ),
    "incremental_time_vs_full_with_fingerprints": (
        0.3,
        "<=",
        "incremental wall / full wall, both with row fingerprints",
    ),
}


def _wait_archived(pg, timeout: float = 300.0) -> str:
    """Write a row, switch WAL, wait until the archiver pushed that segment; its name."""
    pg.execute("CREATE TABLE IF NOT EXISTS bench_tick (at timestamptz); INSERT INTO bench_tick VALUES (now())")
    name = pg.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = pg.execute("SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
        if last is not None and last >= name:
            return name
        time.sleep(0.1)
    raise RuntimeError(f"{name} not archived within {timeout:.0f} s: see {pg.log_file}")


def _stock(pg, out: Path):
    pipeline = (
        f"set -o pipefail; '{pg.client_bin_dir / 'pg_basebackup'}' -Ft -X fetch -c fast -D - "
        f"| zstd -3 -T0 -q -c > '{out}' && sync '{out}'"
    )

    def run():
        m.run_tool(["bash", "-c", pipeline], m.client_env(pg))
        return out.stat().st_size, {}

    return run


def _vf(fn, *a, **kw):
    def run():
        man = fn(*a, **kw)
        return man.stored_size, {
            "manifest": man,
            "raw_size": man.raw_size,
            "timings": {k: round(v, 3) for k, v in man.timings.items()},
        }

    return run


def _push_latency(python, n: int = 20) -> dict:
    """The archive_command as the server runs it (service user), on a 16 MiB segment, n times."""
    from vaultflow.testing.unprivileged import give_to_service_user

    work = Path(tempfile.mkdtemp(prefix="vfbench-push-", dir="/tmp"))
    try:
        src, spool = work / "pg_wal", work / "spool"
        src.mkdir()
        (src / "template").write_bytes(os.urandom(16 * MiB))
        names = [f"0000000900000000000000{i:02X}" for i in range(n)]
        for name in names:
            os.link(src / "template", src / name)
        give_to_service_user(work)
        times = []
        for name in names:
            t0 = time.perf_counter()
            res = python.run_as_service_user(
                "-m", "vaultflow.engines.postgres.wal.cli", "push", str(src / name), "--spool", str(spool)
            )
            times.append(time.perf_counter() - t0)
            if res.returncode != 0:
                raise RuntimeError(f"wal-push failed: {res.stderr}")
        return {
            "median_s": round(statistics.median(times), 4),
            "min_s": round(min(times), 4),
            "max_s": round(max(times), 4),
            "n": n,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _wal_phase(pg, spool: Path, repo, seconds: int, log) -> dict:
    """pgbench at full speed; ship_spool as archive-logs follows the spool; samples every 0.5 s."""
    from vaultflow.engines.postgres.wal import is_segment, ship_spool, spooled

    stop, samples, ships, errors = threading.Event(), [], [], []
    ready_dir = pg.data_dir / "pg_wal" / "archive_status"
    t_start = time.monotonic()

    def shipper():
        while not stop.is_set():  # as archive-logs with follow_seconds: again at once after shipping
            t0, shipped = time.monotonic(), 0
            try:
                r = ship_spool(spool, repo, TARGET)
                shipped = len(r.shipped)
                ships.append((round(t0 - t_start, 2), round(time.monotonic() - t0, 3), shipped))
            except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                errors.append(repr(exc))
            stop.wait(0.0 if shipped else 0.5)

    def sampler():
        while not stop.is_set():
            now, segs, oldest = time.time(), 0, None
            for p in spooled(spool):
                try:
                    mt = p.stat().st_mtime
                except FileNotFoundError:
                    continue
                segs += is_segment(p.name)
                oldest = mt if oldest is None else min(oldest, mt)
            try:
                ready = sum(1 for n in os.listdir(ready_dir) if n.endswith(".ready"))
            except OSError:
                ready = -1
            samples.append(
                (round(time.monotonic() - t_start, 2), segs, round(now - oldest, 2) if oldest else 0.0, ready)
            )
            stop.wait(0.5)

    _wait_archived(pg)  # backlog from the backups above: shipped first, so the lag is pgbench's alone
    backlog = ship_spool(spool, repo, TARGET)
    archived0 = pg.execute("SELECT archived_count FROM pg_stat_archiver")[0][0]
    lsn0 = pg.execute("SELECT pg_current_wal_lsn()")[0][0]
    threads = [threading.Thread(target=f, daemon=True) for f in (shipper, sampler)]
    for t in threads:
        t.start()
    bench = subprocess.Popen(
        [str(pg.client_bin_dir / "pgbench"), "-c", "2", "-j", "2", "-T", str(seconds), "bench_pgbench"],
        env=m.client_env(pg),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(max(1.0, seconds - 2.0))
        t_target = pg.execute("SELECT clock_timestamp()")[0][0]  # PITR target: ~2 s before the end
        out, err = bench.communicate(timeout=seconds + 120)
        if bench.returncode != 0:
            raise RuntimeError(f"pgbench failed: {err[-2000:]}")
        wal_bytes = pg.execute(f"SELECT pg_current_wal_lsn() - '{lsn0}'::pg_lsn")[0][0]
        last = _wait_archived(pg)
        t_drained = time.monotonic() - t_start
    finally:
        if bench.poll() is None:
            bench.kill()
        stop.set()
        for t in threads:
            t.join()
    final = ship_spool(spool, repo, TARGET)
    tps = next((ln.split("=")[1].split()[0] for ln in out.splitlines() if ln.startswith("tps")), None)
    during = [s for s in samples if s[0] <= seconds + 0.5]
    shipped = sum(s[2] for s in ships) + len(final.shipped)
    res = {
        "pgbench_seconds": seconds,
        "tps": round(float(tps), 1) if tps else None,
        "backlog_shipped_before": len(backlog.shipped),
        "wal_bytes": int(wal_bytes),
        "segments_archived": pg.execute("SELECT archived_count FROM pg_stat_archiver")[0][0] - archived0,
        "segments_shipped": shipped,
        "last_segment": last,
        "max_lag_segments": max((s[1] for s in during), default=0),
        "max_lag_seconds": max((s[2] for s in during), default=0.0),
        "max_ready_not_pushed": max((s[3] for s in during), default=0),
        "drained_after_s": round(t_drained, 2),
        "ship_errors": errors,
        "ship_median_s": statistics.median([s[1] for s in ships]) if ships else None,
        "samples": samples,
        "ships": ships,
        "target_time": t_target.isoformat(),
    }
    log(
        f"  pgbench {seconds} s: {res['tps']} tps, {wal_bytes / MiB:.0f} MiB WAL, {shipped} segments shipped; "
        f"max spool lag {res['max_lag_segments']} segments / {res['max_lag_seconds']} s, "
        f"max .ready {res['max_ready_not_pushed']}"
    )
    return res, t_target


def run_physical(args, log) -> dict:
    from vaultflow.engines.base import BackupContext
    from vaultflow.engines.postgres.incremental import physical_incremental_backup
    from vaultflow.engines.postgres.physical import physical_full_backup
    from vaultflow.engines.postgres.recovery import RecoveryTarget, recover
    from vaultflow.engines.postgres.settings import PostgresSettings
    from vaultflow.manifest import BackupKind
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore
    from vaultflow.testing.postgres_server import embedded_bin_dir, running_postgres
    from vaultflow.testing.service_python import service_user_python
    from vaultflow.testing.unprivileged import SERVICE_USER, give_to_service_user, running_as_root

    run_as = SERVICE_USER if running_as_root() else None
    python = service_user_python()
    work = Path(tempfile.mkdtemp(prefix="vfbench-phys-", dir="/tmp"))
    work.chmod(0o711)  # restored clusters run as the service user
    (work / "spoolp").mkdir()
    give_to_service_user(work / "spoolp")
    spool, repo_dir, out = work / "spoolp" / "spool", work / "repo", work / "out"
    out.mkdir()
    repo = Repository(LocalStore(repo_dir))
    settings = {**SETTINGS, "archive_command": python.command("push", "%p", "--spool", str(spool))}
    doc: dict = {"settings": settings, "service_python": python.how}
    try:
        with running_postgres(embedded_bin_dir(), work / "pg", settings=settings, name="bench-phys") as pg:
            m.track_servers(pg=m.postmaster_pid(pg))
            version = pg.execute("SHOW server_version")[0][0]
            algorithms = [a.strip().upper() for a in args.manifest_checksums.split(",") if a.strip()]
            cfgs = {
                alg: PostgresSettings(
                    target_name=TARGET,
                    host=pg.host,
                    port=pg.port,
                    user=pg.user,
                    mode="physical",
                    bin_dir=str(pg.client_bin_dir),
                    server_bin_dir=str(pg.bin_dir),
                    restore_os_user=run_as,
                    manifest_checksums=alg,
                )
                for alg in algorithms
            }
            cfg = cfgs[algorithms[0]]  # the full that the target and the incremental use
            printed = cfg.model_copy(update={"physical_fingerprints": True})  # the default is off
            doc["manifest_checksums"] = algorithms
            log(f"physical: PostgreSQL {version} (archive_mode=on, summarize_wal=on); generating data")
            t0 = time.monotonic()
            gen = datagen.generate(pg, "bench_phys", args.physical_mb, datagen.bytes_per_row(pg), log=log)
            pg.execute("CREATE DATABASE bench_pgbench")
            m.run_tool(
                [str(pg.client_bin_dir / "pgbench"), "-i", "-q", "-s", str(args.pgbench_scale), "bench_pgbench"],
                m.client_env(pg),
            )
            pg.execute("VACUUM (FREEZE, ANALYZE)", dbname="bench_pgbench")
            pg.execute("CHECKPOINT")
            _wait_archived(pg)
            for p in spool.iterdir():  # setup WAL: before any backup, no restore needs it
                p.unlink()
            cluster = pg.execute("SELECT sum(pg_database_size(oid)) FROM pg_database")[0][0]
            doc["database"] = {
                "name": gen.database,
                "size_mb": round(gen.size_bytes / MiB, 1),
                "rows": gen.rows,
                "cluster_size_mb": round(int(cluster) / MiB, 1),
                "pgbench_scale": args.pgbench_scale,
                "setup_seconds": round(time.monotonic() - t0, 1),
            }
            log(
                f"  cluster {int(cluster) / MiB:.0f} MiB (incl. pgbench -s {args.pgbench_scale}), setup "
                f"{doc['database']['setup_seconds']} s"
            )

            runs: dict[str, list[m.Run]] = {}
            manifests = {}
            for i in range(args.repeat):
                order = ["stock", *algorithms, "printed"] if i % 2 == 0 else ["printed", *algorithms[::-1], "stock"]
                for which in order:
                    if which == "stock":
                        f = out / f"base{i}.tar.zst"
                        run = m.measure(_stock(pg, f))
                        f.unlink()
                        runs.setdefault("basebackup_zstd", []).append(run)
                    elif which == "printed":  # physical_fingerprints=True: table scans during the copy
                        run = m.measure(
                            _vf(
                                physical_full_backup,
                                printed,
                                BackupContext(repo, log=lambda line: None),
                                bin_dir=pg.client_bin_dir,
                                server_version=version,
                            )
                        )
                        manifests["full_printed"] = run.extra.pop("manifest")
                        runs.setdefault("vaultflow_full_with_fingerprints", []).append(run)
                    else:  # one full per manifest checksum algorithm; the first one is the target's
                        run = m.measure(
                            _vf(
                                physical_full_backup,
                                cfgs[which],
                                BackupContext(repo, log=lambda line: None),
                                bin_dir=pg.client_bin_dir,
                                server_version=version,
                            )
                        )
                        man = run.extra.pop("manifest")
                        key = "vaultflow_full" if which == algorithms[0] else f"vaultflow_full_{which}"
                        if which == algorithms[0]:  # the incremental's parent and the restores' backup
                            manifests["full"] = man
                        runs.setdefault(key, []).append(run)
                    log(f"  {which} full: {run.seconds:.2f} s, {run.size / 1e6:.1f} MB {run.extra.get('timings', '')}")

            for t, setc in CHANGE.items():
                pg.execute(f"UPDATE {t} SET {setc} WHERE id <= {max(1, gen.rows[t] // 100)}", dbname=gen.database)
            pg.execute("CHECKPOINT")
            run = m.measure(
                _vf(
                    physical_incremental_backup,
                    cfg,
                    BackupContext(repo, log=lambda line: None),
                    manifests["full"],
                    BackupKind.INCREMENTAL,
                    bin_dir=pg.client_bin_dir,
                    server_version=version,
                )
            )
            manifests["incremental"] = run.extra.pop("manifest")
            runs["vaultflow_incremental"] = [run]
            log(f"  incremental: {run.seconds:.2f} s, {run.size / 1e6:.1f} MB {run.extra['timings']}")
            run = m.measure(
                _vf(
                    physical_incremental_backup,
                    printed,
                    BackupContext(repo, log=lambda line: None),
                    manifests["full_printed"],
                    BackupKind.INCREMENTAL,
                    bin_dir=pg.client_bin_dir,
                    server_version=version,
                )
            )
            run.extra.pop("manifest")
            runs["vaultflow_incremental_with_fingerprints"] = [run]
            log(f"  incremental with fingerprints: {run.seconds:.2f} s, {run.size / 1e6:.1f} MB {run.extra['timings']}")
            doc["backup"] = {k: m.summarize(v) for k, v in runs.items()}

            log(f"physical: pgbench -c 2 -j 2 -T {args.pgbench_seconds} with ship_spool following the spool")
            doc["wal"], t_target = _wal_phase(pg, spool, repo, args.pgbench_seconds, log)
            doc["wal"]["push_latency"] = _push_latency(python)
            log(f"  wal-push of 16 MiB: median {doc['wal']['push_latency']['median_s'] * 1000:.0f} ms")
            give_to_service_user(repo_dir)
            fetch = python.command("fetch", "--repo-path", str(repo_dir), "--target", TARGET)
            doc["restore"] = {}
            for key, target, fc in (("full", RecoveryTarget(), None), ("pitr", RecoveryTarget(time=t_target), fetch)):
                dest = work / f"restore-{key}"
                t0 = time.monotonic()
                result, _ = recover(
                    BackupContext(repo, log=lambda line: None),
                    manifests["full"],
                    dest,
                    bin_dir=pg.bin_dir,
                    user=pg.user,
                    target=target,
                    fetch_command=fc,
                    run_as=run_as,
                )
                wall = time.monotonic() - t0
                doc["restore"][key] = {
                    "seconds": round(result.seconds, 3),
                    "wall_seconds": round(wall, 3),
                    "fingerprints_ok": result.comparison.ok if target.immediate else None,
                }
                log(f"  recover {key}: {result.seconds:.2f} s until promoted (wall {wall:.2f} s)")
                shutil.rmtree(dest, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    b, w, r = doc["backup"], doc["wal"], doc["restore"]
    values = {
        "full_time_vs_basebackup_zstd": b["vaultflow_full"]["seconds"] / b["basebackup_zstd"]["seconds"],
        "incremental_size_vs_full": b["vaultflow_incremental"]["size"] / b["vaultflow_full"]["size"],
        "incremental_time_vs_full": b["vaultflow_incremental"]["seconds"] / b["vaultflow_full"]["seconds"],
        "max_archive_lag_segments": w["max_lag_segments"],
        "full_time_vs_basebackup_zstd_with_fingerprints": b["vaultflow_full_with_fingerprints"]["seconds"]
        / b["basebackup_zstd"]["seconds"],
        "incremental_time_vs_full_with_fingerprints": b["vaultflow_incremental_with_fingerprints"]["seconds"]
        / b["vaultflow_full_with_fingerprints"]["seconds"],
    }
    doc["full_time_vs_basebackup_zstd_by_checksums"] = {
        alg: round(
            b["vaultflow_full" if alg == doc["manifest_checksums"][0] else f"vaultflow_full_{alg}"]["seconds"]
            / b["basebackup_zstd"]["seconds"],
            4,
        )
        for alg in doc["manifest_checksums"]
    }
    doc["targets"] = {
        k: {"value": round(v, 4), "target": f"<= {TARGETS[k][0]}", "pass": v <= TARGETS[k][0], "meaning": TARGETS[k][2]}
        for k, v in values.items()
    }
    doc["figures"] = {
        "max_archive_lag_seconds": w["max_lag_seconds"],
        "wal_push_median_s": w["push_latency"]["median_s"],
        "segments_archived": w["segments_archived"],
        "restore_full_s": r["full"]["seconds"],
        "restore_pitr_s": r["pitr"]["seconds"],
        "pitr_vs_full_restore": round(r["pitr"]["seconds"] / r["full"]["seconds"], 3),
    }
    return doc


def summary_lines(p: dict) -> list[str]:
    b, w, r = p["backup"], p["wal"], p["restore"]
    lines = [
        "",
        f"  PHYSICAL  cluster {p['database']['cluster_size_mb']:.0f} MiB ({p['database']['name']} "
        f"{p['database']['size_mb']:.0f} MiB + pgbench -s {p['database']['pgbench_scale']})",
    ]
    for label, key in (
        ("pg_basebackup -Ft -X fetch | zstd -3 -T0", "basebackup_zstd"),
        (f"vaultflow physical_full_backup {p.get('manifest_checksums', [''])[0]}", "vaultflow_full"),
        *[
            (f"vaultflow physical_full_backup {alg}", f"vaultflow_full_{alg}")
            for alg in p.get("manifest_checksums", [])[1:]
        ],
        ("vaultflow incremental (1% rows changed)", "vaultflow_incremental"),
    ):
        lines.append(
            f"  {label:<44}{b[key]['seconds']:8.2f} s  {b[key]['size'] / 1e6:9.1f} MB  "
            f"runs {b[key]['all_seconds']} {b[key]['extra'].get('timings', '')}"
        )
    lines.append(
        f"  pgbench {w['pgbench_seconds']} s: {w['tps']} tps, {w['wal_bytes'] / MiB:.0f} MiB WAL, "
        f"{w['segments_archived']} segments archived; max lag {w['max_lag_segments']} segments / "
        f"{w['max_lag_seconds']} s; wal-push median {w['push_latency']['median_s'] * 1000:.0f} ms"
    )
    lines.append(
        f"  recover full {r['full']['seconds']:.2f} s, PITR {r['pitr']['seconds']:.2f} s "
        f"(x{p['figures']['pitr_vs_full_restore']:.2f})"
    )
    for name, t in p["targets"].items():
        lines.append(f"  {name:<45}{t['value']:>9.3f}  {t['target']:>8}   {'PASS' if t['pass'] else 'FAIL'}")
    return lines
