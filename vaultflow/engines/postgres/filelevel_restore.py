"""Restoring a PostgreSQL 15/16 file-level chain (see pg_filelevel for the backups).

pg_incremental.restore_chain resolves the chain [full, ..., backup] and checks every link's
objects and `dest` first, then hands file-level chains here. The full is extracted
(restore_physical) into a private work directory next to `dest`, each later link's
files.tar.zst is laid over it in order (sha256-verified while streaming), files and
directories that the newest file list does not name are deleted (dropped relations and
databases, the full's WAL and backup_manifest; the newest backup_label and WAL stay), every
listed file's size is checked, and the directory is renamed into `dest`: it appears whole or
not at all. Starting it replays the newest backup's WAL from its backup_label.

By hand: extract the full's base.tar.zst, then each link's files.tar.zst in order over it,
delete what `filelist.json.zst` of the newest does not list (docs/postgres.md), start.
"""

from __future__ import annotations

import os
import tarfile
import time
from pathlib import Path

from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.cluster import AUTO_CONF, set_auto_conf
from vaultflow.engines.postgres.consistency import PostgresPhysicalConsistency
from vaultflow.engines.postgres.filestate import FILELIST_OBJECT, FILES_OBJECT, FileState, load_state
from vaultflow.engines.postgres.physical import RESTORED_SETTINGS
from vaultflow.engines.postgres.physical_restore import complete_config, drain, restore_physical
from vaultflow.engines.postgres.safe_extract import extract_stream
from vaultflow.errors import ChainBrokenError, IntegrityError, NotFoundError, ToolError
from vaultflow.manifest import Manifest
from vaultflow.pipeline import open_verified
from vaultflow.proc import mkdtemp, remove
from vaultflow.summary import human_duration


def is_filelevel(manifest: Manifest) -> bool:
    """A PostgreSQL 15/16 file-level backup (a physical one taken with pg_backup_start/stop)."""
    return isinstance(manifest.consistency, PostgresPhysicalConsistency) and manifest.consistency.file_level


def _read_object(ctx: BackupContext, manifest: Manifest, key: str) -> bytes:
    obj = next((o for o in manifest.objects if o.key == key), None)
    if obj is None:
        raise IntegrityError(f"backup {manifest.id} lists no {key}")
    try:
        reader, verifying, raw = open_verified(
            ctx.repository.store,
            ctx.repository.object_key(manifest, key),
            obj.sha256,
            obj.stored_size,
            name=f"{manifest.id}/{key}",
        )
    except NotFoundError:
        raise IntegrityError(
            f"object {manifest.id}/{key} is missing from {ctx.repository.description} although "
            "its backup is committed: the repository is damaged"
        ) from None
    with raw:
        data = reader.read()
        drain(reader)
        verifying.check()
    return data


def _overlay(ctx: BackupContext, link: Manifest, data_dir: Path) -> set[str]:
    """Extract a link's tar over data_dir (verified); the member names it held."""
    name = f"{link.id}/{FILES_OBJECT}"
    obj = next(o for o in link.objects if o.key == FILES_OBJECT)
    names: set[str] = set()
    reader, verifying, raw = open_verified(
        ctx.repository.store, ctx.repository.object_key(link, FILES_OBJECT), obj.sha256, obj.stored_size, name=name
    )
    with raw:
        try:
            for member in extract_stream(reader, data_dir):
                names.add(member.name.rstrip("/"))
        except tarfile.TarError as exc:
            drain(reader)
            verifying.check()
            raise ToolError(f"cannot extract {name} into {data_dir}: {exc}") from exc
        drain(reader)
        verifying.check()
    return names


_CONFIG_FILES = {"postgresql.conf", "pg_hba.conf", "pg_ident.conf", "postgresql.auto.conf"}


def _prune_and_check(data_dir: Path, state: FileState, newest: set[str], backup_id: str) -> int:
    """Delete what the newest backup did not list (dropped relations and databases, the full's
    WAL and backup_manifest); check every listed file is there with its size."""
    keep = set(state.files) | newest | _CONFIG_FILES
    removed = 0
    for root, dirs, files in os.walk(data_dir, topdown=False):
        rel_root = os.path.relpath(root, data_dir)
        rel_root = "" if rel_root == "." else rel_root + "/"
        for file_name in files:
            if rel_root + file_name not in keep:
                os.unlink(os.path.join(root, file_name))
                removed += 1
        for dir_name in dirs:
            rel = rel_root + dir_name
            if rel not in state.dirs and rel not in newest and not os.listdir(os.path.join(root, dir_name)):
                os.rmdir(os.path.join(root, dir_name))
    for path, entry in state.files.items():
        if path == AUTO_CONF:
            continue  # rewritten by every restore (archive_mode = off)
        try:
            size = os.stat(data_dir / path).st_size
        except FileNotFoundError:
            size = None
        if size != entry.size:
            raise IntegrityError(
                f"restoring {backup_id}: {path} should be {entry.size} bytes from backup "
                f"{entry.source} but the chain gave {'nothing' if size is None else size}"
            )
    return removed


def restore_filelevel_chain(ctx: BackupContext, manifest: Manifest, chain: list[Manifest], dest: Path) -> None:
    """Restore a file-level chain [full, ..., manifest] (resolved, objects present, `dest` new
    or empty: pg_incremental.restore_chain checked) into `dest`, which appears whole or not at all."""
    odd = [m.id for m in chain[1:] if not is_filelevel(m)]
    if odd:
        raise ChainBrokenError(
            f"cannot restore {manifest.id}: its chain mixes file-level and native incremental "
            f"backups ({', '.join(odd)})"
        )
    state = load_state(_read_object(ctx, manifest, FILELIST_OBJECT), f"{manifest.id}/{FILELIST_OBJECT}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = mkdtemp(f".vfchain-{manifest.id}-", dest.parent)  # ours, inside the user's parent: removed if killed
    try:
        t0 = time.monotonic()
        data_dir = work / "data"
        restore_physical(ctx, chain[0], data_dir)
        newest: set[str] = set()
        for link in chain[1:]:
            newest = _overlay(ctx, link, data_dir)
        removed = _prune_and_check(data_dir, state, newest, manifest.id)
        complete_config(data_dir, ctx)
        set_auto_conf(data_dir, RESTORED_SETTINGS)
        os.chmod(data_dir, 0o700)
        os.replace(data_dir, dest)  # onto a new or empty directory: dest appears whole
        ctx.log(
            f"restored {manifest.id} from a file-level chain of {len(chain)} backups in "
            f"{human_duration(time.monotonic() - t0)} ({removed} files deleted since the full)"
        )
    finally:
        remove(work)


__all__ = ["is_filelevel", "restore_filelevel_chain"]
