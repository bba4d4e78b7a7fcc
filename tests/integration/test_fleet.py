"""Fleets on a real Prefect API (deployments/fleet.py, `vaultflow fleet`): a fleet file of
several targets becomes one deployment per (strategy, work queue) whose schedules carry each
target's parameters; host-bound strategies go to the host's queue; re-applying changes nothing;
a dropped line loses its schedule; faults are one line each and change nothing.

The target blocks point at real servers (pg18, redis_source); nothing runs here (the runs
through a worker: tests/e2e/test_fleet_worker.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags
from typer.testing import CliRunner

from vaultflow.blocks import BackupRepository, PostgresTarget, RedisTarget
from vaultflow.cli import app
from vaultflow.deployments.fleet import deploy, fleet_tag
from vaultflow.deployments.fleet_file import FleetError
from vaultflow.deployments.project import ROOT, load_pull_steps
from vaultflow.deployments.validate import validate
from vaultflow.flows._locks import shipping_slot

pytestmark = pytest.mark.usefixtures("prefect_api")

runner = CliRunner()
STRATEGY_OF = {
    "full-backup": "full",
    "incremental-backup": "incremental",
    "differential-backup": "differential",
    "archive-logs": "archive-logs",
    "restore-drill": "drill",
}

FLEET = """\
name: {name}
work_pool: {pool}
repository: backup-repository/{name}-repo
timezone: Europe/Berlin
plans:
  logical:
    full: "0 2 * * *"
    drill: {{cron: "0 6 * * 0", parameters: {{rto_objective_s: 600}}}}
  physical:
    full: "0 1 * * 0"
    incremental: "0 2 * * 1-6"
    archive-logs: {{cron: "* * * * *", parameters: {{follow_seconds: 50}}}}
  redis-local:
    full: "30 2 * * *"
    differential: "0 3 * * *"
targets:
  postgres-target/{name}-shop: logical
  postgres-target/{name}-crm: logical
  postgres-target/{name}-ledger: physical
  redis-target/{name}-cache: {{plan: redis-local, host: cache1}}
"""


class Fleet:
    """A fleet's name, work pool and file, its blocks saved (against real servers)."""

    def __init__(self, tmp_path: Path, pg, redis) -> None:
        self.name = f"f{secrets.token_hex(3)}"
        self.pool = f"pool-{self.name}"
        self.path = tmp_path / "fleet.yaml"
        self.write()
        common = {"host": pg.host, "port": pg.port, "user": pg.user, "bin_dir": str(pg.client_bin_dir)}
        PostgresTarget(**common, databases=["shop"]).save(f"{self.name}-shop")
        PostgresTarget(**common, databases=["crm"]).save(f"{self.name}-crm")
        PostgresTarget(**common, mode="physical", wal_spool=str(tmp_path / "spool")).save(f"{self.name}-ledger")
        RedisTarget(host=redis.host, port=redis.port, data_dir=str(redis.directory)).save(f"{self.name}-cache")
        BackupRepository(local_path=str(tmp_path / "repo")).save(f"{self.name}-repo")

    def write(self, text: str | None = None) -> None:
        self.path.write_text(text if text is not None else FLEET.format(name=self.name, pool=self.pool))

    def edit(self, old: str, new: str) -> None:
        text = self.path.read_text()
        assert old in text
        self.write(text.replace(old, new))

    def deployments(self) -> dict[str, dict]:
        """The fleet's deployments on the API: '<flow>/<name>' -> queue, schedules by slug, ids."""
        with get_client(sync_client=True) as client:
            found = client.read_deployments(
                deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[fleet_tag(self.name)]))
            )
            flows = {d.flow_id: client.read_flow(d.flow_id).name for d in found}
            return {
                f"{flows[d.flow_id]}/{d.name}": {
                    "deployment": d,
                    "queue": d.work_queue_name,
                    "schedules": {
                        s.slug: (s.schedule.cron, s.schedule.timezone, s.parameters, s.id)
                        for s in client.read_deployment_schedules(d.id)
                    },
                }
                for d in found
            }


@pytest.fixture
def fleet(tmp_path: Path, pg18, redis_source) -> Iterator[Fleet]:
    made = Fleet(tmp_path, pg18, redis_source)
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=made.pool, type="process"))
    yield made
    with get_client(sync_client=True) as client:  # the session's API, as the test found it
        for entry in made.deployments().values():
            client.delete_deployment(entry["deployment"].id)
        client.delete_work_pool(made.pool)


