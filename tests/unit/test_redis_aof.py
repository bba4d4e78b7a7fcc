"""Redis AOF formats: the multi-part AOF manifest and the RESP cut at a complete command."""

from __future__ import annotations

import os

import pytest

from vaultflow.engines.redis.aof_format import RespCutter, complete_prefix, find_cut, parse_aof_manifest
from vaultflow.errors import IntegrityError


def cmd(*args: bytes | str) -> bytes:
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


SELECT = cmd("SELECT", "0")
SET = cmd("SET", "user:1000", "Alice")
BIG = cmd("SET", "blob", b"x" * 10_000 + b"\r\n*3\r\n")  # payload that looks like RESP inside


# -- manifest ----------------------------------------------------------------------------------


def test_manifest_base_incrs_and_history():
    text = (
        "file appendonly.aof.1.base.rdb seq 1 type h\n"
        "file appendonly.aof.2.base.rdb seq 2 type b\n"
        "file appendonly.aof.1.incr.aof seq 1 type h\n"
        "file appendonly.aof.2.incr.aof seq 2 type i\n"
        "file appendonly.aof.3.incr.aof seq 3 type i\n"
    )
    manifest = parse_aof_manifest(text)
    assert manifest.base.name == "appendonly.aof.2.base.rdb"
    assert [f.name for f in manifest.incrs] == ["appendonly.aof.2.incr.aof", "appendonly.aof.3.incr.aof"]
    assert [f.seq for f in manifest.incrs] == [2, 3]
    # what a backup stores: the live files only, lines verbatim, base first
    assert manifest.live_text() == (
        "file appendonly.aof.2.base.rdb seq 2 type b\n"
        "file appendonly.aof.2.incr.aof seq 2 type i\n"
        "file appendonly.aof.3.incr.aof seq 3 type i\n"
    )


def test_manifest_quoted_name_and_blank_lines():
    manifest = parse_aof_manifest(
        '\nfile "my aof.1.base.rdb" seq 1 type b\r\n\nfile "my aof.1.incr.aof" seq 1 type i\n'
    )
    assert manifest.base.name == "my aof.1.base.rdb"
    assert manifest.incrs[0].name == "my aof.1.incr.aof"
    assert parse_aof_manifest(manifest.live_text()) == manifest


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("file a.base.rdb seq one type b\n", "needs file, seq and type"),
        ("file a.base.rdb type b\n", "needs file, seq and type"),
        ("file a.base.rdb seq 1 type\n", "key/value pairs"),
        ("file a.base.rdb seq 1 type x\n", "unexpected entry"),
        ("file ../etc/passwd seq 1 type i\n", "unexpected entry"),
        ("file a.1.base.rdb seq 1 type b\nfile a.2.base.rdb seq 2 type b\n", "more than one base"),
        ('file "unterminated seq 1 type b\n', "cannot parse"),
    ],
)
def test_manifest_malformed_names_the_problem(text, complaint):
    with pytest.raises(IntegrityError, match=complaint) as info:
        parse_aof_manifest(text, "/data/appendonlydir/appendonly.aof.manifest")
    assert "appendonly.aof.manifest" in str(info.value)


def test_manifest_without_base():
    assert parse_aof_manifest("file a.1.incr.aof seq 1 type i\n").base is None


# -- RESP cut ----------------------------------------------------------------------------------


def test_complete_commands_cut_at_the_end():
    data = SELECT + SET + BIG
    assert complete_prefix(data) == len(data)
    assert complete_prefix(b"") == 0


def test_cut_in_the_middle_of_a_bulk_string():
    data = SELECT + SET + BIG
    for end in (len(SELECT + SET) + 30, len(data) - 1, len(data) - 2, len(data) - 3):
        assert complete_prefix(data[:end]) == len(SELECT + SET), end


@pytest.mark.parametrize(
    "partial",
    [
        b"*",
        b"*3",
        b"*3\r",
        b"*3\r\n",
        b"*3\r\n$3",
        b"*3\r\n$3\r\nSE",
        b"*3\r\n$3\r\nSET\r",
        b"*3\r\n$3\r\nSET\r\n$9\r\nuser:1000\r\n",
    ],
)
def test_partial_header_is_not_a_command(partial):
    assert complete_prefix(SELECT + partial) == len(SELECT)


def test_every_split_point_agrees_with_byte_at_a_time_feeding():
    data = SELECT + SET + cmd("HSET", "h", "f", "v") + BIG + cmd("DEL", "a")
    ends, pos = [], 0
    for piece in (SELECT, SET, cmd("HSET", "h", "f", "v"), BIG, cmd("DEL", "a")):
        pos += len(piece)
        ends.append(pos)
    cutter = RespCutter()
    for i in range(len(data)):
        cutter.feed(data[i : i + 1])
        assert cutter.boundary == max([0] + [e for e in ends if e <= i + 1])
    assert cutter.offset == len(data)


