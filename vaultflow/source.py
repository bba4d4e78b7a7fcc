"""One target, one source: the rules that keep two servers (or two database sets) from sharing
one target's catalog.

Every engine states its source identity (Engine.source_identity: a short, non-secret text such
as 'db1:5432, databases shop' or 'cluster 7412...'); a backup records it in its manifest
(Manifest.source). Before a backup, the newest backup of the same target that recorded one must
name the same source, else the run is refused (ConfigError: permanent, never retried) unless the
run says the source really changed (accept_new_source). An incremental or differential never
chains onto a parent taken from another source (ChainBrokenError: the flows take a full).
At restore time a target whose `databases` list names none of the databases a backup holds is
refused instead of restoring another database under the requested name.
Manifests without a source (version 1, older version 2) are not judged.
"""

from __future__ import annotations

from collections.abc import Iterable

from vaultflow.errors import ChainBrokenError, ConfigError, RefusedError
from vaultflow.manifest import Manifest

ACCEPT_HINT = "accept_new_source=True (CLI: --accept-new-source)"


def source_text(where: str, databases: Iterable[str] = ()) -> str:
    """A source identity: `where` (host:port, a replica set, a path) and the database set it
    backs up: 'db1:5432, databases hr, shop', or 'db1:5432, every database' when none is listed."""
    listed = sorted(set(databases))
    return f"{where}, databases {', '.join(listed)}" if listed else f"{where}, every database"


def newest_with_source(newest_first: Iterable[Manifest]) -> Manifest | None:
    """The first backup of `newest_first` (a target's manifests, newest first:
    Repository.newest_manifests) that recorded its source, reading no further; None when none did."""
    return next((m for m in newest_first if m.source), None)


def _parts(source: str) -> tuple[str, frozenset[str] | None]:
    """A source_text's place and database set (None: every database, or a source that names no
    databases, such as a cluster's system identifier)."""
    where, sep, listed = source.partition(", databases ")
    if sep:
        return where, frozenset(listed.split(", "))
    return source.removesuffix(", every database"), None


def same_source(recorded: str | None, source: str) -> bool:
    """True when `source` is the source `recorded` names: the same text, or the same place with
    database sets that overlap (a database added to or dropped from a block's list is the same
    server's data; a disjoint set is another source's). A missing record is not judged."""
    if not recorded or recorded == source:
        return True
    (old_where, old_dbs), (new_where, new_dbs) = _parts(recorded), _parts(source)
    if old_where != new_where:
        return False
    return old_dbs is None or new_dbs is None or bool(old_dbs & new_dbs)


def check_same_source(newest_first: Iterable[Manifest], where: str, source: str, *, accept: bool = False) -> None:
    """ConfigError (one line, permanent) when the newest backup of `newest_first` (the target
    `where`'s manifests, newest first) that recorded a source names another one than `source`
    (same_source: a changed but overlapping database list of the same place is the same
    source); nothing, and nothing read, when `accept` (the server really moved: from now on
    `source` is the target's source)."""
    if accept:
        return
    newest = newest_with_source(newest_first)
    if newest is None or same_source(newest.source, source):
        return
    raise ConfigError(
        f"target {where} is backed up from {newest.source!r} (newest backup {newest.id}), but this "
        f"target's source is {source!r}: two sources must not share one target's backups. Give this "
        f"target its own target_name (a block's field; a URL's ?target_name=), or, when the server "
        f"really moved, run once with {ACCEPT_HINT}"
    )


def check_parent_source(parent: Manifest | None, source: str) -> None:
    """ChainBrokenError (the flows then take a full) when `parent` was taken from another source
    than `source`: an incremental never chains onto another server's backup."""
    if parent is not None and parent.source and parent.source != source:
        raise ChainBrokenError(
            f"parent backup {parent.id} was taken from {parent.source!r}, not from this target's source "
            f"{source!r}; take a full backup"
        )


def held_databases(manifest: Manifest) -> set[str]:
    """The databases `manifest` holds: its objects' databases and its fingerprints' groups."""
    return {o.database for o in manifest.objects if o.database} | set(manifest.fingerprints)


def check_restore_selection(manifest: Manifest, listed: Iterable[str], where: str) -> None:
    """RefusedError naming both lists when the target `where` lists databases (`listed`, empty:
    every database) and `manifest` holds none of them: the backup is another source's, and
    restoring it would put another database's data under the requested name."""
    wanted = sorted(set(listed))
    held = held_databases(manifest)
    if not wanted or not held or held & set(wanted):
        return
    raise RefusedError(
        f"backup {manifest.id} of {where} holds databases {', '.join(sorted(held))}, none of the target's "
        f"databases ({', '.join(wanted)}): it was taken from another source; nothing was restored. Restore "
        "it with a target block that lists its databases, or choose another backup"
    )