def test_a_fleet_becomes_one_deployment_per_strategy_and_queue_with_a_schedule_per_target(fleet: Fleet):
    _, report, notes = deploy(fleet.path)
    n, repo = fleet.name, f"backup-repository/{fleet.name}-repo"
    shop, crm, ledger, cache = (
        f"{kind}-target/{n}-{t}"
        for kind, t in [("postgres", "shop"), ("postgres", "crm"), ("postgres", "ledger"), ("redis", "cache")]
    )

    def params(target: str, **extra) -> dict:
        return {"target": target, "repository": repo, **extra}

    berlin = "Europe/Berlin"
    expected = {
        f"full-backup/{n}-default": (
            "default",
            {
                shop: ("0 2 * * *", berlin, params(shop)),
                crm: ("0 2 * * *", berlin, params(crm)),
                ledger: ("0 1 * * 0", berlin, params(ledger)),  # pg_basebackup works over the network
            },
        ),
        f"incremental-backup/{n}-default": ("default", {ledger: ("0 2 * * 1-6", berlin, params(ledger))}),
        # archive-logs reads the WAL spool: on the database host, named by the block's host
        f"archive-logs/{n}-host-127.0.0.1": (
            "host-127.0.0.1",
            {
                ledger: ("* * * * *", berlin, params(ledger, follow_seconds=50)),
            },
        ),
        f"restore-drill/{n}-default": (
            "default",
            {
                shop: ("0 6 * * 0", berlin, params(shop, rto_objective_s=600)),
                crm: ("0 6 * * 0", berlin, params(crm, rto_objective_s=600)),
            },
        ),
        # a local-mode Redis target copies files from its dir: its line names the host
        f"full-backup/{n}-host-cache1": ("host-cache1", {cache: ("30 2 * * *", berlin, params(cache))}),
        f"differential-backup/{n}-host-cache1": ("host-cache1", {cache: ("0 3 * * *", berlin, params(cache))}),
    }
    deployed = fleet.deployments()
    assert {
        name: (entry["queue"], {slug: s[:3] for slug, s in entry["schedules"].items()})
        for name, entry in deployed.items()
    } == expected
    for name, entry in deployed.items():
        deployment = entry["deployment"]
        assert deployment.work_pool_name == fleet.pool and deployment.parameters == {}, name
        assert deployment.pull_steps == load_pull_steps()  # the worker's checkout: $VAULTFLOW_HOME
        assert deployment.concurrency_limit is None, "a limit of 1 would run one target at a time"
        assert set(deployment.tags) == {"vaultflow", fleet_tag(n), STRATEGY_OF[name.split("/")[0]]}
        assert deployment.enforce_parameter_schema and "target" in deployment.parameter_openapi_schema["properties"]
    assert sorted(report.actions) == sorted(("created", f"{name}: {', '.join(s)}") for name, (_, s) in expected.items())
    assert report.queues == {"default": "", "host-127.0.0.1": "127.0.0.1", "host-cache1": "cache1"}
    with get_client(sync_client=True) as client:
        queues = {q.name for q in client.read_work_queues(work_pool_name=fleet.pool)}
    assert queues == {"default", "host-127.0.0.1", "host-cache1"}
    assert notes == [
        f"fleet.yaml:20: {cache}: target {cache} fits differential if its server has appendonly yes (checked at run time)"
    ]


