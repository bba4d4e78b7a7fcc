"""RDB header parsing: hand-built headers (every length and integer encoding the AUX fields use)
and a real RDB streamed by `redis-cli --rdb` from a fixture server."""

from __future__ import annotations

import struct
import subprocess

import pytest

from tests.fixtures.redis import crc64_jones
from vaultflow.engines.redis.rdb import RdbFormatError, parse_header
from vaultflow.engines.redis.rdb_format import RdbStreamScanner
from vaultflow.engines.redis.server import RedisProcess, find_binary
from vaultflow.errors import IntegrityError

AUX, SELECTDB, EOF = b"\xfa", b"\xfe", b"\xff"


def s6(text: str | bytes) -> bytes:
    """A string with a 6-bit length (< 64 bytes)."""
    raw = text.encode() if isinstance(text, str) else text
    assert len(raw) < 64
    return bytes([len(raw)]) + raw


def s14(raw: bytes) -> bytes:
    """A string with a 14-bit length: 01xxxxxx xxxxxxxx (big-endian)."""
    assert 64 <= len(raw) < 1 << 14
    return bytes([0x40 | (len(raw) >> 8), len(raw) & 0xFF]) + raw


def s32(raw: bytes) -> bytes:
    """A string with a 32-bit length: 0x80 then 4 bytes big-endian."""
    return b"\x80" + struct.pack(">I", len(raw)) + raw


def int8(value: int) -> bytes:
    return b"\xc0" + struct.pack("<b", value)


def int16(value: int) -> bytes:
    return b"\xc1" + struct.pack("<h", value)


def int32(value: int) -> bytes:
    return b"\xc2" + struct.pack("<i", value)


def aux(key: bytes, value: bytes) -> bytes:
    return AUX + s6(key) + value


REPL_ID = "8a1c0d7e0f23b5e4a9d4c1b2a3f4e5d6c7b8a9f0"
HEADER = (
    b"REDIS0011"
    + aux(b"redis-ver", s6("7.2.4"))
    + aux(b"redis-bits", int8(64))
    + aux(b"ctime", int32(1_795_713_490))
    + aux(b"used-mem", int32(-5))
    + aux(b"aof-base", int8(0))
    + aux(b"repl-stream-db", int16(-300))
    + aux(b"repl-id", s6(REPL_ID))
    + aux(b"repl-offset", int16(12345))
    + aux(b"long-field", s14(b"L" * 300))
    + aux(b"huge-field", s32(b"H" * 70_000))
    + SELECTDB
    + b"\x00"
    + b"\x00"
    + s6("user:1000")
    + s6("Alice")
    + EOF
)


def test_hand_built_header_every_encoding():
    facts = parse_header(HEADER)
    assert facts == {
        "rdb-version": "11",
        "redis-ver": "7.2.4",
        "redis-bits": "64",
        "ctime": "1795713490",
        "used-mem": "-5",
        "aof-base": "0",
        "repl-stream-db": "-300",
        "repl-id": REPL_ID,
        "repl-offset": "12345",
        "long-field": "L" * 300,
        "huge-field": "H" * 70_000,
    }


def test_parsing_stops_at_the_first_database():
    """Keys after SELECTDB are not aux fields, even if a value byte happens to be 0xFA."""
    data = b"REDIS0009" + aux(b"redis-ver", s6("6.2.0")) + SELECTDB + b"\x00" + AUX + s6("x") + s6("y")
    assert parse_header(data) == {"rdb-version": "9", "redis-ver": "6.2.0"}


@pytest.mark.parametrize("cut", [9, 12, 20, 25, 40, 60, 100, 150, 300, 1000])
def test_a_cut_off_header_keeps_only_complete_fields(cut: int):
    """The engine keeps the first 64 KiB: a field cut at that boundary must not be recorded half."""
    facts = parse_header(HEADER[:cut])
    full = parse_header(HEADER)
    assert facts["rdb-version"] == "11"
    for key, value in facts.items():
        assert full[key] == value, f"{key} recorded from a cut-off header as {value!r}"
    assert len(facts) < len(full)


def test_a_fourteen_bit_length_cut_in_its_second_byte():
    data = b"REDIS0010" + aux(b"redis-ver", s6("7.0.15")) + AUX + s6("k") + b"\x41"
    assert parse_header(data) == {"rdb-version": "10", "redis-ver": "7.0.15"}


def test_compressed_aux_value_is_rejected():
    data = b"REDIS0010" + AUX + s6("redis-ver") + b"\xc3" + b"\x05\x05" + b"xxxxx"
    with pytest.raises(RdbFormatError, match="compressed"):
        parse_header(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"REDIS",
        b"REDIS001",  # too short for a version
        b"REDIX0010\xfa\x01a\x01b",  # wrong magic
        b"redis0010",  # magic is case-sensitive
        b"REDIS00a0\xff",  # version not digits
        b"*1\r\n$4\r\nPING\r\n",  # RESP (an AOF), not an RDB
        b"\x28\xb5\x2f\xfdREDIS0010",  # a zstd frame: someone forgot to decompress
        b"-ERR unknown command\r\n",
    ],
)
def test_non_rdb_input_is_rejected(data: bytes):
    with pytest.raises(RdbFormatError, match="not an RDB file"):
        parse_header(data)


