"""Pure pieces of the PostgreSQL engine: command lines, client environment, error mapping,
and the manifest's id and parsing rules. Nothing here talks to a server."""

from __future__ import annotations

import io
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from vaultflow.engines.postgres.chain import chain_checksum_algorithm, combinebackup_command
from vaultflow.engines.postgres.client import (
    classify_connect_error,
    client_env,
    dbname_conninfo,
    dump_command,
    globals_command,
    passfile_lines,
    restore_command,
)
from vaultflow.engines.postgres.consistency import PostgresLogicalConsistency, PostgresPhysicalConsistency
from vaultflow.engines.postgres.incremental import incremental_command
from vaultflow.engines.postgres.physical import basebackup_command, manifest_checksum_algorithm
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.errors import (
    AuthenticationError,
    ConfigError,
    NotFoundError,
    ServerUnavailableError,
    VaultflowError,
    is_transient,
)
from vaultflow.manifest import (
    SCHEMA_VERSION,
    BackupKind,
    BackupMode,
    Fingerprint,
    Manifest,
    ManifestError,
    StoredObject,
    new_backup_id,
    parse_backup_id,
    parse_manifest,
)

BIN = Path("/opt/pg/bin")
SECRET = r"s3:cr\et:pa\\ss"


def config(**kw) -> PostgresSettings:
    defaults = dict(target_name="prod", host="db.example.internal", port=5433, user="backup", password=SECRET)
    return PostgresSettings(**{**defaults, **kw})


# -- command builders ----------------------------------------------------------------------


def test_dump_command_custom_format_uncompressed_in_snapshot() -> None:
    cmd = dump_command(BIN, "shop", "00000003-0000001B-1", lock_timeout_s=2.5)
    assert cmd == [
        str(BIN / "pg_dump"),
        "--format=custom",
        "--compress=0",
        "--no-password",
        "--lock-wait-timeout=2500",
        "--dbname=dbname=shop",
        "--snapshot=00000003-0000001B-1",
    ]


def test_dump_command_without_snapshot() -> None:
    cmd = dump_command(BIN, "shop", None)
    assert not any(arg.startswith("--snapshot") for arg in cmd)
    assert cmd[0] == str(BIN / "pg_dump") and "--format=custom" in cmd and "--compress=0" in cmd


def test_globals_and_restore_commands() -> None:
    assert globals_command(BIN) == [str(BIN / "pg_dumpall"), "--globals-only", "--no-password", "--database=postgres"]
    assert restore_command(BIN, "shop_restore") == [
        str(BIN / "pg_restore"),
        "--exit-on-error",
        "--no-password",
        "--dbname=dbname=shop_restore",
    ]
    assert restore_command(BIN, "x", no_owner=True)[-2:] == ["--no-owner", "--no-privileges"]


def test_no_command_carries_connection_secrets() -> None:
    cfg = config()
    for cmd in (dump_command(BIN, "shop", "snap"), globals_command(BIN), restore_command(BIN, "shop", True)):
        joined = " ".join(cmd)
        assert SECRET not in joined and "password=" not in joined.lower()
        assert cfg.host not in joined and cfg.user not in joined  # connection comes from env


def test_basebackup_command_defaults_to_crc32c_manifest_checksums() -> None:
    cmd = basebackup_command(BIN, "vaultflow-X")
    assert cmd == [
        str(BIN / "pg_basebackup"),
        "--pgdata=-",
        "--format=tar",
        "--wal-method=fetch",
        "--checkpoint=fast",
        "--manifest-checksums=CRC32C",
        "--label=vaultflow-X",
        "--no-password",
        "--verbose",
    ]
    assert "--manifest-checksums=SHA256" in basebackup_command(BIN, "vaultflow-X", "SHA256")


def test_incremental_command_keeps_the_targets_algorithm() -> None:
    cmd = incremental_command(BIN, "vaultflow-Y", Path("/tmp/parent_manifest"), "SHA256")
    assert cmd[:-1] == basebackup_command(BIN, "vaultflow-Y", "SHA256")
    assert cmd[-1] == "--incremental=/tmp/parent_manifest"
    assert "--manifest-checksums=CRC32C" in incremental_command(BIN, "l", Path("/m"))


def test_combinebackup_command_follows_the_chain_algorithm() -> None:
    inputs = [Path("/w/000-full"), Path("/w/001-incr")]
    assert combinebackup_command(BIN, inputs, Path("/w/out"), link=True, manifest_checksums="SHA256") == [
        str(BIN / "pg_combinebackup"),
        "--no-sync",
        "--manifest-checksums=SHA256",
        "--link",
        "/w/000-full",
        "/w/001-incr",
        "-o",
        "/w/out",
    ]
    assert "--manifest-checksums=CRC32C" in combinebackup_command(BIN, inputs, Path("/o"), link=False)


