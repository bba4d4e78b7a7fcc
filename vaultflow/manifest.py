"""The manifest: one JSON document per backup, written last, the commit marker of a backup.

Its presence under backups/<id>/manifest.json means every object it lists was fully
written. It never contains a secret.

Schema version 2 (docs/repository-format.md): `mode` is a BackupMode; `consistency` is a typed
model chosen by the manifest's engine and the model's `type` (a discriminated union whose
members each engine lists in its EngineSpec.consistency, so a new engine adds its own without
editing this module); fingerprints are generic (`count`, `digest`, `method` per unit).
Version 1 manifests are upgraded on read (vaultflow.manifest_v1).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any, ClassVar, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from vaultflow.engines import registry
from vaultflow.errors import RefusedError, VaultflowError
from vaultflow.manifest_v1 import upgrade_v1

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1 is upgraded on read (vaultflow.manifest_v1)


class BackupKind(str, Enum):
    FULL = "full"
    INCREMENTAL = "incremental"
    DIFFERENTIAL = "differential"

    @property
    def suffix(self) -> str:
        return {"full": "F", "incremental": "I", "differential": "D"}[self.value]


class BackupMode(StrEnum):
    """How a backup copies its data; every engine's modes. A chain (full and its incrementals /
    differentials) has one mode."""

    LOGICAL = "logical"  # PostgreSQL pg_dump per database; MongoDB archive + oplog slices
    PHYSICAL = "physical"  # PostgreSQL pg_basebackup (17+ native incrementals, 15/16 file-level)
    RDB = "rdb"  # Redis RDB snapshot (full only)
    AOF = "aof"  # Redis AOF-anchored full + AOF increments
    NATIVE = "native"  # ClickHouse BACKUP ... TO Disk (base_backup for incrementals)


ID_TIME_FORMAT = "%Y%m%dT%H%M%S"


def id_time(when: datetime) -> str:
    """The time part of a backup id, '20261126T020000.123Z' (UTC, milliseconds); a flow run's
    name ends with the same text for the instant its backup id takes."""
    when = when.astimezone(UTC)
    return f"{when.strftime(ID_TIME_FORMAT)}.{when.microsecond // 1000:03d}Z"


def new_backup_id(kind: BackupKind, now: datetime | None = None) -> str:
    """'20261126T020000.123Z-F': sorts by time (millisecond precision) and names its kind."""
    return f"{id_time(now or datetime.now(UTC))}-{kind.suffix}"


def parse_backup_id(backup_id: str) -> tuple[datetime, BackupKind]:
    try:
        stamp, suffix = backup_id.rsplit("-", 1)
        kind = {"F": BackupKind.FULL, "I": BackupKind.INCREMENTAL, "D": BackupKind.DIFFERENTIAL}[suffix]
        when = datetime.strptime(stamp, ID_TIME_FORMAT + ".%fZ").replace(tzinfo=UTC)
    except (ValueError, KeyError) as exc:
        raise VaultflowError(f"{backup_id!r} is not a backup id (expected e.g. 20261126T020000.000Z-F)") from exc
    return when, kind


class Strict(BaseModel):
    """Base of every manifest record: unknown fields are an error (a typo is not a None), and
    records are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StoredObject(Strict):
    """One payload object of a backup."""

    key: str = Field(description="name inside the backup directory, e.g. 'db/backup_demo.dump.zst'")
    role: str = Field(description="what the object is: 'database-dump', 'globals', ...")
    database: str | None = None
    format: str = Field(description="payload format before compression, e.g. 'pg_dump-custom', 'sql'")
    raw_size: int
    stored_size: int
    sha256: str = Field(description="sha256 of the stored (compressed) bytes")
    compression: str = "zstd"
    encryption: str | None = None


class Fingerprint(Strict):
    """What one unit (a PostgreSQL table, a Redis db's keys, a MongoDB collection, a ClickHouse
    table) held at the backup's consistency point; a restored copy must give the same."""

    count: int = Field(description="how many: a table's rows, a Redis db's keys, a collection's documents")
    digest: str = Field(description="order-independent digest of the unit's content (`method` says how)")
    method: str = Field(
        description="how count and digest were computed, engine-defined: PostgreSQL 'record', "
        "'record+text', 'text'; Redis 'count', 'debug-digest'"
    )

    @property
    def rows(self) -> int:
        """`count` under PostgreSQL's word for it (a table's rows); the JSON key of version 1."""
        return self.count


class Consistency(Strict):
    """An engine's consistency point of one backup: base of the models each engine defines.

    A subclass declares `type: Literal["<engine>-<what>"] = "<engine>-<what>"` (the discriminator
    written in the JSON), `MODE` (the BackupMode of the manifests it belongs to) and its own
    fields; the engine lists it in its EngineSpec.consistency. Generic code reads only what is
    declared here.
    """

    MODE: ClassVar[BackupMode]
    type: str = Field(description="which model this is, e.g. 'postgres-physical'; unique across engines")
    method: str = Field(description="how the point was reached, for people (e.g. 'pg_basebackup')")

    @classmethod
    def of(cls, manifest: Manifest) -> Self:
        """`manifest.consistency` as this model. RefusedError naming the backup when it is
        another one (e.g. a logical backup given to a physical restore)."""
        if not isinstance(manifest.consistency, cls):
            raise RefusedError(
                f"backup {manifest.id} is a {manifest.mode} backup ({manifest.consistency.type}), "
                f"not {cls.model_fields['type'].default or cls.__name__}"
            )
        return manifest.consistency


