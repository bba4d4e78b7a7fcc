"""The blocks follow Prefect's standards and keep secrets secret."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from pydantic import SecretStr, ValidationError

from vaultflow.blocks import BackupRepository, ClickHouseTarget, MongoTarget, PostgresTarget, RedisTarget
from vaultflow.blocks.registry import target_type, target_types
from vaultflow.engines.base import options_for
from vaultflow.engines.postgres.settings import PostgresRestoreOptions, PostgresSettings
from vaultflow.engines.redis.settings import RedisRestoreOptions, RedisSettings
from vaultflow.errors import ConfigError
from vaultflow.stores.local import LocalStore


class _StandardSuite(BlockStandardTestSuite):
    def test_has_a_valid_image(self, block) -> None:
        # The suite downloads a logo; vaultflow's blocks have none (test_logo_loads_or_there_is_none).
        assert block._logo_url is None


class TestPostgresTargetStandards(_StandardSuite):
    @pytest.fixture
    def block(self):
        return PostgresTarget


class TestBackupRepositoryStandards(_StandardSuite):
    @pytest.fixture
    def block(self):
        return BackupRepository


class TestRedisTargetStandards(_StandardSuite):
    @pytest.fixture
    def block(self):
        return RedisTarget


def test_password_is_a_secret_everywhere():
    target = PostgresTarget(host="db.example", password=SecretStr("hunter2-secret"), target_name="prod")
    assert "hunter2-secret" not in repr(target)
    assert "hunter2-secret" not in target.model_dump_json()
    engine = target.engine()
    assert engine.config is target, "the block is the engine's settings: nothing copied"
    assert "hunter2-secret" not in repr(engine.config)
    assert engine.config.password.get_secret_value() == "hunter2-secret"
    assert engine.config.name == "prod"


def all_blocks() -> list[type[Block]]:
    """Every block type vaultflow registers: the repository and each registered target kind."""
    return [BackupRepository, *target_types().values()]


def _password_boxes_under_unions(node, inside_union: bool = False) -> list[dict]:
    """Every `format: password` schema nested in an anyOf/oneOf (a box Prefect's forms show in clear)."""
    found = []
    if isinstance(node, dict):
        if inside_union and node.get("format") == "password":
            found.append(node)
        for key, value in node.items():
            found += _password_boxes_under_unions(value, inside_union or key in ("anyOf", "oneOf"))
    elif isinstance(node, list):
        for value in node:
            found += _password_boxes_under_unions(value, inside_union)
    return found


@pytest.mark.parametrize("block", all_blocks(), ids=lambda block: block.__name__)
def test_every_secret_is_masked_while_typed(block):
    """A secret field's schema is one masked string box: `format: password` and `writeOnly` on
    the property itself, not on one branch of an anyOf (which the block form shows unmasked)."""
    schema = block.model_json_schema()
    declared = [name for name, field in block.model_fields.items() if "SecretStr" in str(field.annotation)]
    assert set(declared) <= set(schema["secret_fields"]), schema["secret_fields"]
    for name in declared:
        prop = schema["properties"][name]
        assert prop.get("format") == "password" and prop.get("writeOnly") is True, (name, prop)
        assert "anyOf" not in prop and "oneOf" not in prop, (name, prop)
    # Its own fields and models; a nested block (prefect-aws's AwsCredentials) is picked by
    # name in this form and edited in its own block form, which that package's schema draws.
    own = [schema["properties"]] + [
        model for model in schema.get("definitions", {}).values() if "block_type_slug" not in model
    ]
    assert not _password_boxes_under_unions(own)


def test_an_optional_secret_stays_optional_and_secret():
    assert PostgresTarget().password is None
    target = PostgresTarget(password="typed-in-the-form")
    assert target.password.get_secret_value() == "typed-in-the-form" and "typed" not in repr(target)


@pytest.mark.parametrize("block", all_blocks(), ids=lambda block: block.__name__)
def test_logo_loads_or_there_is_none(block):
    """No logo (Prefect shows its default block icon) or an https URL that Prefect accepts when
    it registers the block type (a data: URI is refused there: the client's HttpUrl)."""
    url = block._logo_url
    assert url is None or urlsplit(str(url)).scheme == "https", url
    assert block._to_block_type().logo_url == url


def test_target_name_defaults_to_host_and_port():
    assert PostgresTarget(host="db1", port=5433).name == "db1-5433"


def test_repository_needs_a_store():
    with pytest.raises(ValidationError, match="needs local_path, s3_bucket, or both"):
        BackupRepository()


def test_repository_refuses_a_policy_that_keeps_nothing(tmp_path):
    # refused when the block is created (not first at prune time), naming only the block's own fields
    with pytest.raises(ValidationError, match="keeps nothing") as info:
        BackupRepository(
            local_path=str(tmp_path),
            keep_last=None,
            keep_daily=None,
            keep_weekly=None,
            keep_monthly=None,
            keep_yearly=None,
            keep_within=None,
        )
    message = str(info.value)
    assert "keep_last, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within" in message, message
    assert "keep_hourly" not in message, message
    with pytest.raises(ValidationError, match="keeps nothing"):
        BackupRepository(local_path=str(tmp_path), keep_last=0, keep_daily=None, keep_weekly=None,
                         keep_monthly=None, keep_yearly=None, keep_within="0s")  # fmt: skip


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("keep_within", "banana", "keep_within 'banana' is not a duration"),
        ("keep_within", "-5d", "keep_within '-5d' must not be negative"),
        ("orphan_grace", "soon", "orphan_grace 'soon' is not a duration"),
        ("orphan_grace", "-P1D", "orphan_grace '-P1D' must not be negative"),
        ("clock_tolerance", "a while", "clock_tolerance 'a while' is not a duration"),
    ],
)
def test_repository_refuses_a_bad_retention_duration_when_created(tmp_path, field, value, says):
    with pytest.raises(ValidationError) as info:
        BackupRepository(local_path=str(tmp_path), **{field: value})
    message = str(info.value)
    assert says in message and "'7d', '36h'" in message, message


