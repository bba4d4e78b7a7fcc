"""The mongodump archive codec (vaultflow/engines/mongodb/archive.py) without a server.

Expected bytes are built here independently of the module: bson.encode, struct, and a bit-by-bit
CRC-64 (no table, no lanes). Test vectors from mongo-tools' own test data (mongorestore/testdata/
*.archive, written by real mongodump runs) are given as values: documents and the CRC their
archive's EOF header carries, and .metadata.json texts from a prelude.
"""

from __future__ import annotations

import io
import os
import random
import struct

import bson
import pytest
from bson.binary import Binary
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument

from vaultflow.engines.mongodb import crc64
from vaultflow.engines.mongodb.archive import (
    ArchiveReader,
    ArchiveUsageError,
    ArchiveWriter,
    metadata_json,
)
from vaultflow.errors import IntegrityError

MAGIC = bytes.fromhex("6de29981")
TERM = b"\xff\xff\xff\xff"
META = '{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"}],"collectionName":"c"}'


def crc64_bitwise(data: bytes) -> int:
    """Go's crc64 with the ECMA table, computed bit by bit: reflected poly, inverted in and out."""
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xC96C5795D7870F42 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFFFFFFFFFF


def signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def ns_header(db: str, coll: str, eof: bool, crc: int) -> bytes:
    """A namespace header by hand: string, string, bool, int64 (type 0x12), in that order."""

    def cstring(text: str) -> bytes:
        return text.encode() + b"\x00"

    def string(name: str, text: str) -> bytes:
        raw = text.encode() + b"\x00"
        return b"\x02" + cstring(name) + struct.pack("<i", len(raw)) + raw

    body = (
        string("db", db)
        + string("collection", coll)
        + b"\x08"
        + cstring("EOF")
        + (b"\x01" if eof else b"\x00")
        + b"\x12"
        + cstring("CRC")
        + struct.pack("<q", signed(crc))
    )
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def docs(prefix: str, count: int, pad: int = 0) -> list[bytes]:
    return [bson.encode({"_id": f"{prefix}-{i}", "n": i, "pad": "x" * pad}) for i in range(count)]


def read_all(data: bytes, **kwargs) -> tuple[ArchiveReader, list[tuple[str, str, bytes]]]:
    reader = ArchiveReader(io.BytesIO(data), **kwargs)
    return reader, list(reader)


def simple_archive(*, documents: list[bytes] | None = None) -> bytes:
    out = io.BytesIO()
    writer = ArchiveWriter(out, server_version="7.0.14", tool_version="vaultflow-test")
    writer.add_collection("shop", "orders", META)
    writer.begin()
    writer.write_documents("shop", "orders", documents if documents is not None else docs("o", 3))
    writer.end_collection("shop", "orders")
    writer.close()
    return out.getvalue()


# --- CRC-64 ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [  # Go src/hash/crc64/crc64_test.go, the ECMA column of `golden`
        ("", 0x0),
        ("a", 0x330284772E652B05),
        ("abc", 0x2CD8094A1A277627),
        ("Discard medicine more than two years old.", 0x8A0825223EA6D221),
        ("This is a test of the emergency broadcast system.", 0x27DB187FC15BBC72),
        ("123456789", 0x995DC9BBDF1939FA),  # the CRC-64/XZ check value
    ],
)
def test_crc64_is_gos_ecma_crc(text, expected):
    assert crc64.checksum(text.encode()) == expected
    assert crc64_bitwise(text.encode()) == expected


def test_crc64_continues_across_any_split():
    rng = random.Random(7)
    for size in (1, 4095, 16 * 1024 + 1, 300_001):
        data = rng.randbytes(size)
        assert crc64.checksum(data[:4096]) == crc64_bitwise(data[:4096])
        whole = crc64.checksum(data)
        cut = rng.randrange(size)
        assert crc64.update(crc64.update(0, data[:cut]), memoryview(data)[cut:]) == whole, (size, cut)
        running = crc64.Crc64()
        for start in range(0, size, 1000):
            running.update(data[start : start + 1000])
        assert running.value == whole


