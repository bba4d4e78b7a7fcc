"""Bringing a physical backup back to life: start a restored data directory, drill it, and
point-in-time recovery (restore_command = `vaultflow wal-fetch`, recovery_target_*).

The restored cluster never archives (archive_mode is forced off): a copy must not write into
the production WAL archive.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from vaultflow.compare import Comparison, compare_database
from vaultflow.engines.base import BackupContext, RestoreResult
from vaultflow.engines.postgres.chain import restore_chain
from vaultflow.engines.postgres.cluster import RunningCluster, set_auto_conf, start_cluster, stop_cluster
from vaultflow.engines.postgres.consistency import PostgresPhysicalConsistency
from vaultflow.engines.postgres.fingerprint import fingerprint_tables
from vaultflow.engines.postgres.physical import RESTORED_SETTINGS, UNLOGGED_SQL, with_unlogged
from vaultflow.engines.postgres.physical_restore import restore_physical
from vaultflow.engines.postgres.verify import verify_restored
from vaultflow.engines.postgres.wal import (
    DEFAULT_SEGMENT_SIZE,
    TimelinePlan,
    archive_file,
    archived_names,
    describe_gaps,
    history_name,
    object_key,
    parse_lsn,
    parse_segment,
    plan_timeline,
    record_key,
    segment_name,
    wal_gaps,
)
from vaultflow.engines.postgres.wal.timelines import archive_end
from vaultflow.errors import ConfigError, NotFoundError, RefusedError, ToolError, VaultflowError, clause
from vaultflow.fsutil import empty_directory
from vaultflow.manifest import Manifest
from vaultflow.ports import free_port
from vaultflow.proc import mkdtemp, remove, short_temp_root
from vaultflow.stores.base import Store
from vaultflow.stores.spec import spec_memfd
from vaultflow.summary import when
from vaultflow.tools import log_tail, wait_until


def start_restored_cluster(
    dest: Path,
    bin_dir: Path,
    *,
    port: int | None = None,
    settings: Mapping[str, str] | None = None,
    run_as: str | None = None,
    host: str = "127.0.0.1",
    socket_dir: Path | None = None,
    log_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300.0,
    pass_fds: tuple[int, ...] = (),
) -> RunningCluster:
    """Start a restored data directory on host:port (default: a free port) with a private
    socket dir; as `run_as` (default: the directory's owner) when root. Stop it with
    `stop_cluster(cluster)`. archive_mode stays off whatever `settings` say. `pass_fds`: descriptors
    the server (and so its restore_command) inherits: the repository spec of fetch_spec_file."""
    owns_socket_dir = socket_dir is None
    if socket_dir is None:  # short (unix socket paths are limited to ~107 bytes) and private;
        socket_dir = mkdtemp("vfpg-", short_temp_root())  # removed even if this process is killed
    merged = {**(settings or {}), **RESTORED_SETTINGS}
    try:
        for attempt in range(5):
            chosen = port if port else free_port(host)
            try:
                cluster = start_cluster(
                    dest,
                    bin_dir,
                    chosen,
                    socket_dir,
                    run_as,
                    host=host,
                    settings=merged,
                    log_file=log_file,
                    env=env,
                    timeout=timeout,
                    pass_fds=pass_fds,
                )
            except ToolError as exc:  # lost the race for a free port: try another one
                if port or attempt == 4 or "already in use" not in str(exc):
                    raise
                continue
            cluster.owns_socket_dir = owns_socket_dir
            return cluster
    except BaseException:
        if owns_socket_dir:
            remove(socket_dir)
        raise
    raise AssertionError("unreachable")


def drill_physical(
    ctx: BackupContext,
    manifest: Manifest,
    *,
    bin_dir: Path,
    user: str,
    run_as: str | None = None,
    work_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> RestoreResult:
    """Restore drill: extract into a scratch data directory, start it reachable only through a
    private unix socket (no TCP; trust on that socket), compare every database's fingerprints
    with the manifest's, stop it and delete it. `seconds` = extract + start (recovery): the
    time a real recovery takes. `user`: a superuser of the backed-up cluster (the target's)."""
    work = mkdtemp("vfdrill-", work_dir)  # removed even if this process is killed
    os.chmod(work, 0o711)  # the service user (when root) must reach data/ inside
    cluster: RunningCluster | None = None
    try:
        t0 = time.monotonic()
        data_dir = work / "data"
        restore_physical(ctx, manifest, data_dir)
        verified = verify_restored(data_dir, bin_dir, manifest.id)
        (data_dir / "pg_hba.conf").write_text("# vaultflow restore drill: private socket only\nlocal all all trust\n")
        cluster = start_restored_cluster(
            data_dir, bin_dir, run_as=run_as, host="", log_file=work / "server.log", env=env
        )
        seconds = time.monotonic() - t0
        tables = [verified] if verified else []
        for database, expected in manifest.fingerprints.items():
            with psycopg.connect(
                host=str(cluster.socket_dir),
                port=cluster.port,
                user=user,
                dbname=database,
                application_name="vaultflow-drill",
                autocommit=True,
            ) as conn:
                actual = fingerprint_tables(conn, {t: f.method for t, f in expected.items()})
            tables += compare_database(database, expected, actual)
        tables, _ = with_unlogged(tables, _unlogged_rows(cluster, user))  # the drill's flow names them
        return RestoreResult(
            backup_id=manifest.id,
            seconds=seconds,
            comparison=Comparison(tables, noun="tables"),
            restored={db: f"scratch cluster (port {cluster.port}, removed)" for db in manifest.fingerprints},
        )
    finally:
        if cluster is not None:
            stop_cluster(cluster)
        remove(work)


@dataclass(frozen=True)
class RecoveryTarget:
    """Where recovery stops. Exactly one of time / lsn / name, or none: the backup's own
    consistent point ('immediate'), where its fingerprints can be compared. `timeline` (a
    number, "latest": the newest one descending from the backup, "current": the backup's own)
    is the timeline recovery follows; given alone, recovery replays the archive along it to
    its end."""

    time: datetime | None = None
    lsn: str | None = None
    name: str | None = None
    timeline: int | str | None = None  # recovery_target_timeline; default: see wal.timelines.plan_timeline

    def __post_init__(self) -> None:
        t = self.timeline
        if (
            t is not None
            and t not in ("latest", "current")
            and (isinstance(t, bool) or not isinstance(t, int) or t < 1)
        ):
            raise ConfigError(f"to_timeline must be a timeline number (1 or more), 'latest' or 'current', not {t!r}")

    def requested_timeline(self, backup_timeline: int) -> int | None:
        """The timeline plan_timeline must follow (None: its default, the newest that descends
        from the backup and has archived segments)."""
        if self.timeline == "current":
            return backup_timeline
        return None if self.timeline in (None, "latest") else int(self.timeline)

    def settings(self) -> dict[str, str]:
        given = [k for k in ("time", "lsn", "name") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ConfigError(f"give one recovery target, not {' and '.join('to_' + g for g in given)}")
        if self.time is not None:
            if self.time.tzinfo is None:
                raise ConfigError("to_time needs a timezone (e.g. 2026-11-26T02:15:00+00:00)")
            return {"recovery_target_time": self.time.isoformat(), "recovery_target_inclusive": "on"}
        if self.lsn is not None:
            return {"recovery_target_lsn": self.lsn}
        if self.name is not None:
            return {"recovery_target_name": self.name}
        if self.timeline is not None:
            return {}  # no target: replay the archived WAL of that timeline to its end
        return {"recovery_target": "immediate"}

    @property
    def immediate(self) -> bool:
        return self.time is None and self.lsn is None and self.name is None and self.timeline is None


def base_for_point(
    load_catalog: Callable[[], Any], manifest: Manifest, target: RecoveryTarget
) -> tuple[Manifest, str | None]:
    """The physical backup a point-in-time recovery to `target` starts from, and a note when it
    is not `manifest`: `manifest` itself when its consistent point is at or before the point,
    else the newest physical backup of the target's Catalog (`load_catalog()`, read only then:
    it reads every manifest of the target; incrementals count, less WAL to replay) whose point is. A backup's point is its stop LSN (to_lsn), or the time it
    finished (to_time: at or after its stop, so a backup that ended after the point is never
    taken: its files already hold changes made after it, and recovery could not go back).

    A to_name or timeline-only target has no point to compare: `manifest`, unchanged.
    Raises ConfigError naming the point and the oldest backup's when no backup is at or before it."""
    if target.time is None and target.lsn is None:
        return manifest, None
    if target.time is not None:
        when = target.time if target.time.tzinfo else target.time.replace(tzinfo=UTC)
        wanted = f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"

        def point(m: Manifest) -> Any:
            return m.finished_at

        def fits(m: Manifest) -> bool:
            return m.finished_at <= when

        def shown(m: Manifest) -> str:
            return f"finished {m.finished_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    else:
        assert target.lsn is not None
        try:
            limit, wanted = parse_lsn(target.lsn), f"LSN {target.lsn}"
        except ValueError:
            raise ConfigError(f"to_lsn {target.lsn!r} is not an LSN (two hexadecimal numbers: 0/3000158)") from None

        def stop_lsn(m: Manifest) -> str:
            assert isinstance(m.consistency, PostgresPhysicalConsistency), m.id
            return m.consistency.stop_lsn

        def point(m: Manifest) -> Any:
            return parse_lsn(stop_lsn(m))

        def fits(m: Manifest) -> bool:
            return parse_lsn(stop_lsn(m)) <= limit

        def shown(m: Manifest) -> str:
            return f"consistent at LSN {stop_lsn(m)}"

    if fits(manifest):
        return manifest, None
    physical = [m for m in load_catalog().manifests if isinstance(m.consistency, PostgresPhysicalConsistency)]
    candidates = [m for m in physical if fits(m)]
    if not candidates:
        oldest = min(physical, key=point, default=manifest)
        raise ConfigError(
            f"no physical backup of {manifest.target} is consistent at or before {wanted}: the oldest, "
            f"{oldest.id}, {shown(oldest)}; a restore cannot go back before its backup (its files already "
            "hold later changes): choose a later point"
        )
    start = max(candidates, key=point)
    return start, (
        f"started from backup {start.id} ({shown(start)}), the newest at or before {wanted}: "
        f"backup {manifest.id} {shown(manifest)}, after the point"
    )


def default_fetch_command(
    repo_path: Path | None, target: str, *, repo_config: Path | None = None, wal_cli: str | None = None
) -> str:
    """restore_command (without %f %p), run by the server's OS user: a local repository
    (`repo_path`) or a repository spec file (`repo_config`, see spec_file: S3, mirror).
    `wal_cli`: how to run `python -m vaultflow.engines.postgres.wal.cli` (default: this interpreter)."""
    if (repo_path is None) == (repo_config is None):
        raise ValueError("give repo_path or repo_config")
    where = (
        f"--repo-path {shlex.quote(str(repo_path))}"
        if repo_path is not None
        else f"--repo-config {shlex.quote(str(repo_config))}"
    )
    wal_cli = wal_cli or f"{shlex.quote(sys.executable)} -m vaultflow.engines.postgres.wal.cli"
    # --target=<name> in one word: a name starting with '-' stays a value, not an option
    return f"{wal_cli} fetch {where} {shlex.quote('--target=' + target)}"


@contextmanager
def fetch_spec_file(store: Store, dest: Path, run_as: str | None) -> Iterator[int]:
    """The repository spec that the restore_command of a recovery into `dest` reads: an anonymous
    0600 memfd (stores.spec.spec_memfd) owned by the cluster's OS user (`run_as`, when we are
    root). Yields its descriptor: the restored server inherits it (start_restored_cluster
    pass_fds) and restore_command reads `/dev/fd/<fd>`. Emptied and closed on exit; it is never
    a file, so a killed restore leaves no secret on disk (and none in `dest`, which gets copied)."""
    uid = gid = None
    if run_as is not None and os.geteuid() == 0:
        try:
            user = pwd.getpwnam(run_as)
        except KeyError:
            raise ConfigError(f"OS user {run_as!r} (restore_os_user) does not exist on this worker") from None
        uid, gid = user.pw_uid, user.pw_gid
    with spec_memfd(store, uid=uid, gid=gid) as fd:
        yield fd


def _wait_promoted(cluster: RunningCluster, user: str, timeout: float) -> None:
    """Until recovery has ended and the server accepts writes; a server that exits (target not
    reached, WAL missing) raises with its log tail."""

    def promoted() -> bool:
        if cluster.proc.poll() is not None:
            raise ToolError(f"the restored server stopped during recovery: {_log_tail(cluster.log_file)}")
        with psycopg.connect(
            host=str(cluster.socket_dir),
            port=cluster.port,
            user=user,
            dbname="postgres",
            autocommit=True,
            connect_timeout=5,
        ) as conn:
            return not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]

    wait_until(
        promoted,
        timeout=timeout,
        interval=0.2,
        what="recovery to finish",
        retry_on=(psycopg.OperationalError,),  # still starting up / replaying
        on_timeout=lambda message: ToolError(f"{message}: {_log_tail(cluster.log_file)}"),
    )


def _fetch_failure(log_file: Path, exc: ToolError) -> ToolError:
    """A server that stopped because `vaultflow wal-fetch` failed (S3 refused the credentials,
    a corrupt segment, ...): lead with wal-fetch's own message, which names the object and store."""
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return exc
    line = next((ln for ln in reversed(text.splitlines()) if "vaultflow wal-fetch: error" in ln), None)
    if line is None:
        return exc
    message = line[line.index("vaultflow wal-fetch: error") :].strip()
    return ToolError(f"restore_command failed, recovery aborted: {clause(message)}. Server said: {exc}")


def _log_tail(path: Path, lines: int = 15) -> str:
    return log_tail(path, lines, missing="(no server log)")


def recover(
    ctx: BackupContext,
    manifest: Manifest,
    dest: Path,
    *,
    bin_dir: Path,
    user: str,
    target: RecoveryTarget = RecoveryTarget(),
    fetch_command: str | None = None,
    fetch_store: Store | None = None,
    wal_cli: str | None = None,
    run_as: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 3600.0,
    keep_running: bool = False,
) -> tuple[RestoreResult, RunningCluster | None]:
    """Restore `manifest` into `dest`, replay archived WAL up to `target`, promote, and (for
    the backup's own point) compare fingerprints. The server is stopped afterwards unless
    `keep_running`; `dest` stays: start it with `pg_ctl -D dest start`.

    `fetch_command` is the restore_command without ' %f %p' (see default_fetch_command); it
    (or `fetch_store`) is required for any target past the backup's end. `fetch_store`: the
    repository store to fetch WAL from (S3, mirror) through an in-memory spec the server inherits,
    which holds the secret only while recovery runs (fetch_spec_file; emptied on promotion and on
    failure, never a file on disk); `wal_cli` runs
    `python -m vaultflow.engines.postgres.wal.cli` for it.

    Archive recovery follows the timeline `plan_timeline` picks from the repository's archive
    (or `target.timeline`), set as `recovery_target_timeline`; segments of a newer timeline
    whose history file is missing refuse the restore (NotFoundError naming the file) before
    anything is written. Promotion starts a new timeline: its history file is archived into
    the repository at once (PostgreSQL would have archived it, had archive_mode been on), so
    a later recovery can follow the copy's timeline and never reuses its number. The result's
    `restored` names the cluster, `recovery_target_timeline`, the copy's `timeline`, and the
    unlogged tables that came back empty; the comparison lists those as "expected empty
    (unlogged)". A failure (ToolError; NotFoundError naming the first missing WAL segment when
    the archive has a hole or ends before the target) leaves `dest` as it was (absent or
    empty) and no server log behind.
    """
    if not target.immediate and not fetch_command and fetch_store is None:
        raise ConfigError(
            "point-in-time recovery needs the WAL archive: give fetch_command (restore_command) or fetch_store"
        )
    if dest.exists() and any(dest.iterdir()):
        raise RefusedError(f"{dest} is not empty; restore into a new directory")
    archive_recovery = bool(fetch_command) or (fetch_store is not None and not target.immediate)
    plan = (
        plan_recovery_timeline(
            ctx.repository, manifest, target.requested_timeline(PostgresPhysicalConsistency.of(manifest).timeline)
        )
        if archive_recovery
        else None
    )
    t0 = time.monotonic()
    created = not dest.exists()
    log_file = dest.parent / f"{dest.name}.log"
    cluster: RunningCluster | None = None
    try:
        restore_chain(
            ctx, manifest, dest, bin_dir=bin_dir, catalog=ctx.repository.catalog(manifest.engine, manifest.target)
        )
        verified = verify_restored(dest, bin_dir, manifest.id)
        with ExitStack() as recovery_only:  # the spec file (it may hold a secret) lives until promotion
            spec_fds: tuple[int, ...] = ()
            if fetch_store is not None and not fetch_command and not target.immediate:
                spec_fd = recovery_only.enter_context(fetch_spec_file(fetch_store, dest, run_as))
                spec_fds = (spec_fd,)  # inherited by the server, read by restore_command as /dev/fd/N
                fetch_command = default_fetch_command(
                    None, manifest.target, repo_config=Path(f"/dev/fd/{spec_fd}"), wal_cli=wal_cli
                )
            if plan is not None:  # archive recovery: replay archived WAL up to the target, then promote
                set_auto_conf(
                    dest,
                    {
                        **target.settings(),
                        "recovery_target_action": "promote",
                        "recovery_target_timeline": str(plan.timeline),
                        "restore_command": f"{fetch_command} %f %p",
                        **RESTORED_SETTINGS,
                    },
                )
                (dest / "recovery.signal").touch()
            # else: no archive; the backup_label's crash recovery replays the WAL inside the backup
            # (-X fetch) to its consistent end point, exactly the backup's own state.
            (dest / "pg_hba.conf").write_text(
                "# vaultflow restore: private socket only until you change it\nlocal all all trust\n"
            )
            try:
                cluster = start_restored_cluster(
                    dest,
                    bin_dir,
                    run_as=run_as,
                    host="",
                    log_file=log_file,
                    env=env,
                    timeout=timeout,
                    pass_fds=spec_fds,
                )
                _wait_promoted(cluster, user, timeout)
            except ToolError as exc:
                raise _fetch_failure(log_file, exc) from exc
        seconds = time.monotonic() - t0
        timeline, reached = _where_recovery_ended(ctx, manifest, cluster, user, dest, plan, target.immediate)
        tables = [verified] if verified else []
        if target.immediate:
            for database, expected in manifest.fingerprints.items():
                with _connect(cluster, user, database) as conn:
                    tables += compare_database(
                        database, expected, fingerprint_tables(conn, {t: f.method for t, f in expected.items()})
                    )
        tables, empty = with_unlogged(tables, _unlogged_rows(cluster, user))
        notes = unlogged_notes(empty)
        for note in notes:
            ctx.log(note)
        result = RestoreResult(
            backup_id=manifest.id,
            seconds=seconds,
            comparison=Comparison(tables, noun="tables"),
            restored={"cluster": str(dest)},
            notes=notes,
            reached=reached,
            timeline=timeline,
        )
    except BaseException as exc:
        if cluster is not None:
            stop_cluster(cluster)
        _remove_failed_restore(dest, created, log_file)
        if plan is not None and isinstance(exc, ToolError):
            raise explain_recovery_failure(ctx.repository, manifest, plan, exc) from exc
        raise
    if not keep_running:
        stop_cluster(cluster)
        cluster = None
    return result, cluster


def _connect(cluster: RunningCluster, user: str, database: str) -> psycopg.Connection:
    return psycopg.connect(
        host=str(cluster.socket_dir),
        port=cluster.port,
        user=user,
        dbname=database,
        autocommit=True,
        application_name="vaultflow-restore",
    )


def _unlogged_rows(cluster: RunningCluster, user: str) -> dict[tuple[str, str], int]:
    """(database, 'schema.table') -> rows, for every unlogged table of a running restored copy."""
    with _connect(cluster, user, "postgres") as conn:
        databases = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1"
            ).fetchall()
        ]
    found: dict[tuple[str, str], int] = {}
    for database in databases:
        with _connect(cluster, user, database) as conn:
            for schema, table in conn.execute(UNLOGGED_SQL).fetchall():
                query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
                found[(database, f"{schema}.{table}")] = conn.execute(query).fetchone()[0]
    return found