def test_reapplying_changes_nothing_and_each_edit_changes_only_its_schedules(fleet: Fleet):
    deploy(fleet.path)
    before = fleet.deployments()
    _, report, _ = deploy(fleet.path)
    assert {verb for verb, _ in report.actions} == {"unchanged"} and len(report.actions) == 6
    after = fleet.deployments()
    assert after.keys() == before.keys()
    for name in before:  # not even rewritten: same schedule ids, same update time
        assert after[name]["schedules"] == before[name]["schedules"]
        assert after[name]["deployment"].updated == before[name]["deployment"].updated

    n = fleet.name
    shop, crm = f"postgres-target/{n}-shop", f"postgres-target/{n}-crm"
    fleet.edit(f"  {crm}: logical\n", "")  # a line dropped
    fleet.edit('full: "0 2 * * *"', 'full: "15 2 * * *"')  # a plan's time changed
    fleet.edit(f"  redis-target/{n}-cache: {{plan: redis-local, host: cache1}}\n", "")  # host-cache1 empties
    _, report, _ = deploy(fleet.path)
    assert sorted(report.actions) == sorted(
        [
            ("removed", f"{crm} from full-backup/{n}-default"),
            ("removed", f"{crm} from restore-drill/{n}-default"),
            ("changed", f"{shop} in full-backup/{n}-default (cron 15 2 * * * Europe/Berlin)"),
            ("deleted", f"full-backup/{n}-host-cache1: no target of the fleet runs it any more"),
            ("deleted", f"differential-backup/{n}-host-cache1: no target of the fleet runs it any more"),
            ("unchanged", f"incremental-backup/{n}-default: 1 schedule"),
            ("unchanged", f"archive-logs/{n}-host-127.0.0.1: 1 schedule"),
        ]
    )
    now = fleet.deployments()
    full = now[f"full-backup/{n}-default"]["schedules"]
    assert sorted(full) == sorted([shop, f"postgres-target/{n}-ledger"])
    assert full[shop][0] == "15 2 * * *" and full[shop][3] == before[f"full-backup/{n}-default"]["schedules"][shop][3]
    assert list(now[f"restore-drill/{n}-default"]["schedules"]) == [shop]
    assert not any("cache1" in name for name in now)

    fleet.edit("  postgres-target/", "  #postgres-target/")  # every line gone: the fleet is removed
    _, report, _ = deploy(fleet.path)
    assert {verb for verb, _ in report.actions} == {"deleted"} and fleet.deployments() == {}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "{name}-crm: logical",
            "{name}-crm: physical",
            "fleet.yaml:18: postgres-target/{name}-crm: incremental: target postgres-target/{name}-crm cannot do "
            "incremental: {name}-crm takes logical backups, which have no incremental form; point the deployment at ",
        ),
        (
            "{name}-crm: logical",
            "{name}-nosuch: logical",
            "fleet.yaml:18: postgres-target/{name}-nosuch: block postgres-target/{name}-nosuch is not saved in ",
        ),
        (
            "postgres-target/{name}-crm",
            "mysql-target/{name}-crm",
            "fleet.yaml:18: mysql-target/{name}-crm: 'mysql-target' is not a target block type (known: ",
        ),
        (
            "rto_objective_s: 600",
            "rto_objective: 600",
            "fleet.yaml:8: plan 'logical', drill: unknown parameter 'rto_objective': flow 'restore-drill' takes ",
        ),
        (
            "repository: backup-repository/{name}-repo",
            "repository: backup-repository/nosuchrepo",  # every scheduled run would fail
            "fleet.yaml:3: backup-repository/nosuchrepo: block backup-repository/nosuchrepo is not saved in ",
        ),
        (
            "{{plan: redis-local, host: cache1}}",
            "{{plan: redis-local, host: cache1, repository: postgres-target/{name}-shop}}",
            "fleet.yaml:20: postgres-target/{name}-shop: is a PostgresTarget, not a BackupRepository",
        ),
        (
            "{{plan: redis-local, host: cache1}}",
            "redis-local",  # placed anyway: the block's host
            None,
        ),
    ],
)
def test_a_line_that_does_not_fit_is_one_line_and_nothing_is_deployed(fleet: Fleet, old: str, new: str, expected):
    fleet.edit(old.format(name=fleet.name).replace("{{", "{").replace("}}", "}"), new.format(name=fleet.name))
    if expected is None:
        deploy(fleet.path)
        assert f"full-backup/{fleet.name}-host-127.0.0.1" in fleet.deployments()
        return
    with pytest.raises(FleetError) as caught:
        deploy(fleet.path)
    first, *more = caught.value.problems  # a physical plan on a logical target: two strategies do not fit
    assert first.startswith(expected.format(name=fleet.name)), first
    assert all(p.startswith(first.split(": ")[0] + ": ") for p in more), more
    assert fleet.deployments() == {}


