"""Verify task: re-read the objects of one backup and check them against its manifest."""

from __future__ import annotations

from prefect import task

from tasks.common import SIDE_EFFECT_TASK
from vaultflow.manifest import Manifest
from vaultflow.repository import ObjectCheck, Repository


@task(name="verify-backup", task_run_name="verify-{manifest.id}", **SIDE_EFFECT_TASK)
def verify_backup(repository: Repository, manifest: Manifest, deep: bool) -> list[ObjectCheck]:
    return repository.verify_backup(manifest, deep=deep)
