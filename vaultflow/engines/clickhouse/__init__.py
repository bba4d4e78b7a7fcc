"""ClickHouse: native BACKUP DATABASE ... TO Disk, every file checked and streamed into the repository."""
