"""Races on the session's embedded ClickHouse engine, driven at an exact moment through the engine's
`before_statement` hook (no timing): a table altered, dropped or written between the first
fingerprints and BACKUP; a base backup removed from the disk before BACKUP or RESTORE (error 599);
two restores of one incremental chain at once, sharing the chain written back on the disk."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from tests.corpus.clickhouse_oracle import clickhouse_differences, clickhouse_state
from tests.integration.test_clickhouse_engine import backed_up, ctx, fill, target
from vaultflow.engines.clickhouse.chain import native_name
from vaultflow.errors import ChainBrokenError, RefusedError, ToolError, TransientError, is_transient
from vaultflow.manifest import BackupKind
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
from vaultflow.testing.chdb_instance import ChdbInstance

RACES = {  # what happens between the first fingerprints and BACKUP -> the table it names
    "altered": ("ALTER TABLE {db}.flags ADD COLUMN note String DEFAULT 'n'", "flags"),
    "dropped": ("DROP TABLE {db}.flags SYNC", "flags"),
    "written": ("INSERT INTO {db}.events VALUES (9001, 'z', 1.5, map())", "events"),
}


def staged(instance: ChdbInstance) -> list[Path]:
    """Everything vaultflow left on the backup disk but the targets' lock files."""
    return [p for p in (instance.backup_dir / "vaultflow").rglob("*") if p.suffix != ".lock"]


@pytest.mark.parametrize("race", sorted(RACES))
def test_a_table_changed_during_backup_fails_it_retryably_and_a_retry_restores_equal(
    race: str, clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str, tmp_path: Path
):
    db, repo = fresh_clickhouse_db, Repository(LocalStore(tmp_path / "repo"))
    fill(clickhouse_client, db, rows=30)
    engine = target(clickhouse_source, db).engine()
    sql, table = RACES[race]
    seen: list[tuple[str, str]] = []

    def change(statement: str, database: str, to: str) -> None:
        seen.append((statement, database))
        clickhouse_client.command(sql.format(db=db))

    engine.before_statement = change
    with pytest.raises(
        TransientError, match=rf"tables {table} of database {db} were written, altered, merged or dropped"
    ) as caught:
        engine.full_backup(ctx(repo))
    assert is_transient(caught.value), "the flows retry it"
    assert seen == [("BACKUP", db)]
    assert not list((tmp_path / "repo").rglob("manifest.json")), "nothing committed"
    assert not list((tmp_path / "repo").rglob("*.zst")), "no payload left"
    assert staged(clickhouse_source) == [], "the staging directory is removed"

    engine.before_statement = None  # the writes stopped: the retry goes through
    manifest = engine.full_backup(ctx(repo))
    at_backup = clickhouse_state(clickhouse_client, db)
    result = engine.restore(ctx(repo), manifest)
    assert result.comparison.ok
    assert clickhouse_differences(at_backup, clickhouse_state(clickhouse_client, result.restored[db])) == []


def test_a_base_backup_missing_on_the_disk_is_named_with_error_599(
    clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str, tmp_path: Path
):
    db = fresh_clickhouse_db
    repo, engine, full = backed_up(clickhouse_source, clickhouse_client, db, tmp_path, rows=30)
    clickhouse_client.command(f"INSERT INTO {db}.flags VALUES ('w', true)")
    base = clickhouse_source.backup_dir / native_name(full, db)

    def remove_base(statement: str, database: str, to: str) -> None:
        assert (base / ".backup").is_file(), "the chain is on the disk when the hook runs"
        shutil.rmtree(base)

    engine.before_statement = remove_base
    with pytest.raises(ChainBrokenError, match=r"base backup .* missing or incomplete on the disk \(error 599\)"):
        engine.incremental_backup(ctx(repo), BackupKind.INCREMENTAL)
    assert [m.id for m in repo.catalog("clickhouse", engine.config.name).manifests] == [full.id]
    assert staged(clickhouse_source) == []

    engine.before_statement = None
    incr = engine.incremental_backup(ctx(repo), BackupKind.INCREMENTAL)
    engine.before_statement = remove_base
    with pytest.raises(ToolError, match=r"base backup is missing or incomplete \(error 599\)"):
        engine.restore(ctx(repo), incr)
    left = clickhouse_client.query(f"SELECT name FROM system.databases WHERE startsWith(name, '{db}_')")
    assert left.result_rows == [], "the half-restored copy is dropped"
    assert staged(clickhouse_source) == []


