"""MongoDB connections (pymongo) and what errors mean for retrying.

The password goes to the driver as a keyword, in memory: never a URI string that could be logged,
never argv or an environment (nothing here starts a process).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pymongo
from bson import CodecOptions, Timestamp
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient
from pymongo import errors as mongo_errors

from vaultflow.engines.mongodb.settings import SYSTEM_DATABASES, MongoSettings, namespace_matches
from vaultflow.errors import AuthenticationError, ConfigError, ServerUnavailableError, TransientError, VaultflowError

RAW = CodecOptions(document_class=RawBSONDocument)  # documents as the server sent them, undecoded
OPLOG_NS = ("local", "oplog.rs")

# Server error codes (src/mongo/base/error_codes.yml) that are worth a retry.
TRANSIENT_CODES = {
    6: "HostUnreachable",
    7: "HostNotFound",
    89: "NetworkTimeout",
    91: "ShutdownInProgress",
    189: "PrimarySteppedDown",
    10107: "NotWritablePrimary",
    11600: "InterruptedAtShutdown",
    11602: "InterruptedDueToReplStateChange",
    13435: "NotPrimaryNoSecondaryOk",
}
AUTH_CODES = {18: "AuthenticationFailed", 13: "Unauthorized"}


def client_for(settings: MongoSettings, *, codec_options: CodecOptions | None = None) -> MongoClient:
    """A MongoClient for the target, not yet connected (pymongo connects lazily). `directConnection`
    for one host so a single member answers even when its replica set names other hosts. Raises
    ConfigError for a username without a password (SCRAM needs one; pymongo would fail later
    with an IndexError)."""
    if settings.username and not settings.password:
        raise ConfigError(
            f"no password for MongoDB user {settings.username!r} at {settings.where}: set VAULTFLOW_PASSWORD "
            "(a mongodb:// URL target) or the MongoTarget's password; a server without authentication "
            "needs no username"
        )
    kwargs: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "directConnection": True,
        "serverSelectionTimeoutMS": int(settings.connect_timeout * 1000),
        "connectTimeoutMS": int(settings.connect_timeout * 1000),
        "readPreference": settings.read_preference,
        "appname": "vaultflow",
        "tls": settings.tls,
        "retryReads": True,
    }
    if settings.tls and settings.tls_ca_file:
        kwargs["tlsCAFile"] = settings.tls_ca_file
    if settings.username:
        kwargs.update(
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else "",
            authSource=settings.auth_source,
        )
    if codec_options is not None:
        kwargs["document_class"] = codec_options.document_class
    return MongoClient(**kwargs)


@contextmanager
def connected(settings: MongoSettings) -> Iterator[MongoClient]:
    """A client that has answered `hello` (and authenticated), closed at the end. Driver errors
    inside the block come out classified (see classify_error)."""
    client = client_for(settings)
    try:
        try:
            client.admin.command("ping")
        except mongo_errors.PyMongoError as exc:
            raise classify_error(exc, settings) from exc
        try:
            yield client
        except mongo_errors.PyMongoError as exc:
            raise classify_error(exc, settings) from exc
    finally:
        client.close()


def classify_error(exc: Exception, settings: MongoSettings) -> VaultflowError:
    """A driver error as a VaultflowError that says what is wrong and whether retrying helps:
    AuthenticationError (wrong credentials, missing role: permanent), ServerUnavailableError or
    TransientError (unreachable, stepping down: retryable), else VaultflowError."""
    text = str(exc).split(", full error:")[0]
    who = f"user {settings.username!r} (authSource {settings.auth_source})" if settings.username else "no user"
    code = getattr(exc, "code", None)
    if isinstance(exc, mongo_errors.OperationFailure) and code == 18:
        return AuthenticationError(
            f"MongoDB at {settings.where} refused the login of {who}: {settings.login_hint('auth_source')} ({text})"
        )
    if isinstance(exc, mongo_errors.OperationFailure) and code == 13 and not settings.username:
        return AuthenticationError(
            f"MongoDB at {settings.where} requires authentication ({text}): give a user with the built-in "
            f"'backup' role (restores: 'restore') and its password ({settings.login_hint()}), see docs/mongodb.md"
        )
    if isinstance(exc, mongo_errors.OperationFailure) and code == 13:
        return AuthenticationError(
            f"MongoDB at {settings.where}: {who} is not allowed to do this ({text}); give it the "
            "built-in 'backup' role (restores: 'restore'), see docs/mongodb.md — retrying will not help"
        )
    if isinstance(exc, mongo_errors.ConfigurationError) and "auth" in text.lower():
        return AuthenticationError(f"MongoDB at {settings.where}: {text}")
    if isinstance(exc, mongo_errors.ServerSelectionTimeoutError):
        text = text.split(", Timeout:")[0]  # not the driver's whole topology description
    if isinstance(exc, mongo_errors.ServerSelectionTimeoutError | mongo_errors.AutoReconnect):
        return ServerUnavailableError(
            f"cannot reach MongoDB at {settings.where} within connect_timeout={settings.connect_timeout:g} s "
            f"({text}): check the MongoTarget's host, port and tls, and that the server is running. This is "
            "transient: a Prefect run retries it (docs/tasks.md, Retries)"
        )
    if isinstance(exc, mongo_errors.OperationFailure) and code in TRANSIENT_CODES:
        return TransientError(f"MongoDB at {settings.where}: {TRANSIENT_CODES[code]} ({text}); retry later")
    if isinstance(exc, mongo_errors.ConnectionFailure):
        return ServerUnavailableError(f"MongoDB at {settings.where}: connection lost ({text})")
    return VaultflowError(f"MongoDB at {settings.where}: {text}")


def server_facts(client: MongoClient) -> dict[str, Any]:
    """{'version': buildInfo version, 'set_name': hello.setName or None}."""
    hello = client.admin.command("hello")
    return {"version": str(client.admin.command("buildInfo")["version"]), "set_name": hello.get("setName")}


def newest_oplog_ts(client: MongoClient) -> Timestamp:
    """The newest entry's ts in local.oplog.rs. Raises VaultflowError naming the server when it
    keeps no oplog (not a replica set member: start mongod with --replSet)."""
    entry = client[OPLOG_NS[0]][OPLOG_NS[1]].find_one({}, {"ts": 1}, sort=[("$natural", pymongo.DESCENDING)])
    if entry is None:
        address = client.address
        raise VaultflowError(
            f"MongoDB at {address[0]}:{address[1] if address else ''} keeps no oplog (local.oplog.rs is "
            "missing or empty): vaultflow needs a replica set member, even a single-node one (--replSet)"
        )
    return entry["ts"]


def oldest_oplog_ts(client: MongoClient) -> Timestamp | None:
    """The oldest entry's ts still in local.oplog.rs (None when it is empty)."""
    entry = client[OPLOG_NS[0]][OPLOG_NS[1]].find_one({}, {"ts": 1}, sort=[("$natural", pymongo.ASCENDING)])
    return None if entry is None else entry["ts"]


def user_databases(client: MongoClient, settings: MongoSettings) -> list[str]:
    """The databases a backup of the target includes, sorted: `databases`, else every database
    but admin, local and config. Raises VaultflowError naming a listed database the server lacks."""
    present = sorted(client.list_database_names())
    if settings.databases:
        missing = [name for name in settings.databases if name not in present]
        if missing:
            raise VaultflowError(
                f"MongoDB at {settings.where} has no database {', '.join(map(repr, missing))} "
                f"(it has: {', '.join(n for n in present if n not in SYSTEM_DATABASES) or 'none'}); "
                f"fix {settings.setting_hint('databases')}"
            )
        return sorted(settings.databases)
    return [name for name in present if name not in SYSTEM_DATABASES]


def excluded(settings: MongoSettings, database: str, collection: str) -> bool:
    """Whether `database.collection` matches one of exclude_collections (exact or glob)."""
    return namespace_matches(settings.exclude_collections, database, collection)
