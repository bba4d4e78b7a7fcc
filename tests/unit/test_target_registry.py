"""Target blocks are found through blocks.registry: saved and loaded through a real Prefect API,
ambiguous names refused, and a target kind defined outside blocks/ (here, in this test) works
with no edit anywhere else."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
from pydantic import Field, SecretStr

from vaultflow import blocks
from vaultflow.blocks import PostgresTarget, RedisTarget
from vaultflow.blocks.registry import TargetBlock, target_type, target_types, unregister_target
from vaultflow.engines import registry
from vaultflow.engines.settings import RestoreOptions, TargetSettings
from vaultflow.errors import ConfigError, NotFoundError
from vaultflow.flows._support import load_target


class ToyRestoreOptions(RestoreOptions):
    speed: int | None = Field(default=None, description="How fast the toy restores.")


class ToySettings(TargetSettings):
    engine_name: ClassVar[str] = "toy"
    strategy_fits: ClassVar[dict[str, str]] = {"incremental": "a toy target"}

    path: str = Field(default="/toy", description="Where the toy keeps its data.")
    token: SecretStr | None = Field(default=None, description="The toy's secret.")

    def default_name(self) -> str:
        return "toy"


class ToyEngine:
    name = "toy"
    restore_options = ToyRestoreOptions

    def __init__(self, settings: ToySettings):
        self.config = settings


@pytest.fixture(scope="module")
def toy():
    """A toy target kind, defined here: its block class registers itself when Python creates it.
    Forgotten after this module (other tests count the kinds)."""
    registry.register(registry.EngineSpec(name="toy", make_engine=ToyEngine))

    class ToyTarget(ToySettings, TargetBlock):
        """A toy target kind defined only in this test."""

        _block_type_name = "Toy Target"
        _block_type_slug = "toy-target"

    yield ToyTarget
    unregister_target("toy-target")
    registry.unregister("toy")


def test_a_target_kind_defined_elsewhere_registers_itself(toy):
    assert target_type("toy-target") is toy
    assert list(target_types()) == [
        "clickhouse-target",
        "mongo-target",
        "postgres-target",
        "redis-target",
        "toy-target",
    ]
    engine = toy(target_name="t").engine()
    assert isinstance(engine, ToyEngine) and engine.config.name == "t"
    from vaultflow.flows._fit import how_to_fix, misfit

    assert misfit("incremental", toy()) is None
    assert misfit("differential", toy()) == "toy: a toy target has no differential form"
    assert "or a toy target, or schedule" in how_to_fix("incremental")


def test_saved_blocks_load_by_full_or_short_name(prefect_api, toy):
    PostgresTarget(host="db1", password=SecretStr("pw-secret")).save("reg-pg-only", overwrite=True)
    toy(path="/var/toy").save("reg-toy-only", overwrite=True)
    loaded = load_target("reg-pg-only")
    assert isinstance(loaded, PostgresTarget) and loaded.name == "reg-pg-only"  # the saved block's name
    assert loaded.password.get_secret_value() == "pw-secret" and loaded.engine().config is loaded
    saved = load_target("reg-toy-only")
    assert isinstance(saved, toy) and saved.path == "/var/toy" and saved.name == "reg-toy-only"
    assert isinstance(load_target("toy-target/reg-toy-only"), toy)
    with pytest.raises(
        NotFoundError,
        match="no target block named 'reg-nobody' .looked for clickhouse-target/reg-nobody, mongo-target/reg-nobody, "
        "postgres-target/"
        "reg-nobody, redis-target/reg-nobody, toy-target/reg-nobody",
    ):
        load_target("reg-nobody")


def test_a_name_two_kinds_share_is_refused_naming_both(prefect_api):
    PostgresTarget(host="db1").save("reg-shared", overwrite=True)
    RedisTarget(host="cache1").save("reg-shared", overwrite=True)
    with pytest.raises(
        ConfigError,
        match=r"target 'reg-shared' is ambiguous.*\(postgres-target/reg-shared, "
        r"redis-target/reg-shared\); name the one you mean in full",
    ):
        load_target("reg-shared")
    assert isinstance(load_target("redis-target/reg-shared"), RedisTarget)
    assert load_target("postgres-target/reg-shared").host == "db1"


def test_a_block_that_is_not_a_target_is_refused(prefect_api, tmp_path):
    blocks.BackupRepository(local_path=str(tmp_path)).save("reg-repo", overwrite=True)
    with pytest.raises(ConfigError, match="'backup-repository/reg-repo' is a BackupRepository, not a target block"):
        load_target("backup-repository/reg-repo")


def test_a_saved_block_with_a_field_no_longer_defined_still_loads(prefect_api):
    """RedisTarget.fingerprint (deprecated, ignored since issue 8) is gone from the definition;
    blocks saved with it load and work."""
    from prefect import get_client
    from prefect.client.schemas.actions import BlockDocumentCreate

    RedisTarget(host="cache1").save("reg-current", overwrite=True)
    current = RedisTarget.load("reg-current")
    with get_client(sync_client=True) as client:
        try:
            client.delete_block_document(client.read_block_document_by_name("reg-old", "redis-target").id)
        except Exception:  # noqa: BLE001 - not there yet
            pass
        client.create_block_document(
            BlockDocumentCreate(
                name="reg-old",
                data={"host": "cache1", "port": 6380, "fingerprint": "digest", "tls": False},
                block_schema_id=current._block_schema_id,
                block_type_id=current._block_type_id,
            )
        )
    old = load_target("redis-target/reg-old")
    assert isinstance(old, RedisTarget) and (old.host, old.port, old.name) == ("cache1", 6380, "reg-old")
    assert old.engine().config.where == "cache1:6380"


def test_block_register_registers_the_target_kinds_not_the_interface(prefect_api):
    from prefect.cli.block import _register_blocks_in_module

    registered = asyncio.run(_register_blocks_in_module(blocks))
    assert {PostgresTarget, RedisTarget, blocks.BackupRepository} <= set(registered)
    assert TargetBlock not in registered  # a block interface (ABC): Prefect does not register it on its own
