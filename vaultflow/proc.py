"""Child processes that die with the run that started them.

Every process vaultflow starts for the length of an operation (dump tools, redis-check-rdb,
scratch redis-servers, restored PostgreSQL clusters) is started through `tied_popen`: if the
vaultflow process dies — SIGKILL from a worker, an OOM kill, a cancelled Prefect run — the
kernel sends the child SIGKILL (Linux `prctl(PR_SET_PDEATHSIG)`), so no scratch server keeps
serving a copy of production data and no dump keeps running.

Two details make this exact:
- the parent-death signal fires when the *thread* that forked the child exits, not the
  process. Prefect runs tasks in worker threads that come and go, so every tied child is
  forked by one long-lived spawner thread that exits only with the process;
- the kernel clears the setting on a uid change, so it is set after the `user=`/`group=`
  switch.

Two ways to set it. A tool (pg_dump, pg_restore, redis-check-rdb, ...) is started through
util-linux's `setpriv --pdeathsig KILL -- <tool>` (util-linux 2.33 and later): Python then
starts the child with vfork, about 0.7 ms, where a `preexec_fn` makes it fork the whole run's
memory first (about 20 ms of CPU for a 300 MB process, measured; a backup starts many tools).
setpriv sets the signal and execs the tool in the same process, so the pid, signals and exit
status are the tool's. A process meant to serve for a while (a scratch server: `lasting=True`),
a start that switches user, or a machine without such a setpriv takes the exact way instead:
prctl in `preexec_fn`, and the child exits at once if its parent already died between fork and
prctl. The fast way has no such check: a run killed in the millisecond before setpriv's prctl
leaves that tool running until its pipes to the dead run break or its work ends.

Processes that are meant to outlive the run (a restored server left running for the user)
use plain `subprocess.Popen(..., start_new_session=True)` instead.

Temporary paths that die with the run: `remove_on_death(path)` hands `path` to one watcher
process per vaultflow process (`python -I -S -c _WATCHER`, untied, in its own session, no fd
but a pipe from us, a clean environment). When that pipe reaches EOF — we exited or were
killed, however — the watcher removes every path still registered, if it is still the same
file (dev/inode recorded at registration: a path someone recreated later is left alone), and
exits. `forget(path)` takes a path back (a directory handed to the user); `temporary_directory`
and `mkdtemp` create registered directories; `remove(path)` deletes one and forgets it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
_spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vaultflow-spawner")


def _die_with(parent_pid: int):
    def preexec() -> None:
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


_SWITCHES_USER = frozenset({"user", "group", "extra_groups"})


@functools.cache
def pdeathsig_wrapper() -> tuple[str, ...] | None:
    """argv prefix that starts a command with SIGKILL as its parent-death signal: `setpriv
    --pdeathsig KILL --` (util-linux 2.33 and later), looked up once per process; None on a
    machine without it (not Linux, no setpriv, or one too old for --pdeathsig)."""
    path = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    if path is None:
        return None
    try:
        usage = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return (path, "--pdeathsig", "KILL", "--") if "--pdeathsig" in usage else None


def tied_popen(args: Any, *, lasting: bool = False, **kwargs: Any) -> subprocess.Popen:
    """`subprocess.Popen(args, **kwargs)` whose child gets SIGKILL when this process dies.

    `lasting`: the child serves for a while (a scratch server), so it is tied the exact way
    (module docstring); a tool is tied through setpriv where the machine has it. Same arguments
    and return value as `subprocess.Popen` (`preexec_fn` must not be given); `args` a list when
    not `lasting`, as every caller passes it. Raises whatever Popen raises (FileNotFoundError,
    PermissionError, ...).
    """
    if "preexec_fn" in kwargs:
        raise TypeError("tied_popen sets preexec_fn itself")
    wrapper = None if lasting or _SWITCHES_USER & kwargs.keys() or kwargs.get("shell") else pdeathsig_wrapper()
    if wrapper is not None and isinstance(args, list | tuple) and "executable" not in kwargs:
        args = [*wrapper, *args]
    else:
        kwargs["preexec_fn"] = _die_with(os.getpid())
    popen: Callable[..., subprocess.Popen] = subprocess.Popen
    return _spawner.submit(popen, args, **kwargs).result()


# -- temporary paths removed when this process dies -------------------------------------------

# One record: op (b"+" register, b"-" forget), st_dev, st_ino, length of the path, the path's
# bytes (os.fsencode: any byte but NUL, newlines included).
_RECORD = struct.Struct("!cQQI")
_WATCHER = r"""
import os, shutil, stat, struct, sys, time
HEAD = struct.Struct("!cQQI")
def take(n):
    data = b""
    while len(data) < n:
        chunk = os.read(0, n - len(data))
        if not chunk:
            return None
        data += chunk
    return data
