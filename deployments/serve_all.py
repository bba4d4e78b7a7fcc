"""Serve every deployment of prefect.yaml from one process: no work pool, no worker.

    python -m vaultflow.deployments.serve_all [prefect.yaml] [--limit N]

Names, entrypoints, parameters, tags, descriptions, concurrency limits and schedules all come
from prefect.yaml (schedules live nowhere else). The work_pool section is ignored: a served
deployment runs its flows in subprocesses of this process. Serving registers the deployments
under the same names `prefect deploy` uses, so use one or the other against a server. A
deployment that `prefect deploy` created keeps its work pool on the server when it is served
(the server merges the update), so its runs would go to that pool's worker without their pull
step and crash: serve_all refuses to start while such deployments exist, and `--replace`
deletes them first. Stopping the process pauses the schedules; serving again resumes them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from vaultflow.deployments.project import (  # noqa: F401
    DEFAULT_PATH,
    ROOT,
    SCHEDULE_KINDS,
    load_deployments,
    load_flow,
    project_root,
    resolve_path,
)
from vaultflow.deployments.validate import report, validate


def build_schedule(config: dict[str, Any]):
    """A prefect.schedules.Schedule from one `schedules:` entry of prefect.yaml."""
    from prefect.schedules import Cron, Interval, RRule

    common = {
        "timezone": config.get("timezone"),
        "active": config.get("active", True),
        "parameters": config.get("parameters") or {},
        "slug": config.get("slug"),
    }
    kinds = [kind for kind in SCHEDULE_KINDS if config.get(kind) is not None]
    if len(kinds) != 1:
        raise ValueError(f"a schedule needs exactly one of {', '.join(SCHEDULE_KINDS)}: {config}")
    if kinds[0] == "cron":
        return Cron(str(config["cron"]), day_or=config.get("day_or", True), **common)
    if kinds[0] == "interval":
        return Interval(config["interval"], anchor_date=config.get("anchor_date"), **common)
    return RRule(str(config["rrule"]), **common)


def concurrency(value: Any):
    """`concurrency_limit: 1` or `{limit: 1, collision_strategy: CANCEL_NEW}`."""
    if isinstance(value, dict):
        from prefect.client.schemas.objects import ConcurrencyLimitConfig

        return ConcurrencyLimitConfig(**value)
    return value


def build_deployments(entries: list[dict[str, Any]], root: Path) -> list[Any]:
    """RunnerDeployments for `serve`. Call with the working directory at `root`: Prefect
    records each flow's entrypoint relative to the current directory and the runner starts
    flow runs from there."""
    deployments = []
    for entry in entries:
        flow = load_flow(entry["entrypoint"], root)
        options: dict[str, Any] = {
            "name": entry["name"],
            "parameters": entry.get("parameters") or {},
            "schedules": [build_schedule(s) for s in entry.get("schedules") or []],
            "tags": list(entry.get("tags") or []),
            "description": entry.get("description"),
            "concurrency_limit": concurrency(entry.get("concurrency_limit")),
            "enforce_parameter_schema": entry.get("enforce_parameter_schema", True),
        }
        for key in ("version", "paused"):
            if entry.get(key) is not None:
                options[key] = entry[key]
        deployments.append(flow.to_deployment(**options))
    return deployments


def worker_deployments(deployments: list[Any]) -> list[Any]:
    """Deployments on the server, of the same names, that belong to a work pool."""
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    found = []
    with get_client(sync_client=True) as client:
        for deployment in deployments:
            try:
                existing = client.read_deployment_by_name(f"{deployment.flow_name}/{deployment.name}")
            except ObjectNotFound:
                continue
            if existing.work_pool_name:
                found.append(existing)
    return found


def delete_deployments(existing: list[Any]) -> None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        for deployment in existing:
            client.delete_deployment(deployment.id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vaultflow.deployments.serve_all", description=__doc__.split("\n")[0]
    )
    parser.add_argument("path", nargs="?", default=DEFAULT_PATH, help="prefect.yaml (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="run at most N flow runs at once")
    parser.add_argument(
        "--replace",
        action="store_true",
        help="delete deployments of the same names that `prefect deploy` attached to a work pool",
    )
    parser.add_argument(
        "--skip-validation",
        action="store_true",
        help="serve without checking prefect.yaml first (python -m vaultflow.deployments.validate)",
    )
    args = parser.parse_args(argv)

    if not args.skip_validation:
        problems = validate(args.path)
        if problems:
            report(args.path, problems)
            return 1

    from prefect import serve

    root = project_root(args.path)
    os.chdir(root)
    deployments = build_deployments(load_deployments(args.path), root)
    conflicting = worker_deployments(deployments)
    if conflicting and not args.replace:
        names = ", ".join(f"{d.name} (work pool {d.work_pool_name})" for d in conflicting)
        print(
            f"these deployments were created by `prefect deploy` for a worker: {names}. Served, they "
            "would stay attached to that pool and their runs would crash in its worker. Stop the "
            "worker and rerun with --replace to delete them, or use another server.",
            file=sys.stderr,
        )
        return 1
    if conflicting:
        delete_deployments(conflicting)
        print(f"deleted {len(conflicting)} worker deployments: " + ", ".join(d.name for d in conflicting), flush=True)
    print(
        f"serving {len(deployments)} deployments from {resolve_path(args.path)}: "
        + ", ".join(f"{d.flow_name}/{d.name}" for d in deployments),
        flush=True,
    )
    serve(*deployments, limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
