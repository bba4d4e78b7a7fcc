"""The parent of a physical incremental or differential backup: checks that it may anchor the
new backup (same target, physical, the kind's rules, the required objects), that the server is
still the one it was taken from (system identifier, timeline), and its backup_manifest fetched
back verified. Shared by the native (17+, incremental.py) and file-level (15/16, filelevel.py)
incrementals.
"""

from __future__ import annotations

from pathlib import Path

from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.consistency import PostgresPhysicalConsistency
from vaultflow.engines.postgres.physical import ENGINE, MANIFEST_OBJECT
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.errors import ChainBrokenError, IntegrityError, NotFoundError, RefusedError
from vaultflow.manifest import BackupKind, Manifest
from vaultflow.pipeline import open_verified
from vaultflow.repository import MANIFEST
from vaultflow.stores.base import CHUNK_SIZE


def validate_parent(
    config: PostgresSettings, parent: Manifest, kind: BackupKind, required: tuple[str, ...] = (MANIFEST_OBJECT,)
) -> None:
    """Check that `parent` may be the parent of a `kind` backup of `config`'s target.

    Caller mistakes (kind FULL, another target, a logical parent, a differential on a non-full)
    are RefusedError; a parent that cannot anchor a chain (it has none of the `required`
    objects) is ChainBrokenError."""
    if kind == BackupKind.FULL:
        raise RefusedError(
            "physical_incremental_backup takes INCREMENTAL or DIFFERENTIAL backups; "
            "use physical_full_backup for a full one"
        )
    if parent.engine != ENGINE or parent.target != config.name:
        raise RefusedError(
            f"backup {parent.id} belongs to {parent.engine}/{parent.target}, not "
            f"{ENGINE}/{config.name}: it cannot be the parent of this target's backup"
        )
    if parent.mode != "physical":
        raise RefusedError(
            f"backup {parent.id} is a {parent.mode} backup: the parent of an {kind.value} backup must be a physical one"
        )
    if kind == BackupKind.DIFFERENTIAL and parent.kind != BackupKind.FULL:
        raise RefusedError(
            f"the parent of a differential backup must be a full backup; {parent.id} is {parent.kind.value}"
        )
    if not any(o.key in required for o in parent.objects):
        raise ChainBrokenError(
            f"backup {parent.id} has no {' or '.join(required)}: it cannot be the parent "
            "of an incremental backup; take a full backup"
        )


def check_identity(parent: Manifest, system: str | None, timeline: int | None, where: str) -> None:
    """ChainBrokenError when the server at `where` (system identifier `system`, current
    `timeline`; None = unknown, not checked) is not the one `parent` was taken from."""
    recorded = PostgresPhysicalConsistency.of(parent)
    theirs = recorded.system_identifier
    if system and theirs and str(theirs) != str(system):
        raise ChainBrokenError(
            f"server was re-initialized or replaced: {where} has system identifier {system} != parent "
            f"{parent.id}'s {theirs}; take a full backup"
        )
    parent_timeline = recorded.timeline
    if timeline is not None and parent_timeline is not None and int(parent_timeline) != int(timeline):
        raise ChainBrokenError(
            f"timeline switched from {parent_timeline} to {timeline} on {where} since parent {parent.id} "
            "was taken (a promotion or point-in-time recovery); take a full backup"
        )


def fetch_parent_manifest(ctx: BackupContext, parent: Manifest, into: Path, key: str = MANIFEST_OBJECT) -> None:
    """The parent's backup_manifest (or another object `key`), sha256-verified, into `into`."""
    repo = ctx.repository
    obj = next(o for o in parent.objects if o.key == key)
    key = repo.object_key(parent, obj.key)
    try:
        reader, verifying, raw = open_verified(
            repo.store, key, obj.sha256, obj.stored_size, name=f"{parent.id}/{obj.key}"
        )
    except NotFoundError:
        if repo.store.stat(repo.object_key(parent, MANIFEST)) is None:  # pruned meanwhile
            raise ChainBrokenError(
                f"parent backup {parent.id} was deleted from {repo.description}; take a full backup"
            ) from None
        raise IntegrityError(
            f"object {parent.id}/{obj.key} is missing from {repo.description} although "
            "its backup is committed: the repository is damaged"
        ) from None
    with raw, open(into, "wb") as out:
        while chunk := reader.read(CHUNK_SIZE):
            out.write(chunk)
        verifying.check()
