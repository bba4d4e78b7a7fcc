"""One chain walk: from a backup through its parents to the full it rests on.

Restore (every engine), verify (the chain check) and retention (keep the parents of what is
kept, delete what can never restore) all walk chains here; engines add only their own rules
(system identifier and timeline, AOF base) through EngineSpec.chain_rules.

The rules every chain follows, whatever the engine:
- a full backup is a chain's root and names no parent;
- an incremental names a parent of any kind, a differential names a full;
- the parent exists (a missing or unreadable one is named) and no parent link loops;
- (manifests) parent and child are of one engine, target and mode.

A child recorded as older than its parent is no broken link but a clock problem
(vaultflow.retention.clock_problems): backup times come from workers' clocks, and a backup a
slow-clocked worker took on a good parent restores fine. Retention holds it, parent choice skips
it, verify reports it.

    walk(start, lookup)            -> (links full-first, None) or (links walked, ChainFault)
    resolve(manifest, lookup)      -> [full, ..., manifest] or ChainBrokenError
    faults(refs)                   -> {id: ChainFault | None} for a whole catalog (retention)
    with_ancestors(ids, by_id)     -> ids plus every parent they rest on
    choose_parent(manifests, kind) -> the parent of a new incremental / differential
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from vaultflow.engines import registry
from vaultflow.errors import ChainBrokenError
from vaultflow.manifest import BackupKind, Manifest


class Link(Protocol):
    """What the walk needs of a backup: a Manifest or a retention BackupRef."""

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> BackupKind: ...

    @property
    def parent_id(self) -> str | None: ...


class ChainRules(Protocol):
    """An engine's own checks of one link (EngineSpec.chain_rules), run after the generic ones."""

    def check_link(self, parent: Manifest, child: Manifest) -> str | None:
        """None when `child` may follow `parent`; else why not, naming both (one sentence)."""
        ...


L = TypeVar("L", bound=Link)

# What went wrong at a link (ChainFault.problem).
NO_PARENT, FULL_WITH_PARENT, LOOP, MISSING, UNREADABLE, WRONG_KIND, RULE = (
    "no parent",
    "full with parent",
    "loop",
    "missing",
    "unreadable",
    "wrong kind",
    "rule",
)


@dataclass(frozen=True)
class ChainFault:
    """Why backup `start` cannot be restored: at link `child` (of `child_kind`), its parent
    `parent` is `problem`.

    `detail`: the words for it (what is missing, what a rule says). Rendered two ways: `error()`
    for restore and verify (a ChainBrokenError that says what to do), `reason()` for retention's
    plan ('chain broken: ...')."""

    start: str
    start_parent: str | None
    child: str
    child_kind: BackupKind
    parent: str | None
    problem: str
    detail: str

    def error(self) -> ChainBrokenError:
        return ChainBrokenError(
            f"cannot restore {self.start}: {self.detail}; restore another backup "
            "(a full one, or one whose chain is intact)"
        )

    def reason(self) -> str:
        if self.problem == LOOP:
            return f"chain broken: parent chain of {self.start} loops back to {self.parent}"
        if self.child != self.start:
            return f"chain broken: parent {self.start_parent} is broken"
        if self.problem == NO_PARENT:
            return f"chain broken: {self.child_kind.value} backup has no parent"
        if self.problem in (MISSING, UNREADABLE):
            return f"chain broken: parent {self.parent} is missing"
        return f"chain broken: {self.detail}"


