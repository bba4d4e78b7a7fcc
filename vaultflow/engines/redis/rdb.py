"""Taking an RDB and proving it while it streams: header facts, per-db counts, CRC64, redis-check-rdb.

    source (redis-cli --rdb - | the file BGSAVE wrote)
      └─ RdbTee ── zstd ── sha256 ── store            (the backup object, one pass)
            ├─ RdbStreamScanner (in process)          (header, SELECTDB/RESIZEDB candidates, the
            │                                          CRC64 footer; drops redis-cli's EOF mark)
            └─ pipe ─ redis-check-rdb /dev/stdin      (every record parsed, CRC64 recomputed; a
                                                       pipe, not a FIFO: nothing on disk to leave
                                                       behind if the run is killed)

No scratch server loads the RDB at backup time: a load of the same bytes proves little beyond
the RDB's own CRC64 and redis-check-rdb's full parse, and it doubled the time of a backup. The
exact comparison (every key's DUMP payload and absolute expiry, stream consumer groups and
pending entries included) happens where it means something: at restore and drill time,
between the proven scratch copy and wherever the data lands (redis_compare).

Scratch servers (restores, drills, AOF fingerprints) are replicas of a port nobody listens
on: a replica keeps keys whose TTL has passed (a master drops them while loading), so the
counts describe the snapshot as taken, whenever they are compared. They are tied to the run
(vaultflow.proc.tied_popen) and require a random password (redis_server.start_redis).
"""

from __future__ import annotations

import errno
import fcntl
import os
import queue
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import redis

from vaultflow.engines.redis.rdb_format import HEADER_BYTES, RdbFacts, RdbFormatError, RdbStreamScanner, parse_header  # noqa: F401
from vaultflow.engines.redis.server import RedisProcess, ServerAuth, find_binary, scratch_auth, start_redis
from vaultflow.engines.redis.settings import RedisSettings
from vaultflow.errors import IntegrityError, ToolError
from vaultflow.pipeline import StderrTail
from vaultflow.proc import tied_popen
from vaultflow.tools import wait_until

FIFO_OPEN_TIMEOUT = 60.0
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux


def open_fifo_for_writing(path: Path, alive, reader: str, timeout: float = FIFO_OPEN_TIMEOUT) -> int:
    """A blocking write descriptor on the FIFO `path` once `reader` has opened it; ToolError if
    `alive()` turns false or `timeout` seconds pass first (a reader that died never opens it)."""
    failure = f"{reader} did not open {path.name} for reading"

    def opened() -> tuple[int] | None:  # a tuple: descriptor 0 is a valid answer too
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            if not alive():
                raise ToolError(failure) from None
            return None
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return (fd,)

    (fd,) = wait_until(
        opened,
        timeout=timeout,
        interval=0.01,
        what=f"{reader} to open {path.name}",
        on_timeout=lambda _: ToolError(failure),
    )
    return fd


