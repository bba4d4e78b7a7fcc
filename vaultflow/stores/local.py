"""LocalStore: objects are files under a root directory, written atomically.

A put streams into `.tmp-*` next to the final name, fsyncs it, renames it into place and
fsyncs the directory, so after a crash a key holds either the old bytes or the new ones.
Objects are 0600 and directories 0700: backups hold whole databases.

Directories exist only to hold objects: a failed put, a delete and the sweep of a killed run's
temp files remove the directories they leave empty (up to, never including, the root).
"""

from __future__ import annotations

import errno
import os
import stat
import stat as stat_mod
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from vaultflow.errors import ConfigError, NotFoundError, StoreUnavailableError
from vaultflow.fsutil import fsync_dir
from vaultflow.stores.base import CHUNK_SIZE, ObjectInfo, Readable

TMP_PREFIX = ".tmp-"
# Errors that mean "this location can never be written as configured" (vs. a full disk).
_CONFIG_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}


def _check_key(key: str) -> list[str]:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid store key {key!r}: need a relative '/'-separated path")
    if any(p.startswith(TMP_PREFIX) for p in parts):
        raise ValueError(f"invalid store key {key!r}: {TMP_PREFIX!r} names are reserved")
    return parts


PRUNED_RETRIES = 10  # attempts to create a file whose fresh directories a concurrent delete pruned


class LocalStore:
    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()  # one description per directory, however it is reached (symlinks)

    @property
    def description(self) -> str:
        return f"local:{self.root}"

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key))

    def _not_writable(self, path: Path, exc: OSError | None = None) -> ConfigError:
        why = f" ({exc.strerror})" if exc is not None and exc.strerror else ""
        if exc is not None and exc.errno == errno.ENOTDIR:  # no permission makes a file a directory
            return ConfigError(
                f"local store directory {path} cannot be made{why}: {path} or a parent of it is a file, not a "
                f"directory; point the store at a directory (store root {self.root})"
            )
        return ConfigError(
            f"local store directory {path} is not writable{why}; fix its permissions or "
            f"ownership, or point the store at a writable directory (store root {self.root})"
        )

    def _make_dirs(self, directory: Path) -> None:
        """Create `directory` and missing parents as 0700 (makedirs only sets the leaf's mode)."""
        missing: list[Path] = []
        probe = directory
        while not probe.exists():
            missing.append(probe)
            probe = probe.parent
        if not probe.is_dir():
            raise self._not_a_directory(probe)
        for path in reversed(missing):
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                if not path.is_dir():
                    raise self._not_a_directory(path) from None
            except FileNotFoundError:
                raise  # a parent made above was pruned meanwhile by a concurrent delete: the caller retries
            except OSError as exc:
                raise self._not_writable(path, exc) from exc
        # Whether it is writable is mkstemp's to say (EACCES, EROFS: the same ConfigError); a
        # check here would race with a concurrent delete pruning the directory.

    def _not_a_directory(self, path: Path) -> Exception:
        """The error for `path`, found not to be a directory: FileNotFoundError (retried) when it is
        gone, or a directory again, at a second look (a concurrent delete pruned it, another put
        made it again), else the ConfigError."""
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return FileNotFoundError(errno.ENOENT, "pruned by a concurrent delete", str(path))
        if stat.S_ISDIR(mode):  # pruned and made again between the two looks
            return FileNotFoundError(errno.ENOENT, "pruned and made again by concurrent writers", str(path))
        return self._not_writable(path, OSError(errno.ENOTDIR, "not a directory"))

    def _create_temp(self, final: Path) -> tuple[int, str]:
        # A concurrent delete may prune the directories we just created (any of them, between
        # two mkdirs or before mkstemp): make them again, a few times.
        for attempt in range(PRUNED_RETRIES):
            try:
                self._make_dirs(final.parent)
                return tempfile.mkstemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=final.parent)
            except FileNotFoundError as exc:
                if attempt == PRUNED_RETRIES - 1:
                    raise self._not_writable(final.parent, exc) from exc
            except OSError as exc:
                if exc.errno in _CONFIG_ERRNOS:
                    raise self._not_writable(final.parent, exc) from exc
                raise StoreUnavailableError(f"cannot create a file in {final.parent}: {exc}") from exc
        raise AssertionError("unreachable")

    def put(self, key: str, reader: Readable, size_hint: int | None = None) -> int:
        final = self._path(key)
        fd, tmp_name = self._create_temp(final)  # mkstemp creates it 0600
        total = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    chunk = reader.read(CHUNK_SIZE)  # reader errors propagate untouched
                    if not chunk:
                        break
                    try:
                        out.write(chunk)
                    except OSError as exc:
                        raise StoreUnavailableError(f"writing {final} failed: {exc}") from exc
                    total += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.rename(tmp_name, final)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
            self._prune_empty(final.parent)  # the directories this put created, if now empty
            raise
        fsync_dir(final.parent)  # makes the rename itself durable
        return total

    def open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"object {key!r} not found in {self.description}") from None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Only walk the directory the prefix points into ("a/b/c" -> root/a/b).
        start = self.root.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else self.root
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(TMP_PREFIX)]
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith(TMP_PREFIX):
                    continue
                key = name if rel_dir == "." else f"{rel_dir}/{name}"
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:  # deleted while we walked
                    continue
                found.append(_info(key, st))
        found.sort(key=lambda info: info.key)
        return iter(found)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        self._prune_empty(path.parent)  # so the tree doesn't fill with husks

    def _prune_empty(self, directory: Path) -> None:
        """Remove `directory` and its parents while they are empty, stopping below the root.
        A concurrent put that loses its fresh directory this way retries (_create_temp)."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:  # not empty (or already gone): stop pruning
                break
            directory = directory.parent

    def sweep_partial(self, prefix: str, older_than: datetime) -> int:
        """Remove `.tmp-*` files (a killed run's interrupted puts) older than `older_than`, then
        the directories under `prefix` that are left empty and belonged to such a write: the
        sweep emptied them, or they were last changed before `older_than` (judged by their time
        before this sweep, which touches a directory by removing from it). A fresh empty one may
        be a concurrent put's, about to get its temp file. Returns how many temp files went."""
        start = self.root.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else self.root
        removed = 0
        directories: list[tuple[Path, float]] = []
        emptied: set[Path] = set()  # directories this sweep removed something from
        for dirpath, _dirnames, filenames in os.walk(start):
            try:
                directories.append((Path(dirpath), os.stat(dirpath).st_mtime))
            except FileNotFoundError:
                continue
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    if name.startswith(TMP_PREFIX) and datetime.fromtimestamp(os.stat(path).st_mtime, UTC) < older_than:
                        os.unlink(path)
                        removed += 1
                        emptied.add(Path(dirpath))
                except FileNotFoundError:  # its writer finished or cleaned up meanwhile
                    continue
        for directory, mtime in sorted(directories, key=lambda d: len(d[0].parts), reverse=True):
            if directory == self.root or not (directory in emptied or datetime.fromtimestamp(mtime, UTC) < older_than):
                continue
            try:
                directory.rmdir()  # only succeeds when empty
            except OSError:
                continue
            emptied.add(directory.parent)
        if start != self.root and not start.exists():
            self._prune_empty(start.parent)
        return removed

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return _info(key, st) if stat_mod.S_ISREG(st.st_mode) else None


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(key=key, size=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, UTC))
