"""Redis 7 multi-part AOF: AOF-anchored full, incremental and differential backups, chain restore.

Local mode only (RedisSettings.data_dir, the worker on the Redis host, `appendonly yes`).

  FULL          BGREWRITEAOF (after any running BGSAVE/rewrite), then the new base file
                (checked with redis-check-rdb, or redis-check-aof for an .aof base), every
                increment file up to its cut, and the AOF manifest.
  INCREMENTAL   parent = the latest backup of the target; DIFFERENTIAL: parent = the latest full.
                The bytes of each increment file after the parent's cut (new increment files
                whole, up to their cut), and the AOF manifest.

An RDB from BGSAVE has no exact position in the AOF, so increments could not be applied to it
without losing or replaying commands twice: the full is the AOF's own base instead. A cut is
the last complete command (outside MULTI/EXEC) at or before the size seen (redis_aof_format),
so a restored chain never ends in half a command and the next backup continues exactly there.
When an AOF rewrite has replaced the parent's base, the chain cannot continue:
ChainBrokenError, and the flow takes a full.

Fingerprints (key and expire counts per db) are those of the backup's own cut: an AOF's
increments are commands, not records that can be counted as they pass, so the local files at
the cuts are assembled in a private temp dir, loaded by a tied, password-protected scratch
redis-server, counted, and removed. No DEBUG DIGEST (blind to consumer-group state): restores
compare the landed data key by key with the proven scratch copy (redis_compare).

Restore (`materialize_aof_chain`) resolves the chain before writing anything, then rebuilds
`<dest>/<appenddirname>/` by concatenating each file's pieces in chain order (every piece
streamed through sha256 verification) and writes the newest AOF manifest; `dest` appears in
one rename, or not at all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import redis

from vaultflow.engines.base import BackupContext, BackupPlan, commit_unless_planned, planned_identity
from vaultflow.engines.redis.aof_files import (
    AofState,
    LocalAof,
    RangeReader,
    assemble_scratch_dir,
    check_base,
    read_aof_state,
    wait_for_aof_flush,
    wait_for_rewrite,
)
from vaultflow.engines.redis.aof_format import find_cut
from vaultflow.engines.redis.client import classify_error, connect, fingerprint_server
from vaultflow.engines.redis.consistency import AofPiece, RedisAofConsistency
from vaultflow.engines.redis.rdb import start_replica_scratch
from vaultflow.engines.redis.settings import RedisSettings
from vaultflow.errors import ChainBrokenError, ConfigError, IntegrityError, RefusedError, clause
from vaultflow.manifest import BackupKind, BackupMode, Manifest, new_backup_id
from vaultflow.pipeline import compress_into_store, write_verified
from vaultflow.proc import forget, mkdtemp, remove
from vaultflow.repository import Catalog
from vaultflow.stores.base import BytesReader
from vaultflow.summary import human_duration, human_size

ENGINE = "redis"
MANIFEST_OBJECT = "aof/manifest.zst"
TAIL_BYTES = 4096  # the bytes before a cut whose digest the next backup checks (same file, same server)
FULL_PURPOSE = "AOF-anchored full backups"

UTC = UTC


# -- backup ------------------------------------------------------------------------------------


def aof_full_backup(config: RedisSettings, ctx: BackupContext, plan: BackupPlan | None = None) -> Manifest:
    """An AOF-anchored full backup: BGREWRITEAOF, then the new base, the increments up to their
    cut and the AOF manifest, committed to ctx.repository. ConfigError when the server is not
    local, older than 7 or has appendonly off (take an RDB full then). With `plan` (the dump step
    of a backup in steps): the plan's id and start, manifest returned uncommitted."""
    started, t0 = planned_identity(plan, BackupKind.FULL)[0], time.monotonic()
    with _server_errors(config), connect(config) as conn:
        state = read_aof_state(config, conn, purpose=FULL_PURPOSE, broken=ConfigError)
        wait_for_rewrite(config, conn, state, ctx.log)
    return _backup(config, ctx, BackupKind.FULL, None, started, {"rewrite": time.monotonic() - t0}, plan)