def test_real_rdb_from_redis_cli(redis_source: RedisProcess, tmp_path):
    conn = redis_source.client()
    conn.set("unit:rdb:user:1000", "Alice")
    info = conn.info("server")
    out = tmp_path / "dump.rdb"
    done = subprocess.run(
        [str(find_binary("redis-cli")), "-h", redis_source.host, "-p", str(redis_source.port), "--rdb", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # after the sync: the first replica of a server without a backlog gets a new replication id
    replication = conn.info("replication")
    conn.close()
    data = out.read_bytes()
    facts = parse_header(data)
    assert facts["rdb-version"] == "10"  # Redis 7.0's format
    assert facts["redis-ver"] == info["redis_version"]
    assert facts["redis-bits"] == "64"
    assert facts["repl-id"] == replication["master_replid"]
    assert int(facts["repl-offset"]) >= 0
    assert abs(int(facts["ctime"]) - int(info["server_time_usec"]) // 1_000_000) < 120
    assert facts["aof-base"] == "0"
    # the same facts from the first bytes only, as the engine keeps them
    assert parse_header(data[: 64 * 1024]) == facts


# -- RdbStreamScanner: counts from RESIZEDB, confirmed by redis-check-rdb; redis-cli's EOF mark --


def resizedb(dbid: int, keys: int, expires: int) -> bytes:
    return SELECTDB + bytes([dbid]) + b"\xfb" + bytes([keys]) + bytes([expires])


# db 0 with 2 keys (1 expire), then key bytes holding two SELECTDB+RESIZEDB look-alikes, db 3 with 1 key
BODY = (
    b"REDIS0010"
    + aux(b"redis-ver", s6("7.0.15"))
    + resizedb(0, 2, 1)
    + b"\x00"
    + s6("a")
    + s6(b"\xfe\x05\xfb\x09\x09")
    + b"\xfc"
    + b"\x00" * 8
    + b"\x00"
    + s6("b")
    + s6("x")
    + resizedb(3, 1, 0)
    + b"\x00"
    + s6("c")
    + s6(b"\xfe\x07\xfb\x01\x00" * 3)
    + EOF
)
RDB = BODY + crc64_jones(BODY).to_bytes(8, "little")
SELECT0 = BODY.index(b"\xfe\x00\xfb") + 2  # offsets of the RESIZEDB opcodes, as redis-check-rdb reports them
SELECT3 = BODY.index(b"\xfe\x03\xfb") + 2


def check_output(length: int = len(RDB), keys: int = 3, expires: int = 1, dbs=((SELECT0, 0), (SELECT3, 3))) -> str:
    lines = ["[offset 0] Checking RDB file check.rdb", "[offset 26] AUX FIELD redis-ver = '7.0.15'"]
    lines += [f"[offset {off}] Selecting DB ID {db}" for off, db in dbs]
    lines += [
        f"[offset {length}] Checksum OK",
        f"[offset {length}] \\o/ RDB looks OK! \\o/",
        f"[info] {keys} keys read",
        f"[info] {expires} expires",
        "[info] 0 already expired",
    ]
    return "\n".join(lines)


def scan(data: bytes, chunk: int) -> tuple[bytes, RdbStreamScanner]:
    scanner = RdbStreamScanner()
    out = b"".join(scanner.feed(data[i : i + chunk]) for i in range(0, len(data), chunk)) + scanner.end()
    return out, scanner


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 1 << 20])
def test_scanner_counts_per_db_at_every_chunking(chunk: int):
    assert crc64_jones(b"123456789") == 0xE9C6D914C4B8D9CA  # the check value redis' crc64.c tests
    out, scanner = scan(RDB, chunk)
    assert out == RDB
    assert len(scanner.candidates) == 2 + 1 + 3  # the real ones and every look-alike in the values
    facts = scanner.facts(check_output(), "test")
    assert facts.databases == {0: (2, 1), 3: (1, 0)}  # only those redis-check-rdb confirmed
    assert facts.crc64 == RDB[-8:].hex() and facts.length == len(RDB) and not facts.eof_mark_dropped
    assert facts.header["redis-ver"] == "7.0.15"


@pytest.mark.parametrize("chunk", [1, 5, 40, 41, 1 << 20])
def test_scanner_drops_redis_clis_eof_mark_and_nothing_else(chunk: int):
    mark = b"0123456789abcdef0123456789abcdef01234567"
    out, scanner = scan(RDB + mark, chunk)
    assert out == RDB and scanner.eof_mark_dropped
    assert scanner.facts(check_output(), "test").length == len(RDB)
    # 40 hex characters that do not follow an EOF opcode + CRC64 are data: kept
    tail = BODY[:-1] + mark
    assert scan(tail, chunk)[0] == tail


def test_scanner_refuses_what_redis_check_rdb_contradicts():
    _, scanner = scan(RDB, 4096)
    with pytest.raises(IntegrityError, match="redis-check-rdb read 4"):
        scanner.facts(check_output(keys=4), "src:1")
    with pytest.raises(IntegrityError, match="found its end at 99"):
        scanner.facts(check_output(length=99), "src:1")
    with pytest.raises(IntegrityError, match="db 5 at offset 30"):
        scanner.facts(check_output(dbs=((SELECT0, 0), (30, 5))), "src:1")
    with pytest.raises(IntegrityError, match="CRC64"):
        scanner.facts(check_output().replace("Checksum OK", "x"), "src:1")
