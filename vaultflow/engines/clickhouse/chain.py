"""A backup chain on the backup disk: every link's native backup of one database written back from
the repository (checked) under the name it was taken under, because each incremental's `.backup`
names its base by that name (`<base_backup>Disk('backups', 'vaultflow/<target>/<id>/<db>')`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from vaultflow.engines.base import BackupContext
from vaultflow.engines.clickhouse.consistency import ClickHouseBackupConsistency
from vaultflow.engines.clickhouse.staging import materialise
from vaultflow.errors import ChainBrokenError
from vaultflow.manifest import Manifest


def native_name(manifest: Manifest, database: str) -> str:
    """The name `database`'s native backup of `manifest` was taken under on the backup disk.
    ChainBrokenError when the backup does not hold that database."""
    native = ClickHouseBackupConsistency.of(manifest).databases.get(database)
    if native is None:
        raise ChainBrokenError(f"backup {manifest.id} holds no database {database!r}")
    return native.name


def materialise_chain(ctx: BackupContext, chain: list[Manifest], database: str, root: Path, made: list[Path]) -> None:
    """Write each link of `chain` ([full, ..., newest]) of `database` under `root` at its own name,
    every file checked (vaultflow.engines.clickhouse.staging.materialise). Appends each directory to
    `made` before writing it, so the caller removes them all, whatever happens. IntegrityError
    naming the first bad object."""
    for link in chain:
        directory = root / native_name(link, database)
        shutil.rmtree(directory, ignore_errors=True)  # a leftover of a killed run: written again
        made.append(directory)
        materialise(ctx, link, database, directory)
