"""Logical restores and drills of PostgreSQL: pg_restore into a scratch database, prove, move.

Order of one database's restore (each step explained where it happens):
1. CREATE DATABASE <scratch> with the recorded encoding and locale (pg_db_properties);
2. pg_restore of everything except event triggers (they would fire on the restore's own DDL,
   e.g. REFRESH MATERIALIZED VIEW, and on vaultflow's later steps; login triggers on its
   connections);
3. subscriptions: pg_restore creates them disabled (connect = false); in a copy under another
   name vaultflow also detaches them from their replication slot, so enabling one can never
   consume the original subscriber's slot on the publisher;
4. ALTER DATABASE / ALTER ROLE ... IN DATABASE settings (after the data: a setting such as
   default_transaction_read_only = on would break the restore), then row fingerprints, taken
   under the same settings the backup's own session had;
5. the event triggers, then owner, ACL, comment, connection limit; the properties are read
   back and compared ("(database properties)" row);
6. only then is an existing database replaced (its subscriptions detached first) and the
   scratch copy renamed into place. Any failure drops the scratch copy, subscriptions included.

Every scratch database (restore and drill) is recorded in the repository before it is created
and the record deleted once it is renamed into place or dropped (Repository.put_scratch). A run
killed in between leaves the database and its record: each later restore or drill of the target
starts with sweep_scratch_databases, which drops what dead runs recorded on this server.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from pathlib import Path

import psycopg
from psycopg import sql

from vaultflow.compare import Comparison, compare_database
from vaultflow.engines.base import BackupContext, RestoreResult
from vaultflow.engines.postgres.client import SESSION_SETTINGS, client_env, connect, restore_command
from vaultflow.engines.postgres.consistency import PostgresLogicalConsistency
from vaultflow.engines.postgres.db_properties import (
    apply_identity,
    apply_settings,
    compare_properties,
    create_database,
    read_properties,
)
from vaultflow.errors import (
    ConfigError,
    IntegrityError,
    NotFoundError,
    RefusedError,
    ToolError,
    VaultflowError,
    note_cleanup_failure,
)
from vaultflow.manifest import Manifest, StoredObject
from vaultflow.pipeline import feed_process, open_verified
from vaultflow.proc import temporary_directory

MAX_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1, in bytes of the (UTF-8) name
# pg_restore --list lines of event triggers and of their comments / security labels.
EVENT_TRIGGER_ENTRY = re.compile(r"^\d+; \d+ \d+ (EVENT TRIGGER |[A-Z ]+ - EVENT TRIGGER )")
# Sessions vaultflow opens on restored databases (and pg_restore's, through PGOPTIONS): the
# settings every vaultflow session starts with, and no lock wait limit — a restore into its own
# scratch database waits for nobody but itself.
SAFE_SESSION = f"{SESSION_SETTINGS} -c lock_timeout=0"
NOT_OWNER = ("must be able to SET ROLE", "must be member of role", "must be owner of", "permission denied")
# The names scratch_name() and drill_name() give (their suffix survives fit_name): a scratch
# record naming anything else is never acted on.
SCRATCH_NAME = re.compile(r"(?s)(?:.*_vf_[0-9a-f]{8}|vaultflow_drill_.*_[0-9]{14}_[0-9a-f]{6})")


# -- names ------------------------------------------------------------------------------------


def fit_name(stem: str, suffix: str = "") -> str:
    """`stem + suffix` when it fits PostgreSQL's 63 bytes; else `stem` cut at a character
    boundary plus '_' and 8 hex digits of the whole stem's sha256, then `suffix` (kept whole).
    Two long stems that share their first bytes still get different names."""
    if len((stem + suffix).encode()) <= MAX_NAME_BYTES:
        return stem + suffix
    tag = "_" + hashlib.sha256(stem.encode()).hexdigest()[:8]
    room = MAX_NAME_BYTES - len((tag + suffix).encode())
    if room < 1:
        raise ValueError(f"suffix {suffix!r} leaves no room in a {MAX_NAME_BYTES}-byte name")
    return stem.encode()[:room].decode("utf-8", "ignore") + tag + suffix


def default_restore_name(database: str, backup_id: str) -> str:
    """A new database name that says where it came from: <db>_restore_20261126t020000 (at most
    63 bytes, see fit_name)."""
    return fit_name(database, f"_restore_{backup_id[:15].lower()}")


def scratch_name(target: str) -> str:
    """The hidden name a restore works under before it moves into `target`: <target>_vf_<random>."""
    return fit_name(target, f"_vf_{secrets.token_hex(4)}")


def drill_name(database: str) -> str:
    """vaultflow_drill_<db>_<UTC time>_<random>: recognisable, unique per run, at most 63 bytes."""
    return fit_name(
        f"vaultflow_drill_{database}", f"_{time.strftime('%Y%m%d%H%M%S', time.gmtime())}_{secrets.token_hex(3)}"
    )


# -- sessions and objects that act -----------------------------------------------------------


def connect_quietly(config, dbname: str) -> psycopg.Connection:
    """A superuser-safe admin session on `dbname`: safe settings (SAFE_SESSION) and, on
    PostgreSQL 17+, event triggers off (a login trigger must not run or refuse us).
    Raises what pg_client.connect raises."""
    with connect(config) as probe:
        superuser = probe.execute("SELECT current_setting('is_superuser') = 'on'").fetchone()[0]
        major = probe.info.server_version // 10000
    return connect(
        config, dbname, options=SAFE_SESSION + (" -c event_triggers=off" if superuser and major >= 17 else "")
    )


def _subscriptions(conn: psycopg.Connection) -> list[tuple[str, bool, str | None]]:
    return conn.execute(
        "SELECT subname, subenabled, subslotname FROM pg_subscription WHERE subdbid = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1"
    ).fetchall()


def _detach(conn: psycopg.Connection, name: str, enabled: bool, slot: str | None) -> None:
    """Disable subscription `name` and set slot_name = NONE: no worker, and no slot it could use
    (or drop on the publisher with DROP SUBSCRIPTION)."""
    ident = sql.Identifier(name)
    if enabled:
        conn.execute(sql.SQL("ALTER SUBSCRIPTION {} DISABLE").format(ident))
    if slot is not None:
        conn.execute(sql.SQL("ALTER SUBSCRIPTION {} SET (slot_name = NONE)").format(ident))


def quiet_subscriptions(config, dbname: str, *, detach: bool, shown_as: str | None = None) -> list[str]:
    """Notes on the (disabled) subscriptions pg_restore made in `dbname`; with `detach` each is
    also detached from its replication slot, which stays on the publisher (a copy must never
    take the original subscriber's slot). Returns one note per subscription: what to run to use it,
    naming the database as `shown_as` (the name it will have once renamed into place)."""
    notes = []
    shown = shown_as or dbname
    with connect_quietly(config, dbname) as conn:
        for name, enabled, slot in _subscriptions(conn):
            if detach:
                _detach(conn, name, enabled, slot)
                notes.append(
                    f"subscription {name!r} in {shown!r}: restored disabled and without a replication slot "
                    f"(the original uses slot {slot!r}); to use it, give it a slot of its own (ALTER "
                    "SUBSCRIPTION ... SET (slot_name = ...)), ENABLE it and REFRESH PUBLICATION"
                )
            else:
                notes.append(
                    f"subscription {name!r} in {shown!r}: restored disabled, with its slot {slot!r}; to "
                    f"resume: ALTER SUBSCRIPTION {name} ENABLE, then ALTER SUBSCRIPTION {name} REFRESH "
                    "PUBLICATION WITH (copy_data = false) (a restored subscription has no table list)"
                )
    return notes


def drop_database(config, name: str, *, force: bool = True) -> None:
    """DROP DATABASE `name` WITH (FORCE), after what would stop it: its event triggers are
    disabled (they must not fire on the cleanup) and its subscriptions detached from their slots
    (disabled, slot_name = NONE) and dropped, so no slot on a publisher is touched. No error when
    `name` does not exist; psycopg errors otherwise (e.g. an active replication slot in it).
    `force=False`: no FORCE, so a database someone is connected to is not dropped
    (psycopg.errors.ObjectInUse)."""
    with connect(config) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            return
        superuser = conn.execute("SELECT current_setting('is_superuser') = 'on'").fetchone()[0]
    if superuser:
        with connect_quietly(config, name) as db:
            for (trigger,) in db.execute("SELECT evtname FROM pg_event_trigger WHERE evtenabled <> 'D'").fetchall():
                db.execute(sql.SQL("ALTER EVENT TRIGGER {} DISABLE").format(sql.Identifier(trigger)))
            for sub, enabled, slot in _subscriptions(db):
                _detach(db, sub, enabled, slot)
                db.execute(sql.SQL("DROP SUBSCRIPTION {}").format(sql.Identifier(sub)))
    with connect(config) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {}" + (" WITH (FORCE)" if force else "")).format(sql.Identifier(name))
        )


# -- scratch databases of killed runs ---------------------------------------------------------


def server_of(config) -> str:
    """The server a scratch record names: host:port of the target."""
    return f"{config.host}:{config.port}"


def record_scratch(engine, ctx: BackupContext, name: str) -> str:
    """Record in the repository that this run is about to create database `name` (before
    CREATE DATABASE). Returns the record's key for forget_scratch."""
    return ctx.repository.put_scratch(engine.name, engine.config.name, name, server_of(engine.config))


def forget_scratch(ctx: BackupContext, key: str) -> None:
    """Delete a scratch record once its database was renamed into place or dropped. A failure is
    logged, not raised: a record whose database is gone is only deleted by a later sweep."""
    try:
        ctx.repository.delete_scratch(key)
    except Exception as exc:
        ctx.log(f"could not delete the scratch record {key} ({exc}); a later restore or drill deletes it")


def sweep_scratch_databases(engine, ctx: BackupContext) -> list[str]:
    """Drop the scratch databases that killed restores and drills of this target left on this
    server: those with a record (Repository.dead_scratch: holder dead, or older than the lock
    TTL) that names this server and a scratch name. A database with connected sessions is left,
    with a warning (no FORCE: nobody's session is ended); a database without a record is never
    touched. Logs one line per database removed; returns their names. Failures are logged and
    leave the record for the next run."""
    config, repo = engine.config, ctx.repository
    removed = []
    for key, held in repo.dead_scratch(engine.name, config.name):
        name = held["database"]
        if held.get("server") != server_of(config):
            continue  # another server's (the target moved): not ours to judge
        origin = f"pid {held.get('pid')} on host {held.get('host')}, started {held.get('time')}"
        if not SCRATCH_NAME.fullmatch(name):
            ctx.log(f"warning: scratch record {key} names {name!r}, which is no scratch database name; left alone")
            continue
        try:
            with connect(config) as conn:
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
                sessions = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (name,)
                ).fetchone()[0]
            if exists is not None:
                if sessions:
                    ctx.log(
                        f"warning: scratch database {name} left by a killed run ({origin}) has {sessions} "
                        "connected session(s); left in place, a later restore or drill retries"
                    )
                    continue
                drop_database(config, name, force=False)
                ctx.log(f"removed scratch database {name} left by a killed run ({origin})")
                removed.append(name)
            repo.delete_scratch(key)
        except (psycopg.Error, VaultflowError) as exc:
            ctx.log(
                f"warning: could not remove scratch database {name} left by a killed run ({origin}): "
                f"{exc}; a later restore or drill retries"
            )
    return removed


