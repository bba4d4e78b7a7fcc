"""verify: re-read every object of every backup and check it against its manifest."""

from __future__ import annotations

from contextlib import ExitStack

from prefect import flow, get_run_logger

from vaultflow.alerts import VERIFY_FAILED
from vaultflow.engines import registry
from vaultflow.errors import IntegrityError
from vaultflow.flows._locks import target_lock
from vaultflow.flows._names import run_name
from vaultflow.flows._report import RunReport
from vaultflow.flows._support import (
    FLOW_RETRIES,
    RepositoryParam,
    TargetParam,
    emit_backup_event,
    emit_target_event,
    fail_fast_on_permanent_errors,
    load_repository,
    publish_catalog,
    publish_per_target,
    record_check,
    repository_targets,
)
from vaultflow.logarchive import open_log_archive
from vaultflow.proc import mkdtemp, remove
from vaultflow.repository import ObjectCheck
from vaultflow.summary import counted, verify_summary
from vaultflow.tasks.verify import verify_backup

LOGGED_PROBLEMS = 200  # problems logged one per line; the summary artifact lists every one


def check_log_archive(repo, engine: str, target: str, manifests, deep: bool = False) -> tuple[list[dict], list[str]]:
    """Continuity of the target's log archive (vaultflow.logarchive; PostgreSQL: WAL, MongoDB:
    oplog slices) for each backup that reads it: from the backup's log start to the newest
    archived unit a restore of it follows, gaps named (PostgreSQL: segments and timelines, or a
    missing timeline history file). `deep`: every archived unit is also read back through
    LogArchive.fetch (into a private temporary directory, removed), its checksums checked. One
    row per target, one failure per broken backup and per damaged unit. Nothing to check when the
    engine has no log archive, the archive is empty, or no backup reads it."""
    if engine not in registry.names():  # its manifests are reported unreadable, naming the engine
        return [], []
    archive = open_log_archive(engine, repo, target)
    if archive is None:
        return [], []
    continuity = archive.continuity(manifests)
    if not continuity.units or not continuity.backups:
        return [], []
    broken = continuity.broken
    damaged = read_back_units(archive) if deep else {}
    last = continuity.backups[-1]
    detail = (
        "; ".join([b.problem for b in broken] + [f"{name}: {why}" for name, why in damaged.items()])
        if broken or damaged
        else f"continuous for {len(continuity.backups)} backups{f' ({last.note})' if last.note else ''}"
    )
    row = {
        "target": f"{engine}/{target}",
        "backup": archive.title,
        "objects": continuity.units,
        "result": "CORRUPT" if damaged else "GAPS" if broken else "ok",
        "detail": detail,
    }
    return [row], [
        f"{archive.title} of {target}: missing {len(b.missing)}: {', '.join(b.missing[:5])}; {b.problem}"
        for b in broken
    ] + [f"{archive.title} of {target}: {name} is damaged: {why}" for name, why in damaged.items()]


def read_back_units(archive) -> dict[str, str]:
    """Unit name -> why it failed its checksums, for every archived unit of `archive` read back
    (LogArchive.fetch into a private temporary directory, each file removed once checked)."""
    damaged: dict[str, str] = {}
    work = mkdtemp("vfverify-")
    try:
        for name in archive.units():
            dest = work / "unit"
            try:
                archive.fetch(name, dest)
            except IntegrityError as exc:
                damaged[name] = str(exc)
            finally:
                dest.unlink(missing_ok=True)
    finally:
        remove(work)
    return damaged