def aof_incremental_backup(
    config: RedisSettings, ctx: BackupContext, parent: Manifest, kind: BackupKind, plan: BackupPlan | None = None
) -> Manifest:
    """The AOF bytes written since `parent` (INCREMENTAL: the latest backup; DIFFERENTIAL: the
    latest full). ChainBrokenError (the flow takes a full instead) when the target is not
    local, appendonly is off, the parent is not AOF-anchored, or an AOF rewrite replaced the
    parent's base; RefusedError for a parent of the wrong kind or target."""
    if kind == BackupKind.FULL:
        raise RefusedError("aof_incremental_backup takes INCREMENTAL or DIFFERENTIAL; use aof_full_backup")
    if parent.engine != ENGINE or parent.target != config.name:
        raise RefusedError(
            f"backup {parent.id} belongs to {parent.engine}/{parent.target}, not "
            f"{ENGINE}/{config.name}: it cannot be the parent of this target's backup"
        )
    if kind == BackupKind.DIFFERENTIAL and parent.kind != BackupKind.FULL:
        raise RefusedError(
            f"the parent of a differential backup must be a full backup; {parent.id} is {parent.kind.value}"
        )
    if not isinstance(parent.consistency, RedisAofConsistency):
        raise ChainBrokenError(
            f"backup {parent.id} of {config.where} is a {parent.mode} backup, not an "
            "AOF-anchored one: increments can only continue an AOF chain; taking a full"
        )
    return _backup(config, ctx, kind, parent, planned_identity(plan, kind)[0], {}, plan)


@contextmanager
def _server_errors(config: RedisSettings) -> Iterator[None]:
    """Redis errors classified (auth, unreachable, ...); unreadable AOF files as ConfigError."""
    try:
        yield
    except redis.exceptions.RedisError as exc:
        raise classify_error(exc, config) from exc
    except OSError as exc:
        if not str(exc.filename or "").startswith(str(config.data_dir)):
            raise
        raise ConfigError(
            f"reading the AOF of {config.where} under {config.data_dir} failed: {clause(exc)}. Can the "
            "worker read the data directory (run it as the redis user or in its group)?"
        ) from exc


def _backup(
    config: RedisSettings,
    ctx: BackupContext,
    kind: BackupKind,
    parent: Manifest | None,
    started: datetime,
    timings: dict[str, float],
    plan: BackupPlan | None = None,
) -> Manifest:
    with _server_errors(config), connect(config) as conn:
        state = read_aof_state(
            config,
            conn,
            purpose=FULL_PURPOSE if parent is None else f"{kind.value} backups",
            broken=ConfigError if parent is None else ChainBrokenError,
        )
        # Every write acknowledged before now must be in the files we cut (everysec may hold it back).
        wait_for_aof_flush(config, conn, ctx.log)
        # The open descriptors keep every file readable even if a rewrite unlinks it meanwhile.
        with LocalAof.open(state) as aof:
            if parent is not None:
                _check_continues(config, parent, aof)
            cuts, pieces = _plan(aof, parent)
            replication = conn.info("replication")  # read just after the cut: close to it, not at it
            manifest = _store(config, ctx, kind, parent, started, state, aof, cuts, pieces, replication, timings, plan)
    ctx.log(
        f"{kind.value} AOF backup {manifest.id} of {config.where}: increments "
        + ", ".join(f"{n} up to {c}" for n, c in cuts.items())
        + f"; {human_size(manifest.stored_size)} stored"
    )
    return manifest


def _store(
    config: RedisSettings,
    ctx: BackupContext,
    kind: BackupKind,
    parent: Manifest | None,
    started: datetime,
    state: AofState,
    aof: LocalAof,
    cuts: dict[str, int],
    pieces: list[tuple[str, int, int]],
    replication: dict,
    timings: dict[str, float],
    plan: BackupPlan | None = None,
) -> Manifest:
    """Stream the pieces and the AOF manifest, fingerprint the cut, commit the manifest last."""
    repo = ctx.repository
    backup_id = plan.backup_id if plan is not None else new_backup_id(kind, started)
    prefix = repo.backup_prefix(ENGINE, config.name, backup_id)
    with repo.uncommitted(ENGINE, config.name, backup_id, ctx.log):
        tools = {}
        if parent is None:
            t0 = time.monotonic()
            tools = check_base(config, aof)
            timings["check_base"] = time.monotonic() - t0
        t0 = time.monotonic()
        objects, records = [], []
        for name, offset, length in pieces:
            is_base = name == aof.base.name
            key = f"aof/{name}.zst" if is_base else f"aof/{name}.from-{offset}.zst"
            progress = (lambda done, key=key, length=length: ctx.progress(key, done, length)) if ctx.progress else None
            written = compress_into_store(
                RangeReader(aof.fds[name], offset, length),
                repo.store,
                prefix + key,
                level=repo.compression_level,
                size_hint=length,
                progress=progress,
            )
            if written.raw_size != length:
                raise IntegrityError(
                    f"{aof.directory / name} yielded {written.raw_size} bytes from offset "
                    f"{offset}, expected {length}: was it truncated? Take a full backup"
                )
            objects.append(
                written.as_object(key, "aof-base" if is_base else "aof-incr", aof.base_format if is_base else "aof")
            )
            records.append(AofPiece(object=key, file=name, offset=offset, length=length))
        written = compress_into_store(
            BytesReader(aof.manifest.live_text().encode()),
            repo.store,
            prefix + MANIFEST_OBJECT,
            level=repo.compression_level,
        )
        objects.append(written.as_object(MANIFEST_OBJECT, "aof-manifest", "aof-manifest"))
        timings["upload"] = time.monotonic() - t0
        t0 = time.monotonic()
        fingerprints = _fingerprint_at_cut(config, aof, cuts)
        timings["fingerprint"] = time.monotonic() - t0
        base = aof.base.name
        manifest = Manifest(
            id=backup_id,
            engine=ENGINE,
            target=config.name,
            kind=kind,
            mode=BackupMode.AOF,
            parent_id=parent.id if parent else None,
            started_at=started,
            finished_at=datetime.now(UTC),
            consistency=RedisAofConsistency(
                aof_dir=state.dirname,
                aof_filename=state.filename,
                base=base,
                base_format=aof.base_format,
                base_size=aof.sizes[base],
                base_head_sha256=aof.head_digest(base),
                incr_files=list(cuts),
                cuts=cuts,
                tail_sha256={name: aof.tail_digest(name, cut, TAIL_BYTES) for name, cut in cuts.items()},
                pieces=records,
                repl_id=replication.get("master_replid"),
                repl_offset=replication.get("master_repl_offset"),
                redis_version=state.version,
            ),
            objects=objects,
            fingerprints=fingerprints,
            server_version=state.version,
            tool_versions=tools,
            timings=timings,
            lineage=ctx.lineage,
        )
        commit_unless_planned(repo, manifest, plan)
    return manifest


