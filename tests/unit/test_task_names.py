"""The card's reusable tasks are importable from `tasks` under the names the run graph shows."""

from __future__ import annotations


def test_tasks_import_with_the_cards_names():
    from vaultflow.tasks import (
        archive_logs,
        dump,
        prune,
        restore_and_compare,
        upload,
        verify_checksum,
    )

    names = {t.name for t in (dump, upload, verify_checksum, archive_logs, prune, restore_and_compare)}
    assert names == {"dump", "upload", "verify-checksum", "archive-logs", "prune", "restore-and-compare"}


def test_flows_use_the_same_task_objects():
    """The flows import the tasks under their older names: the same task objects."""
    from vaultflow.tasks import drill_backup, prune, restore_and_compare, verify_checksum
    from vaultflow.tasks import restore as restore_tasks
    from vaultflow.tasks.prune import delete_backup
    from vaultflow.tasks.restore import restore_backup
    from vaultflow.tasks.verify import verify_backup

    assert verify_backup is verify_checksum and restore_backup is restore_and_compare and delete_backup is prune
    # the drill's step (run name drill-<id>) is importable from tasks like the others
    assert drill_backup is restore_tasks.drill_backup and drill_backup.name == "restore-and-compare"