def _backup_manifest(algorithm: str | None) -> bytes:
    entry = {"Path": "backup_label", "Size": 227, "Last-Modified": "2026-11-26 02:00:00 GMT"}
    if algorithm:
        entry.update({"Checksum-Algorithm": algorithm, "Checksum": "a1b2c3d4"})
    return json.dumps(
        {"PostgreSQL-Backup-Manifest-Version": 2, "System-Identifier": 7, "Files": [entry]}, indent=1
    ).encode()


def test_manifest_checksum_algorithm_reads_the_first_file_entry() -> None:
    assert manifest_checksum_algorithm(io.BytesIO(_backup_manifest("CRC32C"))) == "CRC32C"
    assert manifest_checksum_algorithm(io.BytesIO(_backup_manifest("SHA256"))) == "SHA256"
    assert manifest_checksum_algorithm(io.BytesIO(_backup_manifest(None))) is None
    handle = io.BytesIO(_backup_manifest("SHA256"))
    manifest_checksum_algorithm(handle)
    assert handle.tell() == 0, "the handle is rewound for the next reader"


def test_chain_checksum_algorithm_prefers_the_extracted_manifest(tmp_path: Path) -> None:
    recorded = physical_manifest(manifest_checksums="SHA256")
    extracted = tmp_path / "backup_manifest"
    extracted.write_bytes(_backup_manifest("CRC32C"))
    assert chain_checksum_algorithm(recorded, extracted) == "CRC32C"
    assert chain_checksum_algorithm(physical_manifest(manifest_checksums="CRC32C"), tmp_path / "missing") == "CRC32C"
    assert chain_checksum_algorithm(recorded, tmp_path / "missing") == "SHA256"
    assert chain_checksum_algorithm(physical_manifest(), None) == "SHA256", "backups from before the field"


def test_manifest_checksums_setting_is_strict() -> None:
    assert config().manifest_checksums == "CRC32C"
    assert config(manifest_checksums="SHA256").manifest_checksums == "SHA256"
    with pytest.raises(ValueError, match="CRC32C"):
        config(manifest_checksums="MD5")


# -- client_env ----------------------------------------------------------------------------

