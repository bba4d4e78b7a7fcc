"""PostgresTarget: a PostgreSQL server to back up, as a Prefect block.

Its fields are vaultflow.engines.postgres.settings.PostgresSettings: defined there once, for
the block and the engine alike."""

from __future__ import annotations

from vaultflow.blocks.registry import TargetBlock
from vaultflow.engines.postgres.settings import PostgresSettings


class PostgresTarget(PostgresSettings, TargetBlock):
    """A PostgreSQL server (and which of its databases) that vaultflow backs up.

    Example:
        ```python
        from vaultflow.blocks import PostgresTarget

        target = PostgresTarget.load("BLOCK_NAME")
        print(target.engine().check())
        ```
    """

    _block_type_name = "Postgres Target"
    _block_type_slug = "postgres-target"
    _description = "A PostgreSQL server backed up by vaultflow: where it is, how to log in, which databases."
    _documentation_url = "https://github.com/vaultflow/vaultflow/blob/main/docs/postgres.md"
