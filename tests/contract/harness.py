"""The contract fixture interface: how the engine contract suite drives one kind of target.

Each kind of target the suite runs on is one EngineContract subclass in a module of
tests/contract/engines/ (listed in that module's CONTRACTS). The suite knows nothing else about
an engine: it asks the contract for a live target block, has it write and change a little data,
and judges every restore with the contract's oracle (code independent of vaultflow's own
fingerprints: tests/corpus/oracle.py for PostgreSQL and Redis).
"""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from vaultflow.blocks.registry import TargetBlock


class EngineContract(ABC):
    """One kind of target, as the contract suite drives it.

    Class attributes:
        id:          the test id, e.g. 'postgres-physical' (one engine may have several kinds).
        engine:      the engine's registry name (vaultflow.engines.registry).
        servers:     names of the pytest fixtures (session-scoped servers) it needs; the suite
                     passes their values to __init__ by name.
        incremental: whether these targets have an incremental form. True: incremental-backup
                     takes a real incremental on the latest backup. False: it takes a full and
                     says why (the run's `fell_back_to_full` matches `no_incremental`), and
                     Engine.incremental_backup raises ChainBrokenError.
        no_incremental: a regular expression the fallback's reason matches (incremental False).

    An instance lives for one module of tests (the suite's scenario): __init__ prepares the
    source (a database, a server, a file) under `work`, a private directory the test service
    user can traverse; close() removes what it made."""

    id: ClassVar[str]
    engine: ClassVar[str]
    servers: ClassVar[tuple[str, ...]] = ()
    incremental: ClassVar[bool] = False
    no_incremental: ClassVar[str] = "no incremental form"

    def __init__(self, servers: Mapping[str, Any], work: Path):
        self.servers, self.work = servers, work

    @abstractmethod
    def target(self) -> TargetBlock:
        """A target block (unsaved) for the live source; its name is unique to this contract."""

    @abstractmethod
    def write(self) -> None:
        """Fill the source with a little data (a few hundred rows or keys at most)."""

    @abstractmethod
    def change(self) -> None:
        """Change the data: update, insert and delete some of it."""

    @abstractmethod
    def read_source(self) -> Any:
        """The oracle's reading of the source now (compared with `differences`)."""

    def restore_parameters(self, label: str) -> dict[str, Any]:
        """Parameters of the restore flow that say where a restore goes (e.g. into=...), unique
        per `label`; {} for the engine's default place."""
        return {}

    @abstractmethod
    def read_restored(self, restored: Mapping[str, str]) -> Any:
        """The oracle's reading of what a restore flow run produced (its result's `restored`),
        then remove that copy."""

    @abstractmethod
    def differences(self, expected: Any, actual: Any) -> list[str]:
        """Every difference between two oracle readings, as sentences; [] when equal."""

    def close(self) -> None:  # noqa: B027 - optional: a contract may have nothing to remove
        """Remove what __init__ made (databases, servers, registrations)."""


def all_contracts() -> list[type[EngineContract]]:
    """Every contract: the CONTRACTS of each module of tests/contract/engines/, in module order."""
    from tests.contract import engines

    found: list[type[EngineContract]] = []
    for module in sorted(pkgutil.iter_modules(engines.__path__), key=lambda m: m.name):
        found += importlib.import_module(f"{engines.__name__}.{module.name}").CONTRACTS
    return found
