"""How a `vaultflow` command runs a flow and how it fails.

Exit statuses: 0 done; 1 the operation failed (a flow run failed, the Prefect API or a
server did not answer, a saved block's data is invalid); 2 a usage error (an unknown option or block name, a bad option value,
a --repo-path directory that does not exist). Every error is one line on stderr,
`error: <what, and what to do>`, never a traceback; the run's full log, tracebacks included,
stays on the Prefect API (the run's page in the UI).

What used to make a typo in a block name take 20 s and print a 267-line traceback box: with no
PREFECT_API_URL, Prefect starts a temporary API server (5-10 s on a busy 2-core host), the CLI
then created a flow run before the run looked the name up, and Prefect's console log printed
the run's exception with its traceback, plus the temporary server's telemetry traceback. Now
the names are looked up (and the API asked once, with a 5 s timeout) before any flow run
starts, the console shows Prefect's warnings without tracebacks (`--verbose`: every log line),
and a flow runs once: the flow-level retries a deployment has are for unattended runs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import typer
from rich.console import Console
from typer._click.exceptions import ClickException  # typer vendors click
from typer._click.exceptions import UsageError as ClickUsageError
from typer.core import TyperGroup

from vaultflow.errors import ConfigError, InvalidBlockError, NotFoundError, VaultflowError

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CODES_HELP = (
    "Exit status: 0 done; 1 the operation failed (its reason is the one `error:` line on stderr); "
    "2 a usage error (unknown option or block name, bad value, missing --repo-path directory)."
)
API_TIMEOUT_S = 5.0
# Flow parameters that name blocks, looked up before a run starts.
TARGET_PARAMS = ("target",)
REPOSITORY_PARAMS = ("repository", "source", "destination")

# soft_wrap: a result, note or error line is one physical line whatever the width (a file, a
# pipe, a narrow COLUMNS): rich would otherwise fold it at 80 columns where stdout is no terminal.
out = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
SETTINGS = {"verbose": False}

TargetOpt = typer.Option(
    ...,
    "--target",
    "-t",
    help="Target block name: 'KIND-target/NAME' as `prefect block ls` "
    "shows it, or just NAME when one target kind alone has a block of that name. Or, for a one-off run, a "
    "connection URL without password: postgresql://USER@HOST:PORT/DB1,DB2, redis://HOST:PORT, "
    "mongodb://USER@HOST:PORT/DB, clickhouse://USER@HOST:PORT/DB; query parameters are the target's settings "
    "(?mode=physical, ?target_name=prod); the password from VAULTFLOW_PASSWORD, the engine's variable "
    "(PGPASSWORD, REDISCLI_AUTH, CLICKHOUSE_PASSWORD) or ~/.pgpass.",
)
RepoOpt = typer.Option(None, "--repository", "-r", help="BackupRepository block name.")
RepoPathOpt = typer.Option(None, "--repo-path", help="A local directory to use as repository instead of a block.")


class UsageError(VaultflowError):
    """The command line is wrong: an unknown block name, a missing directory. Exit status 2."""


def repository_param(name: str | None, path: str | None, must_exist: bool = True) -> Any:
    """The repository a flow gets: a block name, or for --repo-path a BackupRepository on that
    directory. Raises typer.BadParameter (exit 2) when neither or both are given (one would be
    ignored without a word), or when the directory does not exist and `must_exist` (commands
    that read backups; a backup creates it, 0700)."""
    import os

    if name and path:
        raise typer.BadParameter(
            f"give either --repository {name} or --repo-path {path}, not both: which one did you mean?",
            param_hint="--repository / --repo-path",
        )

    if path:
        if must_exist and not os.path.isdir(path):
            from pathlib import Path

            blocker = next((p for p in (path, *map(str, Path(path).parents)) if os.path.lexists(p)), None)
            if blocker is not None and not os.path.isdir(blocker):
                raise typer.BadParameter(
                    f"repository directory {path}: {blocker} is a file, not a directory; give the repository's "
                    "directory; nothing was read",
                    param_hint="--repo-path",
                )
            raise typer.BadParameter(
                f"repository directory {path} does not exist: check the path (an unmounted volume?); nothing was read",
                param_hint="--repo-path",
            )
        from vaultflow.blocks import BackupRepository

        return BackupRepository(local_path=path)
    if name:
        return name
    raise typer.BadParameter("give --repository NAME (a BackupRepository block) or --repo-path DIR")


MOMENT_FORMS = "ISO 8601, e.g. '2026-01-05 14:30:00+00', 2026-01-05T14:30:00Z or 2026-01-05T14:30:00+01:00"


def read_moment(text: str) -> datetime:
    """A date and time as a person types it: whatever Python 3.11's datetime.fromisoformat reads
    ('2026-01-05 14:30:00+00', '2026-01-05T14:30:00Z', '2026-01-05'); naive when no zone is
    given. Raises ValueError naming the accepted forms (MOMENT_FORMS)."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a date and time: give {MOMENT_FORMS}") from None