paths = {}
while True:
    head = take(HEAD.size)
    if head is None:
        break
    op, dev, ino, size = HEAD.unpack(head)
    path = take(size)
    if path is None:
        break
    if op == b"+":
        paths[path] = (dev, ino)
    else:
        paths.pop(path, None)
for path, (dev, ino) in reversed(list(paths.items())):
    for attempt in range(100):  # a killed server's last processes may still be writing in it
        try:
            st = os.lstat(path)
        except OSError:
            break  # gone (removed by the run, or with a registered parent)
        if (st.st_dev, st.st_ino) != (dev, ino):
            break  # not ours any more: someone made a new one at that path
        try:
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError:
            time.sleep(0.1)
"""
WATCHER_ARG = "vaultflow-remove-on-death"  # the watcher's argv[1] (argv[2]: the pid it watches)

_lock = threading.Lock()
_watcher: subprocess.Popen | None = None
_registered: dict[bytes, tuple[int, int]] = {}


def _start_watcher() -> subprocess.Popen:
    """Untied on purpose: it must outlive us. Only its stdin (the read end of our pipe) is
    open; the write end is close-on-exec, so no other child of ours can hold the EOF back."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _WATCHER, WATCHER_ARG, str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
        cwd="/",
        env={},
        bufsize=0,
    )


def _send(op: bytes, key: bytes, dev: int, ino: int) -> None:
    """Under _lock. A watcher that died (someone killed it) is replaced and told everything again."""
    global _watcher
    if _watcher is not None:
        try:
            _write(_RECORD.pack(op, dev, ino, len(key)) + key)
            return
        except BrokenPipeError:
            _watcher.stdin.close()
            _watcher.wait()
            _watcher = None
    if op == b"-":
        return  # a new watcher never heard of it
    _watcher = _start_watcher()
    for other, (d, i) in _registered.items():  # `key` included
        _write(_RECORD.pack(b"+", d, i, len(other)) + other)


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(_watcher.stdin.fileno(), view) :]


def remove_on_death(path: str | os.PathLike) -> Path:
    """Register `path` (a file or directory this run created and owns) for removal when this
    process ends, however it ends. Returns `path`. Registering it again records its current
    dev/inode (after a new directory was renamed onto it). Never register a path the user
    gave (a restore's `into`): only vaultflow's own temporary and scratch paths."""
    key = os.fsencode(os.path.abspath(path))
    st = os.lstat(key)
    with _lock:
        _registered[key] = (st.st_dev, st.st_ino)
        _send(b"+", key, st.st_dev, st.st_ino)
    return Path(path)


def forget(path: str | os.PathLike) -> None:
    """Take `path` back: it survives this process (a directory handed over, or already gone)."""
    key = os.fsencode(os.path.abspath(path))
    with _lock:
        if _registered.pop(key, None) is not None:
            _send(b"-", key, 0, 0)


def remove(path: str | os.PathLike) -> None:
    """Delete a registered path now (a tree or a file; missing is fine) and forget it; what
    could not be deleted stays registered, for the watcher to try again when we are gone."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:
        return
    if not os.path.lexists(path):
        forget(path)


SHORT_ROOT_MAX = 40  # bytes: room left for a mkdtemp name, "/s/" and ".s.PGSQL.<port>.lock" in sun_path


def short_temp_root() -> str:
    """Where private scratch directories that a server's socket, or its service user, must
    reach go: the temporary directory (TMPDIR, `tempfile.gettempdir()`) when its path is at
    most SHORT_ROOT_MAX bytes and every directory on it lets others in (o+x, as /tmp and a
    1777 scratch root do), else /tmp. A unix socket's whole path must fit in sun_path (108 bytes
    on Linux, unix(7)); a long or private TMPDIR is usually a user's own (pytest's tmp_path,
    /root/tmp)."""
    root = tempfile.gettempdir()
    if len(os.fsencode(root)) > SHORT_ROOT_MAX:
        return "/tmp"
    try:
        resolved = Path(root).resolve()
        if all(os.stat(part).st_mode & stat.S_IXOTH for part in (resolved, *resolved.parents)):
            return root
    except OSError:
        pass
    return "/tmp"


def mkdtemp(prefix: str, dir: str | os.PathLike | None = None) -> Path:
    """`tempfile.mkdtemp` (0700), registered with remove_on_death."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    try:
        return remove_on_death(path)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


@contextmanager
def temporary_directory(prefix: str, dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """A registered `mkdtemp` directory, removed (and forgotten) on exit."""
    path = mkdtemp(prefix, dir)
    try:
        yield path
    finally:
        remove(path)


def _after_fork_in_child() -> None:
    """A forked child (no exec) must not hold our pipe (its EOF would wait for the child) nor
    share our registrations: it starts its own watcher if it registers anything."""
    global _lock, _watcher
    _lock = threading.Lock()
    if _watcher is not None:
        try:
            _watcher.stdin.close()
        except OSError:
            pass
        _watcher.returncode = 0  # the parent's child, not ours: never wait for it here
    _watcher = None
    _registered.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
