"""Durable-write helpers (standard library only: wal-push imports this once per segment)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def directory_problem(path: Path) -> str | None:
    """Why this process cannot list `path` as a directory, for an error message: 'does not
    exist', 'is not a directory' or 'cannot be read by this process (uid N)'; None when it can.
    Callers wrap it in their own ConfigError naming the setting (a mistyped path or an unmounted
    volume must not read as an empty directory)."""
    if not path.exists():
        return "does not exist"
    if not path.is_dir():
        return "is not a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"cannot be read by this process (uid {os.geteuid()})"
    return None


def empty_directory(path: Path) -> None:
    """Delete everything inside `path` (not following symlinks), keep `path` itself: a restore
    that failed in a directory the user gave us leaves it as empty as it was."""
    for child in list(Path(path).iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
