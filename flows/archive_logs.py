"""archive-logs: ship a target's continuous log (PostgreSQL WAL, ...) into the repository."""

from __future__ import annotations

from contextlib import ExitStack

from prefect import flow, get_run_logger
from prefect.events import emit_event

from vaultflow.alerts import ARCHIVE_LAGGING, lag_payload
from vaultflow.errors import ConfigError
from vaultflow.flows._fit import how_to_fix, misfit
from vaultflow.flows._locks import shipping_slot
from vaultflow.flows._names import run_name
from vaultflow.flows._report import RunReport
from vaultflow.flows._support import (
    FLOW_RETRIES,
    RepositoryParam,
    TargetParam,
    emit_target_event,
    fail_fast_on_permanent_errors,
    load_repository,
    load_target,
    target_resource,
)
from vaultflow.logarchive import open_log_archive, ship_failure
from vaultflow.summary import RunSummary, archive_summary, human_duration
from vaultflow.tasks.logs import archive_logs as ship_logs


def alert_on_lag(target_block, stream: str, lag_units: int, lag_seconds: float, error: str | None = None) -> None:
    """Emit vaultflow.archive.lagging when the oldest unit still waiting is older than the
    target's archive_lag_alert_minutes (the archive-lagging alert; payload in vaultflow.alerts)."""
    threshold = target_block.archive_lag_alert_minutes * 60
    if lag_seconds > threshold:
        payload = lag_payload(stream, lag_units, lag_seconds, threshold, error)
        emit_target_event(ARCHIVE_LAGGING, target_block.engine_name, target_block.name, payload)


@flow(name="archive-logs", flow_run_name=run_name("logs"), log_prints=True, **FLOW_RETRIES)
def archive_logs(
    target: TargetParam, repository: RepositoryParam, spool_dir: str | None = None, follow_seconds: float = 0.0
) -> dict:
    """Ship the target's log into the repository: every unit compressed, stored, read back and
    checked, its record written last (PostgreSQL: the WAL files `archive_command = 'vaultflow
    wal-push %p --spool DIR'` spooled; `spool_dir` overrides the target's wal_spool).

    The engine's log archive does the work (vaultflow.logarchive, found in the engine registry);
    a target whose engine has none, or that is not set up for it, fails at once saying what to
    configure. The result and the `vaultflow.<stream>.shipped` event (`vaultflow.wal.shipped`)
    carry the archive lag: `lag_units` and `lag_seconds` still waiting; `lag_segments` and
    `max_lag_segments` are the same figures under their names from before other engines had log
    archives. With `follow_seconds` the run keeps shipping (polling every 0.5 s when idle) for
    that long, so a deployment every minute with follow_seconds=50 keeps the lag to seconds
    under heavy write load; `max_lag_units` is then the largest backlog seen. Deployment runs
    ship one target's log one at a time (the Prefect concurrency limit
    `vaultflow-<engine>-<target>-archive-logs`, flows/_locks.shipping_slot): a run that finds
    another still shipping ends at once, Completed, saying so.

    Args:
        target: The target block, or its name ('postgres-target/prod', 'redis-target/cache', or
            'prod' when one kind alone has a block of that name).
        repository: The BackupRepository block, or its name ('backup-repository/main').
        spool_dir: The spool directory archive_command fills; default: the target's wal_spool
            (engines whose log is read from the server ignore it).
        follow_seconds: Keep shipping for this many seconds (0: ship what is waiting, then stop).
    """
    logger = get_run_logger()
    with (
        fail_fast_on_permanent_errors(),
        RunReport("archive-logs", "log archiving", target) as run_report,
        ExitStack() as slot,
    ):
        target_block = load_target(target)
        run_report.about(target_block.engine_name, target_block.name)
        _, repo = load_repository(repository)
        engine = target_block.engine_name
        why = misfit("archive-logs", target_block, spool_dir)
        if why:  # a permanent misconfiguration: fails at once, without retries
            raise ConfigError(f"{why}. To archive logs, {how_to_fix('archive-logs')}.")
        archive = open_log_archive(engine, repo, target_block.name, target_block, spool_dir=spool_dir)
        if archive is None:  # a target kind that claims archive-logs for an engine without an archive
            raise ConfigError(
                f"{target_block.name}: the {engine} engine has no log archive; {how_to_fix('archive-logs')}"
            )
        resource = target_resource(engine, target_block.name)
        if not slot.enter_context(shipping_slot(engine, target_block.name)):
            line = f"another archive-logs run of {engine}/{target_block.name} is shipping its {archive.title}: nothing to do"
            logger.info(line)
            return run_report.finish(RunSummary(f"{archive.title} archiving of {engine}/{target_block.name}", line), {})
        try:
            report = ship_logs(archive, follow_seconds)
        except Exception as exc:  # still report the lag, and which unit is stuck
            unit, partial = ship_failure(exc)
            if unit:
                run_report.facts["stuck at"] = unit
            if partial:
                run_report.facts["waiting (lag)"] = f"{partial.lag_units} units, {human_duration(partial.lag_seconds)}"
            lag = (
                {"lag_units": partial.lag_units, "lag_segments": partial.lag_units, "lag_seconds": partial.lag_seconds}
                if partial
                else {}
            )
            emit_event(
                event=f"vaultflow.{archive.stream}.ship-failed",
                resource=resource,
                payload={"unit": unit, "segment": unit, "error": str(exc), **lag},
            )
            if partial:
                alert_on_lag(target_block, archive.stream, partial.lag_units, partial.lag_seconds, str(exc))
            raise
        summary = {**report.as_dict(), "lag_segments": report.lag_units, "max_lag_segments": report.max_lag_units}
        emit_event(
            event=f"vaultflow.{archive.stream}.shipped",
            resource=resource,
            payload={k: v for k, v in summary.items() if k != "already_stored"},
        )
        alert_on_lag(target_block, archive.stream, report.lag_units, report.lag_seconds)
        run_summary = archive_summary(summary, f"{engine}/{target_block.name}", archive.title)
        logger.info(f"{archive.title} of {target_block.name}: {run_summary.line}")
    return run_report.finish(run_summary, summary)
