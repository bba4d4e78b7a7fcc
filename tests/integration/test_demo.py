"""`make demo` end to end (its PostgreSQL and Redis halves), through the session's Prefect API."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from vaultflow.demo import run_demo

pytestmark = pytest.mark.usefixtures("prefect_api")


def test_demo_backs_up_and_restores_postgres_and_redis(tmp_path: Path):
    out = io.StringIO()
    code = run_demo(str(tmp_path / "demo"), 300, Console(file=out, width=200))
    text = out.getvalue()
    assert code == 0, text
    assert "demo OK" in text and "seed rows identical" in text and "seed keys identical" in text
    repository = tmp_path / "demo" / "repository"
    manifests = sorted(p.relative_to(repository).parts[0] for p in repository.rglob("manifest.json"))
    assert manifests == ["postgres", "redis", "redis"], "one PostgreSQL full, a Redis full and incremental"