def test_two_restores_of_one_chain_at_once_share_it_and_both_compare_equal(
    clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str, tmp_path: Path
):
    """The first restore holds the chain on the disk and waits right before its RESTORE; a second
    restore of the same incremental runs to its end meanwhile. Before the fix the second rewrote
    the links under the first (same names) and removed them when done, so the first's RESTORE
    found nothing."""
    db = fresh_clickhouse_db
    repo, engine, full = backed_up(clickhouse_source, clickhouse_client, db, tmp_path, rows=300)
    clickhouse_client.command(f"INSERT INTO {db}.events SELECT number + 5000, 'd', 2, map() FROM numbers(10)")
    incr = engine.incremental_backup(ctx(repo), BackupKind.INCREMENTAL)
    at_incr = clickhouse_state(clickhouse_client, db)
    links = [clickhouse_source.backup_dir / native_name(m, db) for m in (full, incr)]

    first, second = target(clickhouse_source, db).engine(), target(clickhouse_source, db).engine()
    waiting, go_on = threading.Event(), threading.Event()
    inodes: dict[Path, int] = {}

    def hold(statement: str, database: str, to: str) -> None:
        inodes.update({link: (link / ".backup").stat().st_ino for link in links})
        waiting.set()
        go_on.wait(120)

    first.before_statement = hold
    results: dict[str, object] = {}

    def restore(name: str, engine) -> None:
        try:
            results[name] = engine.restore(ctx(repo), incr)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            results[name] = exc

    worker = threading.Thread(target=restore, args=("first", first))
    worker.start()
    try:
        assert waiting.wait(120), f"the first restore did not reach RESTORE: {results}"
        restore("second", second)
        assert {link: (link / ".backup").stat().st_ino for link in links} == inodes, (
            "the second restore used the links the first wrote, and left them"
        )
    finally:
        go_on.set()
        worker.join(120)

    # and two started together, without a pause
    barrier = threading.Barrier(2)
    both = [
        threading.Thread(target=lambda n=n: (barrier.wait(60), restore(n, target(clickhouse_source, db).engine())))
        for n in ("third", "fourth")
    ]
    for thread in both:
        thread.start()
    for thread in both:
        thread.join(120)

    assert sorted(results) == ["first", "fourth", "second", "third"]
    for name, result in results.items():
        assert not isinstance(result, BaseException), f"{name}: {result!r}"
        assert result.comparison.ok, name
        assert clickhouse_differences(at_incr, clickhouse_state(clickhouse_client, result.restored[db])) == [], name
    assert len({r.restored[db] for r in results.values()}) == 4
    assert staged(clickhouse_source) == [], "the last user removed the chain and its .users files"


def test_a_killed_restores_leftover_link_is_written_again_not_trusted(
    clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str, tmp_path: Path
):
    db = fresh_clickhouse_db
    repo, engine, full = backed_up(clickhouse_source, clickhouse_client, db, tmp_path, rows=30)
    at_backup = clickhouse_state(clickhouse_client, db)
    link = clickhouse_source.backup_dir / native_name(full, db)
    link.mkdir(parents=True)  # what a run killed while it used the link left there
    (link / ".backup").write_text("<config>left by a killed run</config>")
    link.with_name(link.name + ".users").touch()

    result = engine.restore(ctx(repo), full)
    assert result.comparison.ok
    assert clickhouse_differences(at_backup, clickhouse_state(clickhouse_client, result.restored[db])) == []
    assert staged(clickhouse_source) == []


def test_a_new_databases_name_taken_meanwhile_is_left_alone(
    clickhouse_source: ChdbInstance, clickhouse_client, fresh_clickhouse_db: str, tmp_path: Path
):
    """Someone creates the restore's new database between the check and RESTORE (a concurrent
    restore in the same millisecond, a user): that database is not dropped or written; a default
    name moves on to `_2`, a name the user chose is refused."""
    db = fresh_clickhouse_db
    repo, engine, full = backed_up(clickhouse_source, clickhouse_client, db, tmp_path, rows=10)
    at_backup = clickhouse_state(clickhouse_client, db)
    taken: list[str] = []

    def take(statement: str, database: str, to: str) -> None:
        clickhouse_client.command(f"CREATE DATABASE `{to}`")
        clickhouse_client.command(f"CREATE TABLE `{to}`.mine (x UInt8) ENGINE = MergeTree ORDER BY x")
        taken.append(to)
        engine.before_statement = None  # once

    def tables_of(name: str) -> list[str]:
        return [r[0] for r in clickhouse_client.query(f"SHOW TABLES FROM `{name}`").result_rows]

    engine.before_statement = take
    result = engine.restore(ctx(repo), full)
    assert result.restored[db] == f"{taken[0]}_2"
    assert clickhouse_differences(at_backup, clickhouse_state(clickhouse_client, result.restored[db])) == []
    assert tables_of(taken[0]) == ["mine"], "the other's database is untouched"

    engine.before_statement = take
    with pytest.raises(RefusedError, match=f"database '{db}_mine' was created by someone else meanwhile; nothing"):
        engine.restore(ctx(repo), full, into=f"{db}_mine")
    assert tables_of(f"{db}_mine") == ["mine"]
