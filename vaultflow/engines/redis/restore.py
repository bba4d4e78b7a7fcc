"""Redis restores: always into a tied scratch server first, proven, then landed and compared.

  default        proven in a scratch replica, which is then stopped; the same files are loaded
                 by a server started *untied* on `port` (or a free one) with the source's
                 authentication, checked again and promoted: left running for the user
  into=DIR       dump.rdb / appendonlydir written into DIR and loaded from there by the scratch:
                 the directory's files are exactly what was proven; the scratch is stopped
  into=original  the proven scratch copy replayed into the target server through the client
                 (DUMP on the scratch, RESTORE ... REPLACE ABSTTL on the target), optionally only
                 keys matching `key_pattern`, into `into_db`; then every replayed key is
                 compared with the scratch copy (redis_compare.compare_copies)

Proof (redis_compare): the scratch copy against the backup-time facts (key and expire counts
per db, CRC64 footer), then where the data landed against the scratch copy, key by key.

Why replay rather than the seed's stop / replace dump.rdb / start: vaultflow does not own the
server's service manager; with appendonly yes Redis ignores dump.rdb at start (the classic
way that procedure silently restores nothing); and replay works for remote servers too. The
target keeps serving; without overwrite nothing that exists is touched.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from vaultflow.compare import Comparison
from vaultflow.engines.base import BackupContext, RestoreResult
from vaultflow.engines.redis.aof import materialize_aof_chain
from vaultflow.engines.redis.client import connect, keyspace_counts
from vaultflow.engines.redis.compare import check_scratch, compare_copies, scan_batches
from vaultflow.engines.redis.consistency import RedisRdbConsistency
from vaultflow.engines.redis.rdb import open_fifo_for_writing, promote, start_replica_scratch
from vaultflow.engines.redis.server import source_auth
from vaultflow.errors import ConfigError, IntegrityError, NotFoundError, RefusedError
from vaultflow.fsutil import empty_directory
from vaultflow.manifest import Manifest
from vaultflow.pipeline import write_verified
from vaultflow.ports import port_is_free
from vaultflow.proc import forget, mkdtemp, remove, remove_on_death

BATCH = 1000
CONF_FILES = ("redis.conf", "redis.log")


def materialize(ctx: BackupContext, manifest: Manifest, dest: Path) -> dict[str, str]:
    """Write the backup's data files into `dest`; the redis.conf settings to load them.
    IntegrityError when an object is corrupt or the RDB's CRC64 footer is not the one recorded."""
    if manifest.mode == "aof":
        return materialize_aof_chain(ctx, manifest, dest)
    obj = next((o for o in manifest.objects if o.role == "rdb"), None)
    if obj is None:
        raise NotFoundError(f"backup {manifest.id} holds no RDB object")
    with open(dest / "dump.rdb", "wb+") as out:
        write_verified(
            ctx.repository.store,
            ctx.repository.object_key(manifest, obj.key),
            obj.sha256,
            obj.stored_size,
            out,
            name=f"{manifest.id}/{obj.key}",
        )
        crc = RedisRdbConsistency.of(manifest).rdb_crc64
        if crc and crc != "disabled":
            out.seek(-9, 2)
            footer = out.read(9)
            if footer[:1] != b"\xff" or footer[1:].hex() != crc:
                raise IntegrityError(
                    f"{manifest.id}/{obj.key} does not end with the EOF opcode and the CRC64 "
                    f"{crc} recorded at backup time; restore another backup"
                )
    return {"dbfilename": "dump.rdb", "appendonly": "no"}


class _FifoOut:
    """Writes into a FIFO descriptor, keeping the last 9 bytes (EOF opcode + CRC64)."""

    def __init__(self, fd: int):
        self.fd, self.tail = fd, b""

    def write(self, chunk) -> None:
        view = memoryview(chunk)
        while view:
            view = view[os.write(self.fd, view) :]
        self.tail = (self.tail + bytes(chunk[-9:]))[-9:]


