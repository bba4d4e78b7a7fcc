"""What a run did, for people: sizes and durations in units a person reads, and a run summary
(a one-line message for the run's final state, a short markdown page for its artifact).

Prefect-free: the flows build a RunSummary from their results and publish it
(flows._support.publish_summary); everything here is tested without a Prefect API."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError

_SIZE_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_size(num_bytes: float) -> str:
    """`num_bytes` in decimal units (1 kB = 1000 B), as `du -h --si` and the Prefect UI count:
    '0 B', '999 B', '1.0 kB', '1.5 MB', '2.3 GB'. Bytes are whole; larger units carry one
    decimal, chosen after rounding (999 999 B is '1.0 MB', never '1000.0 kB'). A negative size
    keeps its sign."""
    sign = "-" if num_bytes < 0 else ""
    value = abs(float(num_bytes))
    if value < 1000:
        return f"{sign}{value:.0f} B"
    for unit in _SIZE_UNITS[1:]:
        value /= 1000
        if round(value, 1) < 1000 or unit == _SIZE_UNITS[-1]:
            return f"{sign}{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def counted(number: int, noun: str) -> str:
    """'1 problem', '2 problems', '0 schedules': `number` and `noun`, plural unless it is one."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def human_duration(seconds: float) -> str:
    """`seconds` as a person reads it: '0.04 s', '12.3 s', '4 min 05 s', '2 h 03 min'.
    Below one second two decimals (a quick run is not '0.0 s'); below a minute one decimal."""
    seconds = max(0.0, float(seconds))
    if seconds < 1:
        return f"{seconds:.2f} s"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


# A recovery time objective: seconds, finite and above 0 (-5, nan or inf would record a drill that
# could never pass, or always pass, and page on-call). The restore-drill flow's parameter type, so
# the run form, a deployment's schedule and `fleet check` refuse it before anything runs; the CLI's
# --rto goes through rto_seconds.
RtoSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_RTO = TypeAdapter(RtoSeconds)


def rto_seconds(value: float) -> float:
    """`value` as a recovery time objective in seconds (the RtoSeconds rule). Raises ValueError
    saying what to give when it is not finite or not above 0."""
    try:
        return _RTO.validate_python(value)
    except ValidationError:
        raise ValueError(f"{value!r} is not a recovery time objective: give seconds above 0, e.g. 900") from None


def objective_duration(seconds: float) -> str:
    """An objective in seconds as human_duration says it, but one below a second never rounded to
    zero: 0.001 -> '1 ms', 0.000001 -> '0.001 ms', 0.25 -> '250 ms'."""
    seconds = max(0.0, float(seconds))
    if 0 < seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    return human_duration(seconds)


def human_age(seconds: float) -> str:
    """How long ago something happened, in whole units a person reads: '45 s', '12 min',
    '3 h 05 min', '2 d 04 h'. A negative age (a clock that ran ahead) is 'in the future'."""
    if seconds < 0:
        return "in the future"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} min"
    return f"{whole // 86400} d {whole % 86400 // 3600:02d} h"


def human_rate(num_bytes: float, seconds: float) -> str:
    """Throughput of `num_bytes` moved in `seconds`, e.g. '12.5 MB/s'; 'n/a' when no time was
    measured (0 s: a rate would be infinite)."""
    if seconds <= 0:
        return "n/a"
    return f"{human_size(num_bytes / seconds)}/s"


def sizes_and_time(result: dict) -> str:
    """'12.3 MB -> 2.1 MB in 4.2 s' from a backup result's raw_size, stored_size and seconds."""
    return (
        f"{human_size(result['raw_size'])} -> {human_size(result['stored_size'])} "
        f"in {human_duration(result['seconds'])}"
    )


def when(moment: datetime) -> str:
    """A timestamp as the catalog shows it: '2026-11-30 06:35:29 UTC'."""
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _cell(value: object) -> str:
    """A value as one markdown table cell: no pipes or newlines to break the row."""
    return str(value).replace("|", "\\|").replace("\n", " ")


@dataclass
class RunSummary:
    """What one run did.

    title:   the artifact's heading, e.g. 'full backup of postgres/prod'.
    line:    one line for the run's final state message (runs list, `--watch`).
    facts:   (label, value) pairs, the artifact's table, in order.
    details: further lines listed under the table (mismatches, problems, notes), at most
             `MAX_DETAILS` of them shown.
    """

    title: str
    line: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    MAX_DETAILS = 20

    def markdown(self) -> str:
        """The artifact's page: a heading, the one line, a two-column table of facts, details."""
        parts = [f"### {self.title}", "", self.line, ""]
        if self.facts:
            parts += ["| | |", "|---|---|"]
            parts += [f"| {_cell(label)} | {_cell(value)} |" for label, value in self.facts]
            parts.append("")
        if self.details:
            parts += [f"- {_cell(d)}" for d in self.details[: self.MAX_DETAILS]]
            if len(self.details) > self.MAX_DETAILS:
                parts.append(f"- ... and {len(self.details) - self.MAX_DETAILS} more")
            parts.append("")
        return "\n".join(parts)