def test_crc_matches_real_mongodump_archives():
    """Documents and EOF CRCs read from mongo-tools mongorestore/testdata/test.bar.archive
    (mongodump r3.4.3) and timeseries_tests/dump.archive (100.3.1, MongoDB 5.0.0-rc0)."""
    bar = bson.encode({"_id": ObjectId("58ffb124b721bc6c3234333c"), "foo": "bar"})
    assert len(bar) == 35
    assert crc64.to_int64(crc64.checksum(bar)) == -7824457949569593127
    fcv34 = bson.encode({"_id": "featureCompatibilityVersion", "version": "3.4"})
    assert crc64.to_int64(crc64.checksum(fcv34)) == -682997726120892866
    fcv50 = bson.encode({"_id": "featureCompatibilityVersion", "version": "5.0"})
    assert crc64.to_int64(crc64.checksum(fcv50)) == 5808966695042502227


# --- byte layout ---


def test_header_prelude_and_terminator_bytes():
    out = io.BytesIO()
    writer = ArchiveWriter(out, server_version="7.0.14", tool_version="100.10.0", concurrent_collections=4)
    writer.add_collection("shop", "orders", META)
    writer.add_collection("shop", "v", '{"options":{"viewOn":"orders","pipeline":[]},"indexes":[]}', type="view")
    writer.add_collection("", "oplog", "")
    writer.begin()
    header = bson.encode(
        {"concurrent_collections": 4, "version": "0.1", "server_version": "7.0.14", "tool_version": "100.10.0"}
    )
    assert header[4 + 0] == 0x10  # concurrent_collections is an int32
    preludes = [
        bson.encode({"db": "shop", "collection": "orders", "metadata": META, "size": 0, "type": "collection"}),
        bson.encode(
            {
                "db": "shop",
                "collection": "v",
                "metadata": '{"options":{"viewOn":"orders","pipeline":[]},"indexes":[]}',
                "size": 0,
                "type": "view",
            }
        ),
        bson.encode({"db": "", "collection": "oplog", "metadata": "", "size": 0, "type": ""}),
    ]
    assert b"\x10size\x00" in preludes[0]  # size is an int32
    assert out.getvalue() == MAGIC + header + b"".join(preludes) + TERM
    assert struct.unpack("<I", out.getvalue()[:4])[0] == 0x8199E26D


def test_segment_and_eof_bytes():
    out = io.BytesIO()
    writer = ArchiveWriter(out, server_version="7.0.14", tool_version="t")
    writer.add_collection("shop", "orders", META)
    writer.begin()
    start = len(out.getvalue())
    data = docs("o", 2)
    assert writer.write_documents("shop", "orders", data) == 2
    writer.end_collection("shop", "orders")
    writer.close()
    crc = crc64_bitwise(b"".join(data))
    expected = (
        ns_header("shop", "orders", False, 0) + b"".join(data) + TERM + ns_header("shop", "orders", True, crc) + TERM
    )
    assert out.getvalue()[start:] == expected
    assert bson.decode(ns_header("shop", "orders", True, crc))["CRC"] == Int64(signed(crc))


def test_large_size_is_an_int64_like_gos_int():
    out = io.BytesIO()
    writer = ArchiveWriter(out, server_version="7.0.14", tool_version="t")
    writer.add_collection("shop", "orders", META, size=3 << 31)
    writer.begin()
    prelude = bson.encode(
        {"db": "shop", "collection": "orders", "metadata": META, "size": Int64(3 << 31), "type": "collection"}
    )
    assert prelude in out.getvalue()


# --- round trips ---


