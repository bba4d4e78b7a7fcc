"""Shared fixtures: real servers (PostgreSQL, SeaweedFS S3) and one Prefect test harness."""

import os

# Flow heartbeats cost about a second per run and mean nothing in tests.
os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "")

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.s3",
]
