"""The registry claim of issue 9, proven: an engine defined only in tests (SQLite files,
tests/contract/toy_engine.py) registers itself and runs the flows with no edit outside its own
files. The contract suite (test_engine_contract.py) runs every flow on it; this module checks
that nothing generic knows it, that it satisfies the Engine Protocol as every built-in engine
must, and that its own typed restore options reach it through the restore flow."""

from __future__ import annotations

import inspect
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from tests.contract import toy_engine
from tests.contract.toy_engine import ENGINE, SqliteTarget, sqlite_engine_registered
from tests.unit import test_engine_protocol  # a module, so pytest does not collect its tests here again
from vaultflow.blocks import BackupRepository
from vaultflow.blocks.registry import target_type, target_types
from vaultflow.engines import registry
from vaultflow.errors import ConfigError, NotFoundError, RefusedError
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.restore import restore
from vaultflow.manifest import BackupMode
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore

ROOT = Path(__file__).resolve().parents[2]
GENERIC = ["vaultflow", "flows", "tasks", "blocks", "deployments"]  # and the files below
GENERIC_FILES = ["prefect.yaml", "Makefile", "pyproject.toml"]
# What generic code would have to say to know the toy engine: its registry name as a string,
# its block type's slug, its classes, its module.
MENTIONS = re.compile(
    r"""["']sqlite["']|sqlite-target|Sqlite(Target|Settings|Engine|RestoreOptions|Consistency)|sqlite-file|"""
    r"""toy_engine|tests[./]contract"""
)


def mentions(path: Path) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if MENTIONS.search(line)
    ]


def generic_files() -> list[Path]:
    files = [path for top in GENERIC for path in sorted((ROOT / top).rglob("*.py"))]
    return files + [ROOT / name for name in GENERIC_FILES if (ROOT / name).exists()]


def test_no_generic_module_knows_the_toy_engine():
    assert len(generic_files()) > 50 and (ROOT / "flows" / "full_backup.py") in generic_files()
    assert mentions(Path(toy_engine.__file__)), "the scan finds the engine where it is defined"
    found = [hit for path in generic_files() for hit in mentions(path)]
    assert found == [], "generic code names the test-only engine:\n" + "\n".join(found)
    for part in (
        toy_engine.SqliteSettings,
        SqliteTarget,
        toy_engine.SqliteRestoreOptions,
        toy_engine.SqliteEngine,
        toy_engine.SqliteConsistency,
    ):
        assert inspect.getsourcefile(part) == toy_engine.__file__, f"{part.__name__} is defined elsewhere"


def test_the_toy_engine_is_known_only_while_registered():
    assert ENGINE not in registry.names() and "sqlite-target" not in target_types()
    with pytest.raises(ConfigError, match="no vaultflow engine named 'sqlite'"):
        registry.spec(ENGINE)
    with sqlite_engine_registered() as kind:
        assert ENGINE in registry.names() and target_type("sqlite-target") is kind
        assert type(kind(path="/srv/app.db").engine()) is toy_engine.SqliteEngine
    assert ENGINE not in registry.names() and "sqlite-target" not in target_types()


def test_the_toy_engine_satisfies_the_engine_protocol():
    with sqlite_engine_registered():
        test_engine_protocol.test_every_registered_engine_satisfies_the_protocol(ENGINE)


@pytest.fixture
def app_db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'one');")
    return path


@pytest.mark.usefixtures("prefect_api")
def test_its_restore_options_and_refusals_reach_it_through_the_restore_flow(app_db: Path, tmp_path: Path):
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    with sqlite_engine_registered() as kind:
        target = kind(path=str(app_db))
        with pytest.raises(NotFoundError, match="no SQLite database file at"):
            full_backup(target=kind(path=str(tmp_path / "missing.db")), repository=repository)
        backup = full_backup(target=target, repository=repository)
        (manifest,) = Repository(LocalStore(tmp_path / "repo")).catalog(ENGINE, "app").manifests
        assert isinstance(manifest.consistency, toy_engine.SqliteConsistency), "its own model, read back typed"
        assert (manifest.mode, manifest.consistency.page_count) == (BackupMode.PHYSICAL, 2)

        into = tmp_path / "copy.db"
        done = restore(target=target, repository=repository, into=str(into), options={"integrity_check": True})
        assert done["backup_id"] == backup["backup_id"] and "PRAGMA integrity_check: ok" in done["notes"]
        with closing(sqlite3.connect(into)) as conn:
            conn.execute("UPDATE t SET v = 'changed'")
            conn.commit()

        with pytest.raises(RefusedError, match="exists: restore into a new file, or pass overwrite=True"):
            restore(target=target, repository=repository, into=str(into))
        with closing(sqlite3.connect(into)) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [("changed",)], "a refused restore changes nothing"
        restore(target=target, repository=repository, into=str(into), overwrite=True)
        with closing(sqlite3.connect(into)) as conn:
            assert conn.execute("SELECT v FROM t").fetchall() == [("one",)]

        with pytest.raises(
            ConfigError,
            match=r"key_pattern does not apply to target 'app', a sqlite target "
            r"\(its restore options: integrity_check\)",
        ):
            restore(target=target, repository=repository, options={"key_pattern": "user:*"})


@pytest.mark.usefixtures("prefect_api")
def test_verify_prune_and_upload_tables_keep_one_key_per_target(app_db: Path, tmp_path: Path):
    """A run over a whole repository publishes one table per target, keyed by engine and target:
    a target's verify history stays one key when another target joins the repository."""
    from tests.integration.test_flows import read_artifact
    from vaultflow.flows.prune import prune
    from vaultflow.flows.upload import upload
    from vaultflow.flows.verify import verify

    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    offsite = BackupRepository(local_path=str(tmp_path / "offsite"))
    with sqlite_engine_registered() as kind:
        full_backup(target=kind(path=str(app_db), target_name="one"), repository=repository)
        verify(repository=repository)
        assert [r["target"] for r in read_artifact("verify-sqlite-one")] == ["sqlite/one"]

        full_backup(target=kind(path=str(app_db), target_name="two"), repository=repository)
        verify(repository=repository)
        prune(repository=repository, dry_run=True)
        upload(source=repository, destination=offsite)
        for flow in ("verify", "prune", "upload"):
            for name in ("one", "two"):
                rows = read_artifact(f"{flow}-sqlite-{name}")
                assert rows and {r["target"] for r in rows} == {f"sqlite/{name}"}, (flow, name, rows)
