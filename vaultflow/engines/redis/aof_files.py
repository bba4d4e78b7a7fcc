"""The server side of AOF backups: the AOF settings, BGREWRITEAOF, a consistent set of open
AOF files, the base file check, and the scratch directory a fingerprint is taken from.

Every file of a snapshot is opened (and the AOF manifest read again to confirm nothing
changed in between) before anything is read: an open descriptor keeps a file readable even
when a concurrent rewrite unlinks it, so a backup never mixes two generations of the AOF.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import redis

from vaultflow.engines.redis.aof_format import AofManifest, parse_aof_manifest
from vaultflow.engines.redis.client import require_local
from vaultflow.engines.redis.server import find_binary
from vaultflow.engines.redis.settings import RedisSettings
from vaultflow.errors import ConfigError, ToolError, TransientError, VaultflowError
from vaultflow.tools import tool_version, wait_until

MIN_MAJOR = 7  # multi-part AOF (appendonlydir + manifest) is Redis 7.0+
HEAD_BYTES = 1 << 20  # how much of the base a backup fingerprints to recognize it later
REWRITE_TIMEOUT = 3600.0
SNAPSHOT_ATTEMPTS = 10
# Redis postpones writing its AOF buffer by up to 2 s while a background fsync runs
# (appendfsync everysec); past that it writes anyway. A buffer still unwritten after this long
# means a disk that cannot keep up.
FLUSH_TIMEOUT = 30.0


@dataclass(frozen=True)
class AofState:
    """What CONFIG GET / INFO say about a server's AOF, and where its files are locally."""

    where: str
    data_dir: Path
    dirname: str
    filename: str
    version: str

    @property
    def directory(self) -> Path:
        return self.data_dir / self.dirname

    @property
    def manifest_path(self) -> Path:
        return self.directory / f"{self.filename}.manifest"

    def read_manifest(self) -> tuple[str, AofManifest]:
        text = self.manifest_path.read_text()
        return text, parse_aof_manifest(text, str(self.manifest_path))


def read_aof_state(config: RedisSettings, conn: redis.Redis, *, purpose: str, broken: type[VaultflowError]) -> AofState:
    """The server's AOF facts; `broken` (ChainBrokenError for increments: the flow takes a full;
    ConfigError for a full) when it has no multi-part AOF this worker can read."""
    remedy = "; taking a full" if broken is not ConfigError else "; take an RDB full backup instead"
    if not config.data_dir:
        raise broken(
            f"{config.name} ({config.where}) has no data_dir: {purpose} copy the server's AOF "
            f"files, which needs data_dir on the RedisTarget and the worker on the Redis host{remedy}"
        )
    data_dir = require_local(config, purpose)
    version = str(conn.info("server").get("redis_version", "0"))
    if int(version.split(".")[0]) < MIN_MAJOR:
        raise broken(
            f"Redis at {config.where} is version {version}: {purpose} need Redis {MIN_MAJOR}+ (multi-part AOF){remedy}"
        )
    settings = conn.config_get("append*")
    if settings.get("appendonly") != "yes":
        raise broken(f"appendonly is off on {config.where}: {purpose} need appendonly yes and data_dir{remedy}")
    state = AofState(
        config.where,
        data_dir,
        settings.get("appenddirname") or "appendonlydir",
        settings.get("appendfilename") or "appendonly.aof",
        version,
    )
    if not state.manifest_path.exists():
        server_dir = conn.config_get("dir").get("dir")
        raise ConfigError(
            f"{state.manifest_path} does not exist: is data_dir {data_dir} the `dir` of "
            f"{config.where} (CONFIG GET dir says {server_dir}) and readable by the worker?"
        )
    return state


def _busy(info: dict) -> bool:
    return bool(
        info.get("rdb_bgsave_in_progress") or info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled")
    )


