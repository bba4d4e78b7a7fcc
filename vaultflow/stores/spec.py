"""A store as plain data, so that another process can open the same repository: the
restore_command of a point-in-time restore (`python -m vaultflow.engines.postgres.wal.cli fetch --repo-config FILE`).

    {"kind": "local", "path": "/srv/backups"}
    {"kind": "s3", "bucket": "b", "prefix": "vf", "endpoint": "https://...", "region": "eu-west-1",
     "access_key_id": "...", "secret_access_key": "...", "session_token": null, "addressing_style": "path"}
    {"kind": "mirror", "members": [<local spec>, <s3 spec>]}     read from the first member that has a file

An S3 spec carries the secret key: it only ever goes into a 0600 file in a private 0700
directory (`spec_file`), owned by the OS user that runs the restored cluster and deleted when
recovery ends; never argv, postgresql.auto.conf or the environment (docs/architecture.md,
"Point-in-time restore from S3").

Imported by `vaultflow.engines.postgres.wal.cli fetch` once per WAL file: standard library only at import time. boto3 is
imported only when an S3 member is first used, so a mirror whose local member has the file
never pays for it.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vaultflow.errors import ConfigError

SPEC_FILE = "repository.json"
KINDS = ("local", "s3", "mirror")


def describe(store: Any) -> dict:
    """The spec of a LocalStore, S3Store or MirrorStore (local members first)."""
    from vaultflow.stores.local import LocalStore

    if isinstance(store, LocalStore):
        return {"kind": "local", "path": str(store.root)}
    members = getattr(store, "stores", None)
    if members is not None:  # a mirror: reads try the local copy before the network
        specs = [describe(member) for member in members]
        return {"kind": "mirror", "members": sorted(specs, key=lambda s: s["kind"] != "local")}
    to_spec = getattr(store, "connection_spec", None)
    if to_spec is None:
        raise ConfigError(
            f"cannot describe store {store!r} for restore_command: set wal_fetch_command "
            "on the target to fetch WAL some other way"
        )
    return to_spec()


def build(spec: dict, *, where: str = "repository spec") -> Any:
    """The store a spec describes; S3 members of a mirror are built on first use."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind == "local":
        from vaultflow.stores.local import LocalStore

        return LocalStore(_required(spec, "path", where))
    if kind == "s3":
        from vaultflow.stores.s3 import S3Store  # imports boto3: only here

        return S3Store.from_connection_spec(spec)
    if kind == "mirror":
        from vaultflow.stores.mirror import MirrorStore

        members = _required(spec, "members", where)
        if not isinstance(members, list) or not members:
            raise ConfigError(f"{where}: a mirror needs a non-empty list of members")
        if not all(isinstance(m, dict) for m in members):
            raise ConfigError(f"{where}: every mirror member must be a JSON object")
        members = sorted(members, key=lambda m: m.get("kind") != "local")  # local copies first
        return MirrorStore(
            [build(m, where=where) if m.get("kind") == "local" else _LazyStore(m, where) for m in members]
        )
    raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")


def _required(spec: dict, key: str, where: str) -> Any:
    if spec.get(key) in (None, ""):
        raise ConfigError(f"{where}: a {spec.get('kind')} store needs {key!r}")
    return spec[key]


class _LazyStore:
    """A store built on first use (its description needs no connection)."""

    def __init__(self, spec: dict, where: str):
        self._spec, self._where, self._store = spec, where, None

    @property
    def description(self) -> str:
        if self._spec.get("kind") == "s3":
            prefix = str(self._spec.get("prefix") or "").strip("/")
            return f"s3://{self._spec.get('bucket')}/{prefix}" if prefix else f"s3://{self._spec.get('bucket')}"
        return self._target().description

    def _target(self) -> Any:
        if self._store is None:
            self._store = build(self._spec, where=self._where)
        return self._store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)


# -- the file ------------------------------------------------------------------------------
def write_spec_file(spec: dict, path: Path, *, uid: int | None = None, gid: int | None = None) -> Path:
    """Write `spec` to a new 0600 file (O_EXCL: never through someone else's file or link),
    handed to uid:gid when given (the restored cluster's OS user)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if uid is not None:
            os.fchown(fd, uid, gid if gid is not None else -1)
        os.write(fd, json.dumps(spec).encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return path


_INHERITED = re.compile(r"/(?:dev|proc/self)/fd/\d+")


def read_spec_file(path: str | Path) -> dict:
    """A spec file written by write_spec_file, or an inherited spec_memfd as /dev/fd/N; refused
    when others may read it."""
    path = Path(path)
    # /dev/fd/N is a link by nature (to the inherited memfd); any other path must not be one
    nofollow = 0 if _INHERITED.fullmatch(str(path)) else os.O_NOFOLLOW
    try:
        fd = os.open(path, os.O_RDONLY | nofollow | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(
            f"repository spec file {path} does not exist: vaultflow deletes it when the "
            "recovery that wrote it ends. Restore again with vaultflow, or write a new one "
            "(docs/postgres.md) or set restore_command by hand"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot open repository spec file {path}: {exc.strerror or exc}") from exc
    with os.fdopen(fd, "rb") as handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"repository spec file {path} is readable by others (mode {mode:o}); it may hold "
                f"a secret key: chmod 600 {path}"
            )
        raw = handle.read()
    try:
        spec = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"repository spec file {path} is not valid JSON ({exc})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"repository spec file {path} must hold a JSON object")
    return spec


@contextmanager
def spec_memfd(store: Any, *, uid: int | None = None, gid: int | None = None) -> Iterator[int]:
    """The spec of `store` in an anonymous 0600 memfd (owned by uid:gid when given), for a child
    that inherits the descriptor (Popen pass_fds) and reads `/dev/fd/<fd>` (read_spec_file).
    It exists on no filesystem, so a killed run leaves no file holding the secret; on exit it is
    emptied (children that still hold it read nothing) and closed. Yields the descriptor."""
    fd = os.memfd_create("vaultflow-repository-spec", os.MFD_CLOEXEC)
    try:
        os.fchmod(fd, 0o600)
        if uid is not None:
            os.fchown(fd, uid, gid if gid is not None else -1)
        os.write(fd, json.dumps(describe(store)).encode())
        yield fd
    finally:
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)


@contextmanager
def spec_file(
    store: Any, parent: Path, *, uid: int | None = None, gid: int | None = None, prefix: str = ".vaultflow-wal-fetch-"
) -> Iterator[Path]:
    """A 0600 spec file of `store` in a new 0700 directory under `parent`, both owned by uid:gid
    when given; the directory and the file are removed on exit, whatever happened."""
    from vaultflow.proc import mkdtemp, remove

    spec = describe(store)
    directory = mkdtemp(prefix, parent)  # it holds a secret: removed even if this process is killed
    try:
        if uid is not None:
            os.chown(directory, uid, gid if gid is not None else -1)
        yield write_spec_file(spec, directory / SPEC_FILE, uid=uid, gid=gid)
    finally:
        remove(directory)


__all__ = ["SPEC_FILE", "build", "describe", "read_spec_file", "spec_file", "spec_memfd", "write_spec_file"]
