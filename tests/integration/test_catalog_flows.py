"""The catalog keeps every check: through Prefect (test harness) on real redis-servers, a failed
drill and a later passing verify both stay in the repository and in the catalog artifact; a
broken chain or a failed verify shows as not restorable; prune forgets every check of a backup
it deletes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from vaultflow.blocks import BackupRepository, RedisTarget
from vaultflow.errors import IntegrityError, RefusedError
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.incremental_backup import incremental_backup
from vaultflow.flows.prune import prune
from vaultflow.flows.restore_drill import restore_drill
from vaultflow.flows.verify import verify
from vaultflow.repository import Repository
from vaultflow.stores.local import LocalStore

pytestmark = pytest.mark.usefixtures("prefect_api")


def read_catalog(engine: str, target: str) -> tuple[dict[str, dict], str]:
    """(backup id -> row, description) of the newest catalog artifact of `engine`/`target`,
    read back through the Prefect client."""
    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"catalog-{engine}-{target}"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert artifact.type == "table", artifact.type
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    return {row["backup"]: row for row in rows}, artifact.description or ""


def run_link(record: dict) -> str:
    """The short markdown link the catalog shows for a check record's run."""
    assert record["ui_url"] and record["flow_run_id"] in record["ui_url"], record
    return f"[run]({record['ui_url']})"


def test_a_failed_drill_then_a_passing_verify_both_stay_visible(fresh_redis, tmp_path: Path):
    server = fresh_redis(name="catalog-checks")  # local mode, appendonly yes: real incrementals
    server.client().set("user:1000", "Alice")
    target = RedisTarget(host=server.host, port=server.port, data_dir=str(server.directory), target_name="cat")
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    full = full_backup(target=target, repository=repository)["backup_id"]
    server.client().set("user:1001", "Bob")
    incr = incremental_backup(target=target, repository=repository)
    assert (incr["kind"], incr["parent_id"]) == ("incremental", full)
    incr = incr["backup_id"]

    with pytest.raises(RefusedError, match="missed the RTO"):
        restore_drill(target=target, repository=repository, rto_objective_s=0.000001)
    assert verify(repository=repository, target=target)["problems"] == []

    checks = Repository(LocalStore(tmp_path / "repo")).last_checks("redis", "cat")
    assert {backup_id: set(kinds) for backup_id, kinds in checks.items()} == {
        full: {"verify"},
        incr: {"drill", "verify"},
    }
    drill, verified = checks[incr]["drill"], checks[incr]["verify"]
    assert drill["result"] == "FAILED" and drill["rto_objective_s"] == 0.000001 and drill["seconds"] > 0.000001
    assert drill["detail"].endswith(": RTO missed (objective 0.001 ms)"), drill["detail"]
    assert verified["result"] == "ok" and verified["flow_run_id"] != drill["flow_run_id"]
    assert (tmp_path / "repo/redis/cat/checks" / incr / "drill.json").is_file()

    rows, description = read_catalog("redis", "cat")
    assert list(rows) == [incr, full]
    assert (
        rows[incr]["last_drill"].startswith("FAILED · ")
        and " of 0.001 ms RTO: RTO missed · " in rows[incr]["last_drill"]
    )
    assert rows[incr]["last_drill"].endswith(run_link(drill)), rows[incr]
    assert rows[incr]["last_verify"].startswith("ok · ") and rows[incr]["last_verify"].endswith(run_link(verified))
    assert rows[full]["last_drill"] == "never" and rows[full]["last_verify"].startswith("ok · ")
    assert rows[incr]["restorable"] == rows[full]["restorable"] == "yes"
    assert re.fullmatch(r"\[run\]\(http\S+\)", rows[incr]["made_by"]), rows[incr]["made_by"]
    assert rows[incr]["age"].endswith(" s") and rows[incr]["parent"] == full
    assert f"Newest restorable backup: **{incr}** (incremental, finished " in description, description

    # The full's manifest breaks: the incremental no longer restores, and the catalog says so.
    (tmp_path / "repo/redis/cat/backups" / full / "manifest.json").write_text("{broken")
    with pytest.raises(IntegrityError, match="unreadable|manifest"):
        verify(repository=repository, target=target)
    rows, description = read_catalog("redis", "cat")
    assert rows[incr]["restorable"].startswith(f"NO: chain broken: backup {full} (the parent of {incr}) is unreadable")
    assert rows[incr]["last_drill"].startswith("FAILED · "), "a later verify does not hide the failed drill"
    assert rows[incr]["last_verify"].startswith("FAILED · ")
    [unreadable] = [row for key, row in rows.items() if key not in (full, incr)]
    assert unreadable["kind"] == "UNREADABLE" and unreadable["restorable"].startswith("NO: ")
    assert "**No restorable backup**" in description, description