def _plan(aof: LocalAof, parent: Manifest | None) -> tuple[dict[str, int], list[tuple[str, int, int]]]:
    """(cut per increment file, pieces to store as (file, offset, length))."""
    parent_cuts = RedisAofConsistency.of(parent).cuts if parent else {}
    pieces = [] if parent else [(aof.base.name, 0, aof.sizes[aof.base.name])]
    cuts = {}
    for entry in aof.manifest.incrs:
        start = int(parent_cuts.get(entry.name, 0))
        cuts[entry.name] = find_cut(
            aof.fds[entry.name], start, aof.sizes[entry.name], where=f"{aof.directory / entry.name}"
        )
        if cuts[entry.name] > start:
            pieces.append((entry.name, start, cuts[entry.name] - start))
    return cuts, pieces


def _check_continues(config: RedisSettings, parent: Manifest, aof: LocalAof) -> None:
    """ChainBrokenError unless the server's AOF still extends exactly what `parent` stored."""
    facts = RedisAofConsistency.of(parent)
    how = "; the chain cannot continue; taking a full"
    if facts.base != aof.base.name:
        raise ChainBrokenError(
            f"an AOF rewrite replaced base {facts.base} by {aof.base.name} on "
            f"{config.where} since backup {parent.id}{how}"
        )
    if facts.base_size != aof.sizes[aof.base.name] or facts.base_head_sha256 != aof.head_digest(aof.base.name):
        raise ChainBrokenError(
            f"base {aof.base.name} on {config.where} is not the file backup {parent.id} "
            f"stored (size or content differ: a different server or a reset AOF){how}"
        )
    current = [f.name for f in aof.manifest.incrs]
    for name, cut in facts.cuts.items():
        if name not in current:
            raise ChainBrokenError(
                f"increment {name} of backup {parent.id} is no longer in the AOF manifest of {config.where}{how}"
            )
        if aof.sizes[name] < cut or aof.tail_digest(name, cut, TAIL_BYTES) != facts.tail_sha256.get(name):
            raise ChainBrokenError(
                f"increment {name} on {config.where} no longer starts with the "
                f"{cut} bytes backup {parent.id} stored (truncated or rewritten){how}"
            )


def _fingerprint_at_cut(config: RedisSettings, aof: LocalAof, cuts: dict[str, int]) -> dict:
    """Load the files as they stood at the cuts into a scratch replica (it keeps keys whose TTL
    passes meanwhile, like the scratch a restore is compared in) and fingerprint it."""
    scratch = mkdtemp("vaultflow-aofprint-")  # removed even if this process is killed
    server = blackhole = None
    try:
        settings = assemble_scratch_dir(aof, cuts, scratch)
        server, blackhole = start_replica_scratch(scratch, config.bin_dir, settings=settings)
        with server.client() as conn:
            return fingerprint_server(conn, "counts")  # restores then compare key by key (redis_compare)
    finally:
        if server is not None:
            server.stop()
        if blackhole is not None:
            blackhole.close()
        remove(scratch)


