"""Extracting a data directory's tar member by member, safely on every Python 3.11.

tarfile's "data" filter (no absolute paths, no `..`, no links out of the destination, no device
files or fifos) and the `filter=` argument of TarFile.extract came with Python 3.11.4; Debian 12
ships 3.11.2, where `extract(..., filter=...)` is a TypeError. There the same checks run here
(`checked_member`, after CPython's tarfile._get_filtered_attrs for "data") on a copy of the member
before a plain extract, which then writes exactly what was checked.
"""

from __future__ import annotations

import copy
import os
import tarfile
from collections.abc import Iterator

from vaultflow.stores.base import CHUNK_SIZE

# The feature probe: tests force the fallback by setting this to False.
HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


class UnsafeMemberError(tarfile.TarError):
    """A tar member that would land outside the destination or is no plain data (a device)."""


def data_dir_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """tarfile's "data" filter (no absolute paths, `..`, links out, devices), then private modes
    (directories 0700, files and hard links to them 0600). Python 3.11.4 and later only
    (tarfile.data_filter)."""
    member = tarfile.data_filter(member, dest)
    if member.isdir():
        return member.replace(mode=0o700, deep=False)
    if member.isreg() or member.islnk():
        return member.replace(mode=0o600, deep=False)
    return member


def checked_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """A copy of `member` safe to extract into `dest` without tarfile's filters: the leading '/'
    stripped, owned by this process (never the archive's uid/gid, also when run as root), modes
    0700 (directories) and 0600 (files, hard links). Raises UnsafeMemberError (a tarfile.TarError) for a path
    or link (hard or symbolic) that resolves outside `dest`, an absolute link, or a member that is
    neither a directory, a regular file nor a link (character and block devices, fifos)."""
    dest_path = os.path.realpath(dest)
    name = member.name.lstrip("/" + os.sep)
    if os.path.isabs(name):
        raise UnsafeMemberError(f"tar member {member.name!r} has an absolute path: refused")
    target = os.path.realpath(os.path.join(dest_path, name))
    if os.path.commonpath([target, dest_path]) != dest_path:
        raise UnsafeMemberError(f"tar member {member.name!r} would be extracted to {target}, outside {dest_path}")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeMemberError(f"tar member {member.name!r} is a special file (device or fifo): refused")
    if member.issym() or member.islnk():
        if os.path.isabs(member.linkname):
            raise UnsafeMemberError(f"tar member {member.name!r} links to an absolute path {member.linkname!r}")
        base = os.path.dirname(name) if member.issym() else ""
        linked = os.path.realpath(os.path.join(dest_path, base, member.linkname))
        if os.path.commonpath([linked, dest_path]) != dest_path:
            raise UnsafeMemberError(f"tar member {member.name!r} links to {linked}, outside {dest_path}")
    safe = copy.copy(member)
    safe.name = name
    safe.uid, safe.gid, safe.uname, safe.gname = os.geteuid(), os.getegid(), "", ""
    if member.isdir():
        safe.mode = 0o700
    elif member.isreg() or member.islnk():
        safe.mode = 0o600
    return safe


def extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: str | os.PathLike[str]) -> None:
    """Extract `member` of `tar` into `dest` with its times, through data_dir_filter where this
    Python has tarfile's filters, else through checked_member. Raises tarfile.TarError (a
    FilterError or UnsafeMemberError) for a member that data_dir_filter refuses."""
    if HAS_DATA_FILTER:
        tar.extract(member, dest, set_attrs=True, filter=data_dir_filter)
    else:
        tar.extract(checked_member(member, os.fspath(dest)), dest, set_attrs=True)


def extract_stream(reader, dest: str | os.PathLike[str]) -> Iterator[tarfile.TarInfo]:
    """Extract the tar read from `reader` (a stream: read once, front to back) into `dest`,
    member by member (extract_member), yielding each member once it is on disk. The member list
    is dropped as it goes, so memory stays flat however many files the tar holds.

    tarfile reads CHUNK_SIZE bytes from `reader` at a time and here also copies each file in
    CHUNK_SIZE pieces: with its default 16 KiB copies, every piece re-joined the 1 MiB read
    buffer, three times the CPU of the whole extraction (0.69 against 0.22 CPU-s for a 200 MB
    tar, measured). Raises tarfile.TarError (a broken tar, or a member data_dir_filter refuses)."""
    with tarfile.open(fileobj=reader, mode="r|", bufsize=CHUNK_SIZE, errorlevel=2) as tar:
        tar.copybufsize = CHUNK_SIZE  # type: ignore[attr-defined]  # read by TarFile.makefile; not in typeshed
        while (member := tar.next()) is not None:
            extract_member(tar, member, dest)
            yield member
            tar.members.clear()  # type: ignore[attr-defined]  # TarFile.members: not in typeshed