def one_line(text: str) -> str:
    """`text` on one line: its non-blank lines, stripped, joined with ' | ' (an error that carries
    a server's log tail or a tool's stderr becomes one line for a run's state message)."""
    return " | ".join(line.strip() for line in str(text).splitlines() if line.strip())


def listed(items: Iterable[str], limit: int = 5) -> str:
    """'a, b, c' of at most `limit` items, then '(+N more)'."""
    items = list(items)
    text = ", ".join(items[:limit])
    return text + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


# -- one builder per flow: the flow's result (its return value) -> RunSummary ------------------


def backup_summary(result: dict, subject: str, asked: str) -> RunSummary:
    """A backup run's summary from run_backup's result (backup_id, kind, parent_id, raw_size,
    stored_size, seconds, objects, fell_back_to_full). `subject`: '<engine>/<target>'; `asked`:
    the kind the run was asked for ('incremental' that fell back to a full says why)."""
    kind, seconds = result["kind"], result["seconds"]
    sizes = f"{human_size(result['raw_size'])} read, {human_size(result['stored_size'])} stored"
    speed = human_rate(result["raw_size"], seconds)
    basis = f"{kind} on {result['parent_id']}" if result.get("parent_id") else kind
    if kind != asked:
        basis += f" instead of {asked}"
    line = f"backup {result['backup_id']} ({basis}): {sizes} in {human_duration(seconds)} ({speed})"
    if result.get("fell_back_to_full"):
        line = f"took a full backup: {result['fell_back_to_full']}; {line}"
    facts = [
        ("backup", result["backup_id"]),
        ("kind", kind if kind == asked else f"{kind} (asked: {asked})"),
        ("parent", result.get("parent_id") or "none (a full backup starts a chain)"),
        ("read (raw)", human_size(result["raw_size"])),
        ("stored", human_size(result["stored_size"])),
        ("duration", human_duration(seconds)),
        ("throughput", speed),
        ("objects", str(result["objects"])),
    ]
    if result.get("fell_back_to_full"):
        facts.insert(2, ("why a full", result["fell_back_to_full"]))
    return RunSummary(f"{kind} backup of {subject}", line, facts)


def recovery_point(options: dict, finished_at: datetime, reached: str | None = None) -> str:
    """Where a restore stopped: what the engine reports it `reached` (an LSN, an oplog time),
    with the point-in-time options it was given (to_time, to_lsn, to_name, to_timeline, ...) as
    '(asked: ...)'; without a `reached`, those options; with neither, the backup's own consistent
    point (its finish time)."""
    chosen = {k: v for k, v in options.items() if k.startswith("to_") and v not in (None, "")}
    asked = ", ".join(f"{k}={v}" for k, v in chosen.items())
    if reached:
        return f"{reached} (asked: {asked})" if asked else reached
    return asked or f"the backup's consistent point ({when(finished_at)})"


def restore_summary(
    result: dict, subject: str, comparison: str, point: str, options: dict, ok: bool = True
) -> RunSummary:
    """A restore run's summary from restore's result (backup_id, restored: source -> where it
    went, seconds, notes, and `timeline` when the engine reports one: the timeline a PostgreSQL
    physical restore ended on). `comparison`: Comparison.summary(); `point`: recovery_point();
    `options`: the engine options that were set."""
    where = listed(f"{src} -> {dest}" if src != dest else dest for src, dest in result["restored"].items()) or "-"
    verdict = "matches the backup" if ok else "DIFFERS from the backup"
    timeline = result.get("timeline")
    line = (
        f"restored {result['backup_id']} into {where} in {human_duration(result['seconds'])}; "
        f"recovery point: {point}; {f'timeline {timeline}; ' if timeline else ''}{comparison}"
    )
    facts = [
        ("backup", result["backup_id"]),
        ("restored into", where),
        ("recovery point", point),
        *([("timeline", timeline)] if timeline else []),
        ("duration", human_duration(result["seconds"])),
        ("comparison", f"{verdict}: {comparison}"),
    ]
    if options:
        facts.append(("options", ", ".join(f"{k}={v}" for k, v in options.items())))
    return RunSummary(f"restore of {subject}", line, facts, list(result.get("notes") or []))


def drill_summary(
    backup_id: str, subject: str, seconds: float, rto_objective_s: float, comparison: str, mismatched: list[str]
) -> RunSummary:
    """A restore drill's summary: PASSED when nothing differs and the restore met the RTO.
    `mismatched`: each differing unit with why ('db.table (rows differ)')."""
    rto_met = seconds <= rto_objective_s
    verdict = "PASSED" if rto_met and not mismatched else "FAILED"
    rto = f"restore {human_duration(seconds)} against an RTO of {objective_duration(rto_objective_s)}"
    rto += " (met)" if rto_met else " (MISSED)"
    line = f"drill of {backup_id} {verdict}: {rto}; {comparison}"
    facts = [
        ("result", verdict),
        ("backup", backup_id),
        ("restore time (RTO)", human_duration(seconds)),
        ("objective", objective_duration(rto_objective_s)),
        ("comparison", comparison),
    ]
    return RunSummary(f"restore drill of {subject}", line, facts, [f"differs: {m}" for m in mismatched])


