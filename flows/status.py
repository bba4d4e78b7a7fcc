"""status: every target of a repository against its RPO, as one table artifact per repository,
and a chart of every target's backups, drills and failures over time (a markdown artifact with
the picture inline: Prefect's UI draws data: images in markdown)."""

from __future__ import annotations

from datetime import datetime, timedelta

from prefect import flow, get_client, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL
from prefect.states import Completed, State

from vaultflow.blocks.registry import target_types
from vaultflow.chart import INSTALL_HINT, ChartUnavailableError, chart_markdown
from vaultflow.flows._failed_runs import failed_backup_runs
from vaultflow.flows._names import run_name
from vaultflow.flows._support import RepositoryParam, artifact_key, load_repository
from vaultflow.history import TargetHistory, fleet_history
from vaultflow.repository import Repository
from vaultflow.status import Objective, all_met, fleet_line, fleet_status, utc_moment

PAGE = 200


def saved_objectives(only_configured_api: bool = False) -> dict[tuple[str, str], Objective]:
    """(engine, target name) -> Objective from every saved target block on the Prefect API: its
    rpo_hours (the default when the block was saved before the field existed), source 'block
    <slug>/<name>'. Two blocks naming one target: the stricter objective wins, both named. Read
    without secrets; a target block type the server does not know has no blocks.

    `only_configured_api`: {} when no Prefect API is configured (PREFECT_API_URL), rather than
    asking a temporary one that holds no blocks (the CLI with --repo-path)."""
    found: dict[tuple[str, str], Objective] = {}
    if only_configured_api and not PREFECT_API_URL.value():
        return found
    with get_client(sync_client=True) as client:
        for slug, block_class in target_types().items():
            documents, offset = [], 0
            while True:
                try:
                    page = client.read_block_documents_by_type(slug, offset=offset, limit=PAGE, include_secrets=False)
                except (ObjectNotFound, PrefectHTTPStatusError) as exc:
                    if isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code != 404:
                        raise
                    page = []  # the block type is not registered on this server: no blocks
                documents += page
                offset += PAGE
                if len(page) < PAGE:
                    break
            for doc in documents:
                data = doc.data or {}
                name = data.get("target_name") or doc.name
                if not name:  # an anonymous block (one saved inside a flow's parameters)
                    continue
                rpo = data.get("rpo_hours")
                objective = Objective(
                    float(rpo) if isinstance(rpo, int | float) else Objective().rpo_hours,
                    f"block {slug}/{doc.name}" + ("" if isinstance(rpo, int | float) else " (no rpo_hours: default)"),
                )
                key = (block_class.engine_name, name)
                if key in found and found[key].rpo_hours <= objective.rpo_hours:
                    objective = found[key]
                elif key in found:
                    objective = Objective(objective.rpo_hours, f"{objective.source}, stricter than {found[key].source}")
                found[key] = objective
    return found


def status_key(block, repo) -> str:
    """The artifact key of a repository's status table: 'status-<block name>' (the description of
    an unsaved repository), stable however many targets it holds."""
    return artifact_key("status", block_label(block, repo))


def repository_name(block) -> str | None:
    """The saved name of a repository block; None for one built in place (--repo-path)."""
    return getattr(block, "_block_document_name", None)


def chart_history(
    repo: Repository, name: str | None, now: datetime, since: datetime | None = None
) -> tuple[list[TargetHistory], list[str]]:
    """(vaultflow.history.fleet_history of `repo` from `since` (None: all of it) to `now`,
    notes): with the failed backup runs Prefect's flow runs record for the repository block
    named `name` (flows._failed_runs). A repository without a saved name gets none (a run's
    parameters name its repository by block name), and a note says so; each target's own notes
    (unreadable manifests, undated check records) follow, led by its name."""
    if name is None:
        runs, notes = {}, ["failed backup runs are not drawn: they are found by the repository block's name"]
    else:
        runs, notes = failed_backup_runs(name, since, now)
    history = fleet_history(repo, now, since, runs)
    return history, notes + [f"{h.name}: {note}" for h in history for note in h.notes]


def chart_since(now: datetime, days: float | None) -> datetime | None:
    """Where a chart of the last `days` before `now` starts; None (every backup) without days."""
    return now - timedelta(days=days) if days else None


def chart_title(repo: Repository, now: datetime, days: float | None) -> str:
    """'Backups of local:/srv/backups, last 30 days to 2026-11-30 06:00 UTC'."""
    window = f"last {days:g} days" if days else "all backups"
    return f"Backups of {repo.description}, {window} to {now:%Y-%m-%d %H:%M} UTC"


def publish_chart(block, repo: Repository, now: datetime, days: float | None) -> str:
    """The chart (vaultflow.chart.chart_markdown) as the markdown artifact 'status-chart-<name>';
    without matplotlib a page saying how to install it. Returns the artifact's description."""
    since = chart_since(now, days)
    history, notes = chart_history(repo, repository_name(block), now, since)
    title = chart_title(repo, now, days)
    try:
        body = chart_markdown(history, title, now, since)
    except ChartUnavailableError:
        get_run_logger().warning(f"no status chart: matplotlib is not installed on this worker ({INSTALL_HINT})")
        body = f"### {title}\n\nNo chart: matplotlib is not installed on the worker that ran this: `{INSTALL_HINT}`."
    body += "".join(f"\n\n_note: {note}_" for note in notes)
    failures = sum(len(h.failures) for h in history)
    description = f"{len(history)} targets, {failures} failures marked ({repo.description})"
    create_markdown_artifact(body, key=artifact_key("status-chart", block_label(block, repo)), description=description)
    return description


def block_label(block, repo: Repository) -> str:
    """A repository's name in artifact keys: its block's name, else its description."""
    return repository_name(block) or repo.description


@flow(name="status", flow_run_name=run_name("status"), log_prints=True)
def status(
    repository: RepositoryParam, as_of: datetime | None = None, chart: bool = True, chart_days: float | None = None
) -> State:
    """Every target of the repository: last full and incremental backup, the newest restorable
    point (the newest backup with a complete chain, or the newest archived WAL segment / oplog
    slice a restore reaches from one) and its age against the target's RPO (its block's
    rpo_hours), last verify, last drill and its RTO. Publishes the table as an artifact keyed
    'status-<repository>'; the run's message says how many targets meet their RPO and names the
    others. The run completes either way (it failed only if it could not look). With `chart`,
    also a picture of every target's backups (stored size, duration), drills and failures over
    time, as the markdown artifact 'status-chart-<repository>' (docs/operations.md).

    Returns {"all_met": bool, "targets": [row, ...]} (rows as in the artifact).

    Args:
        repository: The BackupRepository block, or its name ('backup-repository/main').
        as_of: Judge the RPO at this moment (UTC) instead of now: what the table will say then.
        chart: Also publish the chart artifact (about 5 kB per target each run).
        chart_days: Draw only the last this many days (default: every backup kept).
    """
    logger = get_run_logger()
    block, repo = load_repository(repository)
    now = utc_moment(as_of)
    statuses = fleet_status(repo, saved_objectives(), now)
    rows = [s.row() for s in statuses]
    line = fleet_line(statuses, f"repository {repo.description}")
    for s in statuses:
        (logger.info if s.rpo_met else logger.warning)(s.line())
    create_table_artifact(rows, key=status_key(block, repo), description=f"{line} ({repo.description})"[:500])
    if chart:
        logger.info(f"chart: {publish_chart(block, repo, now, chart_days)}")
    return Completed(message=line, data={"all_met": all_met(statuses), "targets": rows})