def wait_for_rewrite(
    config: RedisSettings, conn: redis.Redis, state: AofState, log=print, timeout: float = REWRITE_TIMEOUT
) -> str:
    """BGREWRITEAOF once no BGSAVE or rewrite runs; return the new base file's name."""
    if _busy(conn.info("persistence")):
        log(f"a BGSAVE or AOF rewrite is running on {config.where}; waiting for it to finish")
        wait_until(
            lambda: not _busy(conn.info("persistence")),
            timeout=timeout,
            interval=0.2,
            what=f"a running BGSAVE or AOF rewrite on {config.where} to finish",
        )
    old_base = state.read_manifest()[1].base
    failures = conn.info("persistence").get("aof_rewrites_consecutive_failures", 0)
    try:
        conn.bgrewriteaof()
    except redis.exceptions.ResponseError as exc:
        if "in progress" not in str(exc):  # another client's rewrite won the race: it anchors us too
            raise

    def rewritten() -> str | None:
        info = conn.info("persistence")
        if _busy(info):
            return None
        if info.get("aof_rewrites_consecutive_failures", 0) > failures:
            raise ToolError(
                f"BGREWRITEAOF failed on {config.where} (aof_last_bgrewrite_status "
                f"{info.get('aof_last_bgrewrite_status')}): see the server's log; is its disk full?"
            )
        base = state.read_manifest()[1].base
        if base and (old_base is None or base.name != old_base.name) and info.get("aof_last_bgrewrite_status") == "ok":
            return base.name
        return None

    return wait_until(
        rewritten,
        timeout=timeout,
        interval=0.05,
        what=f"BGREWRITEAOF on {config.where} to write a new base into {state.directory}",
    )


def aof_flushed(start: dict, now: dict) -> bool:
    """Whether every command in the AOF buffer at INFO persistence `start` is in the file at
    INFO `now`. The buffer is written in order and whole (a short write keeps the rest in
    front), so `now` has it when the buffer has been empty since, when the written size grew
    past start's written + buffered bytes (no rewrite in between to reset the size), or when a
    rewrite started (BGREWRITEAOF writes the buffer out first, with force)."""
    if int(start.get("aof_buffer_length", 0)) == 0 or int(now.get("aof_buffer_length", 0)) == 0:
        return True
    if int(now.get("aof_rewrites", 0)) != int(start.get("aof_rewrites", 0)):
        return True
    if start.get("aof_rewrite_in_progress") and not now.get("aof_rewrite_in_progress"):
        return False  # the rewrite finished and recomputed aof_current_size: wait for an empty buffer
    return int(now.get("aof_current_size", 0)) >= int(start.get("aof_current_size", 0)) + int(
        start.get("aof_buffer_length", 0)
    )


def wait_for_aof_flush(config: RedisSettings, conn: redis.Redis, log=print, timeout: float = FLUSH_TIMEOUT) -> None:
    """Return once every write the server acknowledged before this call is in its AOF file.

    With appendfsync everysec Redis acknowledges a command once it is in its AOF buffer, and
    postpones writing the buffer by up to 2 s while a background fsync runs (aof.c,
    flushAppendOnlyFile): a cut taken from the file meanwhile would miss acknowledged writes.
    No command forces the write without side effects on Redis 7.0 (BGREWRITEAOF would end the
    chain, WAITAOF is 7.2+ and waits for the caller's own writes only), so this polls INFO
    persistence. TransientError naming the server when the buffer is not written in time."""
    start = conn.info("persistence")
    if aof_flushed(start, start):
        return
    log(
        f"{start.get('aof_buffer_length')} bytes of acknowledged writes are still in the AOF buffer of "
        f"{config.where} (aof_pending_bio_fsync {start.get('aof_pending_bio_fsync')}); waiting for Redis to "
        "write them"
    )
    last = [start]

    def flushed() -> bool:
        last[0] = conn.info("persistence")
        return aof_flushed(start, last[0])

    try:
        wait_until(flushed, timeout=timeout, interval=0.02, what="the AOF buffer to be written")
    except TransientError:
        now = last[0]
        raise TransientError(
            f"Redis at {config.where} kept {now.get('aof_buffer_length')} bytes of acknowledged writes in its "
            f"AOF buffer for {timeout:.0f}s (aof_pending_bio_fsync {now.get('aof_pending_bio_fsync')}, "
            f"aof_delayed_fsync {now.get('aof_delayed_fsync')}): its disk cannot keep up with fsync, and a "
            "backup cut now would miss them. No backup was taken; retry when the disk is less busy"
        ) from None


