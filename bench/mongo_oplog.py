"""The MongoDB bench's oplog half: archive lag under a steady write load, then the restore of the
full backup and the replay of the archived oplog onto it (what a point-in-time restore does).

    lag = archive_under_load(server, settings, repo_dir, database, args, log)
    pit = point_in_time(engine, repo_dir, manifest, archive, databases, log)

Lag: OplogArchive.ship() runs in a loop (at once again after shipping something, else after
POLL_S) while bench.mongo_writer, a process of its own, writes at `--mongo-write-rate` for
`--mongo-write-seconds`. The lag of a slice is the time from its first entry's wall time to its
record's archived_at (the moment it became restorable), the worst entry of the slice; the
figure is the largest over the slices whose entries were written under the load, and the
oldest entry still waiting when the writer stopped counts too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from bench import measure as m
from bench.subproc import PROJECT_ROOT, _child_env, _last_json_line

POLL_S = 0.5


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def archive_under_load(server, settings, repo_dir: Path, database: str, args, log) -> dict:
    """Ship the oplog of `settings` (a MongoSettings with oplog_slice_seconds set) into a
    LocalStore repository at `repo_dir` while bench.mongo_writer writes to `database`; returns
    the figures (lag, ships, writer rate) and leaves every entry archived. The archive object is
    in doc["_archive"] (not JSON; popped by the caller)."""
    from vaultflow.engines.mongodb.oplog_archive import OplogArchive
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore

    archive = OplogArchive(Repository(LocalStore(repo_dir)), settings.target_name, settings)
    t0 = time.monotonic()
    backlog = archive.ship()
    backlog_s = time.monotonic() - t0
    entries_backlog = sum(r.count for r in archive.records())
    log(
        f"  mongo oplog backlog: {entries_backlog} entries in {len(backlog.shipped)} slices shipped in "
        f"{backlog_s:.1f} s ({backlog.raw_bytes / 1e6:.1f} MB raw); {backlog.lag_units} entries wait"
    )
    before = set(archive.units())
    load_started = time.time()
    writer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.mongo_writer",
            "--port",
            str(server.port),
            "--database",
            database,
            "--seconds",
            str(args.mongo_write_seconds),
            "--rate",
            str(args.mongo_write_rate),
        ],
        cwd=PROJECT_ROOT,
        env=_child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ships: list[dict] = []
    try:
        while writer.poll() is None:
            ships.append(_ship_once(archive))
            if not ships[-1]["shipped"]:
                time.sleep(POLL_S)
        stdout, stderr = writer.communicate()
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.communicate()
    if writer.returncode != 0:
        raise RuntimeError(f"bench.mongo_writer failed ({writer.returncode}):\n{stderr[-3000:]}")
    written = _last_json_line(stdout, stderr, "bench.mongo_writer")
    stopped = time.time()
    waiting = ships[-1]["lag_seconds"] if ships else 0.0
    log(
        f"  mongo writer: {written['entries']} operations in {written['seconds']} s "
        f"({written['entries_per_second']} /s, target {args.mongo_write_rate}); {len(ships)} ships"
    )
    # The last slice waits for its window: ship until nothing is left.
    deadline = time.monotonic() + settings.oplog_slice_seconds + 60
    while time.monotonic() < deadline:
        ships.append(_ship_once(archive))
        if ships[-1]["lag_units"] == 0:
            break
        time.sleep(POLL_S)
    records = [r for r in archive.records() if r.name not in before and r.count]
    lags = [
        (_seconds(r.archived_at) - _seconds(r.first_wall), r)
        for r in records
        if r.first_wall and _seconds(r.first_wall) >= load_started - 1
    ]
    worst = max((lag for lag, _ in lags), default=None)
    under_load = [lag for lag, r in lags if _seconds(r.first_wall) < stopped]
    doc = {
        "slice_seconds": settings.oplog_slice_seconds,
        "backlog": {
            "entries": entries_backlog,
            "slices": len(backlog.shipped),
            "seconds": round(backlog_s, 2),
            "raw_bytes": backlog.raw_bytes,
            "entries_per_second": round(entries_backlog / backlog_s) if backlog_s else None,
        },
        "writer": written,
        "slices": len(records),
        "entries_archived": sum(r.count for r in records),
        "raw_bytes": sum(r.raw_size for r in records),
        "stored_bytes": sum(r.stored_size for r in records),
        "max_lag_seconds": round(max([*under_load, waiting], default=0.0), 2),
        "max_lag_seconds_incl_final_slice": None if worst is None else round(worst, 2),
        "slice_lags": [[r.name, r.count, round(lag, 2)] for lag, r in lags],
        "ships": len(ships),
        "ship_seconds_max": round(max((s["seconds"] for s in ships), default=0.0), 2),
        "ship_seconds_median": round(sorted(s["seconds"] for s in ships)[len(ships) // 2], 2) if ships else None,
        "lag_units_max": max((s["lag_units"] for s in ships), default=0),
        "all_archived": bool(ships) and ships[-1]["lag_units"] == 0,
        "_archive": archive,
    }
    log(
        f"  mongo archive lag: max {doc['max_lag_seconds']} s over {len(records)} slices "
        f"({doc['entries_archived']} entries); ship max {doc['ship_seconds_max']} s, median "
        f"{doc['ship_seconds_median']} s; all archived: {doc['all_archived']}"
    )
    return doc


def _ship_once(archive) -> dict:
    t0 = time.monotonic()
    report = archive.ship()
    return {
        "seconds": time.monotonic() - t0,
        "shipped": len(report.shipped),
        "lag_units": report.lag_units,
        "lag_seconds": report.lag_seconds,
    }


# What replayed_restore.restore_replayed notes per replay pass (replay.ReplayReport.summary):
# its entries and its rate (the rate, not the seconds, which it says as a human duration).
REPLAYED = re.compile(r"replayed (\d+) oplog entries.*?([\d.]+) entries/s")


def point_in_time(engine, repo_dir: Path, manifest, archive, databases: list[str], source, log) -> dict:
    """A point-in-time restore through the engine (MongoEngine.restore with to_ts = the newest
    archived entry): the full backup `manifest` restored into new databases, then every archived
    oplog entry after its cluster time replayed; then the collections the writer touched are
    compared with the source's. Returns the whole restore's seconds, the replay's seconds and
    entries (from the restore's notes, one per database) and entries/s."""
    from vaultflow.engines.base import BackupContext
    from vaultflow.engines.mongodb.restore import read_fingerprints
    from vaultflow.engines.mongodb.settings import MongoRestoreOptions
    from vaultflow.repository import Repository
    from vaultflow.stores.local import LocalStore

    ctx = BackupContext(repository=Repository(LocalStore(repo_dir)), log=lambda line: None)
    records = [r for r in archive.records() if r.last_ts is not None]
    last_ts = records[-1].last_ts if records else None
    to_ts = None if last_ts is None else f"{last_ts.time}:{last_ts.inc}"
    from bench.mongo import patient_client

    cpu0, server0 = os.times(), m.server_cpu()
    t0 = time.monotonic()
    result = engine.restore(ctx, manifest, options=MongoRestoreOptions(to_ts=to_ts) if to_ts else None)
    restore_s = time.monotonic() - t0
    cpu1, server1 = os.times(), m.server_cpu()
    replays = [found for note in result.notes if (found := REPLAYED.search(note))]
    if records and not replays:  # a reworded note read as "0 entries" once: say so instead
        raise RuntimeError(f"no replay note matches {REPLAYED.pattern!r} in the restore's notes: {result.notes}")
    entries = sum(int(found.group(1)) for found in replays)
    replay_s = sum(int(found.group(1)) / float(found.group(2)) for found in replays if float(found.group(2)))
    log(f"  mongo point-in-time restore to {to_ts}: {restore_s:.1f} s into {result.restored}")
    with patient_client(source) as client:
        touched = ["orders", "customer"]
        check = {
            db: read_fingerprints(client, db, touched) == read_fingerprints(client, result.restored[db], touched)
            for db in databases
        }
        for name in result.restored.values():
            client.drop_database(name)
    doc = {
        "restore_seconds": round(restore_s, 2),
        "restore_engine_seconds": round(result.seconds, 2),
        "replay_seconds": round(replay_s, 2),
        "entries": entries,
        "restore_cpu_bench_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 2),
        "restore_cpu_server_s": round(server1 - server0, 2),
        "entries_per_second": round(entries / replay_s) if replay_s else None,
        "to_ts": to_ts,
        "matches_source": check,
        "path": "MongoEngine.restore(options=MongoRestoreOptions(to_ts=...)): the full, then archived slices",
    }
    log(
        f"  mongo replay: {entries} entries applied in {replay_s:.1f} s ({doc['entries_per_second']} entries/s); "
        f"copy matches source: {check}"
    )
    return doc
