"""Catalog.parent_for: the parent of a new incremental/differential is never a misdated backup."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vaultflow.engines.postgres.consistency import PostgresPhysicalConsistency
from vaultflow.errors import ChainBrokenError
from vaultflow.manifest import BackupKind, BackupMode, Manifest, new_backup_id
from vaultflow.repository import Catalog

NOW = datetime.now(UTC)
F, I, D = BackupKind.FULL, BackupKind.INCREMENTAL, BackupKind.DIFFERENTIAL


POINT = PostgresPhysicalConsistency(
    start_lsn="0/2000028",
    stop_lsn="0/2000100",
    timeline=1,
    start_wal_file="000000010000000000000002",
    checkpoint_lsn="0/2000060",
)


def backup(kind: BackupKind, at: datetime, stored_at: datetime, catalog: Catalog) -> Manifest:
    m = Manifest(
        id=new_backup_id(kind, at),
        engine="postgres",
        target="t",
        kind=kind,
        mode=BackupMode.PHYSICAL,
        consistency=POINT,
        started_at=at - timedelta(seconds=5),
        finished_at=at,
        objects=[],
    )
    catalog.manifests.append(m)
    catalog.manifests.sort(key=lambda x: x.id)
    catalog.stored_at[m.id] = stored_at
    return m


def test_parent_skips_a_future_dated_backup_and_says_so() -> None:
    catalog = Catalog()
    real_full = backup(F, NOW - timedelta(hours=2), NOW - timedelta(hours=2), catalog)
    real_incr = backup(I, NOW - timedelta(hours=1), NOW - timedelta(hours=1), catalog)
    # written 30 minutes ago by a worker whose clock ran 3 h fast
    skewed = backup(F, NOW + timedelta(hours=2, minutes=30), NOW - timedelta(minutes=30), catalog)
    assert catalog.manifests[-1] is skewed
    assert catalog.parent_for(I, "t") is real_incr
    assert catalog.parent_for(D, "t") is real_full
    assert catalog.parent_for(I, "t", lambda m: m.kind == F) is real_full


def test_no_trustworthy_parent_is_a_chain_break_naming_the_skipped() -> None:
    catalog = Catalog()
    skewed = backup(F, NOW + timedelta(hours=3), NOW, catalog)
    with pytest.raises(ChainBrokenError, match=f"clock problem: {skewed.id}"):
        catalog.parent_for(I, "t")
    with pytest.raises(ChainBrokenError, match="no full backup of t"):
        Catalog().parent_for(D, "t")
