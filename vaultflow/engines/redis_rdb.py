"""Taking an RDB and proving it while it streams: header facts, redis-check-rdb, fingerprint.

    source (redis-cli --rdb - | the file BGSAVE wrote)
      └─ RdbTee ── zstd ── sha256 ── store            (the backup object, one pass)
            ├─ FIFO ─ redis-check-rdb                 (structure + CRC64 of the whole RDB)
            └─ FIFO ─ scratch redis-server loading it (then key counts + DEBUG DIGEST)

Both checks read the same bytes as they pass, in their own processes, so verifying costs
little more wall time than the transfer; the manifest is committed only if both succeed. The
scratch server runs as a replica of a port nobody listens on: a replica keeps keys whose TTL
has passed (a master drops them while loading), so the fingerprint describes the snapshot as
taken, whenever it is compared.
"""

from __future__ import annotations

import errno
import fcntl
import os
import queue
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import redis

from vaultflow.engines.redis_client import RedisConfig, fingerprint_server, wait_for
from vaultflow.engines.redis_server import RedisProcess, find_binary, start_redis
from vaultflow.errors import IntegrityError, ToolError, VaultflowError
from vaultflow.manifest import TableFingerprint

FIFO_OPEN_TIMEOUT = 60.0
HEADER_BYTES = 1 << 16


class RdbFormatError(VaultflowError):
    """The stream does not start like an RDB file."""


def _length(data: bytes, pos: int) -> tuple[int | None, int, int | None]:
    """(length, new position, special encoding) of an RDB length at `pos`."""
    first = data[pos]
    kind = first >> 6
    if kind == 0:
        return first & 0x3F, pos + 1, None
    if kind == 1:
        return ((first & 0x3F) << 8) | data[pos + 1], pos + 2, None
    if kind == 2:
        if first == 0x80:
            return struct.unpack(">I", data[pos + 1:pos + 5])[0], pos + 5, None
        return struct.unpack(">Q", data[pos + 1:pos + 9])[0], pos + 9, None
    return None, pos + 1, first & 0x3F


def _string(data: bytes, pos: int) -> tuple[str, int]:
    length, pos, special = _length(data, pos)
    if special is None:
        if pos + length > len(data):
            raise IndexError("string cut off")  # a slice would silently return part of it
        return data[pos:pos + length].decode(errors="replace"), pos + length
    size = {0: 1, 1: 2, 2: 4}.get(special)
    if size is None:
        raise RdbFormatError("compressed aux field in the RDB header")
    if pos + size > len(data):
        raise IndexError("integer cut off")
    return str(int.from_bytes(data[pos:pos + size], "little", signed=True)), pos + size


def parse_header(data: bytes) -> dict[str, str]:
    """RDB version and the AUX fields before the first database (redis-ver, repl-id, ...)."""
    if len(data) < 9 or data[:5] != b"REDIS" or not data[5:9].isdigit():
        raise RdbFormatError(f"not an RDB file (starts with {data[:9]!r})")
    facts = {"rdb-version": str(int(data[5:9]))}
    pos = 9
    try:
        while pos < len(data) and data[pos] == 0xFA:
            key, pos = _string(data, pos + 1)
            value, pos = _string(data, pos)
            facts[key] = value
    except (IndexError, struct.error):
        pass  # the header continues beyond what we kept: the fields so far are complete
    return facts


class _FifoWriter:
    """A thread feeding one FIFO from a bounded queue, so a slow reader does not stall the others."""

    def __init__(self, path: Path, name: str, alive):
        self.path, self.name = path, name
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=16)
        self._alive = alive
        self._thread = threading.Thread(target=self._run, name=f"fifo-{name}", daemon=True)
        self._thread.start()

    def _open(self) -> int:
        deadline = time.monotonic() + FIFO_OPEN_TIMEOUT
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
                return fd
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
            if not self._alive() or time.monotonic() > deadline:
                raise ToolError(f"{self.name} did not open {self.path.name} for reading")
            time.sleep(0.01)

    def _run(self) -> None:
        fd = None
        try:
            fd = self._open()
            while (chunk := self._queue.get()) is not None:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
        except BaseException as exc:  # reported by finish(); keep draining so the stream goes on
            self.error = exc
            while self._queue.get() is not None:
                pass
        finally:
            if fd is not None:
                os.close(fd)

    def put(self, chunk: bytes | None) -> None:
        self._queue.put(chunk)

    def join(self) -> None:
        self._thread.join()


