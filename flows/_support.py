"""What every flow shares: loading blocks, lineage, events, artifacts, progress, retries."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Union

from prefect import get_client, get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.blocks.core import Block
from prefect.client.schemas.objects import FlowRunPolicy
from prefect.events import emit_event
from prefect.runtime import flow_run
from prefect.settings import PREFECT_UI_URL
from pydantic import ValidationError

from vaultflow.alerts import target_resource_id
from vaultflow.blocks import BackupRepository
from vaultflow.blocks.registry import TargetBlock, target_types
from vaultflow.catalog_view import catalog_view
from vaultflow.engines.base import BackupContext
from vaultflow.engines.registry import names as engine_names
from vaultflow.engines.registry import restore_options as engine_restore_options
from vaultflow.errors import ConfigError, InvalidBlockError, NotFoundError, VaultflowError, is_transient
from vaultflow.flows._names import deployment_name
from vaultflow.keys import artifact_slug
from vaultflow.manifest import Lineage, Manifest, parse_backup_id
from vaultflow.repository import Repository
from vaultflow.summary import human_duration, human_size, one_line
from vaultflow.tasks.common import api_unavailable

# A target block of any registered kind (blocks.registry), or its name: 'postgres-target/prod', or
# just 'prod' when one kind alone has a block of that name.
TargetParam = TargetBlock | str
RepositoryParam = BackupRepository | str


def _restore_options_union() -> Any:
    """Every registered engine's restore options model (the run form offers one per engine,
    titled by its engine), then a plain mapping for an engine registered after this module
    was imported (vaultflow.engines.registry.register)."""
    models = [model for name in engine_names() if (model := engine_restore_options(name)) is not None]
    return Union[(*models, dict[str, Any])]  # noqa: UP007 - built from a runtime list


RestoreOptionsParam = _restore_options_union()

# Flow-level retries for transient failures (server restarting, network blip). Permanent errors
# cancel the remaining retries (fail_fast_on_permanent_errors). Tasks back off exponentially.
# (Whole seconds: the server stores the flow retry delay as an integer.)
FLOW_RETRIES = {
    "retries": int(os.environ.get("VAULTFLOW_FLOW_RETRIES", "2")),
    "retry_delay_seconds": max(1, round(float(os.environ.get("VAULTFLOW_FLOW_RETRY_DELAY_S", "120")))),
}

# The CLI sets this so long transfers also draw a progress bar in the terminal.
TERMINAL_PROGRESS = {"enabled": False}


def load_block(ref: Any, default_type: str) -> Block:
    """A block instance, or its name: 'postgres-target/prod', or just 'prod' for `default_type`.
    Raises NotFoundError when no block has that name, InvalidBlockError when its saved data
    fails validation (_load_if_saved)."""
    if isinstance(ref, Block):
        return ref
    if isinstance(ref, str):
        name = ref if "/" in ref else f"{default_type}/{ref}"
        block = _load_if_saved(name)
        if block is None:
            raise NotFoundError(
                f"no block named {name!r} on this Prefect API: create it (README, 'Use it') or "
                "check the name with `prefect block ls`"
            )
        return block
    raise TypeError(f"expected a block or a block name, got {type(ref).__name__}")


def _load_if_saved(name: str) -> Block | None:
    """The block saved as `name` ('slug/block'), or None when there is none of that name.

    Raises InvalidBlockError, naming the block and each field and why, when the saved data fails
    the block's validation (rpo_hours 0 set through the API): Prefect's own error says only
    "block type 'block' ... failed validation"."""
    try:
        return Block.load(name)
    except ValueError as exc:
        if "Unable to find" not in str(exc):
            raise
        return None
    except RuntimeError as exc:
        invalid = exc.__cause__
        if not isinstance(invalid, ValidationError):
            raise
        kind = "target block" if name.split("/", 1)[0] in target_types() else "block"
        why = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'data'}: {e['msg']}" for e in invalid.errors())
        raise InvalidBlockError(f"{kind} {name} cannot be loaded: {why}; fix or delete it") from None


def load_target(ref: TargetParam) -> TargetBlock:
    """A target block, or its name: 'redis-target/cache', or just 'prod', looked up under every
    registered target block type (blocks.registry).

    Raises NotFoundError when no target block has that name, ConfigError when blocks of more
    than one kind do (the message names each full name to use instead) or for a block that is
    not a target."""
    if isinstance(ref, str) and (pair := engine_form(ref)) is not None:
        ref = _target_slug(*pair)
    if isinstance(ref, str) and "/" not in ref:
        found = {slug: block for slug in target_types() if (block := _load_if_saved(f"{slug}/{ref}")) is not None}
        if len(found) > 1:
            raise ConfigError(
                f"target {ref!r} is ambiguous: blocks of {len(found)} kinds have that name "
                f"({', '.join(f'{slug}/{ref}' for slug in found)}); name the one you mean in full"
            )
        if not found:
            raise NotFoundError(
                f"no target block named {ref!r} (looked for "
                f"{', '.join(f'{slug}/{ref}' for slug in target_types())}); create one, or "
                "check the name with `prefect block ls`"
            )
        return next(iter(found.values()))
    block = load_block(ref, "")
    if not isinstance(block, TargetBlock):
        raise ConfigError(
            f"{ref!r} is a {type(block).__name__}, not a target block (target block types: {', '.join(target_types())})"
        )
    return block


def engine_form(ref: str) -> tuple[str, str] | None:
    """('postgres', 'prod') for 'postgres/prod', a target named as `vaultflow list` and `status`
    print it (engine/name); None when the part before the first '/' is no registered engine
    (e.g. a block type slug: 'postgres-target/prod')."""
    engine, sep, name = ref.partition("/")
    return (engine, name) if sep and name and engine in engine_names() else None


def _target_slug(engine: str, name: str) -> str:
    """'<block type slug>/<name>' of the target block kind of `engine` ('postgres-target/prod');
    the ref unchanged when no registered block kind, or more than one, is that engine's."""
    slugs = [slug for slug, cls in target_types().items() if cls.engine_name == engine]
    return f"{slugs[0]}/{name}" if len(slugs) == 1 else f"{engine}/{name}"


