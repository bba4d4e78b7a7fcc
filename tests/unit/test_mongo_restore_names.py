"""The rename rules restores and the oplog replay share (names.py), and the restore plan built on
them (restore_plan.py): where each collection lands, and what is refused before anything is
written."""

from __future__ import annotations

import pytest

from vaultflow.engines.mongodb.names import RenameRule, RenameRules
from vaultflow.engines.mongodb.replay_units import Namespaces
from vaultflow.engines.mongodb.restore_plan import ArchivedCollection, plan_restore
from vaultflow.errors import ConfigError
from vaultflow.manifest import StoredObject


def test_a_rule_carries_the_star_over_dots_included():
    rule = RenameRule("app.*", "app_copy.*")
    assert rule.apply("app.orders") == "app_copy.orders"
    assert rule.apply("app.a.b c") == "app_copy.a.b c"
    assert rule.apply("app.") == "app_copy."  # the star may match nothing: restore_plan refuses the result
    assert rule.apply("apps.x") is None
    assert RenameRule("*.log", "logs.*").apply("web.log") == "logs.web"
    assert RenameRule("app.orders", "x.y").apply("app.orders") == "x.y"
    assert RenameRule("app.orders", "x.y").apply("app.orders2") is None


def test_the_first_matching_rule_wins_in_order():
    rules = RenameRules.parse({"app.orders": "archive.orders", "app.*": "copy.*"})
    assert rules.target("app.orders") == "archive.orders"
    assert rules.target("app.users") == "copy.users"
    assert rules.target("web.users") is None
    assert str(rules.rule_for("app.users")) == "'app.*' -> 'copy.*'"
    assert not RenameRules.parse(None) and not RenameRules.parse({})


@pytest.mark.parametrize(
    "rename, named",
    [
        ({"app.*": "copy"}, "'app.*' -> 'copy'"),
        ({"a.*.*": "b.*.*"}, "'a.*.*' -> 'b.*.*'"),
        ({"app": "b.*"}, "'app' -> 'b.*'"),
        ({"": "b.x"}, "'' -> 'b.x'"),
    ],
)
def test_malformed_rules_are_refused_naming_the_rule(rename, named):
    with pytest.raises(ConfigError, match=f"rename {named}"):
        RenameRules.parse(rename)


def test_the_replay_uses_the_same_rules():
    names = Namespaces({"app.*": "copy.*"})
    assert names.target("app.x") == "copy.x" and names.target("web.x") == "web.x"
    with pytest.raises(ConfigError, match="at most one"):
        Namespaces({"app.*": "copy"})


def archive(db: str) -> StoredObject:
    return StoredObject(
        key=f"db/{db}.archive.zst",
        role="database-archive",
        database=db,
        format="x",
        raw_size=1,
        stored_size=1,
        sha256="0",
    )


ARCHIVED = {
    "app": [
        ArchivedCollection("orders", "collection"),
        ArchivedCollection("users", "collection"),
        ArchivedCollection("big_orders", "view", {"viewOn": "orders", "pipeline": []}),
        ArchivedCollection("$admin.system.users", ""),
    ],
    "web": [ArchivedCollection("users", "collection"), ArchivedCollection("log", "collection")],
}


def plan(rename, namespaces=None, objects=("app", "web")):
    return plan_restore(
        [archive(db) for db in objects],
        lambda db: f"{db}_restore",
        rules=RenameRules.parse(rename),
        namespaces=namespaces,
        archived=ARCHIVED,
    )


def test_without_rules_each_database_goes_whole_to_its_default():
    done = plan_restore([archive("app"), archive("web")], lambda db: f"{db}_restore")
    assert [(t.name, t.sources, t.parts[0].names) for t in done.targets] == [
        ("app_restore", ["app"], None),
        ("web_restore", ["web"], None),
    ]
    assert done.restored == {"app": "app_restore", "web": "web_restore"} and not done.renamed


def test_rules_move_collections_across_databases_and_unmatched_ones_go_to_the_default():
    done = plan({"app.orders": "reports.app_orders", "app.big_orders": "reports.big", "web.*": "site.*"})
    by_name = {t.name: t for t in done.targets}
    assert set(by_name) == {"reports", "app_restore", "site"}
    (reports,) = by_name["reports"].parts
    assert reports.names == {"orders": "app_orders", "big_orders": "big"}
    assert reports.view_on == {"big_orders": "app_orders"}, "the view reads the renamed collection"
    assert by_name["app_restore"].parts[0].names == {"users": "users"}
    assert done.restored["app.orders"] == "reports.app_orders" and done.restored["web.log"] == "site.log"
    assert "app.$admin.system.users" not in done.restored, "users and roles are no collections"
    assert done.users_into == {"app": None, "web": "site"}  # app's collections went two ways
    assert done.landed("app", "orders") == ("reports", "app_orders")
    assert done.restored_into({"site"}) == {"web.log": "site.log", "web.users": "site.users"}


def test_two_databases_can_fill_one_and_the_selection_comes_first():
    done = plan({"*.users": "people.*"}, namespaces=["*.users"])
    (people,) = done.targets
    assert people.name == "people" and people.sources == ["app", "web"] and people.label == "people"
    assert [p.names for p in people.parts] == [{"users": "app"}, {"users": "web"}]


def test_two_sources_on_one_namespace_are_refused_naming_both():
    with pytest.raises(ConfigError, match=r"both app\.users and web\.users to all\.users"):
        plan({"app.users": "all.users", "web.*": "all.*"})


def test_a_view_whose_collection_lands_elsewhere_is_refused():
    with pytest.raises(ConfigError, match=r"view app\.big_orders would land in app_restore.*app\.orders, in reports"):
        plan({"app.orders": "reports.orders"})


@pytest.mark.parametrize(
    "rename, problem",
    [
        ({"app.*": "admin.*"}, "system database"),
        ({"app.*": "a b.*"}, "may not contain ' '"),
        ({"app.orders": "x.system.orders"}, "system collections"),
        ({"app.orders": "x.a$b"}, r"'\$'"),
        ({"app.*": "x" * 64 + ".*"}, "at most 63 bytes"),
    ],
)
def test_renamed_names_mongodb_refuses_are_refused_up_front(rename, problem):
    with pytest.raises(ConfigError, match=problem):
        plan(rename, objects=("app",))
