"""What a MongoDB backup records about its consistency point (Manifest.consistency), and the chain
rule of oplog chains (EngineSpec.chain_rules).

    mongodb-dump    a full: every included collection read at one cluster time (snapshot reads
                    at `atClusterTime`), or, where the snapshot window was too short, read as of
                    no single point and made consistent by the oplog from `start_ts` to `end_ts`
                    replayed on restore (mongodump --oplog semantics)
    mongodb-oplog   an incremental or differential: the oplog entries after the parent's
                    consistency point up to this backup's

Oplog timestamps are written 'SECONDS:INCREMENT' (a BSON Timestamp: seconds since the epoch and
an ordinal within that second), which sorts as a pair, not as text: use `parse_ts`.

Light on purpose (pydantic only): manifest parsing imports it through the registry.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from vaultflow.errors import ConfigError
from vaultflow.manifest import BackupMode, Consistency, Manifest


def parse_ts(text: str) -> tuple[int, int]:
    """'SECONDS:INCREMENT' -> (seconds, increment). Raises ConfigError naming the text when it is
    not two non-negative integers joined by ':'."""
    seconds, sep, increment = text.partition(":")
    if not sep or not seconds.isdigit() or not increment.isdigit():
        raise ConfigError(f"{text!r} is not an oplog timestamp: write SECONDS:INCREMENT, e.g. '1764400000:3'")
    return int(seconds), int(increment)


def format_ts(seconds: int, increment: int) -> str:
    """(seconds, increment) -> 'SECONDS:INCREMENT'."""
    return f"{seconds}:{increment}"


def ts_text(ts) -> str:
    """A bson.Timestamp (anything with .time and .inc) as 'SECONDS:INCREMENT'."""
    return format_ts(ts.time, ts.inc)


class MongoDumpConsistency(Consistency):
    """A full backup: one archive per database, all read at `cluster_time` (method 'snapshot'),
    or read over [start_ts, end_ts] with the oplog of that range in each archive ('oplog')."""

    MODE: ClassVar[BackupMode] = BackupMode.LOGICAL
    type: Literal["mongodb-dump"] = "mongodb-dump"
    method: Literal["snapshot", "unchanged", "oplog"] = Field(
        description="'snapshot': every document read at cluster_time (snapshot reads); 'unchanged': "
        "the server keeps no snapshot history, so documents were read as they were, and the oplog "
        "shows no change to their database from cluster_time to the end of its dump; 'oplog': read "
        "over start_ts..end_ts, each archive carries that range's oplog, replayed on restore"
    )
    cluster_time: str = Field(
        description="the consistency point, 'SECONDS:INCREMENT': the snapshot's atClusterTime, or end_ts"
    )
    start_ts: str = Field(description="newest oplog entry when the dump began")
    end_ts: str = Field(description="newest oplog entry when the dump ended (= cluster_time for 'oplog')")
    oplog_entries: int = Field(default=0, description="oplog entries stored with the dump ('oplog' method)")
    set_name: str | None = Field(default=None, description="the replica set's name (hello.setName)")


class MongoOplogConsistency(Consistency):
    """An incremental or differential: the oplog entries with parent_ts < ts <= end_ts of the
    included databases, in one archive (namespace 'oplog', as mongodump --oplog writes it)."""

    MODE: ClassVar[BackupMode] = BackupMode.LOGICAL
    type: Literal["mongodb-oplog"] = "mongodb-oplog"
    method: str = Field(default="oplog range", description="how the point was reached: the oplog read since the parent")
    parent_ts: str = Field(description="the parent's consistency point; entries after it are stored")
    end_ts: str = Field(description="the newest entry stored: this backup's consistency point")
    cluster_time: str = Field(description="= end_ts: where a restore of this backup stands")
    oplog_entries: int = Field(description="entries stored")
    set_name: str | None = None


class OplogChainRules:
    """Every link of an oplog chain starts where its parent's consistency point is."""

    def check_link(self, parent: Manifest, child: Manifest) -> str | None:
        """None when `child` may follow `parent`, else why not (vaultflow.chain.ChainRules)."""
        p, c = parent.consistency, child.consistency
        if not isinstance(c, MongoOplogConsistency) or not isinstance(p, MongoDumpConsistency | MongoOplogConsistency):
            return None
        if c.parent_ts != p.cluster_time:
            return (
                f"backup {child.id} continues the oplog from {c.parent_ts}, but its parent {parent.id} "
                f"stands at {p.cluster_time}"
            )
        if p.set_name and c.set_name and p.set_name != c.set_name:
            return f"backup {parent.id} (the parent of {child.id}) is of replica set {p.set_name}, not {c.set_name}"
        return None


def consistency_point(manifest: Manifest) -> str | None:
    """The cluster time ('SECONDS:INCREMENT') a MongoDB backup restores to, None for other backups."""
    point = manifest.consistency
    if isinstance(point, MongoDumpConsistency | MongoOplogConsistency):
        return point.cluster_time
    return None


CONSISTENCY_MODELS = (MongoDumpConsistency, MongoOplogConsistency)
CHAIN_RULES = OplogChainRules()
