"""Running a planned MongoDB restore on its server (restore.py and replayed_restore.py restore one
pass; restore_plan.py and replay_landing.py say where everything lands).

New names directly, existing ones only after a scratch copy compared equal: first every target
database that does not exist is restored into directly (recorded in the repository as scratch
until it compared equal) and every existing one (overwrite) into `<name>_vf_<random>`, all in
one pass (for a replaying restore, one oplog replay for all of them); then each existing target
whose copy compared equal is dropped and restored into again, alone, and compared again. Not
renameCollection: across databases MongoDB copies the data anyway, and SecantusDB drops
collection options. A restore killed midway leaves its scratch records: the next restore or drill
of the target drops what they name (drop_dead_scratch).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bson import Timestamp

from vaultflow.compare import Comparison, TableComparison
from vaultflow.engines.base import BackupContext, RestoreResult
from vaultflow.engines.mongodb.client import connected
from vaultflow.engines.mongodb.consistency import ts_text
from vaultflow.engines.mongodb.pitr import RestorePoint, point_of
from vaultflow.engines.mongodb.replay_landing import Landing
from vaultflow.engines.mongodb.replayed_restore import restore_replayed
from vaultflow.engines.mongodb.restore import (
    ENGINE,
    AuthToCreate,
    drop_quietly,
    name_taken,
    restore_target,
    scratch_name,
)
from vaultflow.engines.mongodb.restore_plan import RestorePlan, TargetDatabase
from vaultflow.engines.mongodb.settings import MongoSettings
from vaultflow.engines.mongodb.users import compare_auth, create_auth, refuse_existing
from vaultflow.errors import RefusedError, note_cleanup_failure
from vaultflow.summary import when


@dataclass
class RestoreRun:
    """One restore of `plan` from `point` on the server `config` names: `namespaces` the
    selection, `landing` where a replay's namespaces land (None without a replay); `notes` gather
    what the result will say; `last_read` the newest oplog entry a replay read."""

    config: MongoSettings
    ctx: BackupContext
    point: RestorePoint
    plan: RestorePlan
    namespaces: list[str] | None = None
    landing: Landing | None = None
    notes: list[str] = field(default_factory=list)
    last_read: Timestamp | None = None

    def run(self, *, overwrite: bool, keep: bool, auth: dict[str, AuthToCreate] | None = None) -> RestoreResult:
        """Restore and compare every target database (the module docstring says in which order).
        `auth`: users and roles to create on a target once its data compared equal (every one
        checked absent before anything is written). keep=False (drills): every copy is dropped
        after its comparison. RefusedError, before anything is written, when a target exists and
        not `overwrite`."""
        started = time.monotonic()
        rows: list[TableComparison] = []
        done: set[str] = set()
        auth = auth or {}
        with connected(self.config) as client:
            drop_dead_scratch(self.config, self.ctx, client)
            present = set(client.list_database_names())
            taken = [target.name for target in self.plan.targets if target.name in present]
            if taken and not overwrite:
                raise RefusedError(name_taken(taken, self.config.where))
            for name, wanted in auth.items():
                refuse_existing(client, name, wanted.users, wanted.roles)
            first = {t.name: scratch_name(t.name) if t.name in present else t.name for t in self.plan.targets}
            dropped = {name for name in first if name in present or not keep}
            outcome = self.restore_into(client, self.plan.targets, first, dropped)
            for target in self.plan.targets:
                final = target.name
                table_rows = outcome[final]
                if final in present:
                    if not all_match(table_rows):
                        rows += table_rows
                        continue  # the original stays as it was
                    client.drop_database(final)
                    table_rows = self.restore_into(client, [target], {final: final}, set() if keep else {final})[final]
                rows += table_rows
                if all_match(table_rows) and final in auth:
                    wanted = auth[final]
                    self.notes += create_auth(client, final, wanted.users, wanted.roles)
                    rows.append(compare_auth(client, target.label, final, wanted.users, wanted.roles))
                if all_match(table_rows) or not keep:
                    done.add(final)
        self.notes += [note for wanted in auth.values() for note in wanted.notes]
        if self.point.expected is None:
            self.notes.append(
                "restored to a point between backups: no fingerprints exist for it, so nothing was compared; "
                f"every object and oplog slice read passed its checksums (restored to {self.point.describe()}; "
                "each replay is noted with the first and last entry it applied)"
            )
        return RestoreResult(
            backup_id=(self.point.expected or self.point.base).id,
            restored=self.plan.restored_into(done),
            seconds=time.monotonic() - started,
            comparison=Comparison(rows, noun="collections"),
            notes=self.notes,
            reached=self.reached(),
        )

    def reached(self) -> str:
        """The oplog time the restored data stands at, for people: the expected backup's own
        point (its fingerprints are what the comparison checked), else, for a point between
        backups, the newest oplog entry the replay read (none read: the full's own point)."""
        point = self.point
        if point.expected is not None:
            ts = point_of(point.expected)
            how = f"backup {point.expected.id}'s consistent point"
        else:
            ts = max(point.settled, self.last_read) if self.last_read is not None else point.settled
            how = "the newest oplog entry replayed up to the point"
        return f"oplog time {ts_text(ts)} ({when(datetime.fromtimestamp(ts.time, UTC))}; {how})"

    def restore_into(
        self, client, targets: list[TargetDatabase], into: dict[str, str], dropped: set[str]
    ) -> dict[str, list[TableComparison]]:
        """Restore each of `targets` into database `into[target.name]` (each recorded as a scratch
        database meanwhile): the full's archives, then, for a chain or a point in time, the oplog
        replayed once for all of them (replayed_restore.restore_replayed); compare each
        collection with its source collection's fingerprint in the expected backup, and, without
        a replay, each database's indexes, options and views. Afterwards the copies of the
        targets named in `dropped`, and every copy that differs, are dropped; on any error, all
        of them. Returns target name -> comparison rows; with rename and a replay, records in
        `plan.restored` where each source namespace landed."""
        repo, point = self.ctx.repository, self.point
        records: dict[str, str] = {}
        try:
            for target in targets:
                records[target.name] = repo.put_scratch(ENGINE, self.config.name, into[target.name], self.config.where)
            if point.replays:
                assert self.landing is not None, "a replaying restore is planned with a landing"
                pairs = [(target, into[target.name]) for target in targets]
                replayed = restore_replayed(client, self.ctx, point, self.landing, pairs, self.namespaces, self.notes)
                self.last_read = replayed.last_read
                outcome = replayed.rows
                if self.plan.renamed:
                    self.plan.restored.update(replayed.landed)
            else:
                outcome = {
                    t.name: restore_target(client, self.ctx, point.base, t, into[t.name], self.namespaces)
                    for t in targets
                }
        except BaseException as exc:
            for name, record in records.items():
                try:
                    drop_quietly(client, into[name], self.ctx.log)
                    repo.delete_scratch(record)
                except Exception as cleanup:  # noqa: BLE001 - noted on the original error
                    note_cleanup_failure(exc, f"removing scratch database {into[name]}: {cleanup}", self.ctx.log)
            raise
        for name, record in records.items():
            if name in dropped or not all_match(outcome[name]):  # a copy that differs is never taken for the backup
                drop_quietly(client, into[name], self.ctx.log)
            repo.delete_scratch(record)
        return outcome


def drop_dead_scratch(config: MongoSettings, ctx: BackupContext, client) -> None:
    """Drop the databases that killed restores or drills of the target `config` names left on its
    server (their scratch records' holders are gone), and their records."""
    ctx.repository.drop_dead_scratch(ENGINE, config.name, config.where, client.drop_database, ctx.log)


def all_match(rows: list[TableComparison]) -> bool:
    """Whether every comparison row says 'match' (an empty list does)."""
    return all(row.status == "match" for row in rows)
