"""Namespace renaming rules, as mongorestore's --nsFrom/--nsTo take them, shared by restores of full
backups (restore_plan.py) and by the oplog replay (replay_units.Namespaces): one definition.

    rules = RenameRules.parse({"app.orders": "archive.orders_2026", "app.*": "app_copy.*"})
    rules.target("app.users")   -> "app_copy.users"
    rules.target("web.users")   -> None (no rule matches)

A rule is `source -> target` over 'db.collection' text: either both sides without '*' (one
namespace renamed) or both with exactly one '*', which matches any text (dots included, empty
too) and carries it over: 'app.*' -> 'app_copy.*' moves every collection of app into app_copy;
'*.log' -> 'logs.*' moves every database's 'log' collection into logs, named after its database.
The first matching rule wins, in the order given. Kept free of pymongo (settings and flows may
import it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from vaultflow.errors import ConfigError

EXAMPLE = "e.g. {'app.*': 'app_copy.*'}"


def split_ns(ns: str) -> tuple[str, str]:
    """'db.coll' -> ('db', 'coll'); database names have no '.', collection names may."""
    database, _, collection = ns.partition(".")
    return database, collection


@dataclass(frozen=True)
class RenameRule:
    """One `source -> target` pair (both without '*', or both with exactly one)."""

    source: str
    target: str

    def __str__(self) -> str:
        return f"{self.source!r} -> {self.target!r}"

    def apply(self, ns: str) -> str | None:
        """`ns` renamed by this rule, or None when `source` does not match it."""
        if "*" not in self.source:
            return self.target if ns == self.source else None
        head, tail = self.source.split("*")
        if ns.startswith(head) and ns.endswith(tail) and len(ns) >= len(head) + len(tail):
            return self.target.replace("*", ns[len(head) : len(ns) - len(tail)])
        return None


@dataclass(frozen=True)
class RenameRules:
    """Rename rules in order; `target(ns)` applies the first that matches."""

    rules: tuple[RenameRule, ...] = ()

    @classmethod
    def parse(cls, rename: Mapping[str, str] | None) -> RenameRules:
        """Rules from {source pattern: target pattern}, checked: strings, the source not empty,
        neither empty, at most one '*' on each side and the same number on both. ConfigError
        naming the rule otherwise. (Whether a renamed namespace is a valid one is checked where
        it is used: restore_plan.py, the replay.)"""
        rules = []
        for source, target in (rename or {}).items():
            if not isinstance(source, str) or not isinstance(target, str):
                raise ConfigError(f"rename {source!r} -> {target!r}: both sides are 'db.collection' text ({EXAMPLE})")
            rule = RenameRule(source, target)
            stars = source.count("*")
            if stars > 1 or target.count("*") != stars:
                raise ConfigError(
                    f"rename {rule}: use at most one '*' on each side, the same number on both ({EXAMPLE}; "
                    "'app.orders': 'app.orders_old' renames one collection)"
                )
            if not source or not target:
                raise ConfigError(f"rename {rule}: neither side may be empty ({EXAMPLE})")
            rules.append(rule)
        return cls(tuple(rules))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def rule_for(self, ns: str) -> RenameRule | None:
        """The first rule whose source matches `ns`, or None."""
        return next((rule for rule in self.rules if rule.apply(ns) is not None), None)

    def target(self, ns: str) -> str | None:
        """Where `ns` lands by the first matching rule, or None when no rule matches."""
        rule = self.rule_for(ns)
        return rule.apply(ns) if rule is not None else None
