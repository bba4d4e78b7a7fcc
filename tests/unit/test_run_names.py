"""Names a person reads: run names (engine, target, the backup id's time; a name a person gave is
kept), backup ids dated when their run started, and events whose related resources say what
they are. Pure: no Prefect API (the runs themselves: tests/integration/test_run_names.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings
from prefect.utilities.names import generate_slug

from vaultflow.blocks import ClickHouseTarget, MongoTarget, PostgresTarget, RedisTarget
from vaultflow.catalog_view import run_link
from vaultflow.engines.base import BackupContext, BackupUnit, dated_by_run, new_plan
from vaultflow.engines.postgres.consistency import PostgresLogicalConsistency
from vaultflow.flows._names import is_generated_name, target_engine
from vaultflow.flows._support import backup_event_related, backup_resource, lineage, run_ui_url, target_resource
from vaultflow.manifest import BackupKind, BackupMode, Manifest, id_time, new_backup_id
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
from vaultflow.stores.base import put_bytes

# -- which names Prefect made up ---------------------------------------------------------------


def test_every_name_prefect_generates_is_recognised():
    names = {generate_slug(2) for _ in range(2000)}  # the API's and the client's default name
    assert len(names) > 1900
    assert [name for name in names if not is_generated_name(name)] == []


@pytest.mark.parametrize(
    "name",
    [
        "Rustic-Falcon",  # the Custom run form of ui-v2, Prefect 3.9's default UI
        "Incredible-Emu",
        "Handcrafted-Vicuña",
        "tau4-andromedae",  # the same form in the legacy UI
        "alpha-canis-majoris-nebula",
        "omega12-sirius",
    ],
)
def test_names_the_run_forms_generate_are_recognised(name):
    assert is_generated_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "before-the-migration",
        "hotfix",
        "ticket-4711-restore",
        "full-postgres-prod-20261126T020000.123Z",  # ours: a retry keeps it
        "Rustic-Falcon-again",
        "Nightly-Backup-Check",
        "quarterly-audit",
        "big-restore",
        "beta-test",  # a Greek letter, but 'test' is none of the legacy UI's places
        "alpha-release",
        "Small-Fix",  # a ui-v2 adjective, but 'Fix' is none of its animals
        "Rustic-Elephant",  # an animal longer than the form's 6 letters
        "manual-backup",
        "red-fox2",  # a digit keeps a name the generators' words would make
    ],
)
def test_names_a_person_types_are_kept(name):
    assert not is_generated_name(name)


@pytest.mark.parametrize("name", ["red-fox", "alpha--nebula", "beta3-canis-majoris", "Small-Fox"])
def test_the_limit_a_name_in_a_generators_pattern_and_words_reads_as_made_up(name):
    """docs/operations.md, "Reading runs and events": such a name is replaced by ours."""
    assert is_generated_name(name)


# -- which engine a target parameter names -------------------------------------------------


@pytest.mark.parametrize(
    "value, engine",
    [
        (PostgresTarget(target_name="demo"), "postgres"),
        (RedisTarget(target_name="demo"), "redis"),
        (MongoTarget(target_name="demo"), "mongodb"),
        (ClickHouseTarget(target_name="demo"), "clickhouse"),
        ("postgres-target/demo", "postgres"),
        ("redis-target/demo", "redis"),
        ("no-such-target-type/demo", None),
        ({"host": "db1"}, None),
    ],
)
def test_the_engine_of_a_target_parameter_without_the_api(value, engine):
    assert target_engine(value) == engine


# -- a backup id dated when its run started ----------------------------------------------------


def _plan(kind: BackupKind = BackupKind.FULL):
    return new_plan("postgres", "prod", kind, [BackupUnit("database", "app")])


def test_the_backup_id_takes_the_instant_of_the_run_name(tmp_path):
    repo = Repository(LocalStore(tmp_path))
    started = datetime.now(UTC) - timedelta(seconds=30)
    plan = _plan()
    dated = dated_by_run(plan, BackupContext(repository=repo, run_started=started))
    assert dated.backup_id == new_backup_id(BackupKind.FULL, started) == f"{id_time(started)}-F"
    assert f"full-postgres-prod-{id_time(started)}".endswith(dated.backup_id.rsplit("-", 1)[0])
    assert dated.started_at == plan.started_at and dated.units == plan.units, "only the id moves"
    assert dated_by_run(plan, BackupContext(repository=repo)) is plan, "no run instant: the id made now"


@pytest.mark.parametrize("offset", [timedelta(0), timedelta(seconds=5)])
def test_an_id_never_sorts_before_a_backup_already_taken(tmp_path, offset):
    """Another run (or an earlier try of this one) took a backup at or after this run's start:
    the id is made now, so ids stay unique and a parent sorts before its children."""
    repo = Repository(LocalStore(tmp_path))
    started = datetime.now(UTC) - timedelta(seconds=30)
    taken = new_backup_id(BackupKind.FULL, started + offset)
    put_bytes(repo.store, repo.backup_prefix("postgres", "prod", taken) + "manifest.json", b"{}")
    plan = _plan(BackupKind.INCREMENTAL)
    assert dated_by_run(plan, BackupContext(repository=repo, run_started=started)) is plan
    assert plan.backup_id > taken


def test_an_older_backup_of_the_target_leaves_the_run_instant(tmp_path):
    repo = Repository(LocalStore(tmp_path))
    started = datetime.now(UTC) - timedelta(seconds=30)
    older = new_backup_id(BackupKind.FULL, started - timedelta(milliseconds=1))
    put_bytes(repo.store, repo.backup_prefix("postgres", "prod", older) + "db/app.dump.zst", b"x")
    put_bytes(repo.store, repo.backup_prefix("postgres", "other", new_backup_id(BackupKind.FULL)) + "x", b"x")
    dated = dated_by_run(_plan(), BackupContext(repository=repo, run_started=started))
    assert dated.backup_id == new_backup_id(BackupKind.FULL, started) > older


# -- events whose resources say what they are --------------------------------------------------


def _manifest(kind: BackupKind, parent: str | None) -> Manifest:
    at = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    return Manifest(
        id=new_backup_id(kind, at),
        engine="postgres",
        target="prod",
        kind=kind,
        mode=BackupMode.LOGICAL,
        parent_id=parent,
        consistency=PostgresLogicalConsistency(),
        started_at=at,
        finished_at=at + timedelta(seconds=3),
        objects=[],
    )


def test_a_backup_event_names_its_backup_target_and_parent_with_their_roles():
    manifest = _manifest(BackupKind.INCREMENTAL, "20261125T020000.000Z-F")
    resource = backup_resource(manifest)
    assert resource["prefect.resource.id"] == "vaultflow.backup.postgres.prod.20261126T020000.000Z-I"
    assert resource["prefect.resource.name"] == "incremental backup 20261126T020000.000Z-I of postgres/prod"
    related = {r["prefect.resource.role"]: r for r in backup_event_related(manifest)}
    assert set(related) == {"target", "parent"}
    assert related["target"]["prefect.resource.name"] == "postgres/prod"
    assert related["target"]["prefect.resource.id"] == "vaultflow.target.postgres.prod"
    assert related["parent"]["prefect.resource.name"] == "full backup 20261125T020000.000Z-F of postgres/prod"
    assert related["parent"]["prefect.resource.id"] == "vaultflow.backup.postgres.prod.20261125T020000.000Z-F"
    assert related["parent"]["vaultflow.kind"] == "full"


def test_every_related_resource_has_a_name_and_a_role():
    for manifest in (_manifest(BackupKind.FULL, None), _manifest(BackupKind.DIFFERENTIAL, "20261120T020000.000Z-F")):
        for resource in backup_event_related(manifest):
            assert resource["prefect.resource.name"] and resource["prefect.resource.role"], resource
    assert [r["prefect.resource.role"] for r in backup_event_related(_manifest(BackupKind.FULL, None))] == ["target"]


def test_same_named_targets_of_two_engines_read_apart():
    names = {target_resource(engine, "demo")["prefect.resource.name"] for engine in ("postgres", "redis")}
    assert names == {"postgres/demo", "redis/demo"}


# -- links to a run's page -----------------------------------------------------------------------


def test_without_a_ui_url_a_run_has_no_link(monkeypatch):
    """No Prefect UI (a temporary server, `make demo`): Prefect's flow_run.ui_url is
    'None/flow-runs/flow-run/<id>'; the manifest's lineage keeps no link instead."""
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__ID", "0b5e1d1e-0000-4000-8000-000000000001")
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__NAME", "full-postgres-prod-20261126T020000.123Z")
    with temporary_settings(restore_defaults={PREFECT_API_URL, PREFECT_UI_URL}):
        assert PREFECT_UI_URL.value() is None
        assert lineage().ui_url is None
        assert run_ui_url() is None
    with temporary_settings(updates={PREFECT_UI_URL: "http://prefect.example:4200"}):
        assert lineage().ui_url == "http://prefect.example:4200/flow-runs/flow-run/0b5e1d1e-0000-4000-8000-000000000001"


def test_the_catalog_links_no_run_without_a_ui_url():
    assert run_link(None, "full-postgres-prod-x") == run_link("None/flow-runs/flow-run/1", "full-postgres-prod-x")
    assert "None/" not in run_link("None/flow-runs/flow-run/1", "full-postgres-prod-x")
    assert run_link("http://ui:4200/flow-runs/flow-run/1") == "[run](http://ui:4200/flow-runs/flow-run/1)"
