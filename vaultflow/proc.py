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
- the kernel clears the setting on a uid change, so it is set in `preexec_fn`, which Python
  runs after the `user=`/`group=` switch, and the child exits at once if its parent already
  died between fork and prctl.

Processes that are meant to outlive the run (a restored server left running for the user)
use plain `subprocess.Popen(..., start_new_session=True)` instead.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
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


def tied_popen(args: Any, **kwargs: Any) -> subprocess.Popen:
    """`subprocess.Popen(args, **kwargs)` whose child gets SIGKILL when this process dies.

    Same arguments and return value as `subprocess.Popen` (`preexec_fn` must not be given).
    Raises whatever Popen raises (FileNotFoundError, PermissionError, ...).
    """
    if "preexec_fn" in kwargs:
        raise TypeError("tied_popen sets preexec_fn itself")
    kwargs["preexec_fn"] = _die_with(os.getpid())
    return _spawner.submit(subprocess.Popen, args, **kwargs).result()
