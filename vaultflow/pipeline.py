"""One streaming helper, used everywhere: producer -> zstd -> sha256 -> store, and back.

Bytes are pulled through a chain of small readers, each doing one thing, so memory stays
bounded by a few chunk buffers whatever the size of the dump:

    process stdout -> CountingReader (raw size) -> zstd stream_reader (multi-threaded)
                   -> HashingReader (sha256 + size of stored bytes) -> store.put

The producer's exit status is checked when its output ends, *inside* the read chain, so a
failed dump makes `store.put` fail and nothing is committed under the object's key.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, cast

import zstandard

from vaultflow.errors import IntegrityError, NotFoundError, ToolError, VaultflowError
from vaultflow.proc import tied_popen
from vaultflow.stores.base import CHUNK_SIZE, Readable, Store

if TYPE_CHECKING:
    from vaultflow.manifest import StoredObject

ProgressCallback = Callable[[int], None]  # called with the raw bytes read so far


class CountingReader:
    """Counts the bytes that pass; optionally reports progress."""

    def __init__(self, source: Readable, progress: ProgressCallback | None = None):
        self._source = source
        self._progress = progress
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self.count += len(data)
        if self._progress is not None and data:
            self._progress(self.count)
        return data


class HashingReader(CountingReader):
    """Counts and sha256-hashes the bytes that pass."""

    def __init__(self, source: Readable, progress: ProgressCallback | None = None):
        super().__init__(source, progress)
        self._hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self._hash.update(data)
        return data

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()


class VerifyingReader(HashingReader):
    """Hashes while reading and raises IntegrityError at end of stream on a mismatch.

    The consumer therefore never sees a clean EOF from corrupt bytes: it sees an error.
    """

    def __init__(self, source: Readable, expected_sha256: str, expected_size: int, name: str):
        super().__init__(source)
        self._expected = expected_sha256
        self._expected_size = expected_size
        self._name = name

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        if not data or (size is not None and size < 0):
            self.check()
        return data

    def check(self) -> None:
        if self.count != self._expected_size or self.sha256 != self._expected:
            raise IntegrityError(
                f"object {self._name} is corrupt: expected sha256 {self._expected} "
                f"({self._expected_size} bytes), read sha256 {self.sha256} ({self.count} bytes); "
                "restore refused — use another backup or repair the store from a mirror"
            )


class DecodingReader:
    """Wraps a zstd stream reader so that undecodable (corrupt) input is an IntegrityError.

    With write_checksum=True zstd usually notices a flipped byte before the raw stream
    ends, i.e. before VerifyingReader gets to compare the sha256: report it the same way.
    """

    def __init__(self, reader, name: str):
        self._reader = reader
        self._name = name

    def read(self, size: int = -1) -> bytes:
        try:
            return self._reader.read(size)
        except zstandard.ZstdError as exc:
            raise IntegrityError(
                f"object {self._name} is corrupt: zstd cannot decode it ({exc}); "
                "restore refused — use another backup or repair the store from a mirror"
            ) from exc


class StderrTail:
    """Drains a process's stderr in a thread, keeping only the last lines (bounded memory).

    `on_line` is called in the drain thread for every line. After the process has exited,
    call `join()` (or `text()`) before returning: the thread may still be delivering the last
    lines, which a caller that returns at once would drop or log after its run has ended.
    """

    def __init__(self, stream, keep: int = 40, on_line: Callable[[str], None] | None = None):
        self._lines: deque[str] = deque(maxlen=keep)
        self._on_line = on_line
        self._thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            self._lines.append(line)
            if self._on_line is not None:
                self._on_line(line)
        stream.close()

    def join(self, timeout: float = 5) -> None:
        """Wait (at most `timeout` seconds: a grandchild may hold the pipe open) until every line
        the process wrote has been read and passed to `on_line`."""
        self._thread.join(timeout=timeout)

    def text(self) -> str:
        """The last lines, after `join()`."""
        self.join()
        return "\n".join(self._lines)


class Producer:
    """A child process whose stdout is a data source; `read` raises ToolError if it failed."""

    def __init__(
        self,
        cmd: Sequence[str],
        env: Mapping[str, str] | None = None,
        on_stderr: Callable[[str], None] | None = None,
        stdin_data: bytes | None = None,
        pass_fds: Sequence[int] = (),
    ):
        """`stdin_data`: written to the child's stdin, then closed (e.g. a password for
        `redis-cli --askpass`: a pipe is neither argv nor environment). `pass_fds`: descriptors
        the child inherits (e.g. the memfd passfile of pg_client.client_env)."""
        self.cmd = list(cmd)
        self.proc = tied_popen(  # dies with the run: a killed backup leaves no dump running
            self.cmd,
            stdin=subprocess.DEVNULL if stdin_data is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            bufsize=0,
            pass_fds=tuple(pass_fds),
        )
        self.stderr = StderrTail(self.proc.stderr, on_line=on_stderr)
        if stdin_data is not None:
            try:
                self.proc.stdin.write(stdin_data)
                self.proc.stdin.close()
            except BrokenPipeError:
                pass  # the child exited early: its status says why

    def read(self, size: int = -1) -> bytes:
        data = self.proc.stdout.read(size if size and size > 0 else CHUNK_SIZE)
        if not data:
            self.finish()
        return data

    def finish(self) -> None:
        code = self.proc.wait()
        self.stderr.join()
        if code != 0:
            raise ToolError(f"{os.path.basename(self.cmd[0])} exited with status {code}: {self.stderr.text()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@dataclass(frozen=True)
class WrittenObject:
    """What compress_into_store wrote: `raw_size` bytes in, `stored_size` bytes stored, and the
    sha256 (hex) of the stored bytes."""

    raw_size: int
    stored_size: int
    sha256: str

    def as_object(self, key: str, role: str, format: str, database: str | None = None) -> StoredObject:
        """The manifest's record of this object: stored under `key` (inside the backup
        directory), playing `role` ('base', 'rdb', ...), `format` before compression (zstd)."""
        # Imported here, not at the top: restore_command runs `wal-fetch` once per WAL segment and
        # imports this module; vaultflow.manifest (pydantic) would add ~0.2 s to every segment.
        from vaultflow.manifest import StoredObject

        return StoredObject(
            key=key,
            role=role,
            database=database,
            format=format,
            raw_size=self.raw_size,
            stored_size=self.stored_size,
            sha256=self.sha256,
        )


def compress_into_store(
    source: Readable,
    store: Store,
    key: str,
    *,
    level: int = 3,
    threads: int = -1,
    size_hint: int | None = None,
    progress: ProgressCallback | None = None,
) -> WrittenObject:
    """Compress `source` with zstd and store it under `key`, hashing the stored bytes."""
    raw = CountingReader(source, progress)
    compressor = zstandard.ZstdCompressor(level=level, threads=threads, write_checksum=True)
    # zstandard reads any object with read(); its stubs say IO[bytes]
    compressed = compressor.stream_reader(cast(BinaryIO, raw), read_size=CHUNK_SIZE, closefd=False)
    stored = HashingReader(compressed)
    store.put(key, stored, size_hint=size_hint)
    return WrittenObject(raw_size=raw.count, stored_size=stored.count, sha256=stored.sha256)


def dump_into_store(
    cmd: Sequence[str],
    env: Mapping[str, str] | None,
    store: Store,
    key: str,
    *,
    level: int = 3,
    threads: int = -1,
    size_hint: int | None = None,
    progress: ProgressCallback | None = None,
    on_stderr: Callable[[str], None] | None = None,
    wrap: Callable[[Readable], Readable] | None = None,
    stdin_data: bytes | None = None,
    pass_fds: Sequence[int] = (),
) -> WrittenObject:
    """Run `cmd` and stream its stdout, compressed and hashed, into `store` under `key`.

    If the store fails the producer is killed; if the producer fails nothing is committed.
    `wrap` puts a reader of the caller's between the producer and zstd (e.g. a tar sniffer).
    """
    producer = Producer(cmd, env, on_stderr=on_stderr, stdin_data=stdin_data, pass_fds=pass_fds)
    try:
        source = wrap(producer) if wrap else producer
        return compress_into_store(
            source, store, key, level=level, threads=threads, size_hint=size_hint, progress=progress
        )
    except BaseException as exc:
        producer.kill()
        if isinstance(exc, VaultflowError) or not isinstance(exc, Exception):
            raise
        tail = producer.stderr.text()
        said = f"; {os.path.basename(cmd[0])} said: {tail}" if tail else ""
        raise ToolError(f"streaming {key} failed: {exc}{said}") from exc
    finally:
        producer.proc.stdout.close()


def open_verified(store: Store, key: str, sha256: str, stored_size: int, name: str | None = None):
    """A decompressing reader over a stored object that raises IntegrityError on a bad checksum.

    Returns (reader, verifying): read plain bytes from `reader`; `verifying.check()` after EOF.
    """
    raw = store.open(key)
    verifying = VerifyingReader(raw, sha256, stored_size, name or key)
    decompressor = zstandard.ZstdDecompressor()
    reader = decompressor.stream_reader(cast(BinaryIO, verifying), read_size=CHUNK_SIZE, read_across_frames=True)
    return DecodingReader(reader, name or key), verifying, raw


def write_verified(store: Store, key: str, sha256: str, stored_size: int, out, name: str | None = None) -> int:
    """Decompress a stored object into the writable `out`, chunk by chunk; IntegrityError (after
    the last byte) when its sha256 or size differs. Returns the plain bytes written."""
    reader, verifying, raw = open_verified(store, key, sha256, stored_size, name)
    count = 0
    with raw:
        while chunk := reader.read(CHUNK_SIZE):
            out.write(chunk)
            count += len(chunk)
        verifying.check()
    return count


def feed_process(
    reader: Readable,
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    on_stderr: Callable[[str], None] | None = None,
    pass_fds: Sequence[int] = (),
) -> None:
    """Write everything from `reader` into `cmd`'s stdin; raise ToolError if it fails.
    `pass_fds`: descriptors the child inherits (e.g. client_env's passfile).

    If reading fails (e.g. IntegrityError) the consumer is killed before it can finish
    on truncated input, and the reading error propagates.
    """
    proc = tied_popen(
        list(cmd),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        pass_fds=tuple(pass_fds),
    )
    tail = StderrTail(proc.stderr, on_line=on_stderr)
    try:
        while True:
            chunk = reader.read(CHUNK_SIZE)
            if not chunk:
                break
            proc.stdin.write(chunk)
    except BrokenPipeError:
        pass  # the consumer stopped reading: its exit status below says why
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    try:
        proc.stdin.close()
    except BrokenPipeError:
        pass
    code = proc.wait()
    tail.join()
    if code != 0:
        raise ToolError(f"{os.path.basename(cmd[0])} exited with status {code}: {tail.text()}")


def check_stored(store: Store, key: str, stored_size: int, sha256: str, what: str) -> None:
    """Re-read object `key` right after it was written: IntegrityError naming `what` (e.g. 'WAL
    segment 0000...01'), the key and the store when it is missing, or its size or sha256 differ."""
    info = store.stat(key)
    if info is None or info.size != stored_size:
        found = "missing" if info is None else f"{info.size} bytes"
        raise IntegrityError(
            f"{what}: stored object {key} is {found} right after writing {stored_size} bytes to {store.description}"
        )
    with store.open(key) as stream:
        reader = HashingReader(stream)
        while reader.read(CHUNK_SIZE):
            pass
    if reader.count != stored_size or reader.sha256 != sha256:
        raise IntegrityError(
            f"{what}: stored object {key} reads back with sha256 {reader.sha256} "
            f"({reader.count} bytes), not the {sha256} ({stored_size} bytes) written to {store.description}"
        )


def verified_chunks(
    store: Store, key: str, *, sha256: str, stored_size: int, raw_sha256: str, raw_size: int, label: str
):
    """The decompressed bytes of object `key`, chunk by chunk, checked against both its stored
    (sha256, stored_size) and plain (raw_sha256, raw_size) checksums: IntegrityError naming
    `label` after the last chunk at the latest, or at once when the object is missing."""
    try:
        reader, verifying, raw = open_verified(store, key, sha256, stored_size, label)
    except NotFoundError as exc:
        raise IntegrityError(
            f"{label} has a record but its object is missing from {store.description}: copy it back from a "
            "mirror, or choose a point (or backup) the archive reaches without it"
        ) from exc
    digest, size = hashlib.sha256(), 0
    with raw:
        while chunk := reader.read(CHUNK_SIZE):
            digest.update(chunk)
            size += len(chunk)
            yield chunk
        verifying.check()
    if size != raw_size or digest.hexdigest() != raw_sha256:
        raise IntegrityError(
            f"{label} decompresses to {size} bytes with sha256 {digest.hexdigest()}, not the "
            f"archived {raw_size} bytes with sha256 {raw_sha256}"
        )
