"""The contract every engine module implements (postgres today; redis, mongodb, clickhouse next).

A strategy (full, incremental, ...) is a flow; the engine decides what it means for its
server. Engines receive the Repository to stream objects into and return the manifest;
they never talk to Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

from vaultflow.compare import Comparison
from vaultflow.manifest import BackupKind, Lineage, Manifest
from vaultflow.repository import Repository

Log = Callable[[str], None]
Progress = Callable[[str, int, int | None], None]  # (object name, bytes done, bytes expected)


@dataclass
class BackupContext:
    repository: Repository
    lineage: Lineage = field(default_factory=Lineage)
    log: Log = print
    progress: Progress | None = None


@dataclass(frozen=True)
class RestoreResult:
    backup_id: str
    restored: dict[str, str]  # source database -> database it was restored into
    seconds: float
    comparison: Comparison
    notes: list[str] = field(default_factory=list)  # what the restore changed on purpose, and why


class Engine(Protocol):
    """One module per engine; the target config object carries the engine name."""

    name: str

    def check(self) -> str:
        """Connect and authenticate; return the server version. Raises a VaultflowError."""
        ...

    def full_backup(self, ctx: BackupContext) -> Manifest:
        """Take a full backup, streaming every object into ctx.repository; commit; return it."""
        ...

    def incremental_backup(self, ctx: BackupContext, kind: BackupKind) -> Manifest:
        """Changes since the latest backup (INCREMENTAL) or the latest full (DIFFERENTIAL).
        Raises ChainBrokenError when no usable parent exists: the flow then takes a full."""
        ...

    def restore(self, ctx: BackupContext, manifest: Manifest, *, into: str | None,
                overwrite: bool, databases: list[str] | None = None,
                recovery_target=None) -> RestoreResult:
        """Restore `manifest` (checksums verified while streaming) and compare fingerprints."""
        ...

    def drill(self, ctx: BackupContext, manifest: Manifest) -> RestoreResult:
        """Restore into scratch (databases, a server), compare, and remove the scratch copy.

        `seconds` is the restore time a real recovery would take (the RTO measurement)."""
        ...
