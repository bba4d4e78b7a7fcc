"""The engine contract: what every registered engine does through the Prefect flows, on real
servers, judged by an oracle independent of vaultflow's own fingerprints.

Runs once per kind of target (tests/contract/engines/): PostgreSQL logical (pg_dump) and
physical (pg_basebackup with native incrementals, PostgreSQL 18), Redis in local mode (AOF
chains), and the SQLite engine defined only in tests (tests/contract/toy_engine.py). Each run:

- full-backup, then restore of it: the copy equals the source at backup time (oracle), and
  differs from the source as it is now;
- incremental-backup after a change: a real incremental on the full where the target has an
  incremental form, else a full whose run says why; its restore equals the changed source;
  on an empty repository, and on a chain whose full is gone, it takes a full and says why;
  Engine.incremental_backup of a target without an incremental form raises ChainBrokenError;
- restore-drill of the latest backup: every table/key space matches, within the RTO;
- verify: clean, then one flipped byte in one object is named (deep), invisible to a quick
  check (same size), and a drill of that backup refuses it naming the object;
- prune (keep_last=1): deletes what the policy says, keeps the chain a kept incremental rests
  on, collects a killed run's payload; the repository then still verifies.

Adding an engine (MongoDB, ClickHouse): add `tests/contract/engines/<engine>.py` with an
EngineContract subclass (tests/contract/harness.py: id, engine, servers, incremental; target(),
write(), change(), read_source(), restore_parameters(), read_restored(), differences(), close())
and list it in the module's CONTRACTS; give its oracle a place in tests/corpus/oracle.py. Its
servers are session fixtures named in `servers` (tests/fixtures/). Nothing else changes: every
test here runs on it, and test_every_registered_engine_has_a_contract fails until it exists.

Speed: one scenario per contract (a full and an incremental, made once for the module); tests
that damage a repository work on a copy of it.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.contract.harness import EngineContract, all_contracts
from tests.integration.test_flows import read_artifact
from vaultflow.blocks import BackupRepository
from vaultflow.blocks.registry import TargetBlock
from vaultflow.compare import CORRECT
from vaultflow.engines import registry
from vaultflow.engines.base import BackupContext
from vaultflow.errors import ChainBrokenError, ConfigError, IntegrityError, RefusedError
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.incremental_backup import incremental_backup
from vaultflow.flows.prune import prune
from vaultflow.flows.restore import restore
from vaultflow.flows.restore_drill import restore_drill
from vaultflow.flows.verify import verify
from vaultflow.manifest import BackupKind, Manifest, new_backup_id
from vaultflow.repository import Repository
from vaultflow.source import held_databases
from vaultflow.stores import LocalStore

pytestmark = pytest.mark.usefixtures("prefect_api")

CONTRACTS = all_contracts()


@dataclass
class Scenario:
    """A full backup, a change, an incremental-backup run: made once per contract."""

    contract: EngineContract
    target: TargetBlock
    repo_dir: Path
    full: dict[str, Any]  # the full-backup run's result
    at_full: Any  # the oracle's reading of the source when the full was taken
    second: dict[str, Any]  # the incremental-backup run's result (an incremental, or a full)
    at_second: Any

    def repository(self, repo_dir: Path | None = None, **policy: Any) -> BackupRepository:
        return BackupRepository(local_path=str(repo_dir or self.repo_dir), **policy)

    def copy(self, tmp_path: Path) -> Path:
        """A copy of the scenario's repository, for tests that damage or prune it."""
        return Path(shutil.copytree(self.repo_dir, tmp_path / "repo"))

    def catalog(self, repo_dir: Path | None = None) -> list[Manifest]:
        repo = Repository(LocalStore(repo_dir or self.repo_dir))
        return repo.catalog(self.contract.engine, self.target.name).manifests


