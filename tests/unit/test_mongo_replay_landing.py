"""Where a replaying restore's namespaces land, without a server: what a run of oplog entries names
(oplog_scan.py) and the landing planned from it (replay_landing.py): the rename rules restores of
full backups use, the default target for the rest, and what is refused before any write."""

from __future__ import annotations

import pytest
from bson import Int64, Timestamp

from vaultflow.engines.mongodb.names import RenameRules
from vaultflow.engines.mongodb.oplog_scan import OplogScan, scan_entries
from vaultflow.engines.mongodb.replay_landing import ReplayNames, plan_landing
from vaultflow.engines.mongodb.replay_units import ReplayError
from vaultflow.errors import ConfigError


def entry(n: int, op: str, ns: str, o: dict, **fields) -> dict:
    return {"op": op, "ns": ns, "o": o, "ts": Timestamp(100, n), **fields}


def command(n: int, database: str, o: dict) -> dict:
    return entry(n, "c", f"{database}.$cmd", o)


def session(name: str) -> dict:
    return {"id": name.encode().ljust(16, b"\0"), "uid": b"\0" * 32}


def prepared(n: int, ops: list[dict], name: str) -> dict:
    prev = {"ts": Timestamp(0, 0), "t": Int64(-1)}
    o = {"applyOps": ops, "prepare": True}
    return entry(n, "c", "admin.$cmd", o, lsid=session(name), txnNumber=Int64(1), prevOpTime=prev)


ENTRIES = [
    entry(1, "i", "app.users", {"_id": 1}),
    entry(2, "u", "app.users", {"$v": 2, "diff": {"u": {"a": 1}}}, o2={"_id": 1}),
    command(3, "app", {"create": "made"}),
    command(4, "app", {"createIndexes": "made", "v": 2, "key": {"v": 1}, "name": "v_1"}),
    command(5, "app", {"renameCollection": "app.made", "to": "app.renamed", "dropTarget": False}),
    command(6, "app", {"create": "top", "viewOn": "renamed", "pipeline": []}),
    entry(7, "i", "app.system.views", {"_id": "app.v2", "viewOn": "users", "pipeline": []}),
    entry(8, "d", "web.log", {"_id": 3}),
    entry(9, "n", "", {"msg": "periodic noop"}),
    entry(10, "i", "config.transactions", {"_id": 1}),
    command(11, "web", {"dropDatabase": 1}),
    prepared(12, [{"op": "i", "ns": "app.ghost", "o": {"_id": 1}}], "a"),
    entry(13, "c", "admin.$cmd", {"abortTransaction": 1}, lsid=session("a"), txnNumber=Int64(1)),
    entry(14, "i", "app.system.profile", {"_id": 1}),
]


def test_the_scan_names_every_namespace_the_replay_writes_and_nothing_else():
    scan = scan_entries(ENTRIES)
    assert list(scan.namespaces) == ["app.users", "app.made", "app.renamed", "app.top", "app.v2", "web.log"]
    assert scan.namespaces["app.renamed"] == Timestamp(100, 5), "the first entry naming it"
    assert scan.renames == [(Timestamp(100, 5), "app.made", "app.renamed")]
    assert scan.views == [(Timestamp(100, 6), "app.top", "app.renamed"), (Timestamp(100, 7), "app.v2", "app.users")]
    assert scan.databases() == ["app", "web"]
    assert scan.entries == len(ENTRIES)


def test_the_scan_refuses_what_the_replay_would_refuse_before_any_write():
    commit = entry(1, "c", "admin.$cmd", {"commitTransaction": 1}, lsid=session("b"), txnNumber=Int64(1))
    with pytest.raises(ReplayError, match="commitTransaction of a prepared transaction"):
        scan_entries([commit])


def default(database: str) -> str:
    return f"{database}_restore_x"


def landing_for(rename: dict, scan: OplogScan, databases=("app", "web"), namespaces=None, planned=None):
    return plan_landing(RenameRules.parse(rename), default, list(databases), namespaces, scan, planned=planned)


