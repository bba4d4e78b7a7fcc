"""Prune tasks: the planner decides, these only execute."""

from __future__ import annotations

from prefect import task

from tasks.common import SIDE_EFFECT_TASK
from vaultflow.manifest import Manifest
from vaultflow.repository import Repository


@task(name="delete-backup", task_run_name="delete-{manifest.id}", **SIDE_EFFECT_TASK)
def delete_backup(repository: Repository, manifest: Manifest) -> int:
    return repository.delete_backup(manifest)


@task(name="delete-orphans", **SIDE_EFFECT_TASK)
def delete_objects(repository: Repository, keys: list[str]) -> int:
    for key in keys:
        repository.store.delete(key)
    return len(keys)
