"""The namespaces an oplog replay will touch, read before a restore writes anything: where each
lands, and what cannot land, is then planned from them (replay_landing.py).

    scan = scan_entries(point.decoded())
    scan.namespaces    {'db.collection': ts of the first entry naming it}, in oplog order
    scan.renames       renameCollection entries: (ts, 'db.from', 'db.to')
    scan.views         views created or redefined: (ts, 'db.view', 'db.viewOn')

An entry names a namespace when it writes it (insert, update, delete), creates, drops or changes
it (collMod, indexes, convertToCapped, emptycapped) or renames it (both sides). Entries are
grouped as the replay groups them (replay_units.units): an aborted or uncommitted transaction is
not applied, so it names nothing. What the replayer skips (no-ops, the local and config
databases, record id bookkeeping) and system collections name nothing; mongod's writes to
`<db>.system.views` name the view. An entry the replay will refuse (an unknown command, a view
change it cannot read) is left to the replay, which names it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from bson import Timestamp

from vaultflow.engines.mongodb.replay import INTERNAL_DATABASES
from vaultflow.engines.mongodb.replay_commands import HANDLERS, view_definition
from vaultflow.engines.mongodb.replay_delta import UntranslatableUpdate
from vaultflow.engines.mongodb.replay_units import Entry, split_ns, units


@dataclass
class OplogScan:
    """What a run of oplog entries names (see the module docstring); `entries`: how many were read."""

    namespaces: dict[str, Timestamp] = field(default_factory=dict)
    renames: list[tuple[Timestamp, str, str]] = field(default_factory=list)
    views: list[tuple[Timestamp, str, str]] = field(default_factory=list)
    entries: int = 0

    def databases(self) -> list[str]:
        """The databases of the named namespaces, in order of first appearance."""
        return list(dict.fromkeys(split_ns(ns)[0] for ns in self.namespaces))

    def name(self, ns: Any, ts: Timestamp) -> None:
        """Record that the entry at `ts` names `ns` (system collections and malformed names: nothing)."""
        if not isinstance(ns, str):
            return
        database, collection = split_ns(ns)
        if database and collection and not collection.startswith("system."):
            self.namespaces.setdefault(ns, ts)


def scan_entries(entries: Iterable[Entry]) -> OplogScan:
    """Read decoded oplog `entries` (in ts order) to the end and return what they name. Raises
    ReplayError where the replay would refuse the same entries before applying any (a transaction
    whose first entries precede them)."""
    scan = OplogScan()

    def counted() -> Iterator[Entry]:
        for entry in entries:
            scan.entries += 1
            yield entry

    for unit in units(counted()):
        if unit.dropped:
            continue
        for op in unit.ops:
            _scan_op(scan, op)
    return scan


def _scan_op(scan: OplogScan, op: Mapping[str, Any]) -> None:
    kind, ns, ts = op.get("op"), op.get("ns", ""), op.get("ts")
    database, collection = split_ns(ns) if isinstance(ns, str) else ("", "")
    if kind not in ("i", "u", "d", "c") or database in INTERNAL_DATABASES:
        return
    if collection == "system.views":
        _scan_view(scan, op)
        return
    if kind != "c":
        scan.name(ns, ts)
        return
    o = op.get("o")
    if not isinstance(o, Mapping) or not o:
        return
    command = next(iter(o))
    if command == "renameCollection":
        source, to = o.get("renameCollection"), o.get("to")
        if isinstance(source, str) and isinstance(to, str):
            scan.name(source, ts)
            scan.name(to, ts)
            scan.renames.append((ts, source, to))
        return
    if command not in HANDLERS or command == "dropDatabase":
        return
    name = o[command]
    if not isinstance(name, str):
        return
    scan.name(f"{database}.{name}", ts)
    if command in ("create", "collMod") and isinstance(o.get("viewOn"), str):
        scan.views.append((ts, f"{database}.{name}", f"{database}.{o['viewOn']}"))


def _scan_view(scan: OplogScan, op: Mapping[str, Any]) -> None:
    """A mongod write to `<db>.system.views`: the view it creates, changes or drops."""
    kind, ts = op.get("op"), op.get("ts")
    key = (op.get("o2") if kind == "u" else op.get("o")) or {}
    view = key.get("_id") if isinstance(key, Mapping) else None
    if not isinstance(view, str) or "." not in view:
        return
    scan.name(view, ts)
    if kind == "d":
        return
    try:
        definition = view_definition(op["o"]) if kind == "u" else dict(op["o"])
    except (UntranslatableUpdate, KeyError, TypeError, ValueError):
        return  # the replay names it
    if isinstance(definition.get("viewOn"), str):
        scan.views.append((ts, view, f"{split_ns(view)[0]}.{definition['viewOn']}"))
