"""Oplog entries before they are applied: their order, where a replay stops, which namespaces it
takes and renames, and which entries belong together (transactions).

Entries are the documents of `local.oplog.rs` as pymongo decodes them (`ts` a bson Timestamp,
`wall` a naive UTC datetime), in ts order.

Transactions (what `units` groups):
- mongod logs a committed transaction as `op: "c"` entries `{applyOps: [ops...]}` on
  `admin.$cmd` carrying `lsid` and `txnNumber`. A large one is a chain: entries with
  `partialTxn: true` and then one without it; a prepared one ends with `prepare: true` and is
  committed by a later `{commitTransaction: 1}` entry or dropped by `{abortTransaction: 1}`.
  The transaction takes effect at the entry that commits it (mongo-tools common/txn/meta.go
  reads it the same way), so a replay that stops before that entry applies none of it.
- SecantusDB logs each statement as its own CRUD entry, all with the commit's `ts` and with
  `lsid` and `txnNumber` (docs/mongodb-secantus.md): consecutive entries sharing ts, lsid and
  txnNumber are one transaction.
- An `applyOps` without `lsid` (run by a user) is applied as one unit too.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from bson import Timestamp

from vaultflow.engines.mongodb.consistency import ts_text
from vaultflow.engines.mongodb.names import RenameRule, RenameRules, split_ns
from vaultflow.engines.mongodb.replay_delta import UntranslatableUpdate
from vaultflow.errors import VaultflowError

Entry = Mapping[str, Any]


class ReplayError(VaultflowError):
    """An oplog entry could not be applied or understood. The message names its ts (SECONDS:INC)
    and namespace (and the command, for commands); nothing after it was applied."""

    def __init__(self, message: str, ts: Timestamp | None = None, ns: str | None = None):
        where = f"oplog entry {ts_text(ts)}" if ts is not None else "oplog entry"
        super().__init__(f"{where} on {ns or '?'}: {message}")
        self.ts = ts
        self.ns = ns


class UnknownCommandError(ReplayError):
    """A command entry (`op: "c"`) this replayer does not know: it is not skipped, it stops."""


def entry_sort_key(entry: Entry) -> tuple[int, int]:
    """(seconds, increment) of the entry's ts: oplog order. Several SecantusDB entries share one."""
    ts = entry["ts"]
    return (ts.time, ts.inc)


def _utc_naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def until(
    entries: Iterable[Entry], *, until_ts: Timestamp | None = None, until_time: datetime | None = None
) -> Iterator[Entry]:
    """The entries up to and including `until_ts`, and whose wall time is <= `until_time` (a naive
    datetime is UTC; an entry without `wall` uses its ts seconds). Stops reading at the first
    entry past either limit, so entries must be in ts order. Entries of one SecantusDB transaction
    share ts and wall, so they are kept or cut together; a mongod transaction is cut by its
    committing entry (`units`)."""
    limit = _utc_naive(until_time) if until_time is not None else None
    for entry in entries:
        if until_ts is not None and entry_sort_key(entry) > (until_ts.time, until_ts.inc):
            return
        if limit is not None:
            wall = entry.get("wall")
            moment = _utc_naive(wall) if isinstance(wall, datetime) else datetime.fromtimestamp(entry["ts"].time, UTC)
            if _utc_naive(moment) > limit:
                return
        yield entry


# -- namespaces ---------------------------------------------------------------------------------


class NamespaceMap(Protocol):
    """What the replayer asks about source namespaces: whether to apply an entry on `ns`, where
    it lands ('db.collection'), and how a source database's dropDatabase lands. Namespaces below
    (rename patterns and globs), and replay_landing.ReplayNames (a restore's planned landing)."""

    def included(self, ns: str) -> bool: ...

    def target(self, ns: str) -> str: ...

    def drop_database(self, client: Any, database: str, session: Any) -> bool: ...


@dataclass(frozen=True)
class Namespaces:
    """Which source namespaces a replay applies (`patterns`: globs, all when None) and where they
    land (`rename`: {source pattern: target pattern}, each with at most one '*', the part it
    matches carried over: {"app.*": "app_copy.*"}; the first matching pattern wins: names.py,
    the rules restores of full backups use too)."""

    rename: Mapping[str, str] = field(default_factory=dict)
    patterns: Sequence[str] | None = None
    rules: RenameRules = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", RenameRules.parse(self.rename))  # ConfigError for a malformed rule

    def included(self, ns: str) -> bool:
        return self.patterns is None or any(fnmatch.fnmatchcase(ns, p) for p in self.patterns)

    def target(self, ns: str) -> str:
        """Where source namespace `ns` lands (itself when no pattern matches)."""
        return self.rules.target(ns) or ns

    def target_database(self, database: str) -> str | None:
        """Where a whole database lands, or None when its collections would not all land in one
        database under their own names (then a database-level command cannot be renamed)."""
        landed = {split_ns(self.target(f"{database}.{probe}")) for probe in ("vfprobe_a", "vf.probe_b")}
        names = {db for db, _ in landed}
        if len(names) != 1 or {coll for _, coll in landed} != {"vfprobe_a", "vf.probe_b"}:
            return None
        into = names.pop()
        for rule in self.rules.rules:  # patterns for some of its collections only
            sample = _sample(rule.source, database)
            if sample is not None and rule.apply(sample) != f"{into}.{split_ns(sample)[1]}":
                return None
        return into

    def drop_database(self, client: Any, database: str, session: Any) -> bool:
        """Apply dropDatabase of source `database` through `client` (a MongoClient): the renamed
        database dropped, or, with `patterns`, only its collections that match. Returns whether
        anything was dropped. UntranslatableUpdate when the patterns split the database."""
        target = self.target_database(database)
        if target is None:
            raise UntranslatableUpdate(
                f"dropDatabase of {database}: the rename patterns send its collections to different "
                "databases or names; rename whole databases ('db.*': 'other.*')"
            )
        if self.patterns is None:
            client.drop_database(target, session=session)
            return True
        names = client[target].list_collection_names(session=session)
        dropped = [c for c in names if self.included(f"{database}.{c}")]
        for collection in dropped:
            client[target].drop_collection(collection, session=session)
        return bool(dropped)