def test_every_fault_of_the_file_and_its_blocks_is_reported_in_one_pass(fleet: Fleet):
    """A duplicate key, a typo'd key, an unknown plan, a missing repository and a missing target
    block: one FleetError listing each by its line, not one round per kind of fault."""
    n = fleet.name
    fleet.edit(f"repository: backup-repository/{n}-repo", "repository: backup-repository/nosuchrepo")
    fleet.edit(f"  postgres-target/{n}-crm: logical\n", f"  postgres-target/{n}-nosuch: logical\n")
    fleet.edit(f"  postgres-target/{n}-ledger: physical\n", f"  postgres-target/{n}-ledger: nightly\n")
    fleet.edit("{plan: redis-local, host: cache1}", "{plan: redis-local, hots: cache1}")
    fleet.write(fleet.path.read_text() + f"  postgres-target/{n}-shop: physical\n")
    with pytest.raises(FleetError) as caught:
        deploy(fleet.path)
    found = caught.value.problems
    assert [p.split(":")[1] for p in found] == ["3", "18", "19", "20", "21"], found
    assert "block backup-repository/nosuchrepo is not saved" in found[0]
    assert f"block postgres-target/{n}-nosuch is not saved" in found[1]
    assert "plan 'nightly' is not defined" in found[2] and "unknown key 'hots'" in found[3]
    assert f"'postgres-target/{n}-shop' is given twice (first on line 17)" in found[4]
    assert fleet.deployments() == {}