class RdbTee:
    """Reader wrapper + the two verifiers; use as a context manager, call finish() after EOF."""

    def __init__(self, config: RedisConfig, log=print):
        self.config = config
        self.log = log
        self.work = Path(tempfile.mkdtemp(prefix="vaultflow-rdb-"))
        self.header = bytearray()
        self._source = None
        self._writers: list[_FifoWriter] = []
        self._check: subprocess.Popen | None = None
        self._scratch: RedisProcess | None = None
        self._blackhole: socket.socket | None = None

    def __enter__(self) -> "RdbTee":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _start(self) -> None:
        check_fifo = self.work / "check.rdb"
        scratch_dir = self.work / "scratch"
        scratch_dir.mkdir()
        os.mkfifo(check_fifo, 0o600)
        os.mkfifo(scratch_dir / "dump.rdb", 0o600)
        self._check = subprocess.Popen([str(find_binary("redis-check-rdb", self.config.bin_dir)), str(check_fifo)],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT)
        self._scratch, self._blackhole = start_replica_scratch(scratch_dir, self.config.bin_dir, wait=False)
        scratch, check = self._scratch, self._check
        self._writers = [
            _FifoWriter(check_fifo, "redis-check-rdb", lambda: check.poll() is None),
            _FifoWriter(scratch_dir / "dump.rdb", "scratch redis-server",
                        lambda: scratch.proc is not None and scratch.proc.poll() is None),
        ]

    def wrap(self, source):
        self._source = source
        return self

    def read(self, size: int = -1) -> bytes:
        chunk = self._source.read(size)
        if len(self.header) < HEADER_BYTES and chunk:
            self.header += chunk[:HEADER_BYTES - len(self.header)]
        for writer in self._writers:
            writer.put(chunk if chunk else None)
        return chunk

    def finish(self) -> tuple[dict[str, str], dict[str, dict[str, TableFingerprint]]]:
        """After EOF: (header facts, fingerprints); IntegrityError if the RDB is not sound."""
        for writer in self._writers:
            writer.join()
        facts = parse_header(bytes(self.header))
        try:
            output, _ = self._check.communicate(timeout=3600)
        except subprocess.TimeoutExpired:
            self._check.kill()
            raise ToolError("redis-check-rdb did not finish within an hour")
        text = output.decode(errors="replace").strip()
        if self._check.returncode != 0 or "RDB looks OK" not in text:
            raise IntegrityError(f"redis-check-rdb rejected the RDB from {self.config.where}: "
                                 f"{_last_lines(text)}; no backup was recorded")
        failed = [w for w in self._writers if w.error is not None]
        if failed:
            raise ToolError(f"feeding the RDB to {failed[0].name} failed: {failed[0].error}; "
                            f"{self._scratch.log_tail() if self._scratch else ''}")
        self._scratch.wait_ready()
        with self._scratch.client() as conn:
            prints = fingerprint_server(conn, self.config.fingerprint)
        return facts, prints

    def close(self) -> None:
        for writer in self._writers:
            if writer._thread.is_alive():
                writer.put(None)
        if self._check is not None and self._check.poll() is None:
            self._check.kill()
            self._check.wait()
        if self._scratch is not None:
            # SIGKILL, not SHUTDOWN: it holds nothing to save, and after a cut-off stream it hangs
            # re-opening the FIFO (Redis runs its own RDB check on a failed load) and answers nothing
            if self._scratch.proc is not None and self._scratch.proc.poll() is None:
                self._scratch.proc.kill()
                self._scratch.proc.wait()
            self._scratch.stop()
        if self._blackhole is not None:
            self._blackhole.close()
        shutil.rmtree(self.work, ignore_errors=True)


def _last_lines(text: str, count: int = 6) -> str:
    return " | ".join(line for line in text.splitlines()[-count:] if line.strip())


def start_replica_scratch(directory: Path, bin_dir: str | None, *, wait: bool = True,
                          port: int | None = None, settings: dict[str, str] | None = None):
    """A scratch redis-server that loads `directory`'s data as a replica of a port held bound
    (never listening) by us: it keeps expired keys and cannot be made to sync by anyone."""
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blackhole.bind(("127.0.0.1", 0))
    conf = {"dbfilename": "dump.rdb", "replicaof": f"127.0.0.1 {blackhole.getsockname()[1]}",
            "replica-read-only": "yes", "repl-diskless-load": "disabled", **(settings or {})}
    try:
        server = start_redis(directory, port=port, settings=conf, binary=find_binary("redis-server", bin_dir),
                             wait=wait)
    except BaseException:
        blackhole.close()
        raise
    return server, blackhole


def promote(server: RedisProcess, blackhole: socket.socket) -> None:
    """Make a scratch replica a normal, writable server (expired keys then expire)."""
    with server.client() as conn:
        conn.execute_command("REPLICAOF", "NO", "ONE")
    blackhole.close()


# -- local mode: BGSAVE ----------------------------------------------------------------------

def bgsave_and_wait(conn: redis.Redis, where: str, log=print, timeout: float = 3600.0) -> None:
    """A fresh snapshot: wait out a running BGSAVE, start ours, wait until it is on disk.

    Completion is seen by `rdb_saves` growing (LASTSAVE has one-second resolution) and
    rdb_bgsave_in_progress returning to 0; a failed save raises ToolError.
    """
    def persistence() -> dict:
        return conn.info("persistence")

    if persistence().get("rdb_bgsave_in_progress"):
        log(f"a BGSAVE is already running on {where}; waiting for it to finish")
        wait_for(lambda: not persistence().get("rdb_bgsave_in_progress"), timeout=timeout,
                 what=f"the running BGSAVE on {where}")
    saves_before = int(persistence().get("rdb_saves", 0))
    lastsave_before = conn.lastsave()
    while True:
        try:
            conn.bgsave()
            break
        except redis.exceptions.ResponseError as exc:
            if "in progress" not in str(exc):
                raise ToolError(f"BGSAVE on {where} failed: {exc}") from exc
            log(f"{where}: {exc}; waiting")  # a child (e.g. an AOF rewrite) is running
            time.sleep(0.2)

    def done() -> bool:
        info = persistence()
        if info.get("rdb_bgsave_in_progress"):
            return False
        return int(info.get("rdb_saves", 0)) > saves_before or conn.lastsave() != lastsave_before

    wait_for(done, timeout=timeout, what=f"BGSAVE on {where}", interval=0.05)
    status = persistence().get("rdb_last_bgsave_status")
    if status != "ok":
        raise ToolError(f"BGSAVE on {where} failed (rdb_last_bgsave_status={status}); see the server's log "
                        "(disk full? permissions of its dir?)")
