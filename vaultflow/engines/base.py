"""The contract every engine implements (postgres and redis today; mongodb, clickhouse next).

A strategy (full, incremental, ...) is a flow; the engine decides what it means for its
server. Engines receive the Repository to stream objects into and return the manifest;
they never talk to Prefect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Protocol

from pydantic import ValidationError

from vaultflow.compare import Comparison
from vaultflow.engines.settings import RestoreOptions
from vaultflow.errors import ConfigError
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
    """What every engine class implements (vaultflow/engines/<name>/engine.py), made by its
    registry entry from the target's settings (vaultflow.engines.registry). A test checks every
    registered engine against this Protocol: names and signatures (tests/unit/test_engine_protocol.py).

    `name` is the engine's name in the repository layout and manifests; `restore_options` is
    the engine's RestoreOptions subclass, the typed options `restore` takes."""

    name: ClassVar[str]
    restore_options: ClassVar[type[RestoreOptions]]

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

    def restore(self, ctx: BackupContext, manifest: Manifest, *, into: str | None = None,
                overwrite: bool = False, databases: list[str] | None = None,
                options: RestoreOptions | None = None) -> RestoreResult:
        """Restore `manifest` (checksums verified while streaming) and compare fingerprints.

        into:      where the data goes (a database name, a directory, ...; the engine says);
                   None: a new place the engine names.
        overwrite: replace `into` if it exists (only after the restored copy matched).
        databases: only these databases/units of the backup; None: all.
        options:   an instance of this engine's `restore_options` (None: its defaults); another
                   engine's options are a ConfigError (see options_for)."""
        ...

    def drill(self, ctx: BackupContext, manifest: Manifest) -> RestoreResult:
        """Restore into scratch (databases, a server), compare, and remove the scratch copy.

        `seconds` is the restore time a real recovery would take (the RTO measurement)."""
        ...


def options_for(engine: Engine, given: Mapping[str, Any] | RestoreOptions | None,
                target: str | None = None) -> RestoreOptions:
    """`given` as `engine`'s typed restore options: None -> its defaults; an instance of its
    options model as is; a mapping of option name -> value validated into the model.

    Raises ConfigError naming each option the engine does not take (and the ones it does), or
    a value that does not validate; `target` names the target in the message."""
    model = engine.restore_options
    if given is None:
        return model()
    if isinstance(given, model):
        return given
    subject = f"target {target!r}" if target else "this target"
    known = ", ".join(model.model_fields) or "none"
    if isinstance(given, RestoreOptions):
        raise ConfigError(f"{type(given).__name__} does not apply to {subject}, a {engine.name} target "
                          f"(its restore options: {known})")
    unknown = [name for name in given if name not in model.model_fields]
    if unknown:
        raise ConfigError(f"restore option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                          f"{'do' if len(unknown) > 1 else 'does'} not apply to {subject}, a {engine.name} "
                          f"target (its restore options: {known})")
    try:
        return model(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid restore options for {subject}, a {engine.name} target: {problems}") from None
