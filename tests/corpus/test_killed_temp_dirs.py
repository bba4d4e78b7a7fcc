"""Temporary directories die with the run that made them (issue 8, section 9).

Nothing in a SIGKILLed process can clean up after itself, so vaultflow registers each temporary
path it creates with one watcher process (vaultflow.proc.remove_on_death) that removes them when
the registering process is gone. Here: the mechanism itself, in a process killed with SIGKILL
and in one that exits normally; then a physical drill on PostgreSQL 18 killed while its scratch
cluster runs and a Redis drill killed while its scratch server has loaded the backup: neither
leaves its `vfdrill-*` data directory, its `vfpg-*` socket directory (in /tmp or the temporary directory) or its
`vaultflow-redis-*` directory, and no watcher stays behind.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests.corpus.test_killed_runs import backup, check_nothing_left, pg_case, redis_case, run_child
from tests.fixtures.postgres import MakeDb, traversable_tmp_dir
from tests.fixtures.processes import descendants, listening, live, read
from tests.fixtures.scratch import in_temp_roots, temp_roots
from vaultflow.proc import WATCHER_ARG
from vaultflow.stores import LocalStore

PROJECT = Path(__file__).resolve().parents[2]
GUARD_S = 20.0  # hang guard for what the watcher does after a death; never an assertion about speed

# Registers the paths named on stdin (one per line, as repr), forgets those prefixed with "-",
# prints "ready", then waits for a line: "exit" ends it normally (atexit and all).
REGISTERING = r"""
import ast, sys
from vaultflow.proc import forget, remove_on_death
for line in iter(sys.stdin.readline, "END\n"):
    path = ast.literal_eval(line)
    if path.startswith("-"):
        forget(path[1:])
    else:
        remove_on_death(path)
print("ready", flush=True)
sys.stdin.readline()
"""


def watchers(pid: int) -> list[psutil.Process]:
    """Live watcher processes started by process `pid` (their argv names it)."""
    found = []
    for proc in psutil.process_iter():
        info = read(proc, "cmdline")
        if info is not None and info["cmdline"][-2:] == [WATCHER_ARG, str(pid)]:
            found.append(proc)
    return found


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, f"still not true after {GUARD_S:.0f}s: {what}"
        time.sleep(0.05)


def registering_process(paths: list[str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", REGISTERING], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=PROJECT, text=True
    )
    proc.stdin.write("".join(repr(p) + "\n" for p in paths) + "END\n")
    proc.stdin.flush()
    ready, _, _ = select.select([proc.stdout], [], [], GUARD_S)
    line = proc.stdout.readline() if ready else ""
    assert line == "ready\n", f"the registering process did not start: {line!r}"
    return proc


@pytest.fixture
def scratch() -> Path:
    path = Path(tempfile.mkdtemp(prefix="vfdeath-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def make_tree(path: Path) -> Path:
    (path / "sub" / "deeper").mkdir(parents=True)
    (path / "sub" / "deeper" / "file").write_bytes(b"x" * 100)
    os.chmod(path / "sub" / "deeper", 0o500)  # a read-only directory inside does not stop the removal
    return path


@pytest.mark.parametrize("death", ["sigkill", "normal-exit"])
def test_remove_on_death(scratch: Path, death: str) -> None:
    doomed = make_tree(scratch / "doomed\nwith a newline")  # the protocol carries any name
    doomed_file = scratch / "doomed-file"
    doomed_file.write_text("secret")
    recreated = scratch / "recreated"
    recreated.mkdir()
    forgotten = make_tree(scratch / "forgotten")
    never = make_tree(scratch / "never-registered")
    removed_by_run = scratch / "removed-by-the-run"
    removed_by_run.mkdir()
    proc = registering_process(
        [str(doomed), str(doomed_file), str(recreated), str(forgotten), str(removed_by_run), "-" + str(forgotten)]
    )
    try:
        found = watchers(proc.pid)
        assert len(found) == 1, f"one watcher per process, lazily started: {found}"
        watcher = found[0]
        assert watcher.ppid() == proc.pid and watcher.uids().real == os.getuid()
        assert os.getsid(watcher.pid) != os.getsid(proc.pid), "the watcher must not share the run's session"
        # Files of ours: under this test's scratch or the temporary roots. Not the libraries
        # Python and the dynamic loader open while it starts (its own, and libz: seen).
        held = [
            f.path
            for f in watcher.open_files()
            if any(Path(f.path).is_relative_to(r) for r in [scratch, *temp_roots()])
        ]
        assert held == [], "the watcher holds no file of ours"
        # Someone else makes a new directory at a registered path (the old one moved away: a new inode).
        recreated.rename(scratch / "recreated-old")
        recreated.mkdir()
        (recreated / "theirs").write_text("keep")
        shutil.rmtree(removed_by_run)
        assert doomed.exists() and doomed_file.exists(), "removed before the registering process ended"
        if death == "sigkill":
            os.kill(proc.pid, signal.SIGKILL)
        else:
            proc.stdin.write("exit\n")
            proc.stdin.flush()
        proc.wait(timeout=GUARD_S)
        assert proc.returncode == (-signal.SIGKILL if death == "sigkill" else 0)
        wait_until(lambda: not doomed.exists() and not doomed_file.exists(), "the registered paths are removed")
        _, alive = psutil.wait_procs([watcher], timeout=GUARD_S)
        assert alive == [], "the watcher stayed behind"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (recreated / "theirs").read_text() == "keep", "a path recreated by someone else was removed"
    assert (scratch / "recreated-old").is_dir()  # moved away: no longer at the registered path
    assert (forgotten / "sub" / "deeper" / "file").exists(), "a forgotten path was removed"
    assert (never / "sub" / "deeper" / "file").exists(), "an unregistered path was touched"
    assert not removed_by_run.exists()
    assert sorted(p.name for p in scratch.iterdir()) == ["forgotten", "never-registered", "recreated", "recreated-old"]


def test_a_killed_watcher_is_replaced(scratch: Path) -> None:
    """If someone kills the watcher, the next registration starts a new one that knows every path."""
    first, second = make_tree(scratch / "first"), make_tree(scratch / "second")
    script = (
        "import os, signal, sys\n"
        "from vaultflow import proc\n"
        f"proc.remove_on_death({str(first)!r})\n"
        "os.kill(proc._watcher.pid, signal.SIGKILL); proc._watcher.wait()\n"
        f"proc.remove_on_death({str(second)!r})\n"
        "print(proc._watcher.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, capture_output=True, text=True, timeout=GUARD_S)
    assert out.returncode == -signal.SIGKILL, out.stderr
    wait_until(lambda: not first.exists() and not second.exists(), "both paths removed by the new watcher")
    wait_until(
        lambda: (
            not psutil.pid_exists(int(out.stdout)) or psutil.Process(int(out.stdout)).status() == psutil.STATUS_ZOMBIE
        ),
        "the new watcher exits",
    )


def test_temporary_directory_registers_then_forgets() -> None:
    """What a run removes itself is also taken back from the watcher (its list does not grow)."""
    from vaultflow import proc

    with proc.temporary_directory("vfdeath-ctx-") as path:
        key = os.fsencode(path)
        assert path.is_dir() and key in proc._registered
        make_tree(path / "inside")
    assert not path.exists() and key not in proc._registered
    assert proc._watcher is not None and proc._watcher.poll() is None  # one watcher, kept for the next


# -- killed drills ------------------------------------------------------------------------------


def own_leftovers(tmp: Path, before: set[str]) -> list[str]:
    """Temporary directories of ours in the run's TMPDIR and in /tmp that were not there before."""
    names = [str(p) for p in tmp.iterdir()]
    names += [name for name in snapshot_tmp() if name not in before]
    return sorted(names)