def _sample(source: str, database: str) -> str | None:
    """A namespace of `database` that pattern `source` matches, or None when it matches none."""
    if "*" not in source:
        return source if split_ns(source)[0] == database else None
    head, tail = source.split("*")
    prefix = f"{database}."
    candidate = head + "vfprobe" + tail if head.startswith(prefix) else prefix + "vfprobe" + tail
    if split_ns(candidate)[0] != database or RenameRule(source, source).apply(candidate) is None:
        return None
    return candidate


# -- units: what is applied together --------------------------------------------------------


@dataclass
class Unit:
    """Operations applied together: one entry, one transaction or one applyOps. `ops` are oplog
    operations (inner applyOps operations carry their entry's ts); `ts`/`ns` locate it in errors."""

    ops: list[dict[str, Any]]
    ts: Timestamp
    transaction: bool = False
    dropped: str | None = None  # "aborted" or "uncommitted": a transaction that is not applied


def _txn_id(entry: Entry) -> tuple[Any, Any] | None:
    lsid, number = entry.get("lsid"), entry.get("txnNumber")
    if lsid is None or number is None:
        return None
    key = lsid.get("id") if isinstance(lsid, Mapping) else lsid
    return (key, number)


def _inner_ops(entry: Entry) -> list[dict[str, Any]]:
    """The operations of an applyOps entry, nested applyOps flattened, each with the entry's ts
    (and wall) when it has none."""
    ops = entry["o"].get("applyOps")
    if not isinstance(ops, list):
        raise ReplayError("applyOps is not a list of operations", entry.get("ts"), entry.get("ns"))
    flat: list[dict[str, Any]] = []
    for op in ops:
        inner = {"ts": entry["ts"], "wall": entry.get("wall"), **op}
        if inner.get("op") == "c" and isinstance(inner.get("o"), Mapping) and "applyOps" in inner["o"]:
            flat.extend(_inner_ops(inner))
        else:
            flat.append(inner)
    return flat


def _null_prev(entry: Entry) -> bool:
    prev = entry.get("prevOpTime")
    return not isinstance(prev, Mapping) or prev.get("ts") in (None, Timestamp(0, 0))


def units(entries: Iterable[Entry]) -> Iterator[Unit]:
    """Group entries (in ts order) into units: transactions as one unit at their commit, an
    aborted prepared transaction as an empty unit with `aborted`, everything else one entry per
    unit. A commit whose earlier entries are not among `entries` (the replay started inside the
    transaction) raises ReplayError: applying part of it would be silently wrong. A transaction
    still open when the entries end (it commits after the last entry, if ever) comes last as an
    empty unit with `dropped="uncommitted"`; an aborted one as `dropped="aborted"`."""
    pending: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    group: list[dict[str, Any]] = []
    group_key: tuple[Any, ...] | None = None
    for entry in entries:
        op, o = entry.get("op"), entry.get("o")
        name = next(iter(o), None) if op == "c" and isinstance(o, Mapping) else None
        txn = _txn_id(entry)
        key = (entry_sort_key(entry), *txn) if txn is not None and op in ("i", "u", "d", "c") else None
        if name in ("applyOps", "commitTransaction", "abortTransaction"):
            key = None
        if group and key != group_key:
            yield Unit(group, group[0]["ts"], transaction=True)
            group = []
        if key is not None:
            group.append(dict(entry))
            group_key = key
            continue
        if name == "applyOps" and txn is not None:
            assert isinstance(o, Mapping)
            if txn not in pending and not _null_prev(entry):
                raise ReplayError(
                    "transaction continues one whose first entries precede the replayed range: "
                    "start the replay before the transaction's first entry",
                    entry["ts"],
                    entry.get("ns"),
                )
            pending.setdefault(txn, []).extend(_inner_ops(entry))
            if o.get("partialTxn") or o.get("prepare"):
                continue
            yield Unit(pending.pop(txn), entry["ts"], transaction=True)
        elif name == "applyOps":
            yield Unit(_inner_ops(entry), entry["ts"], transaction=True)
        elif name == "commitTransaction":
            if txn not in pending:
                raise ReplayError(
                    "commitTransaction of a prepared transaction whose entries precede the replayed range",
                    entry["ts"],
                    entry.get("ns"),
                )
            yield Unit(pending.pop(txn), entry["ts"], transaction=True)
        elif name == "abortTransaction":
            pending.pop(txn, None)
            yield Unit([], entry["ts"], transaction=True, dropped="aborted")
        else:
            yield Unit([dict(entry)], entry["ts"])
    if group:
        yield Unit(group, group[0]["ts"], transaction=True)
    for ops in pending.values():  # uncommitted at the end of the range: not applied
        yield Unit([], ops[0]["ts"] if ops else Timestamp(0, 0), transaction=True, dropped="uncommitted")
