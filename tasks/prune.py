"""Prune tasks: the planner (vaultflow.retention.plan) decides, these only execute."""

from __future__ import annotations

from prefect import task

from vaultflow.manifest import Manifest
from vaultflow.repository import Repository
from vaultflow.tasks.common import SIDE_EFFECT_TASK


@task(name="prune", task_run_name="prune-{manifest.id}", **SIDE_EFFECT_TASK)
def prune(repository: Repository, manifest: Manifest) -> int:
    """Delete one backup: its manifest first (it stops existing for restore), then its payload.
    Returns the number of objects deleted. Pass only backups retention does not keep (and no
    parent of a kept backup): `vaultflow.retention.plan` decides, as the prune flow does."""
    return repository.delete_backup(manifest)


delete_backup = prune  # the prune flow's name for it


@task(name="delete-orphans", **SIDE_EFFECT_TASK)
def delete_objects(repository: Repository, keys: list[str]) -> int:
    """Delete payload objects that belong to no committed backup (killed runs); returns the count."""
    for key in keys:
        repository.store.delete(key)
    return len(keys)
