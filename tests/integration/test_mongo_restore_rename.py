"""Restores of full MongoDB backups with renaming (MongoRestoreOptions.rename), judged by the
independent oracle (tests/corpus/oracle.py), against SecantusDB."""

from __future__ import annotations

import json

import pytest

from tests.corpus.oracle import mongo_differences, mongo_state
from tests.integration.test_mongo_engine import context, fill, target_for
from vaultflow.engines.mongodb.settings import MongoRestoreOptions
from vaultflow.errors import ConfigError, RefusedError


def renamed_state(state: dict, names: dict[str, str]) -> dict:
    """A mongo_state reading with collections renamed (`names`: old -> new; others left out) and
    each view's viewOn renamed alike: what a renamed restore must read back as."""
    renamed = {}
    for old, new in names.items():
        entry = dict(state[old])
        if entry["type"] == "view":
            options = json.loads(entry["options"])
            options["viewOn"] = names.get(options["viewOn"], options["viewOn"])
            entry["options"] = json.dumps(options, sort_keys=True)
        renamed[new] = entry
    return renamed


def restore(engine, ctx, manifest, **options):
    overwrite = options.pop("overwrite", False)
    return engine.restore(ctx, manifest, overwrite=overwrite, options=MongoRestoreOptions(**options))


@pytest.fixture
def dropped(mongo_client):
    """Names of databases a test creates; dropped after it."""
    names: list[str] = []
    yield names
    for name in names:
        mongo_client.drop_database(name)


def test_rename_within_and_across_databases_with_views(mongo_source, mongo_client, fresh_mongo_db, tmp_path, dropped):
    db = fresh_mongo_db
    fill(mongo_client, db)
    source = mongo_state(mongo_client, db)
    engine = target_for(mongo_source, [db]).engine()
    ctx = context(tmp_path)
    manifest = engine.full_backup(ctx)

    copy, people = f"{db}_copy", f"{db}_people"
    dropped += [copy, people]
    result = restore(engine, ctx, manifest, rename={f"{db}.*": f"{copy}.*"})
    assert result.comparison.ok, result.comparison.summary()
    assert result.restored == {f"{db}.{name}": f"{copy}.{name}" for name in source}
    assert mongo_differences(source, mongo_state(mongo_client, copy)) == []

    # users and the view on it move to another database, renamed; the rest to <db>_restore_<time>
    rename = {f"{db}.users": f"{people}.members", f"{db}.top_users": f"{people}.top", f"{db}.events": f"{db}.log"}
    result = restore(engine, ctx, manifest, rename=rename, overwrite=True)
    default = result.restored[f"{db}.strict"].split(".")[0]
    dropped.append(default)
    assert result.comparison.ok, result.comparison.summary()
    assert default == f"{db}_restore_{manifest.id[:15].lower()}"
    assert (
        mongo_differences(
            renamed_state(source, {"users": "members", "top_users": "top"}), mongo_state(mongo_client, people)
        )
        == []
    )
    assert (
        mongo_differences(
            renamed_state(source, {"strict": "strict", "empty": "empty"}), mongo_state(mongo_client, default)
        )
        == []
    )
    # renaming onto the source database replaced it whole (overwrite): it holds only what landed there
    assert mongo_differences(renamed_state(source, {"events": "log"}), mongo_state(mongo_client, db)) == []
    assert list(mongo_client[people].top.find({}, {"_id": 1})) != [], "the renamed view reads the renamed collection"
    assert not [n for n in mongo_client.list_database_names() if "_vf_" in n]


def test_rename_with_namespaces_and_two_databases_into_one(mongo_source, mongo_client, tmp_path, dropped):
    sources = ["vf_rn_a", "vf_rn_b"]
    dropped += [*sources, "vf_rn_all"]
    for i, name in enumerate(sources):
        mongo_client[name].people.insert_many([{"_id": n, "who": f"{name} {n}"} for n in range(30 + i)])
        mongo_client[name].other.insert_one({"_id": 1})
    states = {name: mongo_state(mongo_client, name) for name in sources}
    engine = target_for(mongo_source, sources, name="rn").engine()
    ctx = context(tmp_path)
    manifest = engine.full_backup(ctx)

    result = restore(engine, ctx, manifest, namespaces=["*.people"], rename={"*.people": "vf_rn_all.people_*"})
    assert result.comparison.ok, result.comparison.summary()
    assert result.restored == {
        "vf_rn_a.people": "vf_rn_all.people_vf_rn_a",
        "vf_rn_b.people": "vf_rn_all.people_vf_rn_b",
    }
    expected = {
        **renamed_state(states["vf_rn_a"], {"people": "people_vf_rn_a"}),
        **renamed_state(states["vf_rn_b"], {"people": "people_vf_rn_b"}),
    }
    assert mongo_differences(expected, mongo_state(mongo_client, "vf_rn_all")) == []

    with pytest.raises(ConfigError, match=r"both vf_rn_a\.people and vf_rn_b\.people to vf_rn_all\.people"):
        restore(
            engine, ctx, manifest, rename={"vf_rn_a.people": "vf_rn_all.people", "vf_rn_b.people": "vf_rn_all.people"}
        )
    with pytest.raises(ConfigError, match="rename 'vf_rn_a.*' -> 'x': use at most one"):
        restore(engine, ctx, manifest, rename={"vf_rn_a.*": "x"})
    with pytest.raises(ConfigError, match="into='x' and rename both"):
        engine.restore(
            ctx, manifest, into="x", databases=["vf_rn_a"], options=MongoRestoreOptions(rename={"a.*": "b.*"})
        )
    with pytest.raises(RefusedError, match="'vf_rn_all' already exists"):
        restore(engine, ctx, manifest, namespaces=["*.people"], rename={"*.people": "vf_rn_all.people_*"})


def test_hostile_names_rename(mongo_source, mongo_client, tmp_path, dropped):
    source, into = "vf_ünïcødé_rn", "vf_kopie_ü"
    dropped += [source, into]
    mongo_client[source]["coll with spaces.and.dots"].insert_many([{"_id": i, "v": "é" * i} for i in range(20)])
    mongo_client[source]["ünï.cöll"].insert_many([{"_id": "ß", "n": 1}, {"_id": "∂", "n": 2}])
    mongo_client[source].command({"create": "vue ü", "viewOn": "ünï.cöll", "pipeline": [{"$match": {"n": 2}}]})
    state = mongo_state(mongo_client, source)
    engine = target_for(mongo_source, [source], name="hostile").engine()
    ctx = context(tmp_path)
    manifest = engine.full_backup(ctx)

    rename = {f"{source}.coll with spaces.and.dots": f"{into}.renamed coll.x", f"{source}.*": f"{into}.*"}
    result = restore(engine, ctx, manifest, rename=rename)
    assert result.comparison.ok, result.comparison.summary()
    names = {"coll with spaces.and.dots": "renamed coll.x", "ünï.cöll": "ünï.cöll", "vue ü": "vue ü"}
    assert mongo_differences(renamed_state(state, names), mongo_state(mongo_client, into)) == []
    assert [d["_id"] for d in mongo_client[into]["vue ü"].find()] == ["∂"]