@flow(name="verify", flow_run_name=run_name("verify"), log_prints=True, **FLOW_RETRIES)
def verify(repository: RepositoryParam, target: TargetParam | None = None, deep: bool = True) -> dict:
    """Deep: recompute every object's sha256. Quick: check presence and size only. Where the
    target's engine has a log archive (PostgreSQL WAL, MongoDB oplog slices), its continuity from
    every backup that reads it is checked too, gaps named (deep: every unit read back).

    Returns {"backups": manifests checked, "unreadable": manifests that could not be read,
    "log_units": archived log units checked, "problems": [...], "clock_problems": {id: why}}.

    Unreadable manifests are reported too. The run fails if anything is wrong, after
    checking everything (one bad backup does not hide the state of the others).

    Args:
        repository: The BackupRepository block, or its name ('backup-repository/main').
        target: Only this target (a block or its name, or engine/name as `vaultflow list` prints it); default: every target in the repository.
        deep: Re-read every object and recompute its sha256 (False: check presence and size only).
    """
    logger = get_run_logger()
    with (
        fail_fast_on_permanent_errors(),
        RunReport("verify", f"{'deep' if deep else 'quick'} verify", target, whole_repository=True) as report,
        ExitStack() as lock_stack,
    ):
        _, repo = load_repository(repository)
        report.subject = repo.description  # a target given makes it the subject below
        targets = repository_targets(repo, target)
        if target is not None:
            report.about(*targets[0])
        rows, failures, clocks = [], [], {}
        counts = {"backups": 0, "unreadable": 0, "log_units": 0}  # rows are of all three kinds: count each
        for engine, name in targets:
            first_failure = len(failures)
            lock_stack.close()  # the previous target's lock: a prune waits only for the target being read
            lock_stack.enter_context(target_lock(repo, engine, name, "verify", log=logger.warning))
            catalog = repo.catalog(engine, name)
            # Intact but misdated backups (a worker's wrong clock) are reported, not failed:
            # retention holds them and 'latest' skips them until the clock is fixed.
            misdated = catalog.clock_problems()
            for problem in catalog.problems:
                rows.append(
                    {
                        "target": f"{engine}/{name}",
                        "backup": problem.key,
                        "objects": 0,
                        "result": "UNREADABLE",
                        "detail": problem.message,
                    }
                )
                failures.append(f"{problem.key}: {problem.message}")
                counts["unreadable"] += 1
            for manifest in catalog.manifests:
                checks = verify_backup(repo, manifest, deep)
                counts["backups"] += 1
                bad = [c for c in checks if not c.ok]
                detail = "; ".join(f"{c.key}: {c.detail}" for c in bad) or (
                    "sha256 verified" if deep else "sizes match"
                )
                chain_problem = catalog.chain_problem(manifest)
                if chain_problem:
                    bad.append(ObjectCheck(manifest.id, "(chain)", False, chain_problem))
                    detail = f"{detail}; {chain_problem}"
                if manifest.id in misdated:
                    clocks[manifest.id] = misdated[manifest.id]
                    logger.warning(
                        f"{engine}/{name} {manifest.id}: {misdated[manifest.id]}; retention holds it "
                        "and 'latest' skips it"
                    )
                rows.append(
                    {
                        "target": f"{engine}/{name}",
                        "backup": manifest.id,
                        "objects": len(checks),
                        "result": "ok" if not bad else "CORRUPT",
                        "detail": detail,
                        "clock": misdated.get(manifest.id, "ok"),
                    }
                )
                failures += [f"{manifest.id}/{c.key}: {c.detail}" for c in bad]
                record_check(repo, manifest, "verify" if deep else "quick-verify", not bad, detail)
                emit_backup_event(
                    "verified", manifest, {"ok": not bad, "deep": deep, "problems": detail if bad else ""}
                )
            log_rows, log_failures = check_log_archive(repo, engine, name, catalog.manifests, deep=deep)
            rows += log_rows
            counts["log_units"] += sum(row["objects"] for row in log_rows)
            failures += log_failures
            if failures[first_failure:]:
                problems = failures[first_failure:]
                emit_target_event(
                    VERIFY_FAILED, engine, name, {"problems": problems[:20], "count": len(problems), "deep": deep}
                )
            publish_catalog(repo, engine, name)
        publish_per_target("verify", rows, targets, f"{'Deep' if deep else 'Quick'} verification of {repo.description}")
        run_summary = verify_summary(counts, [f"{e}/{n}" for e, n in targets], failures, deep, repo.description)
        logger.info(run_summary.line)
        run_summary.details += [f"misdated (held, not failed): {k}: {v}" for k, v in clocks.items()]
        if failures:
            report.summary = run_summary  # published by the report as the run fails
            for problem in failures[:LOGGED_PROBLEMS]:  # each one where the user looks: the run's log
                logger.warning(problem)
            if len(failures) > LOGGED_PROBLEMS:
                logger.warning(f"... and {len(failures) - LOGGED_PROBLEMS} more: see the run's verify summary artifact")
            more = f"; and {len(failures) - 5} more (each in the run's log)" if len(failures) > 5 else ""
            raise IntegrityError(
                f"{counted(len(failures), 'problem')} in {repo.description}: " + "; ".join(failures[:5]) + more
            )
    return report.finish(run_summary, {**counts, "problems": failures, "clock_problems": clocks})