def test_round_trip_several_collections_unicode_names_and_the_oplog():
    out = io.BytesIO()
    writer = ArchiveWriter(out, server_version="6.0.3", tool_version="t", concurrent_collections=2)
    names = [("shop", "orders"), ("données_ü日本", "a.b c/ü 🚀"), ("shop", "empty")]
    for db, coll in names:
        writer.add_collection(db, coll, META)
    writer.add_collection("", "oplog", "")
    writer.begin()
    content = {names[0]: docs("o", 5), names[1]: docs("u", 3), names[2]: []}
    oplog = [bson.encode({"ts": bson.Timestamp(1700000000, i), "op": "i", "ns": "shop.orders"}) for i in range(4)]
    for db, coll in names:
        writer.write_documents(db, coll, content[(db, coll)])
        writer.end_collection(db, coll)
    writer.write_documents("", "oplog", oplog)
    writer.end_collection("", "oplog")
    writer.close()

    reader, items = read_all(out.getvalue(), name="backups/x/dump.archive")
    assert reader.header.server_version == "6.0.3" and reader.header.concurrent_collections == 2
    assert [(e.db, e.collection, e.type) for e in reader.prelude.collections] == [
        ("shop", "orders", "collection"),
        ("données_ü日本", "a.b c/ü 🚀", "collection"),
        ("shop", "empty", "collection"),
        ("", "oplog", ""),
    ]
    assert reader.prelude.databases == ["shop", "données_ü日本", ""]
    assert [(db, c) for db, c, _ in items] == [names[0]] * 5 + [names[1]] * 3 + [("", "oplog")] * 4
    assert [raw for _, _, raw in items] == content[names[0]] + content[names[1]] + oplog
    assert reader.document_counts == {names[0]: 5, names[1]: 3, names[2]: 0, ("", "oplog"): 4}


def test_interleaved_segments_of_two_collections():
    """mongodump's multiplexer interleaves segments of concurrently dumped collections."""
    out = io.BytesIO()
    writer = ArchiveWriter(out, server_version="7.0.14", tool_version="t", segment_bytes=200)
    writer.add_collection("db", "a", META)
    writer.add_collection("db", "b", META)
    writer.begin()
    a, b = docs("a", 9, pad=40), docs("b", 7, pad=40)
    for i in range(0, 9, 3):
        writer.write_documents("db", "a", a[i : i + 3])
        writer.write_documents("db", "b", b[i : i + 3])
    writer.end_collection("db", "b")
    writer.end_collection("db", "a")
    writer.close()

    # Walk the blocks by hand: which namespace each header names, and how big each segment is.
    data, pos = out.getvalue(), len(MAGIC)
    while data[pos : pos + 4] != TERM:
        pos += struct.unpack_from("<i", data, pos)[0]
    pos += 4
    blocks = []
    while pos < len(data):
        header = bson.decode(data[pos : pos + struct.unpack_from("<i", data, pos)[0]])
        pos += struct.unpack_from("<i", data, pos)[0]
        size = 0
        while data[pos : pos + 4] != TERM:
            length = struct.unpack_from("<i", data, pos)[0]
            size, pos = size + length, pos + length
        pos += 4
        blocks.append((header["collection"], header["EOF"], size))
    assert all(size <= 200 for _, _, size in blocks)
    segments = [coll for coll, eof, _ in blocks if not eof]
    assert segments[:4] == ["a", "a", "b", "b"]  # 3 docs of ~80 bytes: 2 + 1 per call, then b's
    assert [coll for coll, eof, _ in blocks if eof] == ["b", "a"]

    reader, items = read_all(data)
    assert [raw for db, c, raw in items if c == "a"] == a
    assert [raw for db, c, raw in items if c == "b"] == b
    assert [c for _, c, _ in items][:3] == ["a", "a", "a"] and "b" in [c for _, c, _ in items][3:6]


def test_a_view_an_empty_collection_and_an_empty_oplog_get_an_empty_segment_then_their_eof():
    """As mongodump writes them (MuxIn.Close flushes an empty buffer). mongorestore needs it for
    the oplog: it skips the rest of the oplog's first header, so an EOF-only oplog never ends."""
    out = io.BytesIO()
    writer = ArchiveWriter(out, server_version="7.0.14", tool_version="t")
    writer.add_collection("db", "v", '{"options":{"viewOn":"c","pipeline":[]},"indexes":[]}', type="view")
    writer.add_collection("db", "c", META)
    writer.add_collection("", "oplog", "")
    writer.begin()
    start = len(out.getvalue())
    writer.end_collection("db", "v")
    assert writer.write_documents("db", "c", iter(())) == 0
    writer.end_collection("db", "c")
    writer.end_collection("", "oplog")
    writer.close()
    assert out.getvalue()[start:] == b"".join(
        ns_header(db, coll, False, 0) + TERM + ns_header(db, coll, True, 0) + TERM
        for db, coll in [("db", "v"), ("db", "c"), ("", "oplog")]
    )
    reader, items = read_all(out.getvalue())
    assert items == [] and [e.type for e in reader.prelude.collections] == ["view", "collection", ""]
    assert reader.document_counts == {("db", "v"): 0, ("db", "c"): 0, ("", "oplog"): 0}


