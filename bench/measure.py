"""Timing helpers and the contenders: each one is a function that does one full run.

A run is measured by wall clock (time.monotonic) plus CPU accounting, so a slow contender
can be explained: machine-wide busy CPU seconds (psutil.cpu_times, all cores), the CPU of
this process (vaultflow's zstd threads, sha256 and Python), of its reaped children
(pg_dump, zstd, pg_restore), and of the servers we started (PostgreSQL: postmaster, live
backends and reaped ones; SeaweedFS). What is left of the machine-wide figure belongs to
other processes on the machine: `cpu_others_s` > 0 means the run was disturbed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

SETTLE_S = 0.3
_SERVERS: dict[str, psutil.Process] = {}  # processes we started whose CPU counts as ours


def track_servers(**pids: int | None) -> None:
    _SERVERS.clear()
    _SERVERS.update({name: psutil.Process(pid) for name, pid in pids.items() if pid})


def postmaster_pid(pg) -> int | None:
    try:
        return int((pg.data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def server_cpu(only: str | None = None) -> float:
    """CPU of the tracked servers: their own, their live children's, and their reaped children's."""
    total = 0.0
    for name, proc in _SERVERS.items():
        if only is not None and name != only:
            continue
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
            kids = proc.children(recursive=True)
        except psutil.Error:
            continue
        for kid in kids:
            try:
                kt = kid.cpu_times()
                total += kt.user + kt.system
            except psutil.Error:
                continue
    return total


@dataclass
class Run:
    seconds: float
    size: int | None = None  # bytes written (the backup), if the contender writes one
    cpu_busy_s: float = 0.0  # all cores, whole machine
    cpu_self_s: float = 0.0  # this Python process (all its threads)
    cpu_children_s: float = 0.0  # reaped child processes (pg_dump, zstd, pg_restore...)
    cpu_servers_s: float = 0.0  # PostgreSQL backends (COPY out, fingerprints, restore), SeaweedFS
    cpu_s3_server_s: float = 0.0  # the SeaweedFS part of cpu_servers_s
    cpu_others_s: float = 0.0  # everything else on the machine: noise from other work
    load_avg_1m: float = 0.0  # at the end of the run
    extra: dict = field(default_factory=dict)


def _busy() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def measure(fn: Callable[[], tuple[int | None, dict] | None]) -> Run:
    """Run fn once; fn returns (size, extra) or None."""
    w0, s0, t0, b0, o0 = server_cpu("s3"), server_cpu(), time.monotonic(), _busy(), os.times()
    out = fn()
    t1, b1, o1 = time.monotonic(), _busy(), os.times()
    # Backends exit and get reaped by the postmaster a moment after their client is done;
    # only then does their CPU show up in its children's times. Not part of the wall time.
    time.sleep(SETTLE_S)
    s1, w1 = server_cpu(), server_cpu("s3")
    size, extra = out if out is not None else (None, {})
    run = Run(
        seconds=t1 - t0,
        size=size,
        cpu_busy_s=b1 - b0,
        cpu_self_s=(o1.user - o0.user) + (o1.system - o0.system),
        cpu_children_s=(o1.children_user - o0.children_user) + (o1.children_system - o0.children_system),
        cpu_servers_s=s1 - s0,
        cpu_s3_server_s=w1 - w0,
        load_avg_1m=os.getloadavg()[0],
        extra=extra,
    )
    run.cpu_others_s = max(0.0, run.cpu_busy_s - run.cpu_self_s - run.cpu_children_s - run.cpu_servers_s)
    return run


def summarize(runs: list[Run]) -> dict:
    """The fastest run's figures plus every wall time, for the JSON."""
    best = min(runs, key=lambda r: r.seconds)
    doc = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(best).items()}
    doc["all_seconds"] = [round(r.seconds, 3) for r in runs]
    return doc


def client_env(pg) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(pg.libpq_env())
    return env


