"""A small exception hierarchy whose messages say what to do next.

`TransientError` subclasses are worth retrying (network, timeouts); everything else is a
permanent failure that retrying cannot fix (wrong password, missing database, corrupt object).
"""


def clause(text: object) -> str:
    """`text` (an exception, a server's or tool's message) ready to be followed by '. Next
    sentence': surrounding blanks and trailing periods removed, so that a message that already
    ends with '.' (redis-py's "Connection refused.") does not read "refused.. Check"."""
    return str(text).strip().rstrip(".").rstrip()


class VaultflowError(Exception):
    """Base of every error vaultflow raises on purpose."""


class ConfigError(VaultflowError):
    """A setting is missing or invalid; the message names the setting."""


class InvalidBlockError(ConfigError):
    """A saved block's data fails its own validation (a field set through the API or the UI's
    block form to a value the block refuses); the message names the block and each field."""


class AuthenticationError(VaultflowError):
    """The server refused the credentials. Retrying will not help."""


class NotFoundError(VaultflowError):
    """A database, backup, object or bucket that was asked for does not exist."""


class IntegrityError(VaultflowError):
    """Stored bytes do not match the checksum recorded in the manifest."""


class RefusedError(VaultflowError):
    """vaultflow refuses an operation that would lose data (overwrite, empty retention...)."""


class ToolError(VaultflowError):
    """An external tool (pg_dump, pg_restore, ...) exited non-zero; carries its stderr tail."""


class TransientError(VaultflowError):
    """A failure that may go away on its own: unreachable host, timeout, connection reset."""


class StoreUnavailableError(TransientError):
    """A store could not be reached or written."""


class LockHeldError(TransientError):
    """Another run held a conflicting repository lock (or Prefect concurrency slot) of the target
    for longer than the repository's lock_wait: retryable, as that run ends or its lock goes
    stale. `holder` is the other lock's vaultflow.locks.LockRecord, None when not known."""

    def __init__(self, message: str, holder: object | None = None):
        super().__init__(message)
        self.holder = holder


class LockLostError(TransientError):
    """A held repository lock could not be refreshed in time, or another run removed it as stale:
    what it protected may have changed meanwhile. Retryable: the next run takes a fresh lock."""


def is_transient(exc: BaseException) -> bool:
    """True when retrying the failed operation has a chance of succeeding."""
    return isinstance(exc, TransientError)


class ServerUnavailableError(TransientError):
    """A database server could not be reached (refused, timed out, DNS)."""


class ChainBrokenError(VaultflowError):
    """An incremental chain cannot be continued or restored: a link is missing, or the server
    is no longer the one (or on the timeline, or AOF base) the parent was taken from. For a
    backup the remedy is a full backup; for a restore, another backup whose chain is intact."""


def note_cleanup_failure(error: BaseException, message: str, log=print) -> None:
    """A cleanup (lock release, partial payload, scratch database) failed while `error` is being
    raised: log `message` and attach it to `error` as a note. The caller re-raises `error`, so
    the user sees what went wrong first, never the cleanup's own error."""
    log(message)
    error.add_note(message)