def walk(
    start: L,
    lookup: Callable[[str], L | None],
    *,
    check_link: Callable[[L, L], str | None] | None = None,
    unreadable: Callable[[str], str | None] | None = None,
) -> tuple[list[L], ChainFault | None]:
    """Follow parent links from `start` to its full.

    `lookup(id)`: the backup with that id, or None. `unreadable(id)`: why a backup that lookup
    lacks could not be read (its manifest exists but is broken), or None. `check_link(parent,
    child)`: extra rules, None when the link is fine. Returns (the chain full-first, None), or
    (the links walked so far, newest first, and the first ChainFault)."""
    links, seen, current = [start], {start.id}, start

    def fault(parent: str | None, problem: str, detail: str) -> tuple[list[L], ChainFault]:
        return links, ChainFault(start.id, start.parent_id, current.id, current.kind, parent, problem, detail)

    while True:
        if current.kind == BackupKind.FULL:
            if current.parent_id is not None:
                return fault(
                    current.parent_id,
                    FULL_WITH_PARENT,
                    f"full backup {current.id} names a parent ({current.parent_id}); a full backup has none",
                )
            links.reverse()
            return links, None
        parent_id = current.parent_id
        if parent_id is None:
            return fault(None, NO_PARENT, f"{current.kind.value} backup {current.id} names no parent")
        if parent_id in seen:
            return fault(parent_id, LOOP, f"its parent links loop at {parent_id}")
        parent = lookup(parent_id)
        if parent is None:
            why = unreadable(parent_id) if unreadable else None
            if why is not None:
                return fault(
                    parent_id, UNREADABLE, f"backup {parent_id} (the parent of {current.id}) is unreadable ({why})"
                )
            return fault(
                parent_id, MISSING, f"backup {parent_id} (the parent of {current.id}) is missing from the repository"
            )
        if current.kind == BackupKind.DIFFERENTIAL and parent.kind != BackupKind.FULL:
            return fault(
                parent_id,
                WRONG_KIND,
                f"differential backup {current.id} rests on {parent_id}, a "
                f"{parent.kind.value} backup; a differential's parent is a full backup",
            )
        broken = check_link(parent, current) if check_link else None
        if broken:
            return fault(parent_id, RULE, broken)
        links.append(parent)
        seen.add(parent_id)
        current = parent


def same_series(parent: Manifest, child: Manifest) -> str | None:
    """The generic rule of manifests: a chain is of one engine, target and mode."""
    if (parent.engine, parent.target, parent.mode) != (child.engine, child.target, child.mode):
        return (
            f"parent {parent.id} of {child.id} is a {parent.mode} backup of {parent.engine}/{parent.target}, "
            f"not a {child.mode} backup of {child.engine}/{child.target}"
        )
    return None


def manifest_rules(engine: str) -> Callable[[Manifest, Manifest], str | None]:
    """same_series, then the engine's own chain rules (EngineSpec.chain_rules), if any."""
    rules: ChainRules | None = registry.spec(engine).chain_rules

    def check(parent: Manifest, child: Manifest) -> str | None:
        return same_series(parent, child) or (rules.check_link(parent, child) if rules is not None else None)

    return check


def resolve(
    manifest: Manifest, lookup: Callable[[str], Manifest | None], unreadable: Callable[[str], str | None] | None = None
) -> list[Manifest]:
    """[full, ..., manifest]: the chain a restore of `manifest` needs, every link checked by the
    generic rules and the engine's. ChainBrokenError naming the first broken link and what to do."""
    chain, broken = walk(manifest, lookup, check_link=manifest_rules(manifest.engine), unreadable=unreadable)
    if broken is not None:
        raise broken.error()
    return chain


def faults(refs: Iterable[L]) -> dict[str, ChainFault | None]:
    """Each backup's id -> None if its chain reaches a full within `refs`, else its ChainFault
    (generic rules only: retention never deletes on an engine's word alone)."""
    by_id = {r.id: r for r in refs}
    return {rid: walk(ref, by_id.get)[1] for rid, ref in by_id.items()}


def with_ancestors(ids: Iterable[str], by_id: Mapping[str, L]) -> set[str]:
    """`ids` plus every parent they rest on (an incremental is useless without them). Every id
    must have an intact chain within `by_id` (faults() says which do)."""
    out = set(ids)
    for rid in list(out):
        chain, broken = walk(by_id[rid], by_id.get)
        if broken is not None:
            raise ChainBrokenError(broken.reason())
        out.update(link.id for link in chain)
    return out


def choose_parent(
    manifests: Sequence[Manifest],
    kind: BackupKind,
    target: str,
    misdated: Mapping[str, str],
    eligible: Callable[[Manifest], bool] = lambda m: True,
) -> Manifest:
    """The parent of a new `kind` backup of `target`: the newest eligible backup (incremental)
    or the newest eligible full (differential), `manifests` oldest first.

    Backups in `misdated` (id -> clock problem) are skipped: a future-dated parent would sort
    after its own child, and its place in time cannot be trusted. ChainBrokenError (the flow then
    takes a full) when nothing is eligible, naming what was skipped."""
    wanted = BackupKind.FULL if kind == BackupKind.DIFFERENTIAL else None
    candidates = [m for m in manifests if m.id not in misdated and eligible(m) and (wanted is None or m.kind == wanted)]
    if not candidates:
        skipped = f" (skipped {len(misdated)} with a clock problem: {', '.join(sorted(misdated))})" if misdated else ""
        raise ChainBrokenError(
            f"no {'full ' if wanted else ''}backup of {target} to build a {kind.value} backup on{skipped}"
        )
    return candidates[-1]
