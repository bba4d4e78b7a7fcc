"""Restoring a physical backup's tar into a new data directory.

base.tar.zst -> sha256 check -> zstd -> streaming tar extraction (tarfile "r|" with a
data-dir filter, safe_extract: no absolute paths, no `..`, no links out, no devices) into an empty
directory, then postgresql.auto.conf gets archive_mode=off so that a restored copy can never
archive into the production WAL archive. Starting it replays the fetched WAL up to the end
of the backup (backup_label is in the tar); see pg_recovery.start_restored_cluster.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.cluster import set_auto_conf
from vaultflow.engines.postgres.physical import BASE_OBJECT, RESTORED_SETTINGS
from vaultflow.engines.postgres.safe_extract import extract_stream
from vaultflow.errors import IntegrityError, RefusedError, ToolError
from vaultflow.fsutil import empty_directory
from vaultflow.manifest import Manifest
from vaultflow.pipeline import open_verified
from vaultflow.stores.base import CHUNK_SIZE


def _extract(reader, dest: Path) -> None:
    """Member by member from a stream, in bounded memory (safe_extract.extract_stream)."""
    for _ in extract_stream(reader, dest):
        pass


def drain(reader) -> None:
    """Read `reader` to its end (CHUNK_SIZE at a time), so a verifying reader checks its sha256."""
    while reader.read(CHUNK_SIZE):
        pass


def restore_physical(ctx: BackupContext, manifest: Manifest, dest: Path) -> None:
    """Extract a physical backup into `dest` (empty or new; made 0700), checksums verified.

    The result is a data directory that starts as a working cluster (start_restored_cluster);
    with archive_mode=off. On any failure (IntegrityError naming the object on corrupt bytes)
    what was extracted is deleted, and `dest` too if this call created it.
    """
    if manifest.mode != "physical":
        raise RefusedError(f"backup {manifest.id} is a {manifest.mode} backup, not a physical one")
    obj = next((o for o in manifest.objects if o.role == "base"), None)
    if obj is None:
        raise IntegrityError(f"backup {manifest.id} lists no base object ({BASE_OBJECT})")
    dest = Path(dest)
    created = not dest.exists()
    if created:
        dest.mkdir(mode=0o700, parents=True)
    elif not dest.is_dir() or any(dest.iterdir()):
        raise RefusedError(
            f"refusing to restore backup {manifest.id} into {dest}: it is not an empty "
            "directory; nothing was touched. Pick a new or empty directory"
        )
    os.chmod(dest, 0o700)
    name = f"{manifest.id}/{obj.key}"
    try:
        reader, verifying, raw = open_verified(
            ctx.repository.store, ctx.repository.object_key(manifest, obj.key), obj.sha256, obj.stored_size, name=name
        )
        with raw:
            try:
                _extract(reader, dest)
            except tarfile.TarError as exc:
                drain(reader)  # corrupt bytes often look like a broken tar first: let the checksum say so
                verifying.check()
                raise ToolError(f"cannot extract {name} into {dest}: {exc}") from exc
            drain(reader)  # the tar ends before the stream: the checksum is checked at its end
            verifying.check()
        complete_config(dest, ctx)
        set_auto_conf(dest, RESTORED_SETTINGS)
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            empty_directory(dest)
        raise


def complete_config(dest: Path, ctx: BackupContext) -> None:
    """Servers whose config lives outside the data directory (Debian: /etc/postgresql) back up
    without postgresql.conf / pg_hba.conf; give the copy minimal ones so it can start."""
    defaults = {
        "postgresql.conf": "# written by vaultflow: the source kept its configuration outside the data directory\n",
        "pg_hba.conf": "# written by vaultflow (the backup had none): local and loopback only\n"
        "local all all peer\nhost all all 127.0.0.1/32 scram-sha-256\n"
        "host all all ::1/128 scram-sha-256\n",
        "pg_ident.conf": "",
    }
    for file_name, text in defaults.items():
        path = dest / file_name
        if not path.exists():
            path.write_text(text)
            os.chmod(path, 0o600)
            ctx.log(f"restored data directory had no {file_name}; wrote a minimal one")