def _streamed_scratch(ctx: BackupContext, manifest: Manifest, dest: Path, bin_dir: str | None):
    """Drill fast path for an RDB backup: the scratch server loads dump.rdb from a FIFO while the
    object is verified and decompressed into it, so the drill takes about one load, not a
    decompression plus a load. Returns (server, blackhole), ready and loaded; IntegrityError as
    materialize() (the server is killed before it could serve a partial copy)."""
    obj = next((o for o in manifest.objects if o.role == "rdb"), None)
    if obj is None:
        raise NotFoundError(f"backup {manifest.id} holds no RDB object")
    os.mkfifo(dest / "dump.rdb", 0o600)
    server, blackhole = start_replica_scratch(
        dest, bin_dir, settings={"dbfilename": "dump.rdb", "appendonly": "no"}, wait=False
    )
    try:
        fd = open_fifo_for_writing(dest / "dump.rdb", lambda: server.proc.poll() is None, "the scratch redis-server")
        out = _FifoOut(fd)
        try:
            write_verified(
                ctx.repository.store,
                ctx.repository.object_key(manifest, obj.key),
                obj.sha256,
                obj.stored_size,
                out,
                name=f"{manifest.id}/{obj.key}",
            )
        finally:
            os.close(fd)
        crc = RedisRdbConsistency.of(manifest).rdb_crc64
        if crc and crc != "disabled" and (out.tail[:1] != b"\xff" or out.tail[1:].hex() != crc):
            raise IntegrityError(
                f"{manifest.id}/{obj.key} does not end with the EOF opcode and the CRC64 {crc} "
                "recorded at backup time; restore another backup"
            )
        server.wait_ready()
        (dest / "redis.conf").unlink(missing_ok=True)  # it holds the scratch password; read at start only
        return server, blackhole
    except BaseException:
        # SIGKILL: after a cut-off stream Redis re-opens the FIFO to check it and would wait forever
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
        server.stop()
        blackhole.close()
        raise


def _proven(manifest: Manifest, server, dest: Path, what: str) -> Comparison:
    with server.client() as conn:
        comparison = check_scratch(manifest.fingerprints, conn)
    if not comparison.ok:
        raise IntegrityError(
            f"{what} of backup {manifest.id} differs from the facts recorded at backup time: "
            f"{comparison.summary()}; its files are kept in {dest} for inspection"
        )
    return comparison


def _prepare_dest(into: str | None, manifest: Manifest) -> tuple[Path, bool]:
    """(directory, whether we created it and may delete it)."""
    if into is None:  # ours: removed even if this process is killed, unless restore_redis hands it over
        return mkdtemp(f"vaultflow-redis-{manifest.target[:20]}-{manifest.id[:15]}-"), True
    dest = Path(into)
    if dest.exists() and any(dest.iterdir()):
        raise RefusedError(f"{dest} is not empty: restore a Redis backup into a new or empty directory")
    dest.mkdir(parents=True, exist_ok=True)
    return dest, False


