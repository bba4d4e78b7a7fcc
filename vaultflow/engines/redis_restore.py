"""Redis restores: always into a scratch server first, compared with the backup's fingerprint.

  default        scratch redis-server on a free port (or `port`), left running for the user
  into=DIR       dump.rdb / appendonlydir written into DIR, proven by a scratch start, stopped
  into=original  the proven scratch copy replayed into the target server through the client
                 (DUMP on the scratch, RESTORE ... REPLACE on the target), optionally only keys
                 matching `key_pattern`, into `into_db`

Why replay rather than the seed's stop / replace dump.rdb / start: vaultflow does not own the
server's service manager; with appendonly yes Redis ignores dump.rdb at start (the classic
way that procedure silently restores nothing); and replay works for remote servers too. The
target keeps serving; without overwrite nothing that exists is touched.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from vaultflow.compare import Comparison, TableComparison, compare_database
from vaultflow.engines.base import BackupContext, RestoreResult
from vaultflow.engines.redis_client import KEYSPACE, connect, fingerprint_server
from vaultflow.engines.redis_rdb import promote, start_replica_scratch
from vaultflow.errors import ConfigError, IntegrityError, NotFoundError, RefusedError
from vaultflow.fsutil import empty_directory
from vaultflow.manifest import Manifest
from vaultflow.pipeline import write_verified

BATCH = 1000
CONF_FILES = ("redis.conf", "redis.log")


def materialize(ctx: BackupContext, manifest: Manifest, dest: Path) -> dict[str, str]:
    """Write the backup's data files into `dest`; the redis.conf settings to load them."""
    if manifest.mode == "aof":
        from vaultflow.engines.redis_aof import materialize_aof_chain
        return materialize_aof_chain(ctx, manifest, dest)
    obj = next((o for o in manifest.objects if o.role == "rdb"), None)
    if obj is None:
        raise NotFoundError(f"backup {manifest.id} holds no RDB object")
    with open(dest / "dump.rdb", "wb") as out:
        write_verified(ctx.repository.store, ctx.repository.object_key(manifest, obj.key), obj.sha256,
                       obj.stored_size, out, name=f"{manifest.id}/{obj.key}")
    return {"dbfilename": "dump.rdb", "appendonly": "no"}


def compare_keyspace(expected: dict, actual: dict) -> Comparison:
    tables: list[TableComparison] = []
    for group in sorted(set(expected) | set(actual)):
        tables += compare_database(group, expected.get(group, {}), actual.get(group, {}))
    return Comparison(tables)


def _prepare_dest(into: str | None, manifest: Manifest) -> tuple[Path, bool]:
    """(directory, whether we created it and may delete it)."""
    if into is None:
        return Path(tempfile.mkdtemp(prefix=f"vaultflow-redis-{manifest.target[:20]}-{manifest.id[:15]}-")), True
    dest = Path(into)
    if dest.exists() and any(dest.iterdir()):
        raise RefusedError(f"{dest} is not empty: restore a Redis backup into a new or empty directory")
    dest.mkdir(parents=True, exist_ok=True)
    return dest, False


def restore_redis(engine, ctx: BackupContext, manifest: Manifest, *, into: str | None, overwrite: bool,
                  databases: list[str] | None, key_pattern: str | None, into_db: int | None,
                  port: int | None, keep_running: bool) -> RestoreResult:
    start = time.monotonic()
    replay = into == "original" or key_pattern is not None or into_db is not None
    if replay and into not in (None, "original"):
        raise ConfigError("key_pattern / into_db restore keys into the target server (into='original'); "
                          f"they cannot be combined with into={into!r}")
    dest, created = _prepare_dest(None if replay else into, manifest)
    server = blackhole = None
    leave_running = keep_files = False
    try:
        settings = materialize(ctx, manifest, dest)
        server, blackhole = start_replica_scratch(dest, engine.config.bin_dir, settings=settings,
                                                  port=None if replay else port)
        mode = "digest" if KEYSPACE in manifest.fingerprints else "counts"
        with server.client() as conn:
            comparison = compare_keyspace(manifest.fingerprints, fingerprint_server(conn, mode))
        if not comparison.ok:
            keep_files = True
            raise IntegrityError(f"the restored copy of backup {manifest.id} differs from its fingerprint: "
                                 f"{comparison.summary()}; its files are kept in {dest} for inspection")
        if replay:
            comparison, restored = replay_into_target(engine.config, server, manifest, overwrite=overwrite,
                                                      databases=databases, key_pattern=key_pattern,
                                                      into_db=into_db, log=ctx.log)
        elif into is not None:
            restored, keep_files = {"directory": str(dest)}, True
        else:
            restored = {"server": server.where, "directory": str(dest)}
        seconds = time.monotonic() - start
        if keep_running and not replay and into is None:
            promote(server, blackhole)
            leave_running = keep_files = True
            ctx.log(f"restored {manifest.id} into a scratch redis-server at {server.where} (data in {dest}); "
                    f"stop it with: redis-cli -p {server.port} shutdown nosave")
        return RestoreResult(backup_id=manifest.id, restored=restored, seconds=seconds, comparison=comparison)
    finally:
        if not leave_running:
            if server is not None:
                server.stop()
            if blackhole is not None:
                blackhole.close()
        if not keep_files:
            _remove_restored(dest, created)
        elif into is not None and not replay:
            for name in CONF_FILES:  # the user's directory gets data files only
                (dest / name).unlink(missing_ok=True)