HOSTILE_NAMES = [
    "k=v",
    "host=10.9.8.7 port=6543 dbname=x",
    "a'b",
    "a\\b",
    "postgresql://evil/x",
    "with space = and",
    "",
    "'",
    "dbname=",
    "-x",
    "--help",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_every_name_reaches_dbname_as_one_quoted_conninfo_value(name: str) -> None:
    """libpq parses the --dbname value back to exactly the name, and to nothing else."""
    for cmd in (dump_command(BIN, name, "snap"), restore_command(BIN, name)):
        [arg] = [a for a in cmd if a.startswith("--dbname=")]
        value = arg[len("--dbname=") :]
        assert conninfo_to_dict(value) == {"dbname": name}
        assert cmd.count(arg) == 1 and not any(a == name for a in cmd)
    assert dbname_conninfo(name) == dump_command(BIN, name, None)[-1][len("--dbname=") :]


def _passfile(env) -> str:
    return os.pread(env.pass_fds[0], 1 << 16, 0).decode()


def test_client_env_passfile_is_anonymous_private_and_exact(monkeypatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "inherited-secret")  # must not leak into the tools
    monkeypatch.setenv("PGSERVICE", "other")
    cfg = config(user="ad:min")
    with client_env(cfg, ["shop", "we:ird\\db"]) as env:
        [fd] = env.pass_fds
        assert env["PGPASSFILE"] == f"/dev/fd/{fd}"
        assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600 and stat.S_ISREG(os.fstat(fd).st_mode)
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:"), "never a file on a filesystem"
        secret = r"s3\:cr\\et\:pa\\\\ss"
        assert _passfile(env) == (
            f"db.example.internal:5433:shop:ad\\:min:{secret}\n"
            f"db.example.internal:5433:we\\:ird\\\\db:ad\\:min:{secret}\n"
        )
        assert "*" not in _passfile(env)
        env.allow("scratch_1")
        assert _passfile(env) == f"db.example.internal:5433:scratch_1:ad\\:min:{secret}\n"
        assert env["PGHOST"] == cfg.host and env["PGPORT"] == "5433" and env["PGUSER"] == "ad:min"
        assert "PGPASSWORD" not in env and "PGSERVICE" not in env
        assert not any(SECRET in value or "inherited-secret" in value for value in env.values())
        assert env.get("PATH") == os.environ.get("PATH")
    with pytest.raises(OSError):
        os.fstat(fd)  # closed: nothing of it is left


def test_client_env_defaults_to_the_postgres_database_and_replication_is_named() -> None:
    with client_env(config()) as env:
        assert _passfile(env).startswith("db.example.internal:5433:postgres:backup:")
    assert passfile_lines(config(), ["replication"]).startswith("db.example.internal:5433:replication:backup:")


def test_passfile_lines_for_host_lists_and_socket_directories() -> None:
    lines = passfile_lines(config(host="db1,db2"), ["shop"]).splitlines()
    assert [line.split(":")[:3] for line in lines] == [["db1", "5433", "shop"], ["db2", "5433", "shop"]]
    lines = passfile_lines(config(host="/run/postgresql"), ["shop"]).splitlines()
    assert [line.split(":")[:3] for line in lines] == [
        ["/run/postgresql", "5433", "shop"],
        ["localhost", "5433", "shop"],
    ]


def test_client_env_without_password_is_an_empty_file() -> None:
    with client_env(config(password=None), ["shop"]) as env:
        assert _passfile(env) == ""  # never falls back to ~/.pgpass
    assert "PGPASSWORD" not in env


def test_client_env_closes_passfile_when_body_fails() -> None:
    with pytest.raises(RuntimeError):
        with client_env(config()) as env:
            fd = env.pass_fds[0]
            raise RuntimeError("tool failed")
    with pytest.raises(OSError):
        os.fstat(fd)


def test_passfile_refuses_a_password_with_a_line_break_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as info:
        passfile_lines(config(password="a\nb"), ["shop"])
    assert "line break" in str(info.value) and "prod" in str(info.value)
    assert "a\nb" not in str(info.value)


def test_a_database_name_with_a_line_break_gets_a_wildcard_database_for_this_server_only() -> None:
    cfg = config()
    lines = passfile_lines(cfg, ["x\ny", "shop"]).splitlines()
    assert len(lines) == 2 and lines[1].split(":")[2] == "shop"
    host, port, database, user, _ = lines[0].split(":", 4)
    assert (host, port, database, user) == (cfg.host, str(cfg.port), "*", cfg.user)


# -- classify_connect_error ------------------------------------------------------------------

AUTH_MESSAGES = [
    'connection failed: connection to server at "10.1.2.3", port 5433 failed: FATAL:  '
    'password authentication failed for user "backup"',
    'connection to server at "10.1.2.3", port 5433 failed: fe_sendauth: no password supplied',
    'connection to server at "10.1.2.3", port 5433 failed: FATAL:  role "backup" does not exist',
]
UNAVAILABLE_MESSAGES = [
    'connection failed: connection to server at "10.1.2.3", port 5433 failed: Connection refused\n'
    "\tIs the server running on that host and accepting TCP/IP connections?",
    'connection failed: could not translate host name "db.example.internal" to address: Name or service not known',
    'connection failed: connection to server at "10.1.2.3", port 5433 failed: timeout expired',
    "connection failed: server closed the connection unexpectedly",
]


@pytest.mark.parametrize("message", AUTH_MESSAGES)
def test_classify_authentication(message: str) -> None:
    err = classify_connect_error(psycopg.OperationalError(message), config(), "shop")
    assert isinstance(err, AuthenticationError) and not is_transient(err)
    assert "backup@db.example.internal:5433" in str(err) and "'shop'" in str(err)
    assert SECRET not in str(err)


def test_classify_missing_database() -> None:
    message = (
        'connection failed: connection to server at "10.1.2.3", port 5433 failed: '
        'FATAL:  database "shop" does not exist'
    )
    err = classify_connect_error(psycopg.OperationalError(message), config(), "shop")
    assert isinstance(err, NotFoundError) and not is_transient(err)
    assert "'shop'" in str(err) and "db.example.internal:5433" in str(err)


@pytest.mark.parametrize("message", UNAVAILABLE_MESSAGES)
def test_classify_unavailable_is_transient(message: str) -> None:
    err = classify_connect_error(psycopg.OperationalError(message), config(), "shop")
    assert isinstance(err, ServerUnavailableError) and is_transient(err)
    assert "db.example.internal:5433" in str(err)
    assert message.strip().splitlines()[-1] in str(err)


def test_classify_ssl_refusal_is_a_config_error() -> None:
    err = classify_connect_error(
        Exception("server does not support SSL, but SSL was required"), config(sslmode="require"), "shop"
    )
    assert isinstance(err, ConfigError) and not is_transient(err)
    assert "sslmode" in str(err)


# -- manifest ids and parsing -------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BackupKind))
def test_backup_id_round_trip(kind: BackupKind) -> None:
    now = datetime(2026, 11, 26, 2, 0, 7, 123456, tzinfo=UTC)
    backup_id = new_backup_id(kind, now)
    assert backup_id == f"20261126T020007.123Z-{kind.suffix}"
    when, parsed_kind = parse_backup_id(backup_id)
    assert parsed_kind is kind
    assert when == now.replace(microsecond=123000)


def test_backup_ids_sort_by_time() -> None:
    a = new_backup_id(BackupKind.FULL, datetime(2026, 1, 2, 3, 4, 5, 1000, tzinfo=UTC))
    b = new_backup_id(BackupKind.INCREMENTAL, datetime(2026, 1, 2, 3, 4, 5, 2000, tzinfo=UTC))
    assert a < b


@pytest.mark.parametrize(
    "bad", ["", "latest", "20261126T020000Z-F", "20261126T020000.000Z-X", "2026-11-26T02:00:00.000Z-F"]
)
def test_parse_backup_id_rejects_garbage(bad: str) -> None:
    with pytest.raises(VaultflowError, match="is not a backup id"):
        parse_backup_id(bad)


def sample_manifest() -> Manifest:
    now = datetime(2026, 11, 26, 2, 0, 0, tzinfo=UTC)
    return Manifest(
        id=new_backup_id(BackupKind.FULL, now),
        engine="postgres",
        target="prod",
        kind=BackupKind.FULL,
        mode=BackupMode.LOGICAL,
        started_at=now,
        finished_at=now,
        consistency=PostgresLogicalConsistency(snapshots={"shop": "759:759:"}),
        objects=[
            StoredObject(
                key="db/shop.dump.zst",
                role="database-dump",
                database="shop",
                format="pg_dump-custom",
                raw_size=10,
                stored_size=7,
                sha256="ab" * 32,
            )
        ],
        fingerprints={"shop": {"public.t": Fingerprint(count=3, digest="-42", method="record")}},
    )


def physical_manifest(**consistency) -> Manifest:
    now = datetime(2026, 11, 26, 2, 0, 0, tzinfo=UTC)
    return Manifest(
        id=new_backup_id(BackupKind.FULL, now),
        engine="postgres",
        target="prod",
        kind=BackupKind.FULL,
        mode=BackupMode.PHYSICAL,
        started_at=now,
        finished_at=now,
        objects=[],
        consistency=PostgresPhysicalConsistency(
            start_lsn="0/2000028",
            stop_lsn="0/2000100",
            timeline=1,
            start_wal_file="000000010000000000000002",
            checkpoint_lsn="0/2000060",
            **consistency,
        ),
    )


def test_manifest_json_round_trip() -> None:
    manifest = sample_manifest()
    assert parse_manifest(manifest.to_json(), "k") == manifest
    assert json.loads(manifest.to_json())["schema_version"] == SCHEMA_VERSION


WHERE = "postgres/prod/backups/X/manifest.json"


def test_parse_manifest_broken_json_names_key() -> None:
    with pytest.raises(ManifestError, match=f"{WHERE}: not valid JSON"):
        parse_manifest(sample_manifest().to_json()[:-20], WHERE)
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse_manifest(b"\xff\xfe garbage", WHERE)
    with pytest.raises(ManifestError, match="expected a JSON object"):
        parse_manifest(b"[1, 2]", WHERE)


def test_parse_manifest_unknown_schema_version() -> None:
    doc = json.loads(sample_manifest().to_json())
    doc["schema_version"] = 99
    with pytest.raises(ManifestError) as info:
        parse_manifest(json.dumps(doc).encode(), WHERE)
    assert WHERE in str(info.value) and "99" in str(info.value) and "upgrade" in str(info.value)
    del doc["schema_version"]
    with pytest.raises(ManifestError, match="schema_version None"):
        parse_manifest(json.dumps(doc).encode(), WHERE)


def test_parse_manifest_rejects_extra_and_bad_fields() -> None:
    doc = json.loads(sample_manifest().to_json())
    with pytest.raises(ManifestError, match=f"(?s){WHERE}: invalid manifest.*surprise.*Extra inputs"):
        parse_manifest(json.dumps({**doc, "surprise": 1}).encode(), WHERE)
    doc["objects"][0]["extra"] = True
    with pytest.raises(ManifestError, match="invalid manifest"):
        parse_manifest(json.dumps(doc).encode(), WHERE)
    doc = json.loads(sample_manifest().to_json())
    doc["kind"] = "sideways"
    with pytest.raises(ManifestError, match="invalid manifest"):
        parse_manifest(json.dumps(doc).encode(), WHERE)
