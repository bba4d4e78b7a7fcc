"""vaultflow.deployments.validate: the real prefect.yaml is clean; each kind of fault is named.

No Prefect server is needed: entrypoints are imported, schedules parsed, nothing is sent.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from vaultflow.deployments.serve_all import build_deployments, build_schedule, load_deployments
from vaultflow.deployments.validate import main, validate

ROOT = Path(__file__).resolve().parents[2]
PREFECT_YAML = ROOT / "prefect.yaml"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """prefect.yaml as data, anchors resolved (the faulty copies are dumped without them)."""
    return yaml.safe_load(PREFECT_YAML.read_text())


def faulty(tmp_path: Path, document: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> Path:
    data = copy.deepcopy(document)
    change(data)
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def deployment(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(d for d in data["deployments"] if d["name"] == name)


def problems_of(tmp_path, document, change) -> list[str]:
    # The copy lives in tmp_path; its entrypoints stay relative to the project root.
    return validate(faulty(tmp_path, document, change), root=ROOT)


def test_real_prefect_yaml_has_no_problems():
    assert validate(PREFECT_YAML) == []


def test_load_deployments_resolves_anchors_and_merge_keys():
    entries = {d["name"]: d for d in load_deployments(PREFECT_YAML)}
    drill = entries["demo-weekly-drill"]
    assert drill["parameters"] == {
        "target": "postgres-target/demo",
        "repository": "backup-repository/demo",
        "rto_objective_s": 900,
    }
    assert all(d["work_pool"]["name"] == "vaultflow" for d in entries.values())


def test_every_schedule_builds_for_serve():
    for entry in load_deployments(PREFECT_YAML):
        for config in entry["schedules"]:
            schedule = build_schedule(config)
            assert schedule.cron == config["cron"] and schedule.timezone == config["timezone"]


def test_serve_all_builds_every_deployment_from_prefect_yaml(monkeypatch):
    monkeypatch.chdir(ROOT)  # serve records entrypoints relative to the working directory
    entries = load_deployments(PREFECT_YAML)
    built = build_deployments(entries, ROOT)
    assert [d.name for d in built] == [e["name"] for e in entries]
    for deployment, entry in zip(built, entries, strict=True):
        assert deployment.entrypoint == entry["entrypoint"]
        assert deployment.parameters == entry["parameters"] and deployment.tags == entry["tags"]
        assert deployment.description == entry["description"]
        assert deployment.concurrency_limit == entry["concurrency_limit"]
        assert [(s.schedule.cron, s.schedule.timezone) for s in deployment.schedules] == [
            (s["cron"], s["timezone"]) for s in entry["schedules"]
        ]
        assert deployment.work_pool_name is None  # served, not for a worker


def test_main_prints_a_line_per_deployment_and_exits_zero(capsys):
    assert main([str(PREFECT_YAML)]) == 0
    out = capsys.readouterr().out
    for entry in load_deployments(PREFECT_YAML):
        assert sum(f"/{entry['name']} " in line for line in out.splitlines()) == 1


def test_bad_cron(tmp_path, document):
    def change(data):
        deployment(data, "demo-weekly-full")["schedules"][0]["cron"] = "0 25 * * 0"

    problems = problems_of(tmp_path, document, change)
    assert len(problems) == 1, problems
    assert problems[0].startswith("demo-weekly-full:")
    assert "Invalid cron string" in problems[0] and "0 25 * * 0" in problems[0]


def test_cron_that_never_fires(tmp_path, document):
    def change(data):
        deployment(data, "demo-daily-verify")["schedules"][0]["cron"] = "0 4 31 2 *"  # 31 February

    problems = problems_of(tmp_path, document, change)
    assert len(problems) == 1 and problems[0].startswith("demo-daily-verify:")
    assert "never fires" in problems[0]


def test_bad_timezone(tmp_path, document):
    def change(data):
        deployment(data, "demo-weekly-drill")["schedules"][0]["timezone"] = "Europe/Berln"

    problems = problems_of(tmp_path, document, change)
    assert len(problems) == 1, problems
    assert problems[0].startswith("demo-weekly-drill:")
    assert "Invalid timezone" in problems[0] and "Europe/Berln" in problems[0]


def test_missing_timezone(tmp_path, document):
    def change(data):
        del deployment(data, "demo-daily-prune")["schedules"][0]["timezone"]

    problems = problems_of(tmp_path, document, change)
    assert len(problems) == 1 and problems[0].startswith("demo-daily-prune:")
    assert "no timezone" in problems[0]


def test_misspelt_schedule_key(tmp_path, document):
    def change(data):
        schedule = deployment(data, "demo-daily-prune")["schedules"][0]
        schedule["timzone"] = schedule.pop("timezone")

    problems = problems_of(tmp_path, document, change)
    assert any("unknown key 'timzone'" in p for p in problems), problems
    assert all(p.startswith("demo-daily-prune:") for p in problems)


def test_unknown_parameter(tmp_path, document):
    def change(data):
        params = deployment(data, "demo-weekly-drill")["parameters"]
        params["rto_objectiv_s"] = params.pop("rto_objective_s")

    problems = problems_of(tmp_path, document, change)
    assert len(problems) == 1, problems
    assert problems[0].startswith("demo-weekly-drill:")
    assert "unknown parameter 'rto_objectiv_s'" in problems[0] and "restore-drill" in problems[0]


def test_missing_required_parameter(tmp_path, document):
    def change(data):
        full = deployment(data, "demo-weekly-full")
        full["parameters"] = dict(full["parameters"])  # a YAML alias: other deployments share the dict
        del full["parameters"]["repository"]

    problems = problems_of(tmp_path, document, change)
    assert len(problems) == 1, problems
    assert problems[0].startswith("demo-weekly-full:")
    assert "required parameter 'repository'" in problems[0] and "missing" in problems[0]


def test_parameter_of_the_wrong_type(tmp_path, document):
    def change(data):
        deployment(data, "demo-weekly-drill")["parameters"]["rto_objective_s"] = "fifteen minutes"

    problems = problems_of(tmp_path, document, change)
    assert len(problems) == 1 and problems[0].startswith("demo-weekly-drill:")
    assert "rto_objective_s" in problems[0] and "invalid parameter values" in problems[0]


def test_unknown_schedule_parameter(tmp_path, document):
    def change(data):
        deployment(data, "demo-daily-verify")["schedules"][0]["parameters"] = {"depp": False}

    problems = problems_of(tmp_path, document, change)
    assert len(problems) == 1 and problems[0].startswith("demo-daily-verify:")
    assert "schedule 1 parameters" in problems[0] and "unknown parameter 'depp'" in problems[0]


def test_entrypoint_function_that_does_not_exist(tmp_path, document):
    def change(data):
        deployment(data, "demo-daily-prune")["entrypoint"] = "flows/prune.py:prune_everything"

    problems = problems_of(tmp_path, document, change)
    assert len(problems) == 1, problems
    assert problems[0].startswith("demo-daily-prune:")
    assert "flows/prune.py:prune_everything" in problems[0] and "prune_everything" in problems[0]


def test_entrypoint_file_that_does_not_exist(tmp_path, document):
    def change(data):
        deployment(data, "demo-daily-prune")["entrypoint"] = "flows/pruen.py:prune"

    problems = problems_of(tmp_path, document, change)
    assert len(problems) == 1 and problems[0].startswith("demo-daily-prune:")
    assert "flows/pruen.py" in problems[0] and "no such file" in problems[0]


def test_entrypoint_that_is_not_a_flow(tmp_path, document):
    def change(data):  # a plain function of the flows package
        deployment(data, "demo-daily-verify")["entrypoint"] = "flows/_support.py:load_target"

    problems = problems_of(tmp_path, document, change)
    assert len(problems) == 1 and problems[0].startswith("demo-daily-verify:")
    assert "not a flow" in problems[0]


def test_entrypoint_that_fails_to_import(tmp_path, document):
    broken = tmp_path / "broken_flow.py"
    broken.write_text("import vaultflow_no_such_module\n")

    def change(data):
        deployment(data, "demo-daily-verify")["entrypoint"] = f"{broken}:verify"

    problems = problems_of(tmp_path, document, change)
    assert len(problems) == 1 and problems[0].startswith("demo-daily-verify:")
    assert "does not import" in problems[0] and "vaultflow_no_such_module" in problems[0]


def test_missing_work_pool_and_duplicate_name(tmp_path, document):
    def change(data):
        del deployment(data, "demo-daily-prune")["work_pool"]
        deployment(data, "demo-daily-verify")["name"] = "demo-weekly-full"

    problems = problems_of(tmp_path, document, change)
    assert any(p.startswith("demo-daily-prune:") and "work pool" in p for p in problems), problems
    assert any(p.startswith("demo-weekly-full:") and "unique" in p for p in problems), problems
    assert len(problems) == 2, problems


def test_every_fault_is_listed_and_main_exits_non_zero(tmp_path, document, capsys):
    def change(data):
        deployment(data, "demo-weekly-full")["schedules"][0]["cron"] = "every sunday"
        deployment(data, "demo-weekly-drill")["schedules"][0]["timezone"] = "Mars/Olympus"
        del deployment(data, "demo-daily-verify")["parameters"]["repository"]
        deployment(data, "demo-daily-prune")["entrypoint"] = "flows/prune.py:nope"

    path = faulty(tmp_path, document, change)
    problems = validate(path, root=ROOT)
    assert [p.split(":")[0] for p in problems] == [
        "demo-weekly-full",
        "demo-weekly-drill",
        "demo-daily-verify",
        "demo-daily-prune",
    ]
    # main() resolves entrypoints next to the file: the copy's are missing, which it reports too.
    assert main([str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("FAIL") == len(document["deployments"])  # every entrypoint is missing there
    assert "problems in" in captured.err and "every sunday" in captured.err and "Mars/Olympus" in captured.err


def test_unreadable_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert len(validate(missing)) == 1 and "nope.yaml" in validate(missing)[0]
    garbage = tmp_path / "garbage.yaml"
    garbage.write_text("deployments: [oops\n")
    assert "not valid YAML" in validate(garbage)[0]


# -- does each deployment's target fit its strategy? ----------------------------------------


def test_archive_logs_on_a_redis_target_needs_no_api(tmp_path, document):
    def change(data):
        deployment(data, "demo-archive-logs")["parameters"]["target"] = "redis-target/demo"

    problems = problems_of(tmp_path, document, change)
    assert len(problems) == 1 and problems[0].startswith(
        "demo-archive-logs: target redis-target/demo cannot do archive-logs: Redis has no continuous log to archive"
    ), problems


def test_without_an_api_it_says_what_it_could_not_check(tmp_path, document):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    notes: list[str] = []
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert validate(PREFECT_YAML, notes=notes) == []
    checked = {
        "demo-archive-logs",
        "demo-daily-incremental",
        "demo-daily-differential",
        "redis-demo-daily-incremental",
        "redis-demo-daily-differential",
        "mongo-demo-daily-incremental",
        "mongo-demo-daily-differential",
        "mongo-demo-archive-logs",
        "clickhouse-demo-daily-incremental",
        "clickhouse-demo-daily-differential",
    }
    assert {n.split(":")[0] for n in notes} == checked, notes
    assert all("could not check" in n and "PREFECT_API_URL" in n for n in notes), notes


@pytest.fixture
def saved_targets(prefect_api) -> dict[str, str]:
    """Blocks in the session's Prefect API, one per kind of fit and misfit."""
    from vaultflow.blocks import ClickHouseTarget, MongoTarget, PostgresTarget, RedisTarget

    blocks = {
        "clickhouse-target/fit-clickhouse": ClickHouseTarget(),
        "mongo-target/fit-mongo": MongoTarget(),
        "postgres-target/fit-logical": PostgresTarget(),
        "postgres-target/fit-physical-nospool": PostgresTarget(mode="physical"),
        "postgres-target/fit-physical": PostgresTarget(mode="physical", wal_spool="/var/spool/wal"),
        "redis-target/fit-remote": RedisTarget(),
        "redis-target/fit-local": RedisTarget(data_dir="/var/lib/redis"),
    }
    for ref, block in blocks.items():
        block.save(ref.split("/")[1], overwrite=True)
    return {ref.split("/")[1]: ref for ref in blocks}