def snapshot_tmp() -> set[str]:
    """Our temporary directories in /tmp and in this run's temporary directory (the suite's
    scratch root on tmpfs, tests/conftest.py)."""
    return {str(p) for pattern in ("vfpg-*", "vaultflow-redis-*", "vfdrill-*") for p in in_temp_roots(pattern)}


def kill_drill(case, tmp: Path, loaded) -> None:
    """Run a drill in a child, SIGKILL it once `loaded(child)`, then check nothing of it is left."""
    case.job["action"] = "drill"
    marker = secrets.token_hex(8)
    before = snapshot_tmp()
    seen: dict[str, list[str]] = {}

    def moment(child: subprocess.Popen) -> bool:
        if not loaded(child):
            return False
        seen["dirs"] = sorted(str(p) for p in tmp.iterdir()) + sorted(snapshot_tmp() - before)
        seen["watchers"] = [str(w.pid) for w in watchers(child.pid)]
        return True

    run = run_child(case, tmp, marker, kill_when=moment)
    assert run.killed
    assert seen["dirs"], "the drill had made no temporary directory when it was killed"
    assert len(seen["watchers"]) == 1, f"one watcher for the drill's process: {seen['watchers']}"
    watcher = int(seen["watchers"][0])
    wait_until(
        lambda: own_leftovers(tmp, before) == [],
        f"the killed drill's directories are removed: {own_leftovers(tmp, before)} (had {seen['dirs']})",
    )
    wait_until(
        lambda: not psutil.pid_exists(watcher) or psutil.Process(watcher).status() == psutil.STATUS_ZOMBIE,
        "the watcher exits",
    )
    check_nothing_left(case, run, tmp, marker)  # processes, ports, temp files (the colleague's whole check)


@pytest.mark.serial  # looks for temporary directories in /tmp: none from other tests may appear
def test_killed_physical_drill_leaves_no_directories(pg_with_password, fresh_db: MakeDb, tmp_path: Path) -> None:
    server = pg_with_password
    db = fresh_db(server)
    server.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g", db)
    case = pg_case("drill-dirs", server, db, LocalStore(tmp_path / "repo"), "physical")
    backup(case)

    def cluster_up(child: subprocess.Popen) -> bool:
        return any(
            info["name"] == "postgres" and listening([proc]) for proc, info in live(descendants(child.pid), "name")
        )

    with traversable_tmp_dir("vfkilled-") as tmp:
        kill_drill(case, tmp, cluster_up)


@pytest.mark.serial  # looks for temporary directories in /tmp: none from other tests may appear
def test_killed_redis_drill_leaves_no_directories(redis_with_password, tmp_path: Path) -> None:
    server = redis_with_password
    prefix = f"killed-dirs:{secrets.token_hex(4)}:"
    with server.client() as conn:
        pipe = conn.pipeline(transaction=False)
        for i in range(20000):
            pipe.set(f"{prefix}{i}", secrets.token_bytes(300))
        pipe.execute()
    try:
        case = redis_case("drill-dirs", server, LocalStore(tmp_path / "repo"))
        backup(case)

        def scratch_loaded(child: subprocess.Popen) -> bool:
            """The drill's scratch redis-server is up, loading the backup streamed into it."""
            for proc, info in live(descendants(child.pid), "name"):
                if info["name"].startswith("redis-server") and listening([proc]):
                    return True
            return False

        with traversable_tmp_dir("vfkilled-") as tmp:
            kill_drill(case, tmp, scratch_loaded)
    finally:
        with server.client() as conn:
            for key in conn.scan_iter(match=f"{prefix}*", count=1000):
                conn.delete(key)