def restore_redis(
    engine,
    ctx: BackupContext,
    manifest: Manifest,
    *,
    into: str | None,
    overwrite: bool,
    databases: list[str] | None,
    key_pattern: str | None,
    into_db: int | None,
    port: int | None,
    keep_running: bool,
) -> RestoreResult:
    """See the module doc. Raises RefusedError (port in use, keys exist without overwrite, DIR
    not empty), IntegrityError (corrupt object, copy differs from the facts; files kept),
    ConfigError (contradictory parameters). A landed copy that differs from the scratch copy
    is reported in the result's comparison (the restore flow fails on it)."""
    start = time.monotonic()
    replay = into == "original" or key_pattern is not None or into_db is not None
    if replay and into != "original":
        # Never into the live server by default: every other restore without `into` goes to a new place.
        raise ConfigError(
            "key_pattern / into_db restore keys into the target server: say so with into='original' "
            f"(keys that exist there are refused unless overwrite=True){'' if into is None else f', not into={into!r}'}"
        )
    hand_over = keep_running and not replay and into is None
    if hand_over and port is not None and not port_is_free(port):
        raise RefusedError(
            f"port {port} on 127.0.0.1 is already in use: cannot start the restored redis-server "
            "there. Choose another port, or leave it empty to use a free one"
        )
    dest, created = _prepare_dest(None if replay else into, manifest)
    server = blackhole = None
    leave_running = keep_files = False
    notes: list[str] = []  # what the user must know of the result (a server left running)
    try:
        if not keep_running and not replay and into is None and manifest.mode == "rdb":
            server, blackhole = _streamed_scratch(ctx, manifest, dest, engine.config.bin_dir)  # a drill
        else:
            settings = materialize(ctx, manifest, dest)
            if created:  # an AOF chain renames a new directory onto it: register that one
                remove_on_death(dest)
            server, blackhole = start_replica_scratch(dest, engine.config.bin_dir, settings=settings)
        keep_files = True  # from here on a failure keeps the files for inspection
        comparison = _proven(manifest, server, dest, "the scratch copy")
        ctx.log(f"scratch copy of {manifest.id} at {server.where} matches the backup's facts ({comparison.summary()})")
        keep_files = False
        if replay:
            comparison, restored = replay_into_target(
                engine.config,
                server,
                manifest,
                overwrite=overwrite,
                databases=databases,
                key_pattern=key_pattern,
                into_db=into_db,
                log=ctx.log,
            )
        elif into is not None:
            restored, keep_files = {"directory": str(dest)}, True
        elif hand_over:
            server.stop()
            blackhole.close()
            config = engine.config
            auth = source_auth(config.username, config.password.get_secret_value() if config.password else None)
            server, blackhole = start_replica_scratch(
                dest, config.bin_dir, settings=settings, port=port, auth=auth, tied=False
            )
            keep_files = True
            comparison = _proven(manifest, server, dest, "the restored server")
            promote(server, blackhole)  # its redis.conf, holding the password, was deleted once it started
            leave_running = True
            restored = {"server": server.where, "directory": str(dest)}
            login = (
                f" --user {config.username} --askpass" if config.username else (" --askpass" if config.password else "")
            )
            notes.append(  # in the run's log and on the command line: the server outlives both
                f"a redis-server at {server.where} serves the restored data (in {dest}), with "
                f"{config.where}'s login; stop it with: redis-cli -p {server.port}{login} shutdown nosave, "
                f"then delete {dest} (a full copy of the data)"
            )
            ctx.log(f"restored {manifest.id}: {notes[-1]}")
        else:
            restored = {"server": server.where, "directory": str(dest)}
        return RestoreResult(
            backup_id=manifest.id,
            restored=restored,
            seconds=time.monotonic() - start,
            comparison=comparison,
            notes=notes,
        )
    finally:
        if not leave_running:
            if server is not None:
                server.stop()
            if blackhole is not None:
                blackhole.close()
        if not keep_files:
            _remove_restored(dest, created)
        elif created:  # handed over with its server, or kept for inspection: it outlives the run
            forget(dest)
        elif into is not None and not replay:
            for name in CONF_FILES:  # the user's directory gets data files only
                (dest / name).unlink(missing_ok=True)


def _remove_restored(dest: Path, created: bool) -> None:
    """Nothing restorable-but-wrong stays behind: our directory goes, a user's is emptied."""
    if created:
        remove(dest)
    else:
        empty_directory(dest)


