"""pg_verifybackup on a restored data directory, before the server first starts.

A base backup (and pg_combinebackup's output for a chain) carries the server's
backup_manifest: every file's size and checksum at the backup's own consistency point. So
this is the exact check of a physical restore — unlike row fingerprints, which are taken on
the live server while the backup runs. It runs before recovery changes any file; WAL is not
parsed here (the server replays and checks it next). PostgreSQL 15/16 file-level chains have
no server manifest; their files are checked against vaultflow's own file list at restore.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from vaultflow.compare import TableComparison
from vaultflow.errors import IntegrityError
from vaultflow.proc import tied_popen

# Files vaultflow writes into a restored directory when the backup had none (Debian keeps its
# configuration in /etc): not in the manifest, so they must be ignored, not reported.
WRITTEN_WHEN_MISSING = ("postgresql.conf", "pg_hba.conf", "pg_ident.conf")


def listed_files(manifest_path: Path) -> set[str]:
    with open(manifest_path, "rb") as handle:
        return {entry.get("Path") for entry in json.load(handle).get("Files", [])}


def verify_restored(dest: Path, bin_dir: Path, label: str) -> TableComparison | None:
    """Check `dest` against its backup_manifest; IntegrityError naming the files that differ.
    None when there is no backup_manifest (file-level chains)."""
    manifest_path = dest / "backup_manifest"
    if not manifest_path.exists():
        return None
    listed = listed_files(manifest_path)
    cmd = [str(Path(bin_dir) / "pg_verifybackup"), "--no-parse-wal", "--exit-on-error"]
    for name in WRITTEN_WHEN_MISSING:
        if name not in listed:
            cmd += ["--ignore", name]
    proc = tied_popen(
        [*cmd, str(dest)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )  # dies with the run, like every tool vaultflow starts
    try:
        stdout, stderr = proc.communicate()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        said = " | ".join((stderr or stdout).strip().splitlines()[-5:])
        raise IntegrityError(
            f"the restored data directory {dest} does not match the server's backup_manifest of {label}: {said}"
        )
    return TableComparison("(cluster)", f"pg_verifybackup: {len(listed)} files", len(listed), len(listed), "match")
