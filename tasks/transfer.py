"""Upload task: copy one committed backup to another repository (vaultflow.transfer)."""

from __future__ import annotations

from prefect import get_run_logger, task

from vaultflow.manifest import Manifest
from vaultflow.repository import Repository
from vaultflow.tasks.common import SIDE_EFFECT_TASK
from vaultflow.transfer import CopyResult, Progress, copy_backup


@task(name="upload", task_run_name="upload-{manifest.id}", **SIDE_EFFECT_TASK)
def upload(
    source: Repository, destination: Repository, manifest: Manifest, progress: Progress | None = None
) -> CopyResult:
    """Copy backup `manifest` from `source` to `destination`, objects verified, manifest last.
    Resumable: a retry (network trouble is retried) sends only what is not yet intact there."""
    return copy_backup(source, destination, manifest, log=get_run_logger().info, progress=progress)
