"""Which target block types exist: block type slug -> block class -> engine name.

A target block is its engine's settings as a Prefect block: `class PostgresTarget(PostgresSettings,
TargetBlock)`. Subclassing TargetBlock registers the class here when Python creates it, so a
target block defined anywhere (blocks/, a plugin, a test) works in every flow, the CLI and
deployments/validate.py with no other edit. The engine itself comes from
`vaultflow.engines.registry.spec(block.engine_name)`.

    target_types()          -> {"postgres-target": PostgresTarget, "redis-target": RedisTarget, ...}
    target_type(slug)       -> the block class (ConfigError naming the known slugs)
    register_target(cls)    -> make a target block class known by hand (TargetBlock does it itself)
    unregister_target(slug) -> forget one (tests)
"""

from __future__ import annotations

from abc import ABC
from typing import Any

from prefect.blocks.core import Block

from vaultflow.blocks.schema import SchemaOnce
from vaultflow.errors import ConfigError

_TARGET_TYPES: dict[str, type[TargetBlock]] = {}


class TargetBlock(SchemaOnce, Block, ABC):
    """Base of every target block: a block interface (not registered with Prefect itself, like
    prefect's own CredentialsBlock). Put the engine's settings class first in the bases, then
    TargetBlock: the settings hold the fields and rules, Block's model config (unknown fields of
    older saved blocks are accepted and ignored) wins over the settings' `extra="forbid"`.

    A concrete subclass (one that sets `_block_type_slug` and has an `engine_name`) registers
    itself in this module's registry when it is created."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if ABC not in cls.__bases__ and getattr(cls, "engine_name", None):
            register_target(cls)

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> Any:
        """A flow parameter typed TargetBlock shows in the Prefect run form as a choice among the
        registered target block types (their block pickers), not as this interface's own type."""
        if ABC in cls.__bases__ and target_types():
            return {"anyOf": [handler(target.__pydantic_core_schema__) for target in target_types().values()]}
        return super().__get_pydantic_json_schema__(core_schema, handler)

    def saved_name(self) -> str | None:
        """The block document's name once saved or loaded ('prod' for postgres-target/prod)."""
        return getattr(self, "_block_document_name", None)


def register_target(block_class: type[TargetBlock]) -> type[TargetBlock]:
    """Make `block_class` known as the target block type of its slug (re-registering a slug
    replaces it: a reloaded module's class wins). Returns the class, so it can decorate.

    The block's settings come first in its bases, so their `saved_name` (None) would shadow
    TargetBlock's: the class gets TargetBlock's here, and the name of a saved block is its
    document's name (see TargetSettings.name)."""
    block_class.saved_name = TargetBlock.saved_name  # type: ignore[method-assign]
    _TARGET_TYPES[block_class.get_block_type_slug()] = block_class
    return block_class


def unregister_target(slug: str) -> None:
    """Forget the target block type `slug` (tests that define their own kind clean up with it)."""
    _TARGET_TYPES.pop(slug, None)


def target_types() -> dict[str, type[TargetBlock]]:
    """Every registered target block type, slug -> class, in slug order."""
    return dict(sorted(_TARGET_TYPES.items()))


def target_type(slug: str) -> type[TargetBlock]:
    """The target block class of block type `slug`. Raises ConfigError naming the known slugs."""
    try:
        return _TARGET_TYPES[slug]
    except KeyError:
        raise ConfigError(f"{slug!r} is not a target block type (known: {', '.join(target_types())})") from None


def is_target(value: Any) -> bool:
    """Whether `value` is a target block instance."""
    return isinstance(value, TargetBlock)
