"""A table written while a ClickHouse backup is taken: the cheap state of MergeTree tables (uuid,
schema, active parts) before BACKUP and after the rows' digest, the digest before and after for
tables without parts (Log). Real writes on the session's chDB instance, made at the racy moments
by wrapping the engine's own steps; the backup must fail retryably, naming the table, record
nothing and leave no staging directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import vaultflow.engines.clickhouse.engine as engine_module
from tests.corpus.clickhouse_oracle import clickhouse_differences, clickhouse_state
from vaultflow.blocks import ClickHouseTarget
from vaultflow.engines.base import BackupContext
from vaultflow.engines.clickhouse.fingerprint import changed_tables, table_states
from vaultflow.errors import TransientError, is_transient
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
from vaultflow.testing.chdb_instance import ChdbInstance


def fill(client: Any, db: str) -> None:
    client.command(
        f"CREATE TABLE {db}.parts_kept (id UInt64, v String) ENGINE = MergeTree ORDER BY id "
        "SETTINGS enable_block_number_column = 1, enable_block_offset_column = 1"
    )
    client.command(f"INSERT INTO {db}.parts_kept SELECT number, toString(number) FROM numbers(100)")
    client.command(f"CREATE TABLE {db}.logged (id UInt64) ENGINE = Log")
    client.command(f"INSERT INTO {db}.logged SELECT number FROM numbers(10)")


def engine_of(instance: ChdbInstance, db: str):
    return ClickHouseTarget(**instance.target_fields(), databases=[db], target_name=f"ch-{db}").engine()


def test_table_states_change_with_every_write_and_only_then(
    clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str
):
    db, client = fresh_clickhouse_db, clickhouse_client
    fill(client, db)
    config = engine_of(clickhouse_source, db).config
    state = table_states(client, config, db)
    assert state["parts_kept"].pinned and not state["logged"].pinned, "MergeTree parts pin rows; Log has none"
    writes = [
        ("SELECT 1", []),
        (f"UPDATE {db}.parts_kept SET v = 'x' WHERE id = 3", ["parts_kept"]),  # lightweight: a patch part
        (f"DELETE FROM {db}.parts_kept WHERE id = 4", ["parts_kept"]),
        (f"ALTER TABLE {db}.parts_kept UPDATE v = 'y' WHERE id = 5 SETTINGS mutations_sync = 2", ["parts_kept"]),
        (f"ALTER TABLE {db}.parts_kept ADD COLUMN w UInt8 DEFAULT 0", ["parts_kept"]),  # metadata only
        (f"OPTIMIZE TABLE {db}.parts_kept FINAL", ["parts_kept"]),  # a merge: same rows, counted as a change
        (f"INSERT INTO {db}.logged VALUES (99)", []),  # no parts: only the rows' digest sees it
        (f"CREATE TABLE {db}.made (id UInt8) ENGINE = MergeTree ORDER BY id", ["made"]),
        (f"EXCHANGE TABLES {db}.made AND {db}.parts_kept", ["made", "parts_kept"]),
        (f"TRUNCATE TABLE {db}.made", ["made"]),
        (f"DROP TABLE {db}.made SYNC", ["made"]),
    ]
    for sql, changed in writes:
        client.command(sql)
        now = table_states(client, config, db)
        assert changed_tables(state, now) == changed, sql
        state = now


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository(LocalStore(tmp_path / "repo"))


def assert_nothing_recorded(instance: ChdbInstance, db: str, repo: Repository) -> None:
    assert list(Path(repo.store.root).rglob("manifest.json")) == [], "no backup recorded"
    assert list(Path(repo.store.root).rglob("*.zst")) == [], "its payload removed"
    assert not (instance.backup_dir / "vaultflow" / f"ch-{db}").exists(), "no staging directory left"


@pytest.mark.parametrize(
    ("moment", "write", "table"),
    [
        ("backup", "INSERT INTO {db}.parts_kept VALUES (1000, 'new')", "parts_kept"),
        ("backup", "ALTER TABLE {db}.parts_kept ADD COLUMN late UInt8", "parts_kept"),
        ("digest", "DELETE FROM {db}.parts_kept WHERE id = 7", "parts_kept"),
        ("digest", "INSERT INTO {db}.logged VALUES (1000)", "logged"),
    ],
)
def test_a_write_during_the_backup_fails_it_retryably_naming_the_table(
    clickhouse_source: ChdbInstance,
    clickhouse_client,
    fresh_clickhouse_db: str,
    repo: Repository,
    monkeypatch: pytest.MonkeyPatch,
    moment: str,
    write: str,
    table: str,
):
    """`backup`: the write lands right after BACKUP, before the state is taken again; `digest`: while
    the files stream into the repository, just before the rows are digested beside them."""
    db = fresh_clickhouse_db
    fill(clickhouse_client, db)
    engine = engine_of(clickhouse_source, db)
    sql = write.format(db=db)
    if moment == "backup":
        real_backup = engine._backup

        def backup_then_write(client, database, name, base):
            real_backup(client, database, name, base)
            clickhouse_client.command(sql)

        monkeypatch.setattr(engine, "_backup", backup_then_write)
    else:
        real_digest = engine_module.fingerprint_database
        written: list[str] = []

        def write_then_digest(client, config, database, only=None):
            if only is None and not written:  # the digest after BACKUP (before it: only the Log tables)
                clickhouse_client.command(sql)
                written.append(sql)
            return real_digest(client, config, database, only)

        monkeypatch.setattr(engine_module, "fingerprint_database", write_then_digest)

    with pytest.raises(TransientError, match=rf"tables {table} of database {db} were written") as caught:
        engine.full_backup(BackupContext(repository=repo, log=lambda line: None))
    assert is_transient(caught.value)
    assert_nothing_recorded(clickhouse_source, db, repo)


def test_a_quiet_database_backs_up_with_the_digest_beside_the_ingest(
    clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str, repo: Repository
):
    """No write: the fingerprints recorded are those of the rows the backup holds (a restore of it
    compares equal and the oracle agrees), for MergeTree and Log tables alike."""
    db = fresh_clickhouse_db
    fill(clickhouse_client, db)
    engine = engine_of(clickhouse_source, db)
    context = BackupContext(repository=repo, log=lambda line: None)
    manifest = engine.full_backup(context)
    assert set(manifest.fingerprints[db]) == {"parts_kept", "logged"}
    assert {k.split(":")[0] for k in manifest.timings} == {"backup", "ingest", "fingerprint"}
    at_backup = clickhouse_state(clickhouse_client, db)
    result = engine.restore(context, manifest)
    assert result.comparison.ok and len(result.comparison.tables) == 2
    assert clickhouse_differences(at_backup, clickhouse_state(clickhouse_client, result.restored[db])) == []