def test_repository_retention_durations_in_every_accepted_form(tmp_path):
    repo = BackupRepository(local_path=str(tmp_path), keep_within="1d12h", orphan_grace="P2D", clock_tolerance="90")
    policy = repo.retention_policy()
    assert policy.keep_within == timedelta(hours=36) and policy.orphan_grace == timedelta(days=2)
    assert policy.clock_tolerance == timedelta(seconds=90)


def test_repository_retention_built_without_validation_names_the_block(tmp_path):
    repo = BackupRepository.model_construct(local_path=str(tmp_path), keep_within="banana")
    repo._block_document_name = "nightly"
    with pytest.raises(ConfigError, match="BackupRepository block 'nightly': invalid retention.*keep_within"):
        repo.retention_policy()


def test_local_repository_builds_a_local_store(tmp_path):
    repo = BackupRepository(local_path=str(tmp_path / "r"), compression_level=7).build()
    assert isinstance(repo.store, LocalStore) and repo.compression_level == 7


# -- one definition per target ------------------------------------------------------------


@pytest.mark.parametrize("block, settings", [(PostgresTarget, PostgresSettings), (RedisTarget, RedisSettings)])
def test_a_target_block_is_its_engine_settings(block, settings):
    """Every field is defined once, in the engine's settings; the block adds none and the
    engine gets the block itself."""
    assert issubclass(block, settings)
    assert block.model_fields.keys() == settings.model_fields.keys()
    for name, field in settings.model_fields.items():
        assert field.description, f"{settings.__name__}.{name} has no description"
        assert block.model_fields[name].description == field.description
    schema = block.model_json_schema()
    assert schema["block_type_slug"] == block.get_block_type_slug() and schema["secret_fields"] == ["password"]
    assert block.engine_name in target_engine_names()


def target_engine_names() -> list[str]:
    from vaultflow.engines import registry

    return registry.names()


def test_the_defaults_are_chosen_once():
    assert PostgresTarget().host == PostgresSettings().host == "localhost"
    assert RedisTarget().host == RedisSettings().host == "localhost"
    with pytest.raises(ValidationError):
        PostgresSettings(sslmode="sometimes")  # one of libpq's six values, block and core alike
    with pytest.raises(ValidationError):
        PostgresSettings(hots="db1")  # a typo in core settings is an error, not a default


def test_target_name_control_characters_are_refused():
    with pytest.raises(ConfigError, match="control characters"):
        _ = PostgresTarget(target_name="a\nb").name


def test_every_target_block_type_is_registered():
    assert target_types() == {
        "clickhouse-target": ClickHouseTarget,
        "mongo-target": MongoTarget,
        "postgres-target": PostgresTarget,
        "redis-target": RedisTarget,
    }
    assert target_type("redis-target") is RedisTarget
    with pytest.raises(
        ConfigError, match="not a target block type.*clickhouse-target, mongo-target, postgres-target, redis-target"
    ):
        target_type("cassandra-target")


def test_restore_options_belong_to_their_engine():
    postgres, redis = PostgresTarget(target_name="pg").engine(), RedisTarget(target_name="cache").engine()
    assert options_for(redis, {"key_pattern": "user:*", "into_db": 3}) == RedisRestoreOptions(
        key_pattern="user:*", into_db=3
    )
    assert options_for(postgres, None) == PostgresRestoreOptions()
    with pytest.raises(
        ConfigError,
        match="restore option key_pattern does not apply to target 'pg', a postgres "
        "target \\(its restore options: to_time, to_lsn",
    ):
        options_for(postgres, {"key_pattern": "user:*"}, "pg")
    with pytest.raises(ConfigError, match="PostgresRestoreOptions does not apply to target 'cache', a redis target"):
        options_for(redis, PostgresRestoreOptions(no_owner=True), "cache")
    with pytest.raises(ConfigError, match="invalid restore options for target 'pg', a postgres target: to_timeline"):
        options_for(postgres, {"to_timeline": "newest"}, "pg")
    assert options_for(postgres, {"to_timeline": "3"}).to_timeline == 3


