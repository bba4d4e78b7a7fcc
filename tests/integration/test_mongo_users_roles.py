"""Users and roles in full MongoDB backups: recorded in each database's archive as mongodump
--dumpDbUsersAndRoles writes them, counted in the manifest, and recreated (opt-in) on the restored
database with their references rewritten, against SecantusDB with --auth."""

from __future__ import annotations

import bson
import pytest
import zstandard

from tests.corpus.oracle import mongo_differences, mongo_state
from tests.integration.test_mongo_engine import context, target_for
from vaultflow.engines.mongodb.archive import ArchiveReader
from vaultflow.engines.mongodb.settings import MongoRestoreOptions
from vaultflow.errors import RefusedError

DB, COPY = "vf_auth_app", "vf_auth_copy"


def archive_namespaces(tmp_path, ctx, manifest) -> list[tuple[str, list[dict]]]:
    """(collection, documents) of the backup's one archive, in archive order."""
    (obj,) = manifest.objects
    path = tmp_path / "repo" / ctx.repository.backup_prefix("mongodb", manifest.target, manifest.id) / obj.key
    seen: dict[str, list[dict]] = {}
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as plain:
        for _db, collection, document in ArchiveReader(plain, name=obj.key):
            seen.setdefault(collection, []).append(bson.decode(document))
    return list(seen.items())


@pytest.fixture
def app(mongo_with_password):
    """DB on the --auth server with documents, two custom roles (one inheriting the other) and
    two users; everything dropped after the test."""
    with mongo_with_password.client() as client:
        db = client[DB]
        db.orders.insert_many([{"_id": i, "total": i * 2} for i in range(40)])
        db.command(
            "createRole",
            "reporter",
            privileges=[{"resource": {"db": DB, "collection": "orders"}, "actions": ["find"]}],
            roles=[{"role": "read", "db": DB}],
        )
        db.command("createRole", "auditor", privileges=[], roles=[{"role": "reporter", "db": DB}])
        db.command("createUser", "alice", pwd="alice-pw", roles=[{"role": "readWrite", "db": DB}, "auditor"])
        db.command("createUser", "bob", pwd="bob-pw", roles=[{"role": "reporter", "db": DB}])
        yield client
        for name in (DB, COPY):
            client[name].command("dropAllUsersFromDatabase")
            client[name].command("dropAllRolesFromDatabase")
            client.drop_database(name)


def users_of(client, database):
    found = client[database].command("usersInfo", 1)["users"]
    return {u["user"]: sorted((r["role"], r["db"]) for r in u["roles"]) for u in found}


def test_users_and_roles_round_trip(mongo_with_password, app, tmp_path):
    server = mongo_with_password
    engine = target_for(server, [DB], name="auth", username=server.username, password=server.password).engine()
    ctx = context(tmp_path)
    manifest = engine.full_backup(ctx)
    prints = manifest.fingerprints[DB]
    assert (prints["$admin.system.users"].count, prints["$admin.system.roles"].count) == (2, 2)

    spaces = archive_namespaces(tmp_path, ctx, manifest)
    assert [name for name, _ in spaces[:2]] == ["$admin.system.users", "$admin.system.roles"], "auth comes first"
    users = dict(spaces)["$admin.system.users"]
    assert [(u["_id"], u["db"]) for u in users] == [(f"{DB}.alice", DB), (f"{DB}.bob", DB)]
    assert all("SCRAM-SHA-256" in u["credentials"] for u in users), "root may read the hashes"
    assert {r["_id"] for r in dict(spaces)["$admin.system.roles"]} == {f"{DB}.auditor", f"{DB}.reporter"}

    source = mongo_state(app, DB)
    plain = engine.restore(ctx, manifest, options=MongoRestoreOptions(rename={f"{DB}.*": f"{COPY}.*"}))
    assert plain.comparison.ok and users_of(app, COPY) == {}, "users are restored only when asked"
    app.drop_database(COPY)

    options = MongoRestoreOptions(rename={f"{DB}.*": f"{COPY}.*"}, users_and_roles=True)
    result = engine.restore(ctx, manifest, options=options)
    assert result.comparison.ok, result.comparison.summary()
    assert "(users and roles)" in [row["table"] for row in result.comparison.rows()]
    assert mongo_differences(source, mongo_state(app, COPY)) == []
    assert users_of(app, COPY) == {
        "alice": [("auditor", COPY), ("readWrite", COPY)],
        "bob": [("reporter", COPY)],
    }
    roles = {r["role"]: r for r in app[COPY].command("rolesInfo", 1, showPrivileges=True)["roles"]}
    assert roles["reporter"]["privileges"] == [{"resource": {"db": COPY, "collection": "orders"}, "actions": ["find"]}]
    assert [(r["role"], r["db"]) for r in roles["auditor"]["roles"]] == [("reporter", COPY)]
    # SecantusDB takes no password hashes (no _mergeAuthzCollections): the users got random passwords
    assert len(result.notes) == 2 and all("random password" in note for note in result.notes)
    assert users_of(app, DB) == {"alice": [("auditor", DB), ("readWrite", DB)], "bob": [("reporter", DB)]}

    # users outlive their database: a second restore onto it is refused, naming them, changing nothing
    before = mongo_state(app, COPY)
    with pytest.raises(RefusedError, match="user 'alice', user 'bob', role 'auditor', role 'reporter' already exist"):
        engine.restore(ctx, manifest, overwrite=True, options=options)
    assert mongo_state(app, COPY) == before


def test_a_backup_role_records_users_without_hashes(mongo_with_password, app, tmp_path):
    server = mongo_with_password
    app.admin.command("createUser", "vf-backup-only", pwd="b-pw", roles=["backup"])
    try:
        engine = target_for(server, [DB], name="auth2", username="vf-backup-only", password="b-pw").engine()
        ctx = context(tmp_path)
        manifest = engine.full_backup(ctx)
    finally:
        app.admin.command("dropUser", "vf-backup-only")
    users = dict(archive_namespaces(tmp_path, ctx, manifest))["$admin.system.users"]
    assert [u["user"] for u in users] == ["alice", "bob"]
    assert not any("credentials" in u for u in users), "admin.system.users on SecantusDB shows no hashes"
    # SecantusDB keeps custom roles out of admin.system.roles, and `backup` may not run rolesInfo
    assert manifest.fingerprints[DB]["$admin.system.roles"].count == 0
