"""The blocks follow Prefect's standards and keep secrets secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr, ValidationError

from blocks import BackupRepository, PostgresTarget
from blocks._common import LOGO_PATH, LOGO_URL
from vaultflow.stores.local import LocalStore

ROOT = Path(__file__).resolve().parents[2]


class _StandardSuite(BlockStandardTestSuite):
    def test_has_a_valid_image(self, block) -> None:
        # The suite downloads the logo; this machine has no internet, so check the file the
        # URL serves: it is committed in this repository.
        assert block._logo_url == LOGO_URL and LOGO_URL.endswith(LOGO_PATH)
        img = Image.open(ROOT / LOGO_PATH)
        assert img.width == img.height, "Logo should be a square image"
        assert 1000 > img.width > 45


class TestPostgresTargetStandards(_StandardSuite):
    @pytest.fixture
    def block(self):
        return PostgresTarget


class TestBackupRepositoryStandards(_StandardSuite):
    @pytest.fixture
    def block(self):
        return BackupRepository


def test_password_is_a_secret_everywhere():
    target = PostgresTarget(host="db.example", password=SecretStr("hunter2-secret"), target_name="prod")
    assert "hunter2-secret" not in repr(target)
    assert "hunter2-secret" not in target.model_dump_json()
    assert "hunter2-secret" not in repr(target.to_config())
    assert target.to_config().password.get_secret_value() == "hunter2-secret"
    assert target.to_config().name == "prod"


def test_target_name_defaults_to_host_and_port():
    assert PostgresTarget(host="db1", port=5433).name == "db1-5433"


def test_repository_needs_a_store():
    with pytest.raises(ValidationError, match="needs local_path, s3_bucket, or both"):
        BackupRepository()


def test_repository_refuses_a_policy_that_keeps_nothing(tmp_path):
    repo = BackupRepository(local_path=str(tmp_path), keep_last=None, keep_daily=None, keep_weekly=None,
                            keep_monthly=None, keep_yearly=None, keep_within=None)
    with pytest.raises(ValidationError, match="keeps nothing"):
        repo.retention_policy()


def test_local_repository_builds_a_local_store(tmp_path):
    repo = BackupRepository(local_path=str(tmp_path / "r"), compression_level=7).build()
    assert isinstance(repo.store, LocalStore) and repo.compression_level == 7
