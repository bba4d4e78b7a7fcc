"""A fleet file's shape (deployments.fleet_file) and which strategies need the database host
(TargetSettings.local_access): no Prefect API needed.

What the saved blocks say (fit, queues) and the deployments made: tests/integration/test_fleet.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vaultflow.deployments.fleet import host_queue
from vaultflow.deployments.fleet_file import STRATEGIES, FleetError, read_fleet, read_fleet_all
from vaultflow.deployments.project import ROOT, load_flow
from vaultflow.engines.clickhouse.settings import ClickHouseSettings
from vaultflow.engines.mongodb.settings import MongoSettings
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.engines.redis.settings import RedisSettings

GOOD = """\
name: prod
repository: backup-repository/main
timezone: Europe/Berlin
plans:
  logical:
    full: "0 2 * * *"
    drill: {cron: "0 6 * * 0", parameters: {rto_objective_s: 600}}
  physical:
    full: {cron: "0 1 * * 0", timezone: UTC}
    archive-logs: {interval: 60, parameters: {follow_seconds: 50}}
targets:
  postgres-target/shop: logical
  postgres-target/ledger: {plan: physical, host: db7, repository: backup-repository/ledger}
"""


def fleet_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(FleetError) as caught:
        read_fleet(fleet_file(tmp_path, text))
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def test_a_fleet_file_reads_into_plans_and_target_lines(tmp_path: Path):
    fleet = read_fleet(fleet_file(tmp_path, GOOD))
    assert (fleet.name, fleet.work_pool, fleet.shared_queue) == ("prod", "vaultflow", "default")
    drill = fleet.plans["logical"][1]
    assert (drill.strategy, drill.schedule, drill.parameters, drill.line) == (
        "drill",
        {"cron": "0 6 * * 0", "timezone": "Europe/Berlin"},
        {"rto_objective_s": 600},
        7,
    )
    full, logs = fleet.plans["physical"]
    assert full.schedule == {"cron": "0 1 * * 0", "timezone": "UTC"}  # its own timezone wins
    assert logs.schedule == {"interval": 60, "timezone": "Europe/Berlin"}
    shop, ledger = fleet.targets
    assert (shop.ref, shop.plan, shop.repository, shop.host, shop.line) == (
        "postgres-target/shop",
        "logical",
        "backup-repository/main",
        None,
        12,
    )
    assert (ledger.plan, ledger.repository, ledger.host, ledger.line) == (
        "physical",
        "backup-repository/ledger",
        "db7",
        13,
    )


def test_an_empty_targets_list_is_an_empty_fleet(tmp_path: Path):
    text = GOOD.split("targets:")[0] + "targets:\n"
    assert read_fleet(fleet_file(tmp_path, text)).targets == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("  postgres-target/shop: logical\n", "  postgres-target/shop: nightly\n"),
            "fleet.yaml:12: postgres-target/shop: plan 'nightly' is not defined under plans: (defined: logical, physical)",
        ),
        (
            ("  postgres-target/shop: logical\n", "  shop: logical\n"),
            "fleet.yaml:12: 'shop' is not a block name of the form TYPE/NAME (postgres-target/shop)",
        ),
        (("    drill:", "    dril:"), "fleet.yaml:7: plan 'logical': unknown strategy 'dril' (known: full, "),
        (
            ("timezone: Europe/Berlin\n", ""),
            "fleet.yaml:5: plan 'logical', full: schedule (cron '0 2 * * *') has no timezone",
        ),
        (('full: "0 2 * * *"', 'full: "0 2 * *"'), "fleet.yaml:6: plan 'logical', full: schedule (cron '0 2 * *'): "),
        (
            ("{plan: physical, host: db7,", "{plan: physical, hots: db7,"),
            "fleet.yaml:13: postgres-target/ledger: unknown key 'hots'",
        ),
        (("name: prod\n", ""), "fleet.yaml:1: name: give the fleet a name"),
        (("name: prod\n", "name: prod/eu\n"), "fleet.yaml:1: name: give the fleet a name"),
        (("repository: backup-repository/main\n", ""), "fleet.yaml:11: postgres-target/shop: no repository: set"),
        (("timezone:", "timezon:"), "fleet.yaml:3: unknown key 'timezon' (known: name, repository, timezone"),
        (
            ("  postgres-target/ledger", "  postgres-target/shop: physical\n  postgres-target/ledger"),
            "fleet.yaml:13: 'postgres-target/shop' is given twice (first on line 12): keep one",
        ),
        (
            ('    full: "0 2 * * *"', "    full: [0, 2]"),
            "fleet.yaml:6: plan 'logical', full: is a list: give a cron string",
        ),
        (("host: db7", "host: 'db 7'"), "fleet.yaml:13: postgres-target/ledger: host 'db 7' is not a host name"),
    ],
)
def test_each_fault_is_one_line_naming_its_line(tmp_path: Path, change: tuple[str, str], expected: str):
    old, new = change
    assert old in GOOD
    found = problems(tmp_path, GOOD.replace(old, new, 1))
    assert any(p.startswith(expected) for p in found), found
    assert all("\n" not in p for p in found)


def test_every_fault_is_listed_not_only_the_first(tmp_path: Path):
    text = GOOD.replace("  postgres-target/shop: logical", "  postgres-target/shop: nightly").replace("drill:", "dril:")
    found = problems(tmp_path, text)
    assert [p.split(":")[1] for p in found] == ["7", "12"], found


def test_a_duplicate_key_a_typo_and_an_unknown_plan_are_reported_in_one_pass(tmp_path: Path):
    """A user fixing faults one round at a time (the duplicate alone, then the rest) wants them
    all at once; a line with a typo'd key is still read, so its block is checked too."""
    text = GOOD.replace("  postgres-target/ledger", "  postgres-target/shop: physical\n  postgres-target/ledger")
    text = text.replace("host: db7,", "hots: db7,").replace("drill:", "dril:")
    text += "  postgres-target/crm: nightly\n"
    fleet, found = read_fleet_all(fleet_file(tmp_path, text))
    assert [p.split(":")[1] for p in found] == ["7", "13", "14", "15"], found
    assert "'postgres-target/shop' is given twice" in found[1] and "unknown key 'hots'" in found[2], found
    assert "plan 'nightly' is not defined" in found[3], found
    assert fleet is not None and [t.ref for t in fleet.targets] == ["postgres-target/shop", "postgres-target/ledger"]


