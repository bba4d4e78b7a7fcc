"""`python -m bench.flow_child`: the full-backup Prefect flow, timed, in a process of its own.

Runs with Prefect's ephemeral API (the parent sets a private PREFECT_HOME and no
PREFECT_API_URL), so the API server this process starts is gone when it exits and the
bench never touches the user's Prefect database. Blocks are passed as unsaved instances,
as `make demo` does. Prints one JSON line on stdout.

    ephemeral API: started first and timed on its own (fresh database: migrations)
    tiny database: first flow run (cold: first flow/task registration, client set-up),
                   then --repeat warm runs, then the core backup alone (same process)
    big database:  --repeat flow runs
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="postgres")
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--tiny-db", required=True)
    parser.add_argument("--big-db", required=True)
    parser.add_argument("--repo", required=True)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    t0 = time.monotonic()
    from vaultflow.blocks import BackupRepository, PostgresTarget
    from vaultflow.flows.full_backup import full_backup

    import_seconds = time.monotonic() - t0
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from vaultflow.engines.base import BackupContext
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore

    def target(db: str) -> PostgresTarget:
        return PostgresTarget(
            host=args.host,
            port=args.port,
            user=args.user,
            databases=[db],
            target_name=f"flow-{db}",
            bin_dir=args.bin_dir,
        )

    def timed_flow(db: str) -> float:
        repo = BackupRepository(local_path=str(Path(args.repo) / db))
        start = time.monotonic()
        result = full_backup(target=target(db), repository=repo)
        assert result["stored_size"] > 0
        return time.monotonic() - start

    # PREFECT_FLOWS_HEARTBEAT_FREQUENCY="" is rejected by Prefect 3.9 (int expected), so the
    # parent removes it and heartbeats are switched off here (each costs up to ~1 s at exit).
    heartbeats = os.environ.get("BENCH_FLOW_HEARTBEATS") == "1"
    settings = temporary_settings(updates={} if heartbeats else {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
    with settings:
        from prefect import get_client

        start = time.monotonic()
        with get_client(sync_client=True) as client:  # starts the ephemeral API (+ migrations)
            client.api_healthcheck()
        api_start = time.monotonic() - start
        tiny_cold = timed_flow(args.tiny_db)
        tiny_warm = [timed_flow(args.tiny_db) for _ in range(max(1, args.repeat))]
        big = [timed_flow(args.big_db) for _ in range(max(1, args.repeat))]
    core_tiny = []
    for _ in range(max(1, args.repeat)):
        engine = target(args.tiny_db).engine()
        repo = Repository(LocalStore(Path(args.repo) / "core-tiny"))
        start = time.monotonic()
        engine.full_backup(BackupContext(repository=repo, log=lambda line: None))
        core_tiny.append(time.monotonic() - start)
    print(
        json.dumps(
            {
                "heartbeats": heartbeats,
                "import_seconds": round(import_seconds, 3),
                "api_start_seconds": round(api_start, 3),
                "tiny_cold_seconds": round(tiny_cold, 3),
                "tiny_warm_seconds": [round(s, 3) for s in tiny_warm],
                "tiny_core_seconds": [round(s, 3) for s in core_tiny],
                "big_flow_seconds": [round(s, 3) for s in big],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
