"""Check records kept per backup and per kind (checks/<id>/<kind>.json), the older one-object
layout still read, prune forgetting all of them; and the catalog view built from them."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from tests.unit.test_chain import T0, physical
from vaultflow.catalog_view import catalog_view, check_cell, last_of
from vaultflow.manifest import BackupKind, Manifest
from vaultflow.repository import Catalog, CatalogProblem, Repository
from vaultflow.status import verify_failures
from vaultflow.stores.local import LocalStore
from vaultflow.summary import human_age, objective_duration

NOW = T0 + timedelta(hours=34)  # 2026-11-30 12:00 UTC


def manifest(at: int, kind: BackupKind = BackupKind.FULL, parent: Manifest | None = None) -> Manifest:
    """A postgres/t backup finished `at` hours after T0."""
    return physical(at, kind, parent, target="t")


def check(kind: str, result: str, time: str, **extra) -> dict:
    return {
        "kind": kind,
        "result": result,
        "detail": f"{kind} said {result}",
        "time": time,
        "flow_run_id": f"run-{kind}",
        "ui_url": f"http://ui/runs/flow-run/run-{kind}",
        **extra,
    }


def test_a_verify_after_a_failed_drill_keeps_both_in_objects_of_their_own(tmp_path: Path) -> None:
    repo = Repository(LocalStore(tmp_path))
    full = manifest(0)
    drill = check("drill", "FAILED", "2026-11-30T06:00:00Z", seconds=3.5, rto_objective_s=1.0)
    repo.record_check(full, drill)
    repo.record_check(full, check("verify", "ok", "2026-11-30T07:00:00Z"))
    assert repo.last_checks("postgres", "t") == {
        full.id: {"drill": drill, "verify": check("verify", "ok", "2026-11-30T07:00:00Z")}
    }
    assert sorted(p.name for p in (tmp_path / "postgres/t/checks" / full.id).iterdir()) == ["drill.json", "verify.json"]
    with pytest.raises(ValueError, match="check kind '../x'"):
        repo.record_check(full, check("../x", "ok", "2026-11-30T07:00:00Z"))


def test_old_single_object_checks_are_read_superseded_and_forgotten(tmp_path: Path) -> None:
    repo = Repository(LocalStore(tmp_path))
    full, other = manifest(0), manifest(1)
    checks = tmp_path / "postgres/t/checks"
    checks.mkdir(parents=True)
    old_drill = check("drill", "FAILED", "2026-11-29T06:00:00Z")
    (checks / f"{full.id}.json").write_text(json.dumps(old_drill))
    (checks / f"{other.id}.json").write_text("{not json")  # advisory: left out, never fatal
    assert repo.last_checks("postgres", "t") == {full.id: {"drill": old_drill}}

    # A verify leaves the old drill record in place (it is still the last drill) ...
    repo.record_check(full, check("verify", "ok", "2026-11-30T07:00:00Z"))
    assert set(repo.last_checks("postgres", "t")[full.id]) == {"drill", "verify"}
    assert (checks / f"{full.id}.json").exists()
    # ... a new drill supersedes it and deletes it.
    new_drill = check("drill", "ok", "2026-11-30T08:00:00Z", seconds=0.5, rto_objective_s=900.0)
    repo.record_check(full, new_drill)
    assert repo.last_checks("postgres", "t")[full.id]["drill"] == new_drill
    assert not (checks / f"{full.id}.json").exists()

    (checks / f"{full.id}.json").write_text(json.dumps(old_drill))  # as if left by an older version
    repo.forget_check(full)
    assert repo.last_checks("postgres", "t") == {}
    assert not (checks / full.id).exists() and not (checks / f"{full.id}.json").exists()


def test_the_view_shows_checks_side_by_side_and_a_broken_chain_as_not_restorable() -> None:
    full = manifest(-17)  # 2 d 03 h before NOW
    incr = manifest(29, BackupKind.INCREMENTAL, full)
    orphan = manifest(33, BackupKind.INCREMENTAL, incr)
    catalog = Catalog(manifests=[full, orphan])  # incr is gone: orphan's chain is broken
    checks = {
        full.id: {
            "drill": check("drill", "FAILED", "2026-11-30T06:00:00Z", seconds=75.0, rto_objective_s=60.0),
            "verify": check("verify", "ok", "2026-11-30T07:00:00Z"),
            "quick-verify": check("quick-verify", "ok", "2026-11-30T08:00:00Z"),
        }
    }
    view = catalog_view(catalog, checks, NOW)
    rows = {row["backup"]: row for row in view.rows}
    assert [row["backup"] for row in view.rows] == [orphan.id, full.id]
    assert rows[orphan.id]["restorable"].startswith(f"NO: chain broken: backup {incr.id} (the parent of")
    assert (rows[orphan.id]["last_verify"], rows[orphan.id]["last_drill"]) == ("never", "never")
    assert rows[full.id]["restorable"] == "yes" and rows[full.id]["age"] == "2 d 03 h"
    assert rows[full.id]["last_verify"] == (
        "ok (quick) · 2026-11-30 08:00 UTC · [run](http://ui/runs/flow-run/run-quick-verify)"
    )
    assert rows[full.id]["last_drill"] == (
        "FAILED · 2026-11-30 06:00 UTC · restore 1 min 15 s of 1 min 00 s RTO: RTO missed · drill said FAILED · "
        "[run](http://ui/runs/flow-run/run-drill)"
    )
    assert view.newest_restorable is full
    assert view.headline.startswith(f"Newest restorable backup: **{full.id}** (full, finished ")

    catalog.problems.append(CatalogProblem(f"postgres/t/backups/{full.id}/manifest.json", "broken JSON"))
    catalog.manifests.remove(full)
    view = catalog_view(catalog, checks, NOW)
    assert view.newest_restorable is None and view.headline.startswith("**No restorable backup**")
    assert [row["restorable"] for row in view.rows] == [
        f"NO: chain broken: backup {incr.id} (the parent of {orphan.id}) is missing from the repository",
        "NO: broken JSON",
    ]


def test_a_failed_verify_makes_a_backup_and_what_builds_on_it_not_restorable() -> None:
    older = manifest(-10)
    full = manifest(20)
    incr = manifest(29, BackupKind.INCREMENTAL, full)
    catalog = Catalog(manifests=[older, full, incr])
    checks = {
        # A drill that missed its RTO alone leaves `older` restorable.
        older.id: {"drill": check("drill", "FAILED", "2026-11-30T05:00:00Z", seconds=2.0, rto_objective_s=1.0)},
        full.id: {
            "quick-verify": check("quick-verify", "ok", "2026-11-30T06:00:00Z"),
            "verify": check("verify", "FAILED", "2026-11-30T07:00:00Z"),
        },
        incr.id: {"verify": check("verify", "ok", "2026-11-30T07:00:00Z")},
    }
    view = catalog_view(catalog, checks, NOW)
    rows = {row["backup"]: row for row in view.rows}
    assert rows[full.id]["restorable"] == "NO: verify FAILED at 2026-11-30 07:00 UTC"
    assert rows[incr.id]["restorable"] == f"NO: {full.id} in its chain: verify FAILED at 2026-11-30 07:00 UTC"
    assert rows[older.id]["restorable"] == "yes"
    assert view.newest_restorable is older
    assert view.headline.startswith(f"Newest restorable backup: **{older.id}** (full, ")

    # The newest verify decides: a later passing one makes the chain restorable again; a check
    # made after the moment judged does not count yet.
    checks[full.id]["quick-verify"] = check("quick-verify", "ok", "2026-11-30T08:00:00Z")
    assert verify_failures(catalog, checks) == {}
    assert catalog_view(catalog, checks, NOW).newest_restorable is incr
    before = verify_failures(catalog, checks, until=T0 + timedelta(hours=29.5))  # 2026-11-30 07:30
    assert before == {full.id: "verify FAILED at 2026-11-30 07:00 UTC", incr.id: before[incr.id]}
    assert before[incr.id].startswith(f"{full.id} in its chain")

    catalog.manifests.remove(older)
    checks[full.id].pop("quick-verify")
    view = catalog_view(catalog, checks, NOW)
    assert view.newest_restorable is None and view.headline.startswith("**No restorable backup**")


def test_a_drill_that_missed_a_sub_second_rto_says_so_without_rounding_it_to_zero() -> None:
    record = check("drill", "FAILED", "2026-11-30T06:00:00Z", seconds=0.24, rto_objective_s=0.001, ui_url=None)
    assert check_cell(record) == (
        "FAILED · 2026-11-30 06:00 UTC · restore 0.24 s of 1 ms RTO: RTO missed · drill said FAILED"
    )
    met = check("drill", "ok", "2026-11-30T06:00:00Z", seconds=0.24, rto_objective_s=0.5, ui_url=None)
    assert check_cell(met) == "ok · 2026-11-30 06:00 UTC · restore 0.24 s of 500 ms RTO"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.001, "1 ms"), (0.000001, "0.001 ms"), (0.25, "250 ms"), (0, "0.00 s"), (1.0, "1.0 s"), (900, "15 min 00 s")],
)
def test_objective_duration(seconds: float, text: str) -> None:
    assert objective_duration(seconds) == text


def test_a_check_cell_escapes_markdown_and_cuts_long_details() -> None:
    record = check("verify", "FAILED", "2026-11-30T07:00:00Z", ui_url=None)
    record["detail"] = "db/a_b|c.dump.zst: sha256 " + "x" * 200
    cell = check_cell(record)
    assert cell.startswith("FAILED · 2026-11-30 07:00 UTC · db/a\\_b\\|c.dump.zst: sha256 xxx")
    assert cell.endswith("...") and "[run]" not in cell
    assert check_cell(None) == "never"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "in the future"),
        (0, "0 s"),
        (59.9, "59 s"),
        (60, "1 min"),
        (3599, "59 min"),
        (3600, "1 h 00 min"),
        (86399, "23 h 59 min"),
        (86400 * 3 + 7200, "3 d 02 h"),
    ],
)
def test_human_age(seconds: float, text: str) -> None:
    assert human_age(seconds) == text


def test_the_last_check_is_the_newest_by_time_whatever_its_precision():
    """Check records had whole seconds, now milliseconds: as strings '...:00.500Z' sorts before
    '...:00Z', and two checks of one second tied (a chart once drew two drills in swapped order)."""
    whole = {"kind": "verify", "result": "ok", "time": "2026-11-30T07:00:00Z"}
    later = {"kind": "drill", "result": "FAILED", "time": "2026-11-30T07:00:00.500Z"}
    earlier = {"kind": "quick-verify", "result": "ok", "time": "2026-11-30T06:59:59.999Z"}
    assert (
        last_of({"verify": whole, "drill": later, "quick-verify": earlier}, ("verify", "drill", "quick-verify"))
        is later
    )
    assert last_of({"verify": whole, "quick-verify": earlier}, ("verify", "quick-verify")) is whole
    assert last_of({"verify": {"kind": "verify", "time": "garbled"}, "drill": earlier}, ("verify", "drill")) is earlier