def test_a_bad_top_level_timezone_is_blamed_on_its_own_line(tmp_path: Path):
    found = problems(tmp_path, GOOD.replace("timezone: Europe/Berlin", "timezone: Mars/Olympus"))
    assert found == [
        "fleet.yaml:3: timezone 'Mars/Olympus': Invalid timezone: \"Mars/Olympus\" (specify in IANA tzdata format, "
        "for example, America/New_York)"
    ]


def test_a_missing_or_broken_file_is_one_line(tmp_path: Path):
    [missing] = problems(tmp_path, "")  # empty: not a mapping
    assert missing == "fleet.yaml:1: a fleet file is a mapping with name:, plans: and targets:"
    with pytest.raises(FleetError, match=r"nosuch.yaml: cannot read the fleet file \(No such file"):
        read_fleet(tmp_path / "nosuch.yaml")
    [broken] = problems(tmp_path, "name: x\nplans: {a: [\n")
    assert broken.startswith("fleet.yaml:3: not valid YAML: ")


def test_every_strategy_names_a_flow_that_takes_a_target_and_a_repository():
    for strategy, entrypoint in STRATEGIES.items():
        flow = load_flow(entrypoint, ROOT)
        parameters = flow.parameters.properties
        assert {"target", "repository"} <= set(parameters), (strategy, list(parameters))


def test_host_queues_are_named_for_the_host():
    assert host_queue("db7.example.com") == "host-db7.example.com"
    assert host_queue("::1") == "host---1"


@pytest.mark.parametrize(
    ("settings", "strategy", "expected"),
    [
        (PostgresSettings(), "full", None),
        (PostgresSettings(mode="physical", wal_spool="/spool"), "full", None),  # pg_basebackup: remote
        (PostgresSettings(mode="physical", wal_spool="/spool"), "archive-logs", "the WAL spool /spool"),
        (PostgresSettings(mode="physical"), "incremental", None),  # 17+: pg_basebackup --incremental
        (PostgresSettings(mode="physical", data_directory="/pg"), "differential", "the data directory /pg"),
        (PostgresSettings(mode="physical", data_directory="/pg"), "drill", None),
        (RedisSettings(), "full", None),
        (RedisSettings(data_dir="/r"), "full", "the Redis dir /r (local mode)"),
        (RedisSettings(data_dir="/r"), "incremental", "the Redis dir /r (local mode)"),
        (RedisSettings(data_dir="/r"), "drill", None),  # restores into a scratch server on the worker
        (MongoSettings(), "archive-logs", None),
        (ClickHouseSettings(backup_dir="/b"), "full", "the backup disk 'backups' at /b"),
        (ClickHouseSettings(backup_dir="/b"), "drill", "the backup disk 'backups' at /b"),
        (ClickHouseSettings(backup_dir="/b"), "verify", None),
        (
            ClickHouseSettings(interface="chdb", chdb_path="/c", target_name="c"),
            "full",
            "the chDB data directory /c (ClickHouse runs in the worker's process)",
        ),
    ],
)
def test_local_access_comes_from_the_target_settings(settings, strategy: str, expected: str | None):
    assert settings.local_access(strategy) == expected


def test_a_spool_dir_parameter_makes_archive_logs_local():
    assert PostgresSettings(mode="physical").local_access("archive-logs", {"spool_dir": "/s"}) == "the WAL spool /s"


def test_the_example_fleet_reads():
    fleet = read_fleet(ROOT / "fleet.example.yaml")
    assert [t.ref for t in fleet.targets] == [
        "postgres-target/demo",
        "postgres-target/demo-physical",
        "redis-target/demo",
        "mongo-target/demo",
        "clickhouse-target/demo",
    ]
    assert fleet.targets[-1].host == "127.0.0.1"
