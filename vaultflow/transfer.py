"""Copy committed backups from one repository to another (`restic copy` for vaultflow).

The seed's hybrid strategy: back up into a local repository (fast, close to the server), then
send the backups to S3 (off site). A copy is a backup committed at the destination exactly as
at the source: same keys, same stored bytes (compressed, encrypted as they are), same manifest.

    for each object of the manifest:
        at the destination already, right size and sha256 (every mirror member)?  skip it
        else: source -> VerifyingReader (sha256 + size of the manifest) -> destination.put
    destination.commit(manifest)          written LAST, after every object is checked there

- Streamed: one object at a time through a reader chain; nothing is held whole in memory.
- Trusts nothing: a source object whose bytes do not hash to the manifest's sha256 fails the put
  (IntegrityError naming it) and nothing is stored under its key; the backup is not committed
  at the destination.
- Resumable: an interrupted copy leaves objects and no manifest at the destination (invisible to
  restore, collected by prune after its grace period if never resumed); the next copy re-checks
  them and sends only what is missing or wrong.
- Chains: an incremental or differential backup restores only with its parents, so
  `backups_to_copy` puts the missing ancestors first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vaultflow.chain import walk
from vaultflow.errors import IntegrityError, NotFoundError, RefusedError, clause
from vaultflow.manifest import Manifest
from vaultflow.pipeline import VerifyingReader
from vaultflow.repository import MANIFEST, Catalog, Repository
from vaultflow.summary import human_size

Log = Callable[[str], None]
Progress = Callable[[str, int, int | None], None]  # (object name, bytes done, bytes expected)


@dataclass(frozen=True)
class CopyResult:
    """What copy_backup did for one backup: object names (manifest keys) copied and skipped
    (already intact at the destination), stored bytes sent, and whether the backup was already
    committed there (then nothing was read or written)."""

    backup_id: str
    copied: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    bytes_copied: int = 0
    already_there: bool = False


class _Counting:
    """Reports the bytes read so far to `progress` (object name, done, expected)."""

    def __init__(self, source, name: str, expected: int, progress: Progress):
        self._source, self._name, self._expected, self._progress = source, name, expected, progress
        self._done = 0

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._done += len(data)
        if data:
            self._progress(self._name, self._done, self._expected)
        return data


def copy_backup(
    source: Repository,
    destination: Repository,
    manifest: Manifest,
    *,
    log: Log = print,
    progress: Progress | None = None,
) -> CopyResult:
    """Copy the committed backup `manifest` of `source` to `destination`, manifest last.

    Objects already at the destination with the manifest's size and sha256 (in every member
    of a mirror) are skipped; missing or differing ones are (re)sent, each checked against the
    manifest while it streams. Returns a CopyResult.

    Raises IntegrityError naming the object when a source object's sha256 or size differs from
    the manifest (nothing is stored under its key, no manifest is written), NotFoundError when a
    source object is missing, RefusedError when source and destination are the same store or the
    destination holds a different backup under the same id, and the stores' errors
    (StoreUnavailableError, ... retryable) otherwise.
    """
    if source.description == destination.description:
        raise RefusedError(
            f"source and destination are the same repository ({source.description}): give another repository to copy to"
        )
    where = f"backup {manifest.id} of {manifest.engine}/{manifest.target}"
    present = _committed_copy(destination, manifest)
    if present is not None:
        if present.model_dump() != manifest.model_dump():
            raise RefusedError(
                f"{destination.description} already holds a different {where} (same id, other "
                "contents): not overwritten. Compare the two manifest.json files"
            )
        return CopyResult(manifest.id, already_there=True)
    copied, skipped, sent = [], [], 0
    for obj in manifest.objects:
        check = destination.verify_object(manifest, obj.key, deep=True)
        if check.ok:
            skipped.append(obj.key)
            continue
        if not check.detail.startswith("missing from"):
            log(f"{where}: {obj.key} at the destination is not intact ({check.detail}); sending it again")
        key = source.object_key(manifest, obj.key)
        with source.store.open(key) as raw:
            reader = VerifyingReader(raw, obj.sha256, obj.stored_size, f"{obj.key} of {where}")
            counted = _Counting(reader, obj.key, obj.stored_size, progress) if progress else reader
            try:
                destination.store.put(key, counted, size_hint=obj.stored_size)
            except IntegrityError as exc:
                raise IntegrityError(
                    f"object {obj.key} of {where} in {source.description} does not match its manifest "
                    f"({exc}); it was not copied and the backup is not committed at "
                    f"{destination.description}. Repair the source (from a mirror, or take a new backup) "
                    "and copy again"
                ) from exc
        copied.append(obj.key)
        sent += obj.stored_size
    destination.commit(manifest)  # checks every object's presence and size, then the manifest
    log(
        f"{where} copied to {destination.description}: {len(copied)} objects sent ({human_size(sent)}), "
        f"{len(skipped)} already there"
    )
    return CopyResult(manifest.id, tuple(copied), tuple(skipped), sent)


def _committed_copy(destination: Repository, manifest: Manifest) -> Manifest | None:
    """The destination's manifest of this backup id, or None when it has none (yet)."""
    if destination.store.stat(destination.object_key(manifest, MANIFEST)) is None:
        return None
    catalog = destination.catalog(manifest.engine, manifest.target)
    try:
        return catalog.get(manifest.id)
    except NotFoundError as exc:  # present but unreadable: do not overwrite what we cannot read
        raise RefusedError(
            f"{destination.description} holds an unreadable manifest for backup {manifest.id}: "
            f"{clause(exc)}. Move it away to copy the backup again"
        ) from exc


def backups_to_copy(source: Catalog, destination: Catalog, backup_id: str | None = None) -> list[Manifest]:
    """The backups of one target to copy, oldest first so parents come before their children.

    `backup_id` None: every backup of `source` not committed in `destination`. Else that backup
    ('latest' allowed) and those of its ancestors the destination lacks: an incremental restores
    only with its chain. Ancestors missing from `source` too are left out (the chain is already
    broken there; verify reports it). NotFoundError for an unknown id."""
    have = {m.id for m in destination.manifests}
    if backup_id is None:
        return [m for m in source.manifests if m.id not in have]
    links, broken = walk(source.resolve(backup_id), source.find)  # vaultflow.chain: full first when intact
    return [m for m in (links if broken is None else reversed(links)) if m.id not in have]