def consistency_model(engine: str, type_name: Any) -> type[Consistency]:
    """The model of engine `engine` whose `type` is `type_name` (EngineSpec.consistency).
    ValueError naming the engine's types when it has none of that name; ConfigError for an
    unknown engine."""
    models: tuple[type[Consistency], ...] = registry.spec(engine).consistency
    for model in models:
        if model.model_fields["type"].default == type_name:
            return model
    known = ", ".join(str(m.model_fields["type"].default) for m in models) or "none"
    raise ValueError(f"consistency type {type_name!r} is not one of engine {engine}'s ({known})")


class Lineage(Strict):
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    deployment: str | None = None
    ui_url: str | None = None


class Manifest(Strict):
    schema_version: int = SCHEMA_VERSION
    id: str
    engine: str
    target: str
    source: str | None = Field(
        default=None,
        description="the engine's identity of the server (and database set) the backup was taken from, "
        "e.g. 'db1:5432, databases shop' or 'cluster 7412345678901234567'; None in older manifests",
    )
    kind: BackupKind
    mode: BackupMode
    parent_id: str | None = None
    started_at: datetime
    finished_at: datetime
    consistency: SerializeAsAny[Consistency] = Field(
        description="the engine's consistency point: the model of this engine whose `type` it names"
    )
    objects: list[StoredObject]
    fingerprints: dict[str, dict[str, Fingerprint]] = Field(
        default_factory=dict,
        description="group (database, Redis db) -> unit (table, 'keys', collection) -> "
        "fingerprint, at the consistency point",
    )
    server_version: str | None = None
    tool_versions: dict[str, str] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per phase")
    lineage: Lineage = Field(default_factory=Lineage)

    @field_validator("consistency", mode="before")
    @classmethod
    def _typed_consistency(cls, value: Any, info: ValidationInfo) -> Any:
        """A dict becomes the engine's model its `type` names; a model must be one of the engine's."""
        engine = info.data.get("engine")
        if engine is None:
            return value  # the engine field failed: its own error is reported
        if isinstance(value, Consistency):  # checked against the engine's models once it is registered
            if engine in registry.names() and type(value) not in registry.spec(engine).consistency:
                raise ValueError(
                    f"{type(value).__name__} is not a consistency model of engine {engine} "
                    "(list it in the engine's EngineSpec.consistency)"
                )
            return value
        if not isinstance(value, dict):
            raise ValueError("consistency must be an object with a 'type'")
        return consistency_model(engine, value.get("type")).model_validate(value)

    @model_validator(mode="after")
    def _mode_matches(self) -> Manifest:
        if self.consistency.MODE != self.mode:
            raise ValueError(
                f"consistency {self.consistency.type} belongs to {self.consistency.MODE} backups, not {self.mode} ones"
            )
        return self

    @property
    def stored_size(self) -> int:
        return sum(o.stored_size for o in self.objects)

    @property
    def raw_size(self) -> int:
        return sum(o.raw_size for o in self.objects)

    def to_json(self) -> bytes:
        return (self.model_dump_json(indent=2) + "\n").encode()


class ManifestError(VaultflowError):
    """A manifest that cannot be read: broken JSON, unknown schema_version, bad fields.

    `where`: the manifest's key (or another name of the document); `problem`: what is wrong,
    without the key (for tables that show the key in a column of its own). str() is
    '<where>: <problem>', the key named once."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem


# What to do about a manifest that is valid JSON of a readable version but whose fields are not.
INVALID_MANIFEST_ADVICE = (
    "the manifest was changed by hand or written by a newer vaultflow: restore another backup by "
    "its id, or fix the manifest file (or put back a copy of it)"
)


def field_problems(exc: ValidationError) -> str:
    """'field.path: message' for each problem pydantic found, joined with '; ' (no URLs, no
    pydantic banner): what a person fixing a manifest by hand needs."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(document)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse_manifest(data: bytes, where: str) -> Manifest:
    """Parse and validate one manifest (version 1 is upgraded first, vaultflow.manifest_v1);
    ManifestError naming `where` (its key) once and what is wrong: broken JSON, a schema_version
    this vaultflow cannot read, an unknown engine or consistency type, invalid fields (each as
    'field.path: message', followed by what to do)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(where, f"not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ManifestError(where, "expected a JSON object")
    version = doc.get("schema_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise ManifestError(
            where,
            f"schema_version {version!r} is not supported by this vaultflow "
            f"(reads {', '.join(map(str, READABLE_VERSIONS))}); upgrade vaultflow to read it",
        )
    try:
        if version == 1:
            doc = upgrade_v1(doc)
        return Manifest.model_validate(doc)
    except VaultflowError as exc:  # an unknown engine (registry.spec)
        raise ManifestError(where, str(exc)) from exc
    except ValidationError as exc:
        raise ManifestError(where, f"invalid manifest: {field_problems(exc)}; {INVALID_MANIFEST_ADVICE}") from exc
    except ValueError as exc:  # upgrade_v1 on a version 1 document it cannot make sense of
        raise ManifestError(where, f"invalid manifest: {exc}; {INVALID_MANIFEST_ADVICE}") from exc
