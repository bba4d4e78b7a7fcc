"""The streaming pipeline with real child processes and a real LocalStore (no fakes)."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import psutil
import pytest
import zstandard

from tests.fixtures.processes import descendants, named
from vaultflow.errors import ConfigError, IntegrityError, ToolError
from vaultflow.pipeline import compress_into_store, dump_into_store, feed_process, open_verified
from vaultflow.stores import LocalStore
from vaultflow.stores.base import CHUNK_SIZE, BytesReader

# Deterministic, only partly compressible, and larger than a few CHUNK_SIZE reads.
PAYLOAD_SIZE = 3 * CHUNK_SIZE + 12345
PAYLOAD_CODE = (
    "import random; "
    "table = bytes(b'abcdefghij\\n'[i % 11] for i in range(256)); "
    f"payload = random.Random(7).randbytes({PAYLOAD_SIZE}).translate(table)"
)
MAKE_PAYLOAD = PAYLOAD_CODE + "; import sys; sys.stdout.buffer.write(payload)"


def expected_payload() -> bytes:
    scope: dict = {}
    exec(PAYLOAD_CODE, scope)
    return scope["payload"]


def read_verified(store: LocalStore, key: str, written, name: str | None = None) -> bytes:
    reader, verifying, raw = open_verified(store, key, written.sha256, written.stored_size, name)
    parts = []
    with raw:
        while chunk := reader.read(CHUNK_SIZE):
            parts.append(chunk)
        verifying.check()
    return b"".join(parts)


def no_temp_files(root: Path) -> bool:
    return not any(p.name.startswith(".tmp-") for p in root.rglob("*"))


def test_dump_roundtrip_through_local_store(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    seen: list[int] = []
    written = dump_into_store([sys.executable, "-c", MAKE_PAYLOAD], None, store, "t/data.zst", progress=seen.append)
    stored = (tmp_path / "repo" / "t" / "data.zst").read_bytes()
    assert written.raw_size == PAYLOAD_SIZE
    assert written.stored_size == len(stored) < PAYLOAD_SIZE
    assert written.sha256 == hashlib.sha256(stored).hexdigest()
    assert seen and seen[-1] == PAYLOAD_SIZE and seen == sorted(seen)
    assert read_verified(store, "t/data.zst", written) == expected_payload()


def test_random_bytes_from_head_roundtrip(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    n = 2 * CHUNK_SIZE + 1
    written = dump_into_store(["head", "-c", str(n), "/dev/urandom"], None, store, "rand.zst")
    assert written.raw_size == n
    data = read_verified(store, "rand.zst", written)
    assert len(data) == n
    # The stored object is plain zstd: any decoder reads it back.
    assert zstandard.ZstdDecompressor().decompressobj().decompress((tmp_path / "rand.zst").read_bytes()) == data


def test_compress_into_store_from_memory_and_empty(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    data = b"vaultflow " * 100_000
    written = compress_into_store(BytesReader(data), store, "a.zst", level=1)
    assert (written.raw_size, read_verified(store, "a.zst", written)) == (len(data), data)
    empty = compress_into_store(BytesReader(b""), store, "empty.zst")
    assert empty.raw_size == 0 and read_verified(store, "empty.zst", empty) == b""


def test_failing_producer_is_tool_error_and_commits_nothing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "repo")
    script = (
        'for i in $(seq 1 100); do echo "line $i" >&2; done; '
        "head -c 3000000 /dev/zero; echo 'pg_dump: error: disk on fire' >&2; exit 3"
    )
    with pytest.raises(ToolError) as info:
        dump_into_store(["sh", "-c", script], None, store, "b/db.dump.zst")
    message = str(info.value)
    assert "sh exited with status 3" in message
    assert "disk on fire" in message and "line 100" in message
    assert "line 10\n" not in message  # only the tail of stderr is kept
    assert list(store.list("")) == [] and store.stat("b/db.dump.zst") is None
    assert no_temp_files(tmp_path)


def test_producer_stderr_lines_reach_callback(tmp_path: Path) -> None:
    lines: list[str] = []
    dump_into_store(
        ["sh", "-c", "echo warning: one >&2; printf data"], None, LocalStore(tmp_path), "x.zst", on_stderr=lines.append
    )
    assert lines == ["warning: one"]


class SlowLog:
    """An on_stderr callback that takes its time, as a logger writing to a busy API does: a
    caller that returns without waiting for the drain thread loses the later lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        time.sleep(0.2)
        self.lines.append(line)