def moment_option(text: str | None, flag: str) -> datetime | None:
    """The value of a date-and-time CLI option `flag` (read_moment), None when not given; a text
    that is not one is typer.BadParameter (exit 2) naming the flag and the accepted forms."""
    if text is None:
        return None
    try:
        return read_moment(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=flag) from None


def one_line(text: str) -> str:
    """`text` on one line: its lines joined with '; ' (a tool's stderr tail, exception notes),
    runs of blanks and tabs as one space."""
    return "; ".join(" ".join(part.split()) for part in str(text).splitlines() if part.strip())


def print_error(message: str) -> None:
    """The one `error: ...` line on stderr (soft-wrapped: never cut or folded into two lines)."""
    err_console.print(f"error: {one_line(message)}", markup=False, highlight=False, soft_wrap=True)


class OneLineErrors(TyperGroup):
    """The `vaultflow` command group: whatever a command raises ends as one error line and exit
    status 1 or 2 (module docstring); typer.Exit codes pass through unchanged (wal-fetch's)."""

    def main(self, *args: Any, **extra: Any) -> Any:
        """click's main (args, prog_name, ...); returns the exit status unless standalone_mode
        (the default), where it exits with it."""
        standalone = extra.pop("standalone_mode", True)
        code = self._run(args, extra)
        if standalone:
            sys.exit(code)
        return code

    def _run(self, args: tuple[Any, ...], extra: dict[str, Any]) -> int:
        try:
            result = super().main(*args, **{**extra, "standalone_mode": False})
        except ClickUsageError as exc:
            where = f" (`{exc.ctx.command_path} --help` lists the options)" if exc.ctx else ""
            print_error(exc.format_message() + where)
            return EXIT_USAGE
        except (typer.Abort, KeyboardInterrupt):
            print_error("interrupted")
            return 130
        except UsageError as exc:
            print_error(str(exc))
            return EXIT_USAGE
        except VaultflowError as exc:
            print_error(str(exc))
            return EXIT_FAILED
        except ClickException as exc:
            print_error(exc.format_message())
            return exc.exit_code
        except Exception as exc:  # the last resort: still one line, naming what failed
            print_error(f"{type(exc).__name__}: {exc}")
            return EXIT_FAILED
        return result if isinstance(result, int) else 0


# Prefect's background services log "Still processing items: N items remaining..." while the
# process exits and they send what is queued (the events of the blocks a command loaded): after a
# command's one error line, a second line about Prefect's own housekeeping.
_EXIT_DRAIN_LOGGERS = {"EventsWorker", "APILogWorker"}


class _ConsoleFilter(logging.Filter):
    """On the terminal: Prefect's warnings only (every line with --verbose), never a traceback.
    The API handler is left alone: the run's log on the server keeps everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not SETTINGS["verbose"] and record.levelno != logging.WARNING:
            return False  # errors end the command with their one line; info is --verbose
        if (
            not SETTINGS["verbose"]
            and record.name in _EXIT_DRAIN_LOGGERS
            and record.getMessage().startswith("Still processing items")
        ):
            return False  # Prefect sending this command's last events at exit: --verbose shows it
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def _quiet_console() -> None:
    """Add _ConsoleFilter to every Prefect console handler (set up when prefect is imported)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(f, _ConsoleFilter) for f in handler.filters
            ):
                handler.addFilter(_ConsoleFilter())