def test_reader_accepts_an_eof_without_a_segment():
    prelude = bson.encode({"db": "db", "collection": "c", "metadata": META, "size": 0, "type": "collection"})
    header = bson.encode(
        {"concurrent_collections": 1, "version": "0.1", "server_version": "7.0.1", "tool_version": "t"}
    )
    reader, items = read_all(MAGIC + header + prelude + TERM + ns_header("db", "c", True, 0) + TERM)
    assert items == [] and reader.document_counts == {}


def test_reader_accepts_mongodumps_empty_segment_before_an_eof():
    """mongodump writes a header and a terminator with no documents for an empty collection or
    a view (MuxIn.Close flushes an empty buffer), as in mongorestore/testdata/bad-format.archive."""
    prelude = bson.encode({"db": "test", "collection": "ixtest", "metadata": META, "size": 0})  # no type: old dump
    header = bson.encode(
        {"concurrent_collections": 4, "version": "0.1", "server_version": "4.0.14", "tool_version": "r4.2.2"}
    )
    data = (
        MAGIC + header + prelude + TERM
        + ns_header("test", "ixtest", False, 0) + TERM
        + ns_header("test", "ixtest", True, 0) + TERM
    )  # fmt: skip
    reader, items = read_all(data)
    assert items == [] and reader.prelude.collections[0].type == ""
    assert reader.document_counts == {("test", "ixtest"): 0}


@pytest.mark.parametrize(("server", "data_name"), [("7.0.14", "system.buckets.weather"), ("8.3.0", "weather")])
def test_timeseries_data_goes_under_its_buckets_name_before_8_3(server, data_name):
    out = io.BytesIO()
    writer = ArchiveWriter(out, server_version=server, tool_version="t")
    entry = writer.add_collection(
        "db", "weather", '{"options":{"timeseries":{"timeField":"t"}},"indexes":[]}', type="timeseries"
    )
    assert entry.data_collection == data_name
    writer.begin()
    buckets = docs("bucket", 2)
    writer.write_documents("db", "weather", buckets)
    writer.end_collection("db", "weather")
    writer.close()
    assert ns_header("db", data_name, False, 0) in out.getvalue()
    reader, items = read_all(out.getvalue())
    assert items == [("db", data_name, raw) for raw in buckets]
    assert reader.prelude.entry("db", data_name).collection == "weather"


def test_reader_survives_short_reads_and_documents_up_to_the_limit():
    class Trickle(io.RawIOBase):
        def __init__(self, data):
            self._data = io.BytesIO(data)

        def readable(self):
            return True

        def read(self, n=-1):
            return self._data.read(min(n, 7) if n >= 0 else 7)

    big = bson.encode({"_id": 1, "blob": Binary(b"\x00" * (300 * 1024))})
    data = simple_archive(documents=docs("o", 20) + [big])
    reader = ArchiveReader(Trickle(data))
    raws = [raw for _, _, raw in reader]
    assert raws[-1] == big and len(raws) == 21


# --- what the reader refuses ---


def flip_in_document(data: bytes, needle: bytes) -> bytes:
    at = data.index(needle)
    return data[:at] + bytes([needle[0] ^ 0x01]) + data[at + 1 :]


def test_crc_mismatch_is_named():
    data = simple_archive(documents=[bson.encode({"_id": 1, "name": "Zoë"})])
    tampered = flip_in_document(data, "Zoë".encode())
    reader = ArchiveReader(io.BytesIO(tampered), name="dump.archive")
    with pytest.raises(IntegrityError, match=r"dump.archive fails the CRC check of namespace 'shop.orders'"):
        list(reader)


