"""Restores of chosen partitions of ClickHouse tables on the session's embedded engine: the backup
records a fingerprint per partition, RESTORE ... PARTITIONS ID brings back only the chosen ones,
each compared with its own fingerprint and judged by the oracle (rows sorted by the ORDER BY key,
filtered to those partitions); a partition or table the backup does not hold is named up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.corpus.clickhouse_oracle import clickhouse_differences, clickhouse_state
from tests.integration.test_clickhouse_engine import backed_up, ctx
from vaultflow.engines.clickhouse.fingerprint import PARTITION_METHODS, partition_unit
from vaultflow.engines.clickhouse.settings import ClickHouseRestoreOptions
from vaultflow.errors import ConfigError
from vaultflow.testing.chdb_instance import ChdbInstance


def partition_ids(client: Any, db: str, table: str) -> dict[str, str]:
    """partition value -> partition id of `table`'s active parts (plain SQL)."""
    found = client.query(
        f"SELECT DISTINCT partition, partition_id FROM system.parts WHERE database = '{db}' AND table = '{table}' "
        "AND active"
    ).result_rows
    return {value: pid for value, pid in found}


def databases_like(client: Any, prefix: str) -> list[str]:
    found = client.query(f"SELECT name FROM system.databases WHERE startsWith(name, '{prefix}_')").result_rows
    return sorted(r[0] for r in found)


def test_chosen_partitions_restore_alone_each_compared_and_equal_to_the_oracle(
    clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str, tmp_path: Path
):
    db = fresh_clickhouse_db  # events: partitions a, b, c (20 rows each); flags: none
    repo, engine, manifest = backed_up(clickhouse_source, clickhouse_client, db, tmp_path, rows=60)
    ids = partition_ids(clickhouse_client, db, "events")
    assert sorted(ids) == ["a", "b", "c"]
    chosen = [ids["a"], ids["c"]]
    at_backup = clickhouse_state(clickhouse_client, db, partitions={"events": chosen})
    b_and_flags = {
        "events": clickhouse_state(clickhouse_client, db, partitions={"events": [ids["b"]]})["events"],
        "flags": clickhouse_state(clickhouse_client, db)["flags"],
    }

    recorded = {u: fp for u, fp in manifest.fingerprints[db].items() if fp.method in PARTITION_METHODS}
    assert recorded.keys() == {partition_unit("events", pid) for pid in ids.values()}
    assert [fp.count for fp in recorded.values()] == [20, 20, 20]
    assert manifest.fingerprints[db]["events"].count == 60 and "flags" in manifest.fingerprints[db]

    clickhouse_client.command(f"ALTER TABLE {db}.events DROP PARTITION 'a'")  # the loss to repair
    result = engine.restore(ctx(repo), manifest, options=ClickHouseRestoreOptions(partitions={"events": chosen}))
    copy = clickhouse_state(clickhouse_client, result.restored[db])
    assert set(copy) == {"events"} and len(copy["events"]["rows"]) == 40
    assert clickhouse_differences(at_backup, copy) == []
    assert result.comparison.ok
    assert sorted(t.table for t in result.comparison.tables) == sorted(partition_unit("events", p) for p in chosen)
    assert result.comparison.summary() == "2 tables and partitions match"

    # with tables: flags whole, events by partition
    both = engine.restore(
        ctx(repo),
        manifest,
        options={"tables": ["events", "flags"], "partitions": {"events": ids["b"]}},
    )
    assert clickhouse_differences(b_and_flags, clickhouse_state(clickhouse_client, both.restored[db])) == []
    assert sorted(t.table for t in both.comparison.tables) == [partition_unit("events", ids["b"]), "flags"]
    assert list((clickhouse_source.backup_dir / "vaultflow").rglob("*.bin")) == [], "the chain written back is removed"


def test_a_partition_or_table_the_backup_does_not_hold_is_named_before_anything_runs(
    clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str, tmp_path: Path
):
    db = fresh_clickhouse_db
    repo, engine, manifest = backed_up(clickhouse_source, clickhouse_client, db, tmp_path, rows=6)
    ids = partition_ids(clickhouse_client, db, "events")
    held = ", ".join(sorted(ids.values()))

    with pytest.raises(ConfigError, match=rf"holds no partition '202401' of {db}\.events; it holds partitions {held}"):
        engine.restore(ctx(repo), manifest, options=ClickHouseRestoreOptions(partitions={"events": ["202401"]}))
    with pytest.raises(ConfigError, match=rf"recorded no partitions of {db}\.flags.*restore the whole table"):
        engine.restore(ctx(repo), manifest, options=ClickHouseRestoreOptions(partitions={"flags": ["all"]}))
    with pytest.raises(ConfigError, match=f"holds no table 'gone' in database '{db}'"):
        engine.restore(ctx(repo), manifest, options={"partitions": {"gone": ["x"]}})
    with pytest.raises(ConfigError, match="partitions names table 'events', which tables=\\['flags'\\] leaves out"):
        engine.restore(ctx(repo), manifest, options={"tables": ["flags"], "partitions": {"events": [ids["a"]]}})
    with pytest.raises(ConfigError, match=rf"holds no table {db}\.nope .*its tables with rows: events, flags"):
        engine.restore(ctx(repo), manifest, options=ClickHouseRestoreOptions(tables=["flags", "nope"]))
    assert databases_like(clickhouse_client, db) == [], "no restore started, or its copy was dropped"