def test_rules_first_then_the_default_target_under_the_own_name():
    scan = scan_entries(ENTRIES)
    rename = {"app.users": "people.members", "app.v2": "people.v2", "app.*": "copy.*", "*.log": "logs.*"}
    landing = landing_for(rename, scan)
    assert landing.planned == {
        "app.users": "people.members",
        "app.made": "copy.made",
        "app.renamed": "copy.renamed",
        "app.top": "copy.top",
        "app.v2": "people.v2",
        "web.log": "logs.web",
    }
    assert landing.targets() == ["people", "copy", "logs"]
    assert landing.source_of("copy", "renamed") == "app.renamed"
    assert landing.source_of("copy", "never_named") == "app.never_named", "rules invert for unplanned names"
    assert landing.source_of("people", "other") is None
    # without rules everything lands in its database's default target
    plain = landing_for({}, scan)
    assert plain.land("app.renamed") == ("app_restore_x", "renamed") and plain.land("web.log") == (
        "web_restore_x",
        "log",
    )
    assert plain.source_of("web_restore_x", "anything") == "web.anything"


def test_the_replay_writes_each_pass_where_its_targets_go():
    rename = {"app.users": "people.members", "app.v2": "people.v2", "app.*": "copy.*"}
    landing = landing_for(rename, scan_entries(ENTRIES))
    names = ReplayNames(landing, {"copy": "copy_vf_1234"})
    assert names.included("app.made") and names.target("app.made") == "copy_vf_1234.made"
    assert not names.included("app.users"), "people is another pass's target"
    assert not names.included("other.x"), "a database the restore does not take"
    selected = landing_for({"app.*": "copy.*"}, scan_entries(ENTRIES), namespaces=["app.made", "app.renamed"])
    assert not ReplayNames(selected, {"copy": "copy"}).included("app.users")


def test_two_sources_on_one_namespace_are_refused_naming_both_and_the_entry():
    scan = scan_entries(ENTRIES)
    with pytest.raises(ConfigError, match=r"both app\.users and app\.made \(named by oplog entry 100:3\) to copy\.x"):
        landing_for({"app.users": "copy.x", "app.made": "copy.x"}, scan)
    # a collection of the full and one the oplog makes
    with pytest.raises(ConfigError, match=r"both app\.orders and app\.made .* to copy\.orders"):
        landing_for({"app.made": "copy.orders"}, scan, planned={"app.orders": "copy.orders"})


def test_a_rename_across_target_databases_is_refused_naming_the_entry():
    scan = scan_entries(ENTRIES)
    with pytest.raises(
        ConfigError, match=r"oplog entry 100:5 renames app\.made to app\.renamed, .*different databases"
    ):
        landing_for({"app.made": "copy.made"}, scan)
    # both sides in one database, renamed there: fine
    assert landing_for({"app.made": "copy.made", "app.renamed": "copy.renamed", "app.*": "copy.*"}, scan)


def test_a_rename_into_the_restore_from_outside_it_is_refused():
    scan = scan_entries(ENTRIES)
    with pytest.raises(ConfigError, match=r"renames app\.made to app\.renamed, but app\.made is not restored"):
        landing_for({}, scan, namespaces=["app.renamed", "app.users", "app.top", "app.v2"])
    # out of the restore: the replay drops the source, nothing to refuse
    assert landing_for({}, scan, namespaces=["app.made"])


def test_a_view_landing_away_from_its_collection_is_refused():
    scan = scan_entries(ENTRIES)
    with pytest.raises(ConfigError, match=r"view app\.v2 \(oplog entry 100:7\) would land in app_restore_x"):
        landing_for({"app.users": "people.users"}, scan)


def test_a_landing_mongodb_refuses_is_refused_naming_the_rule():
    with pytest.raises(ConfigError, match=r"rename 'app.made' -> 'bad\$db.x' sends app\.made to bad\$db\.x"):
        landing_for({"app.made": "bad$db.x"}, scan_entries(ENTRIES))