# -- pg_restore -------------------------------------------------------------------------------


class _Archive:
    """One stored dump, streamed (sha256-checked) into pg_restore as often as needed."""

    def __init__(self, engine, ctx: BackupContext, manifest: Manifest, obj: StoredObject, env, work: Path):
        self.engine, self.ctx, self.manifest, self.obj, self.env, self.work = engine, ctx, manifest, obj, env, work

    def run(self, cmd: list[str], *, whole: bool) -> None:
        """Feed the archive to `cmd`. `whole`: the command reads it to the end, so the checksum is
        checked; a listing or event-trigger pass reads only the table of contents at its start."""
        repo = self.ctx.repository
        reader, verifying, raw = open_verified(
            repo.store,
            repo.object_key(self.manifest, self.obj.key),
            self.obj.sha256,
            self.obj.stored_size,
            name=f"{self.manifest.id}/{self.obj.key}",
        )
        with raw:
            feed_process(reader, cmd, self.env, on_stderr=self.ctx.log, pass_fds=getattr(self.env, "pass_fds", ()))
            if whole:
                verifying.check()

    def split_list(self) -> tuple[Path, Path | None, list[str]]:
        """`pg_restore --list` split into (everything but event triggers, event triggers only,
        names of the event triggers)."""
        listing = self.work / "toc.list"
        self.run([str(self.engine.bin_dir / "pg_restore"), "--list", f"--file={listing}"], whole=False)
        main, deferred, names = [], [], []
        for line in listing.read_text(errors="surrogateescape").splitlines():
            if EVENT_TRIGGER_ENTRY.match(line):
                deferred.append(line)
                if " EVENT TRIGGER - " in line:
                    names.append(line.split(" EVENT TRIGGER - ", 1)[1].rsplit(" ", 1)[0])
            else:
                main.append(line)
        main_path, deferred_path = self.work / "main.list", self.work / "event-triggers.list"
        main_path.write_text("\n".join(main) + "\n", errors="surrogateescape")
        deferred_path.write_text("\n".join(deferred) + "\n", errors="surrogateescape")
        return main_path, deferred_path if deferred else None, names


