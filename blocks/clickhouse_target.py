"""ClickHouseTarget: a ClickHouse server (or embedded chDB path) to back up, as a Prefect block.

Its fields are vaultflow.engines.clickhouse.settings.ClickHouseSettings: defined there once, for
the block and the engine alike."""

from __future__ import annotations

from vaultflow.blocks.registry import TargetBlock
from vaultflow.engines.clickhouse.settings import ClickHouseSettings


class ClickHouseTarget(ClickHouseSettings, TargetBlock):
    """A ClickHouse server that vaultflow backs up with its native BACKUP ... TO Disk, every file
    checked and copied into the repository.

    Example:
        ```python
        from vaultflow.blocks import ClickHouseTarget

        target = ClickHouseTarget.load("BLOCK_NAME")
        print(target.engine().check())
        ```
    """

    _block_type_name = "ClickHouse Target"
    _block_type_slug = "clickhouse-target"
    _description = (
        "A ClickHouse server backed up by vaultflow: where it is, how to log in, which databases, its backup disk."
    )
    _documentation_url = "https://github.com/vaultflow/vaultflow/blob/main/docs/clickhouse.md"
