"""The PostgreSQL engine as the registry sees it."""

from vaultflow.engines.postgres.consistency import CHAIN_RULES, CONSISTENCY_MODELS
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.wal.log_archive import WalArchive
from vaultflow.engines.registry import EngineSpec

SPEC = EngineSpec(
    name="postgres",
    make_engine=PostgresEngine,
    consistency=CONSISTENCY_MODELS,
    chain_rules=CHAIN_RULES,
    log_archive=WalArchive,
)
