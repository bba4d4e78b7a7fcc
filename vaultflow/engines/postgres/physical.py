"""PostgreSQL physical backups: `pg_basebackup` streamed as one tar into the repository.

    pg_basebackup --pgdata=- --format=tar --wal-method=fetch  (stdout)
        -> TarSniffer (captures backup_label, backup_manifest, tablespace_map)
        -> CountingReader -> zstd -> HashingReader -> store.put   as base.tar.zst

One pass, memory bounded by a few chunk buffers (plus the captured members, which spill to a
temporary file when large). With the tar on stdout pg_basebackup appends the server's
`backup_manifest` as the *last member of the tar stream* (PostgreSQL 15 and 18 alike; there
is no separate file), and `-X fetch` puts the WAL the backup needs under pg_wal/ in the same
tar: base.tar.zst alone restores to a consistent cluster. The captured backup_manifest is also
stored on its own as backup_manifest.zst: `pg_basebackup --incremental` needs the parent's.

`-X fetch` collects the WAL at the end of the backup: the server must keep it until then
(`wal_keep_size` large enough for the WAL written during a backup); `-X stream` cannot be
combined with a tar on stdout. Tablespaces other than pg_default/pg_global cannot be written
to stdout either: such servers are refused (ConfigError) for now.

Restore: pg_physical_restore.restore_physical.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import psycopg

from vaultflow.compare import UNLOGGED_EMPTY, TableComparison
from vaultflow.engines.base import BackupContext, BackupPlan, commit_unless_planned, planned_identity
from vaultflow.engines.postgres.client import (
    PostgresSettings,
    client_env,
    connect,
)
from vaultflow.engines.postgres.consistency import PG_BASEBACKUP, PostgresPhysicalConsistency
from vaultflow.engines.postgres.fingerprint import fingerprint_tables
from vaultflow.engines.postgres.tarstream import TarSniffer
from vaultflow.errors import (
    AuthenticationError,
    ConfigError,
    NotFoundError,
    ServerUnavailableError,
    ToolError,
    TransientError,
    VaultflowError,
)
from vaultflow.manifest import (
    BackupKind,
    BackupMode,
    Fingerprint,
    Manifest,
)
from vaultflow.pipeline import (
    WrittenObject,
    compress_into_store,
    dump_into_store,
)
from vaultflow.tools import tool_version

ENGINE = "postgres"
BASE_OBJECT = "base.tar.zst"
MANIFEST_OBJECT = "backup_manifest.zst"
CAPTURED = ("backup_label", "backup_manifest", "tablespace_map")
MANIFEST_TAIL = 1 << 20  # WAL-Ranges sit at the end of a backup_manifest, after every file
MANIFEST_HEAD = 1 << 16  # the first file entry (and its Checksum-Algorithm) sits near the start
# Where a restored copy listens and whether it archives: never into production's archive.
RESTORED_SETTINGS = {"archive_mode": "off"}

_LSN = r"[0-9A-F]+/[0-9A-F]+"
_LABEL_FIELDS = {
    "start_lsn": re.compile(rf"^START WAL LOCATION: ({_LSN}) \(file [0-9A-F]{{24}}\)$", re.MULTILINE),
    "start_wal_file": re.compile(rf"^START WAL LOCATION: {_LSN} \(file ([0-9A-F]{{24}})\)$", re.MULTILINE),
    "checkpoint_lsn": re.compile(rf"^CHECKPOINT LOCATION: ({_LSN})$", re.MULTILINE),
    "timeline": re.compile(r"^START TIMELINE: (\d+)$", re.MULTILINE),
}


@dataclass(frozen=True)
class BackupLabel:
    start_lsn: str
    start_wal_file: str
    checkpoint_lsn: str
    timeline: int
    label: str | None = None


def parse_backup_label(text: str) -> BackupLabel:
    """START WAL LOCATION (LSN + file), CHECKPOINT LOCATION, START TIMELINE, LABEL."""
    found = {key: rx.search(text) for key, rx in _LABEL_FIELDS.items()}
    missing = [key for key, match in found.items() if match is None]
    if missing:
        raise ToolError(f"pg_basebackup's backup_label lacks {', '.join(missing)}: {text[:300]!r}")
    label = re.search(r"^LABEL: (.*)$", text, re.MULTILINE)
    return BackupLabel(
        start_lsn=found["start_lsn"].group(1),
        start_wal_file=found["start_wal_file"].group(1),
        checkpoint_lsn=found["checkpoint_lsn"].group(1),
        timeline=int(found["timeline"].group(1)),
        label=label.group(1) if label else None,
    )


def read_manifest_facts(handle: BinaryIO) -> tuple[list[dict], str | None]:
    """WAL-Ranges [{Timeline, Start-LSN, End-LSN}] and System-Identifier (manifest v2) of a
    backup_manifest, reading only its head and tail (it grows with the number of files)."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(0)
    head = handle.read(4096)
    handle.seek(max(0, size - MANIFEST_TAIL))
    tail = handle.read()
    handle.seek(0)
    system = re.search(rb'"System-Identifier":\s*(\d+)', head)
    at = tail.rfind(b'"WAL-Ranges"')
    if at < 0:
        raise ToolError("pg_basebackup's backup_manifest has no WAL-Ranges")
    try:
        ranges, _ = json.JSONDecoder().raw_decode(tail[tail.index(b"[", at) :].decode())
        ranges = [
            {"Timeline": int(r["Timeline"]), "Start-LSN": r["Start-LSN"], "End-LSN": r["End-LSN"]} for r in ranges
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise ToolError(f"pg_basebackup's backup_manifest has unreadable WAL-Ranges ({exc})") from None
    if not ranges:
        raise ToolError("pg_basebackup's backup_manifest has an empty WAL-Ranges list")
    return ranges, system.group(1).decode() if system else None


def manifest_checksum_algorithm(handle: BinaryIO) -> str | None:
    """The per-file Checksum-Algorithm of a backup_manifest (CRC32C, SHA256, ...), read from its
    head (the first file entry); None when the head names none (--manifest-checksums=NONE)."""
    handle.seek(0)
    head = handle.read(MANIFEST_HEAD)
    handle.seek(0)
    found = re.search(rb'"Checksum-Algorithm":\s*"([A-Z0-9]+)"', head)
    return found.group(1).decode() if found else None


def basebackup_command(bin_dir: Path, label: str, manifest_checksums: str = "CRC32C") -> list[str]:
    """One tar on stdout, WAL included (fetch), backup_manifest with `manifest_checksums`
    per-file checksums (CRC32C by default: see docs/architecture.md "Manifest checksums"), no prompt."""
    return [
        str(Path(bin_dir) / "pg_basebackup"),
        "--pgdata=-",
        "--format=tar",
        "--wal-method=fetch",
        "--checkpoint=fast",
        f"--manifest-checksums={manifest_checksums}",
        f"--label={label}",
        "--no-password",
        "--verbose",
    ]


# -- backup --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerFacts:
    """What a physical backup needs to know of the server before it starts: its system
    identifier (None when this role may not read pg_control), extra tablespaces as (name,
    location) pairs, and the size of all databases in bytes (None if unknown; a progress hint)."""

    system_identifier: str | None
    tablespaces: list[tuple[str, str]]
    size: int | None


def server_facts(config: PostgresSettings) -> ServerFacts:
    """ServerFacts of `config`'s server, read over one connection (psycopg errors of the
    connection itself propagate; missing privileges only leave fields None)."""
    with connect(config) as conn:
        tablespaces = conn.execute(
            "SELECT spcname, pg_tablespace_location(oid) FROM pg_tablespace "
            "WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1"
        ).fetchall()
        system = size = None
        try:  # a role without these privileges still gets System-Identifier from manifest v2 (17+)
            system = conn.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()[0]
        except psycopg.Error:
            pass
        try:  # only a progress estimate
            size = conn.execute("SELECT sum(pg_database_size(oid))::bigint FROM pg_database").fetchone()[0]
        except psycopg.Error:
            pass
    return ServerFacts(system, [(n, loc) for n, loc in tablespaces], size)


def _tablespace_error(config: PostgresSettings, names: str) -> ConfigError:
    return ConfigError(
        f"PostgreSQL at {config.host}:{config.port} has tablespace(s) {names}: physical backups stream "
        "one tar to the repository and pg_basebackup writes only the main tablespace to stdout, so "
        "servers with extra tablespaces are not supported yet; use mode 'logical' for this target"
    )


_BASEBACKUP_FAILURES = [
    (
        "password authentication failed",
        AuthenticationError,
        "PostgreSQL at {where} refused the replication login of pg_basebackup: check the user and password",
    ),
    (
        "no pg_hba.conf entry for replication",
        ConfigError,
        (
            "pg_hba.conf of {where} does not allow replication connections for this user: add a "
            "`host replication <user> <client address> scram-sha-256` line and reload"
        ),
    ),
    (
        "replication role",
        ConfigError,
        "the user of {where} needs the REPLICATION attribute (ALTER ROLE ... REPLICATION) for physical backups",
    ),
    (
        "REPLICATION attribute",
        ConfigError,
        "the user of {where} needs the REPLICATION attribute (ALTER ROLE ... REPLICATION) for physical backups",
    ),
    (
        "max_wal_senders (currently 0)",
        ConfigError,
        "{where} has max_wal_senders = 0: physical backups need a WAL sender (set it >= 2 and restart)",
    ),
    (
        "exceeds max_wal_senders",
        ServerUnavailableError,
        "every WAL sender of {where} is busy (max_wal_senders): retry later or raise max_wal_senders",
    ),
    (
        "has already been removed",
        TransientError,
        (
            "WAL the backup needs was recycled on {where} before pg_basebackup fetched it: raise "
            "wal_keep_size above the WAL written during a backup, then retry"
        ),
    ),
    ("could not connect", ServerUnavailableError, "pg_basebackup cannot reach PostgreSQL at {where}"),
    ("connection to server", ServerUnavailableError, "pg_basebackup cannot reach PostgreSQL at {where}"),
]


def classify_basebackup_error(exc: ToolError, config: PostgresSettings) -> VaultflowError:
    """The vaultflow error a failed pg_basebackup run means (its stderr in `exc`): a wrong login
    is AuthenticationError, missing replication rights or tablespaces ConfigError, busy WAL
    senders ServerUnavailableError, recycled WAL TransientError; anything else `exc` itself."""
    text = str(exc)
    if "single tablespace to stdout" in text:
        return _tablespace_error(config, "(found by pg_basebackup)")
    for needle, kind, message in _BASEBACKUP_FAILURES:
        if needle in text:
            return kind(message.format(where=config.where) + f" ({text.splitlines()[-1].strip()})")
    return exc


def _stream_basebackup(
    cmd: list[str], env: Mapping[str, str], ctx: BackupContext, key: str, expected: int | None
) -> tuple[WrittenObject, TarSniffer]:
    """pg_basebackup's stdout through the tar sniffer into the store, in one pass."""
    repo = ctx.repository
    progress = (lambda done: ctx.progress(BASE_OBJECT, done, expected)) if ctx.progress else None
    sniffers: list[TarSniffer] = []

    def sniff(producer):
        sniffers.append(TarSniffer(producer, CAPTURED))
        return sniffers[0]

    # Databases + WAL fetched at the end: a generous bound for S3's part size (stored <= raw).
    hint = expected + (1 << 30) if expected else None
    try:
        written = dump_into_store(
            cmd,
            env,
            repo.store,
            key,
            level=repo.compression_level,
            size_hint=hint,
            progress=progress,
            on_stderr=ctx.log,
            wrap=sniff,
            pass_fds=getattr(env, "pass_fds", ()),
        )
    except BaseException:
        for sniffer in sniffers:
            sniffer.close()
        raise
    return written, sniffers[0]


def physical_full_backup(
    config: PostgresSettings, ctx: BackupContext, *, bin_dir: Path, server_version: str, plan: BackupPlan | None = None
) -> Manifest:
    """A full physical backup of the whole cluster, committed to ctx.repository (as the dump
    step of `plan`: under the plan's id, returned uncommitted for finish_backup).

    Objects: base.tar.zst (pg_basebackup's tar: data directory, WAL to reach consistency,
    backup_manifest as last member) and backup_manifest.zst (the same manifest on its own).

    Fingerprints (every non-template database that accepts connections) are taken right
    after pg_basebackup finished, on the live server: they equal the restored cluster's only
    when nothing writes during the backup (the tests make it so). A physical copy has no
    snapshot to share with a query; its own consistency point is start/stop LSN below.
    Unlogged tables are listed per database in consistency.unlogged_tables: a base backup
    does not copy their rows, so a restore brings them back empty (and says so).
    """
    facts = server_facts(config)

    def inspect(label_text: str, manifest_system: str | None, label: BackupLabel) -> dict:
        if facts.system_identifier and manifest_system and manifest_system != facts.system_identifier:
            raise ToolError(
                f"pg_basebackup copied system {manifest_system} but {config.where} is system "
                f"{facts.system_identifier}: did the server change under us?"
            )
        return {"system_identifier": facts.system_identifier or manifest_system}

    return run_basebackup(
        config,
        ctx,
        BackupKind.FULL,
        facts=facts,
        bin_dir=bin_dir,
        server_version=server_version,
        command=lambda backup_id: basebackup_command(bin_dir, f"vaultflow-{backup_id}", config.manifest_checksums),
        classify=lambda exc: classify_basebackup_error(exc, config),
        inspect=inspect,
        plan=plan,
    )


def run_basebackup(
    config: PostgresSettings,
    ctx: BackupContext,
    kind: BackupKind,
    *,
    facts: ServerFacts,
    bin_dir: Path,
    server_version: str,
    command: Callable[[str], list[str]],
    classify: Callable[[ToolError], VaultflowError],
    inspect: Callable[[str, str | None, BackupLabel], dict],
    parent_id: str | None = None,
    plan: BackupPlan | None = None,
) -> Manifest:
    """What full and incremental backups share: stream pg_basebackup (`command(backup_id)`) into
    base.tar.zst, keep its backup_manifest as backup_manifest.zst, fingerprint, and commit the
    manifest LAST; any failure discards the payload. `inspect(label text, manifest's system
    identifier, parsed label)` checks what the backup itself says and returns extra
    consistency fields. With `plan` (the dump step of a backup in steps) the plan's id and start
    are used and the manifest is returned uncommitted: finish_backup commits it."""
    if facts.tablespaces:
        raise _tablespace_error(config, ", ".join(f"{n} ({loc})" for n, loc in facts.tablespaces))
    repo = ctx.repository
    started, backup_id = planned_identity(plan, kind)
    prefix = repo.backup_prefix(ENGINE, config.name, backup_id)
    timings: dict[str, float] = {}
    sniffer: TarSniffer | None = None
    # Fingerprints are read while pg_basebackup streams (on 2 cores this hides their cost);
    # like any physical-backup fingerprint they are exact only without concurrent writes.
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fingerprints")
    try:
        with repo.uncommitted(ENGINE, config.name, backup_id, ctx.log):
            fingerprinting = pool.submit(fingerprints_and_unlogged, config)
            with client_env(config, ["replication"]) as env:  # pg_basebackup: a replication connection
                t0 = time.monotonic()
                try:
                    written, sniffer = _stream_basebackup(
                        command(backup_id), env, ctx, prefix + BASE_OBJECT, facts.size
                    )
                except ToolError as exc:
                    raise classify(exc) from exc
                timings["basebackup"] = time.monotonic() - t0
            t0 = time.monotonic()
            fingerprints, unlogged = fingerprinting.result()
            timings["fingerprints_wait"] = time.monotonic() - t0

            label_bytes, manifest_file = sniffer.captured_bytes("backup_label"), sniffer.captured.get("backup_manifest")
            if label_bytes is None or manifest_file is None:
                raise ToolError(
                    f"pg_basebackup's tar has no {'backup_label' if label_bytes is None else 'backup_manifest'}"
                )
            if sniffer.captured_bytes("tablespace_map"):
                raise _tablespace_error(config, "(created during the backup)")
            label_text = label_bytes.decode(errors="replace")
            label = parse_backup_label(label_text)
            ranges, manifest_system = read_manifest_facts(manifest_file)
            checksums = manifest_checksum_algorithm(manifest_file) or "NONE"
            extra = inspect(label_text, manifest_system, label)
            t0 = time.monotonic()
            manifest_written = compress_into_store(
                manifest_file, repo.store, prefix + MANIFEST_OBJECT, level=repo.compression_level
            )
            timings["backup_manifest"] = time.monotonic() - t0
            objects = [
                written.as_object(BASE_OBJECT, "base", "tar"),
                manifest_written.as_object(MANIFEST_OBJECT, "backup-manifest", "json"),
            ]
            manifest = Manifest(
                id=backup_id,
                engine=ENGINE,
                target=config.name,
                kind=kind,
                mode=BackupMode.PHYSICAL,
                parent_id=parent_id,
                started_at=started,
                finished_at=datetime.now(UTC),
                consistency=PostgresPhysicalConsistency(
                    method=PG_BASEBACKUP,
                    start_lsn=label.start_lsn,
                    stop_lsn=ranges[-1]["End-LSN"],
                    timeline=label.timeline,
                    start_wal_file=label.start_wal_file,
                    checkpoint_lsn=label.checkpoint_lsn,
                    wal_ranges=ranges,
                    label=label.label,
                    manifest_checksums=checksums,
                    unlogged_tables=unlogged,
                    **extra,
                ),
                objects=objects,
                fingerprints=fingerprints,
                server_version=server_version,
                tool_versions={"pg_basebackup": tool_version(bin_dir / "pg_basebackup")},
                timings=timings,
                lineage=ctx.lineage,
            )
            commit_unless_planned(repo, manifest, plan)
    finally:
        pool.shutdown(wait=True)
        if sniffer is not None:
            sniffer.close()
    return manifest


UNLOGGED_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'u'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2
"""


def unlogged_tables(conn: psycopg.Connection) -> list[str]:
    """'schema.table' of every unlogged table in the connected database, sorted."""
    return [f"{schema}.{table}" for schema, table in conn.execute(UNLOGGED_SQL).fetchall()]


def with_unlogged(
    tables: list[TableComparison], unlogged: dict[tuple[str, str], int]
) -> tuple[list[TableComparison], list[str]]:
    """Mark the unlogged tables of a restored cluster (`unlogged`: (database, 'schema.table')
    -> rows in the copy) in a comparison: empty ones are UNLOGGED_EMPTY (whatever the backup's
    fingerprint said), ones with rows are a "mismatch"; unlogged tables the comparison lacked
    (no fingerprints) are added. Returns the tables and 'database.schema.table' of the empty ones."""
    result, seen = [], set()
    for t in tables:
        rows = unlogged.get((t.database, t.table))
        if rows is not None:
            seen.add((t.database, t.table))
            t = TableComparison(t.database, t.table, t.expected_rows, rows, UNLOGGED_EMPTY if rows == 0 else "mismatch")
        result.append(t)
    for (database, table), rows in sorted(unlogged.items()):
        if (database, table) not in seen:
            result.append(TableComparison(database, table, None, rows, UNLOGGED_EMPTY if rows == 0 else "mismatch"))
    empty = [f"{database}.{table}" for (database, table), rows in sorted(unlogged.items()) if rows == 0]
    return result, empty


def _fingerprint_all(config: PostgresSettings) -> dict[str, dict[str, Fingerprint]]:
    """Every table's fingerprint per database; see fingerprints_and_unlogged."""
    return fingerprints_and_unlogged(config)[0]


@contextmanager
def _listed_database(config: PostgresSettings, database: str) -> Iterator[psycopg.Connection]:
    """A connection to a database just listed in pg_database. TransientError when it was dropped
    meanwhile (a drill's scratch database, a user's DROP): the cluster changed under the backup,
    so the step is retried instead of failing for good on a database nobody asked for."""
    try:
        conn = connect(config, database)
    except NotFoundError as exc:
        raise TransientError(
            f"database {database!r} on {config.where} was dropped while the physical backup listed the "
            f"cluster's databases: retrying ({exc})"
        ) from exc
    with conn:
        yield conn


def fingerprints_and_unlogged(
    config: PostgresSettings,
) -> tuple[dict[str, dict[str, Fingerprint]], dict[str, list[str]]]:
    """Every table's fingerprint per database (none when the target turned them off: restores
    then rest on pg_verifybackup against the server's backup_manifest), and the unlogged tables
    per database (always: recorded in the manifest because a restore brings them back empty).
    An unlogged table's fingerprint is its live one; the restore reports it expected empty."""
    with connect(config) as conn:
        databases = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1"
            ).fetchall()
        ]
    prints_by_db, unlogged_by_db = {}, {}
    for database in databases:
        with _listed_database(config, database) as conn:
            unlogged = unlogged_tables(conn)
            if unlogged:
                unlogged_by_db[database] = unlogged
            if config.physical_fingerprints:
                conn.execute("SET max_parallel_workers_per_gather = 0")  # leave the cores to the backup
                prints_by_db[database] = fingerprint_tables(conn)
    return prints_by_db, unlogged_by_db


__all__ = [
    "BASE_OBJECT",
    "MANIFEST_OBJECT",
    "UNLOGGED_EMPTY",
    "BackupLabel",
    "basebackup_command",
    "manifest_checksum_algorithm",
    "parse_backup_label",
    "fingerprints_and_unlogged",
    "physical_full_backup",
    "read_manifest_facts",
    "unlogged_tables",
    "with_unlogged",
]
