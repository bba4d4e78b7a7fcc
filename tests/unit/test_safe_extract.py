"""Extracting a data directory's tar without tarfile's filters (Python 3.11.0-3.11.3): the
fallback of safe_extract, forced by its feature probe, on real tar files."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from vaultflow.engines.postgres import safe_extract


@pytest.fixture(params=[True, False], ids=["tarfile-filter", "own-checks"])
def probe(request, monkeypatch: pytest.MonkeyPatch) -> bool:
    if not request.param:
        monkeypatch.setattr(safe_extract, "HAS_DATA_FILTER", False)
        monkeypatch.delattr(tarfile, "data_filter")
    return request.param


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def member(name: str, type_: bytes = tarfile.REGTYPE, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = type_, linkname, mode
    info.uid, info.gid, info.uname, info.gname = 4242, 4242, "someone", "others"
    return info


def extract_all(data: bytes, dest: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        while (m := tar.next()) is not None:
            safe_extract.extract_member(tar, m, dest)


def test_a_data_directory_extracts_private_and_owned_by_us(tmp_path: Path, probe: bool) -> None:
    data = tar_of(
        (member("base", tarfile.DIRTYPE, mode=0o777), None),
        (member("base/1", mode=0o666), b"rows"),
        (member("/PG_VERSION", mode=0o644), b"18\n"),  # a leading '/' is stripped: lands inside
        (member("base/same", tarfile.LNKTYPE, linkname="base/1"), None),
        (member("current", tarfile.SYMTYPE, linkname="base/1"), None),
    )
    extract_all(data, tmp_path)
    assert (tmp_path / "base" / "1").read_bytes() == b"rows"
    assert (tmp_path / "PG_VERSION").read_bytes() == b"18\n"
    assert (tmp_path / "base" / "same").read_bytes() == b"rows"
    assert os.readlink(tmp_path / "current") == "base/1"
    assert (tmp_path / "base").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "base" / "1").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "base" / "1").stat().st_uid == os.geteuid()


@pytest.mark.parametrize(
    "hostile",
    [
        member("../escaped"),
        member("base/../../escaped"),
        member("out", tarfile.SYMTYPE, linkname="/etc/passwd"),
        member("base/out", tarfile.SYMTYPE, linkname="../../escaped"),
        member("out", tarfile.LNKTYPE, linkname="../escaped"),
        member("null", tarfile.CHRTYPE),
        member("disk", tarfile.BLKTYPE),
        member("pipe", tarfile.FIFOTYPE),
    ],
    ids=lambda m: f"{m.name}->{m.linkname or m.type!r}",
)
def test_hostile_members_are_refused(tmp_path: Path, probe: bool, hostile: tarfile.TarInfo) -> None:
    dest = tmp_path / "data"
    dest.mkdir()
    (tmp_path / "escaped").write_bytes(b"outside")
    data = tar_of((member("base", tarfile.DIRTYPE), None), (hostile, None if not hostile.isreg() else b"owned"))
    with pytest.raises(tarfile.TarError):
        extract_all(data, dest)
    assert (tmp_path / "escaped").read_bytes() == b"outside"
    assert sorted(p.name for p in dest.iterdir()) == ["base"]
