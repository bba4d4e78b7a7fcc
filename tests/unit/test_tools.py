"""vaultflow.tools: tool versions, version parsing, log tails, bounded waits."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from vaultflow.errors import ToolError, TransientError
from vaultflow.tools import UNKNOWN, log_tail, parse_version, tool_version, wait_until


@pytest.mark.parametrize(
    "banner, expected",
    [
        ("pg_dump (PostgreSQL) 17.2 (Debian 17.2-1.pgdg120+1)", (17, 2)),
        ("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)", (15, 20)),
        ("pg_combinebackup (PostgreSQL) 18devel", (18,)),
        ("Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1", (7, 0, 15)),
        ("redis-cli 7.0.15", (7, 0, 15)),
    ],
)
def test_parse_version_reads_the_banner(banner, expected):
    assert parse_version(banner) == expected


def test_parse_version_without_a_number_names_the_text():
    with pytest.raises(ValueError, match="no version number in 'no digits here'"):
        parse_version("no digits here")


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "tool"
    path.write_text(f"#!{sys.executable}\n{body}\n")
    path.chmod(0o755)
    return path


def test_tool_version_first_line_or_unknown(tmp_path):
    assert tool_version(_script(tmp_path, "print('tool (X) 1.2.3'); print('second line')")) == "tool (X) 1.2.3"
    assert tool_version(_script(tmp_path, "import sys; print('usage', file=sys.stderr); sys.exit(1)")) == UNKNOWN
    # It would answer after an hour: UNKNOWN means it was given up on at the timeout.
    slow = _script(tmp_path, "import time; time.sleep(3600); print('tool 9.9')")
    assert tool_version(slow, timeout=0.5) == UNKNOWN
    with pytest.raises(FileNotFoundError):
        tool_version(tmp_path / "missing")


def test_log_tail_lines_offset_and_missing_file(tmp_path):
    log = tmp_path / "server.log"
    log.write_bytes(b"one\ntwo\nthree\n\xff four\n")
    assert log_tail(log, 2) == "three\n\ufffd four"
    assert log_tail(log, 10, offset=len(b"one\ntwo\n")) == "three\n\ufffd four"
    assert log_tail(tmp_path / "none.log") == "(no log)"
    assert log_tail(tmp_path / "none.log", missing="(no server log)") == "(no server log)"


def test_wait_until_returns_the_first_truthy_value():
    calls = iter([None, 0, "", "ready", "later"])
    assert wait_until(lambda: next(calls), timeout=5, interval=0.01, what="x") == "ready"


def test_wait_until_times_out_with_the_callers_error():
    t0 = time.monotonic()
    with pytest.raises(TransientError, match=r"timed out after 0s waiting for the thing"):
        wait_until(lambda: False, timeout=0.3, interval=0.05, what="the thing")
    assert time.monotonic() - t0 > 0.25  # it waited its timeout (one without: the suite's timeout)
    with pytest.raises(ToolError, match="timed out after 0s waiting for it: see the log"):
        wait_until(
            lambda: None,
            timeout=0.1,
            interval=0.02,
            what="it",
            on_timeout=lambda message: ToolError(f"{message}: see the log"),
        )


def test_wait_until_retries_only_the_named_exceptions():
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("not yet")
        return 42

    assert wait_until(flaky, timeout=5, interval=0.01, what="x", retry_on=(ConnectionError,)) == 42
    with pytest.raises(ZeroDivisionError):  # anything else gives up at once
        wait_until(lambda: 1 / 0, timeout=5, interval=0.01, what="x", retry_on=(ConnectionError,))

    def refused():
        raise ConnectionRefusedError("port closed")

    with pytest.raises(TransientError, match=r"waiting for x \(last: ConnectionRefusedError: port closed\)"):
        wait_until(refused, timeout=0.2, interval=0.02, what="x", retry_on=(ConnectionError,))
