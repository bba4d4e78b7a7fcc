"""Log archive tasks: ship a target's continuous log (PostgreSQL WAL, MongoDB oplog) into the repository."""

from __future__ import annotations

from prefect import task

from vaultflow.logarchive import LogArchive, ShipReport, ship_following
from vaultflow.tasks.common import SIDE_EFFECT_TASK


@task(name="archive-logs", **SIDE_EFFECT_TASK)
def archive_logs(archive: LogArchive, follow_seconds: float = 0.0) -> ShipReport:
    """Ship what the server produced into the repository, then keep shipping for
    `follow_seconds`; returns the counts, bytes and lag (vaultflow.logarchive.ship_following).
    Open the archive with `vaultflow.logarchive.open_log_archive(engine, repository, target,
    target_block)`. A retry ships again from where the failed run stopped."""
    return ship_following(archive, follow_seconds)