def check_api() -> None:
    """Fail at once, naming the URL, when PREFECT_API_URL is set and its API does not answer
    within API_TIMEOUT_S (the client would otherwise retry for a minute, then print a traceback):
    VaultflowError with api_problem's line. With no PREFECT_API_URL, Prefect's temporary API
    server starts here for this command (VaultflowError with ephemeral_api_problem's line when
    it does not)."""
    problem = api_problem() or ephemeral_api_problem()
    if problem:
        raise VaultflowError(problem)


def ephemeral_api_problem() -> str | None:
    """None when PREFECT_API_URL is set, or when Prefect's temporary API (the one its client would
    start on first use) starts under vaultflow.demo.ephemeral_api_settings; else one line saying
    what to do. Prefect's own failure was "RuntimeError: Timed out while attempting to connect to
    ephemeral Prefect API server", or a ValueError when PREFECT_SERVER_EPHEMERAL_ENABLED is off."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    )

    from vaultflow.demo import ephemeral_api_settings

    if PREFECT_API_URL.value():
        return None
    start = "start a Prefect server (`prefect server start`) and point PREFECT_API_URL at it (`prefect config set`)"
    if not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return f"PREFECT_API_URL is not set and PREFECT_SERVER_EPHEMERAL_ENABLED is off: {start}"
    from prefect.server.api.server import SubprocessASGIServer

    with ephemeral_api_settings():
        timeout = PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
        try:
            SubprocessASGIServer().start()  # the client's own temporary server: it reuses this one
        except RuntimeError:
            return (
                f"Prefect's temporary API (started because PREFECT_API_URL is not set) did not answer within "
                f"{timeout} s: {start}, or allow it longer with PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
            )
    return None


def api_problem() -> str | None:
    """None when PREFECT_API_URL is unset or its API answers /health within API_TIMEOUT_S; else
    one line naming the URL and what to do ('the Prefect API at <url> does not answer ...')."""
    import httpx
    from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        return None
    headers = {"Authorization": f"Bearer {key}"} if (key := PREFECT_API_KEY.value()) else {}
    try:
        response = httpx.get(url.rstrip("/") + "/health", headers=headers, timeout=API_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return (
            f"the Prefect API at {url} does not answer ({type(exc).__name__}: {exc or 'no reply'}): start it "
            "(`prefect server start`) or point PREFECT_API_URL at a running one (`prefect config view` shows it)"
        )
    if response.status_code >= 400:
        return (
            f"the Prefect API at {url} answered HTTP {response.status_code} to /health: check PREFECT_API_URL "
            "and PREFECT_API_KEY (`prefect config view`)"
        )
    return None


def url_target(url: str) -> Any:
    """A one-off target block (not saved) from a connection URL: postgresql://, redis://,
    mongodb://, clickhouse:// (each target kind's settings say which schemes are theirs, and how
    a URL reads: TargetSettings.url_fields). The password comes from VAULTFLOW_PASSWORD, else
    the engine's own variable (PGPASSWORD, REDISCLI_AUTH, CLICKHOUSE_PASSWORD), else the
    engine's usual password file (PostgreSQL: PGPASSFILE or ~/.pgpass); never from the URL,
    which argv shows to every user of the host. Those variables are removed from this process's
    environment, so no tool the run starts inherits them. The target's name in the repository is
    `<host>-<port>` unless the URL sets ?target_name=. Raises UsageError (exit 2) for an unknown
    scheme, a password in the URL or a setting the kind does not have."""
    import os

    from pydantic import SecretStr, ValidationError

    from vaultflow.blocks.registry import target_types

    scheme = url.split("://", 1)[0].lower()
    kinds: dict[str, Any] = {name: cls for cls in target_types().values() for name in getattr(cls, "url_schemes", ())}
    if scheme not in kinds:
        raise UsageError(
            f"{scheme}:// is no target URL vaultflow knows ({', '.join(f'{s}://' for s in sorted(kinds))}); "
            "or give a target block's name"
        )
    kind = kinds[scheme]
    try:
        fields = kind.url_fields(url)
        given = [os.environ.pop(name) for name in ("VAULTFLOW_PASSWORD", *kind.password_env) if name in os.environ]
        # popped: the tools this run starts get the password through the engine's own channel
        # (a memfd passfile, stdin), never by inheriting this process's environment
        password = next((value for value in given if value), None) or kind.passfile_password(fields)
        target = kind(**fields, **({"password": SecretStr(password)} if password else {}))
        target._from_url = True  # its errors say where a URL target's login comes from (login_hint)
        return target
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    except ValidationError as exc:
        raise UsageError(
            f"{scheme}:// URL: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        ) from None
    except ValueError as exc:  # urllib's own parse errors: "Port out of range 0-65535", a bad IPv6 address
        raise UsageError(f"{scheme}:// URL {url!r}: {exc}; fix the URL") from None


def check_blocks(params: dict[str, Any], target_in: str | None = None) -> None:
    """Look up every block a flow's parameters name before its run starts: an unknown or
    ambiguous name is a UsageError naming the block type and name and how to list them; a saved
    block whose data fails validation is InvalidBlockError (exit 1: the command line is right,
    the block is not), naming the block and the field. `target_in` names the parameter holding
    the repository of a repository-wide command (verify, prune, upload), whose target may also be
    given as `vaultflow list` prints it, engine/name, with no block (repository_targets)."""
    from vaultflow.flows._support import engine_form, load_block, load_target, repository_targets

    loaded: dict[str, Any] = {}  # parameter -> its repository block, loaded once

    def repository(param: str) -> Any:
        ref = params[param]
        if param not in loaded:
            loaded[param] = load_block(ref, "backup-repository") if isinstance(ref, str) else ref
        return loaded[param]

    try:
        for name in TARGET_PARAMS:
            ref = params.get(name)
            if isinstance(ref, str) and target_in is not None and engine_form(ref) is not None:
                repository_targets(repository(target_in).build(), ref)
            elif isinstance(ref, str):
                load_target(ref)
        for name in REPOSITORY_PARAMS:
            if isinstance(params.get(name), str):
                repository(name)
    except InvalidBlockError:
        raise
    except (NotFoundError, ConfigError) as exc:
        raise UsageError(str(exc)) from None


@contextmanager
def prefect_session() -> Iterator[None]:
    """Around every command that talks to Prefect: a quiet console, the temporary API (when no
    PREFECT_API_URL is set) with vaultflow.demo's settings, the API checked."""
    from vaultflow.demo import ephemeral_api_settings

    with ephemeral_api_settings():
        _quiet_console()
        check_api()
        yield


