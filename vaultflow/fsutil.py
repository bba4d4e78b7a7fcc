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


def empty_directory(path: Path) -> None:
    """Delete everything inside `path` (not following symlinks), keep `path` itself: a restore
    that failed in a directory the user gave us leaves it as empty as it was."""
    for child in list(Path(path).iterdir()):
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
