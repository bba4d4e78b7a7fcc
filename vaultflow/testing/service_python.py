"""An interpreter the service user can run, with vaultflow importable.

Test servers run as `vaultflow-test` when the suite runs as root, and so do their
archive_command and restore_command (`python -m vaultflow.engines.postgres.wal.cli ...`). A venv built on a
pyenv/uv interpreter under /root (0700) is not executable by that user: then a world-readable
copy of the base interpreter is made once under /var/tmp.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import vaultflow
from vaultflow.testing.unprivileged import demote_kwargs, readable_by_service_user, running_as_root, world_readable_copy

# Parts of the standard library an archive_command never needs (tests alone are 120 MB).
_STDLIB_SKIP = {
    "site-packages",
    "test",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "pydoc_data",
    "__phello__",
}


@dataclass
class ServicePython:
    """How the service user (the server's archive_command) runs `python -m vaultflow.engines.postgres.wal.cli`."""

    executable: str
    env: dict[str, str] = field(default_factory=dict)
    how: str = ""

    def command(self, *args: str) -> str:
        """A shell command line (archive_command is run by /bin/sh)."""
        assignments = [f"{k}={shlex.quote(v)}" for k, v in self.env.items()]
        return " ".join([*assignments, shlex.quote(self.executable), "-m", "vaultflow.engines.postgres.wal.cli", *args])

    def run_as_service_user(self, *args: str, **kw) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, **self.env}
        return subprocess.run(
            [self.executable, *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
            **demote_kwargs(),
            **kw,
        )


def _copy_interpreter() -> Path:
    """A world-readable copy of this venv's base interpreter and its standard library (cached).

    pyenv/uv interpreters live under /root (0700): the service user cannot exec the venv's
    python, which only symlinks to them. The copy needs its libpython on LD_LIBRARY_PATH
    because the binary's RUNPATH points at the original location.
    """
    base = Path(sys.base_prefix)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    binary = (base / "bin" / version).resolve()
    stamp = hashlib.sha256(f"{base}:{binary.stat().st_mtime_ns}".encode()).hexdigest()[:10]
    dest = Path("/var/tmp") / f"vaultflow-{version}-{stamp}"
    if not (dest / ".complete").exists():
        tmp = dest.with_name(f"{dest.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "bin").mkdir(parents=True)
        shutil.copy2(binary, tmp / "bin" / version)
        (tmp / "lib").mkdir()
        for lib in (base / "lib").glob("libpython*.so*"):
            shutil.copy2(lib, tmp / "lib" / lib.name, follow_symlinks=False)
        shutil.copytree(
            base / "lib" / version,
            tmp / "lib" / version,
            symlinks=True,
            ignore=lambda _d, names: [n for n in names if n in _STDLIB_SKIP or n.startswith("config-")],
        )
        for path in (tmp, tmp / "bin", tmp / "lib"):
            os.chmod(path, 0o755)
        (tmp / ".complete").touch()
        shutil.rmtree(dest, ignore_errors=True)
        os.rename(tmp, dest)
    return dest / "bin" / version


def _importable_paths() -> list[str]:
    """The source tree and the venv's site-packages, copied if the service user cannot read them."""
    source_root = Path(vaultflow.__file__).resolve().parent.parent
    site_packages = Path(sysconfig.get_paths()["purelib"])
    paths = []
    if readable_by_service_user(source_root / "vaultflow"):
        paths.append(str(source_root))
    else:  # fresh each session: the code under test changes
        copy = Path(tempfile.mkdtemp(prefix="vaultflow-src-", dir="/var/tmp"))
        shutil.copytree(source_root / "vaultflow", copy / "vaultflow")
        os.chmod(copy, 0o755)
        paths.append(str(copy))
    if readable_by_service_user(site_packages):
        paths.append(str(site_packages))
    else:
        stamp = hashlib.sha256(f"{site_packages}:{site_packages.stat().st_mtime_ns}".encode()).hexdigest()[:10]
        paths.append(str(world_readable_copy(site_packages, f"vaultflow-site-{stamp}")))
    return paths


def service_user_python() -> ServicePython:
    probe = ["-c", "import vaultflow.engines.postgres.wal.cli, vaultflow.pipeline"]
    if not running_as_root():
        return ServicePython(sys.executable, how="tests run unprivileged: the venv's python")
    plain = ServicePython(sys.executable, how="the venv's python (the service user can run it)")
    try:
        if plain.run_as_service_user(*probe).returncode == 0:
            return plain
    except PermissionError:  # exec of a symlink into a 0700 home (e.g. pyenv as root): EACCES
        pass
    copy = _copy_interpreter()
    env = {"PYTHONPATH": os.pathsep.join(_importable_paths())}
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        env["LD_LIBRARY_PATH"] = str(copy.parent.parent / "lib")
    python = ServicePython(
        str(copy),
        env,
        how=f"a world-readable copy of {sys.base_prefix} in {copy.parent.parent}, vaultflow via PYTHONPATH",
    )
    result = python.run_as_service_user(*probe)
    if result.returncode != 0:
        raise RuntimeError(f"{python.how} cannot import vaultflow:\n{result.stderr}")
    return python
