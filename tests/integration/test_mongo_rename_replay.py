"""Restores with renaming (MongoRestoreOptions.rename) that replay the oplog: an incremental chain
and a point in time. Every collection, from the full's archive and from the replayed oplog (made,
renamed and dropped after the full), lands where the first matching rule sends it, or in
`<db>_restore_<point>` under its own name; judged by the independent oracle (tests/corpus/oracle.py)
against the source as it was at the restored point. Conflicts are refused before any write."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from bson import Timestamp

from tests.corpus.oracle import mongo_differences, mongo_state
from tests.integration.test_mongo_engine import context, fill, target_for
from tests.integration.test_mongo_incremental import write_changes
from tests.integration.test_mongo_restore_rename import renamed_state, restore
from vaultflow.engines.mongodb.client import newest_oplog_ts
from vaultflow.engines.mongodb.consistency import parse_ts, ts_text
from vaultflow.engines.mongodb.names import RenameRules
from vaultflow.engines.mongodb.oplog_archive import OplogArchive
from vaultflow.engines.mongodb.oplog_scan import OplogScan
from vaultflow.engines.mongodb.replay import apply_entries
from vaultflow.engines.mongodb.replay_landing import ReplayNames, plan_landing
from vaultflow.errors import ConfigError
from vaultflow.manifest import BackupKind

WINDOW = 1  # seconds an oplog slice spans at most


@pytest.fixture
def dropped(mongo_client) -> Iterator[list[str]]:
    """Names of databases a test creates; dropped after it."""
    names: list[str] = []
    yield names
    for name in names:
        mongo_client.drop_database(name)


@pytest.fixture(scope="module")
def chain(mongo_source, mongo_client, tmp_path_factory):
    """A full backup and two incrementals of one database whose oplog inserts, updates, deletes,
    makes collections (made_1 with an index, then made_2), drops one (empty) and renames one
    (made_1 -> renamed_1): (database, engine, ctx, newest incremental, source state at it)."""
    db = f"rnrp_{secrets.token_hex(4)}"
    fill(mongo_client, db)
    engine = target_for(mongo_source, [db], name="rnrp").engine()
    ctx = context(tmp_path_factory.mktemp("rename-replay"))
    engine.full_backup(ctx)
    write_changes(mongo_client, db, 1)
    engine.incremental_backup(ctx, BackupKind.INCREMENTAL)
    write_changes(mongo_client, db, 2)
    second = engine.incremental_backup(ctx, BackupKind.INCREMENTAL)
    assert "renamed_1" in second.fingerprints[db] and "made_1" not in second.fingerprints[db]
    yield db, engine, ctx, second, mongo_state(mongo_client, db)
    mongo_client.drop_database(db)


def test_an_incremental_chain_restores_renamed_with_the_oplogs_collections(chain, mongo_client, dropped):
    db, engine, ctx, second, source = chain
    copy, people = f"{db}_copy", f"{db}_people"
    dropped += [copy, people]
    assert {"made_2", "renamed_1"} <= set(source) and not {"made_1", "empty"} & set(source)

    result = restore(engine, ctx, second, rename={f"{db}.*": f"{copy}.*"})
    assert result.comparison.ok, result.comparison.summary()
    assert mongo_differences(source, mongo_state(mongo_client, copy)) == []
    assert result.restored == {f"{db}.{name}": f"{copy}.{name}" for name in source}
    compared = {(row.database, row.table) for row in result.comparison.tables}
    assert compared == {(db, name) for name, entry in source.items() if entry["type"] == "collection"}, (
        "each collection compared with its fingerprint under its source name"
    )

    # again over the copy (overwrite: replaced whole once a scratch copy compared equal), users and
    # the view on it into another database under new names
    rename = {f"{db}.users": f"{people}.members", f"{db}.top_users": f"{people}.top", f"{db}.*": f"{copy}.*"}
    result = restore(engine, ctx, second, rename=rename, overwrite=True)
    assert result.comparison.ok, result.comparison.summary()
    moved = {"users": "members", "top_users": "top"}
    assert mongo_differences(renamed_state(source, moved), mongo_state(mongo_client, people)) == []
    rest = {name: name for name in source if name not in moved}
    assert mongo_differences(renamed_state(source, rest), mongo_state(mongo_client, copy)) == [], "replaced whole"
    assert result.restored[f"{db}.users"] == f"{people}.members"
    assert result.restored[f"{db}.renamed_1"] == f"{copy}.renamed_1"
    assert any("replayed" in note for note in result.notes)
    assert not [n for n in mongo_client.list_database_names() if n.startswith(db) and ("_vf_" in n or "_restore_" in n)]


def test_into_an_existing_database_without_rename_replaces_it_after_the_scratch_copy(chain, mongo_client, dropped):
    """The same two-phase overwrite without rules: `into` an existing database holding other data."""
    db, engine, ctx, second, source = chain
    into = f"{db}_into"
    dropped.append(into)
    mongo_client[into].stale.insert_one({"_id": "replaced"})
    result = engine.restore(ctx, second, into=into, overwrite=True)
    assert result.comparison.ok, result.comparison.summary()
    assert result.restored == {db: into}
    assert mongo_differences(source, mongo_state(mongo_client, into)) == []
    assert len([note for note in result.notes if "replayed" in note]) == 2, (
        "the scratch copy's replay, then the target's"
    )
    assert not [n for n in mongo_client.list_database_names() if n.startswith(into) and "_vf_" in n]


def test_a_point_in_time_restores_renamed_and_unmatched_collections_to_the_default(
    mongo_source, mongo_client, fresh_mongo_db, tmp_path, dropped
):
    db = fresh_mongo_db
    fill(mongo_client, db)
    engine = target_for(mongo_source, [db], oplog_slice_seconds=WINDOW, oplog_slice_bytes=4096).engine()
    ctx = context(tmp_path)
    archive = OplogArchive(ctx.repository, "mongo", engine.config)
    full = engine.full_backup(ctx)
    write_changes(mongo_client, db, 1)  # made_1 is made after the full, empty dropped
    point = ts_text(newest_oplog_ts(mongo_client))
    state = mongo_state(mongo_client, db)
    mongo_client[db].users.insert_one({"_id": "after the point"})
    time.sleep(WINDOW + 0.2)  # the slice holding the point is over: it is shipped
    archive.ship()

    people, other = f"{db}_people", f"{db}_other"
    stamp = f"{datetime.fromtimestamp(Timestamp(*parse_ts(point)).time, UTC):%Y%m%dt%H%M%S}"
    default = f"{db}_restore_{stamp}"
    dropped += [people, other, default]
    rename = {f"{db}.users": f"{people}.members", f"{db}.top_users": f"{people}.top", "*.made_1": f"{other}.*"}
    result = restore(engine, ctx, full, to_ts=point, rename=rename)

    assert result.restored == {
        f"{db}.users": f"{people}.members",
        f"{db}.top_users": f"{people}.top",
        f"{db}.made_1": f"{other}.{db}",
        f"{db}.events": f"{default}.events",
        f"{db}.strict": f"{default}.strict",
    }
    moved = {"users": "members", "top_users": "top"}
    assert mongo_differences(renamed_state(state, moved), mongo_state(mongo_client, people)) == []
    assert mongo_differences(renamed_state(state, {"made_1": db}), mongo_state(mongo_client, other)) == []
    assert (
        mongo_differences(
            renamed_state(state, {"events": "events", "strict": "strict"}), mongo_state(mongo_client, default)
        )
        == []
    )
    assert result.comparison.tables == [] and any("nothing was compared" in note for note in result.notes)
    assert mongo_client[people].members.find_one({"_id": "after the point"}) is None


def test_a_conflict_in_the_oplog_is_refused_before_anything_is_written(chain, mongo_client):
    db, engine, ctx, second, _source = chain
    copy, aside = f"{db}_copy", f"{db}_aside"
    before = set(mongo_client.list_database_names())
    # the oplog renamed made_1 to renamed_1: sending one side elsewhere would move it between databases
    with pytest.raises(
        ConfigError,
        match=rf"renames {db}\.made_1 to {db}\.renamed_1, which would land in different databases "
        rf"\({aside}\.made_1 and {copy}\.renamed_1\)",
    ):
        restore(engine, ctx, second, rename={f"{db}.made_1": f"{aside}.made_1", f"{db}.*": f"{copy}.*"})
    # a collection of the full and one the oplog made, sent to one name
    rename = {f"{db}.users": f"{copy}.people", f"{db}.top_users": f"{copy}.top", f"{db}.made_2": f"{copy}.people"}
    with pytest.raises(
        ConfigError, match=rf"both {db}\.users and {db}\.made_2 \(named by oplog entry \d+:\d+\) to {copy}\.people"
    ):
        restore(engine, ctx, second, rename=rename)
    assert set(mongo_client.list_database_names()) == before, "nothing was written"
    later = datetime.now(UTC) + timedelta(days=3650)  # every record counts as stale then
    assert ctx.repository.dead_scratch("mongodb", "rnrp", now=later) == [], "no scratch record left"


def test_a_drop_database_in_the_oplog_drops_what_that_database_landed_and_nothing_else(
    mongo_source, mongo_client, tmp_path, dropped
):
    """Two databases renamed into one: the oplog drops one of them (SecantusDB, like mongod, logs
    a drop per collection, then dropDatabase) and makes it again; the replay drops that source's
    collections in the shared target, not the other's."""
    tag = secrets.token_hex(3)
    first, second, copy = f"vf_rndd_a_{tag}", f"vf_rndd_b_{tag}", f"vf_rndd_all_{tag}"
    dropped += [first, second, copy]
    mongo_client[first].kept.insert_many([{"_id": n, "v": n} for n in range(20)])
    mongo_client[second].gone.insert_many([{"_id": n} for n in range(10)])
    mongo_client[second].gone.create_index("x")
    engine = target_for(mongo_source, [first, second], name="rndd").engine()
    ctx = context(tmp_path)
    engine.full_backup(ctx)
    mongo_client.drop_database(second)
    mongo_client[second].again.insert_many([{"_id": n, "w": -n} for n in range(5)])
    mongo_client[first].kept.insert_one({"_id": "later"})
    incremental = engine.incremental_backup(ctx, BackupKind.INCREMENTAL)
    states = {name: mongo_state(mongo_client, name) for name in (first, second)}

    result = restore(engine, ctx, incremental, rename={f"{first}.*": f"{copy}.a_*", f"{second}.*": f"{copy}.b_*"})
    assert result.comparison.ok, result.comparison.summary()
    expected = {
        **renamed_state(states[first], {"kept": "a_kept"}),
        **renamed_state(states[second], {"again": "b_again"}),
    }
    assert mongo_differences(expected, mongo_state(mongo_client, copy)) == []
    assert result.restored == {f"{first}.kept": f"{copy}.a_kept", f"{second}.again": f"{copy}.b_again"}


def test_a_bare_drop_database_entry_drops_only_that_sources_collections(mongo_client, dropped):
    """A dropDatabase entry without the per-collection drops before it: the restore's names drop
    every collection and view that source database landed in the target, and nothing else."""
    target = f"vf_rndd_t_{secrets.token_hex(3)}"
    dropped.append(target)
    mongo_client[target].a_kept.insert_one({"_id": 1})
    mongo_client[target].b_gone.insert_one({"_id": 1})
    mongo_client[target].command({"create": "b_view", "viewOn": "b_gone", "pipeline": []})
    rules = RenameRules.parse({"a.*": f"{target}.a_*", "b.*": f"{target}.b_*"})
    landing = plan_landing(rules, lambda database: f"{database}_restore", ["a", "b"], None, OplogScan())
    entry = {"op": "c", "ns": "b.$cmd", "ts": Timestamp(1, 1), "o": {"dropDatabase": 1}}
    report = apply_entries(mongo_client, [entry], names=ReplayNames(landing, {target: target}))
    assert report.commands["dropDatabase"] == 1
    assert mongo_client[target].list_collection_names() == ["a_kept"]
