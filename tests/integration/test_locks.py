"""Repository locks between real processes, on a local directory and on SeaweedFS S3.

Another run is a child process (tests/integration/lock_holder.py) that holds a lock the way a
backup, verify or prune does; the flows under test run here, through Prefect's test harness.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect_aws import AwsClientParameters, AwsCredentials
from prefect_aws.s3 import S3Bucket

from vaultflow.blocks import BackupRepository, PostgresTarget
from vaultflow.errors import LockHeldError
from vaultflow.locks import LockSettings
from vaultflow.manifest import BackupKind, new_backup_id
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore
from vaultflow.stores.spec import describe

PROJECT = Path(__file__).resolve().parents[2]
GUARD_S = 120


class Holder:
    """A child process holding a lock (see lock_holder.py for the job's fields)."""

    def __init__(self, store, **job: Any):
        job = {"engine": "postgres", "target": "t", "purpose": "backup", **job, "store": describe(store)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.lock_holder"],
            cwd=PROJECT,
            env={**os.environ, "PYTHONPATH": str(PROJECT)},
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, word: str, timeout: float = GUARD_S) -> str:
        """The rest of the next line that starts with `word` (log lines skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the holder never printed {word!r}; it printed {self.seen}") from None
            self.seen.append(line)
            if line.split(" ", 1)[0] == word:
                return line.split(" ", 1)[1] if " " in line else ""

    def printed(self, word: str) -> bool:
        """Whether a line starting with `word` came already (without waiting)."""
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return any(line.split(" ", 1)[0] == word for line in self.seen)

    def release(self) -> None:
        self.proc.stdin.write("release\n")
        self.proc.stdin.flush()
        self.expect("released")
        assert self.proc.wait(timeout=GUARD_S) == 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=GUARD_S)


@pytest.fixture
def holders():
    started: list[Holder] = []

    def start(store, **job: Any) -> Holder:
        started.append(Holder(store, **job))
        return started[-1]

    yield start
    for holder in started:
        holder.stop()


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path: Path):
    if request.param == "local":
        return LocalStore(tmp_path / "repo")
    s3_server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
    return s3_server.store(bucket, prefix="repo")  # its connection spec carries the keys (the holders need them)


def lock_keys(store) -> list[str]:
    return sorted(info.key for info in store.list("postgres/t/locks/"))


def here(store, **settings: Any) -> Repository:
    """This process's repository over the same store, without waiting by default."""
    return Repository(
        store,
        lock_settings=LockSettings(
            **{"wait": timedelta(0), "refresh_every": None, "retry_start": timedelta(seconds=0.2), **settings}
        ),
    )


# -- the protocol between processes ----------------------------------------------------------------


def test_shared_holders_coexist_and_an_exclusive_one_waits_then_fails_retryably(store, holders) -> None:
    backup = holders(store, purpose="backup")
    verify = holders(store, purpose="verify")
    backup_key, verify_key = backup.expect("locked"), verify.expect("locked")
    keys = sorted([backup_key, verify_key])
    assert lock_keys(store) == keys
    started = time.monotonic()
    with pytest.raises(
        LockHeldError,
        match=rf"locked by host \S+ pid ({backup.proc.pid}|{verify.proc.pid}) "
        r"\(a (backup|verify), shared lock\) since .*waited [\d.]+ s",
    ) as info:
        here(store, wait=timedelta(seconds=2)).acquire_lock("postgres", "t", "prune", exclusive=True)
    assert time.monotonic() - started >= 2 and info.value.holder.key in keys
    assert lock_keys(store) == keys  # the prune withdrew its own object
    backup.release()  # release removes only the holder's own object
    assert lock_keys(store) == [verify_key]
    verify.release()
    assert lock_keys(store) == []


def test_a_prune_waiting_for_a_backup_gets_the_lock_when_it_ends(store, holders) -> None:
    backup = holders(store, purpose="backup")
    backup.expect("locked")
    ending = threading.Timer(1.5, backup.release)
    ending.start()
    started = time.monotonic()
    lock = here(store, wait=timedelta(seconds=60)).acquire_lock("postgres", "t", "prune", exclusive=True)
    assert time.monotonic() - started >= 1.5 and lock_keys(store) == [lock.key]
    ending.join(GUARD_S)
    assert backup.proc.returncode == 0
    lock.release()


def test_two_runs_racing_for_exclusive_locks_never_both_hold(store, holders) -> None:
    racers = [holders(store, purpose="prune", exclusive=True, wait_s=3 * GUARD_S) for _ in range(3)]
    waiting = list(racers)
    while waiting:
        deadline = time.monotonic() + GUARD_S
        while not [r for r in waiting if r.printed("locked")]:
            assert time.monotonic() < deadline and not [r for r in waiting if r.printed("held-error")], "\n".join(
                map(str, [r.seen for r in racers])
            )
            time.sleep(0.05)
        holding = [r for r in waiting if r.printed("locked")]
        assert len(holding) == 1, "two runs hold the exclusive lock at once"
        time.sleep(1.5)  # the others keep trying meanwhile, and must keep failing
        assert [r for r in waiting if r.printed("locked")] == holding
        holding[0].release()
        waiting.remove(holding[0])
    assert lock_keys(store) == []


def test_a_killed_holders_lock_is_stale_at_once_on_its_host(store, holders) -> None:
    backup = holders(store, purpose="backup")
    key = backup.expect("locked")
    backup.proc.send_signal(signal.SIGKILL)
    backup.proc.wait(timeout=GUARD_S)
    assert lock_keys(store) == [key]  # left behind by the killed run
    lock = here(store).acquire_lock("postgres", "t", "prune", exclusive=True)
    assert lock_keys(store) == [lock.key]
    lock.release()


def test_refresh_keeps_a_long_holder_alive_past_the_ttl(store, holders) -> None:
    refreshed = holders(store, purpose="backup", refresh_s=0.5)
    refreshed.expect("locked")
    time.sleep(4.5)  # past the 3 s TTL the prune below judges by
    with pytest.raises(LockHeldError, match=f"pid {refreshed.proc.pid}"):
        here(store, stale_after=timedelta(seconds=3)).acquire_lock("postgres", "t", "prune", exclusive=True)
    refreshed.release()

    # A holder that stopped refreshing: stale once its last write is older than the TTL (here 1 s;
    # it wrote before it printed "locked", so 1.5 s later it is past it however slow the machine).
    silent = holders(store, purpose="backup", refresh_s=None)
    key = silent.expect("locked")
    time.sleep(1.5)
    lock = here(store, stale_after=timedelta(seconds=1)).acquire_lock("postgres", "t", "prune", exclusive=True)
    assert key not in lock_keys(store)  # removed as stale
    silent.release()  # finds its object gone and deletes nothing else
    assert lock_keys(store) == [lock.key]
    lock.release()


# -- the flows ---------------------------------------------------------------------------------------


def s3_block(s3, bucket: str) -> S3Bucket:
    creds = AwsCredentials(
        aws_access_key_id=s3.access_key,
        aws_secret_access_key=s3.secret_key,
        region_name=s3.region,
        aws_client_parameters=AwsClientParameters(endpoint_url=s3.endpoint_url),
    )
    return S3Bucket(bucket_name=bucket, credentials=creds, bucket_folder="vf")


@pytest.fixture(params=["local", "s3"])
def repository_settings(request, tmp_path: Path) -> dict:
    """BackupRepository fields: keep only the newest backup, orphans at once."""
    fields = dict(keep_last=1, keep_daily=None, keep_weekly=None, keep_monthly=None, orphan_grace="0s")
    if request.param == "local":
        return {**fields, "local_path": str(tmp_path / "repo")}
    s3_server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
    return {**fields, "s3_bucket": s3_block(s3_server, bucket)}


def two_backups(pg18, fresh_db, repository: BackupRepository, name: str) -> tuple[PostgresTarget, list[str]]:
    from vaultflow.flows.full_backup import full_backup

    db = fresh_db(pg18)
    pg18.execute("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", dbname=db)
    target = PostgresTarget(
        host=pg18.host,
        port=pg18.port,
        user=pg18.user,
        databases=[db],
        target_name=name,
        bin_dir=str(pg18.client_bin_dir),
    )
    return target, [full_backup(target=target, repository=repository)["backup_id"] for _ in range(2)]


@pytest.mark.usefixtures("prefect_api")
def test_a_prune_during_a_long_backup_deletes_nothing(pg18, fresh_db, repository_settings, holders) -> None:
    from vaultflow.flows.prune import prune

    repository = BackupRepository(**repository_settings, lock_wait="1s")
    _, ids = two_backups(pg18, fresh_db, repository, "t")
    repo = repository.build()
    running = new_backup_id(BackupKind.FULL)
    backup = holders(repo.store, purpose="backup", payload=running)  # a backup still writing its payload
    backup.expect("locked")
    payload = backup.expect("payload")
    before = sorted(info.key for info in repo.store.list("postgres/t/backups/"))
    assert any(key.startswith(payload) for key in before)

    with pytest.raises(
        LockHeldError, match=rf"pid {backup.proc.pid} \(a backup, shared lock\).*transient: run it again later"
    ):
        prune(repository=repository)
    assert sorted(info.key for info in repo.store.list("postgres/t/backups/")) == before  # nothing deleted
    assert [m.id for m in repo.catalog("postgres", "t").manifests] == ids

    backup.release()  # the backup ended without committing: its payload is an orphan now
    result = prune(repository=repository)
    assert result["deleted"] == [ids[0]] and result["orphan_objects"] == 2
    assert [m.id for m in repo.catalog("postgres", "t").manifests] == [ids[1]]
    assert not list(repo.store.list(payload)) and lock_keys(repo.store) == []


class SlowReads:
    """A store whose reads take `delay` seconds to start (a large backup on a slow link)."""

    def __init__(self, store, delay: float):
        self._store, self._delay = store, delay

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    def open(self, key: str):
        time.sleep(self._delay)
        return self._store.open(key)


class SlowBackupRepository(BackupRepository):
    _block_type_slug = "slow-backup-repository"

    def build(self) -> Repository:
        repo = super().build()
        repo.store = SlowReads(repo.store, 1.5)
        return repo


@pytest.mark.usefixtures("prefect_api")
def test_a_verify_during_a_prune_reports_no_false_corruption(pg18, fresh_db, repository_settings, holders) -> None:
    """The verify reads the catalog, then each object, slowly; a prune started meanwhile waits
    for the verify's shared lock instead of deleting a backup the verify is reading."""
    from vaultflow.flows.verify import verify

    repository = BackupRepository(**repository_settings)
    _, ids = two_backups(pg18, fresh_db, repository, "t")
    repo = repository.build()
    results: list = []
    verifying = threading.Thread(
        target=lambda: results.append(verify(repository=SlowBackupRepository(**repository_settings), return_state=True))
    )
    verifying.start()
    deadline = time.monotonic() + GUARD_S
    while not [k for k in lock_keys(repo.store) if "/verify-" in k]:
        assert time.monotonic() < deadline and verifying.is_alive(), "the verify never took its lock"
        time.sleep(0.05)
    pruning = holders(repo.store, purpose="prune", exclusive=True, delete=[ids[0]], wait_s=120, hold=False)
    verifying.join(GUARD_S)
    result = results[0].result(raise_on_failure=False)
    assert not isinstance(result, BaseException), f"false corruption reported: {result}"
    assert result["problems"] == [] and result["backups"] == 2
    pruning.expect("locked")  # only once the verify released its lock
    pruning.expect("deleted")
    pruning.expect("released")
    assert [m.id for m in repo.catalog("postgres", "t").manifests] == [ids[1]]


@pytest.mark.usefixtures("prefect_api")
def test_a_verify_started_during_a_prune_waits_for_it(pg18, fresh_db, repository_settings, holders) -> None:
    from vaultflow.flows.verify import verify

    repository = BackupRepository(**repository_settings, lock_wait="2min")
    _, ids = two_backups(pg18, fresh_db, repository, "t")
    repo = repository.build()
    # A slow prune: the first backup's manifest goes, then its objects one by one.
    pruning = holders(repo.store, purpose="prune", exclusive=True, delete=[ids[0]], pause_s=1.0, hold=False)
    pruning.expect("locked")
    result = verify(repository=repository)  # waits for the prune, then checks what is left
    assert pruning.proc.wait(timeout=GUARD_S) == 0 and pruning.printed("deleted") and pruning.printed("released")
    assert result["problems"] == [] and result["backups"] == 1
    assert [m.id for m in repo.catalog("postgres", "t").manifests] == [ids[1]]


@pytest.mark.usefixtures("prefect_api")
def test_the_prefect_limit_admits_one_writer_per_target_in_deployment_runs() -> None:
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    from vaultflow.flows._locks import deployment_slot, limit_name

    name = limit_name("postgres", "Slot Test")
    assert name.startswith("vaultflow-postgres-slot-test-")
    with get_client(sync_client=True) as client:  # CLI and test runs (no deployment) never create it
        with deployment_slot("postgres", "Slot Test", 1):
            pass
        with pytest.raises(ObjectNotFound):
            client.read_global_concurrency_limit_by_name(name)
    entered, leave = threading.Event(), threading.Event()

    def first_run() -> None:
        with deployment_slot("postgres", "Slot Test", 30, enabled=True):
            entered.set()
            leave.wait(60)

    thread = threading.Thread(target=first_run)
    thread.start()
    try:
        assert entered.wait(60)
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name(name)
        assert limit.limit == 1 and limit.active
        with pytest.raises(LockHeldError, match=f"holds the Prefect concurrency limit {name}"):
            with deployment_slot("postgres", "Slot Test", 1, enabled=True):
                pass
    finally:
        leave.set()
        thread.join(60)
    with deployment_slot("postgres", "Slot Test", 30, enabled=True):
        pass  # free again