def _restore_cmd(engine, dbname: str, listing: Path | None, no_owner: bool, no_privileges: bool) -> list[str]:
    cmd = restore_command(engine.bin_dir, dbname)
    cmd += ["--no-owner"] if no_owner else []
    cmd += ["--no-privileges"] if no_privileges else []
    return cmd + ([f"--use-list={listing}"] if listing else [])


def _not_owner_error(exc: ToolError, database: str, user: str) -> ConfigError | ToolError:
    if not any(marker in str(exc) for marker in NOT_OWNER):
        return exc
    return ConfigError(
        f"restoring database {database!r} as {user!r} failed: {user!r} is not a superuser and cannot "
        "give objects their original owners or privileges. Restore with no_owner=True and "
        "no_privileges=True (CLI: --no-owner --no-privileges; objects then belong to "
        f"{user!r}), or as a superuser. pg_restore said: {exc}"
    )


# -- restore and drill ------------------------------------------------------------------------


def restore_logical(
    engine,
    ctx: BackupContext,
    manifest: Manifest,
    *,
    into: str | None,
    overwrite: bool,
    databases: list[str] | None,
    no_owner: bool = False,
    no_privileges: bool = False,
    sweep: bool = True,
) -> RestoreResult:
    """Restore the dumps of `manifest` (all, or `databases`) into `into` (one database) or each
    into default_restore_name(); with `overwrite` an existing database is replaced, but only
    after its restored copy matched every fingerprint and property.

    `no_owner` / `no_privileges`: pg_restore's --no-owner / --no-privileges, for a restoring
    role that is not a superuser (objects and the database then belong to it; the database ACL
    and role-specific settings are left out). RestoreResult.notes says what was changed on
    purpose (subscriptions detached from their slots). With `sweep` (drills sweep once
    themselves) it first drops the scratch databases killed runs left (sweep_scratch_databases).

    Raises RefusedError (existing database without overwrite; `into` with several databases),
    NotFoundError (unknown database), ConfigError (a non-superuser restore without no_owner,
    a locale the server lacks, a missing role), IntegrityError, ToolError."""
    dumps = [o for o in manifest.objects if o.role == "database-dump"]
    if databases:
        unknown = set(databases) - {o.database for o in dumps}
        if unknown:
            raise NotFoundError(f"backup {manifest.id} has no database {', '.join(sorted(unknown))}")
        dumps = [o for o in dumps if o.database in databases]
    if into and len(dumps) != 1:
        raise RefusedError(
            f"`into` names one database but backup {manifest.id} holds {len(dumps)}; pick one with `databases`"
        )
    targets = {o.database: into or default_restore_name(o.database, manifest.id) for o in dumps}
    config = engine.config
    if sweep:
        sweep_scratch_databases(engine, ctx)
    clashes = [t for t in targets.values() if engine.database_exists(t)]
    if clashes and not overwrite:
        why = (  # a default name (no `into`): an earlier restore of this backup made it
            f" (the name a restore gives its copy of backup {manifest.id}: an earlier restore of it made "
            "that copy; drop it if it is no longer needed)"
            if not into
            else ""
        )
        raise RefusedError(
            f"database(s) {', '.join(clashes)} already exist on {config.host}:{config.port}{why}; "
            "nothing was touched. Restore under another name (`into`), or replace it: `into` naming it and "
            "overwrite=True (several databases: one at a time, chosen with `databases`)"
        )
    with connect(config) as conn:
        superuser = conn.execute("SELECT current_setting('is_superuser') = 'on'").fetchone()[0]
    if not superuser and not no_owner:
        raise ConfigError(
            f"{config.user!r} is not a superuser, so pg_restore cannot give the restored objects of "
            f"{', '.join(repr(d) for d in targets)} their original owners. Restore with "
            "no_owner=True and no_privileges=True (CLI: --no-owner --no-privileges), or as a superuser"
        )
    start = time.monotonic()
    results, notes = [], []
    with client_env(config, []) as env:  # each database's restore names its scratch database
        for obj in dumps:
            restore = _DatabaseRestore(
                engine,
                ctx,
                manifest,
                obj,
                targets[obj.database],
                env,
                no_owner=no_owner,
                no_privileges=no_privileges,
                superuser=superuser,
            )
            results += restore.run()
            notes += restore.notes
    for note in notes:
        ctx.log(note)
    return RestoreResult(
        backup_id=manifest.id,
        restored=targets,
        seconds=time.monotonic() - start,
        comparison=Comparison(results, noun="tables"),
        notes=notes,
    )


