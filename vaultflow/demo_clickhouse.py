"""The demo's ClickHouse data, for `make demo` (vaultflow.demo.run_clickhouse_demo: create a
database, back it up, `DROP DATABASE`, restore it, verify counts and checksums) and for
`python -m vaultflow.demo_setup`. Free of Prefect: the setup's child process imports it alone.

The engine is chDB (ClickHouse in-process, through clickhouse-connect's interface="chdb"), in a
data directory of the demo's own; BACKUP writes to a local disk `backups` that vaultflow declares
and allows in the configuration file it writes beside the data directory. chDB locks its data
directory against other processes (`<chdb_path>/status`, "Another server instance in same
directory is already running") for as long as a client in the process is open: the demo setup
fills the database in a child process that exits, so that the worker's flow runs (processes of
their own) can open it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaultflow.demo_seed import POSITIONS, SEED_EMPLOYEES

CLICKHOUSE_DB = "backup_demo"


def clickhouse_fields(root: Path) -> dict[str, Any]:
    """The ClickHouse target fields of the demo's embedded engine under `root`: data in
    `root`/data, the backup disk in `root`/backups (both created), database backup_demo."""
    for name in ("data", "backups"):
        (root / name).mkdir(parents=True, exist_ok=True)
    return {
        "interface": "chdb",
        "chdb_path": str(root / "data"),
        "backup_dir": str(root / "backups"),
        "databases": [CLICKHOUSE_DB],
    }


def fill_clickhouse(client: Any, rows: int) -> None:
    """Database backup_demo, made anew: `employees` (MergeTree ORDER BY id: the seed's Alice, Bob
    and Charlie, then `rows` generated employees) and `attendance` (MergeTree partitioned by
    month, ORDER BY (day, employee_id): 10 check-ins per employee over two months)."""
    client.command(f"DROP DATABASE IF EXISTS {CLICKHOUSE_DB} SYNC")
    client.command(f"CREATE DATABASE {CLICKHOUSE_DB}")
    client.command(
        f"CREATE TABLE {CLICKHOUSE_DB}.employees (id UInt32, name String, position LowCardinality(String), "
        "salary Decimal(10, 2)) ENGINE = MergeTree ORDER BY id"
    )
    seed = ", ".join(f"({i}, '{n}', '{p}', {s})" for i, (n, p, s) in enumerate(SEED_EMPLOYEES, 1))
    client.command(f"INSERT INTO {CLICKHOUSE_DB}.employees VALUES {seed}")
    positions = ", ".join(f"'{p}'" for p in POSITIONS)
    client.command(
        f"INSERT INTO {CLICKHOUSE_DB}.employees SELECT number + 4, concat('Employee ', toString(number + 4)), "
        f"[{positions}][(number + 4) % 5 + 1], 40000 + ((number + 4) * 37) % 60000 FROM numbers({int(rows)})"
    )
    client.command(
        f"CREATE TABLE {CLICKHOUSE_DB}.attendance (day Date, employee_id UInt32, minutes UInt16, "
        "remote Bool) ENGINE = MergeTree PARTITION BY toYYYYMM(day) ORDER BY (day, employee_id)"
    )
    client.command(
        f"INSERT INTO {CLICKHOUSE_DB}.attendance SELECT toDate('2026-10-01') + intDiv(number, {int(rows) + 3}) * 6, "
        f"number % {int(rows) + 3} + 1, 420 + number % 120, number % 3 = 0 FROM numbers({(int(rows) + 3) * 10})"
    )


def clickhouse_census(client: Any) -> dict[str, tuple[int, int]]:
    """Per table of backup_demo: (count(), sum(cityHash64(*)) of its rows, a UInt64 that wraps): the
    demo's own check of a restore, taken from the live tables before the drop and after the restore,
    not from vaultflow's fingerprints."""
    names = [
        r[0]
        for r in client.query(
            f"SELECT name FROM system.tables WHERE database = '{CLICKHOUSE_DB}' ORDER BY name"
        ).result_rows
    ]
    census = {}
    for name in names:
        count, total = client.query(f"SELECT count(), sum(cityHash64(*)) FROM {CLICKHOUSE_DB}.`{name}`").result_rows[0]
        census[name] = (int(count), int(total or 0))
    return census


def _fill_here(root: str, rows: int) -> dict[str, tuple[int, int]]:
    """fill_clickhouse through a client of the demo's engine under `root`, in this process; the
    census after. Plain settings, not the block: the child spares itself Prefect's import."""
    from vaultflow.engines.clickhouse.client import connected
    from vaultflow.engines.clickhouse.settings import ClickHouseSettings

    with connected(ClickHouseSettings(**clickhouse_fields(Path(root)), target_name="demo")) as client:
        fill_clickhouse(client, rows)
        return clickhouse_census(client)


def fill_in_child(root: Path, rows: int) -> dict[str, tuple[int, int]]:
    """fill_clickhouse on the demo's engine under `root`, in a child process that has exited when this
    returns: nothing in this process opens chDB, so its data directory is unlocked for the
    worker's flow runs. Returns the census of the new database; the child's error is raised here."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_fill_here, str(root), rows).result()