def _remove_failed_restore(dest: Path, created: bool, log_file: Path) -> None:
    """A failed restore leaves `dest` as it found it (absent, or empty) and no server log."""
    if created:
        shutil.rmtree(dest, ignore_errors=True)
    elif dest.is_dir():
        empty_directory(dest)
    log_file.unlink(missing_ok=True)


def unlogged_notes(empty: list[str]) -> list[str]:
    """The note a restore's result carries when unlogged tables came back empty (none: [])."""
    if not empty:
        return []
    return [
        "unlogged tables come back empty after a physical restore (PostgreSQL does not WAL-log their rows): "
        + ", ".join(empty)
    ]


def _where_recovery_ended(
    ctx: BackupContext,
    manifest: Manifest,
    cluster: RunningCluster,
    user: str,
    dest: Path,
    plan: TimelinePlan | None,
    immediate: bool,
) -> tuple[str, str]:
    """(timeline, recovery point) of a promoted copy, for people: the timeline it ended on and
    how it got there ('2 (replayed along timeline 1; promotion started timeline 2, its history
    file 00000002.history archived)'), and where its WAL replay stopped ('LSN 0/3000148, last
    transaction replayed 2026-11-30 05:59:58 UTC'; the backup's own point when `immediate`).
    When promotion started a new timeline, its history file goes into the archive of the
    backup's target now (the copy itself never archives)."""
    with _connect(cluster, user, "postgres") as conn:
        walfile, lsn, last_xact = conn.execute(
            "SELECT pg_walfile_name(pg_current_wal_lsn()), pg_last_wal_replay_lsn(), pg_last_xact_replay_timestamp()"
        ).fetchone()
    timeline = int(walfile[:8], 16)
    consistency = PostgresPhysicalConsistency.of(manifest)
    if immediate:
        reached = f"the backup's consistent point, LSN {lsn or consistency.stop_lsn}"
    else:
        reached = f"LSN {lsn}" + (f", last transaction replayed {when(last_xact)}" if last_xact else "")
    if plan is None:
        return f"{timeline} (the backup's own; no archived WAL replayed)", reached
    if timeline == plan.timeline:
        return f"{timeline} (replayed along it)", reached
    history = _archive_history(ctx, manifest, dest, plan, timeline)
    return (
        f"{timeline} (replayed along timeline {plan.timeline}; promotion started timeline {timeline}, "
        f"its history file {history})"
    ), reached


