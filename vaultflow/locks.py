"""Repository locks that protect deletion, after restic's lock protocol.

Every run that reads or writes a target's backups holds a lock object of its own under
`<engine>/<target>/locks/<purpose>-<holder>.json`:

    {"purpose": "prune", "exclusive": true, "host": "worker-1", "pid": 4242,
     "holder": "<32 hex digits, also in the key>", "time": "<ISO 8601 UTC, rewritten while held>"}

- **Shared and exclusive.** Backups, verify, restore and restore drills hold shared locks; prune
  holds an exclusive one. An exclusive lock conflicts with every other lock, a shared one only
  with exclusive locks, and two holders of a purpose in ONE_AT_A_TIME (backups) conflict with
  each other: one backup per target at a time (two would pick the same parent).
- **Write, then re-check.** A run lists the locks, writes its own when none conflicts, waits a
  moment (backends that list with a delay), lists again and withdraws its own object when a
  conflicting one appeared meanwhile: of two runs that start together at least one sees the
  other, and neither proceeds on a lock the other also thinks it holds.
- **Bounded waiting.** A run that finds a conflicting lock retries with growing pauses (plus
  jitter, so two withdrawn runs do not collide again) until `LockSettings.wait` has passed, then
  raises LockHeldError: a retryable error naming the holder (Prefect retries the run).
- **Refreshed while held, stale after a TTL.** A background thread rewrites the time every
  `refresh_every`; a lock whose time is older than `stale_after` is stale (its run was killed
  on another host), and so is a lock from this host whose process is gone. Stale locks are
  removed by the next run that looks. A holder that cannot refresh in time, or finds its object
  removed, has lost the lock: `HeldLock.check()` raises LockLostError from then on.
- **Release deletes only the holder's own object** (the key carries the holder id, and the
  object must still hold it).

Nothing here knows engines or Prefect; vaultflow.repository places the lock directory.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from vaultflow.errors import LockHeldError, LockLostError, NotFoundError
from vaultflow.stores.base import Store, get_bytes, put_bytes
from vaultflow.summary import human_duration

ONE_AT_A_TIME = frozenset({"backup"})  # purposes of which a target has at most one holder
_LEAF = re.compile(r"(?P<purpose>[a-z][a-z0-9_-]*?)(?:-(?P<holder>[0-9a-f]{32}))?\.json")


@dataclass(frozen=True)
class LockSettings:
    """How long to wait for a lock and how a held lock stays alive.

    wait:          longest time to wait for a conflicting lock to go away before LockHeldError
                   (0: one attempt, no waiting); a repository setting (BackupRepository.lock_wait).
    stale_after:   a lock whose time is older than this is stale (its holder stopped refreshing).
    refresh_every: how often a held lock rewrites its time; None never refreshes (tests).
    retry_start, retry_max: the first pause between attempts, doubled up to retry_max.
    settle:        pause between writing a lock and listing again (restic waits 200 ms too).
    """

    wait: timedelta = timedelta(minutes=10)
    stale_after: timedelta = timedelta(minutes=30)
    refresh_every: timedelta | None = timedelta(minutes=5)
    retry_start: timedelta = timedelta(seconds=2)
    retry_max: timedelta = timedelta(seconds=60)
    settle: timedelta = timedelta(milliseconds=200)


@dataclass(frozen=True)
class LockRecord:
    """One lock object as read from the store. `time` is None when the object could not be read
    (then `modified`, the store's timestamp, stands in for it and it counts as exclusive)."""

    key: str
    purpose: str
    exclusive: bool
    host: str | None = None
    pid: int | None = None
    holder: str | None = None
    time: datetime | None = None
    modified: datetime | None = None

    @property
    def kind(self) -> str:
        return "exclusive" if self.exclusive else "shared"

    @property
    def since(self) -> datetime | None:
        return self.time or self.modified

    def describe(self) -> str:
        """'host h pid 12 (a prune, exclusive lock) since 2026-11-26 02:00:00 UTC'."""
        when = f"{self.since:%Y-%m-%d %H:%M:%S} UTC" if self.since else "an unknown time"
        if self.time is None:
            return f"an unreadable lock object (counted as exclusive) written {when}"
        return f"host {self.host} pid {self.pid} (a {self.purpose}, {self.kind} lock) since {when}"

    def document(self) -> dict[str, Any]:
        """The JSON object stored at `key`."""
        return {
            "purpose": self.purpose,
            "exclusive": self.exclusive,
            "host": self.host,
            "pid": self.pid,
            "holder": self.holder,
            "time": self.time.isoformat() if self.time else None,
        }


def holder_alive(record: Mapping[str, Any]) -> bool:
    """False when `record` (a lock or scratch record with `host` and `pid`) was written on this
    host by a process that is gone (a killed run); True otherwise, as a record from another
    host cannot be checked here (its TTL decides)."""
    if record.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(record.get("pid", 0)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError, OverflowError):
        return True
    return True


def conflicts(purpose: str, exclusive: bool, other: LockRecord) -> bool:
    """True when a `purpose` lock (exclusive or shared) may not be held beside `other`."""
    return exclusive or other.exclusive or (purpose == other.purpose and purpose in ONE_AT_A_TIME)


def read_locks(store: Store, directory: str) -> list[LockRecord]:
    """Every lock object under `directory` (keys ending in .json), in listing order. Objects that
    vanish while being read are left out; unreadable ones come with time=None, exclusive."""
    records = []
    for info in store.list(directory):
        leaf = info.key.rsplit("/", 1)[-1]
        named = _LEAF.fullmatch(leaf)
        if not leaf.endswith(".json"):
            continue
        try:
            doc = json.loads(get_bytes(store, info.key))
            moment = datetime.fromisoformat(doc["time"])
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            purpose = str(doc.get("purpose") or (named and named["purpose"]) or "unknown")
            # Locks written before shared/exclusive existed were backup locks: shared.
            records.append(
                LockRecord(
                    info.key,
                    purpose,
                    bool(doc.get("exclusive", False)),
                    doc.get("host"),
                    doc.get("pid"),
                    doc.get("holder"),
                    moment,
                    info.modified,
                )
            )
        except NotFoundError:
            continue  # released meanwhile
        except (ValueError, KeyError, TypeError, AttributeError):
            records.append(LockRecord(info.key, named["purpose"] if named else "unknown", True, modified=info.modified))
    return records


def is_stale(record: LockRecord, now: datetime, stale_after: timedelta) -> bool:
    """A lock not refreshed for `stale_after` (by its own time; an unreadable one by the store's
    timestamp), or written on this host by a process that is gone."""
    since = record.since
    if since is None or now - since >= stale_after:
        return True
    return record.time is not None and not holder_alive(record.document())


class HeldLock:
    """A lock this process holds: refreshed by a background thread until release().

    `key` is its store key. `lost` is None while the lock holds, else why it was lost.
    """

    def __init__(self, store: Store, record: LockRecord, settings: LockSettings, log: Callable[[str], Any] = print):
        self.store, self.record, self.settings, self.log = store, record, settings, log
        self.key = record.key
        self.lost: str | None = None
        self._last_refresh = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if settings.refresh_every is not None:
            self._thread = threading.Thread(target=self._refresh_loop, name=f"lock-refresh {self.key}", daemon=True)
            self._thread.start()

    def refresh(self, now: datetime | None = None) -> None:
        """Rewrite the lock's time. When the object is gone (another run judged it stale and
        removed it), the lock is lost and not written again: that run may be deleting now."""
        if self.lost:
            return
        if self.store.stat(self.key) is None:
            self._lose(f"the lock {self.key} was removed by another run (it judged it stale)")
            return
        self.record = replace(self.record, time=now or datetime.now(UTC))
        put_bytes(self.store, self.key, json.dumps(self.record.document()).encode())
        self._last_refresh = time.monotonic()

    def _refresh_loop(self) -> None:
        assert self.settings.refresh_every is not None
        interval = self.settings.refresh_every.total_seconds()
        while not self._stop.wait(interval):
            try:
                self.refresh()
            except Exception as exc:  # noqa: BLE001 - a store hiccup; the next tick tries again
                overdue = time.monotonic() - self._last_refresh
                if overdue >= self.settings.stale_after.total_seconds():
                    self._lose(f"the lock {self.key} could not be refreshed for {overdue:.0f} s ({exc})")
                else:
                    self.log(f"could not refresh the lock {self.key} ({exc}); trying again in {interval:.0f} s")
            if self.lost:
                return

    def _lose(self, why: str) -> None:
        self.lost = why
        self.log(f"{why}: other runs may now treat it as stale; this run should stop (LockLostError)")

    def check(self) -> None:
        """Raise LockLostError when the lock was lost (call it before deleting anything)."""
        if self.lost:
            raise LockLostError(f"{self.lost}; retry the run to take a fresh lock")

    def stop_refreshing(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def release(self) -> None:
        """Stop refreshing and delete the lock object, if it is still this holder's."""
        self.stop_refreshing()
        release_key(self.store, self.key)


def release_key(store: Store, key: str) -> None:
    """Delete the lock object `key` if it still holds the holder id its name carries; a lock
    that is gone (removed as stale by another run) or holds anything else is left alone."""
    try:
        doc = json.loads(get_bytes(store, key))
    except NotFoundError:
        return
    except ValueError:
        return
    if isinstance(doc, dict) and doc.get("holder") and key.endswith(f"-{doc['holder']}.json"):
        store.delete(key)


@dataclass
class LockRequest:
    """What acquire() is asked for: a `purpose` lock under `directory`, exclusive or shared.
    `subject` names the locked thing in messages ('postgres/prod'), `where` the store."""

    store: Store
    directory: str
    purpose: str
    exclusive: bool
    subject: str
    where: str
    settings: LockSettings = field(default_factory=LockSettings)
    log: Callable[[str], Any] = print

    def _live(self, now: datetime, exclude: str | None = None) -> list[LockRecord]:
        """Locks other than `exclude` that still hold; stale ones are removed on the way."""
        live = []
        for record in read_locks(self.store, self.directory):
            if record.key == exclude:
                continue
            if is_stale(record, now, self.settings.stale_after):
                self.store.delete(record.key)  # its run was killed or stopped refreshing
            else:
                live.append(record)
        return live

    def _blocking(self, now: datetime, exclude: str | None = None) -> LockRecord | None:
        return next((r for r in self._live(now, exclude) if conflicts(self.purpose, self.exclusive, r)), None)

    def attempt(self, now: datetime | None = None) -> HeldLock | LockRecord:
        """One try: the HeldLock, or the record of a lock that conflicts (ours withdrawn)."""
        now = now or datetime.now(UTC)
        blocking = self._blocking(now)
        if blocking is not None:
            return blocking
        holder = uuid.uuid4().hex
        record = LockRecord(
            f"{self.directory}{self.purpose}-{holder}.json",
            self.purpose,
            self.exclusive,
            socket.gethostname(),
            os.getpid(),
            holder,
            now,
        )
        put_bytes(self.store, record.key, json.dumps(record.document()).encode())
        try:
            time.sleep(self.settings.settle.total_seconds())
            blocking = self._blocking(now, exclude=record.key)  # write, then re-check
        except BaseException:
            try:  # not left behind to block others until it is stale
                release_key(self.store, record.key)
            except Exception:  # noqa: BLE001 - the listing's own error is the one to see
                pass
            raise
        if blocking is not None:
            release_key(self.store, record.key)
            return blocking
        return HeldLock(self.store, record, self.settings, self.log)

    def error(self, blocking: LockRecord, waited: float) -> LockHeldError:
        until = f"{blocking.since + self.settings.stale_after:%Y-%m-%d %H:%M} UTC" if blocking.since else "later"
        return LockHeldError(
            f"{self.subject} is locked by {blocking.describe()}, so this "
            f"{self.purpose} ({'exclusive' if self.exclusive else 'shared'}) cannot start; waited {human_duration(waited)} "
            f"(the repository's lock_wait). This is transient: run it again later (a deployment's flow retries "
            f"do). If that run died, its lock goes stale at "
            f"{until}, or delete {blocking.key} from {self.where}",
            blocking,
        )


def acquire(request: LockRequest) -> HeldLock:
    """Take the lock `request` describes, waiting up to request.settings.wait for conflicting
    locks to go away (pauses doubling from retry_start to retry_max, with jitter, and one last
    attempt at the deadline). Returns the HeldLock (refreshed until released). Raises
    LockHeldError (transient) naming the holder of a conflicting lock past the wait, and store
    errors (StoreUnavailableError, ...) as they come."""
    settings = request.settings
    started = time.monotonic()
    deadline = started + settings.wait.total_seconds()
    pause = settings.retry_start.total_seconds()
    announced = False
    while True:
        result = request.attempt()
        if isinstance(result, HeldLock):
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise request.error(result, time.monotonic() - started)
        if not announced:
            request.log(
                f"{request.subject} is locked by {result.describe()}; waiting up to "
                f"{human_duration(settings.wait.total_seconds())} for it"
            )
            announced = True
        time.sleep(min(pause * random.uniform(1.0, 1.5), remaining))
        pause = min(pause * 2, settings.retry_max.total_seconds())
