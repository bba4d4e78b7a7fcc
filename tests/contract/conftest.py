"""Fixtures of the engine contract suite: one contract per kind of target (tests/contract/engines/),
its servers, and a scenario every contract test reads (see test_engine_contract.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.contract.harness import EngineContract, all_contracts
from vaultflow.proc import short_temp_root
from vaultflow.testing.postgres_server import PostgresInstance, embedded_bin_dir, running_postgres

CONTRACTS = all_contracts()


@pytest.fixture(scope="session")
def pg18_summarizing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresInstance]:
    """A PostgreSQL 18 of the contract suite's own, with WAL summaries (native incrementals): a
    physical backup copies the whole cluster, so it holds nothing but the contract's database."""
    with running_postgres(
        embedded_bin_dir(), tmp_path_factory.mktemp("pgcontract"), settings={"summarize_wal": "on"}, name="pgcontract"
    ) as pg:
        yield pg


@pytest.fixture(scope="module", params=CONTRACTS, ids=[c.id for c in CONTRACTS])
def contract(request: pytest.FixtureRequest) -> Iterator[EngineContract]:
    """One kind of target, with its servers, for a module of tests (then closed)."""
    contract_class: type[EngineContract] = request.param
    servers = {name: request.getfixturevalue(name) for name in contract_class.servers}
    # under the short temporary root, traversable: restored PostgreSQL clusters run as the test service user
    work = Path(tempfile.mkdtemp(prefix=f"vfcontract-{contract_class.id}-", dir=short_temp_root()))
    os.chmod(work, 0o711)
    instance = contract_class(servers, work)
    try:
        yield instance
    finally:
        try:
            instance.close()
        finally:
            shutil.rmtree(work, ignore_errors=True)