class _PipeWriter:
    """A thread feeding a child's stdin from a bounded queue, so a slow reader does not stall
    the stream; closes the pipe (EOF for the child) after the last chunk."""

    def __init__(self, pipe, name: str):
        self.pipe, self.name = pipe, name
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._run, name=f"pipe-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fd = self.pipe.fileno()
        try:  # 1 MiB instead of 64 KiB: one wake-up of the reader per chunk, not sixteen
            fcntl.fcntl(fd, F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass  # above /proc/sys/fs/pipe-max-size for this user: the default works too
        try:
            while (chunk := self._queue.get()) is not None:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
        except BaseException as exc:  # reported by finish(); keep draining so the stream goes on
            self.error = exc
            while self._queue.get() is not None:
                pass
        finally:
            try:
                self.pipe.close()
            except OSError:
                pass

    def put(self, chunk: bytes | None) -> None:
        self._queue.put(chunk)

    def join(self) -> None:
        self._thread.join()


class RdbTee:
    """Reader wrapper + redis-check-rdb; use as a context manager, call finish() after EOF.

    `wrap(source)` returns a reader passing on exactly the RDB (redis-cli's trailing EOF mark
    dropped); `finish()` returns the proven RdbFacts or raises IntegrityError.
    """

    def __init__(self, config: RedisSettings, log=print):
        self.config = config
        self.log = log
        self.scanner = RdbStreamScanner()
        self._source: Any = None  # the stream wrap() is given
        self._done = False
        self._writer: _PipeWriter | None = None
        self._check: subprocess.Popen | None = None
        self._output: StderrTail | None = None

    def __enter__(self) -> RdbTee:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _start(self) -> None:
        self._check = tied_popen(
            [str(find_binary("redis-check-rdb", self.config.bin_dir)), "/dev/stdin"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._output = StderrTail(self._check.stdout, keep=100_000)  # drained as it runs: a full pipe would stall it
        self._writer = _PipeWriter(self._check.stdin, "redis-check-rdb")

    def wrap(self, source):
        self._source = source
        return self

    def read(self, size: int = -1) -> bytes:
        while not self._done:
            chunk = self._source.read(size)
            out = self.scanner.feed(chunk) if chunk else self.scanner.end()
            if not chunk:
                self._done = True
            if out:
                self._writer.put(out)
            if self._done:
                self._writer.put(None)
            if out or self._done:
                return out
        return b""

    def finish(self) -> RdbFacts:
        """After EOF: the facts redis-check-rdb confirmed; IntegrityError if the RDB is not sound."""
        self._writer.join()
        try:
            self._check.wait(timeout=3600)
        except subprocess.TimeoutExpired:
            self._check.kill()
            raise ToolError("redis-check-rdb did not finish within an hour") from None
        text = self._output.text().strip()
        if self._check.returncode != 0 or "RDB looks OK" not in text:
            raise IntegrityError(
                f"redis-check-rdb rejected the RDB from {self.config.where}: "
                f"{_last_lines(text)}; no backup was recorded"
            )
        if self._writer.error is not None:
            raise ToolError(f"feeding the RDB to redis-check-rdb failed: {self._writer.error}")
        facts = self.scanner.facts(text, self.config.where)
        for note in facts.notes:
            self.log(f"{self.config.where}: {note}")
        return facts

    def close(self) -> None:
        if self._check is not None and self._check.poll() is None:
            self._check.kill()  # first: a writer blocked on the FIFO then gets EPIPE and drains
            self._check.wait()
        if self._writer is not None and self._writer._thread.is_alive():
            self._writer.put(None)


def _last_lines(text: str, count: int = 6) -> str:
    return " | ".join(line for line in text.splitlines()[-count:] if line.strip())


def start_replica_scratch(
    directory: Path,
    bin_dir: str | None,
    *,
    wait: bool = True,
    port: int | None = None,
    settings: dict[str, str] | None = None,
    auth: ServerAuth | None = None,
    tied: bool = True,
):
    """A scratch redis-server that loads `directory`'s data as a replica of a port held bound
    (never listening) by us: it keeps expired keys and cannot be made to sync by anyone.

    `auth` None: a random password of its own (scratch_auth). Tied to this process unless
    tied=False (the default restore's server, handed over to the user with the source's auth).
    Returns (RedisProcess, the bound socket to close after promote/stop)."""
    blackhole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blackhole.bind(("127.0.0.1", 0))
    auth = auth or scratch_auth()
    conf = {
        "dbfilename": "dump.rdb",
        "replicaof": f"127.0.0.1 {blackhole.getsockname()[1]}",
        "replica-read-only": "yes",
        "repl-diskless-load": "disabled",
        **(settings or {}),
    }
    try:
        server = start_redis(
            directory,
            port=port,
            settings=conf,
            binary=find_binary("redis-server", bin_dir),
            wait=wait,
            secret_lines=list(auth.lines),
            username=auth.username,
            password=auth.password,
            tied=tied,
        )
    except BaseException:
        blackhole.close()
        raise
    if wait:  # read at start only: no password file outlives the start, even if the run is killed
        (Path(directory) / "redis.conf").unlink(missing_ok=True)
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
        wait_until(
            lambda: not persistence().get("rdb_bgsave_in_progress"),
            timeout=timeout,
            what=f"the running BGSAVE on {where}",
        )
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

    wait_until(done, timeout=timeout, what=f"BGSAVE on {where}", interval=0.05)
    status = persistence().get("rdb_last_bgsave_status")
    if status != "ok":
        raise ToolError(
            f"BGSAVE on {where} failed (rdb_last_bgsave_status={status}); see the server's log "
            "(disk full? permissions of its dir?)"
        )
