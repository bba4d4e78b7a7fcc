"""The SecantusDB launcher (vaultflow.testing.mongo_server) and the MongoDB fixtures."""

from __future__ import annotations

import os
import socket
import stat

import psutil
import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from tests.fixtures.processes import is_gone
from tests.fixtures.scratch import in_temp_roots
from vaultflow.errors import RefusedError, ToolError
from vaultflow.testing import mongo_server
from vaultflow.testing.mongo_server import (
    OPLOG_MAX_ENTRIES,
    MongoProcess,
    running_mongo,
    scratch_database,
    start_mongo,
)
from vaultflow.testing.unprivileged import SERVICE_USER, ensure_service_user, running_as_root

pytestmark = pytest.mark.timeout(120)


def oplog_options(client: MongoClient) -> dict:
    (info,) = client.local.command("listCollections", filter={"name": "oplog.rs"})["cursor"]["firstBatch"]
    return info["options"]


def test_source_answers_and_keeps_its_oplog(mongo_source: MongoProcess, fresh_mongo_db: str) -> None:
    with mongo_source.client() as client:
        hello = client.admin.command("hello")
        assert hello["isWritablePrimary"] is True
        assert hello["me"] == f"127.0.0.1:{mongo_source.port}"
        client[fresh_mongo_db].docs.insert_many([{"_id": i} for i in range(3)])
        assert client[fresh_mongo_db].docs.count_documents({}) == 3
        # our limits, not SecantusDB's defaults (100,000 entries)
        assert oplog_options(client)["max"] == OPLOG_MAX_ENTRIES
    assert mongo_source.uri == f"mongodb://127.0.0.1:{mongo_source.port}/?directConnection=true"
    with MongoClient(mongo_source.uri, serverSelectionTimeoutMS=5000) as by_uri:
        assert by_uri[fresh_mongo_db].docs.count_documents({}) == 3


def test_directory_is_private_and_belongs_to_the_server(mongo_source: MongoProcess) -> None:
    info = mongo_source.directory.stat()
    assert stat.S_IMODE(info.st_mode) == 0o700
    owner = ensure_service_user()
    expected_uid = owner.pw_uid if owner else os.geteuid()
    assert info.st_uid == expected_uid
    assert mongo_source.data_dir.stat().st_uid == expected_uid  # created by the server itself
    assert (mongo_source.data_dir / "WiredTiger").exists()


def test_server_does_not_run_as_root(mongo_source: MongoProcess) -> None:
    assert mongo_source.pid is not None
    server = psutil.Process(mongo_source.pid)
    with mongo_source.client() as client:
        assert client.admin.command("serverStatus")["pid"] == server.pid  # the process that answers
    if running_as_root():
        assert 0 not in server.uids()
        assert server.username() == SERVICE_USER
    else:
        assert server.uids().effective == os.geteuid()


def test_password_is_required_and_checked(mongo_with_password: MongoProcess) -> None:
    server = mongo_with_password
    assert server.username and server.password
    assert server.password not in server.uri and server.password not in repr(server)
    with server.client() as client:
        status = client.admin.command("connectionStatus")
        assert status["authInfo"]["authenticatedUsers"] == [{"user": server.username, "db": "admin"}]
        client.probe.docs.insert_one({"_id": 1})
    with server.client(password="not-" + server.password) as wrong:
        with pytest.raises(OperationFailure) as refused:
            wrong.probe.docs.find_one()
        assert refused.value.code == 18  # AuthenticationFailed
    with server.client(username=None, password=None) as anonymous:
        anonymous.admin.command("ping")  # handshake commands need no login
        with pytest.raises(OperationFailure) as refused:
            anonymous.probe.docs.find_one()
        assert refused.value.code == 13  # Unauthorized


def test_two_servers_side_by_side(mongo_source: MongoProcess, fresh_mongo_db: str) -> None:
    with running_mongo("second") as second:
        assert second.port != mongo_source.port
        assert second.directory != mongo_source.directory
        with mongo_source.client() as one, second.client() as two:
            one[fresh_mongo_db].docs.insert_one({"_id": "first"})
            two[fresh_mongo_db].docs.insert_one({"_id": "second"})
            assert [d["_id"] for d in one[fresh_mongo_db].docs.find()] == ["first"]
            assert [d["_id"] for d in two[fresh_mongo_db].docs.find()] == ["second"]


def test_restart_keeps_port_data_and_users() -> None:
    with running_mongo("restart", auth_user=("admin", "pw-" + os.urandom(6).hex())) as server:
        with server.client() as client:
            client.keep.docs.insert_many([{"_id": i, "v": "x" * 100} for i in range(500)])
        port, pid = server.port, server.pid
        server.restart()
        assert server.port == port
        assert server.pid != pid and not psutil.pid_exists(pid)  # really stopped and started again
        with server.client() as client:
            assert client.keep.docs.count_documents({}) == 500
        with server.client(password="wrong") as wrong, pytest.raises(OperationFailure):
            wrong.keep.docs.find_one()


def test_directory_and_process_are_gone_after_exit() -> None:
    with running_mongo("gone") as server:
        directory, pid = server.directory, server.pid
        assert directory.is_dir() and pid is not None
        process = psutil.Process(pid)
    assert not directory.exists()
    assert is_gone(process)
    server.destroy()  # idempotent


def test_server_that_cannot_start_fails_with_its_log() -> None:
    before = in_temp_roots("vfmongo-broken-*")
    with pytest.raises(ToolError) as failed:
        start_mongo("broken", extra_args=("--cache-size", "lots"))
    message = str(failed.value)
    assert "exited with code 1" in message
    assert "Invalid value for key 'cache_size'" in message  # WiredTiger's own words, from the log
    assert in_temp_roots("vfmongo-broken-*") == before  # its directory was removed


def test_a_port_in_use_is_refused() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(RefusedError, match="already in use"):
            start_mongo("busy", port=busy.getsockname()[1])


def test_a_port_lost_to_another_process_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    """free_port() may hand out a port someone else binds before the server does: the launcher
    sees the bind error in the log and tries another port."""
    with socket.socket() as thief:
        thief.bind(("127.0.0.1", 0))
        thief.listen()
        taken = thief.getsockname()[1]
        ports = iter([taken])
        real_free_port = mongo_server.free_port
        monkeypatch.setattr(mongo_server, "free_port", lambda host="127.0.0.1": next(ports, None) or real_free_port())
        with running_mongo("race") as server:
            assert server.port != taken
            assert "Address already in use" in server.log_tail(200)
            with server.client() as client:
                client.admin.command("ping")


def test_scratch_database_is_dropped(mongo_client: MongoClient) -> None:
    with scratch_database(mongo_client, "scratch") as name:
        assert name.startswith("scratch_")
        mongo_client[name].docs.insert_one({"_id": 1})
        assert name in mongo_client.list_database_names()
    assert name not in mongo_client.list_database_names()
