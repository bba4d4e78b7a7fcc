"""Thin @task wrappers over the vaultflow core, by verb: the steps a run graph shows, importable
into your own flows (docs/tasks.md):

    from vaultflow.tasks import dump, upload, verify_checksum, archive_logs, prune, restore_and_compare
    from vaultflow.tasks import drill_backup  # restore-and-compare into scratch, then remove it (drill-<id>)

Flows compose these; each is a one-line delegation to the core (or an engine).
"""

from vaultflow.tasks.backup import check_target, dump, finish_backup, plan_backup
from vaultflow.tasks.logs import archive_logs
from vaultflow.tasks.prune import prune
from vaultflow.tasks.restore import drill_backup, restore_and_compare
from vaultflow.tasks.transfer import upload
from vaultflow.tasks.verify import verify_checksum

__all__ = [
    "archive_logs",
    "check_target",
    "drill_backup",
    "dump",
    "finish_backup",
    "plan_backup",
    "prune",
    "restore_and_compare",
    "upload",
    "verify_checksum",
]