def retarget(**targets: str) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        for name, ref in targets.items():  # a new dict: YAML anchors share one between deployments
            entry = deployment(data, name.replace("_", "-"))
            entry["parameters"] = {**entry["parameters"], "target": ref}

    return change


def test_saved_blocks_that_cannot_do_their_strategy_are_problems(tmp_path, document, saved_targets):
    change = retarget(
        demo_daily_incremental=saved_targets["fit-logical"],
        demo_daily_differential=saved_targets["fit-remote"],
        demo_archive_logs=saved_targets["fit-physical-nospool"],
        redis_demo_daily_incremental=saved_targets["fit-physical"],
        redis_demo_daily_differential=saved_targets["fit-local"],
        mongo_demo_daily_incremental=saved_targets["fit-mongo"],
        mongo_demo_daily_differential=saved_targets["fit-mongo"],
        mongo_demo_archive_logs=saved_targets["fit-mongo"],
        clickhouse_demo_daily_incremental=saved_targets["fit-clickhouse"],
        clickhouse_demo_daily_differential=saved_targets["fit-clickhouse"],
    )
    notes: list[str] = []
    problems = validate(faulty(tmp_path, document, change), root=ROOT, notes=notes)
    assert problems == [
        "demo-archive-logs: target postgres-target/fit-physical-nospool cannot do archive-logs: "
        "fit-physical-nospool has no wal_spool: set it on the PostgresTarget block to the directory "
        "archive_command spools into (vaultflow wal-push %p --spool DIR), or pass spool_dir; point the "
        "deployment at a MongoDB target (oplog slices) or a physical PostgreSQL target with a wal_spool, or pause it",
        "demo-daily-incremental: target postgres-target/fit-logical cannot do incremental: fit-logical takes "
        "logical backups, which have no incremental form; point the deployment at a ClickHouse target (BACKUP "
        "with base_backup) or a MongoDB target (oplog ranges) or a physical PostgreSQL target (mode='physical') or a local-mode Redis target with appendonly yes, or "
        "schedule full backups only",
        "demo-daily-differential: target redis-target/fit-remote cannot do differential: fit-remote is backed up "
        "remotely (no data_dir), and differential backups copy the AOF files on the Redis host; point the "
        "deployment at a ClickHouse target (BACKUP with base_backup) or a MongoDB target (oplog ranges) or a "
        "physical PostgreSQL target (mode='physical') or a "
        "local-mode Redis target with appendonly yes, or schedule full backups only",
    ], problems
    # A local-mode Redis target fits as far as its block says; the server's appendonly is a note.
    # Every MongoDB target fits every strategy; that its server keeps an oplog is a note. Every
    # ClickHouse target fits incremental and differential (BACKUP with base_backup): no note.
    assert notes == [
        "redis-demo-daily-differential: target redis-target/fit-local fits differential if its "
        "server has appendonly yes (checked at run time)",
        *[
            f"mongo-demo-{name}: target mongo-target/fit-mongo fits {strategy} if its server keeps an oplog "
            "(a replica set member) (checked at run time)"
            for name, strategy in (
                ("daily-incremental", "incremental"),
                ("daily-differential", "differential"),
                ("archive-logs", "archive-logs"),
            )
        ],
    ], notes