def test_a_wrong_crc_in_the_eof_header_is_named():
    data = simple_archive()
    crc = crc64_bitwise(b"".join(docs("o", 3)))
    good = ns_header("shop", "orders", True, crc)
    assert good in data
    bad = data.replace(good, ns_header("shop", "orders", True, crc ^ 1))
    with pytest.raises(IntegrityError, match="CRC check of namespace 'shop.orders'"):
        read_all(bad)


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (lambda d, seg: seg + 70, r"truncated in a segment of namespace 'shop\.orders'"),
        (lambda d, seg: len(d) - 2, r"truncated in the end of namespace 'shop\.orders'"),
        (lambda d, seg: len(d) - 4 - len(ns_header("shop", "orders", True, 0)), "ends before the EOF of 'shop.orders'"),
        (lambda d, seg: seg, "ends before all collections were seen: never ended 'shop.orders'"),
        (lambda d, seg: 30, "truncated in the archive header"),
        (lambda d, seg: seg - 2, "truncated in the prelude"),
    ],
)
def test_truncation_is_named(cut, message):
    data = simple_archive()
    segment_at = data.index(ns_header("shop", "orders", False, 0))
    with pytest.raises(IntegrityError, match=message):
        read_all(data[: cut(data, segment_at)])


@pytest.mark.parametrize("start", [b"", b"\x6d\xe2", b"PK\x03\x04", bson.encode({"a": 1})[:4]])
def test_bad_magic(start):
    with pytest.raises(IntegrityError, match="is not a mongodump archive"):
        ArchiveReader(io.BytesIO(start + simple_archive()[4:] if start else b""))


def test_unterminated_segment():
    data = simple_archive()
    # Drop the terminator that closes the data segment: the EOF header then reads as a document
    # of the segment, and the namespace never ends.
    segment_end = data.index(TERM + ns_header("shop", "orders", True, crc64_bitwise(b"".join(docs("o", 3)))))
    unterminated = data[:segment_end] + data[segment_end + 4 :]
    with pytest.raises(IntegrityError, match="'shop.orders'"):
        read_all(unterminated)


def test_reader_refusals_of_malformed_blocks():
    header = bson.encode(
        {"concurrent_collections": 1, "version": "0.1", "server_version": "7.0.1", "tool_version": "t"}
    )
    prelude = (
        MAGIC
        + header
        + bson.encode({"db": "db", "collection": "c", "metadata": "", "size": 0, "type": "collection"})
        + TERM
    )
    one = bson.encode({"_id": 1})
    eof = ns_header("db", "c", True, crc64_bitwise(one)) + TERM
    cases = {
        "which its prelude does not list": ns_header("db", "other", False, 0) + one + TERM,
        "after that namespace's EOF": ns_header("db", "c", False, 0)
        + one
        + TERM
        + eof
        + ns_header("db", "c", False, 0)
        + one
        + TERM,
        "two terminators in a row": TERM,
        "CRC must be an int64": bson.encode({"db": "db", "collection": "c", "EOF": False, "CRC": 0}) + TERM,
        "unknown fields": bson.encode({"db": "db", "collection": "c", "EOF": False, "CRC": Int64(0), "x": 1}) + TERM,
        "documents after the EOF header": ns_header("db", "c", True, 0) + one + TERM,
        "needs a BSON length or a terminator": ns_header("db", "c", False, 0) + struct.pack("<i", 3) + TERM,
        "does not end with a NUL": ns_header("db", "c", False, 0) + one[:-1] + b"\x01" + TERM,
    }
    for message, blocks in cases.items():
        with pytest.raises(IntegrityError, match=message):
            read_all(prelude + blocks + eof)
    read_all(prelude + ns_header("db", "c", False, 0) + one + TERM + eof)  # the untouched control


# --- what the writer refuses ---


def make_writer(**kwargs) -> ArchiveWriter:
    writer = ArchiveWriter(io.BytesIO(), server_version="7.0.14", tool_version="t", **kwargs)
    return writer