# -- restore -----------------------------------------------------------------------------------


def _pieces_by_file(chain: list[Manifest], repo) -> dict[str, list[tuple[Manifest, AofPiece]]]:
    """Every stored piece per file, in chain order, checked to be present and contiguous."""
    newest = RedisAofConsistency.of(chain[-1])
    files = [newest.base, *newest.incr_files]
    ends = {newest.base: newest.base_size, **newest.cuts}
    result: dict[str, list[tuple[Manifest, AofPiece]]] = {name: [] for name in files}
    for link in chain:
        sizes = {o.key: o.stored_size for o in link.objects}
        for piece in RedisAofConsistency.of(link).pieces:
            if piece.file not in result:
                raise IntegrityError(
                    f"backup {link.id} holds a piece of {piece.file}, which backup "
                    f"{chain[-1].id} does not list; the repository is inconsistent"
                )
            info = repo.store.stat(repo.object_key(link, piece.object))
            if piece.object not in sizes or info is None or info.size != sizes[piece.object]:
                raise IntegrityError(
                    f"object {link.id}/{piece.object} is missing or has the wrong size in "
                    f"{repo.description}; cannot restore {chain[-1].id}: restore another "
                    "backup or repair the store from a mirror"
                )
            result[piece.file].append((link, piece))
    for name, pieces in result.items():
        position = 0
        for link, piece in pieces:
            if piece.offset != position:
                raise ChainBrokenError(
                    f"cannot restore {chain[-1].id}: backup {link.id} continues {name} at "
                    f"byte {piece.offset} but its chain holds {position} bytes"
                )
            position += piece.length
        if position != ends[name]:
            raise ChainBrokenError(
                f"cannot restore {chain[-1].id}: its chain holds {position} bytes of "
                f"{name}, the backup needs {ends[name]}"
            )
    return result


def _copy_verified(repo, link: Manifest, key: str, out) -> int:
    obj = next(o for o in link.objects if o.key == key)
    return write_verified(
        repo.store, repo.object_key(link, key), obj.sha256, obj.stored_size, out, name=f"{link.id}/{key}"
    )


def materialize_aof_chain(
    ctx: BackupContext, manifest: Manifest, dest: Path, *, catalog: Catalog | None = None
) -> dict[str, str]:
    """Write `dest/<appenddirname>/` for an AOF backup of any kind and return the redis.conf
    settings to start a server on `dest` with (appendonly, appenddirname, appendfilename).

    `dest` must be new or an empty directory. The chain is resolved and every object checked
    to exist first (ChainBrokenError / IntegrityError, nothing written); pieces are streamed
    through sha256 verification into a work directory next to `dest`, renamed into place at
    the end. On any failure nothing of it remains."""
    if not isinstance(manifest.consistency, RedisAofConsistency):
        raise RefusedError(f"backup {manifest.id} is a {manifest.mode} backup, not an AOF one")
    repo = ctx.repository
    catalog = catalog if catalog is not None else repo.catalog(manifest.engine, manifest.target)
    chain = catalog.chain(manifest)
    pieces = _pieces_by_file(chain, repo)
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise RefusedError(
            f"refusing to restore backup {manifest.id} into {dest}: it is not an empty "
            "directory; nothing was touched. Pick a new or empty directory"
        )
    facts = RedisAofConsistency.of(manifest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = mkdtemp(f".vfaof-{manifest.id}-", dest.parent)  # ours until renamed into place: removed if killed
    try:
        aof_dir = work / facts.aof_dir
        aof_dir.mkdir(mode=0o700)
        t0 = time.monotonic()
        for name, file_pieces in pieces.items():
            with open(os.open(aof_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
                for link, piece in file_pieces:
                    if _copy_verified(repo, link, piece.object, out) != piece.length:
                        raise IntegrityError(
                            f"object {link.id}/{piece.object} holds a different number of "
                            f"bytes than the {piece.length} its manifest records"
                        )
        with open(
            os.open(aof_dir / f"{facts.aof_filename}.manifest", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb"
        ) as out:
            _copy_verified(repo, manifest, MANIFEST_OBJECT, out)
        os.chmod(work, 0o700)
        os.replace(work, dest)  # onto a new or empty directory: dest appears whole
        forget(work)  # gone from its path; `dest` is the caller's
        ctx.log(
            f"materialized {manifest.id} from a chain of {len(chain)} backups into {dest} "
            f"in {human_duration(time.monotonic() - t0)}"
        )
    except BaseException:
        remove(work)
        raise
    return {"appendonly": "yes", "appenddirname": facts.aof_dir, "appendfilename": facts.aof_filename}


__all__ = ["aof_full_backup", "aof_incremental_backup", "materialize_aof_chain"]
