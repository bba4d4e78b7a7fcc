"""archive-logs: ship WAL from the local spool (filled by archive_command) to the repository."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from prefect import flow, get_run_logger
from prefect.events import emit_event

from flows._fit import how_to_fix, misfit
from flows._support import (FLOW_RETRIES, RepositoryParam, TargetParam, fail_fast_on_permanent_errors,
                            load_repository, load_target, run_name, target_resource)
from tasks.wal import ship_wal
from vaultflow.errors import ConfigError
from vaultflow.engines.postgres.wal import is_segment, ship_spool, spooled


@flow(name="archive-logs", flow_run_name=run_name("wal"), log_prints=True, **FLOW_RETRIES)
def archive_logs(target: TargetParam, repository: RepositoryParam, spool_dir: Optional[str] = None,
                 follow_seconds: float = 0.0) -> dict:
    """Compress, checksum, store and verify every spooled WAL file, then remove it from the spool.

    Runs every minute; `archive_command = 'vaultflow wal-push %p --spool DIR'` only copies into
    the spool, so PostgreSQL never waits for the repository. The result and the
    `vaultflow.engines.postgres.wal.shipped` event carry the archive lag (segments and seconds still spooled).
    With `follow_seconds` the run keeps shipping (polling the spool every 0.5 s when idle) for that
    long, so a deployment every minute with follow_seconds=50 keeps the lag to seconds under
    heavy write load; the result then also has the largest lag seen.

    Args:
        target: The target block, or its name ('postgres-target/prod', 'redis-target/cache', or
            'prod' when one kind alone has a block of that name).
        repository: The BackupRepository block, or its name ('backup-repository/main').
        spool_dir: The spool directory archive_command fills; default: the target's wal_spool.
        follow_seconds: Keep shipping for this many seconds (0: ship what is spooled, then stop).
    """
    logger = get_run_logger()
    with fail_fast_on_permanent_errors():
        target_block = load_target(target)
        _, repo = load_repository(repository)
        why = misfit("archive-logs", target_block, spool_dir)
        if why:  # a permanent misconfiguration: fails at once, without retries
            raise ConfigError(f"{why}. To archive WAL, {how_to_fix('archive-logs')}.")
        spool = spool_dir or target_block.wal_spool
        resource = target_resource("postgres", target_block.name)
        try:
            result = ship_wal(Path(spool), repo, target_block.name)
            shipped, max_lag = list(result.shipped), result.lag_segments
            deadline = time.monotonic() + follow_seconds
            while time.monotonic() < deadline:
                if not result.shipped:
                    time.sleep(0.5)  # idle: poll; after shipping something, look again at once
                max_lag = max(max_lag, sum(1 for n in spooled(Path(spool)) if is_segment(n.name)))
                result = ship_spool(Path(spool), repo, target_block.name, level=repo.compression_level)
                shipped += result.shipped
            result.shipped = shipped
        except Exception as exc:  # still report the lag, and which segment is stuck
            partial = getattr(exc, "ship_result", None)
            emit_event(event="vaultflow.engines.postgres.wal.ship-failed", resource=resource, payload={
                "segment": getattr(exc, "segment", None), "error": str(exc),
                **({"lag_segments": partial.lag_segments, "lag_seconds": partial.lag_seconds} if partial else {})})
            raise
        summary = {**result.as_dict(), "max_lag_segments": max_lag}
        emit_event(event="vaultflow.engines.postgres.wal.shipped", resource=resource,
                   payload={k: v for k, v in summary.items() if k != "already_stored"})
        logger.info(f"shipped {len(result.shipped)} WAL files ({result.stored_bytes / 1e6:.1f} MB stored); "
                    f"lag {result.lag_segments} segments, {result.lag_seconds:.0f} s")
    return summary