def test_a_target_not_saved_yet_is_a_note_not_a_problem(tmp_path, document, saved_targets):
    notes: list[str] = []
    change = retarget(demo_daily_incremental="postgres-target/fit-nobody-saved-this")
    assert validate(faulty(tmp_path, document, change), root=ROOT, notes=notes) == []
    [note] = [n for n in notes if n.startswith("demo-daily-incremental:")]
    assert "block postgres-target/fit-nobody-saved-this is not saved in http" in note, note


def test_main_prints_problems_and_notes(tmp_path, document, saved_targets, capsys):
    path = faulty(tmp_path, document, retarget(demo_daily_differential=saved_targets["fit-logical"]))
    assert main([str(path), "--root", str(ROOT)]) == 1
    captured = capsys.readouterr()
    assert "fit-logical takes logical backups, which have no differential form" in captured.err
    assert "note" in captured.out and "could not check" in captured.out  # the demo blocks are not saved here


def test_an_api_that_does_not_answer_is_a_note_found_at_once(free_tcp_port_url):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    notes: list[str] = []
    with temporary_settings(updates={PREFECT_API_URL: free_tcp_port_url}):
        assert validate(PREFECT_YAML, notes=notes) == []
    assert len(notes) == 10 and all(f"the Prefect API at {free_tcp_port_url} did not answer" in n for n in notes), notes


@pytest.fixture
def free_tcp_port_url() -> str:
    """An API URL on a port nothing listens on (connections are refused at once)."""
    from vaultflow.testing.unprivileged import free_port

    return f"http://127.0.0.1:{free_port()}/api"