def repository_targets(repo: Repository, ref: TargetParam | None) -> list[tuple[str, str]]:
    """The (engine, target name) pairs a repository-wide flow (verify, prune, upload) works on:
    every target of `repo` when `ref` is None; the target of `repo` that 'engine/name' names (how
    `vaultflow list` and `status` print it: no block needed, e.g. for a URL target's backups);
    else the target block `ref` names (load_target, whose errors it raises)."""
    if ref is None:
        return repo.targets()
    pair = engine_form(ref) if isinstance(ref, str) else None
    if pair is not None and pair in repo.targets():
        return [pair]
    try:
        block = load_target(ref)
    except NotFoundError as exc:
        if pair is None:
            raise
        raise NotFoundError(
            f"{repo.description} holds no target {ref} (`vaultflow list` shows the targets it holds), and {exc}"
        ) from None
    return [(block.engine().name, block.name)]


def load_repository(ref: RepositoryParam) -> tuple[BackupRepository, Repository]:
    block = load_block(ref, "backup-repository")
    return block, block.build()


def open_backup(target: TargetParam, repository: RepositoryParam, backup_id: str):
    """(target block, engine, repository, manifest, context) for a flow that reads one backup."""
    target_block = load_target(target)
    repo_block, repo = load_repository(repository)
    engine = target_block.engine()
    manifest = repo.catalog(engine.name, target_block.name).resolve(
        backup_id, log=get_run_logger().warning, tolerance=repo_block.retention_policy().clock_tolerance
    )
    ctx = BackupContext(repository=repo, lineage=lineage(), log=get_run_logger().info)
    return target_block, engine, repo, manifest, ctx


def run_ui_url() -> str | None:
    """This flow run's page in the Prefect UI; None outside a run or when no UI URL is known
    (PREFECT_UI_URL unset, e.g. a temporary server), where Prefect's own flow_run.ui_url would be
    'None/flow-runs/flow-run/<id>'. The same path as Prefect's link otherwise."""
    ui = PREFECT_UI_URL.value()
    return f"{ui}/flow-runs/flow-run/{flow_run.id}" if flow_run.id and ui else None


