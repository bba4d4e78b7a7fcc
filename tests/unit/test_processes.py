"""The process-walking helpers skip processes that exit meanwhile, and only those."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from tests.fixtures.processes import descendants, is_gone, live, named, read


def test_exited_and_zombie_processes_read_as_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    handle = psutil.Process(proc.pid)
    deadline = time.monotonic() + 30  # hang guard only
    while handle.status() != psutil.STATUS_ZOMBIE:  # exited, not reaped yet
        assert time.monotonic() < deadline, "the child never exited"
        time.sleep(0.01)
    for _ in ("zombie", "reaped"):
        assert is_gone(handle) and read(handle, "cmdline", "uids") is None
        assert descendants(handle) == [] and list(live([handle], "name")) == []
        proc.wait()


def test_live_processes_are_read_and_named() -> None:
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as sleeper:
        try:
            me = psutil.Process()
            assert sleeper.pid in {p.pid for p in descendants(me)}
            info = read(psutil.Process(sleeper.pid), "cmdline")
            assert info is not None and info["cmdline"][-1] == "import time; time.sleep(30)"
            assert any(line.startswith(f"{sleeper.pid} ") for line in named(descendants(me), "python"))
        finally:
            sleeper.kill()
