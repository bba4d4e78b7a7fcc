"""Children started with vaultflow.proc.tied_popen die (SIGKILL) when the process that started
them is killed: a tool through setpriv, a lasting server the exact way (prctl in preexec_fn), and
a tool on a machine without setpriv the exact way too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vaultflow.proc import pdeathsig_wrapper

ROOT = Path(__file__).resolve().parents[2]
STARTER = """
import sys, time
from vaultflow.proc import tied_popen
child = tied_popen(["/bin/sleep", "60"], lasting=sys.argv[1] == "lasting")
print(child.pid, " ".join(child.args), flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def program(pid: int) -> str | None:
    """argv[0] of `pid`; None once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[0].decode()
    except FileNotFoundError:
        return None


def start_and_kill_the_starter(how: str, path: str) -> str:
    """Start a Python that ties a `sleep` to itself, SIGKILL that Python; the argv Popen was
    given. Fails when the sleep outlives its starter by 10 s."""
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(ROOT)}
    starter = subprocess.Popen([sys.executable, "-c", STARTER, how], stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = starter.stdout.readline().split(" ", 1)  # type: ignore[union-attr]
        pid, argv = int(line[0]), line[1].strip()
        deadline = time.monotonic() + 10  # setpriv execs the tool a moment after Popen returns
        while alive(pid) and program(pid) != "/bin/sleep" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert program(pid) == "/bin/sleep", f"the tied process {pid} never became the tool: {program(pid)!r}"
    finally:
        starter.send_signal(signal.SIGKILL)
        starter.wait()
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
        pytest.fail(f"{argv} (pid {pid}) outlived the process that started it")
    return argv


def test_a_tool_goes_through_setpriv_and_dies_with_its_starter():
    wrapper = pdeathsig_wrapper()
    assert wrapper is not None, "this machine's util-linux has no setpriv --pdeathsig (2.33+): the fast way is untested"
    argv = start_and_kill_the_starter("tool", os.environ["PATH"])
    assert argv == " ".join([*wrapper, "/bin/sleep", "60"])


def test_a_lasting_child_is_tied_the_exact_way_and_dies_with_its_starter():
    argv = start_and_kill_the_starter("lasting", os.environ["PATH"])
    assert argv == "/bin/sleep 60"


def test_without_setpriv_a_tool_is_tied_the_exact_way_and_dies_with_its_starter():
    argv = start_and_kill_the_starter("tool", "/nonexistent")
    assert argv == "/bin/sleep 60"
