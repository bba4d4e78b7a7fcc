"""`vaultflow` errors: one `error:` line on stderr, exit status 1 (the operation failed) or 2 (a
usage error), never a traceback, and an unknown block name found before any flow run starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

from vaultflow.blocks import PostgresTarget
from vaultflow.cli import app

pytestmark = pytest.mark.usefixtures("prefect_api")
runner = CliRunner()


def error_line(result) -> str:
    """The one line the command wrote on stderr; fails when it wrote more, or a traceback."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def flow_runs_named(like: str) -> list:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=like)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed command's code in a child process, as a shell runs it."""
    return subprocess.run(
        [sys.executable, "-c", "from vaultflow.entry import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), **(env or {})},
    )


def test_unknown_blocks_are_usage_errors_found_before_any_run(tmp_path: Path):
    result = runner.invoke(app, ["backup", "-t", "nosuch-cli", "--repo-path", str(tmp_path / "repo")])
    assert result.exit_code == 2
    line = error_line(result)
    assert "no target block named 'nosuch-cli'" in line and "postgres-target/nosuch-cli" in line
    assert "`prefect block ls`" in line
    assert flow_runs_named("%nosuch-cli%") == [], "no flow run may start for an unknown block"
    assert not (tmp_path / "repo").exists()

    PostgresTarget(host="127.0.0.1", port=free_port(), databases=["x"]).save("cli-known", overwrite=True)
    result = runner.invoke(app, ["verify", "-r", "no-such-repo"])
    assert result.exit_code == 2
    assert "no block named 'backup-repository/no-such-repo'" in error_line(result)
    result = runner.invoke(app, ["restore", "-t", "cli-known", "-r", "no-such-repo"])
    assert result.exit_code == 2 and "backup-repository/no-such-repo" in error_line(result)
    result = runner.invoke(app, ["list", "-r", "no-such-repo"])
    assert result.exit_code == 2 and "backup-repository/no-such-repo" in error_line(result)


def test_an_ambiguous_target_name_is_one_line_in_the_installed_command(tmp_path: Path):
    """Blocks of two kinds named alike: exit 2 and the one error line, also from the command a
    shell runs (where Prefect, sending the loaded blocks' events at exit, printed a second line:
    "EventsWorker - Still processing items")."""
    from vaultflow.blocks import RedisTarget

    PostgresTarget(host="127.0.0.1", port=free_port(), databases=["x"]).save("cli-twice", overwrite=True)
    RedisTarget(host="127.0.0.1", port=free_port()).save("cli-twice", overwrite=True)
    result = cli("backup", "-t", "cli-twice", "--repo-path", str(tmp_path / "repo"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [line := result.stderr.strip()], result.stderr
    assert line.startswith("error: ") and "Traceback" not in result.stdout
    assert "target 'cli-twice' is ambiguous" in line and "postgres-target/cli-twice, redis-target/cli-twice" in line
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    "args, says",
    [
        (["backup", "-t", "x", "--bogus"], "No such option: --bogus"),
        (["backup", "-t", "x", "--repo-path", "r", "--kind", "weekly"], "'weekly' is not one of"),
        (["archive-logs", "-t", "x", "--repo-path", "r", "--follow", "-1"], "--follow"),
        (["list"], "give --repository NAME"),
        (["upload", "--repo-path", "."], "give exactly one of --to NAME and --to-path DIR"),
        (["restore", "-t", "x", "--repo-path", ".", "--to-time", "not a time"], "--to-time"),
        (["restore", "-t", "x", "--repo-path", ".", "--overwrite"], "--overwrite replaces what --into names"),
        *(
            (["drill", "-t", "x", "--repo-path", ".", "--rto", rto], "is not a recovery time objective")
            for rto in ("-5", "0", "nan", "inf", "1e400")
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: list[str], says: str):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert says in line and "--help` lists the options" in line


def test_a_restore_option_of_another_engine_is_a_usage_error_found_before_any_run(tmp_path: Path):
    """--to-time on a Redis target: not a failed run (exit 1) but a usage error naming the flag
    and the engines that take it."""
    from vaultflow.blocks import RedisTarget

    RedisTarget(host="127.0.0.1", port=free_port()).save("cli-redis-opt", overwrite=True)
    (tmp_path / "repo").mkdir()
    result = runner.invoke(
        app,
        [
            "restore",
            "-t",
            "redis-target/cli-redis-opt",
            "--repo-path",
            str(tmp_path / "repo"),
            "--to-time",
            "2026-01-05",
        ],
    )
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert "--to-time is a restore option of mongodb and postgres targets, not of redis targets" in line, line
    assert flow_runs_named("%cli-redis-opt%") == [], "no flow run may start for an option the target does not take"


@pytest.mark.parametrize(
    "command",
    [
        ["list"],
        ["verify"],
        ["prune", "--dry-run"],
        ["restore", "-t", "x"],
        ["drill", "-t", "x"],
        ["upload", "--to-path", "y"],
    ],
)
def test_a_missing_repo_path_directory_is_a_usage_error(command: list[str], tmp_path: Path):
    """An unmounted backup volume must not look like a healthy empty repository."""
    gone = tmp_path / "unmounted"
    result = runner.invoke(app, [*command, "--repo-path", str(gone)])
    assert result.exit_code == 2, result.output
    assert f"repository directory {gone} does not exist" in error_line(result)
    assert not gone.exists()


def test_a_repo_path_through_a_file_says_so(tmp_path: Path):
    """A file where the repository's directory (or a parent) should be: not "does not exist"."""
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    for path in (blocker, blocker / "repo"):
        line = error_line(runner.invoke(app, ["list", "--repo-path", str(path)]))
        assert f"{blocker} is a file, not a directory" in line and "does not exist" not in line, line


def test_a_url_with_a_bad_port_is_a_usage_error_naming_it():
    result = runner.invoke(app, ["backup", "-t", "postgresql://u@127.0.0.1:99999/shop", "--repo-path", "r"])
    assert result.exit_code == 2, result.output
    line = error_line(result)
    assert "postgresql:// URL 'postgresql://u@127.0.0.1:99999/shop': Port out of range" in line, line


def test_an_empty_repository_lists_as_no_backups(tmp_path: Path):
    """An existing directory with no backup yet: one line saying so, not a header alone."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["list", "--repo-path", str(empty)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"no backups in local:{empty}", result.stdout


def test_an_unreachable_prefect_api_is_one_line_naming_it():
    url = f"http://127.0.0.1:{free_port()}/api"
    done = cli("backup", "-t", "prod", "-r", "prod", env={"PREFECT_API_URL": url})
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
    assert done.stderr.startswith(f"error: the Prefect API at {url} does not answer")
    assert "prefect server start" in done.stderr and "PREFECT_API_URL" in done.stderr
    # vaultflow's own check asked once (api_problem's line), not the client's minute of retries.


def test_a_failed_flow_run_ends_with_its_state_message_as_the_line(tmp_path: Path):
    port = free_port()  # nothing listens there
    PostgresTarget(host="127.0.0.1", port=port, user="u", databases=["shop"]).save("cli-down", overwrite=True)
    done = cli("backup", "-t", "cli-down", "--repo-path", str(tmp_path / "repo"))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    [line] = [ln for ln in done.stderr.splitlines() if ln.startswith("error: ")]
    assert done.stderr.splitlines()[-1] == line
    assert f"127.0.0.1:{port}" in line
    [run] = flow_runs_named("%cli-down%")  # the run names carry the target (issue 12, section 4)
    assert run.state.is_failed()
    reason = run.state.message.removeprefix("Flow run encountered an exception:").strip()
    assert line == "error: " + " ".join(reason.split(": ", 1)[1].split()), (line, run.state.message)
    assert run.run_count == 1, "the CLI runs a flow once: no flow-level retries"


def test_help_documents_the_exit_statuses():
    for command in ([], ["backup"], ["restore"], ["archive-logs"], ["verify"]):
        shown = runner.invoke(app, [*command, "--help"], terminal_width=400)
        assert shown.exit_code == 0
        assert "1 the operation failed" in shown.output and "2 a usage error" in shown.output, command


def test_an_unknown_type_prefixed_target_is_found_before_any_run():
    done = cli("backup", "-t", "postgres-target/nosuch-typed", "-r", "demo")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [done.stderr.strip()], done.stderr
    assert "no block named 'postgres-target/nosuch-typed'" in done.stderr
    assert flow_runs_named("%nosuch-typed%") == [], "no flow run may start for an unknown block"


def test_a_saved_block_with_invalid_data_is_one_line_naming_the_field(tmp_path: Path):
    """rpo_hours 0 set through the API (the block form or PATCH /block_documents/<id>) is not
    a block vaultflow can use: one line naming the block and the field, no flow run."""
    block_id = PostgresTarget(host="127.0.0.1", port=free_port(), databases=["x"]).save("cli-cafe", overwrite=True)
    with get_client(sync_client=True) as client:
        document = client.read_block_document(block_id)
        data = {**document.data, "rpo_hours": 0}
        client.request("PATCH", "/block_documents/{id}", path_params={"id": block_id}, json={"data": data})
    done = cli("backup", "-t", "postgres-target/cli-cafe", "-r", "demo")  # as a shell runs it
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "error: target block postgres-target/cli-cafe cannot be loaded: rpo_hours: Input should be greater "
        "than 0; fix or delete it"
    ], done.stderr
    result = runner.invoke(app, ["backup", "-t", "cli-cafe", "--repo-path", str(tmp_path / "repo")])  # a bare name
    assert result.exit_code == 1, result.output
    assert error_line(result) == done.stderr.strip()
    assert flow_runs_named("%cli-cafe%") == [], "no flow run may start for a broken block"
    assert not (tmp_path / "repo").exists()
