"""MongoDB engine (in progress): the mongodump archive codec (archive.py) and its CRC-64 (crc64.py)."""
