"""The demo's ClickHouse data directory as `python -m vaultflow.demo_setup` leaves it for the
worker's flow runs, and what a second process gets while one has a chDB data directory open.

chDB locks its data directory for one process at a time (a flock on `<path>/status`, as
clickhouse-server does: "Another server instance in same directory is already running"), so the
setup fills it in a child process that exits. Every chDB engine here runs in a child process:
this test process never opens one (a pytest worker may hold the session's instance on another
path, and a process gets one path only).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vaultflow.demo_clickhouse import CLICKHOUSE_DB, clickhouse_fields, fill_in_child
from vaultflow.engines.clickhouse.client import chdb_holder

# Another process reads the directory the way a flow run opens it, with a plain client and no
# vaultflow code: count() and sum(cityHash64(*)) per table, and the seed's employees.
READ = """
import json, sys, clickhouse_connect
client = clickhouse_connect.get_client(interface="chdb", path=sys.argv[1], chdb_options={"config-file": sys.argv[2]})
tables = [r[0] for r in client.query("SELECT name FROM system.tables WHERE database = 'backup_demo'").result_rows]
census = {t: [int(v) for v in client.query(f"SELECT count(), sum(cityHash64(*)) FROM backup_demo.{t}").result_rows[0]]
          for t in tables}
seed = [list(map(str, r)) for r in client.query("SELECT * FROM backup_demo.employees WHERE id <= 3 ORDER BY id").result_rows]
print(json.dumps({"census": census, "seed": seed}))
"""

# Holds the directory open until its stdin closes.
HOLD = """
import sys, clickhouse_connect
client = clickhouse_connect.get_client(interface="chdb", path=sys.argv[1], chdb_options={"config-file": sys.argv[2]})
client.query("SELECT 1")
print("holding", flush=True)
sys.stdin.read()
"""

# Opens the directory through vaultflow's client, as a flow run does; prints what it raised.
OPEN = """
import json, sys
from vaultflow.engines.clickhouse.client import open_client
from vaultflow.engines.clickhouse.settings import ClickHouseSettings
config = ClickHouseSettings(**json.loads(sys.argv[1]), target_name="demo")
try:
    open_client(config).close()
    print(json.dumps(["opened", ""]))
except Exception as exc:
    print(json.dumps([type(exc).__name__, str(exc)]))
"""


def python(code: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def config_file(fields: dict) -> str:
    return f"{fields['chdb_path']}.vaultflow.xml"  # written beside chdb_path by vaultflow


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The demo's data directory filled as the setup fills it (50 generated employees); its census."""
    root = tmp_path_factory.mktemp("demo") / "clickhouse"
    return root, fill_in_child(root, 50)


def test_the_setup_fills_the_database_in_a_child_and_leaves_the_directory_to_other_processes(filled):
    root, census = filled
    fields = clickhouse_fields(root)
    assert {t: count for t, (count, _) in census.items()} == {"attendance": 530, "employees": 53}, census
    assert chdb_holder(fields["chdb_path"]) is None, "the child has exited: nobody holds the directory"
    # A flow run's process opens it and finds what the child wrote, by its own count and hash.
    seen = json.loads(python(READ, fields["chdb_path"], config_file(fields)))
    assert seen["census"] == {t: list(v) for t, v in census.items()}, (seen, census)
    assert seen["seed"] == [
        ["1", "Alice", "Manager", "90000.00"],
        ["2", "Bob", "Developer", "80000.00"],
        ["3", "Charlie", "Analyst", "70000.00"],
    ]
    # Filled again (a setup started again on the same workdir): the database is made anew.
    assert fill_in_child(root, 50) == census
    assert fields["databases"] == [CLICKHOUSE_DB]


def test_a_second_process_is_told_who_holds_the_data_directory_and_may_retry(filled):
    fields = clickhouse_fields(filled[0])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, fields["chdb_path"], config_file(fields)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        assert chdb_holder(fields["chdb_path"]) == f"PID {holder.pid}"
        kind, message = json.loads(python(OPEN, json.dumps(fields)))
    finally:
        holder.communicate("", timeout=60)
    assert kind == "TransientError", (kind, message)
    assert f"another process (PID {holder.pid}) has chDB's data directory open" in message, message
    assert "runs on one interface='chdb' target cannot overlap" in message, message
    # Once it has ended, the directory opens.
    assert chdb_holder(fields["chdb_path"]) is None
    assert json.loads(python(OPEN, json.dumps(fields))) == ["opened", ""]