def test_never_cut_inside_multi_exec():
    transaction = cmd("MULTI") + cmd("INCRBY", "a", "1") + cmd("INCRBY", "b", "1") + cmd("EXEC")
    data = SELECT + transaction
    assert complete_prefix(data) == len(data)
    for end in range(len(SELECT), len(data)):
        assert complete_prefix(data[:end]) == len(SELECT), end
    lower = SELECT + cmd("multi") + SET + cmd("exec") + SET
    assert complete_prefix(lower[:-1]) == len(lower) - len(SET)


def test_annotations_are_boundaries():
    data = b"#TS:1700000000\r\n" + SET + b"#TS:1700000001\r\n"
    assert complete_prefix(data) == len(data)
    assert complete_prefix(data[:-3]) == len(data) - len(b"#TS:1700000001\r\n")


@pytest.mark.parametrize(
    "garbage", [b"SET a b\r\n", b"*2\r\n+OK\r\n", b"*x\r\n", b"*1\n", b"*1\r\n$-1\r\n", b"*1\r\n$3\r\nabcXY*1\r\n"]
)
def test_not_resp_is_an_integrity_error(garbage):
    with pytest.raises(IntegrityError, match="not valid RESP.*redis-check-aof"):
        complete_prefix(SELECT + garbage + SET, where="appendonly.aof.1.incr.aof")


def test_endless_header_line_is_refused():
    with pytest.raises(IntegrityError, match="header line without end"):
        complete_prefix(b"*" + b"1" * 70_000)


def test_find_cut_continues_from_a_previous_cut(tmp_path):
    path = tmp_path / "appendonly.aof.1.incr.aof"
    first = SELECT + SET
    path.write_bytes(first + BIG + BIG[:100])
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        assert find_cut(fd, 0, size, str(path)) == len(first + BIG)
        assert find_cut(fd, len(first), size, str(path)) == len(first + BIG)
        assert find_cut(fd, len(first + BIG), size, str(path)) == len(first + BIG)  # nothing new complete
        assert find_cut(fd, 0, len(first) + 5, str(path)) == len(first)  # a size seen earlier
        with pytest.raises(IntegrityError, match="shrank"):
            find_cut(fd, 0, size + 10, str(path))
    finally:
        os.close(fd)


def test_random_chunking_matches_the_known_boundaries():
    """Whatever the chunk sizes (fast path for whole commands, state machine across chunk
    edges), the boundary is the end of the last complete command outside MULTI/EXEC."""
    import random

    rng = random.Random(7)
    data, usable = b"", [0]
    for i in range(400):
        if rng.random() < 0.1:
            block = (
                cmd("MULTI")
                + cmd("INCRBY", "a", "1")
                + cmd("SET", "v", os.urandom(rng.randrange(0, 300)))
                + cmd("EXEC")
            )
        else:
            block = cmd("SET", f"k{i}", os.urandom(rng.choice([0, 3, 50, 5000])))
        data += block
        usable.append(len(data))
    for _ in range(20):
        cutter, pos = RespCutter(), 0
        while pos < len(data):
            step = rng.choice([1, 7, 100, 4096, 70_000])
            cutter.feed(data[pos : pos + step])
            pos = min(len(data), pos + step)
            assert cutter.boundary == max(u for u in usable if u <= pos)
    assert cutter.boundary == len(data)


# -- acknowledged writes still in the AOF buffer (appendfsync everysec postpones the write) ------


def info(buffered: int, written: int, rewrites: int = 0, rewriting: int = 0) -> dict:
    return {
        "aof_buffer_length": buffered,
        "aof_current_size": written,
        "aof_rewrites": rewrites,
        "aof_rewrite_in_progress": rewriting,
    }


def test_aof_flushed_waits_for_the_buffer_seen_at_the_start():
    from vaultflow.engines.redis.aof_files import aof_flushed

    start = info(300, 1000)
    assert not aof_flushed(start, start)  # postponed: not in the file yet
    assert not aof_flushed(start, info(500, 1000))  # more buffered, nothing written
    assert not aof_flushed(start, info(100, 1299))  # written, but one byte short
    assert aof_flushed(start, info(100, 1300))  # start's buffer written, new writes pending
    assert aof_flushed(start, info(0, 1000))  # the buffer was empty since
    assert aof_flushed(info(0, 1000), info(50, 1000))  # nothing was buffered at the start
    assert aof_flushed(start, info(80, 10, rewrites=1, rewriting=1))  # a rewrite started: forced write first
    # a rewrite running at the start finished and reset the size: only an empty buffer proves it
    assert not aof_flushed(info(300, 1000, rewriting=1), info(20, 5000))
    assert aof_flushed(info(300, 1000, rewriting=1), info(0, 400))
    assert aof_flushed(info(300, 1000, rewriting=1), info(20, 1300, rewriting=1))
