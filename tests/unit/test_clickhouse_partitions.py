"""Choosing partitions of ClickHouse tables to restore, without a server: the option's shape (typed,
and as a person types it on the command line), which fingerprint units a restore compares, and
the RESTORE statement it runs."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from vaultflow.cli_restore import _option_value
from vaultflow.engines.clickhouse.fingerprint import (
    METHOD,
    PARTITION_METHOD,
    partition_unit,
    partitions_of,
    table_units,
)
from vaultflow.engines.clickhouse.restore import chosen_units
from vaultflow.engines.clickhouse.settings import ClickHouseRestoreOptions
from vaultflow.manifest import Fingerprint


def fp(count: int, method: str = METHOD) -> Fingerprint:
    return Fingerprint(count=count, digest=f"{count:016x}:schema", method=method)


HELD = {
    "events": fp(6),
    partition_unit("events", "a1"): fp(2, PARTITION_METHOD),
    partition_unit("events", "b2"): fp(4, PARTITION_METHOD),
    "flags": fp(3),
    # a table whose name starts like a partition unit of `events` is still a table
    "events PARTITION ID 'a1' x": fp(1),
}


def test_partition_units_are_told_by_method_and_read_back_exactly():
    assert partition_unit("events", "a1") == "events PARTITION ID 'a1'"
    assert set(table_units(HELD)) == {"events", "flags", "events PARTITION ID 'a1' x"}
    assert partitions_of(HELD, "events") == {"a1": fp(2, PARTITION_METHOD), "b2": fp(4, PARTITION_METHOD)}
    assert partitions_of(HELD, "flags") == {}
    odd = {partition_unit("t'x", "p"): fp(1, PARTITION_METHOD)}  # quoted, so read back whole
    assert partitions_of(odd, "t'x") == {"p": fp(1, PARTITION_METHOD)} and partitions_of(odd, "t") == {}


def test_a_restore_compares_whole_tables_or_the_chosen_partitions_only():
    whole = ClickHouseRestoreOptions()
    assert set(chosen_units(HELD, whole)) == {"events", "flags", "events PARTITION ID 'a1' x"}
    some = ClickHouseRestoreOptions(partitions={"events": ["b2"]})
    assert chosen_units(HELD, some) == {partition_unit("events", "b2"): fp(4, PARTITION_METHOD)}
    assert set(chosen_units(HELD, some, every_partition=True)) == {
        partition_unit("events", "a1"),
        partition_unit("events", "b2"),
    }, "the copy's other partitions are listed, so one restored by mistake shows as unexpected"
    mixed = ClickHouseRestoreOptions(tables=["flags", "events"], partitions={"events": ["a1"]})
    assert set(chosen_units(HELD, mixed)) == {"flags", partition_unit("events", "a1")}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("events=202401", {"events": ["202401"]}),
        ("events=202401 202402, visits=all", {"events": ["202401", "202402"], "visits": ["all"]}),
        ('{"events": ["202401", "202402"]}', {"events": ["202401", "202402"]}),
    ],
)
def test_partitions_on_the_command_line(text, expected):
    field = ClickHouseRestoreOptions.model_fields["partitions"]
    assert _option_value(TypeAdapter(field.annotation), text) == expected


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"partitions": {"events": ["a"]}, "structure_only": True}, "exclude each other"),
        ({"partitions": {"events": []}}, r"names no partition of \['events'\]"),
        ({"partitions": {}}, "names no partition of any table"),
        (
            {"tables": ["flags"], "partitions": {"events": ["a"]}},
            "table 'events', which tables=\\['flags'\\] leaves out",
        ),
    ],
)
def test_partitions_that_cannot_be_meant_are_refused(options, message):
    with pytest.raises(ValidationError, match=message):
        ClickHouseRestoreOptions(**options)


def test_restored_tables():
    assert ClickHouseRestoreOptions().restored_tables() is None
    assert ClickHouseRestoreOptions(partitions={"e": ["1"]}).restored_tables() == ["e"]
    assert ClickHouseRestoreOptions(tables=["f", "e"], partitions={"e": ["1"]}).restored_tables() == ["f", "e"]
