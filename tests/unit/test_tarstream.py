"""The streaming tar sniffer against archives written by Python's tarfile (every format)."""

from __future__ import annotations

import io
import random
import tarfile

import pytest

from vaultflow.engines.postgres.tarstream import (
    BLOCK,
    TarFormatError,
    TarSniffer,
    _number,
    _pax_records,
)
from vaultflow.stores.base import CHUNK_SIZE, BytesReader

LONG_DIR = "base/" + "/".join(f"directory_{i:02d}_with_a_rather_long_name" for i in range(8))


class Chunked:
    """A source that returns at most `size` bytes per read, or random sizes (like a pipe)."""

    def __init__(self, data: bytes, size: int | None = None, seed: int = 1):
        self._reader = BytesReader(data)
        self._size = size
        self._rng = random.Random(seed)

    def read(self, size: int = -1) -> bytes:
        limit = self._size or self._rng.randint(1, 70000)
        return self._reader.read(min(size, limit) if size and size > 0 else limit)


def make_tar(
    members: list[tuple[str, bytes | None]], fmt: int = tarfile.PAX_FORMAT, pax: dict[str, dict[str, str]] | None = None
) -> bytes:
    """(name, content) pairs; content None makes a directory."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o700
                tar.addfile(info)
            else:
                info.size, info.mode = len(content), 0o600
                if pax and name in pax:
                    info.pax_headers = pax[name]
                tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def sniff(
    data: bytes, capture, read_size: int | None = CHUNK_SIZE, source_chunk: int | None = None, **kw
) -> tuple[TarSniffer, bytes]:
    sniffer = TarSniffer(Chunked(data, source_chunk), capture, **kw)
    parts = []
    while chunk := sniffer.read(read_size if read_size else random.randint(1, 9000)):
        parts.append(chunk)
    return sniffer, b"".join(parts)


BIG = random.Random(3).randbytes(3 * CHUNK_SIZE + 777)  # spans many chunk boundaries
LABEL = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n"
MANIFEST = b'{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [],\n"WAL-Ranges": []}\n'


@pytest.mark.parametrize(
    "fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["ustar", "gnu", "pax"]
)
@pytest.mark.parametrize(
    "read_size,source_chunk",
    [(1, None), (CHUNK_SIZE, None), (CHUNK_SIZE, 1), (None, None), (CHUNK_SIZE, 513)],
    ids=["read1", "read1MiB", "source1", "random", "source513"],
)
def test_captures_members_and_passes_bytes_through(fmt: int, read_size, source_chunk) -> None:
    tiny_reads = read_size == 1 or source_chunk == 1  # keep those archives small
    deep = "base/deep/f" if fmt == tarfile.USTAR_FORMAT else f"{LONG_DIR}/file_{'x' * 120}"
    data = make_tar(
        [
            ("backup_label", LABEL),
            ("tablespace_map", b""),
            ("base", None),
            ("base/1/1259", BIG[:3000] if tiny_reads else BIG),
            (deep, b"deep"),
            ("pg_wal/000000010000000000000002", bytes(5000 if tiny_reads else CHUNK_SIZE)),
            ("backup_manifest", MANIFEST),
        ],
        fmt=fmt,
    )
    sniffer, passed = sniff(data, ["backup_label", "backup_manifest", "tablespace_map"], read_size, source_chunk)
    assert passed == data
    assert sniffer.captured_bytes("backup_label") == LABEL
    assert sniffer.captured_bytes("backup_manifest") == MANIFEST
    assert sniffer.captured_bytes("tablespace_map") == b""
    assert set(sniffer.captured) == {"backup_label", "backup_manifest", "tablespace_map"}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert sniffer.members == len(tar.getmembers())
        assert sniffer.data_bytes == sum(m.size for m in tar.getmembers() if m.isreg())


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT], ids=["gnu-L", "pax-path"])
def test_long_names_are_resolved(fmt: int) -> None:
    long_name = f"{LONG_DIR}/backup_label"
    assert len(long_name) > 255  # beyond what ustar's name + prefix can hold
    data = make_tar([(long_name, b"deep label"), ("backup_label", LABEL), ("x", b"1")], fmt=fmt)
    marker = b"././@LongLink" if fmt == tarfile.GNU_FORMAT else b"PaxHeader"
    assert marker in data
    sniffer, _ = sniff(data, [long_name, "backup_label"])
    assert sniffer.captured_bytes(long_name) == b"deep label"
    assert sniffer.captured_bytes("backup_label") == LABEL
    assert sniffer.members == 3


def test_ustar_prefix_field() -> None:
    name = "a" * 120 + "/" + "b" * 90  # fits ustar only by splitting into prefix + name
    data = make_tar([(name, b"prefixed")], fmt=tarfile.USTAR_FORMAT)
    sniffer, _ = sniff(data, [name])
    assert sniffer.captured_bytes(name) == b"prefixed"


def test_non_ascii_names_through_pax() -> None:
    data = make_tar([("données/backup_label ünï", b"u")], fmt=tarfile.PAX_FORMAT)
    sniffer, _ = sniff(data, ["données/backup_label ünï"])
    assert sniffer.captured_bytes("données/backup_label ünï") == b"u"


def test_pax_size_overrides_the_header_field() -> None:
    """A pax `size` record wins over the ustar field (how >8 GiB members are written)."""
    data = bytearray(make_tar([("big", b"0123456789"), ("backup_label", LABEL)], pax={"big": {"size": "10"}}))
    # The ustar header of "big" follows its pax header block + record block: claim size 0 there.
    header_at = 2 * BLOCK
    assert data[header_at : header_at + 3] == b"big"
    data[header_at + 124 : header_at + 136] = b"00000000000\0"
    data[header_at + 148 : header_at + 156] = b"        "
    data[header_at + 148 : header_at + 156] = b"%06o\0 " % sum(data[header_at : header_at + BLOCK])
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:  # tarfile agrees: 10 bytes
        assert tar.extractfile("big").read() == b"0123456789"
    sniffer, _ = sniff(bytes(data), ["big", "backup_label"])
    assert sniffer.captured_bytes("big") == b"0123456789"
    assert sniffer.captured_bytes("backup_label") == LABEL


def test_only_wanted_members_are_kept_and_large_ones_spill_to_disk() -> None:
    data = make_tar([("backup_label", LABEL), ("base/1/1259", BIG), ("backup_manifest", MANIFEST)])
    sniffer, _ = sniff(data, ["base/1/1259"], spool_limit=64 * 1024)
    assert list(sniffer.captured) == ["base/1/1259"]
    handle = sniffer.captured["base/1/1259"]
    assert handle._rolled  # SpooledTemporaryFile moved it to disk: memory stays bounded
    assert sniffer.captured_bytes("base/1/1259") == BIG
    sniffer.close()


def test_dot_slash_names_and_directories() -> None:
    data = make_tar([("./", None), ("./backup_label", LABEL), ("./pg_wal/", None)])
    sniffer, _ = sniff(data, ["backup_label"])
    assert sniffer.captured_bytes("./backup_label") == LABEL
    assert sniffer.members == 3


def test_later_copy_of_a_member_wins() -> None:
    data = make_tar([("backup_label", b"old"), ("backup_label", b"new")])
    sniffer, _ = sniff(data, ["backup_label"])
    assert sniffer.captured_bytes("backup_label") == b"new"


@pytest.mark.parametrize(
    "cut,message",
    [(100, "mid-header"), (2 * BLOCK + 7, "inside member 'base/1/1259'"), (None, "without an end-of-archive block")],
    ids=["mid-header", "mid-member", "no-end-block"],
)
def test_truncated_archive_is_an_error(cut: int | None, message: str) -> None:
    data = make_tar([("base/1/1259", BIG[:50000]), ("backup_label", LABEL)], fmt=tarfile.USTAR_FORMAT)
    complete = 2 * BLOCK + 50000 + (-50000 % BLOCK) + len(LABEL) + (-len(LABEL) % BLOCK)
    assert data[complete:].strip(b"\0") == b""
    truncated = data[:cut] if cut else data[:complete]
    with pytest.raises(TarFormatError, match=f"{message}.*truncated"):
        sniff(truncated, ["backup_label"])


def test_corrupt_header_is_an_error() -> None:
    data = bytearray(make_tar([("a", b"1"), ("backup_label", LABEL)], fmt=tarfile.USTAR_FORMAT))
    data[2 * BLOCK + 5] ^= 0x20  # a byte of the second header's name
    with pytest.raises(TarFormatError, match="checksum"):
        sniff(bytes(data), ["backup_label"])


def test_trailing_padding_after_end_of_archive_is_ignored() -> None:
    data = make_tar([("backup_label", LABEL)]) + b"garbage after the end"
    sniffer, passed = sniff(data, ["backup_label"])
    assert passed == data and sniffer.captured_bytes("backup_label") == LABEL


def pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode()
    for digits in range(1, 6):
        if len(str(len(body) + digits)) == digits:
            return str(len(body) + digits).encode() + body
    raise AssertionError


def test_numbers_and_pax_records() -> None:
    assert _number(b"0000644\0") == 0o644
    assert _number(b"        ") == 0
    assert _number(b"\x80" + (10 * 2**33).to_bytes(11, "big")) == 10 * 2**33  # GNU base-256
    assert _number(b"\xff" * 12) == -1
    record = pax_record("path", "données/backup_label")
    assert _pax_records(pax_record("size", "12345") + record)["size"] == "12345"
    assert _pax_records(record)["path"] == "données/backup_label"
    with pytest.raises(TarFormatError):
        _pax_records(b"99 path=x")


# -- what pg_physical does with the captured members ---------------------------------------


def test_parse_backup_label() -> None:
    from vaultflow.engines.postgres.physical import parse_backup_label

    label = parse_backup_label(
        "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000080\n"
        "BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-11-26 15:23:47 UTC\n"
        "LABEL: vaultflow-20261126T152347.000Z-F\nSTART TIMELINE: 3\n"
    )
    assert (label.start_lsn, label.start_wal_file, label.checkpoint_lsn, label.timeline, label.label) == (
        "0/2000028",
        "000000010000000000000002",
        "0/2000080",
        3,
        "vaultflow-20261126T152347.000Z-F",
    )
    with pytest.raises(Exception, match="CHECKPOINT|checkpoint_lsn"):
        parse_backup_label("START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n")


@pytest.mark.parametrize("files", [2, 20000], ids=["small", "larger-than-the-tail"])
def test_read_manifest_facts_reads_head_and_tail(files: int) -> None:
    import json
    import tempfile

    from vaultflow.engines.postgres.physical import MANIFEST_TAIL, read_manifest_facts

    entries = ",\n".join(
        json.dumps({"Path": f"base/1/{i}", "Size": 8192, "Checksum-Algorithm": "SHA256", "Checksum": "ab" * 32})
        for i in range(files)
    )
    text = (
        '{ "PostgreSQL-Backup-Manifest-Version": 2,\n"System-Identifier": 7712501231184244791,\n'
        f'"Files": [\n{entries}\n],\n"WAL-Ranges": [\n'
        '{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000120" },\n'
        '{ "Timeline": 2, "Start-LSN": "0/2000120", "End-LSN": "0/3000000" }\n],\n'
        '"Manifest-Checksum": "00"}\n'
    )
    assert (len(text) > MANIFEST_TAIL) == (files > 2)
    with tempfile.TemporaryFile() as handle:
        handle.write(text.encode())
        ranges, system = read_manifest_facts(handle)
        assert handle.tell() == 0
    assert system == "7712501231184244791"
    assert ranges == json.loads(text)["WAL-Ranges"]