def _archive_history(ctx: BackupContext, manifest: Manifest, dest: Path, plan: TimelinePlan, timeline: int) -> str:
    """Archive the history file of the new `timeline` promotion started into the archive of the
    backup's target; returns what became of it ('00000002.history archived' / 'already archived')."""
    name = history_name(timeline)
    path = dest / "pg_wal" / name
    try:
        stored = archive_file(path, ctx.repository, manifest.target)
    except (OSError, VaultflowError) as exc:
        raise ToolError(
            f"the restored cluster in {dest} promoted to timeline {timeline}, but its history "
            f"file {name} could not be archived into {ctx.repository.description} ({exc}): "
            "without it no later recovery can follow that timeline. Check that the "
            "repository is writable from this worker, then restore again"
        ) from exc
    if stored:
        _owned_like_archive(ctx.repository.store, manifest.target, name)
    ctx.log(
        f"restored cluster promoted to timeline {timeline} (recovered along timeline {plan.timeline}); "
        f"{name} {'archived' if stored else 'was already archived'} for target {manifest.target}"
    )
    return f"{name} {'archived' if stored else 'already archived'}"


def _owned_like_archive(store: Store, target: str, name: str) -> None:
    """A local archive written by root is read by restore_command as the cluster's OS user: give
    the files just written the owner of the directory they are in (as the archive's other files)."""
    root = getattr(store, "root", None)
    if root is None or os.geteuid() != 0:
        return
    for key in (object_key(target, name), record_key(target, name)):
        path = Path(root) / key
        owner = path.parent.stat()
        os.chown(path, owner.st_uid, owner.st_gid)