def run_flow(
    flow: Any,
    *,
    before_run: Callable[[dict[str, Any]], None] | None = None,
    target_in: str | None = None,
    **params: Any,
) -> Any:
    """Run `flow` (a flow, or its 'module:name', 'vaultflow.flows.verify:verify', imported here after the
    command's own checks) in-process once (no flow-level retries), after checking the API and the blocks `params`
    name (check_blocks, with `target_in`), and calling `before_run(params)` (a command's own check that needs the blocks: it raises
    UsageError); returns the run's result. Raises UsageError for an unknown block and VaultflowError
    carrying the failed run's state message (Prefect's own prefix removed)."""
    import importlib

    from vaultflow.flows._support import TERMINAL_PROGRESS

    if isinstance(flow, str):
        module, name = flow.split(":")
        flow = getattr(importlib.import_module(module), name)
    TERMINAL_PROGRESS["enabled"] = True
    for name in TARGET_PARAMS:
        if isinstance(params.get(name), str) and "://" in params[name]:
            params[name] = url_target(params[name])
    with prefect_session():
        check_blocks(params, target_in)
        if before_run is not None:
            before_run(params)
        state = flow.with_options(retries=0)(**params, return_state=True)
    if state.is_completed():
        return state.result()
    raise VaultflowError(state_line(state))


def state_line(state: Any) -> str:
    """A failed run's state message as the error line: Prefect's 'Flow run encountered an
    exception:' prefix dropped, and the exception's type name when it is vaultflow's own
    (whose messages are written for people)."""
    message = (state.message or f"the flow run ended {state.name}").removeprefix("Flow run encountered an exception:")
    message = message.strip()
    exc = state.result(raise_on_failure=False) if state.is_failed() else None
    if isinstance(exc, VaultflowError):
        message = message.removeprefix(f"{type(exc).__name__}:").strip()
    return message
