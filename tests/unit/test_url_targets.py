"""Connection URLs as target settings (TargetSettings.url_fields) and libpq passfile lines."""

from __future__ import annotations

import pytest

from vaultflow.engines.clickhouse.settings import ClickHouseSettings
from vaultflow.engines.mongodb.settings import MongoSettings
from vaultflow.engines.postgres.passfile import pgpass_fields
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.engines.redis.settings import RedisSettings
from vaultflow.errors import ConfigError


def test_each_kind_reads_its_url():
    assert PostgresSettings.url_fields("postgresql://backup@db1:6543/shop,crm?mode=physical") == {
        "host": "db1",
        "port": 6543,
        "user": "backup",
        "databases": ["shop", "crm"],
        "mode": "physical",
    }
    assert RedisSettings.url_fields("redis://cache:6380?tls=true") == {"host": "cache", "port": 6380, "tls": "true"}
    assert MongoSettings.url_fields("mongodb://ops%40corp@m1/app?authSource=users") == {
        "host": "m1",
        "username": "ops@corp",
        "databases": ["app"],
        "auth_source": "users",
    }
    assert ClickHouseSettings.url_fields("clickhouse://default@ch1:8123/events")["databases"] == ["events"]


@pytest.mark.parametrize(
    "settings, url, says",
    [
        (PostgresSettings, "postgresql://u:s3cret@db1/shop", "carries a password"),
        (RedisSettings, "redis://cache:6379/2", "names no database"),
        (PostgresSettings, "postgresql://db1/shop?password=s3cret", "is no setting"),
    ],
)
def test_refused_urls_do_not_repeat_a_password(settings, url: str, says: str):
    with pytest.raises(ConfigError, match=says) as info:
        settings.url_fields(url)
    assert "s3cret" not in str(info.value)


def test_pgpass_lines_read_as_libpq_reads_them():
    assert pgpass_fields("db1:5432:*:backup:pa:ss") == ["db1", "5432", "*", "backup", "pa:ss"]
    assert pgpass_fields(r"db\:1:5432:a\\b:u:p\:w") == ["db:1", "5432", "a\\b", "u", "p:w"]


def test_the_pgpass_entry_for_a_url(tmp_path, monkeypatch):
    passfile = tmp_path / "pgpass"
    passfile.write_text("db1:5432:other:backup:no\n*:5432:*:backup:yes\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    fields = PostgresSettings.url_fields("postgresql://backup@db1/shop")
    assert PostgresSettings.passfile_password(fields) == "yes"
    assert PostgresSettings.passfile_password({**fields, "user": "nobody"}) is None
    passfile.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 0600"):
        PostgresSettings.passfile_password(fields)
