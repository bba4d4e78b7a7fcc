"""PostgreSQL: logical (pg_dump) and physical (pg_basebackup) backups, native (17+) and
file-level (15/16) incrementals, chains, recovery and point-in-time restore, and the WAL archive.

Kept free of imports: `vaultflow wal-push` imports the `wal` subpackage once per WAL segment and
must not pay for psycopg. The engine is `vaultflow.engines.postgres.engine.PostgresEngine`.
"""
