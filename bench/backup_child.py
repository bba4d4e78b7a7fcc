"""`python -m bench.backup_child`: one vaultflow core backup in a process of its own.

The parent (bench.subproc.sample_backup_rss) samples this process's RSS from outside; we
also report the kernel's own high-water mark of this process (VmHWM) and the RSS once
imports are done, so start-up cost and per-byte growth can be told apart. (Not ru_maxrss:
Linux carries the *parent's* RSS at fork/exec over into it, here the whole bench process.)
Prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import json
import time


def vm_hwm() -> int:
    """Peak resident set size of this process in bytes (exact, kept by the kernel)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def print_result(manifest, seconds: float, rss_ready: int) -> None:
    """The child's one JSON line: backup wall seconds, stored and raw bytes, RSS after imports,
    VmHWM (bytes) and the manifest's phase timings (seconds)."""
    print(
        json.dumps(
            {
                "seconds": round(seconds, 3),
                "stored_size": manifest.stored_size,
                "raw_size": manifest.raw_size,
                "rss_after_imports": rss_ready,
                "vm_hwm": vm_hwm(),
                "timings": {k: round(v, 3) for k, v in manifest.timings.items()},
            }
        ),
        flush=True,
    )


def backup_and_print(engine, repo: str) -> None:
    """`engine.full_backup` into a LocalStore repository at `repo`, then print_result."""
    import psutil

    from vaultflow.engines.base import BackupContext
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore

    rss_ready = psutil.Process().memory_info().rss
    t0 = time.monotonic()
    manifest = engine.full_backup(BackupContext(repository=Repository(LocalStore(repo)), log=lambda line: None))
    print_result(manifest, time.monotonic() - t0, rss_ready)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--database", required=True)
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--repo", required=True)
    args = parser.parse_args()

    from vaultflow.engines.postgres.engine import PostgresEngine
    from vaultflow.engines.postgres.settings import PostgresSettings

    engine = PostgresEngine(
        PostgresSettings(
            target_name="bench-rss",
            host=args.host,
            port=args.port,
            user=args.user,
            databases=[args.database],
            bin_dir=args.bin_dir,
        )
    )
    backup_and_print(engine, args.repo)


if __name__ == "__main__":
    main()
