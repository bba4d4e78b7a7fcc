"""The ClickHouse bench's contenders on one chDB instance: native BACKUP/RESTORE, the stock-tools
floor and vaultflow, each a function that does one run (bench.measure.measure times it), plus a
diagnostic timer of a restore's phases."""

from __future__ import annotations

import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from bench import measure as m

DATABASE = "tpch"
DISK = "backups"


def _shell(script: str) -> None:
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {script}"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")


class Bench:
    """The timed contenders on one chDB instance (this process's)."""

    def __init__(self, instance, engine, work: Path):
        self.instance, self.engine, self.work = instance, engine, work
        self.client = instance.client()

    def sql(self, statement: str):
        return self.client.command(statement)

    def native_backup(self, name: str):
        def run():
            self.sql(f"BACKUP DATABASE {DATABASE} TO Disk('{DISK}', '{name}')")
            return m.dir_size(self.instance.backup_dir / name), {}

        return run

    def floor_backup(self, name: str, out: Path):
        """BACKUP, the directory shipped with tar | zstd -3 -T0 into a synced file, the directory removed."""
        directory = self.instance.backup_dir / name

        def run():
            self.sql(f"BACKUP DATABASE {DATABASE} TO Disk('{DISK}', '{name}')")
            _shell(f"tar -C '{directory}' -cf - . | zstd -3 -T0 -q -c > '{out}' && sync '{out}'")
            shutil.rmtree(directory)
            return out.stat().st_size, {}

        return run

    def vaultflow_full(self, repo: Path):
        from vaultflow.engines.base import BackupContext
        from vaultflow.repository import Repository
        from vaultflow.stores.local import LocalStore

        def run():
            ctx = BackupContext(repository=Repository(LocalStore(repo)), log=lambda line: None)
            manifest = self.engine.full_backup(ctx)
            return manifest.stored_size, {
                "manifest": manifest,
                "raw_size": manifest.raw_size,
                "files": len(manifest.objects),
                "timings": {k: round(v, 3) for k, v in manifest.timings.items()},
            }

        return run

    def native_restore(self, name: str, into: str):
        def run():
            self.sql(f"RESTORE DATABASE {DATABASE} AS {into} FROM Disk('{DISK}', '{name}')")

        return run

    def floor_restore(self, archive: Path, name: str, into: str):
        """zstd -d | tar -x into the disk, RESTORE from there, the directory removed."""
        directory = self.instance.backup_dir / name

        def run():
            directory.mkdir()
            _shell(f"zstd -d -q -c '{archive}' | tar -x -C '{directory}'")
            self.sql(f"RESTORE DATABASE {DATABASE} AS {into} FROM Disk('{DISK}', '{name}')")
            shutil.rmtree(directory)

        return run

    def vaultflow_restore(self, repo: Path, manifest):
        from vaultflow.engines.base import BackupContext
        from vaultflow.repository import Repository
        from vaultflow.stores.local import LocalStore

        def run():
            ctx = BackupContext(repository=Repository(LocalStore(repo)), log=lambda line: None)
            with restore_phases() as phases:
                result = self.engine.restore(ctx, manifest)
            if not result.comparison.ok:
                raise RuntimeError(f"vaultflow restore did not compare equal: {result.comparison.summary()}")
            return None, {"restored": result.restored[DATABASE], "phases": phases}

        return run

    def drop(self, database: str) -> None:
        self.sql(f"DROP DATABASE IF EXISTS `{database}` SYNC")


@contextmanager
def restore_phases():
    """Diagnostic (bench only): the seconds a restore spends writing the chain back (materialise,
    both checks), in RESTORE and in the fingerprints of the copy, by wrapping those functions of
    vaultflow.engines.clickhouse.restore while the block runs."""
    import vaultflow.engines.clickhouse.restore as restore

    phases: dict[str, float] = {}
    names = {"materialise_chain": "write_back_checked", "run": "restore_sql", "fingerprint_database": "compare_digest"}
    originals = {name: getattr(restore, name) for name in names if hasattr(restore, name)}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[names[name]] = round(phases.get(names[name], 0.0) + time.monotonic() - t0, 3)

        return wrapper

    for name, fn in originals.items():
        setattr(restore, name, timed(name, fn))
    try:
        yield phases
    finally:
        for name, fn in originals.items():
            setattr(restore, name, fn)
