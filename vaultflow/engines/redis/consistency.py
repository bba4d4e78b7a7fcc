"""What a Redis backup records about its consistency point (Manifest.consistency), and the chain
rule of AOF chains (EngineSpec.chain_rules).

    redis-rdb   an RDB full: its header facts and CRC64 footer, read from the stream
    redis-aof   an AOF-anchored full or increment: the base file, every increment file's cut,
                the pieces stored (docs/redis.md rebuilds the files from them by hand)

Light on purpose (pydantic only): manifest parsing imports it through the registry.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from vaultflow.manifest import BackupMode, Consistency, Manifest, Strict


class RedisRdbConsistency(Consistency):
    """An RDB full, as redis-check-rdb proved it while it streamed."""

    MODE: ClassVar[BackupMode] = BackupMode.RDB
    type: Literal["redis-rdb"] = "redis-rdb"
    method: Literal["BGSAVE + copy", "replication snapshot (redis-cli --rdb)"]
    rdb_version: str | None = None
    repl_id: str | None = None
    repl_offset: int | None = None
    snapshot_unix_time: int | None = Field(default=None, description="the RDB's ctime (seconds since the epoch)")
    aof_preamble: str | None = Field(default=None, description="the RDB's aof-base aux field")
    rdb_crc64: str | None = Field(
        default=None, description="the RDB's CRC64 footer, hex (the stored object is exactly the RDB)"
    )


class AofPiece(Strict):
    """Bytes [offset, offset + length) of AOF file `file`, stored as object `object`."""

    object: str
    file: str
    offset: int
    length: int


class RedisAofConsistency(Consistency):
    """An AOF-anchored backup (full: the base and increments up to their cut; incremental /
    differential: the increment bytes after the parent's cuts)."""

    MODE: ClassVar[BackupMode] = BackupMode.AOF
    type: Literal["redis-aof"] = "redis-aof"
    method: str = "aof"
    aof_dir: str = Field(description="appenddirname")
    aof_filename: str = Field(description="appendfilename")
    base: str = Field(description="the base file every link of the chain shares")
    base_format: Literal["rdb", "aof"]
    base_size: int
    base_head_sha256: str = Field(
        description="sha256 of the base's first bytes: the same file, not one of the same name"
    )
    incr_files: list[str]
    cuts: dict[str, int] = Field(description="increment file -> bytes included (a command boundary)")
    tail_sha256: dict[str, str] = Field(description="increment file -> sha256 of the bytes before its cut")
    pieces: list[AofPiece] = Field(description="what this backup stored, in file order")
    repl_id: str | None = None
    repl_offset: int | None = None
    redis_version: str | None = None


class AofChainRules:
    """Every link of an AOF chain continues the same base file."""

    def check_link(self, parent: Manifest, child: Manifest) -> str | None:
        """None when `child` may follow `parent`, else why not (vaultflow.chain.ChainRules)."""
        p, c = parent.consistency, child.consistency
        if not isinstance(p, RedisAofConsistency) or not isinstance(c, RedisAofConsistency):
            return None  # the generic walk already refuses a chain that mixes modes
        if (p.base, p.base_head_sha256) != (c.base, c.base_head_sha256):
            return f"backup {parent.id} (the parent of {child.id}) is not on AOF base {c.base}"
        return None


CONSISTENCY_MODELS = (RedisRdbConsistency, RedisAofConsistency)
CHAIN_RULES = AofChainRules()