def test_strategy_fit_is_the_settings_rule():
    from vaultflow.flows._fit import how_to_fix, misfit

    assert (
        misfit("incremental", PostgresTarget(target_name="a"))
        == "a takes logical backups, which have no incremental form"
    )
    assert misfit("incremental", PostgresTarget(target_name="b", mode="physical")) is None
    assert misfit("archive-logs", PostgresTarget(target_name="c", mode="physical"), spool_dir="/spool") is None
    assert "no wal_spool" in misfit("archive-logs", PostgresTarget(target_name="c", mode="physical"))
    assert "no data_dir" in misfit("differential", RedisTarget(target_name="d"))
    assert misfit("differential", RedisTarget(target_name="d", data_dir="/var/lib/redis")) is None
    assert "Redis has no continuous log to archive" in misfit("archive-logs", RedisTarget(target_name="e"))
    assert how_to_fix("incremental") == (
        "point the deployment at a ClickHouse target (BACKUP with base_backup) or a MongoDB target (oplog ranges) "
        "or a physical PostgreSQL target (mode='physical') "
        "or a local-mode Redis target with appendonly yes, or schedule full backups only"
    )
    assert (
        how_to_fix("archive-logs")
        == "point the deployment at a MongoDB target (oplog slices) or a physical PostgreSQL target with a wal_spool, "
        "or pause it"
    )


@pytest.mark.parametrize("block", [PostgresTarget, RedisTarget, MongoTarget, ClickHouseTarget, BackupRepository])
def test_the_schema_built_once_is_prefects_and_each_caller_gets_its_own_copy(block):
    """blocks/schema.py keeps a class's JSON schema (a save asked for it once per field): the kept
    one is Block's own, and a caller that changes its copy changes nobody else's."""
    assert block.model_json_schema() == Block.model_json_schema.__func__(block)
    assert block.model_json_schema(mode="serialization") == Block.model_json_schema.__func__(
        block, mode="serialization"
    )
    first = block.model_json_schema()
    first["properties"].clear()
    first["secret_fields"].append("changed")
    assert block.model_json_schema() == Block.model_json_schema.__func__(block)


def test_a_saved_repository_document_is_the_one_prefect_builds(monkeypatch):
    """The block document a save sends is the same with the kept schema as with Prefect's own,
    and the schema still names the S3 secret key inside the nested credentials as a secret (the
    server masks what secret_fields lists)."""
    from prefect_aws import AwsCredentials
    from prefect_aws.s3 import S3Bucket

    repo = BackupRepository(
        s3_bucket=S3Bucket(
            bucket_name="b", credentials=AwsCredentials(aws_access_key_id="key", aws_secret_access_key="s3cr3t")
        )
    )

    def document() -> tuple:
        doc = repo._to_block_document(
            name="x",
            block_schema_id="00000000-0000-0000-0000-000000000001",
            block_type_id="00000000-0000-0000-0000-000000000002",
        )
        return without_ids(doc.model_dump(context={"include_secrets": True}))  # ids are random

    def without_ids(value):
        if isinstance(value, dict):
            return {k: without_ids(v) for k, v in value.items() if k != "id"}
        return value

    kept = document()
    assert kept["data"]["s3_bucket"]["credentials"]["aws_secret_access_key"] == "s3cr3t"
    assert "s3_bucket.credentials.aws_secret_access_key" in BackupRepository.model_json_schema()["secret_fields"]
    monkeypatch.setattr(
        BackupRepository,
        "model_json_schema",
        classmethod(lambda cls, *a, **k: Block.model_json_schema.__func__(cls, *a, **k)),
    )
    assert document() == kept


def test_the_target_interfaces_schema_follows_the_kinds_registered():
    """TargetBlock's schema lists the target kinds registered so far: blocks/schema.py keeps no
    copy of it, so a kind registered later shows."""
    from vaultflow.blocks.registry import TargetBlock, unregister_target

    def kinds() -> set[str]:
        return {choice["block_type_slug"] for choice in TargetBlock.model_json_schema()["anyOf"]}

    assert "late-target" not in kinds()

    class LateTarget(PostgresSettings, TargetBlock):
        _block_type_slug = "late-target"

    try:
        assert target_type("late-target") is LateTarget and "late-target" in kinds()
    finally:
        unregister_target("late-target")
    assert "late-target" not in kinds()