def _source_dbs(manifest: Manifest, scratch, databases: list[str] | None) -> list[int]:
    """The dbs to replay: those the proven scratch copy holds keys in, or the named ones."""
    with scratch.client() as conn:
        present = sorted(keyspace_counts(conn))
    if not databases:
        return present
    wanted = sorted({int(d[2:]) if str(d).startswith("db") else int(d) for d in databases})
    missing = [d for d in wanted if d not in present]
    if missing:
        raise NotFoundError(
            f"backup {manifest.id} has no keys in db {', '.join(map(str, missing))} "
            f"(it has db {', '.join(map(str, present)) or 'none'})"
        )
    return wanted


def replay_into_target(
    config, scratch, manifest: Manifest, *, overwrite: bool, databases, key_pattern, into_db, log=print
) -> tuple[Comparison, dict[str, str]]:
    """DUMP keys from the proven scratch copy, RESTORE them on the target, then compare every
    replayed key (and, for a whole-server overwrite, every key) with the scratch copy."""
    sources = _source_dbs(manifest, scratch, databases)
    if into_db is not None and len(sources) != 1:
        raise ConfigError(
            f"into_db={into_db} needs exactly one source db; backup {manifest.id} has "
            f"{len(sources)} (choose one with databases=['db0'])"
        )
    pattern = key_pattern or "*"
    plans = [(db, into_db if into_db is not None else db) for db in sources]
    for source_db, target_db in plans:  # refuse before writing anything
        with scratch.client(db=source_db) as src, connect(config, db=target_db) as dst:
            if not overwrite:
                clash = _first_existing(src, dst, pattern)
                if clash is not None:
                    raise RefusedError(
                        f"key {clash!r} already exists in db {target_db} of {config.where}; nothing "
                        "was written. Pass overwrite=True to replace existing keys"
                    )
    restored = {}
    whole = overwrite and key_pattern is None
    for source_db, target_db in plans:
        with scratch.client(db=source_db) as src, connect(config, db=target_db) as dst:
            written = _copy_keys(src, dst, pattern)
            removed = _remove_extra(src, dst) if whole else 0
        log(f"db{source_db} -> {config.where} db{target_db}: {written} keys restored, {removed} keys removed")
        restored[f"db{source_db}"] = f"{config.where}/db{target_db}"
    comparison, problems = compare_copies(
        lambda db: scratch.client(db=db),
        lambda db: connect(config, db=db),
        plans,
        pattern=pattern,
        extra_is_difference=whole,
    )
    for problem in problems:
        log(f"{config.where} differs from backup {manifest.id}: {problem}")
    return comparison, restored


def _first_existing(src, dst, pattern: str):
    for keys in scan_batches(src, pattern):
        pipe = dst.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        for key, exists in zip(keys, pipe.execute(), strict=True):
            if exists:
                return key.decode(errors="replace") if isinstance(key, bytes) else key
    return None


def _copy_keys(src, dst, pattern: str) -> int:
    """RESTORE ... REPLACE every matching key with its absolute expiry (ABSTTL, ms): the copy
    expires at the same instant as the backup's key, however long the restore takes."""
    written = 0
    for keys in scan_batches(src, pattern):
        pipe = src.pipeline(transaction=False)
        for key in keys:
            pipe.dump(key)
            pipe.execute_command("PEXPIRETIME", key)
        values = pipe.execute()
        out = dst.pipeline(transaction=False)
        for i, key in enumerate(keys):
            payload, expire_at = values[2 * i], values[2 * i + 1]
            if payload is None or expire_at == -2:
                continue  # expired since the backup: a server would not hold it either
            out.restore(key, max(expire_at, 0), payload, replace=True, absttl=expire_at > 0)
        written += sum(1 for r in out.execute(raise_on_error=True) if r in (True, b"OK", "OK"))
    return written


def _remove_extra(src, dst) -> int:
    """Keys on the target that the backup does not have (overwrite = make it equal the backup)."""
    removed = 0
    for keys in scan_batches(dst, "*"):
        pipe = src.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        extra = [k for k, exists in zip(keys, pipe.execute(), strict=True) if not exists]
        if extra:
            removed += dst.delete(*extra)
    return removed
