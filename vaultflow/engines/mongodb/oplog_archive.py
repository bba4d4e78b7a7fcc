"""The MongoDB oplog archive as a vaultflow.logarchive.LogArchive: `archive-logs` for MongoDB
targets, and what verify, prune and point-in-time restores read.

    mongodb/<target>/logs/oplog/<name>.archive.zst   a slice: oplog-only mongodump archive, zstd
    mongodb/<target>/logs/oplog/<name>.json          its record (oplog_slices.SliceRecord), LAST

`ship()` reads local.oplog.rs from the newest record's end position with one forward cursor (from
the oplog's oldest entry when nothing is archived yet), keeps the entries of the target's
databases, and cuts slices by oplog time (`oplog_slice_seconds` from a slice's first entry) and
size (`oplog_slice_bytes` of entries): each is compressed into the repository, read back and
checked, then its record is written. The last, unfinished slice waits until its time is up (the
server's clock) or it is full: the next run reads it again from the server, while further ships of
the same object (archive-logs following for `follow_seconds`) keep it in memory and read only new
entries. The lag is at most about `oplog_slice_seconds` plus the schedule's interval. Only entries
a majority of the replica set has written are shipped (hello.lastWrite.majorityOpTime): a
rolled-back entry never reaches the archive.

When the oplog no longer reaches the last archived position (it rolled over first), ship starts
again from the oldest entry kept, records the hole in the first new slice (`rolled_from`), ships
what there is, and then raises OplogGap naming the lost range: verify reports every backup the
hole breaks, and a full backup taken afterwards restores to later points again.

One ship per target at a time: a shared repository lock with purpose `archive-logs` (prune, which
is exclusive, waits for it), refused while another archive-logs lock of the target is live.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bson import Timestamp

from vaultflow.engines.mongodb.client import classify_error, connected
from vaultflow.engines.mongodb.consistency import consistency_point
from vaultflow.engines.mongodb.dump import ArchiveChunks
from vaultflow.engines.mongodb.oplog import (
    OplogEntry,
    OplogGap,
    Selection,
    oplog_archive_chunks,
    read_oplog_archive,
    scan_range,
)
from vaultflow.engines.mongodb.oplog_slices import (
    Position,
    SliceCut,
    SliceRecord,
    continuity_of,
    first_after,
    prune_plan,
    text_of,
    ts_of,
)
from vaultflow.errors import (
    ConfigError,
    LockHeldError,
    NotFoundError,
    RefusedError,
    VaultflowError,
)
from vaultflow.locks import is_stale, read_locks
from vaultflow.logarchive import (
    Continuity,
    Lag,
    LogStart,
    PrunePlan,
    ShipReport,
    attach_ship_failure,
)
from vaultflow.pipeline import HashingReader, check_stored, compress_into_store, verified_chunks
from vaultflow.repository import Repository
from vaultflow.stores.base import CHUNK_SIZE, get_bytes, put_bytes

if TYPE_CHECKING:
    from pymongo import MongoClient

    from vaultflow.manifest import Manifest

ENGINE = "mongodb"
STREAM = "oplog"
OBJECT_SUFFIX = ".archive.zst"
RECORD_SUFFIX = ".json"
LOCK_PURPOSE = "archive-logs"
TMP_PREFIX = ".vaultflow-tmp-"


def cluster_time(manifest: Manifest) -> Timestamp | None:
    """The point a MongoDB backup restores to (its consistency's cluster_time), None for other
    backups."""
    point = consistency_point(manifest)
    return None if point is None else ts_of(point)


@dataclass(frozen=True)
class ServerNow:
    """What one ship needs to know of the server: version (archive headers), replica set name,
    its clock (seconds), and how far the oplog may be read (majority-committed; None: no bound)."""

    version: str
    set_name: str | None
    clock: float
    until: Timestamp | None


def server_now(client: MongoClient) -> ServerNow:
    """hello and buildInfo of the server `client` is connected to, as a ServerNow."""
    hello = client.admin.command("hello")
    version = str(client.admin.command("buildInfo")["version"])
    local = hello.get("localTime")
    clock = local.replace(tzinfo=UTC).timestamp() if isinstance(local, datetime) else time.time()
    majority = ((hello.get("lastWrite") or {}).get("majorityOpTime") or {}).get("ts")
    return ServerNow(version, hello.get("setName"), clock, majority if isinstance(majority, Timestamp) else None)


@dataclass
class _Pending:
    """What a ship left unfinished, for the next ship of the same object: the slice being filled,
    the position of the last entry read, and the newest archived slice it continues (`base`)."""

    base: str | None
    cut: SliceCut
    read: Position


class OplogArchive:
    """The oplog archive of one MongoDB target (`mongodb/<target>/logs/oplog/`).

    repository: a vaultflow Repository (its compression_level is used when shipping).
    settings:   the target's MongoSettings (its block); None to read, verify and prune only.
    spool_dir:  ignored (the oplog is read from the server).
    """

    stream = STREAM
    title = "oplog archive"

    def __init__(self, repository: Any, target: str, settings: Any = None, *, spool_dir: str | None = None):
        self.repository: Repository = repository
        self.target = target
        self.settings = settings
        self.prefix = f"{Repository.target_prefix(ENGINE, target)}logs/{STREAM}/"
        self._records: dict[str, SliceRecord] = {}  # read once: records never change
        self._pending: _Pending | None = None  # the unfinished slice of the last ship, in memory

    def __repr__(self) -> str:
        return f"OplogArchive({self.prefix!r})"

    # -- keys and records ----------------------------------------------------------------------
    def object_key(self, name: str) -> str:
        return f"{self.prefix}{name}{OBJECT_SUFFIX}"

    def record_key(self, name: str) -> str:
        return f"{self.prefix}{name}{RECORD_SUFFIX}"

    def units(self) -> list[str]:
        """Names of the slices with a record, in log order."""
        store = self.repository.store
        names = [
            info.key[len(self.prefix) : -len(RECORD_SUFFIX)]
            for info in store.list(self.prefix)
            if info.key.endswith(RECORD_SUFFIX) and "/" not in info.key[len(self.prefix) :]
        ]
        return sorted(names)

    def record(self, name: str) -> SliceRecord | None:
        """The record of slice `name`, None when it is not archived. IntegrityError when unreadable."""
        if name in self._records:
            return self._records[name]
        key = self.record_key(name)
        try:
            data = get_bytes(self.repository.store, key)
        except NotFoundError:
            return None
        record = SliceRecord.parse(data, name, f"{key} in {self.repository.store.description}")
        self._records[name] = record
        return record

    def records(self) -> list[SliceRecord]:
        """Every archived slice's record, in log order."""
        found = []
        for name in self.units():
            record = self.record(name)
            if record is not None:
                found.append(record)
        return found

    def _newest(self) -> SliceRecord | None:
        names = self.units()
        return self.record(names[-1]) if names else None

    # -- shipping ------------------------------------------------------------------------------
    def _settings(self) -> Any:
        if self.settings is None:
            raise ConfigError(
                f"the oplog archive of {self.target} was opened without the target's settings (its MongoTarget "
                "block): it can be read, verified and pruned, not shipped"
            )
        return self.settings

    def _databases(self) -> list[str] | None:
        return list(self.settings.databases) or None

    @contextmanager
    def _shipping(self) -> Iterator[None]:
        """The target's archive-logs lock, alone: a second shipper would cut the same slices."""
        repo = self.repository
        with repo.locked(ENGINE, self.target, LOCK_PURPOSE) as lock:
            now = datetime.now(UTC)
            others = [
                other
                for other in read_locks(repo.store, repo.lock_dir(ENGINE, self.target))
                if other.purpose == LOCK_PURPOSE
                and other.key != lock.key
                and not is_stale(other, now, repo.lock_settings.stale_after)
            ]
            if others:
                raise LockHeldError(
                    f"{ENGINE}/{self.target}: another archive-logs run ships its oplog ({others[0].describe()}); "
                    "one at a time; this is transient: run it again later (a deployment's flow retries do)",
                    others[0],
                )
            yield

    def ship(self) -> ShipReport:
        """Ship every slice that is complete (see the module docstring). Raises as LogArchive.ship
        says (ConfigError without settings; the first failure with `.unit` and `.ship_report`),
        OplogGap after shipping when the oplog had rolled over past the last archived position,
        RefusedError when the server is of another replica set than the archive.

        Called again on the same object (archive-logs with follow_seconds), it goes on from the
        last entry it read, the unfinished slice kept in memory, unless another run shipped
        meanwhile: only new entries are read from the server."""
        settings = self._settings()
        report = ShipReport()
        pending, self._pending = self._pending, None  # restored only when this run ends well
        with self._shipping(), connected(settings) as client:
            newest = self._newest()
            now = server_now(client)
            if newest is not None and newest.set_name and now.set_name and newest.set_name != now.set_name:
                raise RefusedError(
                    f"the oplog archive of {self.target} holds the oplog of replica set {newest.set_name!r}, but "
                    f"{settings.where} is of replica set {now.set_name!r}: a new set's oplog cannot continue it. "
                    "Archive it under another target_name"
                )
            base = None if newest is None else newest.name
            gap: OplogGap | None = None
            entries: Iterator[OplogEntry] | None = None
            if pending is not None and pending.base == base:
                cut, read = pending.cut, pending.read
                entries, lost = self._read(client, read, now.until)
                if lost is not None:  # rolled past what this process read: start over from the archive
                    entries = None
            if entries is None:
                start = None if newest is None else newest.end
                entries, gap = self._read(client, start, now.until)
                cut = SliceCut(
                    None if gap else start,
                    start if gap else None,
                    settings.oplog_slice_seconds,
                    settings.oplog_slice_bytes,
                )
                read = start
            try:
                for entry in entries:
                    if cut.started and (cut.full or cut.window_over(entry.ts.time)):
                        cut.close(at_boundary=cut.end is not None and entry.ts != cut.end.ts)
                        cut = self._store(cut, now, report)
                    cut.add(entry)
                    read = Position(entry.ts)
                if cut.started and (cut.full or cut.window_over(now.clock)):
                    cut.close(at_boundary=True)  # every entry up to `until` was read
                    cut = self._store(cut, now, report)
            except Exception as exc:
                raise self._failure(exc, cut, client, report) from exc
            report.remaining = report.lag_units = report.max_lag_units = len(cut.entries)
            first_wall = cut.first_wall_ms
            report.lag_seconds = 0.0 if first_wall is None else max(0.0, now.clock - first_wall / 1000)
        if gap is not None:
            continued = f"from slice {report.shipped[0]}" if report.shipped else "once its first slice is complete"
            error = OplogGap(
                f"{gap} The archive continues from the oldest entry the oplog still holds ({continued}); "
                "verify names the backups the gap breaks",
                gap.after,
                gap.oldest,
            )
            raise attach_ship_failure(error, report.shipped[0] if report.shipped else "", report) from gap
        if read is not None:
            self._pending = _Pending(report.shipped[-1] if report.shipped else base, cut, read)
        return report

    def _read(
        self, client: MongoClient, start: Position | None, until: Timestamp | None
    ) -> tuple[Iterator[OplogEntry], OplogGap | None]:
        """The entries after `start` (every one, marked included or not, so the position moves
        past other databases' writes too), and the OplogGap when the oplog no longer reaches
        `start`: then the entries from the oldest one kept."""
        databases = self._databases()
        if start is None:
            return scan_range(client, None, until, databases, server_filter=False), None
        entries = scan_range(client, start.ts, until, databases, after_count=start.count, server_filter=False)
        try:
            first = next(entries, None)
        except OplogGap as gap:
            return scan_range(client, None, until, databases, server_filter=False), gap

        def resumed() -> Iterator[OplogEntry]:
            if first is not None:
                yield first
            yield from entries

        return resumed(), None

    def _store(self, cut: SliceCut, now: ServerNow, report: ShipReport) -> SliceCut:
        """Store one slice: object, read-back check, record LAST. Returns the next cut."""
        store = self.repository.store
        name = cut.name
        key = self.object_key(name)
        raw = HashingReader(ArchiveChunks(oplog_archive_chunks(cut.entries, now.version)))
        existing = self.record(name)
        if existing is not None:
            while raw.read(CHUNK_SIZE):
                pass
            if existing.raw_sha256 != raw.sha256 or existing.end != cut.end:
                raise RefusedError(
                    f"oplog slice {name} is already archived in {store.description} with other content "
                    f"(ending at {existing.end}, not {cut.end}); refusing to overwrite it. Is a second "
                    f"server archiving as target {self.target!r}?"
                )
            report.already_stored.append(name)
            return cut.following()
        level = getattr(self.repository, "compression_level", 3)
        written = compress_into_store(raw, store, key, level=level, size_hint=cut.size)
        check_stored(self.repository.store, key, written.stored_size, written.sha256, f"oplog slice {name}")
        record = cut.record(
            databases=self._databases(),
            set_name=now.set_name,
            server_version=now.version,
            raw_size=written.raw_size,
            stored_size=written.stored_size,
            sha256=written.sha256,
            raw_sha256=raw.sha256,
        )
        put_bytes(store, self.record_key(name), record.encode())  # LAST: now it is archived
        self._records[name] = record
        report.shipped.append(name)
        report.raw_bytes += written.raw_size
        report.stored_bytes += written.stored_size
        return cut.following()

    def _failure(self, exc: Exception, cut: SliceCut, client: MongoClient, report: ShipReport) -> BaseException:
        """The same kind of error (transient stays transient) naming the slice at fault, with what
        was shipped before it and how much waits."""
        name = cut.name if cut.started else ""
        if not isinstance(exc, VaultflowError):
            exc = classify_error(exc, self.settings)
        message = (
            f"shipping oplog slice {name or '(the next one)'} of {self.target} to {self.repository.description} "
            f"failed: {exc}; it and everything after it stay in the server's oplog ({len(report.shipped)} "
            "slices shipped before it)"
        )
        error: VaultflowError
        if isinstance(exc, OplogGap):
            error = OplogGap(message, exc.after, exc.oldest)
        else:
            try:
                error = type(exc)(message)
            except TypeError:  # a subclass with another constructor
                error = VaultflowError(message)
        try:
            waiting = self._waiting(client, self._newest())
            report.remaining = report.lag_units = report.max_lag_units = waiting.units
            report.lag_seconds = waiting.seconds
        except Exception:  # noqa: BLE001 - the lag is a courtesy; the failure is what matters
            report.remaining = report.lag_units = report.max_lag_units = len(cut.entries)
        return attach_ship_failure(error, name, report)

    def lag(self) -> Lag:
        """Entries of the target's databases in the oplog after the last archived position, and
        the age (server clock) of the oldest of them; (0, 0.0) when nothing waits."""
        settings = self._settings()
        with connected(settings) as client:
            return self._waiting(client, self._newest())

    def _waiting(self, client: MongoClient, newest: SliceRecord | None) -> Lag:
        selection = Selection(self._databases())
        match: dict[str, Any] = selection.query()
        at_end: Timestamp | None = None
        if newest is not None:
            at_end = newest.end.ts
            match = {"$and": [{"ts": {"$gte": at_end}}, match]}
        groups = client.local["oplog.rs"].aggregate(
            [
                {"$match": match},
                {
                    "$group": {
                        "_id": {"$eq": ["$ts", at_end]} if at_end is not None else None,
                        "n": {"$sum": 1},
                        "first": {"$min": "$wall"},
                    }
                },
            ]
        )
        count, oldest = 0, None
        for group in groups:
            n = group["n"]
            if group["_id"] is True:  # entries at the last position: those past its count wait
                assert newest is not None
                n = max(0, n - newest.end.count) if newest.end.count else 0
            if n:
                count += n
                if group["first"] is not None and (oldest is None or group["first"] < oldest):
                    oldest = group["first"]
        if not count:
            return Lag()
        clock = server_now(client).clock
        age = 0.0 if oldest is None else max(0.0, clock - oldest.replace(tzinfo=UTC).timestamp())
        return Lag(count, age)

    # -- reading -------------------------------------------------------------------------------
    def fetch(self, name: str, dest: Path) -> bool:
        """Write slice `name` (its mongodump archive, decompressed) to `dest` through a temp file
        and a rename, its stored and raw sha256 checked while streaming; False when it is not
        archived. IntegrityError naming the slice when its bytes do not match."""
        record = self.record(name)
        if record is None:
            return False
        dest = Path(dest)
        tmp = dest.with_name(f"{TMP_PREFIX}{dest.name}-{os.getpid()}")
        try:
            with open(tmp, "wb") as out:
                for chunk in self._verified_chunks(record):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.rename(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return True

    def _verified_chunks(self, record: SliceRecord) -> Iterator[bytes]:
        """The slice's archive bytes; IntegrityError (after the last chunk at the latest) when
        the stored or raw sha256 or size differ from the record."""
        key = self.object_key(record.name)
        yield from verified_chunks(
            self.repository.store,
            key,
            sha256=record.sha256,
            stored_size=record.stored_size,
            raw_sha256=record.raw_sha256,
            raw_size=record.raw_size,
            label=f"oplog slice {record.name} ({key})",
        )

    def slice_entries(self, name: str) -> Iterator[bytes]:
        """The raw BSON oplog entries of slice `name`, in order, streamed: IntegrityError when the
        archive fails its checks, at the latest after the last entry (apply nothing before the
        iteration ended, or fetch() the slice first). NotFoundError when it is not archived."""
        record = self.record(name)
        if record is None:
            raise NotFoundError(f"oplog slice {name} is not archived in {self.repository.description}")
        yield from read_oplog_archive(ArchiveChunks(self._verified_chunks(record)), name=f"oplog slice {name}")

    # -- backups and the archive -----------------------------------------------------------------
    def unit_time(self, name: str) -> datetime | None:
        """The oplog time slice `name` reaches (its record's end position, UTC): a restore
        replaying the archive through it reaches that moment. None when it is not archived."""
        record = self.record(name)
        return None if record is None else datetime.fromtimestamp(record.end.ts.time, UTC)

    def log_start(self, manifest: Manifest) -> LogStart | None:
        """The slice holding the first entry after the backup's cluster time; unit '' when no
        archived slice reaches past it yet. None for backups that are not MongoDB's."""
        point = cluster_time(manifest)
        if point is None:
            return None
        records = self.records()
        index = first_after(records, point)
        return LogStart(manifest.id, "" if index is None else records[index].name, text_of(point))

    def continuity(self, backups: Sequence[Manifest]) -> Continuity:
        """For each MongoDB backup: whether the slices from the one holding the first entry after
        its cluster time to the newest continue each other without a hole (a slice missing from
        the archive, or oplog lost because it rolled over before it was shipped)."""
        starts = [(m.id, point) for m in backups if (point := cluster_time(m)) is not None]
        return continuity_of(self.records(), starts) if starts else Continuity(len(self.units()))

    def prunable(self, kept: Sequence[Manifest]) -> PrunePlan:
        """Slices that end at or before the cluster time of the oldest kept MongoDB backup (a
        restore of it replays nothing from them); never the newest slice, where shipping resumes.
        Nothing when no MongoDB backup is kept."""
        points = [(point, m.id) for m in kept if (point := cluster_time(m)) is not None]
        return prune_plan(self.records(), points) if points else PrunePlan()

    def delete(self, names: Sequence[str]) -> int:
        """Delete slices, each record first (it stops being archived), then its object."""
        store = self.repository.store
        for name in names:
            store.delete(self.record_key(name))
            store.delete(self.object_key(name))
            self._records.pop(name, None)
        return len(names)
