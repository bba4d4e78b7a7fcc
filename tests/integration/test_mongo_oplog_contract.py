"""The log-archive contract (tests/unit/test_logarchive_contract.py) run against the MongoDB oplog
archive on a real server: the same test functions, with a harness whose "server" is SecantusDB
and whose units are oplog slices.

Each produced unit is one insert of a document larger than the target's oplog_slice_bytes, so
each makes one complete slice at once, named after its entry's ts; its bytes are the
oplog-only mongodump archive of that one entry. A backup "starting at" a unit has the cluster time
of the entry just before it.

Not run here: test_continuity_names_each_gap_from_what_to_what_for_each_backup asserts that the
units missing from a hole are named; an oplog archive cannot name slices that were deleted (their
names come from their first entry), so it names the hole by the positions either side instead
(tests/integration/test_mongo_oplog_archive.py checks that), and the WAL-only timeline test.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from bson import Timestamp
from pymongo import MongoClient

from tests.unit.test_logarchive_contract import (  # noqa: F401 - collected here with the harness below
    TARGET,
    Harness,
    test_a_failed_ship_names_the_unit_and_never_leaves_a_hole,
    test_an_archive_opened_without_settings_reads_but_cannot_ship,
    test_fetch_returns_each_unit_verified_and_false_when_not_archived,
    test_prunable_keeps_every_unit_a_kept_backup_reads_then_delete,
    test_ship_following_adds_up_runs_and_reports_the_largest_backlog,
    test_ship_following_failure_reports_what_every_run_shipped,
    test_ship_moves_every_produced_unit_in_order_with_counts_bytes_and_lag,
    test_the_archive_satisfies_the_protocol,
)
from vaultflow.engines.mongodb.consistency import MongoDumpConsistency
from vaultflow.engines.mongodb.oplog import write_oplog_archive
from vaultflow.engines.mongodb.oplog_archive import OplogArchive
from vaultflow.engines.mongodb.oplog_slices import slice_name
from vaultflow.engines.mongodb.settings import MongoSettings
from vaultflow.manifest import BackupKind, Manifest, new_backup_id
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
from vaultflow.testing.mongo_server import MongoProcess, running_mongo

SLICE_BYTES = 2000
T0 = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def server() -> Iterator[MongoProcess]:
    with running_mongo("oplog-contract") as process:
        yield process


@pytest.fixture(scope="module")
def client(server: MongoProcess) -> Iterator[MongoClient]:
    with server.client() as own:
        yield own


def newest(client: MongoClient) -> dict:
    return client.local.oplog.rs.find_one({}, sort=[("$natural", -1)])


def ts_text(ts: Timestamp) -> str:
    return f"{ts.time}:{ts.inc}"


@pytest.fixture
def harness(request, server: MongoProcess, client: MongoClient, tmp_path: Path) -> Harness:
    database = f"contract_{request.node.name[5:40]}"
    version = str(client.admin.command("buildInfo")["version"])
    before: dict[str, Timestamp] = {}
    counter = iter(range(1, 10_000))

    def produce_one() -> tuple[str, bytes]:
        previous = newest(client)["ts"]
        client[database].docs.insert_one({"_id": next(counter), "pad": "p" * SLICE_BYTES})
        entry = client.local.oplog.rs.find_one({"ns": f"{database}.docs"}, sort=[("$natural", -1)])
        raw = client.local.oplog.rs.find_raw_batches({"ts": entry["ts"]}).next()
        name = slice_name(entry["ts"])
        before[name] = previous
        out = io.BytesIO()
        write_oplog_archive(out, [raw], version)
        return name, out.getvalue()

    def manifest_for(start: str | None, seq: int) -> Manifest:
        when = T0 + timedelta(hours=seq)
        point = ts_text(before[start]) if start else "1:1"
        return Manifest(
            id=new_backup_id(BackupKind.FULL, when),
            engine="mongodb" if start else "postgres",
            target=TARGET,
            kind=BackupKind.FULL,
            mode="logical",
            started_at=when,
            finished_at=when + timedelta(minutes=1),
            consistency=MongoDumpConsistency(method="snapshot", cluster_time=point, start_ts=point, end_ts=point)
            if start
            else _logical_postgres(),
            objects=[],
        )

    settings = MongoSettings(
        host=server.host,
        port=server.port,
        databases=[database],
        oplog_slice_seconds=10**6,  # cut by size only: one insert, one slice
        oplog_slice_bytes=SLICE_BYTES,
        target_name=TARGET,
    )
    archive = OplogArchive(Repository(LocalStore(tmp_path / "repo")), TARGET, settings)
    return Harness(
        "mongodb",
        OplogArchive,
        archive.repository,
        settings,
        produce_one,
        manifest_for,
        archive.object_key,
        archive.record_key,
        {},
    )


def _logical_postgres():
    from vaultflow.engines.postgres.consistency import PostgresLogicalConsistency

    return PostgresLogicalConsistency()
