"""The MongoDB engine as the registry sees it."""

from vaultflow.engines.mongodb.consistency import CHAIN_RULES, CONSISTENCY_MODELS
from vaultflow.engines.mongodb.engine import MongoEngine
from vaultflow.engines.mongodb.oplog_archive import OplogArchive
from vaultflow.engines.registry import EngineSpec

SPEC = EngineSpec(
    name="mongodb",
    make_engine=MongoEngine,
    consistency=CONSISTENCY_MODELS,
    chain_rules=CHAIN_RULES,
    log_archive=OplogArchive,
)
