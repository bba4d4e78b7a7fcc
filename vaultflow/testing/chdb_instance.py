"""The embedded ClickHouse engine (chDB) as a test source: a data directory, a backup disk and the
configuration file that declares it.

chDB runs one data path per process ("EmbeddedServer already initialized" for a second), so a
test session makes one instance (tests/fixtures/clickhouse.py) and every ClickHouse test of that
process uses it, each in databases of its own. The configuration declares two local disks:
`backups` (allowed for BACKUP/RESTORE) and `unlisted` (declared, not allowed: error 318).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaultflow.engines.clickhouse.client import chdb_config_xml

ALLOWED_DISK, UNLISTED_DISK = "backups", "unlisted"


@dataclass(frozen=True)
class ChdbInstance:
    path: Path  # the engine's data directory
    backup_dir: Path  # the `backups` disk
    unlisted_dir: Path  # the `unlisted` disk
    config_file: Path

    def target_fields(self) -> dict[str, Any]:
        """The ClickHouseTarget fields that reach this instance (add databases and target_name)."""
        return {
            "interface": "chdb",
            "chdb_path": str(self.path),
            "chdb_config_file": str(self.config_file),
            "backup_disk": ALLOWED_DISK,
            "backup_dir": str(self.backup_dir),
        }

    def client(self) -> Any:
        """A plain clickhouse-connect client of the instance (close it after use)."""
        import clickhouse_connect

        return clickhouse_connect.get_client(
            interface="chdb", path=str(self.path), chdb_options={"config-file": str(self.config_file)}
        )


def chdb_instance(root: Path) -> ChdbInstance:
    """Lay out an instance under `root` (data, two disks, configuration); the engine starts on the
    first client."""
    instance = ChdbInstance(root / "data", root / "backups", root / "unlisted", root / "config.xml")
    for directory in (instance.path, instance.backup_dir, instance.unlisted_dir):
        directory.mkdir(parents=True, exist_ok=True)
    disks = {ALLOWED_DISK: str(instance.backup_dir), UNLISTED_DISK: str(instance.unlisted_dir)}
    instance.config_file.write_text(chdb_config_xml(disks, [ALLOWED_DISK]))
    return instance
