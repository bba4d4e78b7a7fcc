"""Shared fixtures: real servers (PostgreSQL, Redis, SecantusDB, SeaweedFS S3) and one Prefect test harness."""

import os

# Retries and their
# delays are shortened so transient-failure paths finish quickly (permanent ones never retry).
os.environ.pop("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", None)
os.environ.setdefault("VAULTFLOW_FLOW_RETRY_DELAY_S", "1")
os.environ.setdefault("VAULTFLOW_RETRY_BACKOFF_S", "0.2")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import pytest  # noqa: E402

pytest_plugins = [
    "tests.fixtures.mongo",
    "tests.fixtures.postgres",
    "tests.fixtures.redis",
    "tests.fixtures.s3",
    "tests.fixtures.wal",
]


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect test harness (a temporary API + database) for the whole session."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # Heartbeats off (None; the setting cannot be unset through the environment).
    with (
        temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}),
        prefect_test_harness(server_startup_timeout=120),
    ):
        yield
