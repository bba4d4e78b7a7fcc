"""The Redis engine as the registry sees it."""

from vaultflow.engines.redis.consistency import CHAIN_RULES, CONSISTENCY_MODELS
from vaultflow.engines.redis.engine import RedisEngine
from vaultflow.engines.registry import EngineSpec

SPEC = EngineSpec(name="redis", make_engine=RedisEngine, consistency=CONSISTENCY_MODELS, chain_rules=CHAIN_RULES)
