"""Verify task: re-read the objects of one backup and check them against its manifest."""

from __future__ import annotations

from prefect import task

from vaultflow.manifest import Manifest
from vaultflow.repository import ObjectCheck, Repository
from vaultflow.tasks.common import SIDE_EFFECT_TASK


@task(name="verify-checksum", task_run_name="verify-{manifest.id}", **SIDE_EFFECT_TASK)
def verify_checksum(repository: Repository, manifest: Manifest, deep: bool = True) -> list[ObjectCheck]:
    """One ObjectCheck per object of `manifest`: deep re-reads it and compares its sha256, else
    size only; a mirror's every member is checked."""
    return repository.verify_backup(manifest, deep=deep)


verify_backup = verify_checksum  # the verify flow's name for it
