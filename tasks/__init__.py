"""Thin @task wrappers over the vaultflow core, by verb: the steps a run graph shows, importable
into your own flows (docs/tasks.md):

    from tasks import dump, upload, verify_checksum, archive_logs, prune, restore_and_compare
    from tasks import drill_backup  # restore-and-compare into scratch, then remove it (drill-<id>)

Flows compose these; each is a one-line delegation to the core (or an engine).
"""

from tasks.backup import check_target, dump, finish_backup, plan_backup
from tasks.logs import archive_logs
from tasks.prune import prune
from tasks.restore import drill_backup, restore_and_compare
from tasks.transfer import upload
from tasks.verify import verify_checksum

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
