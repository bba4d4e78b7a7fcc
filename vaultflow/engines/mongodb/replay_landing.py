"""Where each collection of a restore that replays the oplog lands, planned before anything is
written, from the full's archives and every namespace the replayed oplog names (oplog_scan.py).

Each namespace is selected (`namespaces` globs over source names), then lands where the first
rename rule sends it (names.py) or, no rule matching, in its database's default target under
its own name: the rules restore_plan.py applies to the full's archives, applied to the replay
too, so a collection lands in the same place whether its restore replays the oplog or not.

Refused before the first write, with a ConfigError naming the namespaces (and the oplog entry
where one is at fault):
- two source namespaces landing on one (across the archives and the oplog; restore_plan.py
  has already refused it within the archives);
- a landing MongoDB refuses (restore_plan.check_target);
- a view whose collection lands in another database (a view reads its own database only);
- a renameCollection whose two sides land in different databases: the replay would move a
  collection between databases, which mongod does by copying it and SecantusDB does by
  dropping its options, and which a pass that writes one target database cannot do at all;
- a renameCollection into the restored namespaces from outside them (its documents are unknown).

The replay then runs with `ReplayNames`: the landing, each target database mapped to the
database the pass writes for it (a scratch copy first when the target exists).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vaultflow.engines.mongodb.consistency import ts_text
from vaultflow.engines.mongodb.names import RenameRule, RenameRules, split_ns
from vaultflow.engines.mongodb.oplog_scan import OplogScan
from vaultflow.engines.mongodb.restore_plan import check_target
from vaultflow.engines.mongodb.settings import namespace_matches
from vaultflow.errors import ConfigError


@dataclass
class Landing:
    """Where the source namespaces of a restore land. `databases`: the source databases it
    restores; `namespaces`: the selection (None: everything); `planned`: source namespace ->
    target namespace for every namespace plan_landing checked."""

    rules: RenameRules
    default_target: Callable[[str], str]
    databases: Sequence[str]
    namespaces: Sequence[str] | None = None
    planned: dict[str, str] = field(default_factory=dict)
    _sources: dict[str, str] = field(default_factory=dict, repr=False)  # target namespace -> source

    def selected(self, ns: str) -> bool:
        """Whether source namespace `ns` is restored: its database is, and the selection takes it."""
        database, collection = split_ns(ns)
        if database not in self.databases:
            return False
        return self.namespaces is None or namespace_matches(list(self.namespaces), database, collection)

    def land(self, ns: str) -> tuple[str, str]:
        """(database, collection) where source namespace `ns` lands."""
        database, collection = split_ns(ns)
        return split_ns(self.rules.target(ns) or f"{self.default_target(database)}.{collection}")

    def targets(self) -> list[str]:
        """The target databases of the planned namespaces, in order of first appearance."""
        return list(dict.fromkeys(split_ns(target)[0] for target in self.planned.values()))

    def source_of(self, database: str, collection: str) -> str | None:
        """The selected source namespace that lands on `database.collection`, or None when none
        does (or, for a namespace not planned, more than one could)."""
        where = f"{database}.{collection}"
        if where in self._sources:
            return self._sources[where]
        candidates = {RenameRule(rule.target, rule.source).apply(where) for rule in self.rules.rules}
        candidates |= {f"{source}.{collection}" for source in self.databases if self.default_target(source) == database}
        found = [
            ns for ns in candidates if ns is not None and self.selected(ns) and self.land(ns) == (database, collection)
        ]
        return found[0] if len(found) == 1 else None

    def place(self, ns: str, where: str = "") -> None:
        """Plan source namespace `ns` when selected; ConfigError when its landing is refused or
        taken by another source. `where` says where it came from, for the message."""
        if not self.selected(ns) or ns in self.planned:
            return
        database, collection = self.land(ns)
        try:
            check_target(ns, database, collection, self.rules)
        except ConfigError as exc:
            raise ConfigError(f"{exc}{where}") from None
        self.add(ns, f"{database}.{collection}", where)

    def add(self, source: str, target: str, where: str = "") -> None:
        """Record that `source` lands on `target`; ConfigError when another source lands there."""
        other = self._sources.get(target)
        if other is not None and other != source:
            raise ConfigError(
                f"rename sends both {other} and {source}{where} to {target}: change the rules so every "
                "collection lands on its own name"
            )
        self._sources[target] = source
        self.planned.setdefault(source, target)


def plan_landing(
    rules: RenameRules,
    default_target: Callable[[str], str],
    databases: Sequence[str],
    namespaces: Sequence[str] | None,
    scan: OplogScan,
    *,
    planned: Mapping[str, str] | None = None,
    expected: Iterable[str] = (),
) -> Landing:
    """The landing of a replaying restore of source `databases`, checked as the module says.
    `planned`: source -> target namespace of the archives' collections (restore_plan's, already
    checked among themselves); `expected`: the source namespaces the expected backup holds;
    `scan`: what the replayed oplog names. ConfigError naming the namespaces otherwise."""
    landing = Landing(rules, default_target, list(databases), list(namespaces) if namespaces is not None else None)
    for source, target in (planned or {}).items():
        landing.add(source, target, " (from the full backup)")
    for ns, ts in scan.namespaces.items():
        landing.place(ns, f" (named by oplog entry {ts_text(ts)})")
    for ns in expected:
        landing.place(ns)
    for ts, view, view_on in scan.views:
        if not landing.selected(view):
            continue
        view_db, on_db = landing.land(view)[0], landing.land(view_on)[0]
        if view_db != on_db:
            raise ConfigError(
                f"view {view} (oplog entry {ts_text(ts)}) would land in {view_db}, but the collection it reads, "
                f"{view_on}, in {on_db}: a view reads its own database only; rename both into one database"
            )
    for ts, source, to in scan.renames:
        _check_rename(landing, ts_text(ts), source, to)
    return landing


def _check_rename(landing: Landing, ts: str, source: str, to: str) -> None:
    keep_source, keep_to = landing.selected(source), landing.selected(to)
    if keep_to and not keep_source:
        raise ConfigError(
            f"oplog entry {ts} renames {source} to {to}, but {source} is not restored (databases, namespaces): "
            f"the documents {to} holds after it are unknown; restore {source} too, or leave {to} out"
        )
    if not (keep_source and keep_to):
        return  # renamed out of the restore: the replay drops it from the copy
    (from_db, from_coll), (to_db, to_coll) = landing.land(source), landing.land(to)
    if from_db != to_db:
        database = split_ns(source)[0]
        raise ConfigError(
            f"oplog entry {ts} renames {source} to {to}, which would land in different databases "
            f"({from_db}.{from_coll} and {to_db}.{to_coll}): the replay does not move collections between "
            f"databases; rename both into one database (e.g. {{'{database}.*': '<target>.*'}}), or restore a point "
            "before the rename"
        )


@dataclass
class ReplayNames:
    """The replay's view of a Landing (replay_units.NamespaceMap) for one pass: `into` maps each
    target database the pass writes to the database it writes for it (itself, or its scratch
    copy); namespaces landing in other target databases are left to other passes."""

    landing: Landing
    into: Mapping[str, str]

    def included(self, ns: str) -> bool:
        return self.landing.selected(ns) and self.landing.land(ns)[0] in self.into

    def target(self, ns: str) -> str:
        database, collection = self.landing.land(ns)
        return f"{self.into.get(database, database)}.{collection}"

    def drop_database(self, client: Any, database: str, session: Any) -> bool:
        """dropDatabase of source `database`: every collection and view this pass wrote from it,
        wherever it landed, dropped (a target database may hold other sources' collections).
        Returns whether anything was dropped."""
        dropped = False
        for target, actual in self.into.items():
            for name in client[actual].list_collection_names(session=session):
                source = None if name.startswith("system.") else self.landing.source_of(target, name)
                if source is not None and split_ns(source)[0] == database:
                    client[actual].drop_collection(name, session=session)
                    dropped = True
        return dropped
