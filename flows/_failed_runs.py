"""Failed backup runs, from Prefect's flow runs: a failed backup leaves no manifest in the
repository, so the status chart (vaultflow.history, vaultflow.chart) learns of it here, and only
where a Prefect API is reachable.

A run counts when its flow is full-backup, incremental-backup or differential-backup, its final
state is Failed or Crashed, it was due between `since` and `until`, and its `repository`
parameter names the repository charted (a block reference: 'backup-repository/main' or 'main').
Its target is read from its name, '<kind>-<engine>-<target>-<time>' (flows/_names.py); a run a
person named says it by its `target` parameter when that is a block reference whose type names
the engine ('postgres-target/prod'). Runs neither tells are counted in a note, not drawn.
"""

from __future__ import annotations

import re
from datetime import datetime

from prefect import get_client
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort

from vaultflow.blocks.registry import target_types
from vaultflow.engines import registry
from vaultflow.history import BACKUP_RUN, Mark

BACKUP_FLOWS = {"full-backup": "full", "incremental-backup": "incremental", "differential-backup": "differential"}
PAGE = 200
MAX_RUNS = 2000
# '<kind>-<engine>-<target>-<id time>', the time as vaultflow.manifest.id_time writes it.
_RUN_NAME = re.compile(r"(full|incremental|differential)-([a-z0-9]+)-(.+)-(\d{8}T\d{6}\.\d{3}Z)")


def run_target(run: FlowRun) -> tuple[str, str] | None:
    """(engine, target) a failed backup run was about: from its name, else from a `target`
    parameter that is a typed block reference; None when neither says."""
    named = _RUN_NAME.fullmatch(run.name or "")
    if named and named.group(2) in registry.names():
        return named.group(2), named.group(3)
    target = (run.parameters or {}).get("target")
    if isinstance(target, str) and "/" in target and "://" not in target:
        slug, _, name = target.rpartition("/")
        block = target_types().get(slug)
        if block is not None and name:
            return block.engine_name, name
    return None


def names_repository(value: object, repository: str) -> bool:
    """Whether a run's `repository` parameter is a reference to the block named `repository`."""
    if not isinstance(value, str):
        return False
    slug, _, name = value.rpartition("/")
    return name == repository and slug in ("", "backup-repository")


def failed_backup_runs(
    repository: str, since: datetime | None, until: datetime
) -> tuple[dict[tuple[str, str], tuple[Mark, ...]], list[str]]:
    """({(engine, target): marks of its failed backup runs, oldest first}, notes) for the
    repository block named `repository`, runs due from `since` (None: any time) to `until`
    (UTC). A mark's time is when the run started (when it was due, for a run that crashed before
    starting); its detail the first line of the run's state message. At most MAX_RUNS runs are
    read (the newest; a note says when more were left); runs that name no target are noted."""
    state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.FAILED, StateType.CRASHED]))
    window = FlowRunFilterExpectedStartTime(after_=since, before_=until)
    flow_filter = FlowFilter(name=FlowFilterName(any_=list(BACKUP_FLOWS)))
    runs: list[FlowRun] = []
    with get_client(sync_client=True) as client:
        while len(runs) < MAX_RUNS:
            page = client.read_flow_runs(
                flow_filter=flow_filter,
                flow_run_filter=FlowRunFilter(state=state, expected_start_time=window),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=PAGE,
                offset=len(runs),
            )
            runs += page
            if len(page) < PAGE:
                break
    notes = [f"only the newest {MAX_RUNS} failed backup runs were read"] if len(runs) >= MAX_RUNS else []
    found: dict[tuple[str, str], list[Mark]] = {}
    unplaced = 0
    for run in runs:
        if not names_repository((run.parameters or {}).get("repository"), repository):
            continue
        where = run_target(run)
        if where is None:
            unplaced += 1
            continue
        when = run.start_time or run.expected_start_time
        message = ((run.state.message if run.state else None) or (run.state_name or "failed")).strip()
        detail = f"{run.name}: {message.splitlines()[0] if message else 'failed'}"
        found.setdefault(where, []).append(Mark(when, BACKUP_RUN, False, detail=detail[:300]))
    if unplaced:
        notes.append(f"{unplaced} failed backup run(s) of this repository name no target (neither name nor parameter)")
    return {key: tuple(sorted(marks, key=lambda m: m.time)) for key, marks in found.items()}, notes
