"""Oplog entries before replay (vaultflow/engines/mongodb/replay_units.py), without a server:
order, where a replay stops, namespace filters and renames, transactions grouped into units (mongod's
applyOps chains and prepared transactions as mongo-tools common/txn/meta.go reads them; SecantusDB's
same-ts statements as docs/mongodb-secantus.md records them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from bson import Int64, Timestamp

from vaultflow.engines.mongodb.replay_units import (
    Namespaces,
    ReplayError,
    entry_sort_key,
    units,
    until,
)
from vaultflow.errors import ConfigError

T0 = datetime(2026, 11, 1, 12, 0, 0)


def entry(n: int, op: str = "i", ns: str = "app.docs", o: dict | None = None, **fields) -> dict:
    return {
        "op": op,
        "ns": ns,
        "o": o or {"_id": n},
        "ts": Timestamp(100, n),
        "wall": T0 + timedelta(seconds=n),
        **fields,
    }


def test_sort_key_is_seconds_then_increment():
    later_second = {"ts": Timestamp(101, 1)}
    assert sorted([later_second, entry(9), entry(2)], key=entry_sort_key) == [entry(2), entry(9), later_second]


def test_until_ts_includes_the_limit_and_stops_reading():
    consumed = []

    def source():
        for n in range(1, 10):
            consumed.append(n)
            yield entry(n)

    kept = list(until(source(), until_ts=Timestamp(100, 4)))
    assert [e["ts"].inc for e in kept] == [1, 2, 3, 4] and consumed == [1, 2, 3, 4, 5]


def test_until_time_compares_wall_times_in_utc():
    entries = [entry(n) for n in range(1, 6)]
    assert len(list(until(entries, until_time=T0 + timedelta(seconds=3)))) == 3
    two_hours_east = timezone(timedelta(hours=2))
    aware = (T0 + timedelta(seconds=2)).replace(tzinfo=UTC).astimezone(two_hours_east)
    assert len(list(until(entries, until_time=aware))) == 2
    no_wall = [{**e, "wall": None} for e in entries]  # falls back to the ts seconds (100)
    assert len(list(until(no_wall, until_time=datetime.fromtimestamp(100, UTC)))) == 5


def test_rename_patterns():
    names = Namespaces({"app.orders": "archive.orders_2026", "app.*": "app_copy.*", "*.log": "logs.*"})
    assert names.target("app.orders") == "archive.orders_2026"  # first match wins
    assert names.target("app.users") == "app_copy.users"
    assert names.target("app.a.b") == "app_copy.a.b"
    assert names.target("web.log") == "logs.web"
    assert names.target("other.x") == "other.x"
    assert names.target("app2.x") == "app2.x"


@pytest.mark.parametrize("rename", [{"a.*": "b"}, {"a.*.*": "b.*.*"}, {"a": "b.*"}])
def test_rename_patterns_need_one_star_on_both_sides(rename):
    with pytest.raises(ConfigError, match="at most one"):
        Namespaces(rename)


def test_target_database_only_for_whole_database_renames():
    assert Namespaces({"app.*": "copy.*"}).target_database("app") == "copy"
    assert Namespaces({}).target_database("app") == "app"
    assert Namespaces({"app.orders": "copy.orders"}).target_database("app") is None  # other collections stay
    assert Namespaces({"app.*": "copy.x_*"}).target_database("app") is None  # names change
    assert Namespaces({"app.*": "copy.*"}).target_database("web") == "web"


def test_namespace_filter():
    assert Namespaces(patterns=["app.*", "web.users"]).included("app.x")
    assert not Namespaces(patterns=["app.*", "web.users"]).included("web.other")
    assert Namespaces().included("anything.at.all")
    assert not Namespaces(patterns=[]).included("app.x")


def session(name: str) -> dict:
    return {"id": name.encode().ljust(16, b"\0"), "uid": b"\0" * 32}


NULL_PREV = {"ts": Timestamp(0, 0), "t": Int64(-1)}


def txn(n: int, o: dict, lsid: str, number: int = 1, prev: int | None = None) -> dict:
    previous = {"ts": Timestamp(100, prev), "t": Int64(1)} if prev else NULL_PREV
    return entry(n, "c", "admin.$cmd", o, lsid=session(lsid), txnNumber=Int64(number), prevOpTime=previous)


def op(n: int) -> dict:
    return {"op": "i", "ns": "app.docs", "o": {"_id": n}}


def shapes(grouped) -> list:
    return [([o["o"]["_id"] for o in u.ops], u.transaction, u.dropped) for u in grouped]


def test_plain_entries_are_one_unit_each():
    assert shapes(units([entry(1), entry(2)])) == [([1], False, None), ([2], False, None)]


def test_secantus_transaction_statements_share_a_ts_and_become_one_unit():
    same_ts = {"ts": Timestamp(100, 5), "lsid": session("a"), "txnNumber": 3}
    grouped = list(
        units([entry(1), {**entry(2), **same_ts}, {**entry(3), **same_ts}, {**entry(4), **same_ts}, entry(6)])
    )
    assert shapes(grouped) == [([1], False, None), ([2, 3, 4], True, None), ([6], False, None)]
    assert grouped[1].ts == Timestamp(100, 5)


def test_mongod_partial_chain_applies_at_its_last_entry():
    entries = [
        txn(1, {"applyOps": [op(1)], "partialTxn": True}, "a"),
        entry(2),
        txn(3, {"applyOps": [op(3)], "partialTxn": True}, "a", prev=1),
        txn(4, {"applyOps": [op(4)], "count": 3}, "a", prev=3),
    ]
    grouped = list(units(entries))
    assert shapes(grouped) == [([2], False, None), ([1, 3, 4], True, None)]
    assert grouped[1].ts == Timestamp(100, 4) and [o["ts"] for o in grouped[1].ops] == [
        Timestamp(100, n) for n in (1, 3, 4)
    ]


def test_mongod_prepared_transactions_commit_or_abort():
    entries = [
        txn(1, {"applyOps": [op(1)], "prepare": True}, "a"),
        txn(2, {"applyOps": [op(2)], "prepare": True}, "b"),
        txn(3, {"commitTransaction": 1, "commitTimestamp": Timestamp(100, 3)}, "a", prev=1),
        txn(4, {"abortTransaction": 1}, "b", prev=2),
        txn(5, {"applyOps": [op(5)], "partialTxn": True}, "c"),
    ]
    assert shapes(units(entries)) == [([1], True, None), ([], True, "aborted"), ([], True, "uncommitted")]


def test_applyops_without_a_session_is_one_unit_flattened():
    nested = {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": [op(2), op(3)]}}
    [unit] = units([entry(1, "c", "admin.$cmd", {"applyOps": [op(1), nested]})])
    assert shapes([unit]) == [([1, 2, 3], True, None)]
    assert all(o["ts"] == Timestamp(100, 1) for o in unit.ops)


def test_a_chain_or_commit_whose_start_precedes_the_entries_raises():
    with pytest.raises(ReplayError, match=r"100:4 on admin\.\$cmd: transaction continues"):
        list(units([txn(4, {"applyOps": [op(4)], "count": 2}, "a", prev=3)]))
    with pytest.raises(ReplayError, match="commitTransaction of a prepared transaction"):
        list(units([txn(6, {"commitTransaction": 1}, "b", prev=5)]))
    with pytest.raises(ReplayError, match="applyOps is not a list"):
        list(units([entry(1, "c", "admin.$cmd", {"applyOps": {"op": "i"}})]))