def test_an_api_that_does_not_answer_is_one_line_naming_it_exit_1(fleet: Fleet):
    """Not 'block ... did not answer; save the block first' per target, exit 2 (the file is not
    wrong): the line every command gives for an API that is down."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from vaultflow.testing.unprivileged import free_port

    closed = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: closed}):
        result = runner.invoke(app, ["fleet", "check", str(fleet.path)], terminal_width=400)
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: the Prefect API at {closed} does not answer"), line
    assert "prefect server start" in line and "save the block" not in line


def test_a_renamed_fleet_warns_of_the_old_deployments_and_fleet_remove_deletes_them(fleet: Fleet):
    n = fleet.name
    _, first, _ = deploy(fleet.path)
    assert first.warnings == []
    fleet.edit(f"name: {n}", f"name: {n}-b")  # the same targets under a new name
    try:
        _, report, _ = deploy(fleet.path)
        old = sorted(fleet.deployments())
        assert len(report.warnings) == len(old) == 6, report.warnings
        for name, warning in zip(old, report.warnings, strict=True):
            assert warning.startswith(f"deployment {name} of fleet {n} also schedules "), warning
            assert warning.endswith(f"if fleet {n} is this one renamed, remove it: vaultflow fleet remove {n}")
        [full] = [w for w in report.warnings if w.startswith(f"deployment full-backup/{n}-default ")]
        targets = ", ".join(f"postgres-target/{n}-{t}" for t in ("crm", "ledger", "shop"))
        assert f"also schedules {targets}: they run twice; " in full, full

        result = runner.invoke(app, ["fleet", "remove", n], terminal_width=400)
        assert result.exit_code == 0, result.output
        assert result.output.splitlines() == [*(f"deleted   {name}" for name in old), f"fleet {n}: 6 deleted"]
        assert fleet.deployments() == {}
        _, again, _ = deploy(fleet.path)
        assert again.warnings == [] and {v for v, _ in again.actions} == {"unchanged"}

        result = runner.invoke(app, ["fleet", "remove", n], terminal_width=400)  # gone: a typo must not pass
        assert result.exit_code == 2
        [line] = result.stderr.splitlines()
        assert line.startswith(f"error: fleet '{n}' has no deployments on this Prefect API (fleets there: ")
        assert f"{n}-b" in line
    finally:
        with get_client(sync_client=True) as client:
            for d in client.read_deployments(
                deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[fleet_tag(f"{n}-b")]))
            ):
                client.delete_deployment(d.id)


def test_a_missing_work_pool_or_a_taken_name_changes_nothing(fleet: Fleet):
    fleet.edit(f"work_pool: {fleet.pool}", "work_pool: no-such-pool")
    with pytest.raises(
        FleetError,
        match=r"^fleet.yaml: work pool 'no-such-pool' does not exist: prefect work-pool create no-such-pool --type process$",
    ):
        deploy(fleet.path)
    fleet.write()
    deploy(fleet.path)
    fleet.edit(f"name: {fleet.name}", f"name: {fleet.name}-b")  # the same blocks, a second fleet...
    with get_client(sync_client=True) as client:  # ...whose name is taken by a hand-made deployment
        flow_id = client.create_flow_from_name("full-backup")
        other = client.create_deployment(flow_id=flow_id, name=f"{fleet.name}-b-default", work_pool_name=fleet.pool)
    try:
        with pytest.raises(
            FleetError, match=rf"deployment full-backup/{fleet.name}-b-default exists and is not fleet {fleet.name}-b's"
        ):
            deploy(fleet.path)
        with get_client(sync_client=True) as client:
            assert (
                client.read_deployments(
                    deployment_filter=DeploymentFilter(tags=DeploymentFilterTags(all_=[fleet_tag(f"{fleet.name}-b")]))
                )
                == []
            )
    finally:
        with get_client(sync_client=True) as client:
            client.delete_deployment(other)


def test_vaultflow_fleet_deploy_says_what_it_did_and_which_worker_each_queue_needs(fleet: Fleet):
    result = runner.invoke(app, ["fleet", "check", str(fleet.path)], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert f"archive-logs/{fleet.name}-host-127.0.0.1  (queue host-127.0.0.1)" in result.output
    assert "needs the WAL spool" in result.output and fleet.deployments() == {}  # check changes nothing

    result = runner.invoke(app, ["fleet", "deploy", str(fleet.path)], terminal_width=400)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"created   incremental-backup/{fleet.name}-default: postgres-target/{fleet.name}-ledger" in lines
    assert (
        f"fleet {fleet.name}: 6 created, 0 changed, 0 unchanged, 0 deleted; schedules 0 added, 0 changed, 0 removed"
        in lines
    )
    assert (
        f"  host-cache1: a worker on cache1: VAULTFLOW_HOME=<checkout> prefect worker start --pool {fleet.pool} "
        "--work-queue host-cache1"
    ) in lines

    fleet.edit('full: "0 2 * * *"', 'full: "15 2 * * *"')  # two schedules of one deployment change
    result = runner.invoke(app, ["fleet", "deploy", str(fleet.path)], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert (
        f"fleet {fleet.name}: 0 created, 1 changed, 5 unchanged, 0 deleted; schedules 0 added, 2 changed, 0 removed"
    ) in result.output.splitlines(), result.output
    assert f"unchanged incremental-backup/{fleet.name}-default: 1 schedule" in result.output.splitlines()

    fleet.edit("physical\n  redis", "nightly\n  redis")
    result = runner.invoke(app, ["fleet", "deploy", str(fleet.path)], terminal_width=400)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: fleet.yaml:19: postgres-target/{fleet.name}-ledger: plan 'nightly' is not defined under plans: "
        "(defined: logical, physical, redis-local)"
    ]


def test_two_archive_logs_runs_of_one_target_never_ship_at_once(prefect_api):
    """A fleet's archive-logs deployment has no deployment limit of 1: the target's own slot
    keeps a second run from shipping the same log; it ends at once instead."""
    target = f"slot-{secrets.token_hex(3)}"
    with shipping_slot("postgres", target, enabled=True) as first:
        with shipping_slot("postgres", target, enabled=True) as second:  # another run, meanwhile
            pass
        with shipping_slot("postgres", f"{target}-other", enabled=True) as other_target:
            pass
    with shipping_slot("postgres", target, enabled=True) as later:
        pass
    assert (first, second, other_target, later) == (True, False, True, True)
    with shipping_slot("postgres", target) as outside_a_deployment:  # CLI, tests: no slot taken
        with shipping_slot("postgres", target) as another:
            assert outside_a_deployment and another
    with get_client(sync_client=True) as client:
        for name in (target, f"{target}-other"):
            client.delete_global_concurrency_limit_by_name(f"vaultflow-postgres-{name}-archive-logs")


def test_a_prefect_api_that_does_not_answer_the_slot_request_fails_the_run_as_retryable(monkeypatch):
    """A fleet's burst of scheduled runs kept a SQLite-backed server answering 503 for a while
    (bench/fleet.py): a slot request the API did not answer is asked again, then retried as a
    flow run, never failed for good. Here the API is a closed port (a real refused connection)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from vaultflow.errors import LockHeldError, TransientError
    from vaultflow.flows import _locks
    from vaultflow.testing.unprivileged import free_port

    monkeypatch.setattr(_locks, "BUSY_PAUSES_S", (0.0,))
    closed = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: closed, PREFECT_CLIENT_MAX_RETRIES: 0}):
        with pytest.raises(
            TransientError, match=r"did not grant a slot of the concurrency limit vaultflow-postgres-down"
        ) as caught:
            with _locks.deployment_slot("postgres", "down", wait_s=5, enabled=True):
                pytest.fail("a slot granted by an API that is down?")
    assert not isinstance(caught.value, LockHeldError)


