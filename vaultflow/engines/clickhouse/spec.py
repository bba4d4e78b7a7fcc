"""The ClickHouse engine as the registry sees it."""

from vaultflow.engines.clickhouse.consistency import CHAIN_RULES, CONSISTENCY_MODELS
from vaultflow.engines.clickhouse.engine import ClickHouseEngine
from vaultflow.engines.registry import EngineSpec

SPEC = EngineSpec(
    name="clickhouse",
    make_engine=ClickHouseEngine,
    consistency=CONSISTENCY_MODELS,
    chain_rules=CHAIN_RULES,
)
