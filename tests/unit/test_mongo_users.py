"""Users and roles rewritten for the database they are restored into (users.py), without a server."""

from __future__ import annotations

from vaultflow.engines.mongodb.users import USER_FIELDS, AuthRenamer, _dependency_order, _shaped


def renamer() -> AuthRenamer:
    landed = {("app", "orders"): ("app_copy", "orders_v2"), ("web", "log"): ("logs", "web")}
    return AuthRenamer({"app": "app_copy", "web": "web_copy"}, lambda db, coll: landed.get((db, coll)))


def test_users_move_with_their_role_bindings_and_lose_their_user_id():
    user = {
        "_id": "app.alice",
        "userId": "uuid",
        "user": "alice",
        "db": "app",
        "credentials": {"SCRAM-SHA-256": {"iterationCount": 15000}},
        "roles": [{"role": "readWrite", "db": "app"}, {"role": "read", "db": "web"}, {"role": "root", "db": "admin"}],
    }
    moved = renamer().user(user)
    assert moved["_id"] == "app_copy.alice" and moved["db"] == "app_copy" and "userId" not in moved
    assert moved["roles"] == [
        {"role": "readWrite", "db": "app_copy"},
        {"role": "read", "db": "web_copy"},  # another database of the same restore
        {"role": "root", "db": "admin"},  # not restored: left as it was
    ]
    assert moved["credentials"] == user["credentials"]


def test_role_privileges_follow_renamed_collections_and_databases():
    role = {
        "_id": "app.reporter",
        "role": "reporter",
        "db": "app",
        "privileges": [
            {"resource": {"db": "app", "collection": "orders"}, "actions": ["find"]},
            {"resource": {"db": "app", "collection": ""}, "actions": ["find"]},
            {"resource": {"db": "web", "collection": "log"}, "actions": ["find"]},  # landed outside web_copy
            {"resource": {"cluster": True}, "actions": ["serverStatus"]},
        ],
        "roles": [{"role": "base", "db": "app"}],
    }
    moved = renamer().role(role)
    assert [p["resource"] for p in moved["privileges"]] == [
        {"db": "app_copy", "collection": "orders_v2"},
        {"db": "app_copy", "collection": ""},
        {"db": "web_copy", "collection": "log"},
        {"cluster": True},
    ]
    assert moved["_id"] == "app_copy.reporter" and moved["roles"] == [{"role": "base", "db": "app_copy"}]


def test_inherited_roles_are_created_first():
    roles = [
        {"role": "top", "roles": [{"role": "mid", "db": "d"}]},
        {"role": "mid", "roles": [{"role": "base", "db": "d"}, {"role": "read", "db": "d"}]},
        {"role": "base", "roles": []},
    ]
    assert [r["role"] for r in _dependency_order(roles, "d")] == ["base", "mid", "top"]


def test_users_info_answers_are_stored_as_admin_system_users_documents():
    answer = {"user": "bob", "db": "app", "roles": [], "mechanisms": ["SCRAM-SHA-256"], "credentials": {}}
    assert list(_shaped(answer, USER_FIELDS).items()) == [
        ("_id", "app.bob"),
        ("user", "bob"),
        ("db", "app"),
        ("credentials", {}),
        ("roles", []),
    ]