def test_the_example_fleet_fits_the_demo_blocks(prefect_api, tmp_path: Path, pg18, redis_source, mongo_source):
    """fleet.example.yaml against the blocks `python -m vaultflow.demo_setup` saves (built for
    real servers here): every line fits, and each host-bound strategy lands on the host queue."""
    from vaultflow.demo_setup import DemoServers, demo_blocks, save_demo_blocks
    from vaultflow.deployments.fleet import check
    from vaultflow.deployments.project import ROOT

    servers = DemoServers(pg18, tmp_path / "spool", redis_source, mongo_source, tmp_path / "clickhouse")
    save_demo_blocks(demo_blocks(servers, tmp_path / "repo"))
    _, specs, _ = check(ROOT / "fleet.example.yaml")
    host = {spec.full_name: sorted(spec.schedules) for spec in specs if spec.queue == "host-127.0.0.1"}
    assert host == {
        "full-backup/demo-host-127.0.0.1": ["clickhouse-target/demo", "redis-target/demo"],
        "incremental-backup/demo-host-127.0.0.1": ["clickhouse-target/demo", "redis-target/demo"],
        "differential-backup/demo-host-127.0.0.1": ["clickhouse-target/demo", "redis-target/demo"],
        "archive-logs/demo-host-127.0.0.1": ["postgres-target/demo-physical"],
        "restore-drill/demo-host-127.0.0.1": ["clickhouse-target/demo"],
    }
    assert {spec.queue for spec in specs} == {"default", "host-127.0.0.1"}


def test_two_lines_whose_blocks_share_one_target_name_are_a_problem_naming_both(fleet: Fleet, pg18):
    """A second block with the shop block's target_name (another database): its backups would
    land in the shop target's catalog. The check names both lines; nothing is deployed."""
    PostgresTarget(
        host=pg18.host, port=pg18.port, user=pg18.user, databases=["hr"], target_name=f"{fleet.name}-shop"
    ).save(f"{fleet.name}-shop2")
    crm = f"  postgres-target/{fleet.name}-crm: logical\n"
    fleet.edit(crm, crm + f"  postgres-target/{fleet.name}-shop2: logical\n")
    lines = fleet.path.read_text().splitlines()
    shop_line = lines.index(f"  postgres-target/{fleet.name}-shop: logical") + 1
    shop2_line = lines.index(f"  postgres-target/{fleet.name}-shop2: logical") + 1
    result = runner.invoke(app, ["fleet", "check", str(fleet.path)], terminal_width=400)
    assert result.exit_code != 0
    problems = [line for line in result.output.splitlines() if "both resolve to target" in line]
    assert problems == [
        f"error: fleet.yaml:{shop2_line}: postgres-target/{fleet.name}-shop2 and postgres-target/{fleet.name}-shop "
        f"(fleet.yaml:{shop_line}) both resolve to target postgres/{fleet.name}-shop: their backups would mix "
        "in one catalog and a restore could bring back the other's data; give one of the blocks its own target_name"
    ], result.output
    with pytest.raises(FleetError):
        deploy(fleet.path)
    assert fleet.deployments() == {}


def test_prefect_yaml_deployments_whose_blocks_share_one_target_name_are_a_problem(fleet: Fleet, pg18, tmp_path: Path):
    PostgresTarget(
        host=pg18.host, port=pg18.port, user=pg18.user, databases=["hr"], target_name=f"{fleet.name}-shop"
    ).save(f"{fleet.name}-shop2")
    deployments = [
        {
            "name": f"{block}-full",
            "entrypoint": "flows/full_backup.py:full_backup",
            "work_pool": {"name": fleet.pool},
            "parameters": {"target": f"postgres-target/{fleet.name}-{block}", "repository": "backup-repository/x"},
            "schedules": [{"cron": "0 2 * * *", "timezone": "UTC"}],
        }
        for block in ("shop", "crm", "shop2")
    ]
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump({"deployments": deployments}))
    problems = validate(path, root=ROOT)
    assert problems == [
        f"shop2-full: postgres-target/{fleet.name}-shop2 and postgres-target/{fleet.name}-shop (shop-full) both "
        f"resolve to target postgres/{fleet.name}-shop: their backups would mix in one catalog and a restore could "
        "bring back the other's data; give one of the blocks its own target_name"
    ]
