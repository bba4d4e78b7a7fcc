"""Run test servers as an unprivileged user when we are root (servers refuse to run as root)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from vaultflow.ports import free_port  # noqa: F401 - re-exported: the tests' and test servers' import

SERVICE_USER = "vaultflow-test"


def running_as_root() -> bool:
    return os.geteuid() == 0


def ensure_service_user() -> pwd.struct_passwd | None:
    """The account servers run as: None when we are not root (they run as us)."""
    if not running_as_root():
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def give_to_service_user(path: Path) -> None:
    """chown a directory tree we created so the service user can write it."""
    user = ensure_service_user()
    if user is None:
        return
    for root, _dirs, files in os.walk(path):
        os.chown(root, user.pw_uid, user.pw_gid)
        for name in files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)


def demote_kwargs() -> dict:
    """subprocess.Popen keyword arguments that run the child as the service user."""
    user = ensure_service_user()
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def readable_by_service_user(path: Path) -> bool:
    """True when the service user can traverse every parent of `path` (e.g. not under /root)."""
    user = ensure_service_user()
    if user is None:
        return True
    probe = subprocess.run(["test", "-x", str(path)], **demote_kwargs(), capture_output=True)
    return probe.returncode == 0


def world_readable_copy(src: Path, cache_name: str) -> Path:
    """A copy of `src` under /var/tmp that the service user can read and execute (cached)."""
    dest = Path("/var/tmp") / cache_name
    if not (dest / ".complete").exists():
        tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, symlinks=True)
        os.chmod(tmp, 0o755)
        (tmp / ".complete").touch()
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(tmp, dest)
    return dest
