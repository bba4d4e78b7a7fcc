"""Which backups and which oplog a MongoDB restore replays: a full's archives, then the oplog of
each later link of its chain (incrementals, differentials), then, for a point in time, archived
oplog slices up to the point.

    point = restore_point(catalog, archive, manifest, to_ts=..., to_time=...)
    point.base          the full whose database archives are restored first
    point.entries()     the raw oplog entries to replay after it, in order, each checked
    point.decoded()     the same decoded, up to the point (what a replay applies)
    point.expected      the backup whose fingerprints the result must equal (None: a point
                        between backups, where no fingerprint was taken)

Choosing the start: the given backup when it stands at or before the point, else the newest
backup of the target that does (incrementals count: less oplog to replay). Its chain's oplog
ranges come from the repository; what lies between its point and the target point comes from
the oplog archive (archive-logs), whose slices must continue each other without a hole up to
the point: a hole or a missing slice past the start fails the restore naming it, and points
at or before it still restore.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import bson
from bson import Timestamp

from vaultflow.engines.mongodb.consistency import MongoDumpConsistency, consistency_point, parse_ts, ts_text
from vaultflow.engines.mongodb.incremental import OPLOG_ROLE, excluded_entry
from vaultflow.engines.mongodb.oplog import entry_facts, read_oplog_archive
from vaultflow.engines.mongodb.oplog_slices import break_before, first_after, head_gap
from vaultflow.engines.mongodb.replay import until
from vaultflow.engines.mongodb.restore import archive_objects
from vaultflow.errors import ConfigError, NotFoundError
from vaultflow.manifest import Manifest, StoredObject
from vaultflow.pipeline import open_verified


def point_of(manifest: Manifest) -> Timestamp:
    """The cluster time a MongoDB backup stands at. ConfigError for another engine's backup."""
    text = consistency_point(manifest)
    if text is None:
        raise ConfigError(f"backup {manifest.id} is not a MongoDB backup")
    return Timestamp(*parse_ts(text))


@dataclass
class RestorePoint:
    """What a restore replays: `base` (a full) restored, then `sources` (label, reader of raw
    entries) in order, keeping entries after `after` and up to `until_ts` / `until_time`.
    `expected`: the backup the result equals (its fingerprints are the comparison), None for a
    point between backups."""

    base: Manifest
    after: Timestamp
    sources: list[tuple[str, Callable[[], Iterator[bytes]]]] = field(default_factory=list)
    until_ts: Timestamp | None = None
    until_time: datetime | None = None
    expected: Manifest | None = None
    excluded: Callable[[str, str], bool] | None = None

    def describe(self) -> str:
        """The point a restore goes to, for people: 'oplog timestamp S:I' or 'wall time ...'."""
        if self.until_ts is not None:
            return f"oplog timestamp {ts_text(self.until_ts)}"
        if self.until_time is not None:
            return f"wall time {self.until_time.isoformat()}"
        return f"backup {(self.expected or self.base).id}"

    @property
    def replays(self) -> bool:
        return bool(self.sources)

    def decoded(self) -> Iterator[Mapping[str, Any]]:
        """The entries to replay, decoded, up to the point's limit (replay_units.until)."""
        entries = (bson.decode(raw) for raw in self.entries())
        return until(entries, until_ts=self.until_ts, until_time=self.until_time)

    @property
    def settled(self) -> Timestamp:
        """The point the base's archives stand at: they hold no entry after it (before it, a
        full's dump window may be in them already)."""
        return point_of(self.base)

    def entries(self) -> Iterator[bytes]:
        """Raw entries after `after`, in oplog order, across every source (each source's checksums
        are checked as it is read: IntegrityError naming it), excluded collections' left out.

        Sources overlap where a slice begins before the backup range or slice it follows ends
        (slices are cut by time, backups happen any time): each source yields only what lies
        after the newest entry of those before it, so no entry is applied twice. (Twice is not
        harmless: a timeseries insert is a plain insert, replay_timeseries.py.) Entries sharing
        a timestamp (one transaction) are never split between two sources."""
        floor = self.after
        for _label, read in self.sources:
            newest = floor
            for raw in read():
                ts = entry_facts(raw).ts
                if ts > floor and not (self.excluded and excluded_entry(raw, self.excluded)):
                    yield raw
                newest = max(newest, ts)
            floor = newest


def backup_oplog(repository, manifest: Manifest, obj: StoredObject) -> Callable[[], Iterator[bytes]]:
    """A reader of the entries of an incremental's oplog range object (sha256 checked at its end,
    each namespace's CRC-64 at its EOF)."""

    def read() -> Iterator[bytes]:
        key = repository.backup_prefix(manifest.engine, manifest.target, manifest.id) + obj.key
        label = f"oplog range {obj.key} of backup {manifest.id}"
        reader, verifying, raw = open_verified(repository.store, key, obj.sha256, obj.stored_size, label)
        with raw:
            yield from read_oplog_archive(reader, name=label)
            verifying.check()

    return read


def chain_point(repository, catalog, manifest: Manifest) -> RestorePoint:
    """The whole chain of `manifest` (ChainBrokenError naming a missing or wrong link): its full,
    then every oplog range from `repository` in order: the full's own (method 'oplog': the
    entries written while it was dumped, replayed from its start_ts) and every later link's."""
    chain = catalog.chain(manifest)
    full = chain[0]
    after = point_of(full)
    if isinstance(full.consistency, MongoDumpConsistency) and full.consistency.method == "oplog":
        after = Timestamp(*parse_ts(full.consistency.start_ts))
    point = RestorePoint(base=full, after=after, expected=manifest)
    for link in chain:
        for obj in link.objects:
            if obj.role == OPLOG_ROLE:
                point.sources.append((f"backup {link.id}", backup_oplog(repository, link, obj)))
    return point