def test_a_backup_that_failed_its_verify_is_not_restorable_in_the_catalog(redis_source, tmp_path: Path):
    redis_source.client().set("user:1000", "Alice")
    target = RedisTarget(host=redis_source.host, port=redis_source.port, target_name="cat-verify")
    repository = BackupRepository(local_path=str(tmp_path / "repo"))
    older = full_backup(target=target, repository=repository)["backup_id"]
    newer = full_backup(target=target, repository=repository)["backup_id"]
    objects = [p for p in (tmp_path / "repo/redis/cat-verify/backups" / newer).rglob("*.zst")]
    assert objects, "the backup wrote payload objects"
    for path in objects:
        path.write_bytes(b"not what the manifest says")  # a corrupted object, as a bad disk leaves it
    one_each = f"{len(objects)} problem{'' if len(objects) == 1 else 's'} in "  # '1 problem', never '1 problems'
    with pytest.raises(IntegrityError, match=f"^{one_each}"):
        verify(repository=repository, target=target)

    record = Repository(LocalStore(tmp_path / "repo")).last_checks("redis", "cat-verify")[newer]["verify"]
    assert record["result"] == "FAILED"
    rows, description = read_catalog("redis", "cat-verify")
    failed_at = record["time"][:16].replace("T", " ")
    assert rows[newer]["restorable"] == f"NO: verify FAILED at {failed_at} UTC", rows[newer]
    assert rows[older]["restorable"] == "yes"
    assert f"Newest restorable backup: **{older}** (full, " in description, description


def test_prune_forgets_every_check_of_a_backup_it_deletes(redis_source, tmp_path: Path):
    redis_source.client().set("user:1000", "Alice")
    target = RedisTarget(host=redis_source.host, port=redis_source.port, target_name="cat-prune")
    repository = BackupRepository(
        local_path=str(tmp_path / "repo"), keep_last=1, keep_daily=None, keep_weekly=None, keep_monthly=None
    )
    old = full_backup(target=target, repository=repository)["backup_id"]
    new = full_backup(target=target, repository=repository)["backup_id"]
    restore_drill(target=target, repository=repository, backup_id=old, rto_objective_s=600)
    verify(repository=repository, target=target)
    checks_dir = tmp_path / "repo/redis/cat-prune/checks"
    # and a record in the older one-object layout, as an earlier vaultflow wrote it
    (checks_dir / f"{old}.json").write_text(json.dumps({"kind": "quick-verify", "result": "ok", "time": "x"}))
    repo = Repository(LocalStore(tmp_path / "repo"))
    assert {k: set(v) for k, v in repo.last_checks("redis", "cat-prune").items()} == {
        old: {"drill", "verify", "quick-verify"},
        new: {"verify"},
    }

    assert prune(repository=repository, target=target)["deleted"] == [old]
    assert {k: set(v) for k, v in repo.last_checks("redis", "cat-prune").items()} == {new: {"verify"}}
    assert sorted(p.name for p in checks_dir.iterdir()) == [new]
    rows, _ = read_catalog("redis", "cat-prune")
    assert list(rows) == [new]