@dataclass
class LocalAof:
    """One generation of the AOF: its manifest, and every live file open at its size then."""

    state: AofState
    manifest: AofManifest
    fds: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        return self.state.directory

    @property
    def base(self):
        return self.manifest.base

    @property
    def base_format(self) -> Literal["rdb", "aof"]:
        return "rdb" if os.pread(self.fds[self.base.name], 5, 0) == b"REDIS" else "aof"

    @classmethod
    @contextmanager
    def open(cls, state: AofState) -> Iterator[LocalAof]:
        aof = cls._open(state)
        try:
            yield aof
        finally:
            for fd in aof.fds.values():
                os.close(fd)

    @classmethod
    def _open(cls, state: AofState) -> LocalAof:
        for _attempt in range(SNAPSHOT_ATTEMPTS):
            text, manifest = state.read_manifest()
            if manifest.base is None:
                raise ConfigError(
                    f"{state.manifest_path} names no base file: run BGREWRITEAOF on {state.where} "
                    "and take a full backup"
                )
            aof = cls(state, manifest)
            try:
                for entry in [manifest.base, *manifest.incrs]:
                    aof.fds[entry.name] = os.open(state.directory / entry.name, os.O_RDONLY | os.O_CLOEXEC)
                if state.manifest_path.read_text() == text:  # no rewrite switched files meanwhile
                    # Sizes after the re-check: bytes appended later are simply after the cut.
                    aof.sizes = {name: os.fstat(fd).st_size for name, fd in aof.fds.items()}
                    return aof
            except FileNotFoundError:
                pass  # a rewrite removed a file between the manifest and the open: try again
            for fd in aof.fds.values():
                os.close(fd)
            time.sleep(0.1)
        raise TransientError(
            f"the AOF of {state.where} in {state.directory} kept changing while its files "
            "were opened (rewrites in a loop?); retry later"
        )

    def head_digest(self, name: str) -> str:
        return hashlib.sha256(os.pread(self.fds[name], HEAD_BYTES, 0)).hexdigest()

    def tail_digest(self, name: str, cut: int, count: int) -> str:
        start = max(0, cut - count)
        return hashlib.sha256(os.pread(self.fds[name], cut - start, start)).hexdigest()


class RangeReader:
    """`length` bytes of an open file from `offset` (pread: no shared file position)."""

    def __init__(self, fd: int, offset: int, length: int):
        self._fd, self._pos, self._end = fd, offset, offset + length

    def read(self, size: int = -1) -> bytes:
        size = self._end - self._pos if size is None or size < 0 else min(size, self._end - self._pos)
        if size <= 0:
            return b""
        data = os.pread(self._fd, size, self._pos)
        self._pos += len(data)
        return data


def check_base(config: RedisSettings, aof: LocalAof) -> dict[str, str]:
    """redis-check-rdb (an RDB-preamble base) or redis-check-aof on exactly the open base file;
    ToolError with the tool's verdict when it is damaged. Returns {tool: version}."""
    tool = "redis-check-rdb" if aof.base_format == "rdb" else "redis-check-aof"
    binary = find_binary(tool, config.bin_dir)
    fd = aof.fds[aof.base.name]
    # /proc/self/fd/N in the child is the file we hold open, even if a rewrite unlinked it.
    result = subprocess.run(
        [str(binary), f"/proc/self/fd/{fd}"],
        pass_fds=(fd,),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=REWRITE_TIMEOUT,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-8:])
        raise ToolError(
            f"{tool} rejects base {aof.directory / aof.base.name} of {config.where}: {tail}\n"
            "No backup was committed; run BGREWRITEAOF on the server and take a full backup"
        )
    return {tool: tool_version(binary)}


def assemble_scratch_dir(aof: LocalAof, cuts: dict[str, int], scratch: Path) -> dict[str, str]:
    """`scratch/<appenddirname>/` as the server's AOF stood at the cuts: the base linked to our
    open descriptor (no copy; the scratch server runs as this user and may open it), the
    increment files copied up to their cut, the live manifest. Returns the redis.conf settings."""
    directory = scratch / aof.state.dirname
    directory.mkdir(mode=0o700)
    os.symlink(f"/proc/{os.getpid()}/fd/{aof.fds[aof.base.name]}", directory / aof.base.name)
    for name, cut in cuts.items():
        out = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            offset = 0
            while offset < cut:
                sent = os.sendfile(out, aof.fds[name], offset, cut - offset)
                if sent == 0:
                    raise ToolError(f"{aof.directory / name} ended at {offset} bytes, before its cut at {cut}")
                offset += sent
        finally:
            os.close(out)
    (directory / f"{aof.state.filename}.manifest").write_text(aof.manifest.live_text())
    return {"appendonly": "yes", "appenddirname": aof.state.dirname, "appendfilename": aof.state.filename}
