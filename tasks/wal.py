"""WAL tasks: ship the local spool to the repository."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from tasks.common import SIDE_EFFECT_TASK
from vaultflow.repository import Repository
from vaultflow.engines.postgres.wal import ShipResult, ship_spool


@task(name="ship-wal", **SIDE_EFFECT_TASK)
def ship_wal(spool_dir: Path, repository: Repository, target: str) -> ShipResult:
    return ship_spool(spool_dir, repository, target, level=repository.compression_level)
