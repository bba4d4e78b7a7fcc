"""The contract every engine implements (postgres and redis today; mongodb, clickhouse next).

A strategy (full, incremental, ...) is a flow; the engine decides what it means for its
server. Engines receive the Repository to stream objects into and return the manifest;
they never talk to Prefect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import ValidationError

from vaultflow.compare import Comparison
from vaultflow.engines.settings import RestoreOptions
from vaultflow.errors import ConfigError, VaultflowError
from vaultflow.manifest import (
    BackupKind,
    Fingerprint,
    Lineage,
    Manifest,
    StoredObject,
    new_backup_id,
    parse_backup_id,
)
from vaultflow.repository import Repository
from vaultflow.source import check_parent_source, check_same_source

Log = Callable[[str], None]
Progress = Callable[[str, int, int | None], None]  # (object name, bytes done, bytes expected)


@dataclass
class BackupContext:
    """What a backup or restore is given besides its target: the repository, the run's lineage,
    where to log and report progress, and `run_started`, the instant the run that takes the
    backup started (its flow run's name carries it; the backup id takes it: dated_by_run).
    `accept_new_source`: this backup may come from another source than the target's newest
    backup (the server really moved; with_source)."""

    repository: Repository
    lineage: Lineage = field(default_factory=Lineage)
    log: Log = print
    progress: Progress | None = None
    run_started: datetime | None = None
    accept_new_source: bool = False


@dataclass(frozen=True)
class RestoreResult:
    """What a restore (or drill) did: `restored` source database -> where it went (a physical
    PostgreSQL restore: "cluster" -> its data directory); `seconds` wall time; `comparison` with
    the backup's fingerprints; `notes` what the restore changed on purpose and why, or what the
    user must do next (stop a server it left running). `reached`:
    the recovery point the restored data stands at, in words ('LSN 0/3000148, last commit
    2026-11-30 05:59:58 UTC', 'oplog time 1764400000:3 (2025-11-29 07:06:40 UTC)'); None: the
    backup's own consistent point, nothing more precise known. `timeline`: the timeline the
    restored server ended on and how it got there (PostgreSQL physical restores only; None where
    an engine has no timelines)."""

    backup_id: str
    restored: dict[str, str]
    seconds: float
    comparison: Comparison
    notes: list[str] = field(default_factory=list)
    reached: str | None = None
    timeline: str | None = None


# -- a backup in steps: plan -> dump each unit -> finish (manifest last) ------------------------


@dataclass(frozen=True)
class BackupUnit:
    """One piece of a backup that is dumped (and retried) on its own: a PostgreSQL database or
    the globals, a whole cluster (physical), a Redis RDB or AOF. `kind` says which; `name` is
    what the run graph shows (`dump-<kind>-<name>`, or `dump-<kind>` when name is empty)."""

    kind: str
    name: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind}-{self.name}" if self.name else self.kind


@dataclass(frozen=True)
class BackupPlan:
    """What a backup will write, decided before the first byte: its id and start time, its
    units in dump order, its parent (incremental/differential), and `facts` the engine gathered
    for its own later steps (server version, tool directory, database properties, ...).
    `source`: the engine's source identity, checked against the catalog (with_source) and
    recorded in the manifest."""

    engine: str
    target: str
    kind: BackupKind
    backup_id: str
    started_at: datetime
    units: tuple[BackupUnit, ...]
    parent: Manifest | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    source: str | None = None


@dataclass(frozen=True)
class UnitResult:
    """What dumping one unit wrote: its objects (already in the store, uncommitted), its
    fingerprints (database -> table -> fingerprint), engine facts for the manifest (snapshot ids,
    ...) and timings (phase -> seconds). Single-unit backups whose code builds the whole
    manifest (physical, Redis) return it in `manifest`, uncommitted: finish_backup commits it."""

    unit: BackupUnit
    objects: tuple[StoredObject, ...] = ()
    fingerprints: dict[str, dict[str, Fingerprint]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    manifest: Manifest | None = None


def new_plan(
    engine: str, target: str, kind: BackupKind, units: list[BackupUnit], *, parent: Manifest | None = None, **facts: Any
) -> BackupPlan:
    """A plan starting now, with a fresh backup id of `kind`."""
    started = datetime.now(UTC)
    return BackupPlan(
        engine=engine,
        target=target,
        kind=kind,
        backup_id=new_backup_id(kind, started),
        started_at=started,
        units=tuple(units),
        parent=parent,
        facts=facts,
    )


def dated_by_run(plan: BackupPlan, ctx: BackupContext) -> BackupPlan:
    """`plan` with its backup id dated at `ctx.run_started`, so a run's name and its backup id
    carry one time. `plan` unchanged when there is no such instant, or when a backup directory
    of the target (committed or not) is dated at or after it: ids stay unique and sort in the
    order backups were taken, a parent before its children (another run, or an earlier try of
    this one, took a backup since this run started). Only the id moves: `started_at` stays when
    the backup really started."""
    at = ctx.run_started
    if at is None:
        return plan
    taken = [when for name in ctx.repository.backup_ids(plan.engine, plan.target) if (when := id_instant(name))]
    if any(when >= at.replace(microsecond=at.microsecond // 1000 * 1000) for when in taken):
        return plan
    return replace(plan, backup_id=new_backup_id(plan.kind, at))


def id_instant(backup_id: str) -> datetime | None:
    """The time a backup id names, or None for a name that is not a backup id."""
    try:
        return parse_backup_id(backup_id)[0]
    except VaultflowError:
        return None


def planned_identity(plan: BackupPlan | None, kind: BackupKind) -> tuple[datetime, str]:
    """(start time, backup id): the plan's when the backup runs as steps, else new ones now.
    Used by single-unit backup code that is also called on its own (and then commits itself)."""
    if plan is not None:
        return plan.started_at, plan.backup_id
    started = datetime.now(UTC)
    return started, new_backup_id(kind, started)


def commit_unless_planned(repository: Repository, manifest: Manifest, plan: BackupPlan | None) -> None:
    """Commit `manifest` now, unless it is the dump step of `plan` (finish_backup commits then)."""
    if plan is None:
        repository.commit(manifest)


def commit_unit_manifest(repository: Repository, plan: BackupPlan, results: list[UnitResult]) -> Manifest:
    """finish_backup of a single-unit plan: commit the manifest its dump built (every object is
    checked for presence and size first, the manifest written last) and return it. ValueError
    when `results` is not the one unit's result with a manifest of this plan."""
    if len(results) != 1 or results[0].manifest is None or results[0].manifest.id != plan.backup_id:
        raise ValueError(f"backup {plan.backup_id}: finish_backup needs the manifest its one unit built")
    manifest = results[0].manifest.model_copy(update={"source": plan.source})
    repository.commit(manifest)
    return manifest


class HasSource(Protocol):
    """What with_source needs of an engine."""

    def source_identity(self) -> str: ...


def with_source(engine: HasSource, ctx: BackupContext, plan: BackupPlan) -> BackupPlan:
    """`plan` with the engine's source identity, after checking it against the target's catalog:
    ConfigError when the newest backup that recorded a source names another one (unless
    ctx.accept_new_source), ChainBrokenError when the plan's parent was taken from another source
    (vaultflow.source). Every backup passes here before its first byte is written."""
    source = engine.source_identity()
    # newest first, read only as far as the newest backup that recorded a source
    newest_first = ctx.repository.newest_manifests(plan.engine, plan.target)
    check_same_source(newest_first, f"{plan.engine}/{plan.target}", source, accept=ctx.accept_new_source)
    check_parent_source(plan.parent, source)
    return replace(plan, source=source)


class BackupSteps(HasSource, Protocol):
    """The part of Engine that backup_in_steps drives."""

    def plan_backup(self, ctx: BackupContext, kind: BackupKind) -> BackupPlan: ...

    def dump(self, ctx: BackupContext, plan: BackupPlan, unit: BackupUnit) -> UnitResult: ...

    def finish_backup(self, ctx: BackupContext, plan: BackupPlan, results: list[UnitResult]) -> Manifest: ...


def backup_in_steps(engine: BackupSteps, ctx: BackupContext, kind: BackupKind) -> Manifest:
    """plan_backup, dump every unit in order, finish_backup: a whole backup in one call (what
    full_backup/incremental_backup do; the backup flows run the same steps as Prefect tasks).
    A failure before the manifest is committed removes the payload written so far."""
    plan = with_source(engine, ctx, engine.plan_backup(ctx, kind))
    with ctx.repository.uncommitted(plan.engine, plan.target, plan.backup_id, ctx.log):
        results = [engine.dump(ctx, plan, unit) for unit in plan.units]
        return engine.finish_backup(ctx, plan, results)


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

    def source_identity(self) -> str:
        """Which server (and database set) this target's backups come from: a short, non-secret
        text recorded in each manifest (Manifest.source) and compared before every backup with
        the target's newest one (with_source), e.g. 'db1:5432, databases shop'. Must stay the
        same from run to run for one source. Raises a VaultflowError when the server cannot say."""
        ...

    def plan_backup(self, ctx: BackupContext, kind: BackupKind) -> BackupPlan:
        """Check the server and decide the backup's id, units and (for INCREMENTAL/DIFFERENTIAL)
        parent. Writes nothing. Raises ChainBrokenError when no usable parent exists."""
        ...

    def dump(self, ctx: BackupContext, plan: BackupPlan, unit: BackupUnit) -> UnitResult:
        """Stream one unit's objects into ctx.repository under plan.backup_id; commits nothing.
        Idempotent per unit: a retry rewrites only this unit's objects (puts are atomic)."""
        ...

    def finish_backup(self, ctx: BackupContext, plan: BackupPlan, results: list[UnitResult]) -> Manifest:
        """Build the manifest from the units' results and commit it (written LAST); return it."""
        ...

    def full_backup(self, ctx: BackupContext) -> Manifest:
        """Take a full backup, streaming every object into ctx.repository; commit; return it
        (backup_in_steps with FULL)."""
        ...

    def incremental_backup(self, ctx: BackupContext, kind: BackupKind) -> Manifest:
        """Changes since the latest backup (INCREMENTAL) or the latest full (DIFFERENTIAL).
        Raises ChainBrokenError when no usable parent exists: the flow then takes a full."""
        ...

    def restore(
        self,
        ctx: BackupContext,
        manifest: Manifest,
        *,
        into: str | None = None,
        overwrite: bool = False,
        databases: list[str] | None = None,
        options: RestoreOptions | None = None,
    ) -> RestoreResult:
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


OptionsT = TypeVar("OptionsT", bound=RestoreOptions, covariant=True)


class HasRestoreOptions(Protocol[OptionsT]):
    """What options_for needs of an engine: its name and its restore options model (so each
    engine gets back its own options type)."""

    @property
    def name(self) -> str: ...

    @property
    def restore_options(self) -> type[OptionsT]: ...


def options_for(
    engine: HasRestoreOptions[OptionsT], given: Mapping[str, Any] | RestoreOptions | None, target: str | None = None
) -> OptionsT:
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
        raise ConfigError(
            f"{type(given).__name__} does not apply to {subject}, a {engine.name} target (its restore options: {known})"
        )
    unknown = [name for name in given if name not in model.model_fields]
    if unknown:
        raise ConfigError(
            f"restore option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"{'do' if len(unknown) > 1 else 'does'} not apply to {subject}, a {engine.name} "
            f"target (its restore options: {known})"
        )
    try:
        return model(**given)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid restore options for {subject}, a {engine.name} target: {problems}") from None
