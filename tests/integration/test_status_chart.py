"""The status chart (vaultflow.history, vaultflow.chart, `vaultflow status --chart`, the status
flow's chart artifact) on a real Redis target: a full, an incremental and a differential backup
through the flows, a drill that passed and one that missed its RTO, a verify that found a
corrupted backup, and a backup run that failed (no manifest: Prefect's flow run is all there
is). The series drawn are checked against the repository's own files, read here as JSON, and
against the failed run's record in Prefect; the picture against the series."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image
from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import SecretStr
from typer.testing import CliRunner

from tests.fixtures.redis import SEED_USERS
from tests.integration.test_flows import read_markdown
from vaultflow import cli
from vaultflow.blocks import BackupRepository, RedisTarget
from vaultflow.chart import INSTALL_HINT, write_chart
from vaultflow.cli import app
from vaultflow.flows.full_backup import full_backup
from vaultflow.flows.incremental_backup import differential_backup, incremental_backup
from vaultflow.flows.restore_drill import restore_drill
from vaultflow.flows.status import chart_history, status
from vaultflow.flows.verify import verify
from vaultflow.history import BACKUP_RUN
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore

runner = CliRunner()
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def charted(prefect_server, tmp_path_factory):
    """A Redis target with a history, made once for the module through the flows: full,
    incremental, differential; a drill of the full (passed, RTO 600 s) and of the differential
    (failed: RTO 1 µs); the differential corrupted and verified (FAILED); then the target's block
    saved with a wrong password and a full backup run that fails. Blocks deleted afterwards.
    Returns a dict: name (target and repository block), repo_dir, repo, failed (the failed
    run's FlowRun), finished (UTC, after all of it)."""
    from vaultflow.testing.redis_instance import start_source_redis

    name = f"chart-{uuid.uuid4().hex[:8]}"
    server = start_source_redis(name="chart", password=uuid.uuid4().hex)
    repo_dir = tmp_path_factory.mktemp("chart") / "repo"
    target_ref, repository = f"redis-target/{name}", f"backup-repository/{name}"
    try:
        conn = server.client()
        conn.mset(SEED_USERS)
        target = RedisTarget(
            host=server.host,
            port=server.port,
            password=SecretStr(server.password),
            target_name=name,
            data_dir=str(server.directory),
        )
        target.save(name, overwrite=True)
        BackupRepository(local_path=str(repo_dir)).save(name, overwrite=True)
        full = full_backup(target=target_ref, repository=repository)
        conn.set("user:1003", "Dana")
        incremental_backup(target=target_ref, repository=repository)
        conn.rpush("events", "login", "logout")
        diff = differential_backup(target=target_ref, repository=repository)
        restore_drill(target=target_ref, repository=repository, rto_objective_s=600, backup_id=full["backup_id"])
        with pytest.raises(Exception, match="RTO"):
            restore_drill(target=target_ref, repository=repository, rto_objective_s=0.000001)
        for path in (repo_dir / "redis" / name / "backups" / diff["backup_id"]).rglob("*"):
            if path.is_file() and path.name != "manifest.json":
                path.write_bytes(b"not what the manifest says")
        with pytest.raises(Exception, match=r"problems? in"):
            verify(repository=repository, target=target_ref)
        target.model_copy(update={"password": SecretStr("not-the-password")}).save(name, overwrite=True)
        failed = full_backup.with_options(retries=0)(target=target_ref, repository=repository, return_state=True)
        assert failed.is_failed(), failed
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(failed.state_details.flow_run_id)
        yield {
            "name": name,
            "repo_dir": repo_dir,
            "repo": Repository(LocalStore(repo_dir)),
            "failed": run,
            "finished": datetime.now(UTC),
        }
    finally:
        server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)
        with get_client(sync_client=True) as client:
            for slug in ("redis-target", "backup-repository"):
                try:
                    client.delete_block_document(client.read_block_document_by_name(name, slug).id)
                except Exception:  # noqa: BLE001 - a block the setup never saved
                    pass