class _DatabaseRestore:
    """One database: scratch copy, proof, move into place (see the module docstring)."""

    def __init__(
        self, engine, ctx, manifest, obj, target: str, env, *, no_owner: bool, no_privileges: bool, superuser: bool
    ):
        self.engine, self.ctx, self.manifest, self.obj, self.target, self.env = engine, ctx, manifest, obj, target, env
        self.no_owner, self.no_privileges, self.superuser = no_owner, no_privileges, superuser
        self.props = (PostgresLogicalConsistency.of(manifest).database_properties or {}).get(obj.database)
        self.notes: list[str] = []

    def run(self):
        config, source = self.engine.config, self.obj.database
        scratch = scratch_name(self.target)
        record = record_scratch(self.engine, self.ctx, scratch)  # before it exists: a kill leaves the record
        try:
            with connect(config) as conn:
                create_database(conn, scratch, self.props, source)
        except BaseException:
            forget_scratch(self.ctx, record)  # nothing was created
            raise
        try:
            with temporary_directory("vaultflow-restore-") as work:  # removed even if this process is killed
                table_results = self._restore_into(scratch, Path(work))
            replacing = self.engine.database_exists(self.target)
            if replacing and any(t.status != "match" for t in table_results):
                raise IntegrityError(
                    f"restored copy of {source!r} does not match backup {self.manifest.id} "
                    f"({Comparison(table_results, noun='tables').summary()}); {self.target!r} was left untouched"
                )
            if replacing:
                # From here the proven copy may be all there is of the target (killed between the
                # drop and the rename): no record, so no later sweep drops it.
                forget_scratch(self.ctx, record)
                self._replace(self.target)
            with connect(config) as conn:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(scratch), sql.Identifier(self.target)
                    )
                )
        except BaseException as exc:
            try:
                drop_database(config, scratch)
            except Exception as cleanup:  # the restore's own error is the one to see
                note_cleanup_failure(
                    exc,
                    f"could not drop the scratch database {scratch!r} ({cleanup}); "
                    "the next restore or drill of this target drops it, or drop it by hand",
                    self.ctx.log,
                )
            else:
                forget_scratch(self.ctx, record)
            raise
        forget_scratch(self.ctx, record)
        return table_results

    def _restore_into(self, scratch: str, work: Path):
        config, source = self.engine.config, self.obj.database
        if hasattr(self.env, "allow"):  # a passfile that names exactly the databases we connect to
            self.env.allow(scratch)
        archive = _Archive(self.engine, self.ctx, self.manifest, self.obj, self.env, work)
        main, deferred, triggers = archive.split_list()
        if deferred and not self.superuser:
            raise ConfigError(
                f"database {source!r} has event trigger(s) {', '.join(triggers)}, which only a "
                "superuser can create: restore it as a superuser"
            )
        self.env["PGOPTIONS"] = SAFE_SESSION
        try:
            archive.run(_restore_cmd(self.engine, scratch, main, self.no_owner, self.no_privileges), whole=True)
        except ToolError as exc:
            raise _not_owner_error(exc, source, config.user) from exc
        # A copy under another name must never take the original subscriber's slot.
        self.notes += quiet_subscriptions(config, scratch, detach=self.target != source, shown_as=self.target)
        with connect(config) as conn:
            if self.props is not None:
                apply_settings(conn, scratch, self.props, role_settings=not self.no_privileges)
        expected = self.manifest.fingerprints.get(source, {})
        actual = self.engine.fingerprint(scratch, {t: f.method for t, f in expected.items()})
        results = compare_database(source, expected, actual)
        if deferred:  # last: they must not fire on the restore, the proof or its connections
            archive.run(_restore_cmd(self.engine, scratch, deferred, self.no_owner, self.no_privileges), whole=False)
            self.notes.append(
                f"event trigger(s) {', '.join(triggers)} of {source!r} were restored after the data, "
                "so they did not fire during the restore"
            )
        if self.props is not None:
            with connect(config) as conn:
                apply_identity(conn, scratch, self.props, owner=not self.no_owner, privileges=not self.no_privileges)
                actual_props = read_properties(conn, scratch)
            skip = ({"owner"} if self.no_owner else set()) | ({"acl", "role_settings"} if self.no_privileges else set())
            results.append(compare_properties(source, self.props, actual_props, skip))
        return results

    def _replace(self, target: str) -> None:
        """Drop the database being replaced; refuse when replication slots depend on it."""
        with connect(self.engine.config) as conn:
            slots = [
                r[0]
                for r in conn.execute(
                    "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (target,)
                ).fetchall()
            ]
        if slots:
            raise RefusedError(
                f"database {target!r} has logical replication slot(s) {', '.join(slots)} (subscribers "
                "replicate from it); replacing it would drop them. Drop the slots "
                "(pg_drop_replication_slot) or restore under another name; nothing was replaced"
            )
        drop_database(self.engine.config, target)


