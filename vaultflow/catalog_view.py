"""The catalog as a person reads it: per backup its age, whether it restores (its chain is
complete and it did not fail its verify: vaultflow.status.verify_failures, the one rule `vaultflow
status` uses too), and its last verify and last drill side by side; above them the target's
newest restorable backup.

Prefect-free: flows._support.publish_catalog publishes a CatalogView as the target's table
artifact. Cells are markdown (Prefect's UI renders a table artifact's string cells as markdown),
so run links are short `[run](url)` links and free text is escaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from vaultflow.manifest import Manifest
from vaultflow.repository import Catalog
from vaultflow.status import DRILL, VERIFY_KINDS, check_time, restorable_backups, verify_failures
from vaultflow.summary import human_age, human_duration, human_size, objective_duration, when

DRILL_KINDS = (DRILL,)
# A failed check's detail is cut to this many characters in its cell (the run has all of it).
DETAIL_CHARS = 120
_MARKDOWN = re.compile(r"([\\`*_\[\]<>|#~])")


@dataclass
class CatalogView:
    """`rows`: one dict per backup, newest first, then one per unreadable manifest (columns:
    backup, kind, age, restorable, last_verify, last_drill, finished, parent, stored, made_by);
    `newest_restorable`: the newest backup whose chain is complete, did not fail its verify and
    whose time can be trusted, or None; `headline`: one markdown line saying which (the artifact's description)."""

    rows: list[dict] = field(default_factory=list)
    newest_restorable: Manifest | None = None
    headline: str = ""


def plain(text: str) -> str:
    """`text` with markdown's special characters escaped, on one line: shown as typed."""
    return _MARKDOWN.sub(r"\\\1", str(text)).replace("\n", " ")


def run_link(url: str | None, fallback: str | None = None) -> str:
    """'[run](url)', or the escaped `fallback` (a run's name) when there is no UI link (None, or
    'None/...' that runs without a Prefect UI URL recorded before lineage dropped it)."""
    return f"[run]({url})" if url and not url.startswith("None/") else plain(fallback or "")


def last_of(checks: Mapping[str, dict], kinds: Iterable[str]) -> dict | None:
    """The newest (by its "time", ISO UTC) of the records in `checks` (kind -> record) whose kind
    is one of `kinds`, or None."""
    found = [record for kind, record in checks.items() if kind in kinds]
    return max(found, key=lambda record: check_moment(record), default=None)


def check_moment(record: Mapping[str, object]) -> datetime:
    """A check record's "time" (status.check_time) for ordering: records before Dec 1 2026 have
    whole seconds, later ones milliseconds, so they compare as times, not as strings, where
    '...:56.120Z' < '...:56Z'; the earliest time when missing or unreadable."""
    return check_time(record.get("time")) or datetime.min.replace(tzinfo=UTC)


def check_cell(record: dict | None) -> str:
    """One check as a cell: 'ok · 2026-11-30 06:35 UTC · [run](url)'; a quick verify says
    '(quick)', a drill its restore time against its RTO objective (a sub-second one in ms, never
    rounded to zero) and 'RTO missed' when it took longer, a failure its detail (cut to
    DETAIL_CHARS). 'never' when there is no record."""
    if record is None:
        return "never"
    parts = [str(record.get("result", "?"))]
    if record.get("kind") == "quick-verify":
        parts[0] += " (quick)"
    parts.append(_check_time(record.get("time")))
    if record.get("seconds") is not None:
        rto = f"restore {human_duration(float(record['seconds']))}"
        if record.get("rto_objective_s") is not None:
            objective = float(record["rto_objective_s"])
            rto += f" of {objective_duration(objective)} RTO"
            if float(record["seconds"]) > objective:
                rto += ": RTO missed"
        parts.append(rto)
    if record.get("result") != "ok" and record.get("detail"):
        detail = str(record["detail"])
        parts.append(plain(detail if len(detail) <= DETAIL_CHARS else detail[: DETAIL_CHARS - 3] + "..."))
    link = run_link(record.get("ui_url"))
    if link:
        parts.append(link)
    return " · ".join(part for part in parts if part)


def _check_time(value: object) -> str:
    """A record's ISO time as '2026-11-30 06:35 UTC' (as written when it cannot be parsed)."""
    moment = check_time(value)
    return plain(str(value or "")) if moment is None else moment.strftime("%Y-%m-%d %H:%M UTC")


def catalog_view(
    catalog: Catalog, checks: Mapping[str, Mapping[str, dict]], now: datetime | None = None
) -> CatalogView:
    """The view of `catalog` with `checks` (Repository.last_checks: backup id -> {kind ->
    record}) at `now` (default: this host's clock, UTC). Restorable means the chain walk
    (Catalog.chain_fault) finds every ancestor present and readable and neither the backup nor
    one its chain includes failed its newest verify (vaultflow.status.verify_failures: 'NO: verify
    FAILED at ...'); the newest restorable backup is vaultflow.status.restorable_backups' newest
    at `now` (the rule `vaultflow status` uses: it also skips backups with a clock problem)."""
    now = now or datetime.now(UTC)
    unverified = verify_failures(catalog, checks)
    restorable_now, _ = restorable_backups(catalog, now, checks, clock=now)
    view = CatalogView(newest_restorable=restorable_now[-1] if restorable_now else None)
    for manifest in reversed(catalog.manifests):
        fault = catalog.chain_fault(manifest)
        failed = unverified.get(manifest.id)
        if fault is not None:
            restorable = f"NO: chain broken: {plain(fault.detail)}"
        else:
            restorable = f"NO: {plain(failed)}" if failed else "yes"
        checked = checks.get(manifest.id, {})
        view.rows.append(
            {
                "backup": manifest.id,
                "kind": manifest.kind.value,
                "age": human_age((now - manifest.finished_at).total_seconds()),
                "restorable": restorable,
                "last_verify": check_cell(last_of(checked, VERIFY_KINDS)),
                "last_drill": check_cell(last_of(checked, DRILL_KINDS)),
                "finished": when(manifest.finished_at),
                "parent": manifest.parent_id or "",
                "stored": human_size(manifest.stored_size),
                "made_by": run_link(manifest.lineage.ui_url, manifest.lineage.flow_run_name),
            }
        )
    for unreadable in catalog.problems:
        view.rows.append(
            {
                "backup": plain(unreadable.key),
                "kind": "UNREADABLE",
                "restorable": f"NO: {plain(unreadable.message)}",
            }
        )
    newest = view.newest_restorable
    view.headline = (
        f"Newest restorable backup: **{newest.id}** ({newest.kind.value}, finished {when(newest.finished_at)}, "
        f"{human_age((now - newest.finished_at).total_seconds())} ago)"
        if newest is not None
        else "**No restorable backup**: every backup's chain is broken or failed its verify, or there is none yet"
    )
    return view
