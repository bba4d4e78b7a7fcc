"""The repository: a documented layout over a Store, with the manifest as commit marker.

    <engine>/<target>/backups/<backup-id>/manifest.json   written LAST
    <engine>/<target>/backups/<backup-id>/<object>.zst    payload, immutable
    <engine>/<target>/locks/<purpose>-<holder>.json       one per holder (vaultflow.locks)
    <engine>/<target>/scratch/<database>-<holder>.json    a scratch database a restore/drill made
    <engine>/<target>/checks/<backup-id>/<kind>.json      the last verify / quick-verify / drill of a backup

The catalog is derived by listing manifests; there is no second index to corrupt.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from vaultflow.chain import ChainFault, choose_parent, manifest_rules, resolve, walk
from vaultflow.errors import ChainBrokenError, ConfigError, NotFoundError, RefusedError, note_cleanup_failure
from vaultflow.keys import decode_name, encode_name
from vaultflow.locks import HeldLock, LockRequest, LockSettings, acquire, holder_alive, release_key
from vaultflow.manifest import BackupKind, Manifest, ManifestError, parse_manifest
from vaultflow.pipeline import HashingReader
from vaultflow.retention import DEFAULT_CLOCK_TOLERANCE, BackupRef, clock_problems
from vaultflow.stores.base import CHUNK_SIZE, ObjectInfo, Store, get_bytes, put_bytes

MANIFEST = "manifest.json"
# A scratch record is written once (not refreshed): its holder counts as dead after this long.
SCRATCH_TTL = timedelta(hours=6)
# A check kind is a key segment: checks/<backup-id>/<kind>.json (verify, quick-verify, drill).
CHECK_KIND = re.compile(r"[a-z][a-z0-9-]*")


@dataclass(frozen=True)
class CatalogProblem:
    """A manifest that could not be read: its key, and what is wrong (without the key)."""

    key: str
    message: str


@dataclass
class Catalog:
    """Every readable manifest, oldest first, and what could not be read (never fatal).

    `stored_at` maps a backup id to the store's own timestamp of its manifest (S3
    LastModified, a local file's mtime): the second clock that exposes a worker whose clock
    was wrong (vaultflow.retention.clock_problems).
    """

    manifests: list[Manifest] = field(default_factory=list)
    problems: list[CatalogProblem] = field(default_factory=list)
    stored_at: dict[str, datetime] = field(default_factory=dict)

    def refs(self) -> list[BackupRef]:
        """What the retention planner needs of each manifest, store timestamps included."""
        return [BackupRef.from_manifest(m, self.stored_at.get(m.id)) for m in self.manifests]

    def clock_problems(
        self, now: datetime | None = None, tolerance: timedelta = DEFAULT_CLOCK_TOLERANCE
    ) -> dict[str, str]:
        """Backup id -> why its recorded time cannot be trusted and what to do ({} if none).

        `now` defaults to this host's clock (UTC); see vaultflow.retention.clock_problems.
        """
        return clock_problems(self.refs(), now or datetime.now(UTC), tolerance)

    def latest(
        self, kind=None, now: datetime | None = None, tolerance: timedelta = DEFAULT_CLOCK_TOLERANCE
    ) -> Manifest | None:
        """The newest backup (of `kind`, if given) whose recorded time can be trusted, or None.

        A backup with a clock problem (future-dated by a fast worker, ...) is never "latest":
        its id sorts after real backups it may be older than. Name it by id to use it.
        """
        misdated = self.clock_problems(now, tolerance)
        matching = [m for m in self.manifests if (kind is None or m.kind == kind) and m.id not in misdated]
        return matching[-1] if matching else None

    def parent_for(
        self, kind: BackupKind, target: str, eligible: Callable[[Manifest], bool] = lambda m: True
    ) -> Manifest:
        """The parent of a new incremental (the newest eligible backup) or differential (the
        newest eligible full) backup of `target`, skipping backups with a clock problem
        (vaultflow.chain.choose_parent). ChainBrokenError (the flow then takes a full) when
        nothing is eligible, naming what was skipped."""
        return choose_parent(self.manifests, kind, target, self.clock_problems(), eligible)

    def find(self, backup_id: str) -> Manifest | None:
        """The readable backup `backup_id`, or None."""
        return next((m for m in self.manifests if m.id == backup_id), None)

    def unreadable_ids(self) -> dict[str, str]:
        """Backup id -> why its manifest could not be read, for every unreadable manifest (its id
        is the directory name under backups/)."""
        found = {}
        for problem in self.problems:
            parts = problem.key.split("/")
            if len(parts) >= 2 and parts[-1] == MANIFEST:
                found[parts[-2]] = problem.message
        return found

    def unreadable(self, backup_id: str) -> str | None:
        """Why the manifest of `backup_id` could not be read, or None (readable, or absent)."""
        return next((p.message for p in self.problems if f"/{backup_id}/" in p.key), None)

    def chain(self, manifest: Manifest) -> list[Manifest]:
        """[full, ..., manifest]: the backups a restore of `manifest` needs, every link checked
        (vaultflow.chain.resolve: generic rules and the engine's). ChainBrokenError naming the
        first missing, unreadable or wrong link and what to do."""
        return resolve(manifest, self.find, self.unreadable)

    def chain_fault(self, manifest: Manifest) -> ChainFault | None:
        """The first missing, unreadable or wrong link of `manifest`'s chain (the same walk and
        rules as `chain`), or None when it restores; its `detail` names the link in a few words."""
        return walk(manifest, self.find, check_link=manifest_rules(manifest.engine), unreadable=self.unreadable)[1]

    def chain_problem(self, manifest: Manifest) -> str | None:
        """'chain broken: <why>' when `manifest` cannot be restored for its chain, else None."""
        try:
            self.chain(manifest)
        except ChainBrokenError as exc:
            return f"chain broken: {exc}"
        return None

    def get(self, backup_id: str) -> Manifest:
        found = self.find(backup_id)
        if found is not None:
            return found
        unreadable = self.unreadable(backup_id)
        if unreadable is not None:
            raise NotFoundError(f"backup {backup_id} is unreadable: {unreadable}")
        known = ", ".join(m.id for m in self.manifests[-5:]) or "none"
        raise NotFoundError(f"backup {backup_id} not found (latest ids: {known}); see `vaultflow list`")

    def resolve(
        self,
        backup_id: str,
        now: datetime | None = None,
        log: Callable[[str], Any] | None = None,
        tolerance: timedelta = DEFAULT_CLOCK_TOLERANCE,
    ) -> Manifest:
        """'latest' or an id -> manifest.

        'latest' is the newest backup whose time can be trusted; backups skipped for a clock
        problem are named through `log` (default: the 'vaultflow' logger, warning level).
        Raises NotFoundError when the repository is empty or the id is unknown, and
        RefusedError when every backup has a clock problem (the message names them; pass
        one's id to restore it anyway) or when the manifest of a backup newer than every readable
        one cannot be read: 'latest' would silently mean an older backup, and a drill of it
        would pass while the newest backup cannot be restored.
        """
        if backup_id != "latest":
            return self.get(backup_id)
        unreadable = self.unreadable_ids()
        newest_readable = self.manifests[-1].id if self.manifests else ""
        newer_unreadable = sorted(i for i in unreadable if i > newest_readable)
        if newer_unreadable:
            newest = newer_unreadable[-1]
            older = f" (the newest readable one is {newest_readable})" if newest_readable else ""
            raise RefusedError(
                f"'latest' is undefined: the newest backup {newest} cannot be read ({unreadable[newest]}). "
                f"Repair or delete that manifest, or name the backup to use by id{older}"
            )
        if not self.manifests:
            raise NotFoundError("the repository holds no complete backup for this target yet; run a full backup first")
        misdated = self.clock_problems(now, tolerance)
        latest = self.latest(now=now, tolerance=tolerance)
        skipped = "; ".join(f"{rid}: {why}" for rid, why in sorted(misdated.items()))
        if latest is None:
            raise RefusedError(
                f"'latest' is undefined: every backup of {self.manifests[0].engine}/{self.manifests[0].target} "
                f"has a clock problem ({skipped}). Give the backup id you want instead of 'latest' "
                "(`--backup ID`), and fix the clock named above"
            )
        if misdated:
            (log or logging.getLogger("vaultflow").warning)(
                f"'latest' is {latest.id}, the newest backup whose time can be trusted; skipped "
                f"{len(misdated)} with a clock problem ({skipped}). To restore one of those, give its id"
            )
        return latest


@dataclass(frozen=True)
class ObjectCheck:
    backup_id: str
    key: str
    ok: bool
    detail: str


class Repository:
    def __init__(self, store: Store, compression_level: int = 3, lock_settings: LockSettings | None = None):
        """`lock_settings`: how long runs wait for each other's locks and keep theirs alive
        (vaultflow.locks.LockSettings; defaults: wait 10 min, stale after 30 min)."""
        self.store = store
        self.compression_level = compression_level
        self.lock_settings = lock_settings or LockSettings()

    @property
    def description(self) -> str:
        return self.store.description

    # -- layout -------------------------------------------------------------------------
    @staticmethod
    def target_prefix(engine: str, target: str) -> str:
        """`<engine>/<encoded target>/`: the target name percent-encoded (vaultflow.keys), so
        no name escapes its directory or meets its case twin. Raises ConfigError for an empty
        or too long target name."""
        return f"{engine}/{encode_name(target, 'target name')}/"

    def backup_prefix(self, engine: str, target: str, backup_id: str) -> str:
        """`<engine>/<encoded target>/backups/<backup-id>/`."""
        return f"{self.target_prefix(engine, target)}backups/{backup_id}/"

    def object_key(self, manifest: Manifest, name: str) -> str:
        """The store key of object `name` (a manifest's object key) of backup `manifest`."""
        return self.backup_prefix(manifest.engine, manifest.target, manifest.id) + name

    def backup_ids(self, engine: str, target: str) -> set[str]:
        """The name of every backup directory of a target, committed or not (payload a run left
        without a manifest too): listed, no manifest read."""
        prefix = self.target_prefix(engine, target) + "backups/"
        return {info.key[len(prefix) :].split("/")[0] for info in self.store.list(prefix)}

    # -- catalog ------------------------------------------------------------------------
    def targets(self) -> list[tuple[str, str]]:
        """(engine, target name) pairs that hold at least one object under backups/; target
        names decoded from their key segments. A directory that is no encoded name (one from
        before the encoding, e.g. `Prod`) is left out: docs/repository-format.md says how to
        rename it. Raises NotFoundError when a local repository's directory does not exist."""
        root = getattr(self.store, "root", None)  # a local store: a missing directory is no empty repository
        if root is not None and not os.path.isdir(root):
            raise NotFoundError(
                f"repository directory {root} does not exist: check the path (an unmounted "
                "volume?); nothing was checked"
            )
        seen: set[tuple[str, str]] = set()
        for info in self.store.list(""):
            parts = info.key.split("/")
            if len(parts) >= 4 and parts[2] == "backups":
                try:
                    seen.add((parts[0], decode_name(parts[1])))
                except ValueError:
                    continue
        return sorted(seen)

    def catalog(self, engine: str, target: str) -> Catalog:
        catalog = Catalog()
        prefix = self.target_prefix(engine, target) + "backups/"
        for info in self.store.list(prefix):
            if not info.key.endswith("/" + MANIFEST):
                continue
            try:
                manifest = self._read_manifest(info.key, prefix, engine, target)
                catalog.manifests.append(manifest)
                catalog.stored_at[manifest.id] = info.modified
            except ManifestError as exc:
                # the key has a field of its own: the message does not repeat it
                catalog.problems.append(CatalogProblem(info.key, exc.problem))
        catalog.manifests.sort(key=lambda m: m.id)
        return catalog

    def newest_manifests(self, engine: str, target: str) -> Iterator[Manifest]:
        """The readable manifests of `engine`/`target`, newest first (by id: ids sort by time),
        each read only when the iteration reaches it: one listing, then one read per manifest
        taken (where catalog() reads them all). Unreadable ones are passed over (catalog()
        reports them)."""
        prefix = self.target_prefix(engine, target) + "backups/"
        keys = sorted((info.key for info in self.store.list(prefix) if info.key.endswith("/" + MANIFEST)), reverse=True)
        for key in keys:
            try:
                yield self._read_manifest(key, prefix, engine, target)
            except ManifestError:
                continue

    def _read_manifest(self, key: str, prefix: str, engine: str, target: str) -> Manifest:
        """The manifest at `key` (under `prefix`, the target's backups/). ManifestError when it
        cannot be read or parsed, names another id than its directory, or another target."""
        manifest = parse_manifest(get_bytes(self.store, key), key)
        expected_id = key[len(prefix) :].split("/")[0]
        if manifest.id != expected_id:
            raise ManifestError(key, f"manifest id {manifest.id} does not match its directory")
        if (manifest.engine, manifest.target) != (engine, target):
            raise ManifestError(
                key,
                f"the manifest is of {manifest.engine}/{manifest.target}, not of the "
                f"{engine}/{target} it lies under (copied or moved by hand?): move it back or delete it",
            )
        return manifest

    # -- writing ------------------------------------------------------------------------
    def commit(self, manifest: Manifest) -> None:
        """Write the manifest last: only now does the backup exist for restore and list."""
        for obj in manifest.objects:
            info = self.store.stat(self.object_key(manifest, obj.key))
            if info is None or info.size != obj.stored_size:
                raise RefusedError(
                    f"refusing to commit backup {manifest.id}: object {obj.key} is missing or "
                    f"has the wrong size in {self.description}"
                )
        put_bytes(self.store, self.object_key(manifest, MANIFEST), manifest.to_json())

    def discard_payload(self, engine: str, target: str, backup_id: str) -> int:
        """Delete the objects of a backup that has no manifest (a failed run). Returns count."""
        prefix = self.backup_prefix(engine, target, backup_id)
        if self.store.stat(prefix + MANIFEST) is not None:
            raise RefusedError(f"backup {backup_id} is committed; use prune to delete it")
        return self._delete_all(prefix)

    @contextmanager
    def uncommitted(self, engine: str, target: str, backup_id: str, log=print) -> Iterator[None]:
        """Payload written inside is removed if the block fails before the manifest is
        committed (a killed process leaves it for prune's orphan collection instead).
        A failing cleanup never replaces the block's own error: it is logged and noted on it."""
        try:
            yield
        except BaseException as exc:
            try:
                self.discard_payload(engine, target, backup_id)
            except Exception as cleanup:  # the run's error matters more; prune collects later
                note_cleanup_failure(
                    exc,
                    f"could not remove the partial payload of backup {backup_id} "
                    f"from {self.description} ({cleanup}); prune removes it after "
                    "the repository's orphan grace period",
                    log,
                )
            raise

    def delete_backup(self, manifest: Manifest) -> int:
        """Manifest first (the backup stops existing), then its payload."""
        prefix = self.backup_prefix(manifest.engine, manifest.target, manifest.id)
        self.store.delete(prefix + MANIFEST)
        return self._delete_all(prefix) + 1

    def _delete_all(self, prefix: str) -> int:
        keys = [info.key for info in self.store.list(prefix)]
        for key in keys:
            self.store.delete(key)
        return len(keys)

    def orphans(self, engine: str, target: str, grace: timedelta, now: datetime) -> list[ObjectInfo]:
        """Payload of backups without a manifest, older than `grace` (killed or failed runs)."""
        prefix = self.target_prefix(engine, target) + "backups/"
        by_backup: dict[str, list[ObjectInfo]] = {}
        for info in self.store.list(prefix):
            by_backup.setdefault(info.key[len(prefix) :].split("/")[0], []).append(info)
        orphaned: list[ObjectInfo] = []
        for _backup_id, infos in sorted(by_backup.items()):
            if any(i.key.endswith("/" + MANIFEST) for i in infos):
                continue
            if all(now - i.modified > grace for i in infos):
                orphaned.extend(infos)
        return orphaned

    def sweep_partial(self, engine: str, target: str, older_than: datetime) -> int:
        """Remove interrupted writes (temp files, open multipart uploads) of a target."""
        return self.store.sweep_partial(self.target_prefix(engine, target), older_than)

    # -- reading and verifying ------------------------------------------------------------
    def verify_object(self, manifest: Manifest, name: str, deep: bool = True) -> ObjectCheck:
        """Check one object in every member store (a mirror is only as good as each copy)."""
        obj = next(o for o in manifest.objects if o.key == name)
        key = self.object_key(manifest, name)
        members = getattr(self.store, "stores", None) or (self.store,)
        problems = [p for p in (self._check_copy(s, key, obj, deep) for s in members) if p]
        if problems:
            return ObjectCheck(manifest.id, name, False, "; ".join(problems))
        return ObjectCheck(manifest.id, name, True, "sha256 matches" if deep else "size matches")

    @staticmethod
    def _check_copy(store: Store, key: str, obj, deep: bool) -> str | None:
        """None when the copy in `store` is intact, else what is wrong with it."""
        info = store.stat(key)
        if info is None:
            return f"missing from {store.description}"
        if info.size != obj.stored_size:
            return f"size {info.size} != manifest's {obj.stored_size} in {store.description}"
        if deep:
            with store.open(key) as stream:
                reader = HashingReader(stream)
                while reader.read(CHUNK_SIZE):
                    pass
            if reader.sha256 != obj.sha256:
                return f"sha256 {reader.sha256} != manifest's {obj.sha256} in {store.description}"
        return None

    def verify_backup(self, manifest: Manifest, deep: bool = True) -> list[ObjectCheck]:
        return [self.verify_object(manifest, o.key, deep) for o in manifest.objects]

    # -- verification records -------------------------------------------------------------
    # checks/<backup-id>/<kind>.json: one object per backup and check kind, so a verify and a
    # drill of the same backup never overwrite each other (nor race: each writes its own key).
    # checks/<backup-id>.json is the older layout (one object per backup, its kind inside): still
    # read, superseded by a per-kind object of its kind (which deletes it), forgotten with the backup.
    def _checks_dir(self, engine: str, target: str) -> str:
        return f"{self.target_prefix(engine, target)}checks/"

    def record_check(self, manifest: Manifest, record: dict) -> None:
        """Keep `record` as the last check of its kind of backup `manifest` (advisory, not part of
        the backup) at `checks/<backup-id>/<kind>.json`. `record`: {"kind": "verify" |
        "quick-verify" | "drill", "result": "ok" | "FAILED", "detail": str, "time": ISO UTC,
        "flow_run_id", "ui_url", and for a drill "seconds" and "rto_objective_s" (floats, s)}.
        ValueError when the kind is no lowercase word (it becomes a key segment)."""
        kind = str(record.get("kind", ""))
        if not CHECK_KIND.fullmatch(kind):
            raise ValueError(f"check kind {kind!r} of {manifest.id}: expected a lowercase word such as 'verify'")
        checks = self._checks_dir(manifest.engine, manifest.target)
        put_bytes(self.store, f"{checks}{manifest.id}/{kind}.json", json.dumps(record, default=str).encode())
        legacy_key = f"{checks}{manifest.id}.json"
        legacy = _read_check(self.store, legacy_key) if self.store.stat(legacy_key) is not None else None
        if legacy is not None and legacy.get("kind") == kind:
            self.store.delete(legacy_key)  # superseded by the record just written

    def last_checks(self, engine: str, target: str) -> dict[str, dict[str, dict]]:
        """Backup id -> {check kind -> its last record (record_check)} for every backup of
        `engine`/`target` checked at least once (pruned backups' records are forgotten). A record
        of the older layout counts as its own kind unless a per-kind record of that kind exists.
        An unreadable record is left out (records are advisory)."""
        prefix = self._checks_dir(engine, target)
        legacy: dict[str, dict] = {}
        records: dict[str, dict[str, dict]] = {}
        for info in self.store.list(prefix):
            name = info.key[len(prefix) :]
            record = _read_check(self.store, info.key) if name.endswith(".json") else None
            if record is None:
                continue
            if "/" in name:
                backup_id, kind = name.removesuffix(".json").split("/", 1)
                records.setdefault(backup_id, {})[kind] = {**record, "kind": kind}
            elif isinstance(record.get("kind"), str):
                legacy[name.removesuffix(".json")] = record
        for backup_id, record in legacy.items():
            records.setdefault(backup_id, {}).setdefault(record["kind"], record)
        return records

    def forget_check(self, manifest: Manifest) -> None:
        """Delete every check record of backup `manifest` (each kind's, and one of the older
        layout); prune calls it after deleting the backup."""
        checks = self._checks_dir(manifest.engine, manifest.target)
        for info in list(self.store.list(f"{checks}{manifest.id}/")):
            self.store.delete(info.key)
        self.store.delete(f"{checks}{manifest.id}.json")

    # -- locks --------------------------------------------------------------------------
    # vaultflow.locks: one object per holder under locks/, written then re-checked; shared for
    # backup, verify, restore and drills, exclusive for prune; refreshed while held.
    def lock_dir(self, engine: str, target: str) -> str:
        """`<engine>/<encoded target>/locks/`."""
        return f"{self.target_prefix(engine, target)}locks/"

    def acquire_lock(
        self,
        engine: str,
        target: str,
        purpose: str = "backup",
        exclusive: bool = False,
        wait: timedelta | None = None,
        log: Callable[[str], Any] = print,
    ) -> HeldLock:
        """Take a `purpose` lock of a target, shared or `exclusive`, waiting up to `wait`
        (default self.lock_settings.wait) for conflicting locks to go. Returns the HeldLock
        (refreshed in the background until release_lock). Raises LockHeldError (retryable)
        naming the holder when a conflicting live lock remains (vaultflow.locks)."""
        settings = self.lock_settings if wait is None else replace(self.lock_settings, wait=wait)
        return acquire(
            LockRequest(
                self.store,
                self.lock_dir(engine, target),
                purpose,
                exclusive,
                f"{engine}/{target}",
                self.description,
                settings,
                log,
            )
        )

    def release_lock(self, lock: HeldLock | str) -> None:
        """Release a HeldLock (stop refreshing, delete its object), or delete the lock object at
        key `lock` if it still holds the holder id its name carries; a lock that is gone
        (judged stale and removed by another run) or holds anything else is left alone."""
        if isinstance(lock, HeldLock):
            lock.release()
        else:
            release_key(self.store, lock)

    @contextmanager
    def locked(
        self,
        engine: str,
        target: str,
        purpose: str = "backup",
        exclusive: bool = False,
        log: Callable[[str], Any] = print,
        wait: timedelta | None = None,
    ) -> Iterator[HeldLock]:
        """Hold a `purpose` lock (see acquire_lock) while the block runs; yields the HeldLock
        (call its check() before deleting). When the block fails and releasing fails too (the
        store is gone), the block's error is raised, with the release failure noted."""
        lock = self.acquire_lock(engine, target, purpose, exclusive, wait, log)
        try:
            yield lock
        except BaseException as exc:
            try:
                lock.release()
            except Exception as cleanup:
                note_cleanup_failure(
                    exc,
                    f"could not release the lock {lock.key} in {self.description} "
                    f"({cleanup}); it is stale once this process is gone "
                    f"(or after {self.lock_settings.stale_after}), or delete it",
                    log,
                )
            raise
        lock.release()

    # -- scratch databases ----------------------------------------------------------------
    # A logical restore or drill records each scratch database before it creates it and deletes
    # the record once the database is renamed into place or dropped. A record whose holder died
    # (this host's pid gone, or older than SCRATCH_TTL) names what a killed run
    # left on the server; the next restore or drill of the target collects it.
    def _scratch_dir(self, engine: str, target: str) -> str:
        return f"{self.target_prefix(engine, target)}scratch/"

    def put_scratch(self, engine: str, target: str, database: str, server: str, now: datetime | None = None) -> str:
        """Record that this process is about to create `database` on `server` (host:port).
        Returns the record's key for delete_scratch."""
        holder = uuid.uuid4().hex
        key = f"{self._scratch_dir(engine, target)}{encode_name(database, 'database name')}-{holder}.json"
        doc = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "holder": holder,
            "server": server,
            "database": database,
            "time": (now or datetime.now(UTC)).isoformat(),
        }
        put_bytes(self.store, key, json.dumps(doc).encode())
        return key

    def dead_scratch(self, engine: str, target: str, now: datetime | None = None) -> list[tuple[str, dict]]:
        """(key, record) of the scratch records of a target whose holder is dead or older than
        SCRATCH_TTL; the record gains `since` (its time). Records that cannot be read, or whose
        key is not the one put_scratch gives their database and holder, are left out: they name
        nothing that may be dropped."""
        now = now or datetime.now(UTC)
        dead = []
        for info in self.store.list(self._scratch_dir(engine, target)):
            try:
                held = json.loads(get_bytes(self.store, info.key))
                since = datetime.fromisoformat(held["time"])
                leaf = f"{encode_name(held['database'], 'database name')}-{held['holder']}.json"
            except NotFoundError:
                continue  # deleted meanwhile
            except (ValueError, KeyError, TypeError, AttributeError, ConfigError):
                continue
            if info.key.rsplit("/", 1)[-1] != leaf:
                continue
            if now - since >= SCRATCH_TTL or not holder_alive(held):
                dead.append((info.key, {**held, "since": since}))
        return dead

    def delete_scratch(self, key: str) -> None:
        """Delete the scratch record `key` (no error when it is gone)."""
        self.store.delete(key)

    def drop_dead_scratch(
        self, engine: str, target: str, server: str, drop: Callable[[str], None], log: Callable[[str], None]
    ) -> None:
        """For each dead scratch record of the target (dead_scratch) that names `server`: log a
        line, `drop(database)`, then delete the record (kept when drop raises, for the next
        run). For engines whose scratch databases need no further checks before dropping."""
        for key, record in self.dead_scratch(engine, target):
            if record.get("server") != server:
                continue  # another server's (the target moved): not ours to judge
            log(f"dropping {record['database']!r}, left by a restore that died at {record['since']:%Y-%m-%d %H:%M}")
            drop(record["database"])
            self.delete_scratch(key)


def _read_check(store: Store, key: str) -> dict | None:
    """The check record at `key`, or None when it is absent or not a JSON object (a check record
    is advisory: a broken one is simply not shown)."""
    try:
        record = json.loads(get_bytes(store, key))
    except (ValueError, NotFoundError):
        return None
    return record if isinstance(record, dict) else None