def run_tool(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


def warm_up(pg, database: str) -> float:
    """One read of every table so all contenders start from the same (warm) cache."""
    t0 = time.monotonic()
    tables = pg.execute(
        "SELECT quote_ident(relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE relkind = 'r' AND nspname = 'public'",
        dbname=database,
    )
    for (table,) in tables:
        pg.execute(f"SELECT count(*) FROM {table}", dbname=database)
    return time.monotonic() - t0


def fresh_dir(parent: Path, name: str) -> Path:
    path = parent / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- backup contenders --------------------------------------------------------------------


def pg_dump_fc(pg, database: str, out: Path) -> Callable:
    """The seed's command: custom format with pg_dump's default (gzip) compression."""

    def run():
        run_tool([str(pg.client_bin_dir / "pg_dump"), "-Fc", "-f", str(out), database], client_env(pg))
        return out.stat().st_size, {}

    return run


def raw_floor(pg, database: str, out: Path) -> Callable:
    """Uncompressed custom dump piped through multi-threaded zstd -3, then fsync'd like the others."""
    pipeline = (
        f"set -o pipefail; '{pg.client_bin_dir / 'pg_dump'}' -Fc -Z0 '{database}' "
        f"| zstd -3 -T0 -q -c > '{out}' && sync '{out}'"
    )

    def run():
        run_tool(["bash", "-c", pipeline], client_env(pg))
        return out.stat().st_size, {}

    return run


def pg_dump_uncompressed(pg, database: str, out: Path) -> Callable:
    """pg_dump -Fc -Z0 to a file: the input of the pg_restore contender (also a data point)."""

    def run():
        run_tool([str(pg.client_bin_dir / "pg_dump"), "-Fc", "-Z0", "-f", str(out), database], client_env(pg))
        return out.stat().st_size, {}

    return run


def pg_dump_devnull(pg, database: str) -> Callable:
    """Diagnostic: the dump alone, no compression, no disk: how fast can the server hand it out?"""

    def run():
        pipeline = f"set -o pipefail; '{pg.client_bin_dir / 'pg_dump'}' -Fc -Z0 '{database}' | cat > /dev/null"
        run_tool(["bash", "-c", pipeline], client_env(pg))

    return run


def zstd_file(src: Path, options: str = "-3") -> Callable:
    """Diagnostic: zstd -T0 alone over an uncompressed dump file (in page cache): time and size."""

    def run():
        out = subprocess.run(
            ["bash", "-c", f"set -o pipefail; zstd {options} -T0 -q -c '{src}' | wc -c"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return int(out), {"options": options}

    return run


def vaultflow_core(engine, repository) -> Callable:
    """PostgresEngine.full_backup into `repository` (LocalStore or S3Store), no Prefect."""
    from vaultflow.engines.base import BackupContext

    def run():
        manifest = engine.full_backup(BackupContext(repository=repository, log=lambda line: None))
        return manifest.stored_size, {
            "manifest": manifest,
            "raw_size": manifest.raw_size,
            "timings": {k: round(v, 3) for k, v in manifest.timings.items()},
        }

    return run


def vaultflow_core_without_fingerprints(engine, repository) -> Callable:
    """Diagnostic: the same backup with the concurrent fingerprint query replaced by a no-op."""
    import vaultflow.engines.postgres.engine as pg_engine

    inner = vaultflow_core(engine, repository)

    def run():
        original = pg_engine.fingerprint_tables
        pg_engine.fingerprint_tables = lambda conn: {}
        try:
            return inner()
        finally:
            pg_engine.fingerprint_tables = original

    return run


def store_put(store, key: str, src: Path) -> Callable:
    """Diagnostic: the store alone: put an existing file (a stored dump) under `key`."""

    def run():
        with open(src, "rb") as fh:
            return store.put(key, fh, size_hint=src.stat().st_size), {}

    return run


def fingerprint(engine, database: str) -> Callable:
    def run():
        return None, {"tables": len(engine.fingerprint(database))}

    return run


# -- restore contenders -------------------------------------------------------------------


def pg_restore_file(pg, dump: Path, target: str) -> Callable:
    """CREATE DATABASE + single-job pg_restore of an uncompressed custom dump."""

    def run():
        pg.execute(f'CREATE DATABASE "{target}" TEMPLATE template0')
        run_tool([str(pg.client_bin_dir / "pg_restore"), "--exit-on-error", "-d", target, str(dump)], client_env(pg))

    return run


def vaultflow_restore(engine, repository, manifest, target: str) -> Callable:
    """engine.restore: stream + sha256 verify + zstd decompress into pg_restore, then fingerprint compare."""
    from vaultflow.engines.base import BackupContext

    def run():
        result = engine.restore(BackupContext(repository=repository, log=lambda line: None), manifest, into=target)
        return None, {
            "engine_seconds": round(result.seconds, 3),
            "all_match": result.comparison.ok,
            "tables_compared": len(result.comparison.tables),
        }

    return run
