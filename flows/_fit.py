"""Which targets a strategy works on.

One rule, used twice: the incremental, differential and archive-logs flows apply it when they
start, and deployments/validate.py applies it to the saved blocks a prefect.yaml names, so a
deployment that can never do its job is found before it is deployed.

- incremental / differential need a physical PostgreSQL target (pg_basebackup chains), or a
  Redis target in local mode (data_dir set) whose server has `appendonly yes` (AOF increments);
- archive-logs ships PostgreSQL WAL: it needs a physical PostgreSQL target with a wal_spool
  (or a spool_dir parameter).
"""

from __future__ import annotations

from typing import Any, Optional

# flow name -> strategy, for the flows whose targets are restricted
STRATEGY_OF_FLOW = {"incremental-backup": "incremental", "differential-backup": "differential",
                    "archive-logs": "archive-logs"}


def _slug(block: Any) -> str:
    return block.get_block_type_slug() if hasattr(block, "get_block_type_slug") else ""


def misfit(strategy: str, block: Any, spool_dir: Optional[str] = None) -> Optional[str]:
    """Why `block` cannot do `strategy` ('incremental', 'differential', 'archive-logs'), from the
    block's fields alone; None when it can. A Redis server's appendonly is a server setting:
    see server_misfit."""
    name, slug = getattr(block, "name", "?"), _slug(block)
    if strategy == "archive-logs":
        if slug != "postgres-target":
            return (f"{name} is a {slug or type(block).__name__}: archive-logs ships PostgreSQL WAL "
                    "(Redis changes are kept by incremental-backup, as AOF increments)")
        if block.mode != "physical":
            spool = "" if (spool_dir or block.wal_spool) else " and has no wal_spool"
            return (f"{name} takes logical backups (pg_dump){spool}: WAL archiving needs a physical target "
                    "(mode='physical', wal_spool, archive_command = 'vaultflow wal-push %p --spool DIR')")
        if not (spool_dir or block.wal_spool):
            return (f"{name} has no wal_spool: set it on the PostgresTarget block to the directory "
                    "archive_command spools into (vaultflow wal-push %p --spool DIR), or pass spool_dir")
        return None
    if slug == "postgres-target" and block.mode != "physical":
        return f"{name} takes logical backups, which have no {strategy} form"
    if slug == "redis-target" and not block.data_dir:
        return (f"{name} is backed up remotely (no data_dir), and {strategy} backups copy the AOF files "
                "on the Redis host")
    return None


def server_misfit(strategy: str, block: Any) -> Optional[str]:
    """What only the server can tell: a local-mode Redis target with appendonly off. None when
    it fits or when the server cannot be asked (the backup itself then reports that error)."""
    from vaultflow.errors import VaultflowError

    if strategy not in ("incremental", "differential") or _slug(block) != "redis-target":
        return None
    try:
        enabled = block.engine().aof_enabled()
    except VaultflowError:
        return None
    return None if enabled else (f"{block.name} has appendonly off, and {strategy} backups copy AOF "
                                 "increments (CONFIG SET appendonly yes, and in redis.conf)")


HOW_TO_FIX = {
    "incremental": "point the deployment at a physical PostgreSQL target (mode='physical') or a local-mode "
                   "Redis target with appendonly yes, or schedule full backups only",
    "differential": "point the deployment at a physical PostgreSQL target (mode='physical') or a local-mode "
                    "Redis target with appendonly yes, or schedule full backups only",
    "archive-logs": "point the deployment at a physical PostgreSQL target with a wal_spool, or pause it",
}
