"""Oplog slices, the units of the MongoDB oplog archive: their names, their JSON records, how a
stream of oplog entries is cut into them, and what their records say about gaps (pure: no server,
no store; vaultflow/engines/mongodb/oplog_archive.py does the I/O).

A slice holds the included entries of one stretch of the oplog, as an oplog-only mongodump
archive. Its record says where the stretch begins and ends as *positions*: (ts, n) = every entry
up to ts, of those at ts the first n included ones (n = 0 at the end of a stretch: all of them;
a slice cut by size inside a transaction whose entries share one ts ends at (ts, n > 0)). A slice
continues the previous one when its `after` is the previous `end`; the first slice, and the first
after the oplog rolled past the last archived position, were read from the oplog's oldest entry
(`after` None; `rolled_from` the position the oplog no longer reached).

Names sort in log order: `SSSSSSSSSS-IIIIIIIIII` = the seconds and increment of the slice's first
included entry's ts (the first entry read, for a slice that holds none), zero-padded, and
`-NNNNNNNN` when that entry is not the first included one at its ts (N included entries at that
ts are in earlier slices). E.g. `1764400000-0000000003`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bson import Timestamp

from vaultflow.engines.mongodb.consistency import format_ts, parse_ts
from vaultflow.engines.mongodb.oplog import EntryFacts, OplogEntry
from vaultflow.errors import ConfigError, IntegrityError
from vaultflow.logarchive import BackupContinuity, Continuity, Gap, LogStart, PrunePlan

RECORD_VERSION = 1
SLICE_FORMAT = "mongodump archive of the oplog namespace, zstd"
ROLLED_OVER = "the oplog rolled over past the last archived position"
NOT_ARCHIVED = "not archived"


def ts_of(text: str) -> Timestamp:
    """'SECONDS:INCREMENT' -> Timestamp."""
    return Timestamp(*parse_ts(text))


def text_of(ts: Timestamp) -> str:
    return format_ts(ts.time, ts.inc)


def slice_name(ts: Timestamp, skip: int = 0) -> str:
    """The name of a slice whose first entry has `ts` and follows `skip` included entries at that
    ts stored in earlier slices."""
    name = f"{ts.time:010d}-{ts.inc:010d}"
    return f"{name}-{skip:08d}" if skip else name


@dataclass(frozen=True)
class Position:
    """Every oplog entry up to `ts` read, and of the included ones at `ts` the first `count`
    (0: all entries at ts were read)."""

    ts: Timestamp
    count: int = 0

    def __str__(self) -> str:
        return text_of(self.ts) if not self.count else f"{text_of(self.ts)} (+{self.count} entries at it)"

    def document(self) -> dict[str, Any]:
        return {"ts": text_of(self.ts), "count": self.count}

    @classmethod
    def parse(cls, data: Any) -> Position | None:
        if data is None:
            return None
        return cls(ts_of(str(data["ts"])), int(data["count"]))


def _iso(wall_ms: int | None) -> str | None:
    if wall_ms is None:
        return None
    when = datetime.fromtimestamp(wall_ms / 1000, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class SliceRecord:
    """What the archive knows of one slice (`<name>.json`, written after its object).

    after:       the position it continues from; None when it was read from the oplog's oldest
                 entry (the archive's first slice, or the first after a roll-over).
    rolled_from: the last archived position the oplog no longer reached when this slice was read
                 (the entries after it and before `start_ts` are lost); None otherwise.
    start_ts:    the first oplog entry read for it (of any database).
    end:         the position it reaches: the next slice continues from it.
    count:       entries it holds; first_ts/last_ts and first_wall/last_wall (ISO 8601 UTC) of
                 them (None when it holds none).
    databases:   the selection it was read with (None: every user database).
    raw_size/raw_sha256: the archive's bytes; stored_size/sha256: the stored (zstd) object's.
    """

    name: str
    after: Position | None
    rolled_from: Position | None
    start_ts: Timestamp
    end: Position
    count: int
    first_ts: Timestamp | None
    last_ts: Timestamp | None
    first_wall: str | None
    last_wall: str | None
    databases: tuple[str, ...] | None
    set_name: str | None
    server_version: str
    raw_size: int
    stored_size: int
    sha256: str
    raw_sha256: str
    archived_at: str

    @property
    def begin_ts(self) -> Timestamp:
        """Where its stretch of oplog begins (exclusive when `after`, else the first entry read)."""
        return self.after.ts if self.after is not None else self.start_ts

    def document(self) -> dict[str, Any]:
        """The JSON object of `<name>.json`."""
        return {
            "name": self.name,
            "version": RECORD_VERSION,
            "format": SLICE_FORMAT,
            "after": None if self.after is None else self.after.document(),
            "rolled_from": None if self.rolled_from is None else self.rolled_from.document(),
            "start_ts": text_of(self.start_ts),
            "end": self.end.document(),
            "count": self.count,
            "first_ts": None if self.first_ts is None else text_of(self.first_ts),
            "last_ts": None if self.last_ts is None else text_of(self.last_ts),
            "first_wall": self.first_wall,
            "last_wall": self.last_wall,
            "databases": None if self.databases is None else list(self.databases),
            "set_name": self.set_name,
            "server_version": self.server_version,
            "raw_size": self.raw_size,
            "stored_size": self.stored_size,
            "sha256": self.sha256,
            "raw_sha256": self.raw_sha256,
            "archived_at": self.archived_at,
        }

    def encode(self) -> bytes:
        return json.dumps(self.document(), indent=1).encode() + b"\n"

    @classmethod
    def parse(cls, data: bytes, name: str, where: str) -> SliceRecord:
        """A record read from `where` (its key); IntegrityError naming it when it is unreadable,
        of another version, or names another slice."""
        try:
            doc = json.loads(data)
            if doc.get("version") != RECORD_VERSION:
                raise ValueError(f"version {doc.get('version')!r}, not {RECORD_VERSION}")
            end = Position.parse(doc["end"])
            assert end is not None
            ts = {k: None if doc[k] is None else ts_of(doc[k]) for k in ("first_ts", "last_ts")}
            record = cls(
                name=str(doc["name"]),
                after=Position.parse(doc["after"]),
                rolled_from=Position.parse(doc["rolled_from"]),
                start_ts=ts_of(doc["start_ts"]),
                end=end,
                count=int(doc["count"]),
                first_ts=ts["first_ts"],
                last_ts=ts["last_ts"],
                first_wall=doc["first_wall"],
                last_wall=doc["last_wall"],
                databases=None if doc["databases"] is None else tuple(doc["databases"]),
                set_name=doc["set_name"],
                server_version=str(doc["server_version"]),
                raw_size=int(doc["raw_size"]),
                stored_size=int(doc["stored_size"]),
                sha256=str(doc["sha256"]),
                raw_sha256=str(doc["raw_sha256"]),
                archived_at=str(doc["archived_at"]),
            )
        except (ValueError, TypeError, KeyError, AssertionError, ConfigError, AttributeError) as exc:
            raise IntegrityError(f"oplog slice record {where} is unreadable: {exc}") from None
        if record.name != name:
            raise IntegrityError(f"oplog slice record {where} names slice {record.name!r}, not {name!r}")
        return record


# -- cutting ------------------------------------------------------------------------------------
@dataclass
class SliceCut:
    """A slice being filled while the oplog is read (entries in memory: at most `limit_bytes`
    plus one entry). `add` each entry read in order; the caller cuts (stores it and starts
    `following()`) when `full` after an entry, or before an entry when `window_over(entry.ts)`,
    or at the end of the read when `window_over(server now)`: a slice spans at most `seconds` of
    oplog time from its first entry read, and holds at least `limit_bytes` unless cut by time."""

    after: Position | None
    rolled_from: Position | None
    seconds: int
    limit_bytes: int
    entries: list[bytes] = field(default_factory=list)
    size: int = 0
    start: Timestamp | None = None
    end: Position | None = None
    first: EntryFacts | None = None
    last: EntryFacts | None = None

    def add(self, entry: OplogEntry) -> None:
        ts = entry.ts
        if self.start is None:
            self.start = ts
        if self.end is None or self.end.ts != ts:
            self.end = Position(ts, self.after.count if self.after is not None and self.after.ts == ts else 0)
        if entry.included:
            self.entries.append(entry.raw)
            self.size += len(entry.raw)
            self.end = Position(ts, self.end.count + 1)
            if self.first is None:
                self.first = entry.facts
            self.last = entry.facts

    @property
    def started(self) -> bool:
        return self.start is not None

    @property
    def full(self) -> bool:
        return self.size >= self.limit_bytes

    def window_over(self, seconds_now: float) -> bool:
        """Whether oplog time `seconds_now` (an entry's ts seconds, or the server's clock) is past
        this slice's window."""
        return self.start is not None and seconds_now >= self.start.time + self.seconds

    @property
    def name(self) -> str:
        assert self.start is not None, "an empty cut has no name"
        ts = self.first.ts if self.first is not None else self.start
        skip = self.after.count if self.after is not None and self.after.ts == ts else 0
        return slice_name(ts, skip)

    @property
    def first_wall_ms(self) -> int | None:
        return None if self.first is None else self.first.wall_ms

    def close(self, *, at_boundary: bool) -> None:
        """The slice is cut here. `at_boundary`: every entry at its end ts was read (the next one
        has another ts, or the read reached its bound), so its end is (ts, 0); else the cut falls
        inside a group of entries sharing one ts and the end keeps their count."""
        if at_boundary and self.end is not None:
            self.end = Position(self.end.ts, 0)

    def following(self) -> SliceCut:
        assert self.end is not None
        return SliceCut(self.end, None, self.seconds, self.limit_bytes)

    def record(
        self,
        *,
        databases: Sequence[str] | None,
        set_name: str | None,
        server_version: str,
        raw_size: int,
        stored_size: int,
        sha256: str,
        raw_sha256: str,
    ) -> SliceRecord:
        assert self.start is not None and self.end is not None
        return SliceRecord(
            name=self.name,
            after=self.after,
            rolled_from=self.rolled_from,
            start_ts=self.start,
            end=self.end,
            count=len(self.entries),
            first_ts=None if self.first is None else self.first.ts,
            last_ts=None if self.last is None else self.last.ts,
            first_wall=None if self.first is None else _iso(self.first.wall_ms),
            last_wall=None if self.last is None else _iso(self.last.wall_ms),
            databases=None if databases is None else tuple(sorted(databases)),
            set_name=set_name,
            server_version=server_version,
            raw_size=raw_size,
            stored_size=stored_size,
            sha256=sha256,
            raw_sha256=raw_sha256,
            archived_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        )


# -- gaps ---------------------------------------------------------------------------------------
def break_before(previous: SliceRecord, record: SliceRecord) -> Gap | None:
    """The gap between two consecutive archived slices, None when `record` continues `previous`.
    Gap.first and .last are the positions either side of the hole: the entries after `first`
    and before (rolled over) or up to (slices missing) `last` are not in the archive."""
    if record.after == previous.end:
        return None
    if record.after is None:
        reason = (
            ROLLED_OVER if record.rolled_from is not None else "archiving started over from the oplog's oldest entry"
        )
        return Gap(text_of(previous.end.ts), text_of(record.start_ts), reason)
    return Gap(text_of(previous.end.ts), text_of(record.after.ts), NOT_ARCHIVED)


def head_gap(point: Timestamp, record: SliceRecord) -> Gap | None:
    """The gap between a backup's cluster time `point` and the first slice holding an entry after
    it, None when that slice's stretch begins at or before `point`."""
    if record.begin_ts <= point:
        return None
    reason = ROLLED_OVER if record.rolled_from is not None else NOT_ARCHIVED
    return Gap(text_of(point), text_of(record.begin_ts), reason)


def first_after(records: Sequence[SliceRecord], point: Timestamp) -> int | None:
    """Index of the first slice that holds (or may hold) an entry after `point`: the first whose
    end is past it. None when every slice ends at or before it."""
    for index, record in enumerate(records):
        if record.end.ts > point:
            return index
    return None


def continuity_of(records: Sequence[SliceRecord], starts: Sequence[tuple[str, Timestamp]]) -> Continuity:
    """The continuity of the archive `records` (log order) for backups (id, cluster time): from
    the slice holding the first entry after each cluster time to the newest, every hole named
    (the head one when that slice's stretch begins after the cluster time, then every break
    between consecutive slices). A backup past the newest slice's end is fine: its oplog is not
    archived yet."""
    if not records or not starts:
        return Continuity(len(records))
    breaks = [break_before(records[i - 1], records[i]) for i in range(1, len(records))]
    checked = []
    for backup_id, point in sorted(starts, key=lambda pair: pair[1]):
        index = first_after(records, point)
        if index is None:
            start = LogStart(backup_id, "", text_of(point))
            checked.append(BackupContinuity(start, note="its oplog is not archived yet"))
            continue
        start = LogStart(backup_id, records[index].name, text_of(point))
        found = tuple(gap for gap in (head_gap(point, records[index]), *breaks[index:]) if gap is not None)
        problem = ""
        if found:
            first = found[0]
            more = f" and {len(found) - 1} more gaps" if len(found) > 1 else ""
            problem = (
                f"backup {backup_id} (cluster time {text_of(point)}) restores to no point after {first.first}: "
                f"the archive lacks the oplog after {first.first} up to {first.last} ({first.reason}){more}. "
                "Take a full backup to restore later points"
            )
        note = f"oplog up to {text_of(records[-1].end.ts)}"
        checked.append(BackupContinuity(start, found, tuple(str(gap) for gap in found), note, problem))
    return Continuity(len(records), tuple(checked))


def prune_plan(records: Sequence[SliceRecord], points: Sequence[tuple[Timestamp, str]]) -> PrunePlan:
    """The slices no kept backup (cluster time, id) replays from: those ending at or before the
    oldest cluster time, never the newest slice (shipping resumes from its end)."""
    if not points:
        return PrunePlan()
    oldest, backup_id = min(points)
    old = tuple(record.name for record in records[:-1] if record.end.ts <= oldest)
    return PrunePlan(
        old,
        f"{len(old)} oplog slices ending at or before the oldest kept backup ({backup_id}, cluster time "
        f"{text_of(oldest)})",
    )