def from_files(repo_dir: Path, name: str) -> dict:
    """The oracle: what the repository's files say, read as plain JSON (no vaultflow code):
    backups as (id, kind, start, stored bytes, seconds), drills as (backup id, ok, seconds),
    failed verifies as (backup id, time)."""
    root = repo_dir / "redis" / name
    backups = []
    for path in sorted(root.glob("backups/*/manifest.json")):
        m = json.loads(path.read_text())
        start, end = datetime.fromisoformat(m["started_at"]), datetime.fromisoformat(m["finished_at"])
        backups.append(
            (m["id"], m["kind"], start, sum(o["stored_size"] for o in m["objects"]), (end - start).total_seconds())
        )
    records = {(p.parent.name, p.stem): json.loads(p.read_text()) for p in root.glob("checks/*/*.json")}
    drills = sorted(
        (
            (b, r["result"] == "ok", r["seconds"], datetime.fromisoformat(r["time"]))
            for (b, k), r in records.items()
            if k == "drill"
        ),
        key=lambda d: d[3],
    )
    failed_verifies = [
        (b, datetime.fromisoformat(r["time"]))
        for (b, k), r in records.items()
        if k.endswith("verify") and r["result"] != "ok"
    ]
    return {"backups": sorted(backups, key=lambda b: b[2]), "drills": drills, "failed_verifies": failed_verifies}


def only(history, name):
    [target] = [h for h in history if h.target == name]
    return target


def test_the_series_drawn_are_the_repositorys_backups_checks_and_the_failed_run(charted):
    name, repo_dir = charted["name"], charted["repo_dir"]
    expected = from_files(repo_dir, name)
    assert [b[1] for b in expected["backups"]] == ["full", "incremental", "differential"]
    assert [d[1] for d in expected["drills"]] == [True, False], "the setup made one passed and one failed drill"
    assert len(expected["failed_verifies"]) == 1

    history, notes = chart_history(charted["repo"], name, charted["finished"])
    assert notes == []
    target = only(history, name)
    assert [(p.backup_id, p.kind.value, p.time, p.stored_bytes, p.seconds) for p in target.backups] == expected[
        "backups"
    ]
    assert [(d.backup_id, d.ok, d.seconds, d.time) for d in target.drills] == expected["drills"]
    assert all(d.rto_objective_s in (600, 0.000001) for d in target.drills)
    checks = [(m.backup_id, m.time) for m in target.failures if m.kind != BACKUP_RUN]
    assert checks == expected["failed_verifies"]
    run = charted["failed"]
    [failed_run] = [m for m in target.failures if m.kind == BACKUP_RUN]
    assert failed_run.time == run.start_time and not failed_run.ok
    assert failed_run.detail.startswith(run.name + ": ") and "refused the login" in failed_run.detail

    # A window that starts after the backups: no backup drawn, the later checks and run still are.
    later = chart_history(charted["repo"], name, charted["finished"], expected["backups"][-1][2] + timedelta(seconds=1))
    windowed = only(later[0], name)
    assert windowed.backups == () and failed_run in windowed.failures

    # The picture: one marker per backup of each kind, per drill, per failure, in time order.
    [svg_path] = write_chart(history, repo_dir.parent / "chart.svg", "test", charted["finished"])
    markers = svg_markers(svg_path.read_bytes())
    for kind in ("full", "incremental", "differential"):
        assert len(markers[f"redis/{name}|stored|{kind}"]) == 1
        assert len(markers[f"redis/{name}|seconds|{kind}"]) == 1
    assert len(markers[f"redis/{name}|drill|passed"]) == 1 and len(markers[f"redis/{name}|drill|failed"]) == 1
    assert len(markers[f"redis/{name}|failure|check-failed"]) == 1
    assert len(markers[f"redis/{name}|failure|backup-run-failed"]) == 1
    xs = [markers[f"redis/{name}|stored|{k}"][0] for k in ("full", "incremental", "differential")]
    assert xs == sorted(xs), "backups left to right in the order they were taken"
    assert markers[f"redis/{name}|failure|backup-run-failed"][0] > xs[-1], "the failed run came last"


