"""The one chain walk (vaultflow.chain): parents resolved, a missing or unreadable parent named,
loops and kind rules refused, the engine's own rules applied, chains full-first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vaultflow.chain import faults, walk, with_ancestors
from vaultflow.engines.postgres.consistency import PostgresLogicalConsistency, PostgresPhysicalConsistency
from vaultflow.engines.redis.consistency import RedisAofConsistency
from vaultflow.errors import ChainBrokenError
from vaultflow.manifest import BackupKind, BackupMode, Manifest, new_backup_id
from vaultflow.repository import Catalog, CatalogProblem
from vaultflow.retention import BackupRef

F, I, D = BackupKind.FULL, BackupKind.INCREMENTAL, BackupKind.DIFFERENTIAL
T0 = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)


def physical(
    at: int,
    kind: BackupKind = F,
    parent: Manifest | str | None = None,
    *,
    system: str = "7001",
    timeline: int = 1,
    target: str = "prod",
) -> Manifest:
    when = T0 + timedelta(hours=at)
    return Manifest(
        id=new_backup_id(kind, when),
        engine="postgres",
        target=target,
        kind=kind,
        mode=BackupMode.PHYSICAL,
        parent_id=parent.id if isinstance(parent, Manifest) else parent,
        started_at=when,
        finished_at=when,
        objects=[],
        consistency=PostgresPhysicalConsistency(
            start_lsn="0/2000028",
            stop_lsn="0/2000100",
            timeline=timeline,
            start_wal_file="000000010000000000000002",
            checkpoint_lsn="0/2000060",
            system_identifier=system,
        ),
    )


def aof(at: int, kind: BackupKind = F, parent: Manifest | None = None, base: str = "a.base.rdb") -> Manifest:
    when = T0 + timedelta(hours=at)
    return Manifest(
        id=new_backup_id(kind, when),
        engine="redis",
        target="cache",
        kind=kind,
        mode=BackupMode.AOF,
        parent_id=parent.id if parent else None,
        started_at=when,
        finished_at=when,
        objects=[],
        consistency=RedisAofConsistency(
            aof_dir="appendonlydir",
            aof_filename="appendonly.aof",
            base=base,
            base_format="rdb",
            base_size=9,
            base_head_sha256="ab",
            incr_files=[],
            cuts={},
            tail_sha256={},
            pieces=[],
        ),
    )


def catalog_of(*manifests: Manifest, problems: tuple[CatalogProblem, ...] = ()) -> Catalog:
    return Catalog(manifests=sorted(manifests, key=lambda m: m.id), problems=list(problems))


def test_chains_resolve_full_first() -> None:
    full = physical(0)
    i1 = physical(1, I, full)
    i2 = physical(2, I, i1)
    diff = physical(3, D, full)
    catalog = catalog_of(full, i1, i2, diff)
    assert catalog.chain(i2) == [full, i1, i2]
    assert catalog.chain(diff) == [full, diff]
    assert catalog.chain(full) == [full]
    assert all(catalog.chain_problem(m) is None for m in (full, i1, i2, diff))


def test_missing_and_unreadable_parents_are_named() -> None:
    full = physical(0)
    i1 = physical(1, I, full)
    i2 = physical(2, I, i1)
    with pytest.raises(ChainBrokenError) as broken:
        catalog_of(full, i2).chain(i2)
    assert str(broken.value) == (
        f"cannot restore {i2.id}: backup {i1.id} (the parent of {i2.id}) is missing from "
        "the repository; restore another backup (a full one, or one whose chain is intact)"
    )
    unreadable = catalog_of(
        full, i2, problems=(CatalogProblem(f"postgres/prod/backups/{i1.id}/manifest.json", "not valid JSON"),)
    )
    with pytest.raises(
        ChainBrokenError, match=f"backup {i1.id} \\(the parent of {i2.id}\\) is unreadable \\(not valid JSON\\)"
    ):
        unreadable.chain(i2)
    assert catalog_of(i1, i2).chain_problem(i2) == (
        f"chain broken: cannot restore {i2.id}: backup {full.id} (the parent of {i1.id}) is missing from the "
        "repository; restore another backup (a full one, or one whose chain is intact)"
    )


def test_loops_and_kind_rules() -> None:
    a_id, b_id = new_backup_id(I, T0 + timedelta(hours=1)), new_backup_id(I, T0 + timedelta(hours=2))
    a, b = physical(1, I, b_id), physical(2, I, a_id)
    with pytest.raises(ChainBrokenError, match=f"cannot restore {a.id}: its parent links loop at {a.id}"):
        catalog_of(a, b).chain(a)
    selfish = physical(3, I, new_backup_id(I, T0 + timedelta(hours=3)))
    with pytest.raises(ChainBrokenError, match="loop"):
        catalog_of(selfish).chain(selfish)
    orphan = physical(4, I)
    with pytest.raises(ChainBrokenError, match=f"incremental backup {orphan.id} names no parent"):
        catalog_of(orphan).chain(orphan)
    full = physical(0)
    incr = physical(1, I, full)
    diff_on_incr = physical(2, D, incr)
    with pytest.raises(
        ChainBrokenError,
        match=f"differential backup {diff_on_incr.id} rests on {incr.id}, a "
        "incremental backup; a differential's parent is a full backup",
    ):
        catalog_of(full, incr, diff_on_incr).chain(diff_on_incr)
    full_with_parent = physical(5, F, full)
    with pytest.raises(ChainBrokenError, match=f"full backup {full_with_parent.id} names a parent"):
        catalog_of(full, full_with_parent).chain(full_with_parent)


def test_a_chain_is_one_engine_target_and_mode() -> None:
    full = physical(0)
    other_target = physical(1, I, full, target="staging")
    with pytest.raises(
        ChainBrokenError,
        match=f"parent {full.id} of {other_target.id} is a physical backup of "
        "postgres/prod, not a physical backup of postgres/staging",
    ):
        catalog_of(full, other_target).chain(other_target)
    logical = Manifest(
        id=full.id,
        engine="postgres",
        target="prod",
        kind=F,
        mode=BackupMode.LOGICAL,
        started_at=full.started_at,
        finished_at=full.finished_at,
        objects=[],
        consistency=PostgresLogicalConsistency(),
    )
    incr = physical(1, I, full)
    with pytest.raises(ChainBrokenError, match="is a logical backup of postgres/prod, not a physical backup"):
        catalog_of(logical, incr).chain(incr)


def test_engine_rules_system_identifier_timeline_and_aof_base() -> None:
    full = physical(0)
    replaced = physical(1, I, full, system="9009")
    with pytest.raises(ChainBrokenError, match="system identifier 9009, its parent .* of 7001: the chain mixes"):
        catalog_of(full, replaced).chain(replaced)
    promoted = physical(1, I, full, timeline=2)
    with pytest.raises(ChainBrokenError, match="on timeline 2, its parent .* on timeline 1"):
        catalog_of(full, promoted).chain(promoted)
    base = aof(0)
    same, rewritten = aof(1, I, base), aof(2, I, base, base="b.base.rdb")
    assert catalog_of(base, same).chain(same) == [base, same]
    with pytest.raises(
        ChainBrokenError, match=f"backup {base.id} \\(the parent of {rewritten.id}\\) is not on AOF base b.base.rdb"
    ):
        catalog_of(base, rewritten).chain(rewritten)


def test_faults_and_ancestors_for_retention_refs() -> None:
    def ref(at: int, kind: BackupKind = F, parent: BackupRef | str | None = None) -> BackupRef:
        when = T0 + timedelta(hours=at)
        return BackupRef(new_backup_id(kind, when), kind, parent.id if isinstance(parent, BackupRef) else parent, when)

    full = ref(0)
    i1, gone = ref(1, I, full), ref(2, I, "20261129T010000.000Z-F")
    i2, child_of_gone = ref(3, I, i1), ref(4, I, gone)
    found = faults([full, i1, i2, gone, child_of_gone])
    assert found[full.id] is None and found[i1.id] is None and found[i2.id] is None
    assert found[gone.id].reason() == "chain broken: parent 20261129T010000.000Z-F is missing"
    assert found[child_of_gone.id].reason() == f"chain broken: parent {gone.id} is broken"
    assert with_ancestors({i2.id}, {r.id: r for r in (full, i1, i2)}) == {full.id, i1.id, i2.id}
    links, fault = walk(i2, {r.id: r for r in (full, i1, i2)}.get)
    assert [r.id for r in links] == [full.id, i1.id, i2.id] and fault is None