def plan_recovery_timeline(repo, manifest: Manifest, requested: int | None = None) -> TimelinePlan:
    """plan_timeline for `manifest` (a physical backup) over the archive of its target."""
    consistency = PostgresPhysicalConsistency.of(manifest)
    return plan_timeline(repo, manifest.target, consistency.timeline, consistency.stop_lsn, requested=requested)


def explain_recovery_failure(repo, manifest: Manifest, plan: TimelinePlan, exc: ToolError) -> VaultflowError:
    """Recovery that stops short is almost always a hole in the WAL archive, or its end: name
    the first missing segment (and its timeline). Other failures come back unchanged."""
    start = PostgresPhysicalConsistency.of(manifest).start_wal_file
    if not start or "before configured recovery target was reached" not in str(exc):
        return exc  # not the archive running out: e.g. wal-fetch's own error (S3 credentials, corrupt file)
    names = archived_names(repo, manifest.target)
    if not names:
        return exc
    stop = _stop_wal_file(manifest)
    gaps = wal_gaps(plan, names, start, stop)
    target = manifest.target
    if gaps:
        return NotFoundError(
            f"WAL segment {gaps[0]} is missing from the archive of {target} (timeline {int(gaps[0][:8], 16)}): "
            f"recovery of backup {manifest.id} along timeline {plan.timeline} cannot replay past it (missing: "
            f"{describe_gaps(gaps[:50])}). Restore to a point before it, or put the segment back into the "
            f"archive (did archiving stop? check archive_command and the spool). Server said: {_server_said(exc)}"
        )
    last = archive_end(plan, names)
    if last is not None:
        following = plan.name(parse_segment(last)[1] + 1)
        return NotFoundError(
            f"WAL segment {following} (timeline {int(following[:8], 16)}) is not in the archive of {target}: "
            f"recovery of backup {manifest.id} replayed the archive along timeline {plan.timeline} through "
            f"{last}, its newest segment, without reaching the recovery target. Ship the spool "
            f"(archive-logs) and retry, or choose an earlier target. Server said: {_server_said(exc)}"
        )
    return exc


def _server_said(exc: Exception) -> str:
    """The FATAL/PANIC lines of a server log tail in `exc` (else its last line)."""
    lines = str(exc).splitlines()
    fatal = [ln.strip() for ln in lines if "FATAL:" in ln or "PANIC:" in ln]
    return " | ".join(fatal[-2:]) if fatal else (lines[-1].strip() if lines else "")


def _stop_wal_file(manifest: Manifest) -> str | None:
    """The segment holding the end of the backup's WAL (its stop LSN), on the backup's timeline."""
    consistency = PostgresPhysicalConsistency.of(manifest)
    if consistency.stop_wal_file:
        return consistency.stop_wal_file
    return segment_name(consistency.timeline, max(parse_lsn(consistency.stop_lsn) - 1, 0) // DEFAULT_SEGMENT_SIZE)


__all__ = [
    "RecoveryTarget",
    "default_fetch_command",
    "drill_physical",
    "fetch_spec_file",
    "recover",
    "start_restored_cluster",
    "stop_cluster",
]
