"""Reaching ClickHouse through clickhouse-connect: a server over HTTP(S), or the embedded chDB engine
in this process (interface='chdb'); ClickHouse's errors turned into vaultflow's, each naming what
to fix.

chDB runs one data path per process ("EmbeddedServer already initialized" for a second one): every
target of interface='chdb' that one worker process backs up must share a chdb_path (and its
configuration file), see docs/clickhouse.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from vaultflow.engines.clickhouse.settings import ClickHouseSettings
from vaultflow.errors import (
    AuthenticationError,
    ConfigError,
    NotFoundError,
    ServerUnavailableError,
    ToolError,
    TransientError,
    VaultflowError,
)

# ClickHouse error codes (src/Common/ErrorCodes.cpp) that get a message of their own.
UNKNOWN_DATABASE = 81
UNKNOWN_USER = 192
INVALID_CONFIG_PARAMETER = 318  # a disk or path not allowed for backups (chDB 26.9 says 36 BAD_ARGUMENTS:
# "Disk 'x' is not allowed for backups, see the 'backups.allowed_disk' configuration parameter")
UNKNOWN_DISK = 479
AUTHENTICATION_FAILED = 516
BACKUP_NOT_FOUND = 599  # a backup (an incremental's base) without its .backup on the disk
BACKUP_ENTRY_NOT_FOUND = 605  # RESTORE TABLE of a table the backup does not hold
DATABASE_ALREADY_EXISTS = 82


def quote_name(name: str) -> str:
    """`name` as a ClickHouse identifier in backquotes (backquotes and backslashes escaped)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_text(text: str) -> str:
    """`text` as a ClickHouse string literal in single quotes."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def chdb_config_xml(disks: dict[str, str], allowed: list[str]) -> str:
    """A ClickHouse configuration declaring local `disks` (name -> directory) and allowing BACKUP to
    write to the `allowed` ones (backups.allowed_disk)."""
    parts = ["<clickhouse>", "<storage_configuration><disks>"]
    for name, path in disks.items():
        directory = str(path).rstrip("/") + "/"
        parts.append(f"<{name}><type>local</type><path>{escape(directory)}</path></{name}>")
    parts.append("</disks></storage_configuration><backups>")
    parts += [f"<allowed_disk>{escape(name)}</allowed_disk>" for name in allowed]
    parts.append("</backups></clickhouse>\n")
    return "".join(parts)


def chdb_config_file(config: ClickHouseSettings) -> str:
    """The configuration file the embedded engine starts with: the target's chdb_config_file, else
    `<chdb_path>.vaultflow.xml`, written (again) to declare backup_disk at backup_dir, allowed."""
    if config.chdb_config_file:
        return config.chdb_config_file
    path = Path(f"{str(config.chdb_path).rstrip('/')}.vaultflow.xml")
    xml = chdb_config_xml({config.backup_disk: str(config.staging_root())}, [config.backup_disk])
    if not path.exists() or path.read_text() != xml:
        path.write_text(xml)
    return str(path)


def open_client(config: ClickHouseSettings) -> Any:
    """A clickhouse-connect client of the target (close it after use). ServerUnavailableError when
    the server cannot be reached (retryable), AuthenticationError for a refused login, ConfigError
    for an embedded engine that cannot open its path, TransientError when another process has the
    embedded engine's data directory open (chdb_holder)."""
    import clickhouse_connect

    try:
        if config.interface == "chdb":
            if not config.chdb_path:
                raise ConfigError(f"{config.name}: interface='chdb' needs chdb_path, the engine's data directory")
            return clickhouse_connect.get_client(
                interface="chdb", path=config.chdb_path, chdb_options={"config-file": chdb_config_file(config)}
            )
        return clickhouse_connect.get_client(
            interface=config.interface,
            host=config.host,
            port=config.effective_port,
            username=config.username,
            password=config.password.get_secret_value() if config.password else "",
            connect_timeout=config.connect_timeout,
        )
    except VaultflowError:
        raise
    except Exception as exc:
        holder = chdb_holder(config.chdb_path) if config.interface == "chdb" and config.chdb_path else None
        if holder is not None:
            raise TransientError(
                f"{config.name} ({config.where}): another process ({holder}) has chDB's data directory open; "
                "chDB locks its data directory for one process at a time, so runs on one interface='chdb' "
                "target cannot overlap (docs/clickhouse.md). A later attempt can succeed once it ends"
            ) from exc
        raise translate(exc, config) from exc


