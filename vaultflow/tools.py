"""Helpers for the external programs vaultflow runs: their versions, their log tails, and
waiting (bounded) until they are ready.

One definition each, used by the engines (pg_dump, pg_basebackup, redis-server, restored
clusters), the test and demo servers (vaultflow.testing) and the test fixtures:

- `tool_version(path, timeout)`: the first line `path --version` prints;
- `parse_version(text)`: (major, minor, ...) read from any version banner;
- `log_tail(path, lines, offset)`: the last lines of a server log for an error message;
- `wait_until(check, timeout=..., what=...)`: poll until `check()` returns a value, on
  tenacity's Retrying (fixed interval, a deadline), raising a caller-chosen error naming
  `what` when the deadline passes.

Processes' lifetimes (children tied to the run, temporary directories removed on death) are
vaultflow.proc's business, not this module's.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from tenacity import RetryError, Retrying, retry_if_exception_type, retry_if_result, stop_after_delay, wait_fixed

from vaultflow.errors import TransientError

T = TypeVar("T")

TOOL_VERSION_TIMEOUT = 30.0  # seconds; `--version` of a healthy binary answers in milliseconds
UNKNOWN = "unknown"

_VERSION = re.compile(r"(?<![\w.])(\d+)((?:\.\d+)*)")
_POSTGRES_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+(?:\.\d+)*)")


def tool_version(path: str | Path, timeout: float = TOOL_VERSION_TIMEOUT) -> str:
    """The first line `path --version` prints (stdout, else stderr), stripped; "unknown" when
    the program exits non-zero, prints nothing or does not answer within `timeout` seconds
    (redis-check-aof 7.0 takes `--version` for a file name and fails).

    Raises FileNotFoundError / PermissionError when `path` cannot be run at all."""
    try:
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return UNKNOWN
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if out.returncode == 0 and lines else UNKNOWN


def parse_version(text: str) -> tuple[int, ...]:
    """The version in a program's banner as integers: "pg_dump (PostgreSQL) 17.2 (Debian
    17.2-1.pgdg120+1)" -> (17, 2), "Redis server v=7.0.15 sha=..." -> (7, 0, 15),
    "PostgreSQL 18devel" -> (18,). A "(PostgreSQL) N" banner is read there first (Debian's
    suffix has numbers too); otherwise the first dotted number.

    Raises ValueError naming `text` when it holds no number."""
    match = _POSTGRES_VERSION.search(text) or _VERSION.search(text)
    if match is None:
        raise ValueError(f"no version number in {text!r}")
    return tuple(int(part) for part in match.group(0 if match.re is _VERSION else 1).split("."))


def log_tail(path: str | Path, lines: int = 20, offset: int = 0, missing: str = "(no log)") -> str:
    """The last `lines` lines of the text file `path` from byte `offset` on (a server's own part
    of a shared log), undecodable bytes replaced; `missing` when the file cannot be read."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return missing
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
    retry_on: tuple[type[BaseException], ...] = (),
    on_timeout: Callable[[str], BaseException] | None = None,
) -> T:
    """Call `check()` every `interval` seconds until it returns a truthy value, and return it.

    `check` may raise to give up at once (a server that exited); exceptions of the `retry_on`
    types count as "not yet". After `timeout` seconds the error is `on_timeout(message)`
    (default TransientError), where the message says "timed out after Ns waiting for <what>"
    and, if the last try raised, what it raised."""
    retrying = Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(interval),
        reraise=False,
        retry=retry_if_result(lambda value: not value) | retry_if_exception_type(retry_on),
    )
    try:
        return retrying(check)  # retried until truthy
    except RetryError as exc:
        message = f"timed out after {timeout:.0f}s waiting for {what}"
        last = exc.last_attempt
        if last.failed:
            error = last.exception()
            message += f" (last: {type(error).__name__}: {error})"
        raise (on_timeout or TransientError)(message) from None