def svg_markers(svg: bytes) -> dict[str, list[float]]:
    """gid -> x of every marker matplotlib drew in that group (its <use> elements)."""
    found = {}
    for group in ET.fromstring(svg).iter(f"{SVG}g"):
        if "|" in group.get("id", ""):
            found[group.get("id")] = [float(use.get("x")) for use in group.iter(f"{SVG}use")]
    return found


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG that Pillow reads and verifies."""
    Image.open(io.BytesIO(data)).verify()
    return Image.open(io.BytesIO(data)).size


def test_cli_writes_the_chart_and_refuses_a_file_it_cannot_write(charted, tmp_path, monkeypatch):
    monkeypatch.setattr(cli.console, "width", 400)
    name, repo_dir = charted["name"], charted["repo_dir"]
    as_of = f"{charted['finished'] + timedelta(minutes=5):%Y-%m-%dT%H:%M:%S}"
    chart = tmp_path / "status.png"
    with temporary_settings(updates={PREFECT_API_URL: None}):
        result = runner.invoke(app, ["status", "--repo-path", str(repo_dir), "--as-of", as_of, "--chart", str(chart)])
    # The newest backup failed its verify; the incremental before it is restorable and recent.
    assert result.exit_code == 0, result.output
    assert f"chart of 1 target: {chart}" in result.output
    assert "note: chart: failed backup runs are not drawn" in result.output  # --repo-path: no block name
    width, height = png_size(chart.read_bytes())
    assert 600 <= width <= 1200 and 300 <= height <= 900, (width, height)
    assert 3_000 < chart.stat().st_size < 500_000

    # By the repository block (the API): the failed run is found and drawn; SVG by its name.
    svg = tmp_path / "status.svg"
    result = runner.invoke(app, ["status", "-r", name, "--as-of", as_of, "--chart", str(svg)])
    assert "chart of " in result.output and "note: chart" not in result.output, result.output
    assert svg_markers(svg.read_bytes())[f"redis/{name}|failure|backup-run-failed"]

    (tmp_path / "afile").write_text("")
    for bad, says in (
        (tmp_path / "afile" / "status.png", "does not exist (or is not a directory)"),
        (tmp_path, "that is a directory"),
        (tmp_path / "status.jpg", "name it .png or .svg"),
    ):
        refused = runner.invoke(app, ["status", "--repo-path", str(repo_dir), "--chart", str(bad)])
        lines = [line for line in refused.output.splitlines() if line.strip()]
        assert refused.exit_code == 2 and len(lines) == 1 and says in lines[0], refused.output
        assert "Traceback" not in refused.output

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as where the `chart` extra is not installed
    missing = runner.invoke(app, ["status", "--repo-path", str(repo_dir), "--chart", str(chart)])
    assert missing.exit_code == 2 and INSTALL_HINT in missing.output and len(missing.output.strip().splitlines()) == 1


def test_status_without_chart_does_not_load_matplotlib(charted, tmp_path):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from vaultflow.cli import app\n"
        f"r = CliRunner().invoke(app, ['status', '--repo-path', {str(charted['repo_dir'])!r}])\n"
        "print(r.exit_code in (0, 1), 'matplotlib' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split() == ["True", "False"], out.stdout + out.stderr


def test_status_flow_publishes_the_chart_inline(charted, prefect_api, monkeypatch):
    name = charted["name"]
    state = status(repository=f"backup-repository/{name}", as_of=charted["finished"], return_state=True)
    assert state.is_completed(), state.message
    page = read_markdown(f"status-chart-{name}")
    images = re.findall(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", page)
    assert len(images) == 1, page[:300]
    width, height = png_size(base64.b64decode(images[0]))
    assert 500 <= width <= 1100 and 250 <= height <= 800, (width, height)
    assert f"- **redis/{name}**: 3 backups, newest " in page
    assert "last drill FAILED, restore " in page and "; 2 failures" in page

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # a worker without the `chart` extra
    state = status(repository=f"backup-repository/{name}", as_of=charted["finished"], return_state=True)
    assert state.is_completed(), "the table is published and the run completes without the chart"
    page = read_markdown(f"status-chart-{name}")
    assert "No chart: matplotlib is not installed" in page and INSTALL_HINT in page and "base64" not in page
