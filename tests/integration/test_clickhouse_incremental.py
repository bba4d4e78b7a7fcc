"""ClickHouse incrementals and differentials (BACKUP ... SETTINGS base_backup = the parent) on the
session's embedded engine: only new files stored, restores through the chain judged by the oracle,
a damaged parent refused with the object named (the flows then take a full)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.corpus.clickhouse_oracle import clickhouse_differences, clickhouse_state
from tests.integration.test_clickhouse_engine import backed_up, ctx
from vaultflow.engines.clickhouse.staging import ROLE_FILE
from vaultflow.errors import ChainBrokenError
from vaultflow.manifest import BackupKind
from vaultflow.testing.chdb_instance import ChdbInstance


def test_incremental_and_differential_store_new_parts_and_restore_through_the_chain(
    clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str, tmp_path: Path
):
    db = fresh_clickhouse_db
    repo, engine, full = backed_up(clickhouse_source, clickhouse_client, db, tmp_path, rows=3000)
    clickhouse_client.command(f"INSERT INTO {db}.events SELECT number + 10000, 'd', 1, map() FROM numbers(30)")
    incr = engine.incremental_backup(ctx(repo), BackupKind.INCREMENTAL)
    at_incr = clickhouse_state(clickhouse_client, db)
    clickhouse_client.command(f"INSERT INTO {db}.flags VALUES ('w', true)")
    diff = engine.incremental_backup(ctx(repo), BackupKind.DIFFERENTIAL)
    at_diff = clickhouse_state(clickhouse_client, db)

    assert (incr.kind, incr.parent_id, diff.kind, diff.parent_id) == ("incremental", full.id, "differential", full.id)
    full_files = {o.key for o in full.objects if o.role == ROLE_FILE}
    incr_files = {o.key for o in incr.objects if o.role == ROLE_FILE}
    assert incr_files and not {k for k in incr_files & full_files if k.endswith(".bin.zst")}, "parts come from the base"
    assert incr.stored_size < full.stored_size / 2, (incr.stored_size, full.stored_size)
    assert incr.consistency.databases[db].base_backup_uuid == full.consistency.databases[db].uuid

    for manifest, expected in ((incr, at_incr), (diff, at_diff)):
        result = engine.restore(ctx(repo), manifest)
        assert result.comparison.ok
        assert clickhouse_differences(expected, clickhouse_state(clickhouse_client, result.restored[db])) == []
    assert list((clickhouse_source.backup_dir / "vaultflow").rglob("*.bin")) == [], "the chain written back is removed"


def test_a_damaged_parent_is_named_and_refused(
    clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str, tmp_path: Path
):
    db = fresh_clickhouse_db
    repo, engine, full = backed_up(clickhouse_source, clickhouse_client, db, tmp_path, rows=100)
    victim = next(o for o in full.objects if o.role == ROLE_FILE and ".bin" in o.key)
    path = tmp_path / "repo" / repo.object_key(full, victim.key)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    with pytest.raises(ChainBrokenError, match=f"parent chain of {re.escape(full.id)}.*{re.escape(victim.key)}"):
        engine.incremental_backup(ctx(repo), BackupKind.INCREMENTAL)
    assert [m.id for m in repo.catalog("clickhouse", engine.config.name).manifests] == [full.id]
    assert list((clickhouse_source.backup_dir / "vaultflow").rglob("*.bin")) == []