@pytest.fixture(scope="module")
def scenario(contract: EngineContract, prefect_server, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    repo_dir = tmp_path_factory.mktemp(f"contract-{contract.id}") / "repo"
    target = contract.target()
    repository = BackupRepository(local_path=str(repo_dir))
    contract.write()
    full = full_backup(target=target, repository=repository)
    at_full = contract.read_source()
    contract.change()
    second = incremental_backup(target=target, repository=repository)
    return Scenario(contract, target, repo_dir, full, at_full, second, contract.read_source())


def restored_by_oracle(scenario: Scenario, expected_id: str, label: str, **parameters: Any) -> tuple[dict, Any]:
    """Run the restore flow (to the contract's place for `label`) and check it restored
    `expected_id`; its result and the oracle's reading of the copy."""
    contract = scenario.contract
    result = restore(
        target=scenario.target, repository=scenario.repository(), **contract.restore_parameters(label), **parameters
    )
    assert result["backup_id"] == expected_id
    assert result["comparison"] and {row["status"] for row in result["comparison"]} <= set(CORRECT), (
        f"vaultflow's own comparison: {result['comparison']}"
    )
    return result, contract.read_restored(result["restored"])


def test_every_registered_engine_has_a_contract():
    covered = {c.engine for c in CONTRACTS}
    missing = [name for name in registry.names() if name not in covered]
    assert not missing, (
        f"engines without a contract fixture: {missing}; add tests/contract/engines/<engine>.py "
        "(see this module's docstring)"
    )


def test_full_backup_restores_what_the_source_held(scenario: Scenario):
    full, contract = scenario.full, scenario.contract
    assert (full["kind"], full["parent_id"], full["fell_back_to_full"]) == ("full", None, None)
    assert full["objects"] > 0 and 0 < full["stored_size"]
    assert contract.differences(scenario.at_full, scenario.at_second), "the change must show to the oracle"

    _, restored = restored_by_oracle(scenario, full["backup_id"], "full", backup_id=full["backup_id"])
    assert contract.differences(scenario.at_full, restored) == []
    assert contract.differences(scenario.at_second, restored), "the restore is the backup, not today's source"


def test_incremental_takes_the_changes_or_a_full_saying_why(scenario: Scenario):
    second, full, contract = scenario.second, scenario.full, scenario.contract
    if contract.incremental:
        assert (second["kind"], second["parent_id"], second["fell_back_to_full"]) == (
            "incremental",
            full["backup_id"],
            None,
        )
    else:
        assert (second["kind"], second["parent_id"]) == ("full", None)
        assert re.search(contract.no_incremental, second["fell_back_to_full"] or ""), second["fell_back_to_full"]
    assert [m.id for m in scenario.catalog()] == [full["backup_id"], second["backup_id"]]

    _, restored = restored_by_oracle(scenario, second["backup_id"], "latest")  # backup_id: 'latest'
    assert contract.differences(scenario.at_second, restored) == []


def test_incremental_without_a_usable_parent_takes_a_full_and_says_why(scenario: Scenario, tmp_path: Path):
    contract, target = scenario.contract, scenario.target
    first = incremental_backup(target=target, repository=scenario.repository(tmp_path / "empty"))
    assert (first["kind"], first["parent_id"]) == ("full", None)
    why = first["fell_back_to_full"] or ""
    assert re.search(
        f"no backup of {re.escape(target.name)} yet" if contract.incremental else contract.no_incremental,
        why,
    ), why

    if not contract.incremental:
        engine, repo = target.engine(), Repository(LocalStore(tmp_path / "direct"))
        with pytest.raises(ChainBrokenError):
            engine.incremental_backup(BackupContext(repository=repo, log=lambda line: None), BackupKind.INCREMENTAL)
        assert not (tmp_path / "direct").exists() or not list((tmp_path / "direct").rglob("*.*")), (
            "a refused incremental writes nothing"
        )
        return

    broken = scenario.copy(tmp_path)
    full_id, incr_id = scenario.full["backup_id"], scenario.second["backup_id"]
    manifests = {m.id: m for m in scenario.catalog(broken)}
    repo = Repository(LocalStore(broken))
    (broken / repo.object_key(manifests[full_id], "manifest.json")).unlink()  # the chain's full is gone
    with pytest.raises(IntegrityError, match=f"{re.escape(incr_id)}/\\(chain\\): chain broken"):
        verify(repository=scenario.repository(broken), target=target)
    again = incremental_backup(target=target, repository=scenario.repository(broken))
    assert (again["kind"], again["parent_id"]) == ("full", None)
    assert again["fell_back_to_full"], "the run says why it took a full"


def test_restore_drill_of_the_latest_backup_matches(scenario: Scenario):
    contract, target = scenario.contract, scenario.target
    drill = restore_drill(target=target, repository=scenario.repository(), rto_objective_s=600)
    assert drill["backup_id"] == scenario.second["backup_id"] and drill["rto_met"] and drill["tables"] > 0
    rows = read_artifact(f"drill-{contract.engine}-{target.name}")
    checked = [r for r in rows if r["database"] != "(all)"]
    assert checked and {r["status"] for r in checked} <= set(CORRECT), rows
    assert [r["status"] for r in rows if r["database"] == "(all)"] == ["met"]


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_names_a_corrupt_object_and_a_drill_refuses_it(scenario: Scenario, tmp_path: Path):
    target = scenario.target
    repo_dir = scenario.copy(tmp_path)
    repository = scenario.repository(repo_dir)
    clean = verify(repository=repository, target=target)
    assert clean["problems"] == [] and clean["backups"] == 2

    full = next(m for m in scenario.catalog(repo_dir) if m.id == scenario.full["backup_id"])
    victim = max(full.objects, key=lambda o: o.stored_size)
    flip_a_byte(repo_dir / Repository(LocalStore(repo_dir)).object_key(full, victim.key))

    assert verify(repository=repository, target=target, deep=False)["problems"] == [], "a quick check sees sizes only"
    with pytest.raises(IntegrityError, match=re.escape(f"{full.id}/{victim.key}")):
        verify(repository=repository, target=target)
    with pytest.raises(IntegrityError, match=re.escape(victim.key)):
        restore_drill(target=target, repository=repository, backup_id=full.id, rto_objective_s=600)


def test_prune_deletes_what_the_policy_says_and_keeps_chains(scenario: Scenario, tmp_path: Path):
    contract, target = scenario.contract, scenario.target
    repo_dir = scenario.copy(tmp_path)
    repository = scenario.repository(
        repo_dir, keep_last=1, keep_daily=None, keep_weekly=None, keep_monthly=None, orphan_grace="0s"
    )
    full_id, second_id = scenario.full["backup_id"], scenario.second["backup_id"]
    repo = Repository(LocalStore(repo_dir))
    killed = repo.backup_prefix(contract.engine, target.name, new_backup_id(BackupKind.FULL)) + "payload.zst"
    (repo_dir / killed).parent.mkdir(parents=True)
    (repo_dir / killed).write_bytes(b"a killed run's payload, never committed")

    pruned = prune(repository=repository, target=target)
    chained = scenario.second["parent_id"] == full_id
    assert sorted(pruned["kept"]) == ([full_id, second_id] if chained else [second_id])
    assert pruned["deleted"] == ([] if chained else [full_id])
    assert pruned["orphan_objects"] == 1 and not (repo_dir / killed).exists()
    assert [m.id for m in scenario.catalog(repo_dir)] == sorted(pruned["kept"])
    for backup_id in pruned["deleted"]:
        assert not (repo_dir / repo.backup_prefix(contract.engine, target.name, backup_id)).exists()

    third = full_backup(target=target, repository=repository)
    pruned = prune(repository=repository, target=target)
    assert pruned["kept"] == [third["backup_id"]]
    assert sorted(pruned["deleted"]) == ([full_id, second_id] if chained else [second_id])
    assert [m.id for m in scenario.catalog(repo_dir)] == [third["backup_id"]]
    assert verify(repository=repository, target=target)["problems"] == []


def claim_for_another_source(repo_dir: Path, manifest: Manifest, source: str) -> None:
    """Rewrite `manifest`'s recorded source in the repository at `repo_dir`: as if another server
    (or database set) behind the same target name had taken it."""
    path = repo_dir / Repository(LocalStore(repo_dir)).object_key(manifest, "manifest.json")
    doc = json.loads(path.read_text())
    doc["source"] = source
    path.write_text(json.dumps(doc))


def test_a_backup_from_another_source_is_refused_unless_the_run_accepts_it(scenario: Scenario, tmp_path: Path):
    contract, target = scenario.contract, scenario.target
    taken = scenario.catalog()
    own = {m.source for m in taken}
    assert len(own) == 1 and None not in own, f"every backup records one source: {own}"
    repo_dir = scenario.copy(tmp_path)
    repository = scenario.repository(repo_dir)
    newest, elsewhere = taken[-1], "elsewhere.example:1, databases other"
    claim_for_another_source(repo_dir, newest, elsewhere)

    (source,) = own
    for flow in (full_backup, incremental_backup):
        with pytest.raises(ConfigError) as refused:
            flow(target=target, repository=repository)
        message = str(refused.value)
        assert "\n" not in message
        for part in (f"{contract.engine}/{target.name}", repr(elsewhere), repr(source), newest.id, "target_name"):
            assert part in message, (part, message)
        assert "accept_new_source" in message and "--accept-new-source" in message
    assert [m.id for m in scenario.catalog(repo_dir)] == [m.id for m in taken], "a refused backup writes nothing"

    # The escape hatch: the server moved. An incremental still never chains onto the other source.
    moved = incremental_backup(target=target, repository=repository, accept_new_source=True)
    assert (moved["kind"], moved["parent_id"]) == ("full", None)
    if contract.incremental:
        assert f"taken from {elsewhere!r}" in (moved["fell_back_to_full"] or ""), moved["fell_back_to_full"]
    after = scenario.catalog(repo_dir)
    assert after[-1].id == moved["backup_id"] and after[-1].source == source
    again = incremental_backup(target=target, repository=repository)  # the target's source from now on
    assert again["kind"] == ("incremental" if contract.incremental else "full")
    if contract.incremental:
        assert again["parent_id"] == moved["backup_id"]


def test_a_restore_with_a_block_listing_none_of_the_backups_databases_is_refused(scenario: Scenario):
    target = scenario.target
    if "databases" not in type(target).model_fields:
        pytest.skip(f"{type(target).__name__} has no databases list to disagree with a backup")
    held = sorted(held_databases(scenario.catalog()[0]))
    other = target.model_copy(update={"databases": ["vf_not_in_this_backup"]})
    with pytest.raises(RefusedError) as refused:
        restore(
            target=other,
            repository=scenario.repository(),
            backup_id=scenario.full["backup_id"],
            **scenario.contract.restore_parameters("refused"),
        )
    message = str(refused.value)
    assert "vf_not_in_this_backup" in message and ", ".join(held) in message and "nothing was restored" in message