def _remove_restored(dest: Path, created: bool) -> None:
    """Nothing restorable-but-wrong stays behind: our directory goes, a user's is emptied."""
    if created:
        shutil.rmtree(dest, ignore_errors=True)
    else:
        empty_directory(dest)


def _source_dbs(manifest: Manifest, databases: list[str] | None) -> list[int]:
    present = sorted(int(g[2:]) for g in manifest.fingerprints if g.startswith("db"))
    if not databases:
        return present
    wanted = sorted({int(d[2:]) if str(d).startswith("db") else int(d) for d in databases})
    missing = [d for d in wanted if d not in present]
    if missing:
        raise NotFoundError(f"backup {manifest.id} has no keys in db {', '.join(map(str, missing))} "
                            f"(it has db {', '.join(map(str, present)) or 'none'})")
    return wanted


def replay_into_target(config, scratch, manifest: Manifest, *, overwrite: bool, databases, key_pattern,
                       into_db, log=print) -> tuple[Comparison, dict[str, str]]:
    """DUMP keys from the proven scratch copy, RESTORE them on the target; see module doc."""
    sources = _source_dbs(manifest, databases)
    if into_db is not None and len(sources) != 1:
        raise ConfigError(f"into_db={into_db} needs exactly one source db; backup {manifest.id} has "
                          f"{len(sources)} (choose one with databases=['db0'])")
    pattern = key_pattern or "*"
    plans = [(db, into_db if into_db is not None else db) for db in sources]
    for source_db, target_db in plans:  # refuse before writing anything
        with scratch.client(db=source_db) as src, connect(config, db=target_db) as dst:
            if not overwrite:
                clash = _first_existing(src, dst, pattern)
                if clash is not None:
                    raise RefusedError(f"key {clash!r} already exists in db {target_db} of {config.where}; nothing "
                                       "was written. Pass overwrite=True to replace existing keys")
    tables, restored = [], {}
    for source_db, target_db in plans:
        with scratch.client(db=source_db) as src, connect(config, db=target_db) as dst:
            expected, written = _copy_keys(src, dst, pattern)
            removed = _remove_extra(src, dst) if overwrite and key_pattern is None else 0
        log(f"db{source_db} -> {config.where} db{target_db}: {written} keys restored, {removed} keys removed")
        tables.append(TableComparison(f"db{source_db}", f"keys {pattern!r} -> db{target_db}", expected, written,
                                      "match" if expected == written else "mismatch"))
        restored[f"db{source_db}"] = f"{config.where}/db{target_db}"
    return Comparison(tables), restored


def _scan(conn, pattern: str):
    batch = []
    for key in conn.scan_iter(match=pattern, count=BATCH):
        batch.append(key)
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _first_existing(src, dst, pattern: str):
    for keys in _scan(src, pattern):
        pipe = dst.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        for key, exists in zip(keys, pipe.execute()):
            if exists:
                return key.decode(errors="replace") if isinstance(key, bytes) else key
    return None


def _copy_keys(src, dst, pattern: str) -> tuple[int, int]:
    expected = written = 0
    for keys in _scan(src, pattern):
        pipe = src.pipeline(transaction=False)
        for key in keys:
            pipe.dump(key)
            pipe.pttl(key)
        values = pipe.execute()
        out = dst.pipeline(transaction=False)
        count = 0
        for i, key in enumerate(keys):
            payload, ttl = values[2 * i], values[2 * i + 1]
            if payload is None or ttl == -2:
                continue  # expired since the backup: a server would not hold it either
            out.restore(key, max(ttl, 0), payload, replace=True)
            count += 1
        expected += count
        written += sum(1 for r in out.execute(raise_on_error=True) if r in (True, b"OK", "OK"))
    return expected, written


def _remove_extra(src, dst) -> int:
    """Keys on the target that the backup does not have (overwrite = make it equal the backup)."""
    removed = 0
    for keys in _scan(dst, "*"):
        pipe = src.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        extra = [k for k, exists in zip(keys, pipe.execute()) if not exists]
        if extra:
            removed += dst.delete(*extra)
    return removed

