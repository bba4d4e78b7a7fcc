"""Locks around a flow's work on one target: a Prefect global concurrency limit for deployment
runs that write (backups, prune), then the repository lock (vaultflow.locks) for every run.

The repository lock is what protects deletion, for any run on any host, with or without
Prefect. The concurrency limit `vaultflow-<engine>-<target>` (1 slot) is for scheduled
deployment runs that overlap: the later one waits in Prefect's queue, visibly ("waiting for a
concurrency slot") and without polling the store, instead of failing. vaultflow creates it with
limit 1 the first time a deployment run needs it; an operator may change or disable it (`prefect
gcl update vaultflow-postgres-prod --disable`) and vaultflow leaves an existing limit as it is.
Runs outside a deployment (the CLI, tests, a user's own flow) skip it: they have no queue to
wait in, and the repository lock covers them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.asyncio import ConcurrencySlotAcquisitionError
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from vaultflow.errors import LockHeldError, TransientError
from vaultflow.flows._names import deployment_id
from vaultflow.keys import artifact_slug
from vaultflow.locks import HeldLock
from vaultflow.manifest import Manifest
from vaultflow.repository import MANIFEST, Repository
from vaultflow.summary import human_duration
from vaultflow.tasks.common import api_unavailable

WRITERS = frozenset({"backup", "prune"})  # purposes that take the Prefect limit too


def limit_name(engine: str, target: str) -> str:
    """The global concurrency limit of a target: `vaultflow-<engine>-<target>` in the characters
    a limit name allows (a target name that does not fit gets a readable form plus a hash)."""
    return f"vaultflow-{artifact_slug(engine)}-{artifact_slug(target)}"


def ensure_limit(name: str, slots: int = 1) -> None:
    """Create the global concurrency limit `name` with `slots` slots unless it exists (an
    existing one, perhaps changed or disabled by an operator, is left as it is)."""
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return
        except ObjectNotFound:
            pass
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))
        except ObjectAlreadyExists:
            pass  # another run created it meanwhile


# Pauses before asking a busy Prefect API again for a slot (its client has retried already): a
# SQLite-backed server under a fleet's scheduled burst answered 503 for a while (bench/fleet.py).
BUSY_PAUSES_S = (5.0, 15.0)


def _busy(exc: BaseException) -> bool:
    """An API that did not answer the slot request (refused, timed out, 429 or 5xx:
    api_unavailable, or a slot acquisition that gave up on it), as opposed to one that answered no."""
    return isinstance(exc, ConcurrencySlotAcquisitionError) or api_unavailable(exc)


def take_slot(stack: ExitStack, name: str, wait_s: float) -> None:
    """Create the global concurrency limit `name` if missing (1 slot) and take its slot into
    `stack`, waiting up to `wait_s` seconds for it (TimeoutError after that). An API too busy to
    answer is asked again after each of BUSY_PAUSES_S, then the run fails with TransientError
    (the flow run is retried) instead of a permanent error."""
    for pause in (*BUSY_PAUSES_S, None):
        try:
            ensure_limit(name)
            stack.enter_context(
                concurrency(name, occupy=1, timeout_seconds=wait_s, strict=True, raise_on_lease_renewal_failure=False)
            )
            return
        except TimeoutError:
            raise
        except Exception as exc:  # noqa: BLE001 - sorted by _busy: the rest is re-raised as it is
            if not _busy(exc):
                raise
            if pause is None:
                raise TransientError(
                    f"the Prefect API did not grant a slot of the concurrency limit {name} ({exc}); the run is retried"
                ) from exc
            time.sleep(pause)


@contextmanager
def deployment_slot(engine: str, target: str, wait_s: float, enabled: bool | None = None) -> Iterator[None]:
    """Hold the target's global concurrency slot while the block runs, when `enabled` (default:
    this is a deployment run). Waits up to `wait_s` seconds for it, then raises LockHeldError
    (retryable). The slot's lease is renewed while held and expires 5 min after a killed run."""
    if enabled is None:
        enabled = deployment_id() is not None
    if not enabled:
        yield
        return
    name = limit_name(engine, target)
    with ExitStack() as stack:
        try:
            take_slot(stack, name, wait_s)
        except TimeoutError as exc:
            raise LockHeldError(
                f"{engine}/{target}: another deployment run holds the Prefect concurrency limit {name} "
                f"(one backup or prune of a target at a time); waited {human_duration(wait_s)} (the repository's "
                "lock_wait). This is transient: the deployment's flow retries run it again; see the limit's holders with `prefect gcl inspect "
                f"{name}`"
            ) from exc
        yield


SHIP_WAIT_S = 5.0  # how long an archive-logs run waits for another's shipping slot


@contextmanager
def shipping_slot(engine: str, target: str, enabled: bool | None = None) -> Iterator[bool]:
    """Hold `vaultflow-<engine>-<target>-archive-logs` (1 slot) while a deployment run of
    archive-logs ships the target's log (default: when this is a deployment run), so that two
    runs never ship one log at once: a fleet's archive-logs deployment serves many targets and
    has no deployment concurrency limit of 1. Yields True while held; False after SHIP_WAIT_S
    seconds when another run holds it (that run ships what is waiting: this one has nothing to
    do). Runs outside a deployment yield True and take no slot."""
    if enabled is None:
        enabled = deployment_id() is not None
    if not enabled:
        yield True
        return
    name = f"{limit_name(engine, target)}-archive-logs"
    with ExitStack() as stack:
        try:
            take_slot(stack, name, SHIP_WAIT_S)
        except TimeoutError:
            yield False
            return
        yield True


@contextmanager
def target_lock(
    repo: Repository,
    engine: str,
    target: str,
    purpose: str,
    exclusive: bool = False,
    log: Callable[[str], Any] = print,
    slot: bool | None = None,
) -> Iterator[HeldLock]:
    """Hold what a `purpose` run on a target needs: the Prefect limit (writers in deployment
    runs; `slot` forces it on or off), then the repository lock, shared or `exclusive`. Yields
    the HeldLock. Raises LockHeldError (retryable) past the repository's lock_wait."""
    wait_s = repo.lock_settings.wait.total_seconds()
    with deployment_slot(engine, target, wait_s, slot if slot is not None else (None if purpose in WRITERS else False)):
        with repo.locked(engine, target, purpose, exclusive, log=log) as lock:
            yield lock


def still_there(repo: Repository, manifest: Manifest) -> None:
    """TransientError when `manifest`'s backup was pruned while this run waited for its lock (a
    retry resolves the backup again: 'latest' finds another, a pruned id fails as not found)."""
    if repo.store.stat(repo.object_key(manifest, MANIFEST)) is None:
        raise TransientError(
            f"backup {manifest.id} of {manifest.engine}/{manifest.target} was deleted (pruned) "
            "while this run waited for the repository lock; run again to pick another backup"
        )
