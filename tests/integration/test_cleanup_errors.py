"""With the S3 server gone mid-backup, the cleanup fails too: the user must still see the upload
error (the cleanup failure logged and noted on it), never the cleanup's own error."""

from __future__ import annotations

import socket

import pytest
from botocore.config import Config

from vaultflow.errors import StoreUnavailableError
from vaultflow.repository import Repository
from vaultflow.stores import S3Store, put_bytes
from vaultflow.stores.base import BytesReader
from vaultflow.testing.s3_server import S3Instance

BACKUP = "20261126T020000.000Z-F"


@pytest.fixture
def repo(s3_server: S3Instance, s3_bucket: str) -> Repository:
    return Repository(S3Store(s3_server.client(), s3_bucket, prefix="repo"))


def server_gone(repo: Repository, s3_server: S3Instance) -> None:
    """Point the store at an address where nothing listens: what the client sees once the
    server died (connection refused), without stopping the session's shared server."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    repo.store.client = s3_server.client(
        endpoint_url=f"http://127.0.0.1:{port}", config=Config(retries={"max_attempts": 1}, connect_timeout=5)
    )


def failing_upload(repo: Repository) -> None:
    repo.store.put(f"pg/t/backups/{BACKUP}/db/shop.dump.zst", BytesReader(b"x" * 1000))


def test_lock_release_failure_does_not_replace_the_upload_error(repo: Repository, s3_server: S3Instance) -> None:
    logged: list[str] = []
    with pytest.raises(StoreUnavailableError) as info:
        with repo.locked("pg", "t", log=logged.append):
            server_gone(repo, s3_server)
            failing_upload(repo)
    assert "shop.dump.zst" in str(info.value) and "lock" not in str(info.value)
    assert len(logged) == 1 and "could not release the lock" in logged[0] and "pg/t/locks/backup-" in logged[0]
    assert info.value.__notes__ == logged


def test_payload_cleanup_failure_does_not_replace_the_upload_error(repo: Repository, s3_server: S3Instance) -> None:
    logged: list[str] = []
    with pytest.raises(StoreUnavailableError) as info:
        with repo.uncommitted("pg", "t", BACKUP, log=logged.append):
            put_bytes(repo.store, f"pg/t/backups/{BACKUP}/globals.sql.zst", b"roles")
            server_gone(repo, s3_server)
            failing_upload(repo)
    assert "shop.dump.zst" in str(info.value)
    assert len(logged) == 1 and f"partial payload of backup {BACKUP}" in logged[0] and "prune" in logged[0]
    assert info.value.__notes__ == logged
