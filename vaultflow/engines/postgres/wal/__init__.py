"""Continuous WAL archiving: spool locally, ship to the repository, fetch back, check gaps.

    PostgreSQL --archive_command--> wal_push   -> <spool>/<name>            (local, fsynced)
    archive-logs flow ------------> ship_spool -> postgres/<target>/logs/wal/<name>.zst
                                                  postgres/<target>/logs/wal/<name>.json  LAST
    PostgreSQL --restore_command--> wal_fetch  <- the record, then the verified .zst

Archiving is split in two so that PostgreSQL never waits for (or fails because of) the
repository: `wal_push` only copies the file into a local spool directory atomically, which is
fast and works while S3 is down. `ship_spool` moves spooled files to the repository in WAL
order and deletes a spooled file only after its JSON record is written, so a crash anywhere
loses nothing (at worst a segment is shipped twice; the second time is recognised and skipped).

    names.py    WAL file names, segment arithmetic, timeline history, repository keys
    push.py     wal_push (archive_command) into the spool; spooled; file helpers
    ship.py     ship_spool, ShipResult, the JSON records (read_record), the ship lock
    archive.py  wal_fetch (restore_command), archived_names, check_continuity, retention
    timelines.py  which timeline recovery follows (plan_timeline), gaps along it (wal_gaps)

This package is imported by `python -m vaultflow.engines.postgres.wal.cli push` on every WAL segment: keep the
top-level imports of all its modules to the standard library. Store, pipeline and zstd imports
happen inside the functions that need them (importing `vaultflow.stores` pulls in boto3).
"""

from vaultflow.engines.postgres.wal.archive import check_continuity, delete_wal, wal_fetch, wal_not_needed
from vaultflow.engines.postgres.wal.names import (
    DEFAULT_SEGMENT_SIZE,
    ENGINE,
    archived_names,
    is_history,
    is_segment,
    is_wal_file,
    next_segment,
    object_key,
    parse_history,
    parse_lsn,
    parse_segment,
    record_key,
    segment_name,
    wal_order,
    wal_prefix,
)
from vaultflow.engines.postgres.wal.push import TMP_PREFIX, WalError, spooled, wal_push
from vaultflow.engines.postgres.wal.ship import (
    LOCK_NAME,
    RECORD_FIELDS,
    ShipResult,
    archive_file,
    read_record,
    ship_spool,
)
from vaultflow.engines.postgres.wal.timelines import (
    BackupWal,
    TimelinePlan,
    archive_end,
    check_backup_wal,
    describe_gaps,
    history_name,
    plan_timeline,
    wal_gaps,
)

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "ENGINE",
    "LOCK_NAME",
    "RECORD_FIELDS",
    "TMP_PREFIX",
    "BackupWal",
    "ShipResult",
    "TimelinePlan",
    "WalError",
    "archive_end",
    "archive_file",
    "archived_names",
    "check_backup_wal",
    "check_continuity",
    "delete_wal",
    "describe_gaps",
    "history_name",
    "is_history",
    "is_segment",
    "is_wal_file",
    "next_segment",
    "object_key",
    "parse_history",
    "parse_lsn",
    "parse_segment",
    "read_record",
    "record_key",
    "plan_timeline",
    "segment_name",
    "ship_spool",
    "spooled",
    "wal_fetch",
    "wal_gaps",
    "wal_not_needed",
    "wal_order",
    "wal_prefix",
    "wal_push",
]