def test_writer_refuses_undeclared_ended_and_out_of_order_use():
    writer = make_writer()
    writer.add_collection("shop", "orders", META)
    with pytest.raises(ArchiveUsageError, match="after begin"):
        writer.write_documents("shop", "orders", docs("o", 1))
    writer.begin()
    with pytest.raises(ArchiveUsageError, match="declared before begin"):
        writer.add_collection("shop", "late", META)
    with pytest.raises(ArchiveUsageError, match="'shop.other' was not declared"):
        writer.write_documents("shop", "other", docs("o", 1))
    writer.end_collection("shop", "orders")
    with pytest.raises(ArchiveUsageError, match="'shop.orders' already ended"):
        writer.write_documents("shop", "orders", docs("o", 1))
    with pytest.raises(ArchiveUsageError, match="'shop.orders' already ended"):
        writer.end_collection("shop", "orders")
    writer.close()


def test_writer_refuses_an_unfinished_archive_and_bad_documents():
    writer = make_writer()
    writer.add_collection("shop", "orders", META)
    writer.add_collection("shop", "v", "{}", type="view")
    writer.begin()
    with pytest.raises(ArchiveUsageError, match="'shop.v' is a view"):
        writer.write_documents("shop", "v", docs("v", 1))
    for bad in (b"\x05\x00\x00\x00", b"\x06\x00\x00\x00\x00", {"_id": 1}):
        with pytest.raises(ArchiveUsageError, match="'shop.orders'"):
            writer.write_documents("shop", "orders", [bad])
    too_big = bytearray(struct.pack("<i", (16 << 20) + 1) + bytes((16 << 20) - 3))
    with pytest.raises(ArchiveUsageError, match="outside BSON"):
        writer.write_documents("shop", "orders", [too_big])
    writer.write_documents("shop", "orders", [RawBSONDocument(bson.encode({"_id": 1}))])
    with pytest.raises(ArchiveUsageError, match="never ended: 'shop.orders', 'shop.v'"):
        writer.close()


def test_the_oplog_comes_after_every_other_collection():
    writer = make_writer()
    writer.add_collection("shop", "orders", META)
    writer.add_collection("", "oplog", "")
    writer.begin()
    with pytest.raises(ArchiveUsageError, match="oplog comes after every other collection.*'shop.orders'"):
        writer.write_documents("", "oplog", docs("op", 1))
    with pytest.raises(ArchiveUsageError, match="oplog comes after"):
        writer.end_collection("", "oplog")
    writer.end_collection("shop", "orders")
    writer.write_documents("", "oplog", docs("op", 1))
    writer.end_collection("", "oplog")
    writer.close()


def test_no_more_namespaces_in_progress_than_concurrent_collections():
    writer = make_writer(concurrent_collections=2)
    for name in "abc":
        writer.add_collection("db", name, META)
    writer.begin()
    writer.write_documents("db", "a", docs("a", 1))
    writer.write_documents("db", "b", docs("b", 1))
    with pytest.raises(ArchiveUsageError, match="'db.c': 2 collections are already in progress"):
        writer.write_documents("db", "c", docs("c", 1))
    writer.end_collection("db", "a")
    writer.write_documents("db", "c", docs("c", 1))


def test_users_and_roles_come_first():
    writer = make_writer()
    writer.add_collection("shop", "orders", META)
    writer.add_collection("admin", "system.users", META)
    writer.begin()
    writer.end_collection("shop", "orders")
    with pytest.raises(ArchiveUsageError, match="'admin.system.users': users, roles and the auth version come before"):
        writer.write_documents("admin", "system.users", docs("u", 1))


@pytest.mark.parametrize(
    ("db", "coll", "message"),
    [
        ("my.db", "c", "refuses database names containing '.'"),
        ("my db", "c", "refuses database names containing ' '"),
        ("x" * 64, "c", "over 63 bytes"),
        ("", "c", "empty database name is the oplog's alone"),
        ("db", "", "non-empty"),
    ],
)
def test_names_mongorestore_refuses(db, coll, message):
    with pytest.raises(ArchiveUsageError, match=message):
        make_writer().add_collection(db, coll, META)


