"""A database's users and user-defined roles: recorded in its backup archive as mongodump
--dumpDbUsersAndRoles writes them, and recreated on a restored database when asked.

**In the archive** (mongo-tools mongodump/prepare.go CreateUsersRolesVersionIntentsForDB,
mongodump.go DumpUsersAndRolesForDB): namespaces `<db>.$admin.system.users` and
`<db>.$admin.system.roles`, declared in the prelude with empty metadata and type, their
documents written before every other collection's (mongorestore reads them off the front of the
archive); each document is one `admin.system.users` / `admin.system.roles` document of the
database: `{_id: "<db>.<user>", userId?, user, db, credentials?, roles: [{role, db}],
customData?, authenticationRestrictions?}` and `{_id: "<db>.<role>", role, db, privileges:
[{resource, actions}], roles, authenticationRestrictions?}`. Written only when the database has
some (an archive of a database without users is unchanged). The manifest's fingerprints carry
them under the same names: count and digest of the documents as written. mongodump's
`$admin.system.version` (the auth schema) is not written: mongorestore assumes schema 3 for
--restoreDbUsersAndRoles without it, and needs none for servers 8.1+.

**Read at backup** (what the backing-up role allows; never an error when it allows nothing):
`usersInfo` with showCredentials (needs viewUser: hashes included), else `find` on
admin.system.users (mongod's `backup` role: hashes included; SecantusDB: a view without them);
`rolesInfo` with showPrivileges (viewRole), else `find` on admin.system.roles. Neither
readable: nothing is recorded and the manifest has no fingerprint for them.

**Restore** (opt-in, MongoRestoreOptions.users_and_roles): each source database's users and
roles are created on the database its collections were restored into, references to the source
database (and to other databases of the same restore) rewritten to their targets: role
bindings, inherited roles, privilege resources. Nothing existing is replaced: a user or role
already on the target is an error naming it, found before any data is written. Roles by
`createRole` (inherited ones first); users with their password hashes by
`_mergeAuthzCollections` from `admin.tempusers` (what mongorestore does; mongod only), else (the
server has no such command, or the backup holds no hashes) by `createUser` with a random
password nobody is told: the user exists with its roles and needs `updateUser` with a new
password; the restore's notes name each such user.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from bson import SON, json_util
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from vaultflow.compare import TableComparison
from vaultflow.errors import RefusedError

USERS = "$admin.system.users"
ROLES = "$admin.system.roles"
AUTH_NAMESPACES = (USERS, ROLES)
AUTH_ROW = "(users and roles)"  # the comparison row of a database's users and roles
UNAUTHORIZED = 13
COMMAND_NOT_FOUND = 59
TEMP_USERS = "tempusers"  # mongorestore's --tempUsersColl default: what the built-in restore role may write
USER_FIELDS = ("_id", "userId", "user", "db", "credentials", "roles", "customData", "authenticationRestrictions")
ROLE_FIELDS = ("_id", "role", "db", "privileges", "roles", "authenticationRestrictions")
SCRAM = ("SCRAM-SHA-1", "SCRAM-SHA-256")


# -- backup -------------------------------------------------------------------------------------


def read_auth(client: MongoClient, database: str) -> dict[str, list[SON]]:
    """{USERS: [...], ROLES: [...]}: the users and user-defined roles of `database` as
    admin.system.users / admin.system.roles documents, sorted by _id; a kind the connected user
    may not read is left out (module docstring)."""
    found: dict[str, list[SON]] = {}
    users = _first_readable(
        lambda: client[database].command({"usersInfo": 1, "showCredentials": True, "showCustomData": True})["users"],
        lambda: list(client.admin["system.users"].find({"db": database})),
    )
    if users is not None:
        found[USERS] = sorted((_shaped(u, USER_FIELDS) for u in users), key=lambda d: str(d["_id"]))
    roles = _first_readable(
        lambda: client[database].command(
            {"rolesInfo": 1, "showPrivileges": True, "showBuiltinRoles": False, "showAuthenticationRestrictions": True}
        )["roles"],
        lambda: list(client.admin["system.roles"].find({"db": database})),
    )
    if roles is not None:
        found[ROLES] = sorted((_shaped(r, ROLE_FIELDS) for r in roles), key=lambda d: str(d["_id"]))
    return found


def _first_readable(*readers: Callable[[], list[Mapping[str, Any]]]) -> list[Mapping[str, Any]] | None:
    for read in readers:
        try:
            return read()
        except OperationFailure as exc:
            if exc.code != UNAUTHORIZED:
                raise
    return None


def _shaped(document: Mapping[str, Any], fields: tuple[str, ...]) -> SON:
    """`document` as the admin.system.* collection stores it: its fields in `fields` order, an
    `_id` of '<db>.<name>', without what usersInfo/rolesInfo add (mechanisms, isBuiltin,
    inherited*), and without authenticationRestrictions when empty."""
    name = document.get("user", document.get("role"))
    shaped: SON = SON()
    for key in fields:
        if key == "_id":
            shaped["_id"] = document.get("_id") or f"{document['db']}.{name}"
        elif key in document and not (key == "authenticationRestrictions" and not document[key]):
            shaped[key] = document[key]
    return shaped


# -- restore ------------------------------------------------------------------------------------


class AuthRenamer:
    """Rewrites users and roles of source databases for their targets: `databases` maps each
    source database of the restore to where its users go; `collection(db, coll)` answers where a
    source collection landed ((db, coll) or None)."""

    def __init__(self, databases: Mapping[str, str], collection: Callable[[str, str], tuple[str, str] | None]):
        self.databases = dict(databases)
        self.collection = collection

    def database(self, name: Any) -> Any:
        return self.databases.get(name, name) if isinstance(name, str) else name

    def binding(self, role: Any) -> Any:
        if isinstance(role, Mapping):
            return {**role, "db": self.database(role.get("db"))}
        return role

    def resource(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        db, coll = resource.get("db"), resource.get("collection")
        if isinstance(db, str) and db in self.databases:
            landed = self.collection(db, coll) if isinstance(coll, str) and coll else None
            if landed is not None and landed[0] == self.databases[db]:
                return {**resource, "db": landed[0], "collection": landed[1]}
            return {**resource, "db": self.databases[db]}
        return dict(resource)

    def user(self, document: Mapping[str, Any]) -> dict[str, Any]:
        into = self.database(document["db"])
        renamed = {k: v for k, v in document.items() if k != "userId"}  # mongod mints a new one
        renamed.update(_id=f"{into}.{document['user']}", db=into, roles=[self.binding(r) for r in document["roles"]])
        return renamed

    def role(self, document: Mapping[str, Any]) -> dict[str, Any]:
        into = self.database(document["db"])
        privileges = [{**p, "resource": self.resource(p["resource"])} for p in document.get("privileges") or []]
        renamed = dict(document)
        renamed.update(
            _id=f"{into}.{document['role']}",
            db=into,
            roles=[self.binding(r) for r in document.get("roles") or []],
            privileges=privileges,
        )
        return renamed


def refuse_existing(client: MongoClient, database: str, users: list[dict], roles: list[dict]) -> None:
    """RefusedError naming every user and role of `users`/`roles` that already exists on
    `database`, or when the connected user may not look (viewUser/viewRole): nothing existing is
    ever replaced."""
    taken = []
    try:
        if users:
            found = client[database].command({"usersInfo": [{"user": u["user"], "db": database} for u in users]})
            taken += [f"user {u['user']!r}" for u in found["users"]]
        if roles:
            found = client[database].command({"rolesInfo": [{"role": r["role"], "db": database} for r in roles]})
            taken += [f"role {r['role']!r}" for r in found["roles"]]
    except OperationFailure as exc:
        if exc.code != UNAUTHORIZED:
            raise
        raise RefusedError(
            f"restoring users and roles into {database} needs to see which exist there (actions viewUser, viewRole; "
            "e.g. the userAdmin role on it), which the connected user may not: grant it, or restore without "
            "users_and_roles"
        ) from None
    if taken:
        raise RefusedError(
            f"{', '.join(taken)} already exist(s) on database {database}: vaultflow never replaces users or roles; "
            "drop them first (dropUser, dropRole), restore into another name, or restore without users_and_roles"
        )


def create_auth(client: MongoClient, database: str, users: list[dict], roles: list[dict]) -> list[str]:
    """Create `roles` (inherited ones of the same database first) and `users` on `database`
    (module docstring). Returns notes naming the users created without their password hashes.
    OperationFailure from the server as it comes (createUser/createRole refuse a name that
    exists, so nothing is replaced even then)."""
    for role in _dependency_order(roles, database):
        command = SON([("createRole", role["role"]), ("privileges", role.get("privileges") or [])])
        command["roles"] = role.get("roles") or []
        if role.get("authenticationRestrictions"):
            command["authenticationRestrictions"] = role["authenticationRestrictions"]
        client[database].command(command)
    with_hashes = [u for u in users if _scram(u)]
    why = "the backup holds no password hashes for it (the backing-up user could not read them)"
    notes: list[str] = []
    if with_hashes and not _merge_users(client, database, with_hashes):
        why = "the server takes no password hashes (no _mergeAuthzCollections)"
        with_hashes = []
    for user in users:
        if user in with_hashes:
            continue
        command = SON([("createUser", user["user"]), ("pwd", secrets.token_urlsafe(32))])
        command["roles"] = user["roles"]
        if _scram(user):
            command["mechanisms"] = _scram(user)
        for key in ("customData", "authenticationRestrictions"):
            if user.get(key):
                command[key] = user[key]
        client[database].command(command)
        notes.append(
            f"user {user['user']!r} on {database} was created with a random password, as {why}: "
            "set one with updateUser before it logs in"
        )
    return notes


def _scram(user: Mapping[str, Any]) -> list[str]:
    return [m for m in SCRAM if m in (user.get("credentials") or {})]


def _merge_users(client: MongoClient, database: str, users: list[dict]) -> bool:
    """Add `users` with their credentials the way mongorestore does (a temporary collection
    admin.tempusers merged by _mergeAuthzCollections, not dropping anything); False when the
    server has no _mergeAuthzCollections (nothing was added)."""
    temp = client.admin[TEMP_USERS]
    temp.drop()  # mongorestore drops a leftover one too
    try:
        temp.insert_many([dict(u) for u in users])
        client.admin.command(
            SON(
                [
                    ("_mergeAuthzCollections", 1),
                    ("tempUsersCollection", f"admin.{TEMP_USERS}"),
                    ("drop", False),
                    ("db", database),
                ]
            )
        )
    except OperationFailure as exc:
        if exc.code == COMMAND_NOT_FOUND:
            return False
        raise
    finally:
        temp.drop()
    return True


def _dependency_order(roles: list[dict], database: str) -> list[dict]:
    """`roles` ordered so a role comes after the roles of `database` it inherits."""
    pending = {r["role"]: r for r in roles}
    ordered: list[dict] = []
    while pending:
        ready = [
            name
            for name, role in pending.items()
            if not any(
                isinstance(b, Mapping) and b.get("db") == database and b.get("role") in pending
                for b in role.get("roles") or []
            )
        ]
        if not ready:  # a cycle MongoDB would not have let exist: the server reports it
            ready = list(pending)
        for name in ready:
            ordered.append(pending.pop(name))
    return ordered


def compare_auth(
    client: MongoClient, label: str, database: str, users: list[dict], roles: list[dict]
) -> TableComparison:
    """One row: the users (name, role bindings) and roles (privileges, inherited roles) of
    `database` named in `users`/`roles`, against those documents (passwords are not compared:
    they cannot be read back as they were written)."""
    expected = _auth_shapes(users, roles)
    found_users = (
        client[database].command({"usersInfo": [{"user": u["user"], "db": database} for u in users]})["users"]
        if users
        else []
    )
    found_roles = (
        client[database].command(
            {"rolesInfo": [{"role": r["role"], "db": database} for r in roles], "showPrivileges": True}
        )["roles"]
        if roles
        else []
    )
    actual = _auth_shapes(found_users, found_roles)
    status = "match" if expected == actual else "mismatch"
    return TableComparison(label, AUTH_ROW, len(expected), len(actual), status)


def _auth_shapes(users: Iterable[Mapping[str, Any]], roles: Iterable[Mapping[str, Any]]) -> set[str]:
    def canonical(value: Any) -> str:
        return json_util.dumps(value, sort_keys=True)

    def bindings(items: Any) -> list[str]:
        return sorted(canonical({"role": b["role"], "db": b["db"]}) for b in items or [])

    shapes = {canonical({"user": u["user"], "roles": bindings(u.get("roles"))}) for u in users}
    for r in roles:
        privileges = sorted(
            canonical({"resource": p["resource"], "actions": sorted(p["actions"])}) for p in r.get("privileges") or []
        )
        shapes.add(canonical({"role": r["role"], "roles": bindings(r.get("roles")), "privileges": privileges}))
    return shapes
