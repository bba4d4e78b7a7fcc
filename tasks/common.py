"""What every task shares: retry only what may go away, never cache side effects."""

from __future__ import annotations

import os

import httpx
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import PrefectHTTPStatusError
from prefect.tasks import exponential_backoff

from vaultflow.errors import is_transient


def api_unavailable(exc: BaseException) -> bool:
    """True when the Prefect API did not answer: a transport error (refused, reset, any httpx
    timeout) or an HTTP 429 / 5xx status (PrefectHTTPStatusError), as a SQLite-backed server
    under a fleet's scheduled burst does for a while. False for an answer that says no (404,
    422, any other 4xx) and for every other exception: those are permanent."""
    if isinstance(exc, PrefectHTTPStatusError):
        return exc.response.status_code == 429 or exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


def retry_only_transient(task, task_run, state) -> bool:
    """Retry network trouble, timeouts and a Prefect API that did not answer (api_unavailable);
    a wrong password or missing database fails at once."""
    try:
        state.result()
    except Exception as exc:  # the failed state re-raises the task's exception here
        return is_transient(exc) or api_unavailable(exc)
    return False


SIDE_EFFECT_TASK = dict(
    cache_policy=NO_CACHE,
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=float(os.environ.get("VAULTFLOW_RETRY_BACKOFF_S", "10"))),
    retry_jitter_factor=0.2,
    retry_condition_fn=retry_only_transient,
)