def lineage() -> Lineage:
    """This flow run as a manifest records it: id, name, deployment, UI link (run_ui_url)."""
    return Lineage(
        flow_run_id=str(flow_run.id) if flow_run.id else None,
        flow_run_name=flow_run.name,
        deployment=deployment_name(),
        ui_url=run_ui_url(),
    )


# -- events ------------------------------------------------------------------------------


def target_resource(engine: str, target: str) -> dict[str, str]:
    """A target as an event resource: role 'target', named '<engine>/<target>' (a PostgreSQL and
    a Redis target may share a name), with its engine as a label."""
    return {
        "prefect.resource.id": target_resource_id(engine, target),
        "prefect.resource.role": "target",
        "prefect.resource.name": f"{engine}/{target}",
        "vaultflow.engine": engine,
    }


def backup_resource(manifest: Manifest) -> dict[str, str]:
    """The backup an event is about (its primary resource), named for a person:
    'full backup 20261126T020000.123Z-F of postgres/prod'."""
    return backup_reference(manifest.engine, manifest.target, manifest.id)


def backup_reference(engine: str, target: str, backup_id: str, role: str | None = None) -> dict[str, str]:
    """A backup as an event resource: its id, a readable name ('<kind> backup <id> of
    <engine>/<target>'), its kind as a label, and `role` when it is a related resource
    ('parent'). An id that is not a backup id's shape names the kind 'unknown'."""
    try:
        kind = parse_backup_id(backup_id)[1].value
    except VaultflowError:
        kind = "unknown"
    resource = {
        "prefect.resource.id": f"vaultflow.backup.{engine}.{target}.{backup_id}",
        "prefect.resource.name": f"{kind} backup {backup_id} of {engine}/{target}",
        "vaultflow.kind": kind,
    }
    if role:
        resource["prefect.resource.role"] = role
    return resource


def backup_event_related(manifest: Manifest) -> list[dict[str, str]]:
    """The related resources of an event about `manifest`: its target (role 'target') and its
    parent backup (role 'parent') when it has one, each with a readable name."""
    related = [target_resource(manifest.engine, manifest.target)]
    if manifest.parent_id:
        related.append(backup_reference(manifest.engine, manifest.target, manifest.parent_id, role="parent"))
    return related


def emit_backup_event(event: str, manifest: Manifest, payload: dict | None = None) -> None:
    """vaultflow.backup.<event> about one backup, related to its target and parent."""
    emit_event(
        event=f"vaultflow.backup.{event}",
        resource=backup_resource(manifest),
        related=backup_event_related(manifest),
        payload=payload or {},
    )


def emit_target_event(event: str, engine: str, target: str, payload: dict, manifest: Manifest | None = None) -> None:
    """`event` (one of vaultflow.alerts' names, e.g. vaultflow.drill.failed) about a target: the
    target is the event's resource (what the alert automations match on), the backup concerned
    a related resource when there is one. Payloads are documented in vaultflow.alerts."""
    related = [{**backup_resource(manifest), "prefect.resource.role": "backup"}] if manifest else []
    resource = {k: v for k, v in target_resource(engine, target).items() if k != "prefect.resource.role"}
    emit_event(event=event, resource=resource, related=related, payload=payload)


# -- artifacts ----------------------------------------------------------------------------

# What unless_api_down returns when the Prefect API did not answer the call.
NOT_ANSWERED: Any = object()


def _why(exc: BaseException) -> str:
    """`exc` as '<Error>: <message>' on one line, at most 300 characters (a warning's reason)."""
    return one_line(f"{type(exc).__name__}: {exc}")[:300]