def restore_point(
    repository,
    catalog,
    archive,
    manifest: Manifest,
    *,
    to_ts: str | None = None,
    to_time: datetime | None = None,
) -> RestorePoint:
    """Plan the restore of `manifest` (to_ts and to_time None), or of the target's state at
    `to_ts` ('SECONDS:INCREMENT') or `to_time` (entries with wall time at or before it).

    `repository`: the Repository; `catalog`: the target's Catalog; `archive`: its OplogArchive.
    ConfigError when both points are given, or no backup stands at or before the point;
    NotFoundError naming the lost range when the oplog archive has a hole between the
    start backup and the point, or does not reach the point yet."""
    if to_ts is None and to_time is None:
        return chain_point(repository, catalog, manifest)
    if to_ts is not None and to_time is not None:
        raise ConfigError("give to_ts or to_time, not both")
    until_ts = Timestamp(*parse_ts(to_ts)) if to_ts is not None else None
    until_time = to_time if to_time is None or to_time.tzinfo else to_time.replace(tzinfo=UTC)
    wanted = ts_text(until_ts) if until_ts is not None else f"{until_time:%Y-%m-%d %H:%M:%S %Z}"

    def at_or_before(m: Manifest) -> bool:
        point = point_of(m)
        if until_ts is not None:
            return point <= until_ts
        assert until_time is not None
        return point.time <= until_time.timestamp()

    start = manifest
    if not at_or_before(manifest):
        candidates = [m for m in catalog.manifests if consistency_point(m) is not None and at_or_before(m)]
        if not candidates:
            raise ConfigError(
                f"no backup of {manifest.target} stands at or before {wanted}: the oldest restores to "
                f"{_oldest_point(catalog)}; choose a later point"
            )
        start = max(candidates, key=point_of)
    point = chain_point(repository, catalog, start)
    point.until_ts, point.until_time = until_ts, until_time
    start_ts = point_of(start)
    if until_ts is not None and until_ts == start_ts:
        return point  # exactly the backup: its fingerprints apply
    point.expected = None
    records = archive.records()
    index = first_after(records, start_ts)
    if index is None:
        reach = ts_text(records[-1].end.ts) if records else "nothing"
        raise NotFoundError(
            f"point {wanted} is after backup {start.id} (cluster time {ts_text(start_ts)}), but the oplog archive "
            f"of {manifest.target} holds no entry after it (it reaches {reach}): run archive-logs, or restore "
            f"backup {start.id} itself"
        )
    gap = head_gap(start_ts, records[index])
    for number in range(index, len(records)):
        record = records[number]
        if number > index:
            gap = break_before(records[number - 1], record)
        if gap is not None:
            raise NotFoundError(
                f"point {wanted} cannot be reached from backup {start.id}: the oplog archive lacks the oplog after "
                f"{gap.first} up to {gap.last} ({gap.reason}); points at or before {gap.first} still restore; points "
                "after it restore from a backup taken after the gap (the newest backup before the point is the "
                "default start)"
            )
        point.sources.append((f"oplog slice {record.name}", _slice_reader(archive, record.name)))
        if _reaches(record, until_ts, until_time):
            return point
    raise NotFoundError(
        f"point {wanted} is past the end of the oplog archive of {manifest.target}: its newest slice "
        f"{records[-1].name} ends at {ts_text(records[-1].end.ts)}; run archive-logs (or wait for its next "
        "slice), or choose an earlier point"
    )


def _reaches(record, until_ts: Timestamp | None, until_time: datetime | None) -> bool:
    """Whether the archive up to `record` is known to hold every entry up to the point: its end
    is at or past `until_ts`; for `until_time`, it holds an entry written after it (wall time,
    milliseconds) or ends in a later second (oplog timestamps count whole seconds)."""
    if until_ts is not None:
        return record.end.ts >= until_ts
    assert until_time is not None
    if record.last_wall is not None and datetime.fromisoformat(record.last_wall) > until_time:
        return True
    return record.end.ts.time > until_time.timestamp()


def _slice_reader(archive, name: str) -> Callable[[], Iterator[bytes]]:
    return lambda: archive.slice_entries(name)


def _oldest_point(catalog) -> str:
    points = [point_of(m) for m in catalog.manifests if consistency_point(m) is not None]
    return ts_text(min(points)) if points else "nothing (no backup)"


def restore_sources(point: RestorePoint, databases: list[str] | None) -> dict[str, StoredObject | None]:
    """Database -> its archive in the point's full, in manifest order, only `databases` when
    given; plus (None) the databases the expected backup holds that the full does not (created
    since: the oplog replay makes them). A requested database found in neither is left out: the
    caller decides, once the oplog was scanned too (MongoEngine.restore)."""
    sources: dict[str, StoredObject | None] = {
        o.database or "": o for o in archive_objects(point.base, None) if not databases or o.database in databases
    }
    if point.expected is not None:
        for database in point.expected.fingerprints:
            if database not in sources and (not databases or database in databases):
                sources[database] = None
    return sources


def point_stamp(point: RestorePoint) -> str:
    """'YYYYMMDDTHHMMSS' (UTC) of the point a restore goes to: what new database names carry."""
    if point.until_ts is not None:
        moment = datetime.fromtimestamp(point.until_ts.time, UTC)
    else:
        assert point.until_time is not None
        moment = point.until_time.astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S}"