def chdb_holder(path: str) -> str | None:
    """Who holds chDB's lock on the data directory `path` (the flock on `<path>/status` that every
    process with the engine open holds, as clickhouse-server does): 'PID n' as the status file
    says, or 'PID unknown'; None when no process holds it (or there is no status file)."""
    import fcntl

    status = Path(path) / "status"
    try:
        with open(status, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                found = re.search(rb"PID: (\d+)", handle.read(200))
                return f"PID {found.group(1).decode()}" if found else "PID unknown"
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None
    except OSError:
        return None


@contextmanager
def connected(config: ClickHouseSettings) -> Iterator[Any]:
    """open_client, closed at the end of the block."""
    client = open_client(config)
    try:
        yield client
    finally:
        client.close()


def error_code(exc: BaseException) -> int | None:
    """ClickHouse's error code of `exc` (clickhouse-connect's `code`, else 'Code: N' in its text)."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    found = re.search(r"Code: (\d+)", str(exc))
    return int(found.group(1)) if found else None


def translate(exc: BaseException, config: ClickHouseSettings, database: str | None = None) -> VaultflowError:
    """A clickhouse-connect (or chDB) error as a VaultflowError whose message names the target and
    what to do. The password never appears: clickhouse-connect does not put it in messages."""
    code = error_code(exc)
    text = _first_line(exc)
    where = f"{config.name} ({config.where})"
    if code == INVALID_CONFIG_PARAMETER or "allowed_disk" in text or "allowed_path" in text:
        return ConfigError(
            f"{where}: ClickHouse does not allow BACKUP/RESTORE to the disk {config.backup_disk!r}: add "
            f"<backups><allowed_disk>{config.backup_disk}</allowed_disk></backups> to the server's "
            f"configuration (e.g. config.d/backup_disk.xml, docs/clickhouse.md), and declare that disk under "
            f"<storage_configuration><disks> if the server does not have it yet; ClickHouse said: {text}"
        )
    if code == UNKNOWN_DISK:
        return ConfigError(
            f"{where}: the server has no disk {config.backup_disk!r}: declare it under "
            f"<storage_configuration><disks> (type local, path = the directory backup_dir mounts) or fix "
            f"the target's backup_disk; ClickHouse said: {text}"
        )
    if code == UNKNOWN_DATABASE:
        name = f"database {database!r}" if database else "a database"
        return NotFoundError(f"{where}: {name} does not exist; fix the target's databases; ClickHouse said: {text}")
    if code in (AUTHENTICATION_FAILED, UNKNOWN_USER):
        return AuthenticationError(f"{where}: login as {config.username!r} was refused; {config.login_hint()}")
    if code == BACKUP_NOT_FOUND:
        return ToolError(f"{where}: a base backup is missing or incomplete (error 599); ClickHouse said: {text}")
    if code is None and _is_connection_error(exc):
        return ServerUnavailableError(f"{where}: cannot reach ClickHouse ({text}); a later attempt can succeed")
    return ToolError(f"{where}: ClickHouse failed{f' (error {code})' if code else ''}: {text}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_connection_error(exc: BaseException) -> bool:
    from clickhouse_connect.driver.exceptions import OperationalError

    return isinstance(exc, OperationalError | ConnectionError | TimeoutError)


def run(client: Any, sql: str, config: ClickHouseSettings, database: str | None = None) -> Any:
    """client.command(sql), its errors translated (see translate); `database` names the database
    the statement is about in messages."""
    try:
        return client.command(sql)
    except Exception as exc:
        raise translate(exc, config, database) from exc


def rows(client: Any, sql: str, config: ClickHouseSettings, database: str | None = None) -> list[tuple]:
    """The rows of a query, its errors translated (see translate)."""
    try:
        return [tuple(row) for row in client.query(sql).result_rows]
    except Exception as exc:
        raise translate(exc, config, database) from exc


def server_version(client: Any, config: ClickHouseSettings) -> str:
    return str(rows(client, "SELECT version()", config)[0][0])


def user_databases(client: Any, config: ClickHouseSettings) -> list[str]:
    """The target's databases: `databases` (each checked to exist: NotFoundError naming the first that
    does not), else every database but the system ones, sorted."""
    from vaultflow.engines.clickhouse.settings import SYSTEM_DATABASES

    present = {r[0] for r in rows(client, "SELECT name FROM system.databases", config)}
    if config.databases:
        for name in config.databases:
            if name not in present:
                raise NotFoundError(
                    f"{config.name} ({config.where}): database {name!r} does not exist (the server has "
                    f"{', '.join(sorted(present - set(SYSTEM_DATABASES))) or 'no user databases'}); fix the "
                    "target's databases"
                )
        return list(config.databases)
    return sorted(present - set(SYSTEM_DATABASES))