def drill_logical(engine, ctx: BackupContext, manifest: Manifest) -> RestoreResult:
    """Restore each database of `manifest` into a new drill_name() database, compare, drop it
    (with its subscriptions; see drop_database), whatever happened. `seconds`: restore time."""
    tables, notes, seconds, restored = [], [], 0.0, {}
    sweep_scratch_databases(engine, ctx)
    for database in sorted({o.database for o in manifest.objects if o.role == "database-dump"}):
        scratch = drill_name(database)
        record = record_scratch(engine, ctx, scratch)  # the drill database, from its rename to its drop
        try:
            result = restore_logical(
                engine, ctx, manifest, into=scratch, overwrite=False, databases=[database], sweep=False
            )
            tables += result.comparison.tables
            notes += result.notes
            seconds += result.seconds
            restored.update(result.restored)
        except BaseException as exc:
            try:
                drop_database(engine.config, scratch)
            except Exception as cleanup:  # the drill's own error is the one to see
                note_cleanup_failure(
                    exc,
                    f"could not drop the drill database {scratch!r} ({cleanup}); "
                    "the next restore or drill of this target drops it, or drop it by hand",
                    ctx.log,
                )
            else:
                forget_scratch(ctx, record)
            raise
        drop_database(engine.config, scratch)
        forget_scratch(ctx, record)
    return RestoreResult(
        backup_id=manifest.id,
        restored=restored,
        seconds=seconds,
        comparison=Comparison(tables, noun="tables"),
        notes=notes,
    )