def failed_summary(title: str, reason: str, facts: Iterable[tuple[str, str]] = ()) -> RunSummary:
    """The summary of a run that failed: '<title> FAILED: <reason>' (`reason`: the error, one
    line), with the `facts` known before it failed (the backup it was reading, ...)."""
    return RunSummary(title, f"{title} FAILED: {reason}", [("result", "FAILED"), *facts, ("reason", reason)])


def verify_summary(counts: dict, targets: list[str], failures: list[str], deep: bool, repository: str) -> RunSummary:
    """verify's summary: how many backups, unreadable manifests and log units were checked, in
    which targets, how (deep: sha256 re-read; quick: presence and size) and each problem."""
    how = "sha256 of every object re-read" if deep else "presence and size of every object"
    checked = f"{counts['backups']} backups"
    if counts.get("unreadable"):
        checked += f", {counts['unreadable']} unreadable manifests"
    if counts.get("log_units"):
        checked += f", {counts['log_units']} archived log units"
    verdict = "all intact" if not failures else f"{len(failures)} PROBLEMS"
    line = f"{'verified' if deep else 'checked'} {checked} of {listed(targets) or 'no targets'}: {verdict}"
    facts = [("repository", repository), ("targets", listed(targets, 20) or "none"), ("checked", checked)]
    facts += [("how", how), ("result", verdict)]
    return RunSummary(f"{'deep' if deep else 'quick'} verify of {repository}", line, facts, list(failures))


def prune_summary(result: dict, targets: list[str], repository: str) -> RunSummary:
    """prune's summary from its result: kept, deleted (or would delete, in a dry run), orphan
    objects, archived log units, interrupted writes, and backups held or skipped and why."""
    verb = "would delete" if result["dry_run"] else "deleted"
    deleted = result["deleted"]
    line = (
        f"{'dry run: ' if result['dry_run'] else ''}kept {len(result['kept'])} backups, {verb} {len(deleted)}"
        f"{f' ({listed(deleted, 3)})' if deleted else ''}, {result['orphan_objects']} orphan objects, "
        f"{result['log_units_deleted']} archived log units"
    )
    facts = [
        ("repository", repository),
        ("targets", listed(targets, 20) or "none"),
        ("kept", listed(result["kept"], 10) or "none"),
        (verb, listed(deleted, 10) or "none"),
        ("orphan objects", str(result["orphan_objects"])),
        ("archived log units", str(result["log_units_deleted"])),
        ("interrupted writes removed", str(result["partial_writes_removed"])),
    ]
    details = [f"held (clock): {k}: {v}" for k, v in result["clock_problems"].items()]
    details += [f"unreadable, kept: {k}: {v}" for k, v in result["unreadable"].items()]
    details += [f"skipped {k}: {v}" for k, v in result["skipped_targets"].items()]
    return RunSummary(f"prune of {repository}{' (dry run)' if result['dry_run'] else ''}", line, facts, details)


def archive_summary(report: dict, subject: str, title: str) -> RunSummary:
    """archive-logs' summary from ShipReport.as_dict(): units shipped, sizes, lag left.
    `title`: the log archive's title ('WAL archive', 'oplog archive'; LogArchive.title)."""
    title = title.removesuffix(" archive")
    shipped = report["shipped"]
    sizes = f"{human_size(report['raw_bytes'])} read, {human_size(report['stored_bytes'])} stored"
    lag = f"lag {report['lag_units']} units, {human_duration(report['lag_seconds'])}"
    line = f"shipped {len(shipped)} {title} files ({sizes}); {lag}"
    facts = [
        ("shipped", f"{len(shipped)}{f' ({shipped[0]} .. {shipped[-1]})' if shipped else ''}"),
        ("already stored", str(len(report["already_stored"]))),
        ("read (raw)", human_size(report["raw_bytes"])),
        ("stored", human_size(report["stored_bytes"])),
        ("waiting (lag)", lag),
    ]
    return RunSummary(f"{title} archiving of {subject}", line, facts)


def upload_summary(result: dict, source: str, destination: str) -> RunSummary:
    """upload's summary from its result: backups copied or already there, objects and bytes."""
    copied = result["copied"]
    line = (
        f"copied {len(copied)} backups to {destination} ({result['objects_sent']} objects, "
        f"{human_size(result['bytes_sent'])} sent; {result['objects_skipped']} objects already there)"
    )
    facts = [
        ("from", source),
        ("to", destination),
        ("copied", listed(copied, 10) or "none"),
        ("already there", listed(result["already_there"], 10) or "none"),
        ("sent", f"{result['objects_sent']} objects, {human_size(result['bytes_sent'])}"),
    ]
    return RunSummary(f"upload to {destination}", line, facts)
