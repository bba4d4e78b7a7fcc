"""vaultflow as `pip install vaultflow` installs it, used from a user's own Prefect project that
has its own `flows/` and `tasks/` packages (issue 12, part 7).

The wheel is built from this checkout (`uv build`: an sdist, then the wheel from it) and installed into a new virtualenv in a
temporary directory. Its third-party dependencies come from the project's venv through one path
entry (a `.pth` line: the project venv's own `.pth` files do not run, so the checkout's editable
import hook is absent and the checkout is not on the path): the only vaultflow there is the
wheel's. In the user's project, with a real Prefect API (the session's harness), a PostgreSQL
server and a process worker:

- `flows` and `tasks` are the user's packages; `vaultflow.flows`, `vaultflow.tasks`,
  `vaultflow.blocks` and `vaultflow.deployments` are the wheel's;
- `prefect block register -m vaultflow.blocks` registers the blocks from there;
- docs/tasks.md's own flow, copied verbatim into the user's `flows/`, backs up, sends the
  backup off-site and restores it (checked by an oracle: the restored rows read with psql);
- `python -m vaultflow.deployments.validate` checks the user's prefect.yaml, whose entrypoints
  are a module of the installed package (`vaultflow.flows.full_backup:full_backup`) and a file
  of the user's project; `prefect deploy --all` deploys both and a process worker runs the
  installed package's flow to completion.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.settings import PREFECT_API_URL

from vaultflow.blocks import BackupRepository, PostgresTarget

pytestmark = [pytest.mark.e2e, pytest.mark.long, pytest.mark.usefixtures("prefect_api")]  # about 2 minutes under load

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TIMEOUT = 300.0  # a CLI call imports Prefect: seconds each on a busy machine


def docs_flow() -> str:
    """The Python block of docs/tasks.md that defines the user's own flow, as written there."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "tasks.md").read_text(), re.S)
    [flow] = [block for block in blocks if "def nightly_offsite" in block]
    return flow


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv holding vaultflow's wheel built from this checkout; returns its bin dir."""
    work = tmp_path_factory.mktemp("installed")
    built = subprocess.run(
        # sdist, then the wheel from it in a temporary directory: the checkout gets no build/
        [str(BIN / "uv"), "build", "--out-dir", str(work / "dist"), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = (work / "dist").glob("vaultflow-*.whl")
    env_dir = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=TIMEOUT)
    installed = subprocess.run(
        [str(BIN / "uv"), "pip", "install", "--python", str(env_dir / "bin" / "python"), "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    site = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(site) / "_project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir / "bin"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's Prefect project with its own `flows/` and `tasks/` packages."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "__init__.py").write_text('OWNER = "the user\'s own tasks"\n')
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "__init__.py").write_text("from tasks import OWNER  # noqa: F401\n")
    (tmp_path / "flows" / "offsite.py").write_text(docs_flow())
    return tmp_path


def environment(venv: Path) -> dict[str, str]:
    """This process's environment with the virtualenv's bin first on PATH, the session's Prefect
    API, no flow retries and no PYTHONPATH."""
    env = {
        **os.environ,
        "PATH": f"{venv}{os.pathsep}{os.environ['PATH']}",
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "VAULTFLOW_FLOW_RETRIES": "0",
    }
    env.pop("PYTHONPATH", None)
    return env


def run(venv: Path, project: Path, *argv: str) -> subprocess.CompletedProcess:
    """`argv` run in the user's project with the virtualenv's environment; it must succeed."""
    done = subprocess.run(
        argv, cwd=project, env=environment(venv), capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_imports_resolve_to_the_users_packages_and_the_wheel(venv: Path, project: Path):
    shown = run(
        venv,
        project,
        "python",
        "-c",
        "import flows, tasks, vaultflow, vaultflow.flows, vaultflow.tasks, vaultflow.blocks, vaultflow.deployments\n"
        "for m in (flows, tasks, vaultflow, vaultflow.flows, vaultflow.tasks, vaultflow.blocks, vaultflow.deployments):"
        " print(m.__name__, m.__file__)\n"
        "print('owner', flows.OWNER)",
    ).stdout
    where = dict(line.split(" ", 1) for line in shown.splitlines())
    assert where["flows"] == str(project / "flows" / "__init__.py")
    assert where["tasks"] == str(project / "tasks" / "__init__.py")
    assert where["owner"] == "the user's own tasks"
    for name in ("vaultflow", "vaultflow.flows", "vaultflow.tasks", "vaultflow.blocks", "vaultflow.deployments"):
        assert where[name].startswith(str(venv.parent)), f"{name} is not the wheel's: {where[name]}"
        assert "site-packages" in where[name]
    assert not any(str(ROOT) in path for path in where.values()), shown
    # The package data the flows read (the UI's generated run names) is in the wheel.
    run(venv, project, "python", "-c", "import vaultflow.flows._names as n; assert n._ui_words()")


def test_blocks_register_and_the_docs_flow_runs_from_the_installed_package(
    venv: Path, project: Path, pg18, fresh_db, tmp_path: Path
):
    registered = run(venv, project, "python", "-m", "prefect", "block", "register", "-m", "vaultflow.blocks")
    assert "Successfully registered 5 blocks" in registered.stdout, registered.stdout
    for block in ("Backup Repository", "ClickHouse Target", "Mongo Target", "Postgres Target", "Redis Target"):
        assert block in registered.stdout, registered.stdout

    db = fresh_db(pg18)
    pg18.execute("CREATE TABLE staff (id int PRIMARY KEY, name text)", dbname=db)
    pg18.execute("INSERT INTO staff SELECT g, 'n' || g FROM generate_series(1, 250) g", dbname=db)
    PostgresTarget(
        host=pg18.host, port=pg18.port, user=pg18.user, databases=[db], bin_dir=str(pg18.client_bin_dir)
    ).save("pkg-prod", overwrite=True)
    BackupRepository(local_path=str(tmp_path / "local")).save("pkg-local", overwrite=True)
    BackupRepository(local_path=str(tmp_path / "offsite")).save("pkg-offsite", overwrite=True)
    copy = f"{db}_offsite"
    try:
        done = run(
            venv,
            project,
            "python",
            "-c",
            "from flows.offsite import nightly_offsite\n"
            "print('backup', nightly_offsite(target='pkg-prod', local='pkg-local', offsite='pkg-offsite', suffix='_offsite'))",
        )
        backup_id = re.search(r"^backup (\S+)$", done.stdout, re.M)
        assert backup_id, done.stdout
        assert list((tmp_path / "offsite").rglob(f"{backup_id.group(1)}/manifest.json")), "not sent off-site"
        query = "SELECT count(*), sum(id), string_agg(name, ',' ORDER BY id) FROM staff"
        assert pg18.execute(query, dbname=copy) == pg18.execute(query, dbname=db)
    finally:
        pg18.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')


def test_a_module_entrypoint_of_the_installed_package_deploys_and_runs_on_a_worker(
    venv: Path, project: Path, redis_source, tmp_path: Path
):
    from vaultflow.blocks import RedisTarget

    redis_source.client().set("installed", "yes")
    RedisTarget(host=redis_source.host, port=redis_source.port).save("pkg-redis", overwrite=True)
    BackupRepository(local_path=str(tmp_path / "repo")).save("pkg-repo", overwrite=True)
    pool = f"pkg-{tmp_path.name[-12:]}".replace("_", "-")
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    (project / "prefect.yaml").write_text(
        textwrap.dedent(
            f"""\
            name: users-project
            pull:
              - prefect.deployments.steps.set_working_directory:
                  directory: {project}
            deployments:
              - name: nightly-redis
                entrypoint: vaultflow.flows.full_backup:full_backup
                parameters: {{target: redis-target/pkg-redis, repository: backup-repository/pkg-repo}}
                work_pool: {{name: {pool}}}
              - name: nightly-offsite
                entrypoint: flows/offsite.py:nightly_offsite
                parameters: {{target: pkg-prod, local: pkg-local, offsite: pkg-offsite}}
                work_pool: {{name: {pool}}}
            """
        )
    )
    checked = run(venv, project, "python", "-m", "vaultflow.deployments.validate", "prefect.yaml")
    assert "2 deployments" in checked.stdout + checked.stderr, checked.stdout + checked.stderr
    run(venv, project, "python", "-m", "prefect", "--no-prompt", "deploy", "--all")
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("full-backup/nightly-redis")
        assert deployment.entrypoint == "vaultflow.flows.full_backup:full_backup"
        flow_run = client.create_flow_run_from_deployment(deployment.id)
    worker = subprocess.Popen(
        ["python", "-m", "prefect", "worker", "start", "--pool", pool, "--run-once"],
        cwd=project,
        env=environment(venv),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = worker.communicate(timeout=TIMEOUT)
    finally:
        if worker.poll() is None:
            worker.kill()
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
    assert state is not None and state.is_completed(), f"{state}: {output[-3000:]}"
    manifests = list((tmp_path / "repo").rglob("manifest.json"))
    assert len(manifests) == 1, manifests