def test_every_stderr_line_is_delivered_before_dump_returns(tmp_path: Path) -> None:
    log = SlowLog()
    dump_into_store(
        ["sh", "-c", "printf 'a\\nb\\nc\\n' >&2; printf data"], None, LocalStore(tmp_path), "x.zst", on_stderr=log
    )
    assert log.lines == ["a", "b", "c"]


def test_every_stderr_line_is_delivered_before_feed_returns(tmp_path: Path) -> None:
    log = SlowLog()
    feed_process(BytesReader(b"x"), ["sh", "-c", "cat >/dev/null; printf 'a\\nb\\nc\\n' >&2"], on_stderr=log)
    assert log.lines == ["a", "b", "c"]


def test_store_failure_kills_producer(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = LocalStore(blocker / "repo")
    with pytest.raises(ConfigError, match=str(blocker)):  # a producer waited for: the suite's timeout
        dump_into_store(["sleep", "3600"], None, store, "k/x.zst")
    assert named(descendants(psutil.Process()), "sleep") == []


def written_object(tmp_path: Path):
    store = LocalStore(tmp_path)
    written = dump_into_store([sys.executable, "-c", MAKE_PAYLOAD], None, store, "bk/db/shop.dump.zst")
    return store, tmp_path / "bk" / "db" / "shop.dump.zst", written


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_flipped_byte_is_integrity_error_naming_object(tmp_path: Path, where: str) -> None:
    store, path, written = written_object(tmp_path)
    data = bytearray(path.read_bytes())
    pos = {"start": 20, "middle": len(data) // 2, "end": len(data) - 2}[where]
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="20261126T020000.000Z-F/db/shop.dump.zst is corrupt"):
        read_verified(store, "bk/db/shop.dump.zst", written, name="20261126T020000.000Z-F/db/shop.dump.zst")


def test_truncated_object_is_integrity_error(tmp_path: Path) -> None:
    store, path, written = written_object(tmp_path)
    path.write_bytes(path.read_bytes()[: written.stored_size // 2])
    with pytest.raises(IntegrityError, match="bk/db/shop.dump.zst is corrupt"):
        read_verified(store, "bk/db/shop.dump.zst", written)  # no name: the key is used


def test_wrong_recorded_checksum_is_integrity_error(tmp_path: Path) -> None:
    store, _, written = written_object(tmp_path)
    reader, verifying, raw = open_verified(store, "bk/db/shop.dump.zst", "0" * 64, written.stored_size, "obj")
    with raw, pytest.raises(IntegrityError, match=f"object obj is corrupt: expected sha256 {'0' * 64}"):
        while reader.read(CHUNK_SIZE):
            pass
        verifying.check()


def test_feed_process_delivers_everything(tmp_path: Path) -> None:
    store, _, written = written_object(tmp_path)
    reader, verifying, raw = open_verified(store, "bk/db/shop.dump.zst", written.sha256, written.stored_size)
    out = tmp_path / "out.bin"
    with raw:
        feed_process(reader, ["sh", "-c", f"cat > {out}"])
        verifying.check()
    assert out.read_bytes() == expected_payload()


def test_feed_process_failing_consumer_is_tool_error(tmp_path: Path) -> None:
    # The consumer gives up after one line: the writer sees a broken pipe, the exit status wins.
    script = 'read first; echo "pg_restore: error: bad input after $first" >&2; exit 4'
    with pytest.raises(ToolError, match="sh exited with status 4: pg_restore: error: bad input after aaa"):
        feed_process(BytesReader(b"aaa\n" + b"b" * (8 * CHUNK_SIZE)), ["sh", "-c", script])


def test_feed_process_consumer_failing_at_end(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="status 2: boom"):
        feed_process(BytesReader(b"x" * 1000), ["sh", "-c", "cat >/dev/null; echo boom >&2; exit 2"])


def test_feed_process_corrupt_input_kills_consumer(tmp_path: Path) -> None:
    store, path, written = written_object(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    marker = tmp_path / "finished"
    reader, _, raw = open_verified(store, "bk/db/shop.dump.zst", written.sha256, written.stored_size, "obj")
    with raw, pytest.raises(IntegrityError, match="object obj is corrupt"):
        feed_process(reader, ["sh", "-c", f"cat >/dev/null && touch {marker}"])
    assert not marker.exists()  # killed before it could finish on truncated input
