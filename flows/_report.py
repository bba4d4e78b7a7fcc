"""What a flow run says when it ends, whether it completed or failed: a keyed markdown artifact
(its summary, listed on the Artifacts page) and the final state's one-line message.

    with fail_fast_on_permanent_errors(), RunReport("full-backup", "full backup", target) as report:
        ...
        report.about(engine, target_name)   # keys the artifact <flow>-summary-<engine>-<target>
        report.facts["backup"] = manifest.id  # shown if the run fails from here on
    return report.finish(summary, result)

The summaries themselves are built by the Prefect-free vaultflow.summary."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, State

from vaultflow.alerts import DRILL_FAILED
from vaultflow.flows._support import artifact_key, emit_target_event, engine_form, load_target, unless_api_down
from vaultflow.manifest import Manifest
from vaultflow.summary import RunSummary, failed_summary, one_line


def summary_key(flow: str, engine: str | None = None, target: str | None = None) -> str:
    """The summary artifact's key: '<flow>-summary-<engine>-<target>' for a run about one
    target (its history stays one key), '<flow>-summary-all-targets' for a verify, prune or
    upload over a whole repository."""
    if engine is None or target is None:
        return artifact_key(flow, "summary", "all-targets")
    return artifact_key(flow, "summary", engine, target)


def publish_summary(key: str, summary: RunSummary) -> None:
    """`summary` as a markdown artifact keyed `key` (listed on the Artifacts page, its history
    one key); its description is the summary's line, cut at Prefect's 500 characters. A Prefect
    API that does not answer costs a warning, not the run (unless_api_down): the run still ends
    with the summary's line as its state message."""
    unless_api_down(
        f"summary artifact {key} not published",
        create_markdown_artifact,
        summary.markdown(),
        key=key,
        description=summary.line[:500],
    )


def finish_run(key: str, summary: RunSummary, result: Any) -> State:
    """Publish `summary` as the run's markdown artifact (keyed `key`: summary_key) and return
    the run's final state: Completed, its message the summary's one line, its data `result`
    (so a caller of the flow still gets `result`)."""
    publish_summary(key, summary)
    return Completed(message=summary.line, data=result)


def make_one_line(exc: BaseException) -> str:
    """`exc`'s message on one line (vaultflow.summary.one_line), set as its message when it
    spanned several (a server log tail, a tool's stderr): Prefect's failed state message is
    '<Error>: <message>', which the runs list and `--watch` show. Only an exception whose message
    is its single string argument is changed (others keep theirs). Returns the one line."""
    text = str(exc)
    line = one_line(text)
    if line != text and type(exc).__str__ is BaseException.__str__ and len(exc.args) == 1:
        if isinstance(exc.args[0], str):
            exc.args = (line,)
    return line


class RunReport:
    """Says what one flow run did when it ends (the module docstring shows the use).

    flow:   the flow's name, the key's first part ('full-backup', 'restore', 'verify', ...).
    what:   what the run is, for people ('full backup', 'restore', 'verify').
    target: the run's target parameter (a block or its name), or None for a run over a whole
            repository (`whole_repository`: its key is '<flow>-summary-all-targets' from the
            start). A run that fails before `about` named its target loads it to key the failed
            summary; when even that fails (no such block), the failed state is all there is.
    facts:  (label -> value) known so far, shown in a failed run's summary.
    title:  the summary's heading, default '<what> of <engine>/<target>' (or of the repository).
    summary: a summary the run built before it raised (a restore whose data differs, a drill
            that missed its RTO): published instead of the generic FAILED one.

    On an exception the message is made one line (make_one_line) and the summary published; the
    exception then propagates unchanged otherwise, so the run fails as before.
    """

    def __init__(self, flow: str, what: str, target: Any = None, whole_repository: bool = False):
        self.flow, self.what = flow, what
        self._target_ref = target
        self.engine: str | None = None
        self.target: str | None = None
        self.manifest: Manifest | None = None
        self.key: str | None = summary_key(flow) if whole_repository and target is None else None
        self.subject = "all targets" if self.key else None
        self.title: str | None = None
        self.facts: dict[str, str] = {}
        self.summary: RunSummary | None = None
        self._unknown = False  # the target parameter names no block: said once

    def about(self, engine: str, target: str, manifest: Manifest | None = None) -> None:
        """The run's target (and the backup it reads, when one): keys its summary."""
        self.engine, self.target, self.manifest = engine, target, manifest
        self.key = summary_key(self.flow, engine, target)
        self.subject = f"{engine}/{target}"
        if manifest is not None:
            self.facts["backup"] = manifest.id

    def finish(self, summary: RunSummary, result: Any) -> State:
        """Publish `summary` under the run's key and return the Completed state (finish_run)."""
        assert self.key is not None, "RunReport.about names the target before the run finishes"
        return finish_run(self.key, summary, result)

    def resolve(self) -> bool:
        """Whether the run's target is known, loading it from the target parameter when `about`
        was not reached (the run failed first). A load that fails is logged, not raised."""
        if self.key is not None:
            return True
        if self._target_ref is None or self._unknown:
            return False
        try:
            block = load_target(self._target_ref)
        except Exception as exc:  # the run fails with its own error anyway; say why no summary
            if isinstance(self._target_ref, str) and (pair := engine_form(self._target_ref)) is not None:
                self.about(*pair)  # a target named as the repository names it (repository_targets)
                return True
            self._unknown = True
            get_run_logger().warning(
                f"no {self.flow} summary artifact or event: the target is unknown ({one_line(str(exc))})"
            )
            return False
        self.about(block.engine_name, block.name)
        return True

    def __enter__(self) -> RunReport:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or not isinstance(exc, Exception):
            return
        reason = make_one_line(exc)  # nothing lost: the same words, its lines joined with " | "
        if not self.resolve():
            return
        assert self.key is not None
        title = self.title or f"{self.what} of {self.subject}"
        publish_summary(
            self.key, self.summary or failed_summary(title, f"{type(exc).__name__}: {reason}", self.facts.items())
        )


class DrillFailureAlert:
    """Emits vaultflow.drill.failed (payload in vaultflow.alerts) when the drill it wraps raises,
    about the target and backup its RunReport knows (loaded from the target parameter when the
    drill failed before naming them); `details` adds payload fields (seconds, rto_objective_s,
    mismatched). The reason it sends is the error's message on one line."""

    def __init__(self, report: RunReport):
        self.report = report
        self.details: dict[str, Any] = {}

    def __enter__(self) -> DrillFailureAlert:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None or not isinstance(exc, Exception) or not self.report.resolve():
            return
        report = self.report
        assert report.engine is not None and report.target is not None
        manifest = report.manifest
        payload = {"backup_id": manifest.id if manifest else None, "reason": one_line(str(exc)), **self.details}
        emit_target_event(DRILL_FAILED, report.engine, report.target, payload, manifest)
