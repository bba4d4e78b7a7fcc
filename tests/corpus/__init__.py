"""The real-world corpus: one small database or server state per failure kind, backed up and
restored through vaultflow on PostgreSQL 15 and 18 (and Redis 7), judged by tests/corpus/oracle.py,
which shares no code with vaultflow. MongoDB and ClickHouse cases join as test_mongo_*.py and
test_clickhouse_*.py beside these."""