def test_declaration_refusals():
    writer = make_writer()
    writer.add_collection("db", "ts", "{}", type="timeseries")
    with pytest.raises(ArchiveUsageError, match="share the name 'db.system.buckets.ts'"):
        writer.add_collection("db", "system.buckets.ts", "{}")
    with pytest.raises(ArchiveUsageError, match="declared twice"):
        writer.add_collection("db", "ts", "{}", type="timeseries")
    with pytest.raises(ArchiveUsageError, match="not JSON"):
        writer.add_collection("db", "c", "{options:")
    with pytest.raises(ArchiveUsageError, match="type 'views'"):
        writer.add_collection("db", "c", "{}", type="views")
    with pytest.raises(ArchiveUsageError, match="'7.0' is not 'major.minor.patch'"):
        ArchiveWriter(io.BytesIO(), server_version="7.0", tool_version="t")
    ArchiveWriter(io.BytesIO(), server_version="8.0.4-ent+abc", tool_version="t")  # build suffixes are fine


def test_segments_stay_bounded_for_a_large_collection():
    class Sink:
        def __init__(self):
            self.largest = 0
            self.total = 0

        def write(self, data):
            self.largest = max(self.largest, len(data))
            self.total += len(data)
            return len(data)

    sink = Sink()
    writer = ArchiveWriter(sink, server_version="7.0.14", tool_version="t", segment_bytes=256 * 1024)
    writer.add_collection("db", "big", META)
    writer.begin()
    one = bson.encode({"_id": 0, "pad": os.urandom(1000)})

    def stream():  # ~6 MB, never held as a list
        for _ in range(6000):
            yield one

    assert writer.write_documents("db", "big", stream()) == 6000
    writer.end_collection("db", "big")
    writer.close()
    assert sink.largest <= 256 * 1024
    assert writer.totals() == {("db", "big"): (6000, 6000 * len(one))}
    assert sink.total == writer.bytes_written > 6000 * len(one)


# --- metadata.json ---


def test_metadata_json_as_mongodump_writes_it():
    """Texts from the prelude of mongo-tools mongorestore/testdata/timeseries_tests/dump.archive
    (mongodump 100.3.1), rebuilt from the listCollections/listIndexes answers they came from."""
    views = {
        "name": "system.views",
        "type": "collection",
        "options": {},
        "info": {"readOnly": False, "uuid": Binary(bytes.fromhex("ef43f3bda67e4d4ab0178bf30cae15e3"), 4)},
        "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"},
    }
    assert metadata_json(views, [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]) == (
        '{"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"}],'
        '"uuid":"ef43f3bda67e4d4ab0178bf30cae15e3","collectionName":"system.views","type":"collection"}'
    )
    timeseries = {
        "name": "foo_ts",
        "type": "timeseries",
        "options": {
            "timeseries": {
                "timeField": "ts",
                "metaField": "meta",
                "granularity": "seconds",
                "bucketMaxSpanSeconds": 3600,
            }
        },
        "info": {"readOnly": False},
    }
    indexes = [
        {"v": 2, "key": {"meta.device": 1}, "name": "meta.device_1"},
        {"v": 2, "key": {"ts": 1, "meta.device": 1}, "name": "ts_1_meta.device_1"},
    ]
    assert metadata_json(timeseries, indexes) == (
        '{"options":{"timeseries":{"timeField":"ts","metaField":"meta","granularity":"seconds",'
        '"bucketMaxSpanSeconds":{"$numberInt":"3600"}}},"indexes":[{"v":{"$numberInt":"2"},'
        '"key":{"meta.device":{"$numberInt":"1"}},"name":"meta.device_1"},{"v":{"$numberInt":"2"},'
        '"key":{"ts":{"$numberInt":"1"},"meta.device":{"$numberInt":"1"}},"name":"ts_1_meta.device_1"}],'
        '"collectionName":"foo_ts","type":"timeseries"}'
    )


def test_metadata_json_of_a_view_keeps_types_and_unicode():
    view = {
        "name": "ünï\u2028",
        "type": "view",
        "options": {"viewOn": "orders", "pipeline": [{"$match": {"n": Int64(5), "f": 1.5}}]},
        "info": {"readOnly": True},
    }
    text = metadata_json(view, [{"v": 2, "key": {"_id": 1}, "name": "_id_"}])
    assert text == (
        '{"options":{"viewOn":"orders","pipeline":[{"$match":{"n":{"$numberLong":"5"},'
        '"f":{"$numberDouble":"1.5"}}}]},"indexes":[],"collectionName":"ünï\\u2028","type":"view"}'
    )
