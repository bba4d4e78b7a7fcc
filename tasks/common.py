"""What every task shares: retry only what may go away, never cache side effects."""

from __future__ import annotations

import os

from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from vaultflow.errors import is_transient


def retry_only_transient(task, task_run, state) -> bool:
    """Retry network trouble and timeouts; a wrong password or missing database fails at once."""
    try:
        state.result()
    except Exception as exc:  # the failed state re-raises the task's exception here
        return is_transient(exc)
    return False


SIDE_EFFECT_TASK = dict(
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=float(os.environ.get("VAULTFLOW_RETRY_BACKOFF_S", "10"))),
    retry_jitter_factor=0.2,
    retry_condition_fn=retry_only_transient,
)
