"""Shared fixtures: real servers (PostgreSQL, Redis, SecantusDB, SeaweedFS S3) and one Prefect test harness."""

import os

# Retries and their
# delays are shortened so transient-failure paths finish quickly (permanent ones never retry).
os.environ.pop("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", None)
os.environ.setdefault("VAULTFLOW_FLOW_RETRY_DELAY_S", "1")
os.environ.setdefault("VAULTFLOW_RETRY_BACKOFF_S", "0.2")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Run logs stay local (caplog reads them) unless a test is marked logs_to_api: sending every run's
# logs to the session's API cost its server CPU on a CPU-bound 2-core run.
os.environ.setdefault("PREFECT_LOGGING_TO_API_ENABLED", "false")

import contextlib  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

SCRATCH_TMPFS = Path("/dev/shm")
SCRATCH_MIN_FREE = 8 << 30  # bytes the tmpfs must have free; the suite's scratch peaks well below


def tmpfs_scratch_root(tmpfs: Path = SCRATCH_TMPFS, min_free: int = SCRATCH_MIN_FREE) -> Path | None:
    """`<tmpfs>/vaultflow-tests` (mode 1777, like /tmp: the servers' service user makes its own
    directories in it), or None when `tmpfs` is not a tmpfs mount (or is mounted noexec), when
    it or the machine's available memory (tmpfs lives in RAM) has less than `min_free` bytes, or
    when that directory exists and is not a directory of ours.

    Why: on our ext4 machines a file created soon after many were deleted costs a scan of the
    inode table (ext4's find_inode_bit/recently_deleted: 29% of the busy CPU samples in a PostgreSQL
    test module); the suite creates and deletes hundreds of thousands of files (initdb, CREATE
    DATABASE, base backups, repositories). On tmpfs that module took 17.3 instead of 33.6
    CPU-seconds (system time 4.9 instead of 19.1). Nothing else changes: the same code writes
    the same files."""
    try:
        options = tmpfs_mount_options(tmpfs)
        if options is None or "noexec" in options:
            return None
        stats = os.statvfs(tmpfs)
        available = int(re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)[1]) << 10
        if min(stats.f_bavail * stats.f_frsize, available) < min_free:
            return None
    except (OSError, TypeError):
        return None  # no /proc: the default TMPDIR
    root = tmpfs / "vaultflow-tests"
    return root if claim_scratch_dir(root) else None


def tmpfs_mount_options(path: Path) -> list[str] | None:
    """The mount options of the tmpfs mounted at `path` (the last mount there, the one in use),
    from /proc/self/mounts; None when no tmpfs is mounted there. OSError without /proc."""
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    options = [fields[3].split(",") for fields in mounts if fields[1:3] == [str(path), "tmpfs"]]
    return options[-1] if options else None


def claim_scratch_dir(root: Path) -> bool:
    """Make `root` (if missing) and set it to mode 1777; False, changing nothing, when it is a
    symlink, not a directory, or another user's. The directory is opened without following a
    link, so the mode changes on what was checked, not on whatever the name points to by then."""
    try:
        with contextlib.suppress(FileExistsError):
            root.mkdir()
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_uid != os.geteuid():
            return False
        os.fchmod(fd, 0o1777)
        return True
    finally:
        os.close(fd)


# The run's scratch (TMPDIR: pytest's tmp_path, the servers' data, repositories, spools) goes to
# tmpfs unless the caller chose a TMPDIR. Set before pytest makes its basetemp; xdist's workers
# and every process a test starts inherit it.
if "TMPDIR" not in os.environ and (_scratch := tmpfs_scratch_root()) is not None:
    os.environ["TMPDIR"] = str(_scratch)
    os.environ["VAULTFLOW_TEST_SCRATCH"] = str(_scratch)  # chosen here, not by the caller
    tempfile.tempdir = None  # gettempdir() looks again

import pytest  # noqa: E402

