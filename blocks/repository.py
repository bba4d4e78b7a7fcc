"""BackupRepository: where backups go (local directory and/or S3), compression and retention."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prefect.blocks.core import Block
from prefect_aws.s3 import S3Bucket
from pydantic import Field, TypeAdapter, ValidationError, ValidationInfo, field_validator, model_validator

from vaultflow.blocks.schema import SchemaOnce
from vaultflow.errors import ConfigError
from vaultflow.locks import LockSettings
from vaultflow.repository import Repository
from vaultflow.retention import Duration, RetentionPolicy, parse_duration
from vaultflow.stores.local import LocalStore
from vaultflow.stores.mirror import MirrorStore
from vaultflow.stores.s3 import S3Store

_DURATION = TypeAdapter(Duration)
DURATION_FORMS = (
    "e.g. '7d', '36h', '2w', '1y' (s, min, h, d, w, m = 30d, y = 365d), a number of seconds or ISO 8601 'P7D'"
)
# The block's rules that keep backups (RetentionPolicy also has keep_hourly; the block does not).
KEEP_FIELDS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within")


def duration_field(field: str, value: str) -> timedelta:
    """`value` of block field `field` as a timedelta (retention.py's duration forms). Raises
    ValueError naming the field and the accepted forms when it is not a duration or is negative."""
    try:
        td = _DURATION.validate_python(value)
    except (ValueError, ValidationError):
        td = None
    if td is None and not str(value).strip().startswith("-"):
        raise ValueError(f"{field} {value!r} is not a duration; write {DURATION_FORMS}")
    if td is None or td < timedelta(0):
        raise ValueError(f"{field} {value!r} must not be negative; write {DURATION_FORMS}")
    return td


class BackupRepository(SchemaOnce, Block):
    """One or more stores that hold backups, plus compression and a retention policy.

    With both a local path and an S3 bucket, every object is written to both in one pass
    (a mirror) and read from the first that has it.

    Example:
        ```python
        from vaultflow.blocks import BackupRepository

        repo = BackupRepository.load("BLOCK_NAME")
        print(repo.build().description)
        ```
    """

    _block_type_name = "Backup Repository"
    _block_type_slug = "backup-repository"
    _description = "Where vaultflow keeps backups (local directory, S3, or both), compression and retention."
    _documentation_url = "https://github.com/vaultflow/vaultflow/blob/main/docs/repository-format.md"

    local_path: str | None = Field(
        default=None, description="Directory on the worker's host that holds the repository (created 0700 if missing)."
    )
    s3_bucket: S3Bucket | None = Field(
        default=None,
        description="A prefect-aws S3Bucket block; its bucket_folder is the repository's prefix inside the bucket.",
    )
    compression_level: int = Field(default=3, ge=1, le=19, description="zstd level: 1 fastest, 19 smallest.")
    keep_last: int | None = Field(default=7, ge=0, description="Keep the N newest backups.")
    keep_daily: int | None = Field(default=7, ge=0, description="Keep the newest backup of each of N days.")
    keep_weekly: int | None = Field(default=4, ge=0, description="Keep the newest backup of each of N ISO weeks.")
    keep_monthly: int | None = Field(default=12, ge=0, description="Keep the newest backup of each of N months.")
    keep_yearly: int | None = Field(default=None, ge=0, description="Keep the newest backup of each of N years.")
    keep_within: str | None = Field(default=None, description="Keep everything newer than this, e.g. '7d', '36h'.")
    orphan_grace: str = Field(
        default="24h", description="Payload without a manifest (a killed run) older than this is deleted by prune."
    )
    clock_tolerance: str = Field(
        default="5min",
        description="How far a backup's recorded time may differ from "
        "the clocks that check it (the worker's, the store's timestamp of its manifest) "
        "before it counts as misdated: held by retention, skipped by 'latest', reported "
        "by list and verify.",
    )
    lock_wait: str = Field(
        default="10min",
        description="How long a run waits for another run's conflicting "
        "lock on the same target (a prune waits for running backups, verifies and restores, "
        "and they for a prune) before failing with a retryable error, e.g. '10min', '1h', "
        "'0s' (no waiting).",
    )

    @field_validator("lock_wait")
    @classmethod
    def _lock_wait_is_a_duration(cls, value: str) -> str:
        if not isinstance(parse_duration(value), timedelta):
            raise ValueError(f"lock_wait {value!r} is not a duration; write e.g. '10min', '1h' or '0s'")
        return value

    @field_validator("keep_within", "orphan_grace", "clock_tolerance")
    @classmethod
    def _retention_durations(cls, value: str | None, info: ValidationInfo) -> str | None:
        # checked when the block is created or loaded, not first at prune time
        if value is not None:
            duration_field(info.field_name, value)
        return value

    @model_validator(mode="after")
    def _needs_a_store(self):
        if not self.local_path and self.s3_bucket is None:
            raise ValueError("a BackupRepository needs local_path, s3_bucket, or both")
        return self

    @model_validator(mode="after")
    def _keeps_something(self):
        # An empty policy would let prune delete every backup but the newest: refuse the block.
        counts = [self.keep_last, self.keep_daily, self.keep_weekly, self.keep_monthly, self.keep_yearly]
        if not any(counts) and not (self.keep_within and duration_field("keep_within", self.keep_within)):
            raise ValueError(
                f"this BackupRepository's retention keeps nothing; set at least one of {', '.join(KEEP_FIELDS)} "
                "(e.g. keep_last=7)"
            )
        return self

    def retention_policy(self) -> RetentionPolicy:
        """The block's retention rules as a RetentionPolicy. Raises ConfigError naming the block
        when they are invalid (only possible for a block built without validation: creating or
        loading one checks them)."""
        try:
            return self._policy()
        except ValidationError as exc:
            name = getattr(self, "_block_document_name", None) or "(unsaved)"
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'policy'}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"BackupRepository block {name!r}: invalid retention ({problems})") from exc

    def _policy(self) -> RetentionPolicy:
        return RetentionPolicy(
            keep_last=self.keep_last,
            keep_daily=self.keep_daily,
            keep_weekly=self.keep_weekly,
            keep_monthly=self.keep_monthly,
            keep_yearly=self.keep_yearly,
            keep_within=self.keep_within,
            orphan_grace=self.orphan_grace,
            clock_tolerance=self.clock_tolerance,
        )

    def build(self) -> Repository:
        stores = []
        if self.local_path:
            stores.append(LocalStore(Path(self.local_path).expanduser()))
        if self.s3_bucket is not None:
            credentials = self.s3_bucket.credentials
            # the session's credentials travel in connection_spec to a restore_command's wal-fetch
            stores.append(
                S3Store(
                    credentials.get_s3_client(),
                    self.s3_bucket.bucket_name,
                    self.s3_bucket.bucket_folder,
                    credentials=credentials.get_boto3_session().get_credentials(),
                    verify=credentials.aws_client_parameters.verify,
                )
            )
        store = stores[0] if len(stores) == 1 else MirrorStore(stores)
        return Repository(
            store,
            compression_level=self.compression_level,
            lock_settings=LockSettings(wait=parse_duration(self.lock_wait)),
        )
