"""A backup restores with stock tools alone, exactly as docs/repository-format.md says."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from vaultflow.engines.base import BackupContext
from vaultflow.engines.postgres.engine import PostgresEngine
from vaultflow.engines.postgres.settings import PostgresSettings
from vaultflow.repository import Repository
from vaultflow.stores import LocalStore


def sh(script: str, cwd: Path, env: dict) -> str:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{script}\n{done.stderr}"
    return done.stdout


def test_restore_with_sha256sum_zstd_and_pg_restore(pg18, fresh_db, tmp_path: Path):
    db = fresh_db(pg18)
    pg18.execute(
        "CREATE TABLE items (id int PRIMARY KEY, name text, price numeric, tags jsonb); "
        "INSERT INTO items SELECT g, 'item ' || g, g * 1.5, jsonb_build_object('g', g) "
        "FROM generate_series(1, 2000) g",
        db,
    )
    engine = PostgresEngine(
        PostgresSettings(
            target_name="stock",
            host=pg18.host,
            port=pg18.port,
            user=pg18.user,
            databases=[db],
            bin_dir=str(pg18.client_bin_dir),
        )
    )
    manifest = engine.full_backup(BackupContext(Repository(LocalStore(tmp_path / "repo"))))
    backup_dir = tmp_path / "repo/postgres/stock/backups" / manifest.id
    env = {**pg18.libpq_env(), "PATH": f"{pg18.client_bin_dir}:/usr/bin:/bin"}

    # 1. every object's checksum, with sha256sum and the manifest (jq is not needed: python -c)
    listing = "\n".join(
        f"{o['sha256']}  {o['key']}" for o in json.loads((backup_dir / "manifest.json").read_text())["objects"]
    )
    (tmp_path / "SHA256SUMS").write_text(listing + "\n")
    assert sh(f"sha256sum -c {tmp_path / 'SHA256SUMS'}", backup_dir, env).count(": OK") == 2

    # 2. stream restore, as documented
    sh(f"createdb {db}_stock && zstd -dc db/{db}.dump.zst | pg_restore --exit-on-error -d {db}_stock", backup_dir, env)
    # 3. parallel restore from the decompressed file (written to a pipe, so no data offsets)
    sh(
        f"createdb {db}_par && zstd -qd db/{db}.dump.zst -o {tmp_path}/x.dump && "
        f"pg_restore --exit-on-error -j 2 -d {db}_par {tmp_path}/x.dump",
        backup_dir,
        env,
    )
    try:
        for copy in (f"{db}_stock", f"{db}_par"):
            assert engine.fingerprint(copy) == manifest.fingerprints[db]
            assert pg18.execute("SELECT count(*), sum(price) FROM items", copy) == [(2000, 3001500)]
    finally:
        for copy in (f"{db}_stock", f"{db}_par"):
            pg18.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
