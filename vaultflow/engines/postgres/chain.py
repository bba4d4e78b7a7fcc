"""Restoring a chain of physical backups (full + incrementals/differential) into a data directory.

Restore (`restore_chain`): the chain is resolved from the catalog back to its full BEFORE
anything is written (Catalog.chain: vaultflow.chain's walk plus this engine's rules, system
identifier and timeline, in postgres/consistency.py); each link is extracted (sha256-verified,
`restore_physical`) into a private work directory next to `dest`, then

    pg_combinebackup --no-sync --manifest-checksums=<the chain's> [--link] <full> <incr...> <target> -o <work>/combined

and the result is renamed into `dest` in one step: `dest` never exists half-written.
`--link` (PostgreSQL 18's pg_combinebackup) hard-links unchanged files from the extracted
links instead of copying them; safe here because those directories are deleted right after.
Disk needed next to `dest`: every link extracted (full + incrementals) plus the reconstructed
relation files.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.client import tool_major
from vaultflow.engines.postgres.cluster import set_auto_conf
from vaultflow.engines.postgres.consistency import PostgresPhysicalConsistency
from vaultflow.engines.postgres.filelevel_restore import is_filelevel, restore_filelevel_chain
from vaultflow.engines.postgres.physical import BASE_OBJECT, RESTORED_SETTINGS, manifest_checksum_algorithm
from vaultflow.engines.postgres.physical_restore import restore_physical
from vaultflow.errors import ConfigError, IntegrityError, RefusedError, ToolError
from vaultflow.manifest import BackupKind, Manifest
from vaultflow.pipeline import StderrTail
from vaultflow.proc import mkdtemp, remove, tied_popen
from vaultflow.repository import Catalog
from vaultflow.summary import human_duration


def combinebackup_command(
    bin_dir: Path, inputs: list[Path], output: Path, *, link: bool, manifest_checksums: str = "CRC32C"
) -> list[str]:
    """pg_combinebackup, oldest (the full) first. --no-sync: like an extracted full restore,
    the server syncs the data directory when it starts recovery from backup_label.
    `manifest_checksums`: the chain's own algorithm (chain_checksum_algorithm), so that
    pg_combinebackup reuses the inputs' checksums instead of hashing every file again."""
    cmd = [str(Path(bin_dir) / "pg_combinebackup"), "--no-sync", f"--manifest-checksums={manifest_checksums}"]
    if link:
        cmd.append("--link")
    return [*cmd, *map(str, inputs), "-o", str(output)]


def chain_checksum_algorithm(manifest: Manifest, extracted_manifest: Path | None = None) -> str:
    """The per-file checksum algorithm of the backup being restored: its extracted
    backup_manifest says, else the vaultflow manifest's consistency record, else SHA256 (what
    vaultflow used before the algorithm was recorded)."""
    if extracted_manifest is not None:
        try:
            with open(extracted_manifest, "rb") as handle:
                found = manifest_checksum_algorithm(handle)
            if found:
                return found
        except OSError:
            pass
    return PostgresPhysicalConsistency.of(manifest).manifest_checksums or "SHA256"


def _run_combine(cmd: list[str], ctx: BackupContext) -> None:
    proc = tied_popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tail = StderrTail(proc.stderr, on_line=ctx.log)
    try:
        code = proc.wait()
    except BaseException:  # a cancelled run: pg_combinebackup must not go on writing
        proc.kill()
        proc.wait()
        raise
    tail.join()
    if code != 0:
        raise ToolError(f"pg_combinebackup exited with status {code}: {tail.text()}")


def restore_chain(ctx: BackupContext, manifest: Manifest, dest: Path, *, bin_dir: Path, catalog: Catalog) -> None:
    """Restore a physical backup of any kind into `dest` (new, or an empty directory).

    FULL: restore_physical. Otherwise the chain is resolved first (ChainBrokenError naming
    a missing link, IntegrityError for a missing object; nothing written yet), every link is
    extracted with its checksums verified, pg_combinebackup reconstructs the target backup,
    and the result is renamed into `dest`. On failure nothing of `dest` remains (an empty
    directory that was there stays, empty). The result starts like a restored full
    (start_restored_cluster), with archive_mode=off.
    """
    if manifest.mode != "physical":
        raise RefusedError(f"backup {manifest.id} is a {manifest.mode} backup, not a physical one")
    if manifest.kind == BackupKind.FULL:
        restore_physical(ctx, manifest, dest)
        return
    chain = catalog.chain(manifest)
    repo = ctx.repository
    for link in chain:
        obj = next((o for o in link.objects if o.role == "base"), None)
        if obj is None:
            raise IntegrityError(f"backup {link.id} lists no base object ({BASE_OBJECT})")
        info = repo.store.stat(repo.object_key(link, obj.key))
        if info is None or info.size != obj.stored_size:
            raise IntegrityError(
                f"object {link.id}/{obj.key} is missing or has the wrong size in "
                f"{repo.description}; cannot restore {manifest.id}"
            )
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise RefusedError(
            f"refusing to restore backup {manifest.id} into {dest}: it is not an empty "
            "directory; nothing was touched. Pick a new or empty directory"
        )
    if is_filelevel(manifest):  # PostgreSQL 15/16: overlay the file-level tars, no pg_combinebackup
        restore_filelevel_chain(ctx, manifest, chain, dest)
        return
    major = tool_major(bin_dir, "pg_combinebackup")
    if major < 17:
        raise ConfigError(
            f"pg_combinebackup in {bin_dir} is version {major}: restoring incremental or "
            "differential backups needs PostgreSQL 17 or later client tools; set bin_dir"
        )
    link_mode = major >= 18  # --link is new in 18
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = mkdtemp(f".vfchain-{manifest.id}-", dest.parent)  # ours, inside the user's parent: removed if killed
    existed = dest.exists()
    moved = False
    try:
        t0 = time.monotonic()
        inputs = []
        for number, link in enumerate(chain):
            extracted = work / f"{number:03d}-{link.id}"
            restore_physical(ctx, link, extracted)
            inputs.append(extracted)
        extract_seconds = time.monotonic() - t0
        t0 = time.monotonic()
        combined = work / "combined"
        checksums = chain_checksum_algorithm(manifest, inputs[-1] / "backup_manifest")
        _run_combine(
            combinebackup_command(bin_dir, inputs, combined, link=link_mode, manifest_checksums=checksums), ctx
        )
        set_auto_conf(combined, RESTORED_SETTINGS)
        os.chmod(combined, 0o700)
        os.replace(combined, dest)  # onto a new or empty directory: dest appears whole
        moved = True
        ctx.log(
            f"restored {manifest.id} from a chain of {len(chain)} backups: extract {human_duration(extract_seconds)}, "
            f"pg_combinebackup {human_duration(time.monotonic() - t0)}"
        )
    except BaseException:
        if moved:  # before the rename dest was never written to
            shutil.rmtree(dest, ignore_errors=True)
            if existed:
                dest.mkdir(mode=0o700)
        raise
    finally:
        remove(work)
