"""The manifest: one JSON document per backup, written last, the commit marker of a backup.

Its presence under backups/<id>/manifest.json means every object it lists was fully
written. It never contains a secret.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vaultflow.errors import VaultflowError

SCHEMA_VERSION = 1


class BackupKind(str, Enum):
    FULL = "full"
    INCREMENTAL = "incremental"
    DIFFERENTIAL = "differential"

    @property
    def suffix(self) -> str:
        return {"full": "F", "incremental": "I", "differential": "D"}[self.value]


ID_TIME_FORMAT = "%Y%m%dT%H%M%S"


def new_backup_id(kind: BackupKind, now: datetime | None = None) -> str:
    """'20261126T020000.123Z-F': sorts by time (millisecond precision) and names its kind."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{now.strftime(ID_TIME_FORMAT)}.{now.microsecond // 1000:03d}Z-{kind.suffix}"


def parse_backup_id(backup_id: str) -> tuple[datetime, BackupKind]:
    try:
        stamp, suffix = backup_id.rsplit("-", 1)
        kind = {"F": BackupKind.FULL, "I": BackupKind.INCREMENTAL, "D": BackupKind.DIFFERENTIAL}[suffix]
        when = datetime.strptime(stamp, ID_TIME_FORMAT + ".%fZ").replace(tzinfo=timezone.utc)
    except (ValueError, KeyError) as exc:
        raise VaultflowError(
            f"{backup_id!r} is not a backup id (expected e.g. 20261126T020000.000Z-F)"
        ) from exc
    return when, kind


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoredObject(_Strict):
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


class TableFingerprint(_Strict):
    rows: int
    digest: str = Field(description="order-independent hash: the sum of every row's 64-bit hash")
    method: str = Field(default="text", description="'record' (hash_record_extended) or 'text' "
                        "(hashtextextended of the row's text form)")


class DatabaseProperties(_Strict):
    """A PostgreSQL database's own properties (pg_database, pg_db_role_setting), recorded at
    backup time so a logical restore under any name recreates the database as it was."""

    encoding: str = Field(description="server encoding, e.g. 'UTF8', 'LATIN1'")
    collate: str = Field(description="LC_COLLATE")
    ctype: str = Field(description="LC_CTYPE")
    locale_provider: str = Field(default="libc", description="'libc', 'icu' or 'builtin'")
    locale: str | None = Field(default=None, description="ICU locale (icu) or builtin locale (builtin)")
    icu_rules: str | None = Field(default=None, description="ICU tailoring rules (PostgreSQL 16+)")
    owner: str = Field(description="role that owns the database")
    acl: list[str] | None = Field(default=None, description="aclitems in order ('=T/alice', 'bob=c/alice'); "
                                  "None = the default privileges")
    connection_limit: int = -1
    comment: str | None = None
    settings: list[str] = Field(default_factory=list, description="ALTER DATABASE ... SET, as 'name=value'")
    role_settings: dict[str, list[str]] = Field(
        default_factory=dict, description="ALTER ROLE r IN DATABASE ... SET: role -> ['name=value', ...]")


class Lineage(_Strict):
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    deployment: str | None = None
    ui_url: str | None = None


class Manifest(_Strict):
    schema_version: int = SCHEMA_VERSION
    id: str
    engine: str
    target: str
    kind: BackupKind
    mode: str = Field(default="logical", description="'logical' (dumps) or 'physical'")
    parent_id: str | None = None
    started_at: datetime
    finished_at: datetime
    consistency: dict[str, Any] = Field(default_factory=dict, description="engine's consistency point")
    objects: list[StoredObject]
    fingerprints: dict[str, dict[str, TableFingerprint]] = Field(
        default_factory=dict, description="database -> table -> fingerprint, at the consistency point"
    )
    database_properties: dict[str, DatabaseProperties] | None = Field(
        default=None, description="logical backups: database -> its properties at backup time; absent "
        "in manifests written before vaultflow recorded them (restores then use the server's defaults)")
    server_version: str | None = None
    tool_versions: dict[str, str] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict, description="seconds per phase")
    lineage: Lineage = Field(default_factory=Lineage)

    @property
    def stored_size(self) -> int:
        return sum(o.stored_size for o in self.objects)

    @property
    def raw_size(self) -> int:
        return sum(o.raw_size for o in self.objects)

    def to_json(self) -> bytes:
        return (self.model_dump_json(indent=2) + "\n").encode()


class ManifestError(VaultflowError):
    """A manifest that cannot be read: broken JSON, unknown schema_version, bad fields."""


def parse_manifest(data: bytes, where: str) -> Manifest:
    """Parse and validate one manifest; errors name `where` (its key) and what is wrong."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ManifestError(f"{where}: expected a JSON object")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ManifestError(
            f"{where}: schema_version {version!r} is not supported by this vaultflow "
            f"(supports {SCHEMA_VERSION}); upgrade vaultflow to read it"
        )
    try:
        return Manifest.model_validate(doc)
    except ValueError as exc:
        raise ManifestError(f"{where}: invalid manifest ({exc})") from exc
