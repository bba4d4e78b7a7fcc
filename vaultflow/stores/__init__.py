"""Stores: where repository objects live (local directory, S3, mirror of several).

S3Store and MirrorStore load on first use: boto3 costs ~0.7 s to import, which every
`wal-fetch` (run once per WAL segment during recovery) would otherwise pay.
"""

from typing import Any

from vaultflow.stores.base import ObjectInfo, Readable, Store, get_bytes, put_bytes
from vaultflow.stores.local import LocalStore

__all__ = [
    "LocalStore",
    "MirrorStore",
    "ObjectInfo",
    "Readable",
    "S3Store",
    "Store",
    "get_bytes",
    "put_bytes",
]


def __getattr__(name: str) -> Any:
    if name == "S3Store":
        from vaultflow.stores.s3 import S3Store

        return S3Store
    if name == "MirrorStore":
        from vaultflow.stores.mirror import MirrorStore

        return MirrorStore
    raise AttributeError(f"module 'vaultflow.stores' has no attribute {name!r}")
