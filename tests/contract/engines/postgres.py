"""PostgreSQL in the contract suite: a logical target (pg_dump, no incremental form) on the
session's embedded PostgreSQL 18, and a physical target (pg_basebackup, native incrementals) on a
PostgreSQL 18 of its own with summarize_wal on. Oracle: tests/corpus/oracle.py (schema text,
sorted COPY rows, database properties)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.contract.harness import EngineContract
from tests.corpus.oracle import pg_differences, pg_state
from tests.fixtures.postgres import quote_ident
from vaultflow.blocks import PostgresTarget
from vaultflow.engines.postgres.cluster import stop_cluster
from vaultflow.engines.postgres.recovery import start_restored_cluster
from vaultflow.testing.postgres_server import PostgresInstance
from vaultflow.testing.unprivileged import SERVICE_USER, running_as_root


def write_items(pg: PostgresInstance, db: str) -> None:
    pg.execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10, 2), tags text[]); "
        "INSERT INTO items SELECT g, 'item ' || g, g * 1.25, ARRAY['t' || (g % 3)] "
        "FROM generate_series(1, 300) g; "
        "CREATE TABLE notes (id serial PRIMARY KEY, body text); INSERT INTO notes (body) VALUES ('first')",
        dbname=db,
    )


def change_items(pg: PostgresInstance, db: str) -> None:
    pg.execute(
        "UPDATE items SET price = price + 1 WHERE id % 10 = 0; DELETE FROM items WHERE id % 7 = 0; "
        "INSERT INTO items VALUES (1001, 'late', 9.99, NULL); INSERT INTO notes (body) VALUES ('second')",
        dbname=db,
    )


class PostgresLogical(EngineContract):
    id = "postgres-logical"
    engine = "postgres"
    servers = ("pg18",)
    incremental = False
    no_incremental = "takes logical backups, which have no incremental form"

    def __init__(self, servers: Mapping[str, Any], work: Path):
        super().__init__(servers, work)
        self.pg: PostgresInstance = servers["pg18"]
        self.db = f"contract_{secrets.token_hex(4)}"
        self.pg.execute(f"CREATE DATABASE {quote_ident(self.db)}")

    def target(self) -> PostgresTarget:
        return PostgresTarget(
            host=self.pg.host,
            port=self.pg.port,
            user=self.pg.user,
            databases=[self.db],
            target_name="contract-pg-logical",
            bin_dir=str(self.pg.client_bin_dir),
        )

    def write(self) -> None:
        write_items(self.pg, self.db)

    def change(self) -> None:
        change_items(self.pg, self.db)

    def read_source(self):
        return pg_state(self.pg, self.db)

    def restore_parameters(self, label: str) -> dict[str, Any]:
        return {"into": f"{self.db}_{label}"}

    def read_restored(self, restored: Mapping[str, str]):
        name = restored[self.db]
        try:
            return pg_state(self.pg, name)
        finally:
            self.pg.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")

    def differences(self, expected, actual) -> list[str]:
        return pg_differences(expected, actual)

    def close(self) -> None:
        self.pg.execute(f"DROP DATABASE IF EXISTS {quote_ident(self.db)} WITH (FORCE)")


class PostgresPhysical(EngineContract):
    id = "postgres-physical"
    engine = "postgres"
    servers = ("pg18_summarizing",)
    incremental = True

    db = "contract_physical"

    def __init__(self, servers: Mapping[str, Any], work: Path):
        super().__init__(servers, work)
        self.pg: PostgresInstance = servers["pg18_summarizing"]
        self.pg.execute(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
        self.pg.execute(f"CREATE DATABASE {self.db}")

    def target(self) -> PostgresTarget:
        return PostgresTarget(
            host=self.pg.host,
            port=self.pg.port,
            user=self.pg.user,
            mode="physical",
            physical_fingerprints=True,
            target_name="contract-pg-physical",
            bin_dir=str(self.pg.client_bin_dir),
            server_bin_dir=str(self.pg.bin_dir),
            restore_os_user=SERVICE_USER if running_as_root() else None,
        )

    def write(self) -> None:
        write_items(self.pg, self.db)

    def change(self) -> None:
        change_items(self.pg, self.db)

    def read_source(self):
        return pg_state(self.pg, self.db)

    def restore_parameters(self, label: str) -> dict[str, Any]:
        return {"into": str(self.work / f"restored-{label}")}

    def read_restored(self, restored: Mapping[str, str]):
        """Start the restored data directory (as the service user when root), read it through its
        socket, stop it and delete it."""
        data_dir = Path(restored["cluster"])
        cluster = start_restored_cluster(
            data_dir, self.pg.bin_dir, run_as=SERVICE_USER if running_as_root() else None, host=""
        )
        try:
            copy = PostgresInstance(
                bin_dir=self.pg.bin_dir,
                client_bin_dir=self.pg.client_bin_dir,
                data_dir=data_dir,
                socket_dir=cluster.socket_dir,
                host=str(cluster.socket_dir),
                port=cluster.port,
                user=self.pg.user,
                password=None,
                version=self.pg.version,
                log_file=cluster.log_file,
            )
            return pg_state(copy, self.db)
        finally:
            stop_cluster(cluster)
            shutil.rmtree(data_dir, ignore_errors=True)

    def differences(self, expected, actual) -> list[str]:
        return pg_differences(expected, actual)

    def close(self) -> None:
        self.pg.execute(f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")


CONTRACTS = [PostgresLogical, PostgresPhysical]