pytest_plugins = [
    "tests.fixtures.api_faults",
    "tests.fixtures.clickhouse",
    "tests.fixtures.mongo",
    "tests.fixtures.postgres",
    "tests.fixtures.redis",
    "tests.fixtures.s3",
    "tests.fixtures.wal",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest first: modules with a test marked `long` (minutes each) go to the front, in
    collection order, so `--dist loadfile` starts them at once and the rest runs beside them
    instead of after them. The other modules follow by number of tests, most first (what
    pytest-xdist itself does for loadfile unless `--no-loadscope-reorder`, which pyproject's
    addopts sets so that this order is kept: xdist hands out modules in collection order, the
    same on every worker since it depends only on the items).

    Sorts `items` in place, stably: tests keep their order inside a module. A run without xdist
    gets the same order."""
    sizes: dict[str, int] = {}
    long: set[str] = set()
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        sizes[module] = sizes.get(module, 0) + 1
        if item.get_closest_marker("long") is not None:
            long.add(module)
    first, rest = [m for m in sizes if m in long], sorted((m for m in sizes if m not in long), key=lambda m: -sizes[m])
    rank = {module: n for n, module in enumerate(first + rest)}
    items.sort(key=lambda item: rank[item.nodeid.split("::", 1)[0]])


EVENTS_DRAIN_S = 120.0  # seconds the harness's exit waits for queued events


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory):
    """One Prefect test harness (a temporary API + database) for the whole session, its database
    a copy of the run's migrated one (tests/fixtures/prefect_db.py). Tests use `prefect_api`,
    which also cleans up after each; module fixtures that need the API use this one."""
    import tempfile
    import warnings

    import prefect.testing.utilities as harness
    from prefect.events.worker import EventsWorker
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )

    from tests.fixtures.prefect_db import copy_template
    from tests.fixtures.prefect_runs import one_ca_context_per_process

    def premigrated_dir() -> str:
        # prefect_test_harness puts its database at <mkdtemp()>/prefect-test.db
        directory = tempfile.mkdtemp()
        copy_template(tmp_path_factory, Path(directory) / "prefect-test.db")
        return directory

    # Heartbeats off (None; the setting cannot be unset through the environment).
    with (
        pytest.MonkeyPatch.context() as patch,
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
    ):
        patch.setattr(harness, "mkdtemp", premigrated_dir)
        one_ca_context_per_process(patch)
        # The harness drains the events worker at exit with no time limit: on a machine so loaded
        # that the events socket keeps failing, a worker's teardown waited past pytest's timeout.
        # Events still queued after EVENTS_DRAIN_S are dropped with the temporary server.
        drain_all = EventsWorker.drain_all
        patch.setattr(
            EventsWorker,
            "drain_all",
            lambda timeout=None, at_exit=True: drain_all(
                timeout=EVENTS_DRAIN_S if timeout is None else timeout, at_exit=at_exit
            ),
        )
        with harness.prefect_test_harness(server_startup_timeout=120):
            if not str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value()).endswith("/prefect-test.db"):
                warnings.warn(
                    "prefect_test_harness no longer uses <mkdtemp>/prefect-test.db: it migrates a fresh database",
                    stacklevel=1,
                )
            yield


@pytest.fixture
def prefect_api(prefect_server):
    """The session's Prefect API, left as this test found it: the named blocks and automations
    the test saved are deleted afterwards, so no test sees another's (an invalid block saved on
    purpose once broke every later `automations apply` on the same worker)."""
    from prefect import get_client

    def every(read) -> set:  # noqa: ANN001 - a client's paged read
        found: list = []
        while True:
            page = read(offset=len(found), limit=200)
            found += page
            if len(page) < 200:
                break
        return {item.id for item in found if not getattr(item, "is_anonymous", False)}

    def saved() -> tuple[set, set]:
        with get_client(sync_client=True) as client:
            blocks = every(lambda **page: client.read_block_documents(include_secrets=False, **page))
            return blocks, every(client.read_automations)

    blocks, automations = saved()
    yield
    new_blocks, new_automations = (now - before for now, before in zip(saved(), (blocks, automations), strict=True))
    with get_client(sync_client=True) as client:
        for block_id in new_blocks:
            client.delete_block_document(block_id)
        for automation_id in new_automations:
            client.delete_automation(automation_id)


@pytest.fixture(autouse=True)
def _events_follow_the_api():
    """After each test, stop an events worker bound to another Prefect API than the one
    configured now. Prefect keeps one events worker per process whatever the API URL: a test
    that pointed this process at its own server (an e2e stack, an ephemeral API) left the worker
    sending every later event of the session to that server, stopped by then. On one xdist
    worker 1,285 events queued up, each failing in 1.5 s, and task runs never reached the
    session's API. The stopped worker finishes its few queued events in the background; the
    next event starts a worker bound to the API configured then."""
    yield
    if "prefect.events.worker" not in sys.modules:
        return
    from prefect.events.clients import PrefectEventsClient
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL

    now = PREFECT_API_URL.value()
    for worker in list(EventsWorker._instances.values()):
        client = getattr(worker, "_client", None)
        if isinstance(client, PrefectEventsClient) and client._api_url != now:
            worker._drain()  # removes it from the instances at once; its queue drains meanwhile


@pytest.fixture(autouse=True)
def _logs_to_api(request, monkeypatch):
    """Tests marked logs_to_api send run logs to the Prefect API (in this process and in the
    processes they start), as production does; the rest keep them local."""
    if request.node.get_closest_marker("logs_to_api") is None:
        yield
        return
    from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    monkeypatch.setenv("PREFECT_LOGGING_TO_API_ENABLED", "true")
    with temporary_settings(updates={PREFECT_LOGGING_TO_API_ENABLED: True}):
        yield
