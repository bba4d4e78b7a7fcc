"""Helpers for corpus cases: an engine and a local repository for one test database."""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore


def pg_engine(server, databases: list[str] | None = None, name: str | None = None, **kw) -> PostgresEngine:
    """A logical PostgresEngine for the test server `server` (a PostgresInstance); `kw` may
    override any PostgresSettings field (user, password, lock_timeout_s, ...)."""
    settings = dict(
        target_name=name or f"corpus{server.version}",
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        databases=databases or [],
        bin_dir=str(server.client_bin_dir),
    )
    return PostgresEngine(PostgresSettings(**{**settings, **kw}))


@pytest.fixture
def corpus_ctx(tmp_path: Path) -> BackupContext:
    """A BackupContext over a fresh local repository; log lines are collected in ctx.log.lines."""
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)

    log.lines = lines  # type: ignore[attr-defined]
    return BackupContext(repository=Repository(LocalStore(tmp_path / "repo")), log=log)
