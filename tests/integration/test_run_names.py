"""Run names through a real Prefect API (test harness) and PostgreSQL 18, the way a worker runs a
deployment's flow run: the run exists first, with the name Prefect or a person gave it, and the
flow engine runs it (prefect.flow_engine.run_flow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prefect import get_client
from prefect.flow_engine import run_flow

from vaultflow.blocks import BackupRepository, PostgresTarget
from vaultflow.flows._names import is_generated_name
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.verify import verify
from vaultflow.manifest import parse_backup_id

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture
def saved_blocks(pg18, fresh_db, tmp_path: Path) -> Path:
    """A target block saved under a bare name ('names-demo') and a repository block; the repository directory."""
    db = fresh_db(pg18)
    pg18.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 20) g", dbname=db)
    PostgresTarget(
        host=pg18.host, port=pg18.port, user=pg18.user, databases=[db], bin_dir=str(pg18.client_bin_dir)
    ).save("names-demo", overwrite=True)
    BackupRepository(local_path=str(tmp_path / "repo")).save("names-demo", overwrite=True)
    return tmp_path / "repo"


def run_created_as(name: str | None) -> tuple[str, dict]:
    """Create a full-backup flow run named `name` (None: the API makes one up), run it as a
    worker would; (its name once run, its result)."""
    params = {"target": "names-demo", "repository": "backup-repository/names-demo"}
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(full_backup, name=name, parameters=params)
        assert flow_run.name == name or (name is None and is_generated_name(flow_run.name))
        result = run_flow(full_backup, flow_run=flow_run, parameters=params)
        return client.read_flow_run(flow_run.id).name, result


def lineage_name(repo: Path, backup_id: str) -> str:
    manifest = json.loads((repo / "postgres/names-demo/backups" / backup_id / "manifest.json").read_text())
    return manifest["lineage"]["flow_run_name"]


def test_a_name_prefect_made_up_becomes_kind_engine_target_and_the_backup_ids_time(saved_blocks):
    final, result = run_created_as(None)
    stamp = result["backup_id"].rsplit("-", 1)[0]
    # 'names-demo' is a bare block name: the engine comes from the API (one query, no secrets)
    assert final == f"full-postgres-names-demo-{stamp}"
    assert lineage_name(saved_blocks, result["backup_id"]) == final


@pytest.mark.parametrize("ui_default", ["Rustic-Falcon", "tau4-andromedae-nebula"])
def test_the_run_forms_default_name_is_replaced(saved_blocks, ui_default):
    final, result = run_created_as(ui_default)
    assert final == f"full-postgres-names-demo-{result['backup_id'].rsplit('-', 1)[0]}"


def test_a_name_a_person_gave_is_kept(saved_blocks):
    """Typed in the Custom run form, or `prefect deployment run --flow-run-name`: kept, in the
    runs list and in the manifest's lineage; the backup id is then made when the backup starts."""
    final, result = run_created_as("before-the-migration")
    assert final == "before-the-migration"
    assert lineage_name(saved_blocks, result["backup_id"]) == "before-the-migration"


def test_a_verify_over_a_repository_is_named_after_it(saved_blocks):
    saved_blocks.mkdir()  # an empty repository: nothing to check, a run to name
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(verify, parameters={"repository": "backup-repository/names-demo"})
        run_flow(verify, flow_run=flow_run, parameters={"repository": "backup-repository/names-demo"})
        final = client.read_flow_run(flow_run.id).name
    assert final.startswith("verify-names-demo-")
    parse_backup_id(final.removeprefix("verify-names-demo-") + "-F")  # the time in the backup id's form


def test_a_run_is_named_after_the_targets_name_not_its_blocks(saved_blocks, pg18):
    """Block 'sales-upper' with target_name 'Sales': the run is '...-postgres-Sales-...', as the
    repository, catalog and events call it (the block document's data holds target_name)."""
    block = PostgresTarget.load("names-demo")
    block.target_name = "Sales"
    block.save("sales-upper", overwrite=True)
    for ref in ("sales-upper", "postgres-target/sales-upper"):
        params = {"target": ref, "repository": "backup-repository/names-demo"}
        with get_client(sync_client=True) as client:
            created = client.create_flow_run(full_backup, parameters=params)
            result = run_flow(full_backup, flow_run=created, parameters=params)
            final = client.read_flow_run(created.id).name
        assert final == f"full-postgres-Sales-{result['backup_id'].rsplit('-', 1)[0]}", ref
        (manifest,) = saved_blocks.glob(f"postgres/*/backups/{result['backup_id']}/manifest.json")
        assert json.loads(manifest.read_text())["target"] == "Sales"
