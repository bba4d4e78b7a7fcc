"""MongoTarget: a MongoDB deployment to back up, as a Prefect block.

Its fields are vaultflow.engines.mongodb.settings.MongoSettings: defined there once, for the
block and the engine alike."""

from __future__ import annotations

from vaultflow.blocks.registry import TargetBlock
from vaultflow.engines.mongodb.settings import MongoSettings


class MongoTarget(MongoSettings, TargetBlock):
    """A MongoDB replica set member that vaultflow backs up: logical dumps in mongodump's
    archive format, read at one cluster time.

    Example:
        ```python
        from vaultflow.blocks import MongoTarget

        target = MongoTarget.load("BLOCK_NAME")
        print(target.engine().check())
        ```
    """

    _block_type_name = "Mongo Target"
    _block_type_slug = "mongo-target"
    _description = "A MongoDB deployment backed up by vaultflow: where it is, how to log in, which databases."
    _documentation_url = "https://github.com/vaultflow/vaultflow/blob/main/docs/mongodb.md"
