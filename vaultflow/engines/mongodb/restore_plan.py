"""Where each collection of a restore lands: the selection (`namespaces`), then the renaming
(`rename`, names.py), grouped by the database each lands in.

Without rename every selected collection of a source database lands in that database's target
(`<db>_restore_<time>`, or `into`) under its own name: one part per database, as before. With
rename, each selected 'db.collection' lands where the first matching rule sends it, or, when no
rule matches, in its database's default target under its own name; collections may move across
databases, and several source databases may fill one target. Checked before anything is
written (ConfigError naming what is at fault): two sources landing on one namespace, a renamed
name MongoDB refuses (an empty or invalid database name, a system database, a collection name
that is empty, has '$' or starts with 'system.'), and a view whose collection lands in another
database than the view (a view reads its own database only).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vaultflow.engines.mongodb.archive_format import is_special_namespace
from vaultflow.engines.mongodb.names import RenameRules, split_ns
from vaultflow.engines.mongodb.settings import SYSTEM_DATABASES, namespace_matches
from vaultflow.errors import ConfigError
from vaultflow.manifest import StoredObject

SERVER_INVALID_DB_CHARS = '/\\. "$\x00'  # what MongoDB refuses in a database name on every platform
MAX_DB_BYTES = 63


@dataclass(frozen=True)
class ArchivedCollection:
    """A collection or view as a backup's archive declares it: name, type ('collection',
    'view', ...) and its options (a view's `viewOn`, `pipeline`)."""

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Part:
    """What one archive contributes to one target database. `names`: source collection ->
    collection in the target (None: every collection the selection takes, under its own name);
    `view_on`: a view's source name -> the collection it reads in the target (renamed views).
    `obj` None: a database the full backup does not hold (made later: the oplog replay creates
    it), named by `database`."""

    obj: StoredObject | None
    names: dict[str, str] | None = None
    view_on: dict[str, str] = field(default_factory=dict)
    database: str = ""

    @property
    def source(self) -> str:
        return (self.obj.database or "") if self.obj is not None else self.database


@dataclass
class TargetDatabase:
    """A database the restore writes, and the parts that fill it (in manifest order)."""

    name: str
    parts: list[Part] = field(default_factory=list)

    @property
    def sources(self) -> list[str]:
        return list(dict.fromkeys(part.source for part in self.parts))

    @property
    def label(self) -> str:
        """How comparison rows of the whole database name it: its source database when it has
        one, else its own name."""
        sources = self.sources
        return sources[0] if len(sources) == 1 else self.name


@dataclass
class RestorePlan:
    """The target databases in order of first appearance; `restored`: what RestoreResult.restored
    reports once they compared equal (source database -> target database without rename;
    'db.collection' -> 'db.collection' with rename); `users_into`: where each source database's
    users and roles go (None when its collections land in several databases)."""

    targets: list[TargetDatabase]
    restored: dict[str, str]
    users_into: dict[str, str | None]
    renamed: bool = False

    def restored_into(self, databases: set[str]) -> dict[str, str]:
        """`restored`, only what landed in `databases`."""
        return {k: v for k, v in self.restored.items() if (split_ns(v)[0] if self.renamed else v) in databases}

    def landed(self, database: str, collection: str) -> tuple[str, str] | None:
        """Where source collection `database.collection` landed, or None when not restored."""
        for target in self.targets:
            for part in target.parts:
                if part.source == database and part.names is not None and collection in part.names:
                    return target.name, part.names[collection]
                if part.source == database and part.names is None:
                    return target.name, collection
        return None


def plan_restore(
    objects: Sequence[StoredObject],
    default_target: Callable[[str], str],
    *,
    rules: RenameRules | None = None,
    namespaces: Sequence[str] | None = None,
    archived: Mapping[str, Sequence[ArchivedCollection]] | None = None,
) -> RestorePlan:
    """The plan for restoring `objects` (one archive per source database). `default_target(db)`
    names where a database's collections land when no rule moves them; `archived[db]` lists
    each archive's collections and views (from its prelude; needed with `rules`). ConfigError as
    the module says."""
    if not rules:
        targets = [TargetDatabase(default_target(o.database or ""), [Part(o)]) for o in objects]
        check_database_names([t.name for t in targets])
        restored = {o.database or "": t.name for o, t in zip(objects, targets, strict=True)}
        return RestorePlan(targets, restored, dict(restored))
    if archived is None:
        raise ValueError("plan_restore with rename rules needs the archives' collections")
    landed_from: dict[str, str] = {}  # target namespace -> source namespace
    parts: dict[tuple[str, int], Part] = {}
    users_into: dict[str, set[str]] = {}
    for index, obj in enumerate(objects):
        source = obj.database or ""
        default = default_target(source)

        def land(collection: str, source: str = source, default: str = default) -> tuple[str, str]:
            ns = f"{source}.{collection}"
            return split_ns(rules.target(ns) or f"{default}.{collection}")

        for entry in archived.get(source, ()):
            if is_special_namespace(source, entry.name) or (
                namespaces is not None and not namespace_matches(list(namespaces), source, entry.name)
            ):
                continue
            database, collection = land(entry.name)
            where = f"{database}.{collection}"
            check_target(f"{source}.{entry.name}", database, collection, rules)
            if where in landed_from:
                raise ConfigError(
                    f"rename sends both {landed_from[where]} and {source}.{entry.name} to {where}: "
                    "change the rules so every collection lands on its own name"
                )
            landed_from[where] = f"{source}.{entry.name}"
            part = parts.setdefault((database, index), Part(obj, names={}))
            assert part.names is not None
            part.names[entry.name] = collection
            users_into.setdefault(source, set()).add(database)
            if entry.type == "view":
                view_db, view_on = land(str(entry.options.get("viewOn", "")))
                if view_db != database:
                    raise ConfigError(
                        f"view {source}.{entry.name} would land in {database}, but the collection it reads, "
                        f"{source}.{entry.options.get('viewOn')}, in {view_db}: a view reads its own database only; "
                        "rename both into one database"
                    )
                part.view_on[entry.name] = view_on
    by_name: dict[str, TargetDatabase] = {}
    for (database, _), part in parts.items():
        by_name.setdefault(database, TargetDatabase(database)).parts.append(part)
    restored = {source: target for target, source in landed_from.items()}
    restored = {source: restored[source] for source in sorted(restored)}
    into = {source: (names.pop() if len(names) == 1 else None) for source, names in users_into.items()}
    return RestorePlan(list(by_name.values()), restored, into, renamed=True)


def check_target(source: str, database: str, collection: str, rules: RenameRules) -> None:
    """ConfigError naming the rule that sends `source` to a name MongoDB refuses or that
    vaultflow will not write (a system database or collection)."""
    rule = rules.rule_for(source)
    how = f"rename {rule}" if rule is not None else "its default restore name"
    problem = database_name_problem(database)
    if problem is None and not collection:
        problem = "the collection name is empty"
    if problem is None and ("$" in collection or "\x00" in collection):
        problem = "collection names may not contain '$' or NUL"
    if problem is None and collection.startswith("system."):
        problem = "vaultflow does not restore into system collections"
    if problem is not None:
        raise ConfigError(f"{how} sends {source} to {database}.{collection}: {problem}")


def database_name_problem(database: str) -> str | None:
    """Why MongoDB (or vaultflow) would refuse `database` as a restore target, or None."""
    if not database:
        return "the database name is empty"
    if database in SYSTEM_DATABASES:
        return f"{database} is a system database; vaultflow restores into user databases only"
    bad = sorted({char for char in database if char in SERVER_INVALID_DB_CHARS})
    if bad:
        return f"database names may not contain {''.join(bad)!r}"
    if len(database.encode()) > MAX_DB_BYTES:
        return f"database names are at most {MAX_DB_BYTES} bytes"
    return None


def check_database_names(names: Sequence[str]) -> None:
    """ConfigError naming a target database MongoDB would refuse."""
    for name in names:
        problem = database_name_problem(name)
        if problem is not None:
            raise ConfigError(f"cannot restore into database {name!r}: {problem}")
