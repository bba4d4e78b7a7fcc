"""Which targets a strategy works on.

One rule, used twice: the incremental, differential and archive-logs flows apply it when they
start, and deployments/validate.py applies it to the saved blocks a prefect.yaml names, so a
deployment that can never do its job is found before it is deployed.

The rule itself belongs to each engine's settings (vaultflow.engines.settings.TargetSettings:
`misfit` from the fields, `server_misfit` from the server, `strategy_fits` for messages); this
module only asks them, for any registered target block type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vaultflow.blocks.registry import target_types

# flow name -> strategy, for the flows whose targets are restricted
STRATEGY_OF_FLOW = {
    "incremental-backup": "incremental",
    "differential-backup": "differential",
    "archive-logs": "archive-logs",
}

_OTHERWISE = {"archive-logs": "pause it"}


def misfit(strategy: str, block: Any, spool_dir: str | None = None) -> str | None:
    """Why target `block` cannot do `strategy` ('incremental', 'differential', 'archive-logs'),
    from the block's fields alone (and the flow's spool_dir); None when it can. What only the
    server can tell: see server_misfit."""
    parameters: Mapping[str, Any] = {"spool_dir": spool_dir} if spool_dir else {}
    return block.misfit(strategy, parameters)


def server_misfit(strategy: str, block: Any) -> str | None:
    """What only the server can tell (a local-mode Redis target with appendonly off). None when
    it fits or when the server cannot be asked (the backup itself then reports that error)."""
    return block.server_misfit(strategy)


def how_to_fix(strategy: str) -> str:
    """What to do about a misfit for `strategy`, naming every registered target kind that can do
    it, e.g. "point the deployment at a physical PostgreSQL target (mode='physical') or a
    local-mode Redis target with appendonly yes, or schedule full backups only"."""
    fits = [cls.strategy_fits[strategy] for cls in target_types().values() if strategy in cls.strategy_fits]
    otherwise = _OTHERWISE.get(strategy, "schedule full backups only")
    if not fits:
        return f"no registered target kind can do {strategy}: {otherwise}"
    return f"point the deployment at {' or '.join(fits)}, or {otherwise}"
