"""libpq's password file (PGPASSFILE, else ~/.pgpass), read as libpq reads it, for one-off
targets given as a connection URL (`vaultflow backup -t postgresql://user@host/db`)."""

from __future__ import annotations

import os
from pathlib import Path

from vaultflow.errors import ConfigError


def pgpass_fields(line: str) -> list[str]:
    """A passfile line's fields as libpq reads them: split at the first four unescaped colons,
    a backslash escaping the next character ('\\:' a colon, '\\\\' a backslash)."""
    fields: list[str] = []
    current: list[str] = []
    chars = iter(line)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == ":" and len(fields) < 4:
            fields.append("".join(current))
            current = []
        else:
            current.append(char)
    fields.append("".join(current))
    return fields


def passfile_password(host: str, port: int, database: str, user: str) -> str | None:
    """The password of the first `host:port:database:user:password` line of the passfile that
    matches (`*` matches anything), or None when there is no file or no line matches. Raises
    ConfigError when the file is readable by group or others (libpq ignores such a file;
    vaultflow says so)."""
    path = Path(os.environ.get("PGPASSFILE") or Path.home() / ".pgpass")
    if not path.is_file():
        return None
    if path.stat().st_mode & 0o077:
        raise ConfigError(f"{path} is readable by group or others: chmod 0600 {path} (libpq ignores it too)")
    wanted = [host, str(port), database, user]
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = pgpass_fields(line)
        if len(parts) == 5 and all(have in ("*", want) for have, want in zip(parts[:4], wanted, strict=True)):
            return parts[4]
    return None