def unless_api_down(what: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`call(*args, **kwargs)` (an artifact's creation or update: the run's reporting) and its
    result; when the Prefect API did not answer it (api_unavailable: timeout, refused, 429 or
    5xx), one warning '<what>: the Prefect API did not answer (<error>)' and NOT_ANSWERED
    instead, so that reporting never fails (and a deployment retry never repeats) work that is
    done. Any other error, a 4xx answer among them, is raised."""
    try:
        return call(*args, **kwargs)
    except Exception as exc:
        if not api_unavailable(exc):
            raise
        get_run_logger().warning(f"{what}: the Prefect API did not answer ({_why(exc)})")
        return NOT_ANSWERED


def artifact_key(*parts: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only: each part as its
    artifact_slug (itself when it fits, else a readable form plus a short hash), so target names
    like `Sales` and `sales`, or non-ASCII ones, get distinct valid keys."""
    return "-".join(artifact_slug(part) for part in parts)[:100].strip("-")


def publish_per_target(kind: str, rows: list[dict], targets: list[tuple[str, str]], description: str) -> None:
    """`rows` (each with "target": "<engine>/<name>") as one table artifact per target, keyed
    '<kind>-<engine>-<target>': a target's history stays one key however many targets a run
    covers or a repository gains. A run over no targets publishes one empty table keyed `kind`.
    An API that does not answer costs a warning per table, not the run (unless_api_down)."""
    for engine, name in targets:
        key = artifact_key(kind, engine, name)
        unless_api_down(
            f"table artifact {key} not published",
            create_table_artifact,
            [row for row in rows if row["target"] == f"{engine}/{name}"],
            key=key,
            description=f"{description}: {engine}/{name}",
        )
    if not targets:
        unless_api_down(
            f"table artifact {kind} not published", create_table_artifact, [], key=kind, description=description
        )


def publish_catalog(repository: Repository, engine: str, target: str) -> None:
    """The keyed table artifact `catalog-<engine>-<target>` that shows a target's catalog
    (vaultflow.catalog_view): per backup its age, whether its chain restores, its last verify and
    last drill side by side with short run links; the newest restorable backup in its
    description. A table, not a markdown page: Prefect's UI renders string cells as markdown
    (docs/architecture.md, "The catalog artifact"). An API that does not answer costs a
    warning, not the run (unless_api_down)."""
    view = catalog_view(repository.catalog(engine, target), repository.last_checks(engine, target))
    key = artifact_key("catalog", engine, target)
    unless_api_down(
        f"catalog artifact {key} not published",
        create_table_artifact,
        view.rows,
        key=key,
        description=f"Catalog of {engine}/{target} in {repository.description}. {view.headline}",
    )


def record_check(repository: Repository, manifest: Manifest, kind: str, ok: bool, detail: str, **extra: float) -> None:
    """Keep this run's check of `manifest` (Repository.record_check): `kind` "verify",
    "quick-verify" or "drill", its result, `detail`, the time (ISO UTC) and this run's id and UI
    link; `extra` adds fields (a drill: seconds, rto_objective_s)."""
    repository.record_check(
        manifest,
        {
            "kind": kind,
            "result": "ok" if ok else "FAILED",
            "detail": detail,
            # milliseconds: a drill and a verify (or two drills) of one second stay in order
            "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "flow_run_id": str(flow_run.id) if flow_run.id else None,
            "ui_url": run_ui_url(),
            **extra,
        },
    )


PROGRESS_NOT_UPDATED = "progress artifact not updated"


class ProgressReporter:
    """Live progress of a run's transfers: the engine's progress callback (object name, bytes
    done, bytes expected) -> a Prefect progress artifact on the run's page (and a terminal bar
    for the CLI).

    Use it as `with ProgressReporter(title) as progress:`. Leaving the block says how it ended:
    100% and '<title>: done, 12.3 MB in 4.2 s' when it completed; when it raised, the percentage
    stays where it was and the description says '<title>: FAILED at <object> (<bytes>): <reason>',
    so a failed run's progress never claims done. Unkeyed on purpose: it is the run's live view
    (its Artifacts tab); what stays on the Artifacts page is the run's keyed summary
    (flows._report; docs/architecture.md, "Run summaries").

    A Prefect API that does not answer (api_unavailable) costs the run its progress artifact, not
    its transfer: one warning, and the artifact is left alone for the rest of the run."""

    def __init__(self, title: str, min_interval: float = 2.0):
        self._title = title
        created = unless_api_down(PROGRESS_NOT_UPDATED, create_progress_artifact, 0.0, description=title)
        self._artifact = None if created is NOT_ANSWERED else created  # None: left alone from now on
        self._last = 0.0
        self._interval = min_interval
        self._started = time.monotonic()
        self._percent = 0.0
        self._current: tuple[str, int] | None = None  # the object moving now, bytes of it done
        self._done: dict[str, int] = {}  # object -> bytes done
        self._bar = None
        if TERMINAL_PROGRESS["enabled"] and sys.stderr.isatty():
            from rich.progress import Progress  # only the CLI pays for rich's import

            self._bar = Progress(transient=True)
            self._bar.start()
            self._task = self._bar.add_task(title, total=None)

    def __enter__(self) -> ProgressReporter:
        return self

    def __call__(self, name: str, done: int, expected: int | None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=expected, description=name)
        self._current, self._done[name] = (name, done), done
        now = time.monotonic()
        if now - self._last >= self._interval and expected:
            self._last = now
            self._percent = min(99.0, 100.0 * done / expected)
            self._update(self._percent, f"{self._title}: {name} {human_size(done)}")

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
        if exc is None:
            moved = f"{human_size(sum(self._done.values()))} in {human_duration(time.monotonic() - self._started)}"
            self._update(100.0, f"{self._title}: done, {moved}")
            return
        where = f" at {self._current[0]} ({human_size(self._current[1])})" if self._current else ""
        try:
            self._update(self._percent, f"{self._title}: FAILED{where}: {_why(exc)}")
        except Exception as report_exc:  # noqa: BLE001 - the run's own error comes first
            get_run_logger().warning(f"could not mark the progress artifact failed: {report_exc}")

    def _update(self, percent: float, description: str) -> None:
        """Set the artifact, unless the API did not answer once already: a slow API is waited
        for once a run, and warned about once."""
        if self._artifact is None:
            return
        sent = unless_api_down(
            PROGRESS_NOT_UPDATED, update_progress_artifact, self._artifact, percent, description=description
        )
        if sent is NOT_ANSWERED:
            self._artifact = None


# -- retries -------------------------------------------------------------------------------


@contextmanager
def fail_fast_on_permanent_errors() -> Iterator[None]:
    """Deployments retry failed flow runs; a wrong password or a corrupt object must not be.

    On a permanent error we set this run's remaining retries to zero before re-raising, so
    the server's retry rule lets the run fail at once. A transient error (is_transient, or a
    Prefect API that did not answer: api_unavailable) is logged with what happens next: the flow
    run tries again (in how long, which retry of how many) or has no retries left.

    Both ask the Prefect API, which may not answer either: then one warning says so and the run
    fails with its own exception all the same, never with the API's.
    """
    try:
        yield
    except Exception as exc:
        if flow_run.id:
            _say_what_happens_next(exc)
        raise


def _say_what_happens_next(exc: Exception) -> None:
    """Log the run's error with what the server does next (fail_fast_on_permanent_errors);
    cancel the run's retries when `exc` is permanent. Raises nothing."""
    logger = get_run_logger()
    error = f"{type(exc).__name__}: {exc}"
    if is_transient(exc) or api_unavailable(exc):
        try:
            note = _flow_retry_note()
        except Exception as api_exc:  # noqa: BLE001 - the run fails with its own error, not this one
            note = f"transient; the Prefect API did not say whether the flow run is retried: {_why(api_exc)}"
        logger.warning(f"{error} ({note})")
        return
    logger.error(f"{error} (not retried)")
    try:
        with get_client(sync_client=True) as client:
            policy = client.read_flow_run(flow_run.id).empirical_policy
            client.update_flow_run(
                flow_run.id,
                empirical_policy=FlowRunPolicy(**{**policy.model_dump(), "retries": 0, "max_retries": 0}),
            )
    except Exception as api_exc:  # noqa: BLE001 - the run fails with its own error, not this one
        logger.warning(
            f"the flow run's remaining retries were not cancelled ({_why(api_exc)}): a deployment may retry "
            f"this run although {type(exc).__name__} is permanent"
        )


def _flow_retry_note() -> str:
    """What the server's retry rule does with this failing run: retried while its run count is
    at most its retries (prefect's RetryFailedFlows)."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run.id)
    retries, delay = run.empirical_policy.retries or 0, run.empirical_policy.retry_delay or 0
    if run.run_count <= retries:
        return f"transient: the flow run tries again in {delay} s, retry {run.run_count} of {retries}"
    return f"transient, but the flow run has no retries left (it allows {retries})"
