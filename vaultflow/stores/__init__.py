"""Stores: where repository objects live (local directory, S3, mirror of several)."""

from vaultflow.stores.base import ObjectInfo, Readable, Store, get_bytes, put_bytes
from vaultflow.stores.local import LocalStore
from vaultflow.stores.mirror import MirrorStore
from vaultflow.stores.s3 import S3Store

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
